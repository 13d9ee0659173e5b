"""The softmax table of the course notes: each row of scores becomes probabilities.

    python examples/softmax_table.py

Rows are shifted by their maximum before exponentiating, so [-10, 0, 10] is
as stable as [1, 2, 0]; each row of the result sums to 1.
"""

import numpy as np

from fastnn import ops

SCORES = [[1, 2, 0], [-1, 0, 1], [-10, 0, 10]]


def main() -> np.ndarray:
    probabilities = ops.softmax(np.array(SCORES, dtype=np.float64))
    np.set_printoptions(precision=8)
    print(f"softmax({SCORES}) =")
    print(probabilities)
    return probabilities


if __name__ == "__main__":
    main()
