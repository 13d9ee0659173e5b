"""Layers: Dense (one fused backend kernel each way), Activation and Dropout
(BatchNormalization lives in :mod:`fastnn.normalization`).

A layer owns its parameters and their gradient buffers; the activations it
reads and writes belong to the model's per-batch-size workspace and are passed
in, so one layer serves every batch size without allocating during a step.

Shapes: N is the batch, K the layer's input size, M its output size (``units``).
Every float array of a model shares the model's dtype (float32 or float64).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import numpy as np

from .precision import resolve as resolve_precision
from . import counter_rng, initializers
from .backends.contract import ACTIVATIONS
from .validation import positive_number, seed_value

#: Activation names a Dense layer accepts. softmax is applied by the loss (fused with
#: cross-entropy) and by ``predict``, so it is allowed on the output layer only.
DENSE_ACTIVATIONS = ACTIVATIONS + ("softmax",)
_ALIASES = {None: "identity", "linear": "identity"}


def activation_name(activation: Optional[str]) -> str:
    """The canonical name of a Dense activation; None and "linear" mean identity."""
    activation = _ALIASES.get(activation, activation)
    if activation not in DENSE_ACTIVATIONS:
        raise ValueError(f"activation: unknown activation {activation!r}; expected None, "
                         f"'linear' or one of {list(DENSE_ACTIVATIONS)}")
    return activation


def checked_weight(label: str, value, like: np.ndarray) -> np.ndarray:
    """``value`` as an array to copy into the weight array ``like``: its shape, and finite real
    numbers (cast to like's dtype by the copy). Raises ValueError naming ``label``. The check of
    Sequential.set_weights and of assignments to a layer's weight attributes."""
    value = np.asarray(value)
    if value.shape != like.shape:
        raise ValueError(f"{label}: expected shape {like.shape}, got {value.shape}")
    if value.dtype.kind not in "biuf" or not np.isfinite(value).all():
        raise ValueError(f"{label}: expected finite numbers")
    return value


class Weight:
    """A layer's weight attribute (Dense's ``w`` and ``b``, BatchNormalization's ``gamma``,
    ``beta``, ``moving_mean`` and ``moving_variance``).

    Reading gives the array the kernels use: once the model is built, a view into its flat
    parameter storage (Sequential). Assigning, ``layer.w = new``, copies the values into that
    array in place after Sequential.set_weights' checks (shape, finite real numbers; cast to
    the model's dtype), as ``tensor.copy_`` does in PyTorch: the optimizer, its state and the
    compiled plans keep using the same memory, which a new array in its place would leave
    behind (they kept training the old one, and the kernels read a wrong-sized or wrong-typed
    array). Raises ValueError (shape, values), or AttributeError before the layer is built and
    for an array the layer neither trains nor keeps (the zero bias of ``use_bias=False``, the
    ones of ``scale=False``). The layers bind their arrays with :func:`bind_weight`.
    """

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, layer, owner=None):
        if layer is None:
            return self
        try:
            return layer.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{self.name}: the layer is not built yet") from None

    def __set__(self, layer, value) -> None:
        current = layer.__dict__.get(self.name)
        if current is None:
            raise AttributeError(f"{self.name}: the layer is not built yet; build the model "
                                 f"(Sequential.build or fit) before assigning its weights")
        if not any(current is weight for weight in layer.weights):
            raise AttributeError(f"{self.name}: this {type(layer).__name__} layer has no such "
                                 f"weight to set (see its use_bias, center or scale)")
        current[...] = checked_weight(self.name, value, current)


def bind_weight(layer, name: str, array: np.ndarray) -> None:
    """Make ``array`` the layer's weight ``name`` itself (build, adopt_storage)."""
    layer.__dict__[name] = array


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


