"""Small datasets shipped with fastnn, that work offline: handwritten digits, XOR and the
fur/wings animals.

Arrays come as float32 features and int64 labels (the animals' one-hot rows as
float32), ready for ``Sequential.fit``.
"""

from __future__ import annotations

from importlib import resources
from typing import Tuple

import numpy as np

from ..validation import finite_number, flag

DIGITS_FILE = "digits.npz"
ANIMAL_CLASSES = ("other", "mammal", "bird")


def load_digits(flatten: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """The UCI handwritten digits: 1797 images of 8x8 pixels, 10 classes (0-9).

    Returns ``(x, y)``: x float32 (1797, 64) (or (1797, 8, 8) when not
    ``flatten``) with pixels scaled from 0..16 to [0, 1]; y int64 (1797,).

    Source: "Optical Recognition of Handwritten Digits", E. Alpaydin and
    C. Kaynak, UCI Machine Learning Repository (1998),
    https://doi.org/10.24432/C50P49, licensed under CC BY 4.0
    (https://creativecommons.org/licenses/by/4.0/). This is the copy of its
    test set that scikit-learn ships as ``sklearn.datasets.load_digits``,
    extracted once (unchanged, pixels as integers 0..16) into
    ``fastnn/data/digits.npz``; scikit-learn is not needed to load it.
    """
    flatten = flag("flatten", flatten)
    with resources.files("fastnn.data").joinpath(DIGITS_FILE).open("rb") as file:
        with np.load(file, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    x = images.astype(np.float32) / np.float32(16.0)
    return (x.reshape(len(x), -1) if flatten else x), labels.astype(np.int64)


def train_test_split(x: np.ndarray, y: np.ndarray, test_fraction: float = 0.2,
                     seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic shuffled split: ``(x_train, x_test, y_train, y_test)``.

    The rows are permuted by ``numpy.random.default_rng(seed)`` and the last
    ``round(test_fraction * N)`` form the test set, so a given seed always gives
    the same split.

    Raises TypeError for a test_fraction that is not a number or a seed that is not an
    integer, ValueError for a test_fraction outside (0, 1) (or leaving an empty set), a
    negative seed or x and y of different lengths; each message names the argument.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        name = "x" if x.ndim == 0 else "y"
        raise ValueError(f"{name}: expected an array of samples, got a scalar")
    if len(x) != len(y):
        raise ValueError(f"y: has {len(y)} samples but x has {len(x)}")
    test_fraction = finite_number("test_fraction", test_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a fraction in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an integer >= 0, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed}")
    test = int(round(test_fraction * len(x)))
    if test == 0 or test == len(x):
        raise ValueError(f"test_fraction: {test_fraction} of {len(x)} samples leaves an empty "
                         "training or test set")
    order = np.random.default_rng(seed).permutation(len(x))
    train_rows, test_rows = order[:-test], order[-test:]
    return x[train_rows], x[test_rows], y[train_rows], y[test_rows]


def xor() -> Tuple[np.ndarray, np.ndarray]:
    """The XOR truth table: x float32 (4, 2) of 0/1 inputs, y int64 (4,) = x0 xor x1."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return x, np.array([0, 1, 1, 0], dtype=np.int64)


def animals() -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    """The fur/wings classifier of the course notes: ``(x, y, class_names)``.

    x float32 (6, 2): [has fur, has wings]; y float32 (6, 3): one-hot rows of
    the classes ``("other", "mammal", "bird")``. The six animals are
    other, mammal, bird, other, other, bird.
    """
    x = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [0, 0], [0, 1]], dtype=np.float32)
    labels = np.array([0, 1, 2, 0, 0, 2])
    return x, np.eye(len(ANIMAL_CLASSES), dtype=np.float32)[labels], ANIMAL_CLASSES
