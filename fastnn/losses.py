"""Losses: each one fused kernel that returns the mean loss and writes its gradient.

A loss is called as ``loss(backend, outputs, targets, grad, scratch, sample_weight)`` with
the output layer's result ``outputs`` (N, M) and returns the mean loss over the
batch as a Python float; when ``grad`` (N, M) is given it is set to
d(loss)/d(outputs). ``sample_weight`` (N,), when given, weighs each row's loss as
Keras' ``sample_weight`` does: the batch loss is ``sum_i w_i loss_i / N``
(Keras' default reduction "sum_over_batch_size"), and each row of the gradient
is scaled by its ``w_i``, both inside the fused loss kernel (no Python per row).
For the cross-entropies, ``outputs`` are logits: the softmax (or sigmoid) of the
output layer is fused into the loss, which is both faster and stable for any
logit, and the layer's backward then uses the identity derivative.

Each loss also checks and converts the targets ``y`` given to ``fit`` or
``evaluate`` (:meth:`Loss.targets`) and says which accuracy applies.

The loss objects take Keras' arguments: ``from_logits`` (False: the output layer has the
softmax or sigmoid, which the loss fuses in; True: the output layer is linear and its
outputs are the logits; both train identically), ``label_smoothing`` and ``ignore_class``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type, Union

import numpy as np

from .metrics import BinaryAccuracy, CategoricalAccuracy
from .validation import flag, positive_number

#: Probability targets (categorical_crossentropy) must sum to 1 per row within this.
PROBABILITY_TOLERANCE = 1e-3


def _numeric_array(argument: str, y) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{argument}: expected numeric targets, got dtype {y.dtype}")
    return y


def _float_targets(argument: str, y, units: int, dtype: np.dtype) -> np.ndarray:
    """Float targets (N, units) of the model's dtype; (N,) is accepted when units == 1."""
    y = _numeric_array(argument, y)
    if y.ndim == 1 and units == 1:
        y = y.reshape(-1, 1)
    if y.ndim != 2 or y.shape[1] != units:
        raise ValueError(f"{argument}: expected shape (N, {units}) to match the {units} outputs "
                         f"of the model, got {y.shape}")
    y = np.ascontiguousarray(y, dtype=dtype)
    if not np.isfinite(y).all():
        raise ValueError(f"{argument}: targets contain NaN or infinity")
    return y