class Layer:
    """The base class of layers (Dense, Dropout).

    A subclass sets units (its output size) in build. The methods below other
    than get_config are the layer protocol: Sequential calls them, a user does
    not. The step methods (forward, backward) receive the backend module
    chosen for this step and call its kernels directly: the arguments were
    validated at the model boundary.
    """

    def __init__(self, input_dim: Optional[int] = None):
        self.input_dim = None if input_dim is None else _positive_int("input_dim", input_dim)
        self.units: Optional[int] = None
        #: Precision of the layer's GEMMs (fastnn.precision), set by the model; None follows
        #: fastnn.get_matmul_precision().
        self.matmul_precision: Optional[str] = None
        self.params: List[np.ndarray] = []  # updated in place by the optimizer
        self.grads: List[np.ndarray] = []   # grads[i] is d(loss)/d(params[i])
        self.state: List[np.ndarray] = []   # non-trainable weights (a batch norm's statistics)
        self.built = False

    @property
    def weights(self) -> List[np.ndarray]:
        """Every weight in Keras' order: the trainable params, then the non-trainable
        state (a batch norm's moving statistics); what get_weights, set_weights and saved
        files hold."""
        return self.params + self.state

    def build(self, input_units: int, dtype: np.dtype, rng: np.random.Generator) -> None:
        """Internal, called by Sequential: create parameters for inputs of input_units
        features, of the model's dtype, drawn from rng."""
        self.input_dim = input_units
        self.built = True

    def adopt_storage(self, params: List[np.ndarray], grads: List[np.ndarray]) -> None:
        """Internal, called by Sequential: use params and grads (same shapes, values already
        copied in) in place of the arrays build made; the model moves them into one buffer
        each."""
        self.params, self.grads = list(params), list(grads)

    def output_units(self, input_units: int) -> int:
        """Internal, called by Sequential: the output size for inputs of input_units
        features (known before build)."""
        raise NotImplementedError

    def parameter_count(self, input_units: int) -> int:
        """Internal, called by Sequential: how many numbers the weights hold for input_units
        inputs, trainable or not."""
        return 0

    def non_trainable_count(self, input_units: int) -> int:
        """Internal, called by Sequential.summary: how many of parameter_count's numbers are
        not trained (moving statistics)."""
        return 0

    #: The output's buffer is the input's (the layer's work was fused into the layer before
    #: it): the workspace then gives both the same arrays, and forward/backward do nothing.
    aliases_input = False

    def make_scratch(self, batch: int, dtype: np.dtype, training: bool) -> Any:
        """Internal, called by Sequential: per-batch-size working memory of this layer
        (None when it needs none)."""
        return None

    def set_random(self, seed: int, position: int, clock: counter_rng.StepClock) -> None:
        """Internal, called by Sequential: give the layer the random seed of this fit, its
        position in the model and the clock the model advances each step (for random
        layers: see fastnn.counter_rng)."""

    def forward(self, backend, x: np.ndarray, out: np.ndarray, scratch: Any,
                training: bool) -> None:
        """Internal, called by Sequential: write the layer's output for x (N, K) into
        out (N, M)."""
        raise NotImplementedError

    def backward(self, backend, x: np.ndarray, y: np.ndarray, dy: np.ndarray,
                 dx: Optional[np.ndarray], scratch: Any) -> None:
        """Internal, called by Sequential: given dy = dL/dy (N, M), set self.grads and
        dx = dL/dx (N, K) unless dx is None."""
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments that rebuild this layer (weights aside), as a JSON-safe
        dict (as Keras' get_config)."""
        return {"input_dim": self.input_dim}

    def describe(self) -> str:
        """Internal, called by Sequential.summary: the layer's short description."""
        return type(self).__name__


class _OutputActivation:
    """What a layer that may end the model does with a softmax or sigmoid: leave it to the
    loss (fused with the cross-entropy) and to predict. Sets activation,
    deferred_activation and kernel_activation (the activation its kernels apply)."""

    activation = "identity"

    def defer_activation(self, deferred: bool) -> None:
        """Internal, called by Sequential.compile: leave the output activation to the loss
        and predict (or apply it here).

        Deferred, the kernels run with the identity and the layer's output is
        the logits; the loss's gradient is then taken with respect to the logits.
        """
        if self.activation == "softmax" and not deferred:
            raise ValueError("activation: softmax is only supported on the output layer with "
                             "a cross-entropy loss")
        self.deferred_activation = self.activation if deferred else None
        self.kernel_activation = "identity" if deferred else self.activation

    def finish_outputs(self, backend, outputs: np.ndarray) -> None:
        """Internal, called by Sequential.predict: apply the deferred activation to the
        logits (N, units) in place."""
        if self.deferred_activation == "softmax":
            backend.softmax(outputs, outputs)
        elif self.deferred_activation == "sigmoid":
            # exp(-|z|) never overflows: 1 / (1 + e) for z >= 0, e / (1 + e) below.
            decay = np.exp(-np.abs(outputs))
            np.divide(np.where(outputs >= 0, 1.0, decay), 1.0 + decay, out=outputs)


class Dense(_OutputActivation, Layer):
    """A fully connected layer: y = activation(x @ w + b), as Keras' Dense.

    units: the output size M, a positive int.
    activation: one of these names:
        None or "linear"  the identity (also "identity"; the default)
        "relu"            max(z, 0)
        "leaky_relu"      z for z > 0, else alpha * z
        "sigmoid"         1 / (1 + exp(-z))
        "tanh"            tanh(z)
        "softmax"         row-wise softmax; output layer only, with a
                          cross-entropy loss
    kernel_initializer, bias_initializer: an Initializer object, or one of
        these names (Keras' names and defaults, see fastnn.initializers):
        "zeros", "ones", "random_uniform", "random_normal",
        "glorot_uniform", "glorot_normal", "he_uniform", "he_normal".
    alpha: the slope of leaky_relu below zero, a number >= 0.
    input_dim: the input size K; needed on the first layer only to build the
        model before fit (fit reads it from the data).
    use_bias: False keeps no bias, as Keras (e.g. before a BatchNormalization,
        whose beta plays the bias): the kernels then add a constant zero vector.

    Shapes: x (N, K) -> y (N, units); w (K, units); b (units,); float32 or
    float64, the model's dtype. Raises ValueError naming the argument for an
    unknown activation or initializer name, or a units or input_dim that is
    not a positive int; TypeError for a use_bias that is not a bool.

    Forward is one fused backend kernel (linear_forward: matrix product, bias
    and activation in one pass); backward is one linear_backward (with no
    input gradient for the first layer). A softmax output runs the kernel with
    the identity: the loss fuses softmax with cross-entropy and predict
    applies it; a sigmoid output is fused the same way with binary
    cross-entropy. Methods other than get_config are internal (called by
    Sequential).
    """

    def __init__(self, units: int, activation: Optional[str] = None,
                 kernel_initializer: Union[str, initializers.Initializer] = "glorot_uniform",
                 bias_initializer: Union[str, initializers.Initializer] = "zeros",
                 alpha: float = 0.01, input_dim: Optional[int] = None, use_bias: bool = True):
        super().__init__(input_dim)
        self.units = _positive_int("units", units)
        self.activation = activation_name(activation)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.alpha = positive_number("alpha", alpha, allow_zero=True)
        if not isinstance(use_bias, (bool, np.bool_)):
            raise TypeError(f"use_bias: expected True or False, got {use_bias!r}")
        self.use_bias = bool(use_bias)
        self.defer_activation(self.activation == "softmax")

    w = Weight()
    b = Weight()

    def build(self, input_units, dtype, rng):
        bind_weight(self, "w", self.kernel_initializer((input_units, self.units), dtype, rng))
        self.dw = np.zeros_like(self.w)
        if self.use_bias:
            bind_weight(self, "b", self.bias_initializer((self.units,), dtype, rng))
            self.db = np.zeros_like(self.b)
            self.params, self.grads = [self.w, self.b], [self.dw, self.db]
        else:  # a zero bias for the kernels, and a gradient nobody reads
            bind_weight(self, "b", np.zeros(self.units, dtype))
            self.db = np.zeros(self.units, dtype)
            self.params, self.grads = [self.w], [self.dw]
        super().build(input_units, dtype, rng)

    def adopt_storage(self, params, grads):
        super().adopt_storage(params, grads)
        bind_weight(self, "w", self.params[0])
        if self.use_bias:
            bind_weight(self, "b", self.params[1])
            self.dw, self.db = self.grads
        else:
            (self.dw,) = self.grads

    def forward(self, backend, x, out, scratch, training):
        backend.linear_forward(x, self.w, self.b, self.kernel_activation, self.alpha, out,
                               resolve_precision(self.matmul_precision, x.dtype))

    def backward(self, backend, x, y, dy, dx, scratch):
        backend.linear_backward(x, self.w, y, dy, self.kernel_activation, self.alpha,
                                dx, self.dw, self.db,
                                resolve_precision(self.matmul_precision, x.dtype))

    def output_units(self, input_units):
        return self.units

    def parameter_count(self, input_units):
        return (input_units + self.use_bias) * self.units  # kernel and bias

    def get_config(self):
        config = {"units": self.units, "activation": self.activation, "alpha": self.alpha,
                  **super().get_config()}
        if not self.use_bias:
            config["use_bias"] = False
        return config

    def describe(self):
        return f"Dense({self.activation})" if self.use_bias else \
            f"Dense({self.activation}, no bias)"


class Activation(_OutputActivation, Layer):
    """An activation applied elementwise, y = act(x), as Keras' Activation(name).

    activation: one of these names:
        None or "linear"  the identity (also "identity")
        "relu"            max(x, 0)
        "leaky_relu"      x for x > 0, else alpha * x
        "sigmoid"         1 / (1 + exp(-x))
        "tanh"            tanh(x)
        "softmax"         row-wise softmax; output layer only, with a
                          cross-entropy loss (fused into it, as for Dense)
    alpha: the slope of leaky_relu below zero, a number >= 0.
    input_dim: the input size, as for Dense.

    Shapes: x (N, K) -> y (N, K), the model's dtype. Raises ValueError naming
    the argument for an unknown activation or a negative alpha.

    One backend kernel each way (activation_forward, activation_backward). After
    a BatchNormalization the activation runs inside the batch norm's kernels
    instead (fastnn.normalization.fuse_activations) and this layer shares the
    batch norm's buffers: Dense(64, use_bias=False), BatchNormalization(),
    Activation("relu") is two kernel calls each way. Methods other than
    get_config are internal (called by Sequential).
    """

    def __init__(self, activation: Optional[str], alpha: float = 0.01,
                 input_dim: Optional[int] = None):
        super().__init__(input_dim)
        self.activation = activation_name(activation)
        self.alpha = positive_number("alpha", alpha, allow_zero=True)
        self.aliases_input = False
        self.defer_activation(self.activation == "softmax")

    def build(self, input_units, dtype, rng):
        self.units = input_units
        super().build(input_units, dtype, rng)

    def output_units(self, input_units):
        return input_units

    def forward(self, backend, x, out, scratch, training):
        if not self.aliases_input:
            backend.activation_forward(x, self.kernel_activation, self.alpha, out)

    def backward(self, backend, x, y, dy, dx, scratch):
        if dx is not None and not self.aliases_input:
            backend.activation_backward(y, dy, self.kernel_activation, self.alpha, dx)

    def get_config(self):
        return {"activation": self.activation, "alpha": self.alpha, **super().get_config()}

    def describe(self):
        fused = ", fused" if self.aliases_input else ""
        return f"Activation({self.activation}{fused})"


class Dropout(Layer):
    """Inverted dropout, as Keras' Dropout: in training, zero each input with
    probability rate and scale the rest by 1 / (1 - rate); outside training
    (evaluate, predict), pass the inputs through.

    rate: the probability of dropping an input, a number in [0, 1).
    seed: an int in [0, 2**64) keying the masks (the key's 64 bits); None keys them by the
        seed of the fit (fit(seed=...)). Another type raises TypeError, an int out of that
        range ValueError.
    input_dim: the input size, as for Dense.

    The masks come from a counter-based generator (fastnn.counter_rng) keyed by the
    seed, the layer's position, the epoch, the step and the element: every backend,
    compiled training loop or not, draws the same masks.

    Shapes: x (N, K) -> y (N, K), the model's dtype. Raises ValueError naming
    rate for a value outside [0, 1). Methods other than get_config are internal
    (called by Sequential).
    """

    def __init__(self, rate: float, seed: Optional[int] = None, input_dim: Optional[int] = None):
        super().__init__(input_dim)
        rate = positive_number("rate", rate, allow_zero=True)
        if rate >= 1:
            raise ValueError(f"rate: expected a drop probability in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed_value("seed", seed, bits=64)  # (its key takes 64 bits: layer_key)
        self.threshold = counter_rng.keep_threshold(rate)
        self.scale = 1.0 / (1.0 - rate)
        own = self.seed if self.seed is not None else int(np.random.SeedSequence().generate_state(
            1, np.uint64)[0])
        self.key = counter_rng.layer_key(own, 0)
        self.clock = counter_rng.StepClock()

    def build(self, input_units, dtype, rng):
        self.units = input_units
        super().build(input_units, dtype, rng)

    def output_units(self, input_units):
        return input_units

    def set_random(self, seed, position, clock):
        self.key = counter_rng.layer_key(self.seed if self.seed is not None else seed, position)
        self.clock = clock

    def make_scratch(self, batch, dtype, training):
        # The mask, as a float factor (0 or 1 / (1 - rate)), and the generator's buffers.
        if not training:
            return None
        return np.empty((batch, self.units), dtype), counter_rng.MaskScratch(batch * self.units)

    def forward(self, backend, x, out, scratch, training):
        if not training or self.rate == 0.0:
            np.copyto(out, x)
            return
        mask, draws = scratch
        key = counter_rng.step_key(self.key, self.clock.epoch, self.clock.step)
        keep = counter_rng.draw_keep(key, self.threshold, draws, mask.size)
        np.copyto(mask, keep.reshape(mask.shape))
        mask *= mask.dtype.type(self.scale)
        np.multiply(x, mask, out=out)

    def backward(self, backend, x, y, dy, dx, scratch):
        if dx is None:
            return
        if self.rate == 0.0:
            np.copyto(dx, dy)
        else:
            np.multiply(dy, scratch[0], out=dx)

    def get_config(self):
        return {"rate": self.rate, "seed": self.seed, **super().get_config()}

    def describe(self):
        return f"Dropout({self.rate:g})"


LAYERS = {cls.__name__: cls for cls in (Dense, Activation, Dropout)}


def register(cls):
    """Make a Layer class known to :func:`from_config` (and so to saved files); a decorator
    for layers defined in other modules (fastnn.normalization)."""
    LAYERS[cls.__name__] = cls
    return cls


def from_config(class_name: str, config: Dict[str, Any]) -> Layer:
    """Rebuild a layer saved by :meth:`Layer.get_config` (weights are set separately)."""
    if class_name not in LAYERS:
        raise ValueError(f"layer: unknown layer class {class_name!r}; expected one of "
                         f"{sorted(LAYERS)}")
    return LAYERS[class_name](**config)
