"""Drop-ins for scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, trained by fastnn.

Change one import and keep the rest of the code::

    from fastnn.sklearn import MLPClassifier   # was: from sklearn.neural_network import ...

The estimators take scikit-learn's parameters with its names, defaults and meanings
(scikit-learn 1.9, ``sklearn.neural_network``), set the same fitted attributes, and pass
``sklearn.utils.estimator_checks.parametrize_with_checks``. They need scikit-learn
(``pip install ".[sklearn]"`` from the fastnn source tree, or ``pip install scikit-learn``);
``import fastnn`` never imports it, this module does.

What is kept from scikit-learn (each point has a test against scikit-learn itself):

- labels of any type (strings too) go through a ``LabelBinarizer``; a binary problem has one
  logistic output unit and ``predict_proba`` of shape (n, 2); multilabel indicator targets
  have one logistic unit per label; several classes a softmax;
- weights *and* biases start Glorot-uniform, bound ``sqrt(6 / (fan_in + fan_out))`` (2
  instead of 6 for ``activation="logistic"``), drawn from ``random_state`` in scikit-learn's
  order, so the initial ``coefs_`` and ``intercepts_`` equal scikit-learn's bit for bit
  (float64);
- ``alpha``'s L2 term is scaled by the samples of the current mini-batch, as scikit-learn
  scales it for sgd/adam: each step adds ``alpha * W / n`` to the gradient of every weight
  matrix W (never to the intercepts) and ``0.5 * alpha * sum ||W||^2 / n`` to the batch's
  loss, n the rows of that batch. So ``loss_`` depends on ``batch_size``. Under MPI
  (:mod:`fastnn.distributed`: ``batch_size`` rows a rank, the gradients averaged), n is
  the rows of the whole batch, all ranks', so that R ranks at ``batch_size`` b train as one
  process at R * b;
- the losses are scikit-learn's: log-loss (for logistic outputs summed over the labels),
  and half the mean squared error whose gradient is ``(prediction - y) / n``;
- sgd with momentum and Nesterov's momentum, with the learning rate ``constant``,
  ``invscaling`` (``learning_rate_init / (t_ + 1) ** power_t`` after each epoch) or
  ``adaptive`` (divided by 5 after ``n_iter_no_change`` epochs without a ``tol`` gain; stop
  once it is <= 1e-6); momentum is carried over a change of the learning rate as
  scikit-learn carries it;
- adam as scikit-learn's: bias corrections folded into the step size and ``epsilon`` added
  to ``sqrt(v)`` (not to ``sqrt(v_hat)``, as fastnn's and PyTorch's Adam do);
- stopping after ``n_iter_no_change`` epochs without a ``tol`` gain of the training loss
  or, with ``early_stopping``, of the validation score (the same split as scikit-learn's:
  ``train_test_split`` with ``random_state``, stratified for binary targets), restoring the
  best weights; ``ConvergenceWarning`` at ``max_iter``; ``warm_start``; ``partial_fit``
  (one epoch; ``classes=`` on the first call of the classifier); a ``ValueError`` when the
  training produced non-finite weights.

With ``dtype="float64"`` and ``shuffle=False`` the weights follow scikit-learn's to
rounding (the tests compare them after several epochs of each solver and schedule).

Training runs in the backends' compiled loop (``train_steps``, :mod:`fastnn.plan`): the
layers, losses and optimizers below are fastnn's with scikit-learn's factors, and each says
so in its class body (``compiled_as``, with ``Loss.compiled_scales`` and
``Optimizer.compiled_terms``: the L2 term, Adam's eps on ``sqrt(v)``, the losses' factors),
which the plan reads. Their own methods are the per-layer path (``Sequential``'s, and the
numpy backend's reference loop); the tests check that both paths give the same weights.

Differences that remain (also listed in the README):

1. ``dtype`` (keyword-only, float32 by default) is the precision of training and of the
   fitted attributes and predictions, whatever the input's dtype; scikit-learn computes in
   the input's dtype (float64 unless X is float32). ``dtype="float64"`` matches it.
2. With ``shuffle=True`` the mini-batch order comes from fastnn's generator seeded by
   ``random_state``: the same kind of order, not the same sequence as scikit-learn's, so
   results agree statistically, not bit for bit.
3. ``solver="lbfgs"`` raises NotImplementedError (use "adam" or "sgd"); ``max_fun``, an
   lbfgs setting, is accepted and unused. ``MLPRegressor(loss="poisson")`` raises
   NotImplementedError.
4. ``fit`` and ``partial_fit`` take no ``sample_weight``.
5. Sparse X is accepted and made dense (memory n_samples x n_features of ``dtype``).
6. ``loss_`` of the classifier is the exact log-loss; scikit-learn clips probabilities at
   the dtype's eps first (the two differ only for probabilities below about 1e-7 in float32,
   2e-16 in float64; the gradients are the same).
7. A loss that becomes NaN or infinite stops training at once (scikit-learn trains on with
   NaN weights to ``max_iter``); both raise the same ValueError.
8. ``momentum=1`` (allowed by scikit-learn, where the velocity never decays) is refused.

fastnn's own keyword-only parameters: ``backend`` (None: fastnn's current backend, else
"c", "numba" or "numpy"), ``dtype`` ("float32" or "float64"), ``dropout`` (a drop rate in
[0, 1) after each hidden layer; 0 keeps scikit-learn's model), ``matmul_precision``
("float32" by default; "bfloat16", alias "mixed_bfloat16", rounds the GEMMs' operands to
bfloat16 with float32 accumulation, :mod:`fastnn.precision`; with ``dtype="float32"`` only).

Pickling stores the weights (and the optimizer's state, so that ``partial_fit`` resumes
exactly) as plain arrays; fastnn's :class:`~fastnn.Sequential` behind the estimator is
rebuilt on first use after unpickling. Pickle is scikit-learn's convention for estimators;
fastnn's own ``Sequential.save`` stays pickle-free.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SklearnMLPClassifier
from sklearn.neural_network import MLPRegressor as _SklearnMLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                      unique_labels)
from sklearn.utils.validation import check_is_fitted, validate_data

from . import distributed, inputs
from . import plan as plan_module
from . import precision as precision_module
from .backends import available_backends, use_backend
from .callbacks import Callback
from .layers import Dense, Dropout
from .losses import (BinaryCrossentropy, Loss, MeanSquaredError,
                     SparseCategoricalCrossentropy)
from .model import NonFiniteLossError, Sequential
from .ops import all_finite
from .optimizers import SGD, Adam, kernel_calls

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's hidden activation names -> fastnn's.
HIDDEN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh",
                      "relu": "relu"}
#: scikit-learn's output activation names (``out_activation_``) -> fastnn's.
OUTPUT_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "softmax": "softmax"}
#: matmul_precision's accepted names (fastnn.precision's, with Keras' alias).
MATMUL_PRECISIONS = precision_module.PRECISIONS + tuple(precision_module.ALIASES)
#: The message scikit-learn raises when training ends with non-finite weights.
NON_FINITE_MESSAGE = ("Solver produced non-finite parameter weights. The input data may "
                      "contain large values and need to be preprocessed.")


# -- scikit-learn's training semantics on fastnn's parts ------------------------------------

class _Penalty:
    """scikit-learn's L2 term, shared by the layers and the optimizer of one model:
    ``alpha``, the rows of the current batch on this process, the ranks of a data-parallel
    fit (fastnn.distributed; 1 otherwise), and the sum of ``||W||^2`` over the weight
    matrices and the steps of the current epoch (for ``loss_``)."""

    def __init__(self, alpha: float):
        self.alpha = float(alpha)
        self.rows = 1
        self.ranks = 1
        self.squares = 0.0

    def decay(self) -> float:
        """The weight decay of this step: scikit-learn adds ``alpha * W / n`` to the
        gradient of each weight matrix W, n the rows of the batch: of the whole batch under
        MPI, ``rows * ranks``, as each rank trains on an equal share of every batch
        (DataParallel.local_rows) and the ranks' gradients are averaged."""
        return self.alpha / (self.rows * self.ranks)


