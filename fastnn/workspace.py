"""The buffers of one batch size and the kernel calls of a step over them.

A :class:`Workspace` is made once per batch size when ``fit``, ``evaluate`` or
``predict`` starts: the batch's inputs, targets and labels, every layer's
output and (in training) the gradient with respect to it, and the layers' and
loss's scratch. Each step then only copies its rows in (or, for a full batch,
reads the data arrays themselves) and calls kernels on these arrays, so a
step allocates no array buffers.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import aligned


class Workspace:
    """Buffers for batches of ``batch`` rows.

    layers: the model's built layers; loss: a :class:`fastnn.losses.Loss` (or
    None for predict); metrics: a :class:`fastnn.metrics.MetricSet` or None.
    data: the model-ready arrays ``(x, targets, labels, weights)`` (all but x
    may be None) that batches are drawn from; with ``bind_data`` the workspace
    reads them directly (a full batch needs no copy).
    """

    def __init__(self, layers: Sequence, loss, metrics, batch: int, dtype: np.dtype,
                 training: bool, data: Sequence[Optional[np.ndarray]], bind_data: bool = False):
        x, targets, labels, weights = data
        self.batch = batch
        self.loss, self.metrics = loss, metrics
        if bind_data:
            self.x, self.targets, self.labels, self.weights = x, targets, labels, weights
            self._copies = ()
        else:
            self.x, self.targets, self.labels, self.weights = (
                _rows_like(array, batch) for array in (x, targets, labels, weights))
            if labels is targets:  # sparse labels serve as targets and metric labels alike
                self.labels = self.targets
            pairs = [(x, self.x), (targets, self.targets), (weights, self.weights)]
            if labels is not targets:
                pairs.append((labels, self.labels))
            self._copies = tuple((source, buffer) for source, buffer in pairs
                                 if source is not None)
        outputs = []
        for layer in layers:  # a layer fused into the one before shares its output buffer
            outputs.append(outputs[-1] if layer.aliases_input and outputs
                           else aligned.empty((batch, layer.units), dtype))
        inputs = [self.x] + outputs[:-1]
        scratch = [layer.make_scratch(batch, dtype, training) for layer in layers]
        self.outputs = outputs[-1]
        self._forward = tuple(zip(layers, inputs, outputs, scratch))
        units = layers[-1].units
        self.loss_scratch = loss.make_scratch(batch, units, dtype) if loss else None
        self.metric_scratch = metrics.make_scratch(batch, dtype) if metrics else None
        self.output_grad = None
        self._backward = ()
        if training:
            grads = []
            for layer, out in zip(layers, outputs):
                grads.append(grads[-1] if layer.aliases_input and grads
                             else aligned.empty(out.shape, out.dtype))
            input_grads = [None] + grads[:-1]  # the first layer needs no input gradient
            self.output_grad = grads[-1]
            self._backward = tuple(reversed(tuple(zip(layers, inputs, outputs, grads,
                                                      input_grads, scratch))))

    def load_rows(self, backend, index: np.ndarray) -> None:
        """Copy rows ``index`` (int64, length ``batch``, each a row of the data) of the data
        into the batch buffers."""
        for source, buffer in self._copies:
            backend.take_rows(source, index, buffer)

    def forward(self, backend, training: bool) -> np.ndarray:
        """Run every layer on the batch; returns the output layer's result (N, M)."""
        for layer, x, out, scratch in self._forward:
            layer.forward(backend, x, out, scratch, training)
        return self.outputs

    def loss_value(self, backend, with_gradient: bool) -> float:
        """Mean loss of the batch's outputs; with_gradient also sets ``output_grad``."""
        return self.loss(backend, self.outputs, self.targets,
                         self.output_grad if with_gradient else None, self.loss_scratch,
                         self.weights)

    def count_metrics(self, backend, sums) -> None:
        """Add each metric's sum over the batch to ``sums`` (a list, one per metric)."""
        self.metrics.count(backend, self.outputs, self.targets, self.labels,
                           self.metric_scratch, sums)

    def backward(self, backend) -> None:
        """Every layer's parameter gradients from ``output_grad`` (set by the loss)."""
        for layer, x, y, dy, dx, scratch in self._backward:
            layer.backward(backend, x, y, dy, dx, scratch)


def _rows_like(array: Optional[np.ndarray], batch: int) -> Optional[np.ndarray]:
    if array is None:
        return None
    return aligned.empty((batch,) + array.shape[1:], array.dtype)
