"""Datasets: small ones shipped with fastnn (offline), public ones downloaded once, and
loaders for the user's own files.

- Shipped (:mod:`.bundled`): :func:`load_digits`, :func:`xor`, :func:`animals`, and
  :func:`train_test_split`.
- Downloaded on first use into the per-user data folder, checked against published
  SHA-256 sums (:mod:`.mnist`, :mod:`.download`): :func:`load_mnist`,
  :func:`load_fashion_mnist`.
- The user's files (:mod:`.loaders`): :func:`load_idx`, :func:`load_csv`,
  :func:`load_npz`, :func:`load_npy`.
- :func:`for_training`: any of these by name or path, split for ``fastnn train``.
"""

from .bundled import (ANIMAL_CLASSES, DIGITS_FILE, animals, load_digits, train_test_split,
                      xor)
from .download import ChecksumError, DatasetUnavailableError, data_dir
from .loaders import load_csv, load_idx, load_npy, load_npz
from .mnist import FASHION_CLASSES, load_fashion_mnist, load_mnist
from .selection import TrainingData, for_training

__all__ = ["ANIMAL_CLASSES", "ChecksumError", "DIGITS_FILE", "DatasetUnavailableError",
           "FASHION_CLASSES", "TrainingData", "animals", "data_dir", "for_training",
           "load_csv", "load_digits", "load_fashion_mnist", "load_idx", "load_mnist",
           "load_npy", "load_npz", "train_test_split", "xor"]