class _PenalizedDense(Dense):
    """A Dense layer that tells the shared :class:`_Penalty` the rows of each training
    batch; the optimizer (:class:`_SklearnSteps`) applies the L2 term. The compiled loop
    runs it as a Dense (its backward is Dense's) and takes the rows from the batch."""

    compiled_as = Dense

    def __init__(self, units: int, activation: str, penalty: _Penalty):
        # the estimator sets the weights it draws (scikit-learn's order): zeros, not a
        # Glorot draw thrown away (0.13 ms of a digits fit)
        super().__init__(units, activation, kernel_initializer="zeros")
        self.penalty = penalty

    def backward(self, backend, x, y, dy, dx, scratch):
        super().backward(backend, x, y, dy, dx, scratch)
        self.penalty.rows = x.shape[0]


class _SklearnSteps:
    """Optimizer steps with scikit-learn's L2 term on the weight matrices (not on the
    intercepts, which scikit-learn does not penalize), with fastnn's kernel calls.

    fastnn's ``weight_decay`` (``g = grad + weight_decay * param`` inside the step kernel) is
    one constant for every parameter, biases included, so it stays 0 and each step does:
    a call over one weight matrix gets ``alpha / rows`` as its weight decay (no extra pass
    over memory but ``||W||^2``, one dot); a call over small parameters joined together
    (:func:`fastnn.optimizers.kernel_calls`) gets ``g += (alpha / rows) * mask * param`` first,
    the mask 1 on weights and 0 on intercepts (three NumPy calls; one kernel call less per
    parameter). ``||W||^2`` is added to the penalty's sum for ``loss_``.
    """

    penalty: _Penalty

    def compiled_terms(self):
        """scikit-learn's L2 term for the compiled loop (fastnn.plan, which divides it by
        this process's rows of the batch): ``(alpha / ranks, False)``, as
        :meth:`_Penalty.decay`."""
        return self.penalty.alpha / self.penalty.ranks, False

    def _plan(self, params, grads) -> None:
        """Keep the bound parameters for :meth:`_calls`, made on the first per-layer step
        (the compiled loop never takes one)."""
        self._bound, self._plan_calls = (params, grads), None

    def _calls(self) -> list:
        """Per kernel call (same order as the optimizer's): its flat param and grad, whether
        it is one weight matrix, and for joined calls the weight mask."""
        if self._plan_calls is not None:
            return self._plan_calls
        params, grads = self._bound
        self._plan_calls = []
        for (first, end, param, grad) in kernel_calls(params, grads):
            members = params[first:end]
            mask = None
            if len(members) > 1:
                mask = np.concatenate([np.full(member.size, float(member.ndim > 1),
                                               member.dtype) for member in members])
            self._plan_calls.append((param.reshape(-1), grad.reshape(-1),
                                     len(members) == 1 and members[0].ndim > 1, mask,
                                     None if mask is None else np.empty_like(mask), {}))
        return self._plan_calls

    def _weight_decays(self) -> List[float]:
        """Apply the L2 term of this step to the joined calls' gradients; return the weight
        decay of each kernel call."""
        penalty, calls = self.penalty, self._calls()
        if not penalty.alpha:
            return [0.0] * len(calls)
        decay, squares, decays = penalty.decay(), 0.0, []
        for param, grad, weights, mask, scaled, masks in calls:
            if mask is None:
                if weights:
                    squares += float(np.dot(param, param))
                decays.append(decay if weights else 0.0)
                continue
            decay_mask = masks.get(decay)
            if decay_mask is None:  # one per batch size of the fit
                decay_mask = masks[decay] = mask * decay
            np.multiply(param, decay_mask, out=scaled)
            squares += float(np.dot(scaled, param)) / decay
            np.add(grad, scaled, out=grad)
            decays.append(0.0)
        penalty.squares += squares
        return decays