class Loss:
    """The base class of losses.

    Sequential.compile accepts a Loss object or one of the names (Keras' names):
    "sparse_categorical_crossentropy" (integer labels), "categorical_crossentropy"
    (probability rows, usually one-hot), "binary_crossentropy" (targets in [0, 1]),
    "mse" (also "mean_squared_error"). A subclass implements __call__ and
    targets; the methods are internal (called by Sequential).
    """

    name = ""
    #: The output activation this loss fuses (applies itself), or None.
    fused_activation: Optional[str] = None
    #: The compiled training loop's description of a subclass that computes a fastnn loss
    #: times constant factors (fastnn.plan reads it): the fastnn loss class whose kernel runs,
    #: with :meth:`compiled_scales`. Read from the class's own body only, never inherited, so
    #: that a further subclass (which may compute anything) trains on the per-layer path.
    compiled_as: Optional[type] = None

    def compiled_scales(self, units: int) -> Tuple[float, float]:
        """Internal, read by fastnn.plan with compiled_as: the factors on the loss value and
        on its gradient that turn compiled_as's loss into this one, for `units` outputs;
        (1, 1) for fastnn's own losses."""
        return 1.0, 1.0

    def check_output_activation(self, activation: str, units: Optional[int] = None) -> None:
        """Internal, called by Sequential.compile: raise ValueError when the output layer (its
        activation and number of units) does not suit this loss."""
        if activation == "softmax" and self.fused_activation != "softmax":
            raise ValueError(f"loss: {self.name!r} cannot follow a softmax output; use "
                             "'categorical_crossentropy' or 'sparse_categorical_crossentropy'")

    def targets(self, y, units: int, dtype: np.dtype, argument: str = "y") -> np.ndarray:
        """Internal, called by Sequential: y checked and converted to what __call__ reads."""
        raise NotImplementedError

    def accuracy(self, units: int):
        """Internal, called by Sequential: the accuracy metric that fits this loss's
        targets."""
        return CategoricalAccuracy()

    def make_scratch(self, batch: int, units: int, dtype: np.dtype) -> Any:
        """Internal, called by Sequential: per-batch-size working memory of the loss."""
        return None

    def __call__(self, backend, outputs: np.ndarray, targets: np.ndarray,
                 grad: Optional[np.ndarray], scratch: Any,
                 sample_weight: Optional[np.ndarray] = None) -> float:
        """Internal, called by Sequential: the mean loss of outputs (N, M) against targets
        (rows weighted by sample_weight (N,) when given: sum(w * loss) / N, Keras'
        sum_over_batch_size, inside the fused kernel); when grad (N, M) is given, it is set
        to d(loss)/d(outputs)."""
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments that rebuild this loss, JSON-safe (saved with a model)."""
        return {}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def _check_from_logits(loss: Loss, activation: str, fused: str) -> None:
    """from_logits=True wants a linear output layer (its outputs are the logits)."""
    if activation != "identity":
        raise ValueError(f"loss: {type(loss).__name__}(from_logits=True) expects logits from "
                         f"a linear output layer (activation None), got {activation!r}; "
                         f"with a {fused} output use from_logits=False")


def _smoothing(value) -> float:
    value = positive_number("label_smoothing", value, allow_zero=True)
    if value > 1:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {value}")
    return value


class _SoftmaxCrossEntropy(Loss):
    """Mean cross-entropy of softmax(logits), one backend softmax_cross_entropy."""

    fused_activation: Optional[str] = "softmax"
    label_smoothing = 0.0
    ignore_class: Optional[int] = None

    def __init__(self, from_logits: bool = False):
        self.from_logits = flag("from_logits", from_logits)
        self.fused_activation = None if self.from_logits else "softmax"

    def check_output_activation(self, activation, units=None):
        if self.from_logits:
            _check_from_logits(self, activation, "softmax")
        elif activation != "softmax":
            raise ValueError(f"loss: {self.name!r} needs a softmax output layer "
                             f"(Dense(..., activation='softmax')), got {activation!r}; for "
                             f"logits of a linear output layer use from_logits=True")
        if units == 1:
            raise ValueError(f"loss: a softmax over one output unit is 1.0 for every input, so "
                             f"{self.name!r} would score a perfect loss of 0 and learn nothing; "
                             "for two classes use Dense(1, activation='sigmoid') with "
                             "'binary_crossentropy' (or Dense(2, activation='softmax'))")

    def make_scratch(self, batch, units, dtype):
        return np.empty(batch, dtype)  # the per-row losses

    def __call__(self, backend, outputs, targets, grad, row_loss, sample_weight=None):
        counted = outputs.shape[0]
        if self.ignore_class is not None:
            counted = int(np.count_nonzero(targets != self.ignore_class))
        # Keras: the mean over the rows that count; a batch of ignored rows alone has loss 0.
        scale = 1.0 / counted if counted else 0.0
        backend.softmax_cross_entropy(outputs, targets, scale, row_loss, grad,
                                      self.label_smoothing, self.ignore_class, sample_weight)
        return float(np.add.reduce(row_loss)) * scale

    def get_config(self):
        return {"from_logits": self.from_logits}


class CategoricalCrossentropy(_SoftmaxCrossEntropy):
    """Cross-entropy of softmax(logits) with probability rows, as Keras'; the name
    "categorical_crossentropy" in compile.

    Targets y: (N, C) rows of class probabilities >= 0, usually one-hot. The output layer
    is Dense(C, "softmax") (or, with from_logits=True, a linear layer: logits); softmax and
    cross-entropy run as one fused kernel. label_smoothing eps in [0, 1]: each target row
    becomes (1 - eps) * y + eps / C (Keras, PyTorch). Raises ValueError for targets of
    another shape or with negative values (for integer labels use
    SparseCategoricalCrossentropy).
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        super().__init__(from_logits)
        self.label_smoothing = _smoothing(label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}

    def targets(self, y, units, dtype, argument="y"):
        y = _numeric_array(argument, y)
        if y.ndim == 1:
            raise ValueError(f"{argument}: categorical_crossentropy expects one-hot rows "
                             f"(N, {units}); for integer labels (N,) use "
                             "'sparse_categorical_crossentropy'")
        y = _float_targets(argument, y, units, dtype)
        _check_probability_rows(argument, y)
        return y


