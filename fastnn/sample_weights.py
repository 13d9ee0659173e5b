"""``fit(class_weight=..., sample_weight=...)`` and ``evaluate(sample_weight=...)``:
checked once per call and turned into one weight per row.

As in Keras 3: a row's weight multiplies its loss, and a batch's loss is
``sum_i w_i loss_i / N`` (reduction "sum_over_batch_size", so weights need not
sum to N); ``class_weight`` maps a class to the weight of its rows (classes it
does not name weigh 1.0); the class of a row is its integer label, the argmax of
a one-hot (or probability) row, or the rounded target of a single output; giving
both ``class_weight`` and ``sample_weight`` is an error. Metrics are not weighted.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np


def row_weights(sample_weight, class_weight, targets: np.ndarray, units: int,
                dtype: np.dtype, argument: str = "sample_weight") -> Optional[np.ndarray]:
    """C-contiguous (N,) weights of ``dtype`` for the N rows of checked ``targets``, or None.

    sample_weight: numbers (N,) or (N, 1), each finite and >= 0. class_weight: a
    dict {class: weight}, classes integers in [0, units) (0 and 1 for a single
    output), weights finite and >= 0. Raises ValueError / TypeError naming the
    argument, with the first bad entry.
    """
    if sample_weight is not None and class_weight is not None:
        raise ValueError("class_weight: give class_weight or sample_weight, not both (as Keras)")
    if sample_weight is not None:
        return _checked_sample_weight(argument, sample_weight, len(targets), dtype)
    if class_weight is not None:
        return _from_class_weight(class_weight, targets, units, dtype)
    return None


def _checked_sample_weight(argument: str, value, samples: int, dtype: np.dtype) -> np.ndarray:
    try:
        weights = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{argument}: expected numbers (N,), could not convert: {exc}") from exc
    if weights.dtype.kind not in "biuf" or weights.dtype.kind == "b":
        raise TypeError(f"{argument}: expected numbers, got dtype {weights.dtype}")
    if weights.ndim == 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    if weights.ndim != 1 or len(weights) != samples:
        raise ValueError(f"{argument}: expected one weight per sample, shape ({samples},), got "
                         f"shape {weights.shape}")
    _check_values(argument, weights, lambda row: f"[{row}]")
    return np.ascontiguousarray(weights, dtype=dtype)


def _check_values(argument: str, weights: np.ndarray, where) -> None:
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0)) if weights.size else []
    if len(bad):
        position = int(bad[0])
        raise ValueError(f"{argument}{where(position)}: expected a finite weight >= 0, got "
                         f"{weights[position]}")


def _classes(targets: np.ndarray) -> np.ndarray:
    """The class of each row (Keras' class_weight_to_sample_weights)."""
    if targets.ndim == 1:
        return targets
    if targets.shape[1] > 1:
        return targets.argmax(axis=1)
    return np.round(targets[:, 0]).astype(np.int64)


def _from_class_weight(class_weight, targets: np.ndarray, units: int,
                       dtype: np.dtype) -> np.ndarray:
    if not isinstance(class_weight, Mapping):
        raise TypeError(f"class_weight: expected a dict {{class: weight}}, got "
                        f"{type(class_weight).__name__}")
    classes = max(units, 2)
    table = np.ones(classes, np.float64)
    for key, weight in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"class_weight: keys must be integer classes, got {key!r}")
        if not 0 <= key < classes:
            raise ValueError(f"class_weight: class {key} is not a class of the model, whose "
                             f"classes are 0..{classes - 1}")
        if isinstance(weight, (bool, np.bool_)) or not isinstance(
                weight, (int, float, np.integer, np.floating)):
            raise TypeError(f"class_weight[{key}]: expected a number, got {weight!r}")
        _check_values("class_weight", np.array([weight], np.float64), lambda _: f"[{key}]")
        table[key] = weight
    labels = _classes(targets)
    outside = np.flatnonzero((labels < 0) | (labels >= classes))
    if outside.size:
        row = int(outside[0])
        raise ValueError(f"class_weight: row {row} of y is class {labels[row]:g}, not one of "
                         f"the classes 0..{classes - 1} that class_weight can weigh")
    return np.ascontiguousarray(table[labels.astype(np.int64)], dtype=dtype)