class _SklearnSGD(_SklearnSteps, SGD):
    """fastnn's SGD (PyTorch's momentum form) with scikit-learn's L2 term; the estimator
    rescales the velocity when the learning rate changes (:func:`_apply_learning_rate`)."""

    compiled_as = SGD  # the compiled loop runs SGD's step with compiled_terms' L2 term

    def __init__(self, lr, momentum, nesterov, penalty: _Penalty):
        super().__init__(lr, momentum=momentum, nesterov=nesterov)
        self.penalty = penalty

    def bind(self, params, grads):
        super().bind(params, grads)
        self._plan(params, grads)

    def step(self, backend):
        sgd_step, decays = backend.sgd_step, self._weight_decays()
        lr, momentum, nesterov = self.lr, self.momentum, self.nesterov
        for (param, grad, velocity), decay in zip(self._steps, decays):
            sgd_step(param, grad, velocity, lr, momentum, nesterov, decay)


class _SklearnAdam(_SklearnSteps, Adam):
    """scikit-learn's Adam: ``lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)``, step
    ``lr_t m / (sqrt(v) + eps)``. fastnn's Adam adds eps to ``sqrt(v_hat)`` instead; the two
    agree when fastnn's eps is ``eps / sqrt(1 - beta2^t)``, which each step passes. With
    scikit-learn's L2 term (:class:`_SklearnSteps`)."""

    compiled_as = Adam  # the compiled loop runs Adam's step with eps on sqrt(v) and L2

    def compiled_terms(self):
        """``(alpha / ranks, True)``: the L2 term as SGD's, and the compiled loop adds eps to
        the uncorrected sqrt(v)."""
        return _SklearnSteps.compiled_terms(self)[0], True

    def __init__(self, lr, beta1, beta2, eps, penalty: _Penalty):
        super().__init__(lr, beta1, beta2, eps)
        self.sklearn_eps = float(eps)
        self.penalty = penalty

    def bind(self, params, grads):
        super().bind(params, grads)
        self._plan(params, grads)

    def step(self, backend):
        decays = self._weight_decays()
        self.steps += 1
        adam_step, step = backend.adam_step, self.steps
        lr, beta1, beta2 = self.lr, self.beta1, self.beta2
        eps = self.sklearn_eps / math.sqrt(1.0 - beta2 ** step)
        for (param, grad, m, v), decay in zip(self._steps, decays):
            adam_step(param, grad, m, v, lr, beta1, beta2, eps, decay, step)


class _HalfSquaredError(MeanSquaredError):
    """scikit-learn's squared_error: loss ``mean((y_hat - y)^2) / 2`` over all outputs,
    gradient ``(y_hat - y) / n`` (n rows; per row, not per output, as scikit-learn's)."""

    name = "sklearn_squared_error"
    compiled_as = MeanSquaredError

    def compiled_scales(self, units):
        """Half MeanSquaredError's loss, its gradient times units / 2 (per row)."""
        return 0.5, units / 2.0

    def __call__(self, backend, outputs, targets, grad, scratch, sample_weight=None):
        # the estimators take no sample_weight (a listed difference): it is always None here
        rows = outputs.shape[0]
        return backend.mse(outputs, targets, 0.5 / rows, grad) / (2.0 * outputs.size)


