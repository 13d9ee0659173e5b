"""The plan of a compiled training loop: a model, its loss, optimizer and data as numbers.

``fit`` builds a :class:`TrainingPlan` once (:func:`build`); then each backend's
``train_steps(plan, order, first_step, steps, stats)`` runs a chunk of steps over it
with no Python between the steps (see the contract). The plan is backend-neutral:
plain arrays that every backend reads the same way, so the backend may change between
calls. Its layout:

* ``layer_ints`` int64 (L, LAYER_INTS) and ``layer_reals`` float64 (L, LAYER_REALS):
  one row per layer, its kind first (a code of :data:`LAYER_KINDS`), then its sizes,
  activation, the offsets of its parameters in ``params``/``grads`` and of its output
  in ``acts``/``dacts``, dropout's key and threshold; more kinds add codes and columns
  (batch normalization: the offsets of gamma and beta in ``params``/``grads`` and of its
  state in ``masks``, its momentum and epsilon; an Activation fused into the batch norm
  before it has that layer's output offset and does nothing);
* ``config`` int64 (CONFIG_SIZE,): loss, optimizer, metric, sizes, the epoch (set per
  call) and Adam's step count (read and written by the backend);
* ``hyper`` float64 (HYPER_SIZE,): the optimizer's hyper-parameters, refreshed from the
  optimizer before every call (so a callback's change of ``lr`` applies at once);
* the model's flat ``params`` and ``grads``, the optimizer's flat state ``state1``,
  ``state2`` (SGD's velocity; Adam's m and v), the data and the batch buffers;
* ``masks``: dropout's masks, and the layers' state at their STATE offset: a batch norm's
  moving mean, moving variance, batch mean and 1 / std (M each; the moving statistics are
  copied in from the layer by :meth:`TrainingPlan.refresh` and back by ``finish``), a
  Dense without bias its zero bias and the bias gradient nobody reads (M each).

A short last batch uses the first rows of the batch buffers. The loss and correct
count of each step go to ``stats`` float64 (steps, 2).

What a plan does not cover makes :func:`unsupported` give a reason, and ``fit`` then
runs the per-layer path (Workspace and layers), which handles every model: a layer
kind other than Dense and Dropout, a loss or optimizer subclass of the user's, or
parameters not kept back to back in one buffer.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import counter_rng
from . import losses as losses_module
from . import optimizers as optimizers_module
from .backends.contract import ACTIVATION_CODES
from .layers import Activation, Dense, Dropout
from .metrics import BinaryAccuracy, CategoricalAccuracy
from .normalization import BatchNormalization
from .precision import resolve as resolve_precision

#: Layer kind codes (column KIND of layer_ints).
LAYER_DENSE, LAYER_DROPOUT, LAYER_BATCHNORM, LAYER_ACTIVATION = 0, 1, 2, 3
LAYER_KINDS = {Dense: LAYER_DENSE, Dropout: LAYER_DROPOUT, BatchNormalization: LAYER_BATCHNORM,
               Activation: LAYER_ACTIVATION}

#: Columns of layer_ints.
#: A Dense without bias has BIAS -1 and its zero bias at STATE; a batch norm has its gamma and
#: beta at GAMMA and BETA, its state at STATE and its (fused) activation at ACTIVATION.
#: A Dense's PRECISION is its GEMMs' matmul precision (PRECISION_* below; set by refresh).
(KIND, INPUTS, UNITS, ACTIVATION, WEIGHT, BIAS, OUTPUT, MASK, KEY, THRESHOLD,
 GAMMA, BETA, STATE, PRECISION, LAYER_INTS) = range(15)
#: Columns of layer_reals: leaky_relu's slope; dropout's 1 / (1 - rate); a batch norm's
#: momentum and epsilon.
ALPHA, SCALE, MOMENTUM, EPSILON, LAYER_REALS = range(5)

#: Matmul precision codes (fastnn.precision; the C kernels' FASTNN_PRECISION_*).
PRECISION_FLOAT32, PRECISION_BFLOAT16 = range(2)
_PRECISION_CODES = {"float32": PRECISION_FLOAT32, "bfloat16": PRECISION_BFLOAT16}

#: Loss codes. Softmax cross-entropy with integer labels or probability rows, binary
#: cross-entropy on logits (the sigmoid fused in), mean squared error.
LOSS_XENT_LABELS, LOSS_XENT_PROBS, LOSS_BCE, LOSS_MSE = range(4)
#: Optimizer codes.
OPTIMIZER_SGD, OPTIMIZER_ADAM = range(2)
#: Metric codes: none, argmax against int64 labels, outputs > threshold against 0/1 flags.
METRIC_NONE, METRIC_CLASSES, METRIC_FLAGS = range(3)

#: Modes (config[C_MODE]): training steps, or evaluation (forward and loss only, dropout off,
#: nothing updated, a non-finite loss counted like any other); MODE_GRADIENTS (forward, loss
#: and backward of one step, the gradients left in ``grads``, nothing updated: data-parallel
#: training reduces them between the two calls) and MODE_APPLY (the optimizer's update alone,
#: from ``grads``, Adam's step counted) and MODE_PREDICT (forward only, as evaluation: no
#: loss, no metric, nothing updated, each step's last-layer outputs copied to ``outputs``
#: at the step's rows, before the softmax or sigmoid a loss fuses in: Dense.finish_outputs).
MODE_TRAIN, MODE_EVALUATE, MODE_GRADIENTS, MODE_APPLY, MODE_PREDICT = range(5)

#: Entries of config. C_EPS_UNCORRECTED: 1 when Adam adds eps to the uncorrected
#: sqrt(v) (scikit-learn's form) instead of sqrt(v_hat).
(C_LAYERS, C_LOSS, C_OPTIMIZER, C_NESTEROV, C_METRIC, C_BATCH, C_SAMPLES, C_FEATURES,
 C_OUTPUTS, C_GATHER, C_EPOCH, C_ADAM_STEP, C_MODE, C_EPS_UNCORRECTED,
 CONFIG_SIZE) = range(15)
#: Entries of hyper. H_L2 (scikit-learn's alpha: ``alpha / rows * W`` added to each
#: weight matrix's gradient, ``alpha / (2 rows) * ||W||^2`` to the loss), H_LOSS_SCALE and
#: H_GRAD_SCALE (factors on the loss value and on its gradient, 1 by default).
(H_LR, H_MOMENTUM, H_WEIGHT_DECAY, H_BETA1, H_BETA2, H_EPS, H_THRESHOLD, H_L2, H_LOSS_SCALE,
 H_GRAD_SCALE, HYPER_SIZE) = range(11)

_LOSS_CODES = {
    losses_module.SparseCategoricalCrossentropy: LOSS_XENT_LABELS,
    losses_module.CategoricalCrossentropy: LOSS_XENT_PROBS,
    losses_module.BinaryCrossentropy: LOSS_BCE,
    losses_module.MeanSquaredError: LOSS_MSE,
}
_OPTIMIZER_CODES = {optimizers_module.SGD: OPTIMIZER_SGD, optimizers_module.Adam: OPTIMIZER_ADAM}


def _code(thing, codes) -> Optional[int]:
    """The code of a layer, loss or optimizer: its class's, or that of the class its own class
    body names as ``compiled_as`` (a subclass computing the same, with the plan's scales and
    terms: Loss.compiled_scales, Optimizer.compiled_terms); None when the plan cannot run it."""
    kind = type(thing)
    return codes.get(kind, codes.get(vars(kind).get("compiled_as")))


def _metric(model):
    """The one metric the plan counts (CategoricalAccuracy or a BinaryAccuracy on the raw
    outputs), None for no metric; raises ValueError for metrics the plan cannot count."""
    metric_set = model._metric_set()
    if metric_set is None:
        return None
    metrics = metric_set.metrics
    if len(metrics) != 1 or not (
            type(metrics[0]) is CategoricalAccuracy
            or (type(metrics[0]) is BinaryAccuracy and not metrics[0].probabilities)):
        raise ValueError(f"the metrics are {model.metrics}")
    return metrics[0]


def unsupported(model) -> Optional[str]:
    """Why the compiled loop cannot train ``model`` (built, compiled), or None if it can.

    It runs Dense layers (in float32 or bfloat16 matmul precision), Dropout, Activation and
    BatchNormalization (with center and scale) layers, the four losses without options and
    two optimizers of exactly fastnn's classes (a subclass may change what they compute) or
    of a subclass whose own body names the class it computes as ``compiled_as``
    (scikit-learn's forms, fastnn.sklearn), and no metric or one accuracy; anything else
    (label smoothing, ...) trains on the per-layer path.
    """
    for position, layer in enumerate(model.layers):
        if _code(layer, LAYER_KINDS) is None:
            return f"layer {position} is a {type(layer).__name__}"
        if isinstance(layer, BatchNormalization) and not (layer.center and layer.scale):
            return f"layer {position} is a BatchNormalization without center or scale"
    loss = model.loss
    if getattr(loss, "label_smoothing", 0.0) or getattr(loss, "ignore_class", None) is not None \
            or getattr(loss, "from_logits", False):
        return "the loss has options (label_smoothing, ignore_class or from_logits)"
    try:
        _metric(model)
    except ValueError as exc:
        return str(exc)
    if _code(model.loss, _LOSS_CODES) is None:
        return f"the loss is a {type(model.loss).__name__}"
    if _code(model.optimizer, _OPTIMIZER_CODES) is None:
        return f"the optimizer is a {type(model.optimizer).__name__}"
    params = [p for layer in model.layers for p in layer.params]
    grads = [g for layer in model.layers for g in layer.grads]
    if not params:
        return "the model has no parameters"
    if optimizers_module.storage_span(params) is None or \
            optimizers_module.storage_span(grads) is None:
        return "the parameters are not kept back to back in one buffer"
    if model.optimizer.flat_state() is None:
        return "the optimizer's state is not kept in one buffer"
    return None


class TrainingPlan:
    """Everything one chunk of training steps reads and writes (see the module docstring).

    Built by :func:`build`; ``cache`` holds what a backend derives from the plan once
    (the C backend's struct of pointers), keyed by backend name.
    """

    def __init__(self, model, data, batch: int, seed: int, clock: counter_rng.StepClock,
                 mode: int = MODE_TRAIN, rows: Optional[int] = None):
        x, targets, labels = data[:3]
        dtype, layers = model.dtype, model.layers
        samples, outputs = len(x) if rows is None else rows, model.output_units
        self.model, self.dtype, self.batch, self.samples = model, dtype, batch, samples
        self.clock = clock  # the layers' clock, which the reference loop advances
        self.layer_ints = np.zeros((len(layers), LAYER_INTS), np.int64)
        self.layer_reals = np.zeros((len(layers), LAYER_REALS), np.float64)
        params = [p for layer in layers for p in layer.params]
        self.params = optimizers_module.storage_span(params)
        self.grads = optimizers_module.storage_span([g for layer in layers for g in layer.grads])
        base = _address(self.params)
        act_offset = mask_offset = 0
        units = x.shape[1]
        self._moving = []  # (BatchNormalization, offset of its moving statistics in masks)
        for position, layer in enumerate(layers):
            row, reals = self.layer_ints[position], self.layer_reals[position]
            row[KIND], row[INPUTS], row[UNITS] = _code(layer, LAYER_KINDS), units, layer.units
            row[OUTPUT] = act_offset
            if layer.aliases_input:  # fused into the batch norm before: its output, no work
                row[OUTPUT] = self.layer_ints[position - 1, OUTPUT]
                units = layer.units
                continue
            if isinstance(layer, Dense):
                row[ACTIVATION] = ACTIVATION_CODES[layer.kernel_activation]
                row[WEIGHT] = (_address(layer.w) - base) // dtype.itemsize
                if layer.use_bias:
                    row[BIAS] = (_address(layer.b) - base) // dtype.itemsize
                else:
                    row[BIAS], row[STATE] = -1, mask_offset
                    mask_offset += 2 * layer.units
                reals[ALPHA] = layer.alpha
            elif isinstance(layer, BatchNormalization):
                row[ACTIVATION] = ACTIVATION_CODES[layer.activation]
                row[GAMMA] = (_address(layer.gamma) - base) // dtype.itemsize
                row[BETA] = (_address(layer.beta) - base) // dtype.itemsize
                row[STATE] = mask_offset
                self._moving.append((layer, mask_offset))
                mask_offset += 4 * layer.units
                reals[ALPHA], reals[MOMENTUM], reals[EPSILON] = (layer.alpha, layer.momentum,
                                                                 layer.epsilon)
            elif isinstance(layer, Activation):
                row[ACTIVATION] = ACTIVATION_CODES[layer.kernel_activation]
                reals[ALPHA] = layer.alpha
            else:
                row[MASK], row[THRESHOLD] = mask_offset, layer.threshold
                row[KEY] = counter_rng.as_signed(counter_rng.layer_key(
                    layer.seed if layer.seed is not None else seed, position))
                reals[SCALE] = layer.scale
                mask_offset += batch * layer.units
            act_offset += batch * layer.units
            units = layer.units
        self.config = np.zeros(CONFIG_SIZE, np.int64)
        self.hyper = np.zeros(HYPER_SIZE, np.float64)
        loss, metric = model.loss, _metric(model) if mode != MODE_PREDICT else None
        self.hyper[H_LOSS_SCALE], self.hyper[H_GRAD_SCALE] = loss.compiled_scales(outputs)
        config = self.config
        config[C_LAYERS], config[C_LOSS] = len(layers), _code(loss, _LOSS_CODES)
        config[C_OPTIMIZER] = _code(model.optimizer, _OPTIMIZER_CODES)
        config[C_BATCH], config[C_SAMPLES] = batch, samples
        config[C_FEATURES], config[C_OUTPUTS] = x.shape[1], outputs
        # a single full batch of all the data reads it in place
        config[C_GATHER] = batch < samples or samples < len(x)
        config[C_MODE] = mode
        self.state1, self.state2 = model.optimizer.flat_state()
        # The data, and the batch buffers the rows are gathered into.
        self.x = x
        empty_labels, empty_values = np.zeros(0, np.int64), np.zeros((0, outputs), dtype)
        self.labels = targets if targets.ndim == 1 else empty_labels
        self.targets = targets if targets.ndim == 2 else empty_values
        self.classes, self.flags = empty_labels, np.zeros((0, outputs), np.uint8)
        if isinstance(metric, CategoricalAccuracy):
            config[C_METRIC], self.classes = METRIC_CLASSES, labels
        elif isinstance(metric, BinaryAccuracy):
            config[C_METRIC], self.flags = METRIC_FLAGS, _flags(targets, outputs)
            self.hyper[H_THRESHOLD] = metric.threshold

        def rows_of(array):
            return np.empty((batch,) + array.shape[1:], array.dtype) if len(array) else array

        self.x_batch, self.labels_batch, self.targets_batch, self.classes_batch, \
            self.flags_batch = map(rows_of, (x, self.labels, self.targets, self.classes,
                                             self.flags))
        self.acts = np.empty(act_offset, dtype)
        self.dacts = np.empty(act_offset, dtype)
        self.masks = np.zeros(max(mask_offset, 1), dtype)  # a missing bias reads zeros
        self.moving_in()
        self.row_loss = np.empty(batch, dtype)
        # MODE_PREDICT's output rows (order's position s * batch + i: step s's row i)
        self.outputs = np.empty((samples if mode == MODE_PREDICT else 0, outputs), dtype)
        self.steps = -(-samples // batch)
        self.stats = np.zeros((self.steps, 2), np.float64)
        self.cache = {}

    def rows_in(self, first: int, end: int) -> int:
        """Rows trained on by steps first..end-1."""
        return min(end * self.batch, self.samples) - min(first * self.batch, self.samples)

    def loss_sum(self, first: int, end: int) -> float:
        """Sum over steps first..end-1 of the mean loss times the rows of the step."""
        total = float(self.stats[first:end, 0].sum()) * self.batch
        if end == self.steps and end > first:  # the last step may be short
            total -= float(self.stats[end - 1, 0]) * (end * self.batch - self.samples)
        return total

    def load(self, data) -> None:
        """Copy new data of the plan's sizes in (train_on_batch's plan owns its data)."""
        x, targets, labels = data[:3]
        self.x[...] = x
        (self.labels if targets.ndim == 1 else self.targets)[...] = targets
        if self.classes.size and self.classes is not self.labels:
            self.classes[...] = labels
        if self.flags.size:
            self.flags[...] = _flags(targets, self.flags.shape[1])

    def moving_in(self) -> None:
        """Copy the batch norms' moving statistics from the layers into ``masks``."""
        for layer, offset in self._moving:
            self.masks[offset:offset + 2 * layer.units] = np.concatenate(
                (layer.moving_mean, layer.moving_variance))

    def moving_out(self) -> None:
        """Copy the batch norms' moving statistics from ``masks`` back into the layers."""
        for layer, offset in self._moving:
            layer.moving_mean[...] = self.masks[offset:offset + layer.units]
            layer.moving_variance[...] = self.masks[offset + layer.units:
                                                    offset + 2 * layer.units]

    def refresh(self, epoch: int) -> None:
        """Copy the optimizer's hyper-parameters and step count and the batch norms' moving
        statistics in, before a call."""
        self.moving_in()
        for position, layer in enumerate(self.model.layers):  # the precision in force now
            if isinstance(layer, Dense):
                self.layer_ints[position, PRECISION] = _PRECISION_CODES[
                    resolve_precision(layer.matmul_precision, self.dtype)]
        optimizer, hyper = self.model.optimizer, self.hyper
        hyper[H_LR], hyper[H_WEIGHT_DECAY] = optimizer.lr, optimizer.weight_decay
        hyper[H_L2], self.config[C_EPS_UNCORRECTED] = optimizer.compiled_terms()
        if isinstance(optimizer, optimizers_module.SGD):
            hyper[H_MOMENTUM] = optimizer.momentum
            self.config[C_NESTEROV] = optimizer.nesterov
        else:
            hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS] = (optimizer.beta1, optimizer.beta2,
                                                           optimizer.eps)
            self.config[C_ADAM_STEP] = optimizer.steps
        self.config[C_EPOCH] = epoch

    def finish(self) -> None:
        """Copy what the backend advanced back into the optimizer and the batch norms, after
        a call."""
        self.moving_out()
        optimizer = self.model.optimizer
        if isinstance(optimizer, optimizers_module.Adam):
            optimizer.steps = int(self.config[C_ADAM_STEP])

    def layer_output(self, position: int, rows: int, gradient: bool = False) -> np.ndarray:
        """(rows, units) view of layer ``position``'s output (or its gradient) buffer."""
        row = self.layer_ints[position]
        start = int(row[OUTPUT])
        return (self.dacts if gradient else self.acts)[start:start + rows * int(row[UNITS])] \
            .reshape(rows, int(row[UNITS]))


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _flags(targets: np.ndarray, outputs: int) -> np.ndarray:
    """uint8 (N, outputs): targets above 0.5 (BinaryAccuracy's truth), integer labels taken
    as one-hot rows."""
    if targets.ndim == 1:
        flags = np.zeros((len(targets), outputs), np.uint8)
        flags[np.arange(len(targets)), targets] = 1
        return flags
    return np.ascontiguousarray(targets > 0.5, dtype=np.uint8)


def build_predict(model, x: np.ndarray, batch: int) -> TrainingPlan:
    """The plan of predicting on the checked features ``x`` (N >= 1 rows) in batches of
    ``batch`` rows: no targets, no metric; ``plan.outputs`` gets the outputs of order's
    rows."""
    empty_targets = np.zeros((0, model.output_units), model.dtype)
    return TrainingPlan(model, (x, empty_targets, None), batch, 0, counter_rng.StepClock(),
                        MODE_PREDICT)


def build(model, data, batch: int, seed: int, clock: counter_rng.StepClock,
          mode: int = MODE_TRAIN, rows: Optional[int] = None) -> TrainingPlan:
    """The plan of training (or, with MODE_EVALUATE, evaluating) ``model`` on the checked
    ``data`` (x, targets, metric labels) in batches of ``batch`` rows, dropout keyed by
    ``seed``; check :func:`unsupported` first. rows: the rows of ``order`` an epoch runs
    over (a rank's shard under MPI), all of the data's by default."""
    return TrainingPlan(model, data, batch, seed, clock, mode, rows)
