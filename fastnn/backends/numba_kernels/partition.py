"""How parallel drivers split a range of rows among tasks."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def chunk_bounds(length, chunks, index):
    """Bounds ``(start, stop)`` of chunk ``index`` of ``chunks`` near-equal
    contiguous pieces of ``range(length)``."""
    return index * length // chunks, (index + 1) * length // chunks


# The two helpers below are separate functions (not inlined by Numba) so that a parallel=True
# caller does not turn them into parallel loops of their own: each would be one more team
# start and barrier per call (all_finite on 50000 x 32: 0.5 ms with them, 0.7-1.7 without).

@njit(cache=True, error_model="numpy")
def task_zeros(tasks, like):
    """One zero of like's dtype per task, for the tasks' partial results."""
    return np.zeros(tasks, like.dtype)


@njit(cache=True, error_model="numpy")
def sum_in_order(partial):
    """partial[0] + partial[1] + ..., left to right."""
    total = partial[0]
    for task in range(1, partial.shape[0]):
        total += partial[task]
    return total