class _SummedBinaryCrossentropy(BinaryCrossentropy):
    """scikit-learn's log-loss of logistic outputs (one for a binary problem, one per label
    for multilabel targets): the mean over the rows of the sum over the labels, i.e.
    fastnn's binary_crossentropy times the labels, value and gradient."""

    name = "sklearn_binary_log_loss"
    compiled_as = BinaryCrossentropy

    def compiled_scales(self, units):
        return float(units), float(units)

    def __call__(self, backend, logits, targets, grad, scratch, sample_weight=None):
        units = logits.shape[1]
        loss = super().__call__(backend, logits, targets, grad, scratch, sample_weight)
        if grad is not None and units > 1:
            grad *= units
        return loss * units


class _EpochHook(Callback):
    """Runs the estimator's end-of-epoch bookkeeping after each of fastnn's epochs."""

    def __init__(self, estimator: "_BaseMLP", run: Dict[str, Any]):
        self.estimator, self.run = estimator, run

    def on_epoch_begin(self, epoch, logs=None):
        self.estimator._penalty.squares = 0.0

    def on_epoch_end(self, epoch, logs=None):
        if self.estimator._end_epoch(logs["loss"], self.run):
            self.model.stop_training = True  # (under MPI, every rank's: DataParallel.any_rank)


class _LearningRate:
    """scikit-learn's learning-rate schedules (its SGDOptimizer; adam keeps its rate)."""

    def __init__(self, estimator: "_BaseMLP"):
        self.initial = float(estimator.learning_rate_init)
        self.rate = self.initial
        self.schedule = estimator.learning_rate if estimator.solver == "sgd" else "constant"
        self.power_t = float(estimator.power_t)
        self.adaptive = estimator.solver == "sgd" and self.schedule == "adaptive"

    def epoch_ended(self, samples_seen: int) -> None:
        if self.schedule == "invscaling":
            self.rate = self.initial / (samples_seen + 1) ** self.power_t

    def stop(self, message: str, verbose) -> bool:
        """scikit-learn's trigger_stopping: True to stop; adaptive first divides the rate."""
        if not self.adaptive:
            if verbose:
                print(message + " Stopping.")
            return True
        if self.rate <= 1e-6:
            if verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self.rate /= 5.0
        if verbose:
            print(message + " Setting learning rate to %f" % self.rate)
        return False


def _apply_learning_rate(optimizer, rate: float) -> None:
    """Give ``optimizer`` the learning rate ``rate``. scikit-learn keeps its velocity
    scaled by the learning rate (``v = momentum v - lr g``), fastnn as PyTorch without it
    (``v = momentum v + g``, step ``lr v``): the velocity is rescaled by old / new rate so that
    the next steps are scikit-learn's."""
    old = optimizer.lr
    if rate == old:
        return
    if isinstance(optimizer, SGD) and optimizer.momentum:
        optimizer.load_state({name: value * (old / rate)
                              for name, value in optimizer.state().items()})
    optimizer.lr = rate


def _binarize(binarizer: LabelBinarizer, y: np.ndarray):
    """``binarizer.transform(y).astype(bool)``: (n_samples, n_classes) one-hot rows, or one
    column for two classes; and the class indices (n_samples,) of the labels, or None. Labels
    (n_samples,) all among two or more ``classes_`` (the fit's case) take a direct path, 0.4
    ms less on the digits than ``transform``'s checks; the indices are a softmax's targets
    (no argmax of the one-hot rows: 0.7 ms for 60000 rows of 10)."""
    classes = binarizer.classes_
    if y.ndim == 1 and binarizer.y_type_ in ("binary", "multiclass") and len(classes) >= 2:
        indices = _class_indices(classes, y)
        if indices is not None:
            if len(classes) == 2:
                return (indices == 1).reshape(-1, 1), indices
            onehot = np.zeros((len(y), len(classes)), bool)
            onehot[np.arange(len(y)), indices] = True
            return onehot, indices
    return binarizer.transform(y).astype(bool), None


def _class_indices(classes: np.ndarray, y: np.ndarray):
    """The index (intp) of each label of y (n_samples,) in the sorted distinct ``classes``, or
    None when a label is not among them. Integer classes 0..k-1 (distinct and sorted: that is
    classes[0] == 0 and classes[-1] == k - 1) are their own indices, checked by y's range
    (0.8 ms less than searchsorted for 60000 labels)."""
    if (y.dtype.kind in "iu" and classes.dtype.kind in "iu" and classes[0] == 0
            and classes[-1] == len(classes) - 1):
        if y.min() < 0 or y.max() >= len(classes):
            return None
        return y.astype(np.intp, copy=False)
    try:
        indices = np.searchsorted(classes, y)
        known = (indices < len(classes)).all() and (classes[indices] == y).all()
    except TypeError:  # labels not comparable with the classes: transform says why
        known = False
    return indices if known else None


