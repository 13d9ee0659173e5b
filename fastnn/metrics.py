"""Accuracy, counted per batch without allocating (the model sums the counts).

Which accuracy applies depends on the loss (see :meth:`fastnn.losses.Loss.accuracy`):
categorical (argmax of the outputs against integer labels) or binary (each
output thresholded against 0/1 labels).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

METRICS = ("accuracy",)
_ALIASES = {"acc": "accuracy"}


def metric_names(metrics: Optional[Sequence[str]]) -> List[str]:
    """Canonical metric names; raises ValueError for unknown ones."""
    if metrics is None:
        return []
    if isinstance(metrics, str):
        metrics = [metrics]
    names = []
    for metric in metrics:
        name = _ALIASES.get(metric, metric)
        if name not in METRICS:
            raise ValueError(f"metrics: unknown metric {metric!r}; expected one of "
                             f"{list(METRICS) + sorted(_ALIASES)}")
        names.append(name)
    return names


class CategoricalAccuracy:
    """Rows whose largest output is the label. outputs: float (N, C); labels: int64 (N,)."""

    def label_dtype(self) -> np.dtype:
        return np.dtype(np.int64)

    def labels_from_targets(self, targets: np.ndarray) -> np.ndarray:
        """int64 (N,) class labels: the targets themselves when they are labels already,
        else the argmax of one-hot or score rows (N, C)."""
        if targets.ndim == 1:
            return targets
        return np.ascontiguousarray(targets.argmax(axis=1), dtype=np.int64)

    def decisions_per_sample(self, units: int) -> int:
        return 1

    def make_scratch(self, batch: int, units: int) -> Any:
        return None

    def count(self, backend, outputs: np.ndarray, labels: np.ndarray, scratch: Any) -> int:
        return backend.count_correct(outputs, labels)


class BinaryAccuracy:
    """Outputs above ``threshold`` against 0/1 labels, element by element.

    outputs: float (N, M); labels: bool (N, M).
    """

    def __init__(self, threshold: float):
        self.threshold = threshold

    def label_dtype(self) -> np.dtype:
        return np.dtype(bool)

    def labels_from_targets(self, targets: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(targets > 0.5)

    def decisions_per_sample(self, units: int) -> int:
        return units

    def make_scratch(self, batch: int, units: int) -> Any:
        return np.empty((batch, units), dtype=bool)

    def count(self, backend, outputs, labels, agree):
        np.greater(outputs, self.threshold, out=agree)
        np.equal(agree, labels, out=agree)
        return int(np.count_nonzero(agree))
