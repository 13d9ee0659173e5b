"""Metrics by Keras' names, summed per batch into scratch buffers (no Python per row).

``compile(metrics=[...])`` takes Keras' names: ``accuracy`` (the accuracy that
fits the loss, as Keras chooses it), ``binary_accuracy``, ``categorical_accuracy``,
``sparse_categorical_accuracy``, ``top_k_categorical_accuracy`` and
``sparse_top_k_categorical_accuracy`` (k=5), ``mae`` and ``mse``. Each appears
under its name in History, the progress line and ``evaluate``; the value of an
epoch is the mean over its samples (and outputs), as Keras' metrics. They are
not weighted by ``sample_weight`` (Keras' ``metrics``, not ``weighted_metrics``).

Definitions (Keras'; https://keras.io/api/metrics/): binary accuracy, the
fraction of outputs where ``prediction > 0.5`` equals ``target > 0.5``;
categorical accuracy, rows whose largest prediction is the target class (ties:
the first maximum); top-k, rows whose target class scores among the k largest
(ties at the boundary count as in, as TensorFlow's ``in_top_k``); mae and mse,
the mean absolute and squared difference between the predictions (after the
output's softmax/sigmoid) and the targets (one-hot rows for integer labels).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

METRICS = ("accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
           "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "mae", "mse")
_ALIASES = {"acc": "accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse"}
#: Quantities that should fall; every other metric should rise.
_FALLING = {"loss", "mae", "mse", "mean_absolute_error", "mean_squared_error"}
#: k of the top-k accuracies (Keras' default).
TOP_K = 5


def metric_names(metrics: Optional[Sequence[str]]) -> List[str]:
    """Canonical metric names; raises ValueError for unknown ones."""
    if metrics is None:
        return []
    if isinstance(metrics, str):
        metrics = [metrics]
    names = []
    for metric in metrics:
        name = _ALIASES.get(metric, metric) if isinstance(metric, str) else metric
        if name not in METRICS:
            raise ValueError(f"metrics: unknown metric {metric!r}; expected one of "
                             f"{list(METRICS) + sorted(_ALIASES)}")
        names.append(name)
    return names


def direction_of(name: str) -> str:
    """"min" when ``name`` (a loss or metric, without "val_") improves by falling, else
    "max". Names not known here fall when they do not mention "acc" (Keras' rule)."""
    if name in _FALLING:
        return "min"
    if name in METRICS or name in _ALIASES or "acc" in name:
        return "max"
    return "min"


class Metric:
    """Base class. ``count`` returns the sum over the batch of the metric's values (one per
    decision: ``decisions_per_sample`` per row); the epoch's value is that sum's total
    divided by rows * decisions."""

    #: Reads the predictions after the output's softmax/sigmoid (else logits may do).
    probabilities = False
    #: Reads int64 class labels (N,) (one-hot targets' argmax is computed once per fit).
    needs_labels = False

    def decisions_per_sample(self, units: int) -> int:
        return 1

    def make_scratch(self, batch: int, units: int, dtype: np.dtype) -> Any:
        return None

    def count(self, backend, outputs: np.ndarray, targets: np.ndarray,
              labels: Optional[np.ndarray], scratch: Any) -> float:
        raise NotImplementedError


class CategoricalAccuracy(Metric):
    """Rows whose largest output is the label. outputs: float (N, C); labels: int64 (N,)."""

    needs_labels = True

    def count(self, backend, outputs, targets, labels, scratch):
        return backend.count_correct(outputs, labels)


class TopKAccuracy(Metric):
    """Rows whose label's output is among the ``k`` largest: fewer than k outputs of the
    row are strictly larger than it."""

    needs_labels = True

    def __init__(self, k: int = TOP_K):
        self.k = k

    def make_scratch(self, batch, units, dtype):
        return (np.arange(batch, dtype=np.int64) * units, np.empty(batch, np.int64),
                np.empty(batch, dtype), np.empty((batch, units), bool),
                np.empty(batch, np.int64), np.empty(batch, bool))

    def count(self, backend, outputs, targets, labels, scratch):
        row_starts, index, label_scores, above, ranks, hits = scratch
        np.add(row_starts, labels, out=index)
        np.take(outputs.reshape(-1), index, out=label_scores)
        np.greater(outputs, label_scores[:, None], out=above)
        np.add.reduce(above, axis=1, dtype=np.int64, out=ranks)
        np.less(ranks, self.k, out=hits)
        return int(np.count_nonzero(hits))


class BinaryAccuracy(Metric):
    """Outputs above ``threshold`` against targets above 0.5, element by element.

    outputs, targets: float (N, M) (integer labels (N,) count as one-hot rows).
    ``threshold`` is 0.5 on probabilities, or 0 on the logits of a sigmoid the loss
    fuses (sigmoid(z) > 0.5 exactly when z > 0).
    """

    def __init__(self, threshold: float, probabilities: bool = False):
        self.threshold = threshold
        self.probabilities = probabilities

    def decisions_per_sample(self, units):
        return units

    def make_scratch(self, batch, units, dtype):
        return (np.empty((batch, units), bool), np.empty((batch, units), bool),
                np.empty((batch, units), dtype))

    def count(self, backend, outputs, targets, labels, scratch):
        agree, truth, one_hot = scratch
        if targets.ndim == 1:  # integer labels: their one-hot rows
            backend.one_hot(targets, one_hot)
            targets = one_hot
        np.greater(targets, 0.5, out=truth)
        np.greater(outputs, self.threshold, out=agree)
        np.equal(agree, truth, out=agree)
        return int(np.count_nonzero(agree))


class _MeanError(Metric):
    """Sum of ``error(predictions - targets)`` over every output; integer labels become
    one-hot rows."""

    probabilities = True

    def decisions_per_sample(self, units):
        return units

    def make_scratch(self, batch, units, dtype):
        return np.empty((batch, units), dtype), np.empty((batch, units), dtype)

    def count(self, backend, outputs, targets, labels, scratch):
        difference, one_hot = scratch
        if targets.ndim == 1:
            backend.one_hot(targets, one_hot)
            targets = one_hot
        np.subtract(outputs, targets, out=difference)
        return self._total(difference)


class MeanAbsoluteError(_MeanError):
    def _total(self, difference):
        np.abs(difference, out=difference)
        return float(np.add.reduce(difference, axis=None, dtype=np.float64))


class MeanSquaredError(_MeanError):
    def _total(self, difference):
        flat = difference.reshape(-1)
        return float(np.dot(flat, flat))


def resolve(name: str, loss, units: Optional[int]) -> Metric:
    """The metric object for canonical ``name`` with this ``loss`` and number of output
    ``units`` (None when not known yet). ValueError when the pair cannot be meaningful."""
    sparse = loss.name == "sparse_categorical_crossentropy"
    if name == "accuracy":
        return loss.accuracy(units)
    if name == "binary_accuracy":
        if loss.fused_activation == "sigmoid":
            return BinaryAccuracy(threshold=0.0)
        return BinaryAccuracy(threshold=0.5, probabilities=loss.fused_activation is not None)
    if name == "mae":
        return MeanAbsoluteError()
    if name == "mse":
        return MeanSquaredError()
    # the class accuracies
    wants_sparse = name.startswith("sparse_")
    if wants_sparse != sparse:
        other = name[len("sparse_"):] if wants_sparse else f"sparse_{name}"
        raise ValueError(
            f"metrics: {name!r} expects {'integer labels' if wants_sparse else 'one-hot rows'} "
            f"as targets, but loss {loss.name!r} takes "
            f"{'integer labels' if sparse else 'rows'}; use {other!r}")
    if units == 1:
        raise ValueError(f"metrics: {name!r} takes the argmax over the outputs, but the model "
                         f"has one output, so it would always be 1.0; use 'binary_accuracy'")
    return TopKAccuracy() if "top_k" in name else CategoricalAccuracy()


class MetricSet:
    """The compiled metrics of a model: resolved once per fit/evaluate, with the output
    layer whose deferred softmax/sigmoid (``finish_outputs``) turns logits into
    predictions for the metrics that read probabilities."""

    def __init__(self, names: Sequence[str], loss, output_layer):
        self.units = output_layer.units
        self.names = list(names)
        self.metrics = [resolve(name, loss, self.units) for name in self.names]
        deferred = getattr(output_layer, "deferred_activation", None) is not None
        self._finish = (output_layer.finish_outputs
                        if deferred and any(m.probabilities for m in self.metrics) else None)
        self.needs_labels = any(metric.needs_labels for metric in self.metrics)

    def labels_from_targets(self, targets: np.ndarray) -> Optional[np.ndarray]:
        """int64 (N,) class labels when a metric reads them: the targets themselves when
        they are labels, else the argmax of each row; None otherwise."""
        if not self.needs_labels:
            return None
        if targets.ndim == 1:
            return targets
        return np.ascontiguousarray(targets.argmax(axis=1), dtype=np.int64)

    def make_scratch(self, batch: int, dtype: np.dtype) -> Any:
        probabilities = (np.empty((batch, self.units), dtype) if self._finish is not None
                         else None)
        return [m.make_scratch(batch, self.units, dtype) for m in self.metrics], probabilities

    def count(self, backend, outputs, targets, labels, scratch, sums: List[float]) -> None:
        """Add each metric's batch sum to ``sums`` (one entry per metric)."""
        per_metric, probabilities = scratch
        if probabilities is not None:
            np.copyto(probabilities, outputs)
            self._finish(backend, probabilities)
        for position, metric in enumerate(self.metrics):
            predictions = probabilities if metric.probabilities and probabilities is not None \
                else outputs
            sums[position] += metric.count(backend, predictions, targets, labels,
                                           per_metric[position])


class Totals:
    """Running sums of an epoch (or evaluation): loss * rows, rows, each metric's sum."""

    def __init__(self, metric_set: Optional[MetricSet]):
        self.metric_set = metric_set
        self.loss_sum, self.samples = 0.0, 0
        self.sums = [0.0] * (len(metric_set.metrics) if metric_set else 0)

    def reduced(self, parallel) -> "Totals":
        """These totals summed over every rank of ``parallel`` (a
        :class:`fastnn.distributed.DataParallel`), or themselves when it is None."""
        if parallel is not None:
            summed = parallel.sum_totals([self.loss_sum, self.samples, *self.sums])
            self.loss_sum, self.samples = float(summed[0]), int(summed[1])
            self.sums = [float(value) for value in summed[2:]]
        return self

    def logs(self) -> Dict[str, float]:
        samples = max(self.samples, 1)
        logs = {"loss": self.loss_sum / samples}
        if self.metric_set is not None:
            units = self.metric_set.units
            for name, metric, total in zip(self.metric_set.names, self.metric_set.metrics,
                                           self.sums):
                logs[name] = total / (samples * metric.decisions_per_sample(units))
        return logs