def _fit_binarizer(y: np.ndarray) -> LabelBinarizer:
    """``LabelBinarizer().fit(y)`` for checked targets y. Integer labels (n_samples,) take a
    direct path to the same fitted attributes (``type_of_target`` is "binary" for at most two
    distinct integers, else "multiclass"; ``classes_`` is ``unique_labels``' sorted distinct
    values of y's dtype): 0.4 ms less on the digits (0.45 ms for ``fit``'s checks, 0.04 for
    ``np.unique``). Small non-negative labels are counted (np.bincount: 0.1 ms against
    np.unique's 0.6 for 60000 labels). Other targets (strings, floats, multilabel) go through
    ``fit``."""
    binarizer = LabelBinarizer()
    if not (isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "iu"):
        return binarizer.fit(y)
    countable = len(y) and (y.dtype.kind == "i" or y.dtype.itemsize < 8)
    if countable and 0 <= y.min() and y.max() < 4 * len(y) + 1024:
        binarizer.classes_ = np.flatnonzero(np.bincount(y)).astype(y.dtype)
    else:
        binarizer.classes_ = np.unique(y)
    binarizer.y_type_ = "multiclass" if len(binarizer.classes_) > 2 else "binary"
    binarizer.sparse_input_ = False
    return binarizer


def _validate_data(estimator, X, y, dtype: np.dtype, **params):
    """scikit-learn's ``validate_data(estimator, X, y, **params)`` for training (sparse X
    accepted, multi-output y, X of float64 or float32), with X returned dense, C-contiguous,
    of ``dtype``. X's finiteness is checked once by fastnn's ``all_finite`` kernel on that
    array (60000 x 784 float32, C backend: 6.6 ms against 10.5 ms for scikit-learn's check,
    which Sequential.fit's own check came after); when it fails, ``validate_data`` runs again
    with scikit-learn's check, which raises scikit-learn's own ValueError for NaN or infinity
    in X; X finite as given but beyond ``dtype``'s range (1e300 in float32) then raises a
    ValueError naming X, its largest magnitude and float64 (the ``dtype`` parameter).
    Returns (X, y, whether that X is finite: Sequential.fit then takes it as checked,
    inputs.checked_finite)."""
    params.update(accept_sparse=["csr", "csc"], multi_output=True,
                  dtype=(np.float64, np.float32))
    checked, checked_y = validate_data(estimator, X, y, ensure_all_finite=False, **params)
    dense = _dense_x(checked, dtype)
    finite = all_finite(dense)
    if not finite:
        validate_data(estimator, X, y, **params)
        raise inputs.beyond_range("X", _dense_x(checked, np.float64), dtype)
    return dense, checked_y, finite


def _dense_x(X, dtype: np.dtype) -> np.ndarray:
    if scipy.sparse.issparse(X):
        X = X.toarray()
    # A value past float32's range becomes inf here, which _validate_data refuses with its
    # own message; NumPy's overflow warning would only come first.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(X, dtype=dtype)


# -- the estimators ----------------------------------------------------------------------------