class SparseCategoricalCrossentropy(_SoftmaxCrossEntropy):
    """Cross-entropy of softmax(logits) with integer class labels, as Keras'; the name
    "sparse_categorical_crossentropy" in compile.

    Targets y: (N,) integer labels in [0, C). The output layer is Dense(C, "softmax") (or,
    with from_logits=True, a linear layer: logits); softmax and cross-entropy run as one
    fused kernel. ignore_class: None or an int label (Keras' ignore_class, PyTorch's
    ignore_index; it may lie outside [0, C), e.g. -1): its rows add neither loss nor
    gradient, and the mean is over the other rows (0 when a batch has none).
    Raises ValueError for a label out of range, TypeError for non-integral labels.
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, ignore_class: Optional[int] = None):
        super().__init__(from_logits)
        if ignore_class is not None and (isinstance(ignore_class, bool) or not isinstance(
                ignore_class, (int, np.integer))):
            raise TypeError(f"ignore_class: expected None or an int label, got "
                            f"{ignore_class!r}")
        self.ignore_class = None if ignore_class is None else int(ignore_class)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}

    def targets(self, y, units, dtype, argument="y"):
        y = _numeric_array(argument, y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{argument}: sparse_categorical_crossentropy expects integer "
                             f"labels of shape (N,), got {y.shape}; for one-hot rows use "
                             "'categorical_crossentropy'")
        if y.dtype.kind == "f":
            if not (np.isfinite(y).all() and (y == np.round(y)).all()):
                raise TypeError(f"{argument}: expected integer class labels, got non-integral "
                                f"values of dtype {y.dtype}")
        counted = y if self.ignore_class is None else y[y != self.ignore_class]
        if counted.size and (counted.min() < 0 or counted.max() >= units):
            y = counted
            bad = y.min() if y.min() < 0 else y.max()  # integral (checked above)
            raise ValueError(f"{argument}: labels must lie in [0, {units}) for the {units} "
                             f"outputs of the model, got {int(bad)}")
        return np.ascontiguousarray(y, dtype=np.int64)


class BinaryCrossentropy(Loss):
    """Mean over all outputs of the cross-entropy of sigmoid(logits) with targets in [0, 1],
    as Keras'; the name "binary_crossentropy" in compile, one backend
    sigmoid_cross_entropy.

    Targets y: (N, M) values in [0, 1] ((N,) when M is 1). The output layer's sigmoid is
    fused in (or, with from_logits=True, the linear output layer gives the logits): from
    logits z and targets t,
        loss = max(z, 0) - z t + log(1 + exp(-|z|)),   finite for every z,
        d loss / dz = (sigmoid(z) - t) / (N M),
    which the output layer's backward takes as is (identity derivative).
    label_smoothing eps in [0, 1]: targets become (1 - eps) * t + eps / 2 (Keras).
    """

    name = "binary_crossentropy"
    fused_activation: Optional[str] = "sigmoid"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0):
        self.from_logits = flag("from_logits", from_logits)
        self.fused_activation = None if self.from_logits else "sigmoid"
        self.label_smoothing = _smoothing(label_smoothing)

    def check_output_activation(self, activation, units=None):
        if self.from_logits:
            _check_from_logits(self, activation, "sigmoid")
        elif activation != "sigmoid":
            raise ValueError(f"loss: 'binary_crossentropy' needs a sigmoid output layer "
                             f"(Dense(..., activation='sigmoid')), got {activation!r}; for "
                             f"logits of a linear output layer use from_logits=True")

    def targets(self, y, units, dtype, argument="y"):
        y = _float_targets(argument, y, units, dtype)
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"{argument}: binary_crossentropy targets must lie in [0, 1]")
        return y

    def accuracy(self, units):
        return BinaryAccuracy(threshold=0.0)  # sigmoid(z) > 0.5 exactly when z > 0

    def make_scratch(self, batch, units, dtype):
        return np.empty(batch, dtype)  # the per-row losses

    def __call__(self, backend, logits, targets, grad, row_loss, sample_weight=None):
        scale = 1.0 / logits.size
        backend.sigmoid_cross_entropy(logits, targets, scale, row_loss, grad,
                                      self.label_smoothing, sample_weight)
        return float(np.add.reduce(row_loss)) * scale

    def get_config(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class MeanSquaredError(Loss):
    """Mean over all outputs of (outputs - targets)**2, one backend mse kernel; the names
    "mse" and "mean_squared_error" in compile.

    Targets y: (N, M) numbers ((N,) when M is 1), converted to the model's dtype.
    """

    name = "mse"

    def targets(self, y, units, dtype, argument="y"):
        return _float_targets(argument, y, units, dtype)

    def accuracy(self, units):
        # Keras' choice: one output is a binary decision at 0.5, several an argmax.
        return BinaryAccuracy(threshold=0.5) if units == 1 else CategoricalAccuracy()

    def __call__(self, backend, outputs, targets, grad, scratch, sample_weight=None):
        scale = 1.0 / outputs.size
        return backend.mse(outputs, targets, scale, grad, sample_weight) * scale


def _check_probability_rows(argument: str, y: np.ndarray) -> None:
    """Rows of ``y`` (N, C) must be probabilities: all >= 0, each summing to 1 within
    :data:`PROBABILITY_TOLERANCE`; ValueError names ``argument`` and the first bad row.
    (An all-zero row would otherwise score a loss of 0 whatever the model says.)"""
    negative = (y < 0).any(axis=1)
    sums = y.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1) > PROBABILITY_TOLERANCE
    bad = np.flatnonzero(negative | off)
    if bad.size:
        row = int(bad[0])
        problem = (f"has a negative probability {y[row][y[row] < 0][0]:g}" if negative[row]
                   else f"sums to {sums[row]:g}")
        raise ValueError(f"{argument}: row {row} {problem}; categorical_crossentropy expects "
                         f"probability rows (one-hot or soft), each >= 0 and summing to 1 "
                         f"(within {PROBABILITY_TOLERANCE:g}); for integer labels use "
                         f"'sparse_categorical_crossentropy'")


LOSSES: Dict[str, Type[Loss]] = {
    cls.name: cls for cls in (CategoricalCrossentropy, SparseCategoricalCrossentropy,
                              BinaryCrossentropy, MeanSquaredError)
}
_ALIASES = {"mean_squared_error": "mse"}


def from_config(name: str, config: Optional[Dict[str, Any]] = None) -> Loss:
    """The loss named ``name`` built with the arguments of its :meth:`Loss.get_config`."""
    loss = get(name)
    return type(loss)(**(config or {}))


def get(identifier: Union[str, Loss]) -> Loss:
    """The loss named identifier, or the Loss object itself. Names:
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "mse" (also "mean_squared_error"). Raises ValueError for another name."""
    if isinstance(identifier, Loss):
        return identifier
    name = _ALIASES.get(identifier, identifier) if isinstance(identifier, str) else None
    if name not in LOSSES:
        raise ValueError(f"loss: unknown loss {identifier!r}; expected a Loss or one of "
                         f"{sorted(LOSSES) + sorted(_ALIASES)}")
    return LOSSES[name]()
