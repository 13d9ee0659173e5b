"""A dataset by name or path, split for training a classifier (what ``fastnn train
--dataset`` reads)."""

from __future__ import annotations

import os
from typing import NamedTuple, Optional, Tuple

import numpy as np

from .bundled import load_digits, train_test_split
from .loaders import load_csv, load_npy, load_npz
from .mnist import load_fashion_mnist, load_mnist

NAMES = ("digits", "mnist", "fashion_mnist")
#: File suffixes a path may have.
SUFFIXES = (".csv", ".npz", ".npy")


class TrainingData(NamedTuple):
    """A classification dataset split for training: float32 features, int64 labels in
    [0, classes)."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    classes: int
    description: str


def _target_column(target: Optional[str]):
    if target is None:
        return -1
    return int(target) if target.lstrip("-").isdigit() else target


def _features_and_labels(path: str, target: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"dataset: {path!r} is neither one of {list(NAMES)} nor a file ending "
                         f"in {', '.join(SUFFIXES)}")
    if not os.path.isfile(path):
        raise ValueError(f"dataset: no file {path!r} (and not one of {list(NAMES)})")
    if suffix == ".npz":
        if target is not None:
            raise ValueError("target: applies to CSV and .npy files; an .npz file holds "
                             "arrays named x and y")
        return load_npz(path)
    if suffix == ".csv":
        x, y, _ = load_csv(path, target=_target_column(target))
        return x, y
    table = load_npy(path)
    if table.ndim != 2 or table.shape[1] < 2:
        raise ValueError(f"{path}: expected a 2-D table with a target column and features, "
                         f"got shape {table.shape}")
    column = _target_column(target)
    if not isinstance(column, int) or not -table.shape[1] <= column < table.shape[1]:
        raise ValueError(f"target: expected a column number of the {table.shape[1]} columns "
                         f"of {path}, got {target!r}")
    return np.delete(table, column, axis=1), table[:, column]


def for_training(name: str, target: Optional[str] = None, seed: int = 0,
                 test_fraction: float = 0.2) -> TrainingData:
    """``digits`` (shipped; 80/20 split from ``seed``), ``mnist`` or ``fashion_mnist``
    (their own 60000/10000 split), or a path: .csv (target column ``target``, a number
    or name; the last by default), .npz (arrays x and y), .npy (a table whose column
    ``target``, the last by default, holds the labels), split 80/20 from ``seed``.
    The labels must be class labels (integers >= 0, or strings in a CSV); ValueError
    otherwise, naming the file.
    """
    if name in ("mnist", "fashion_mnist"):
        if target is not None:
            raise ValueError(f"target: applies to CSV and .npy files, not to {name}; got "
                             f"{target!r}")
        loader = load_mnist if name == "mnist" else load_fashion_mnist
        (x_train, y_train), (x_test, y_test) = loader()
        title = "MNIST" if name == "mnist" else "Fashion-MNIST"
        return TrainingData(x_train, x_test, y_train, y_test, 10,
                            f"{title} ({len(x_train)} train / {len(x_test)} test images)")
    if name == "digits":
        if target is not None:
            raise ValueError(f"target: applies to CSV and .npy files, not to digits; got "
                             f"{target!r}")
        x, y = load_digits()
        description = "the UCI digits"
    else:
        x, y = _features_and_labels(name, target)
        description = os.path.basename(name)
        y = np.asarray(y)
        if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        if y.dtype.kind not in "iu" or (y.size and y.min() < 0):
            raise ValueError(f"{name}: the target column holds {y.dtype} values, not class "
                             "labels (integers >= 0 or strings); fastnn train classifies")
        if y.size and (y == y.flat[0]).all():
            raise ValueError(f"target: the target column of {name} holds one class only "
                             f"({y.flat[0]}); a classifier needs at least two: choose another "
                             f"column")
        x = np.asarray(x, dtype=np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction, seed)
    return TrainingData(x_train, x_test, y_train.astype(np.int64), y_test.astype(np.int64),
                        int(y.max()) + 1,
                        f"{description} ({len(x_train)} train / {len(x_test)} test rows)")