class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, fit, the epoch loop."""

    _fitted_state = ("_model", "_penalty", "_optimizer", "_schedule")

    def _set_parameters(self, arguments: Dict[str, Any]) -> None:
        """Each argument of a subclass's ``__init__`` (its ``locals()``) as an attribute of the
        same name, unchanged: scikit-learn's convention (``get_params`` reads the signature;
        ``__init__`` validates nothing)."""
        for name, value in arguments.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    def _check_extras(self) -> np.dtype:
        """Validate fastnn's own parameters (scikit-learn validates its own in fit)."""
        if self.backend is not None and self.backend not in available_backends():
            raise ValueError(f"backend: expected None or one of {available_backends()}, got "
                             f"{self.backend!r}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        dropout = self.dropout
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating))
                or not 0 <= dropout < 1):
            raise ValueError(f"dropout: expected a drop rate in [0, 1), got {dropout!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision: expected one of {list(MATMUL_PRECISIONS)}, "
                             f"got {self.matmul_precision!r}")
        if self.matmul_precision != "float32" and dtype != np.float32:
            raise ValueError(f"matmul_precision: {self.matmul_precision!r} needs "
                             f"dtype='float32', got dtype={self.dtype!r}")
        if self.solver == "lbfgs":
            raise NotImplementedError("solver: fastnn has no 'lbfgs'; use solver='adam' or "
                                      "solver='sgd'")
        if self.solver == "sgd" and self.momentum >= 1:
            raise ValueError(f"momentum: fastnn expects a momentum in [0, 1), got "
                             f"{self.momentum!r}")
        return dtype

    def _backend(self):
        """A context running the body on the chosen backend (nothing for None)."""
        if self.backend is None:
            import contextlib
            return contextlib.nullcontext()
        return use_backend(self.backend)

    # -- fit -----------------------------------------------------------------------------------

    def fit(self, X, y):
        """Fit the model to X (n_samples, n_features) and targets y.

        y: class labels (n_samples,) of any type, or a multilabel indicator matrix, for the
        classifier; numbers (n_samples,) or (n_samples, n_outputs) for the regressor.
        Returns self. Raises ValueError for bad parameters or data, NotImplementedError for
        solver="lbfgs"; warns ConvergenceWarning when max_iter ends the training.
        """
        return self._fit(X, y, incremental=False)

    def _fit(self, X, y, incremental: bool):
        self._validate_params()
        dtype = self._check_extras()
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
        if np.any(np.array(hidden) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y, labels, finite = self._validate_input(X, y, incremental, reset=first_pass,
                                                    dtype=dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [X.shape[1]] + [int(units) for units in hidden] + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        with self._backend():
            if first_pass:
                self._initialize(y, layer_units, dtype)
            else:
                self._restore_model()
            with inputs.checked_finite(X if finite else None):
                self._fit_stochastic(X, y, incremental, labels)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError(NON_FINITE_MESSAGE)
        return self

    def _initialize(self, y, layer_units: List[int], dtype: np.dtype) -> None:
        """scikit-learn's _initialize: attributes, and weights drawn in its order."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            weights += [coef.astype(dtype), intercept.astype(dtype)]
        self._build_model(layer_units, dtype, weights)
        self._best_weights = self._model.get_weights()
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _build_model(self, layer_units: List[int], dtype: np.dtype,
                     weights: List[np.ndarray]) -> None:
        """The fastnn Sequential for ``layer_units`` with ``weights`` ([W1, b1, W2, ...]);
        ``coefs_`` and ``intercepts_`` become views of its parameters."""
        self._penalty = _Penalty(self.alpha)
        hidden = HIDDEN_ACTIVATIONS[self.activation]
        layers = []
        for units in layer_units[1:-1]:
            layers.append(_PenalizedDense(units, hidden, self._penalty))
            if self.dropout:
                layers.append(Dropout(float(self.dropout)))
        layers.append(_PenalizedDense(layer_units[-1],
                                      OUTPUT_ACTIVATIONS[self.out_activation_], self._penalty))
        model = Sequential(layers, dtype=dtype, matmul_precision=self.matmul_precision)
        model.build(layer_units[0])
        model.set_weights(weights)
        self._model, self._optimizer = model, None
        self._link_weights()

    def _link_weights(self) -> None:
        dense = [layer for layer in self._model.layers if isinstance(layer, Dense)]
        self.coefs_ = [layer.w for layer in dense]
        self.intercepts_ = [layer.b for layer in dense]

    def _restore_model(self) -> None:
        """Make the fastnn model hold ``coefs_`` and ``intercepts_``: after unpickling (no
        model yet), or when they were replaced by new arrays since the last fit."""
        model = getattr(self, "_model", None)
        if model is not None:
            dense = [layer for layer in model.layers if isinstance(layer, Dense)]
            if (len(dense) == len(self.coefs_)
                    and all(layer.w is coef for layer, coef in zip(dense, self.coefs_))
                    and all(layer.b is b for layer, b in zip(dense, self.intercepts_))):
                self._penalty.alpha = float(self.alpha)
                return
        units = [self.coefs_[0].shape[0]] + [coef.shape[1] for coef in self.coefs_]
        weights = [array for pair in zip(self.coefs_, self.intercepts_) for array in pair]
        dtype = np.dtype(self.coefs_[0].dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            dtype = np.dtype(np.float64)
        optimizer_state = getattr(self, "_optimizer_state", None)
        self._build_model(units, dtype, [np.asarray(w, dtype) for w in weights])
        if optimizer_state is not None:
            kind, config, state = optimizer_state
            self._optimizer = self._make_optimizer(kind, config["lr"])
            self._model.compile(self._optimizer, self._loss())
            self._optimizer.load_state(state)
            self._optimizer_state = None

    def _shared_figures(self) -> Dict[str, Any]:
        """What every rank's estimator must share under MPI: its parameters (but
        random_state, whose draws rank 0 broadcasts, and verbose) and classes_."""
        figures = {name: value for name, value in sorted(self.get_params().items())
                   if name not in ("random_state", "verbose")}
        classes = getattr(self, "classes_", None)
        if classes is not None:
            figures["classes_"] = np.asarray(classes).tolist()
        return figures

    def _make_optimizer(self, solver: str, lr: float):
        if solver == "sgd":
            momentum = float(self.momentum)
            return _SklearnSGD(lr, momentum, bool(self.nesterovs_momentum and momentum),
                               self._penalty)
        return _SklearnAdam(lr, float(self.beta_1), float(self.beta_2), float(self.epsilon),
                            self._penalty)

    def _fit_stochastic(self, X, y, incremental: bool, labels=None) -> None:
        """scikit-learn's _fit_stochastic, with the epochs run by ``Sequential.fit``. labels:
        y's class indices (n_samples,) or None (_validate_input)."""
        model = self._model
        comm = distributed.current()
        if comm is not None:  # the same estimator on every rank; Sequential.fit checks the rest
            parallel = distributed.DataParallel(comm)
            parallel.meet("fit")
            parallel.check_agreement(self._shared_figures(), "fit")
        if not incremental or self._optimizer is None:
            self._schedule = _LearningRate(self)
            self._optimizer = self._make_optimizer(self.solver, self._schedule.rate)
            model.compile(self._optimizer, self._loss())
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        X_val = y_val = None
        if early_stopping:
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            X, X_val, y, y_val = train_test_split(X, y, random_state=self._random_state,
                                                  test_size=self.validation_fraction,
                                                  stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            labels = None  # those of the training part: from its y
        samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, samples)
        else:
            if self.batch_size > samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, samples))
        seed = int(self._random_state.randint(np.iinfo(np.int32).max))
        comm = distributed.current()
        self._penalty.ranks = 1 if comm is None else comm.size
        # The compiled loop (Sequential._compiled: compiled_loop on, a model fastnn.plan
        # supports, no sample weights; under MPI too, split around the Allreduce) adds the L2
        # term to the loss it reports; the per-layer path's loss is the data's alone.
        l2_in_loss = model.compiled_loop and plan_module.unsupported(model) is None
        run = {"samples": samples, "X_val": X_val, "y_val": y_val,
               "early_stopping": early_stopping, "incremental": incremental,
               "l2_in_loss": l2_in_loss}
        self.n_iter_ = 0
        try:
            model.fit(X, self._targets(y, labels), epochs=1 if incremental else self.max_iter,
                      batch_size=batch_size, shuffle=bool(self.shuffle), verbose=0, seed=seed,
                      callbacks=[_EpochHook(self, run)])
        except NonFiniteLossError as exc:
            raise ValueError(NON_FINITE_MESSAGE) from exc
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if early_stopping:
            model.set_weights(self._best_weights)

    def _end_epoch(self, data_loss: float, run: Dict[str, Any]) -> bool:
        """scikit-learn's bookkeeping at the end of an epoch; True to stop training."""
        samples = run["samples"]
        self.n_iter_ += 1
        self.loss_ = data_loss
        if not run["l2_in_loss"]:
            self.loss_ += 0.5 * self._penalty.alpha * self._penalty.squares / samples
        self.t_ += samples
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
        self._update_no_improvement_count(run["early_stopping"], run["X_val"], run["y_val"])
        self._schedule.epoch_ended(self.t_)
        _apply_learning_rate(self._optimizer, self._schedule.rate)
        stop = False
        if self._no_improvement_count > self.n_iter_no_change:
            if run["early_stopping"]:
                message = ("Validation score did not improve more than tol=%f for %d "
                           "consecutive epochs." % (self.tol, self.n_iter_no_change))
            else:
                message = ("Training loss did not improve more than tol=%f for %d "
                           "consecutive epochs." % (self.tol, self.n_iter_no_change))
            stop = self._schedule.stop(message, self.verbose)
            _apply_learning_rate(self._optimizer, self._schedule.rate)
            if not stop:
                self._no_improvement_count = 0
        if not stop and not run["incremental"] and self.n_iter_ == self.max_iter:
            warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                          "optimization hasn't converged yet." % self.max_iter,
                          ConvergenceWarning)
        return stop

    def _update_no_improvement_count(self, early_stopping: bool, X_val, y_val) -> None:
        if early_stopping:
            score = self._score(X_val, y_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_weights = self._model.get_weights()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _score(self, X, y) -> float:
        """The validation score of early stopping, on checked data (NaN for non-finite
        predictions, as scikit-learn)."""
        outputs = self._model.predict(X)
        if not np.isfinite(outputs).all():
            return np.nan
        return self._score_function(y, self._decode(outputs))

    # -- predict -------------------------------------------------------------------------------

    def _forward(self, X) -> np.ndarray:
        """Checked X through the network: outputs (n_samples, n_outputs_) of the model's
        dtype, after the output activation."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        with self._backend():
            self._restore_model()
            return self._model.predict(_dense_x(X, self._model.dtype))

    # -- pickle --------------------------------------------------------------------------------

    def __getstate__(self):
        state = dict(super().__getstate__())  # Python 3.11's object.__getstate__ is __dict__
        if state.get("_model") is not None and getattr(self, "_optimizer", None) is not None:
            optimizer = self._optimizer
            state["_optimizer_state"] = (optimizer.name, {"lr": optimizer.lr},
                                         optimizer.state())
        for name in self._fitted_state:
            state.pop(name, None)
        for name in ("coefs_", "intercepts_"):
            if name in state:
                state[name] = [np.array(array) for array in state[name]]
        if "_best_weights" in state:
            state["_best_weights"] = [np.array(array) for array in state["_best_weights"]]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._model = self._penalty = self._optimizer = None
        if "_optimizer_state" in state and state["_optimizer_state"] is not None:
            self._schedule = _LearningRate(self)
            self._schedule.rate = state["_optimizer_state"][1]["lr"]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _stochastic_solver(estimator) -> bool:
    if estimator.solver not in ("sgd", "adam"):
        raise AttributeError("partial_fit is only available for stochastic optimizers. %s is "
                             "not stochastic." % estimator.solver)
    return True


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """scikit-learn's ``MLPClassifier``, trained by fastnn's kernels.

    Parameters as :class:`sklearn.neural_network.MLPClassifier` (same names, defaults and
    meanings; ``solver="lbfgs"`` raises NotImplementedError), plus fastnn's keyword-only
    ``backend``, ``dtype``, ``dropout`` and ``matmul_precision`` (see :mod:`fastnn.sklearn`,
    which also lists every remaining difference).

    Fitted attributes as scikit-learn's: ``classes_, loss_, best_loss_, loss_curve_,
    validation_scores_, best_validation_score_, t_, coefs_, intercepts_, n_features_in_,
    feature_names_in_, n_iter_, n_layers_, n_outputs_, out_activation_``; ``coefs_[i]`` is
    (fan_in, fan_out) and ``intercepts_[i]`` (fan_out,), of ``dtype``.
    """

    _parameter_constraints = dict(_SklearnMLPClassifier._parameter_constraints)
    _score_function = staticmethod(accuracy_score)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend=None, dtype="float32", dropout=0.0, matmul_precision="float32"):
        self._set_parameters(locals())

    def _output_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss(self) -> Loss:
        if self.out_activation_ == "softmax":
            return SparseCategoricalCrossentropy()
        return _SummedBinaryCrossentropy()

    def _targets(self, y: np.ndarray, labels=None) -> np.ndarray:
        """The binarized labels as the loss reads them: class indices for a softmax (labels,
        when given: y's), 0/1 rows for logistic outputs."""
        if self.out_activation_ == "softmax":
            return y.argmax(axis=1) if labels is None else labels
        return y.astype(self._model.dtype)

    def _decode(self, outputs: np.ndarray):
        if self.n_outputs_ == 1:
            outputs = outputs.ravel()
        return self._label_binarizer.inverse_transform(outputs)

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y, finite = _validate_data(self, X, y, dtype, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = _fit_binarizer(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return (X, *_binarize(self._label_binarizer, y), finite)

    def predict(self, X):
        """Class labels (n_samples,) of ``classes_``'s type, or a multilabel indicator
        matrix (n_samples, n_labels)."""
        return self._decode(self._forward(X))

    @available_if(_stochastic_solver)
    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y). ``classes`` (every class of all calls) is required on the
        first call. Returns self."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, incremental=True)

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes) in the order of ``classes_``; (n_samples, 2)
        for a binary problem; (n_samples, n_labels) for multilabel targets."""
        outputs = self._forward(X)
        if self.n_outputs_ == 1:
            outputs = outputs.ravel()
        if outputs.ndim == 1:
            return np.vstack([1 - outputs, outputs]).T
        return outputs

    def predict_log_proba(self, X):
        """``log(predict_proba(X))``."""
        probabilities = self.predict_proba(X)
        return np.log(probabilities, out=probabilities)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """scikit-learn's ``MLPRegressor``, trained by fastnn's kernels.

    Parameters as :class:`sklearn.neural_network.MLPRegressor` (``loss="squared_error"``;
    "poisson" and ``solver="lbfgs"`` raise NotImplementedError), plus fastnn's keyword-only
    ``backend``, ``dtype``, ``dropout`` and ``matmul_precision`` (see :mod:`fastnn.sklearn`,
    which also lists every remaining difference). Fitted attributes as the classifier's,
    without ``classes_``.
    """

    _parameter_constraints = dict(_SklearnMLPRegressor._parameter_constraints)
    _score_function = staticmethod(r2_score)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend=None, dtype="float32", dropout=0.0, matmul_precision="float32"):
        self._set_parameters(locals())

    def _check_extras(self):
        if self.loss != "squared_error":
            raise NotImplementedError(f"loss: fastnn has only 'squared_error', got "
                                      f"{self.loss!r}")
        return super()._check_extras()

    def _output_activation(self) -> str:
        return "identity"

    def _loss(self) -> Loss:
        return _HalfSquaredError()

    def _targets(self, y: np.ndarray, labels=None) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=self._model.dtype)

    def _decode(self, outputs: np.ndarray):
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y, finite = _validate_data(self, X, y, dtype, y_numeric=True, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y, None, finite

    def predict(self, X):
        """Predictions (n_samples,), or (n_samples, n_outputs) for several targets."""
        return self._decode(self._forward(X))

    @available_if(_stochastic_solver)
    def partial_fit(self, X, y):
        """One epoch over (X, y). Returns self."""
        return self._fit(X, y, incremental=True)
