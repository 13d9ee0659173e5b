"""Batch normalization (Ioffe & Szegedy, 2015) as Keras' ``BatchNormalization`` layer.

In training, each feature (column) of the batch is normalized with the batch's mean and
biased variance (divided by N), then scaled by ``gamma`` and shifted by ``beta``; the moving
statistics follow ``moving = momentum * moving + (1 - momentum) * batch``. In ``evaluate`` and
``predict`` the moving statistics are used instead. Both directions are one backend kernel
(``batchnorm_forward`` / ``batchnorm_backward``), which also apply an activation that follows:
in the Keras idiom ``Dense(64, use_bias=False), BatchNormalization(), Activation("relu")`` the
model runs the relu inside the batch norm's kernels (:func:`fuse_activations`).

Conventions, for users of PyTorch's ``BatchNorm1d``: Keras' ``momentum`` is the weight of the
old value, so PyTorch's ``momentum`` is ``1 - momentum`` here (0.99 here is 0.01 there);
PyTorch's running variance is updated with the unbiased batch variance (divided by N - 1)
while Keras and fastnn use the biased one (both normalize the batch with the biased one);
PyTorch's default ``eps`` is 1e-5, Keras' ``epsilon`` 1e-3.

A batch of one row in training has variance 0 in every feature: the output is ``beta`` (then
the activation), the input gradient 0, and the moving variance decays toward 0, as in Keras
(PyTorch refuses such a batch). A constant feature is the same: no NaN.
"""

from __future__ import annotations

from typing import List, Optional, Union

import numpy as np

from . import initializers
from .backends.contract import ACTIVATIONS
from .layers import Activation, Layer, Weight, bind_weight, register
from .validation import positive_number


@register
class BatchNormalization(Layer):
    """Batch normalization of the features of (N, M) inputs, as Keras' BatchNormalization.

    In training: y = gamma * (x - mean) / sqrt(var + epsilon) + beta with the batch's
    mean and biased variance, and the moving statistics updated as
    moving = momentum * moving + (1 - momentum) * batch; in evaluate and predict, the
    moving statistics replace the batch's.

    momentum: a number in [0, 1], the weight of the old moving statistics (Keras'
        convention; PyTorch's momentum is 1 - momentum).
    epsilon: a number > 0, added to the variance.
    center, scale: whether the trainable beta (shift) and gamma (scale) exist;
        without them the shift is 0 and the scale 1.
    beta_initializer, gamma_initializer, moving_mean_initializer,
    moving_variance_initializer: Initializer objects or names (see
        fastnn.initializers), by default "zeros", "ones", "zeros", "ones".
    input_dim: the input size, as for Dense.

    Shapes: x (N, M) -> y (N, M), the model's dtype; weights in Keras' order: gamma,
    beta (trainable, when present), moving_mean, moving_variance (not trained), each
    (M,). Raises ValueError/TypeError naming the argument for a bad value. A training
    batch of one row gives beta (variance 0), without NaN. Methods other than
    get_config are internal (called by Sequential).
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True,
                 beta_initializer: Union[str, initializers.Initializer] = "zeros",
                 gamma_initializer: Union[str, initializers.Initializer] = "ones",
                 moving_mean_initializer: Union[str, initializers.Initializer] = "zeros",
                 moving_variance_initializer: Union[str, initializers.Initializer] = "ones",
                 input_dim: Optional[int] = None):
        super().__init__(input_dim)
        momentum = positive_number("momentum", momentum, allow_zero=True)
        if momentum > 1:
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum}")
        self.momentum = momentum
        self.epsilon = positive_number("epsilon", epsilon)
        for name, value in (("center", center), ("scale", scale)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name}: expected True or False, got {value!r}")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer, "beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer, "gamma_initializer")
        self.moving_mean_initializer = initializers.get(moving_mean_initializer,
                                                        "moving_mean_initializer")
        self.moving_variance_initializer = initializers.get(moving_variance_initializer,
                                                            "moving_variance_initializer")
        #: The activation the kernels apply after the shift: set by fuse_activations.
        self.activation, self.alpha = "identity", 0.01

    gamma = Weight()
    beta = Weight()
    moving_mean = Weight()
    moving_variance = Weight()

    def build(self, input_units, dtype, rng):
        self.units = input_units
        shape = (input_units,)
        bind_weight(self, "gamma", self.gamma_initializer(shape, dtype, rng) if self.scale
                    else np.ones(shape, dtype))
        bind_weight(self, "beta", self.beta_initializer(shape, dtype, rng) if self.center
                    else np.zeros(shape, dtype))
        bind_weight(self, "moving_mean", self.moving_mean_initializer(shape, dtype, rng))
        bind_weight(self, "moving_variance", self.moving_variance_initializer(shape, dtype, rng))
        self.dgamma, self.dbeta = np.zeros(shape, dtype), np.zeros(shape, dtype)
        self.params, self.grads = self._trainable(self.gamma, self.beta), \
            self._trainable(self.dgamma, self.dbeta)
        self.state = [self.moving_mean, self.moving_variance]
        super().build(input_units, dtype, rng)

    def _trainable(self, gamma, beta) -> List[np.ndarray]:
        return [array for array, present in ((gamma, self.scale), (beta, self.center))
                if present]

    def adopt_storage(self, params, grads):
        super().adopt_storage(params, grads)
        params, grads = list(params), list(grads)
        if self.scale:
            bind_weight(self, "gamma", params.pop(0))
            self.dgamma = grads.pop(0)
        if self.center:
            bind_weight(self, "beta", params.pop(0))
            self.dbeta = grads.pop(0)

    def output_units(self, input_units):
        return input_units

    def parameter_count(self, input_units):
        return (self.scale + self.center + 2) * input_units

    def non_trainable_count(self, input_units):
        return 2 * input_units

    def make_scratch(self, batch, dtype, training):
        return _Statistics(np.empty(self.units, dtype), np.empty(self.units, dtype))

    def forward(self, backend, x, out, scratch, training):
        mean, inv_std = scratch.mean, scratch.inv_std
        backend.batchnorm_forward(x, self.gamma, self.beta, self.moving_mean,
                                  self.moving_variance, self.momentum, self.epsilon, training,
                                  self.activation, self.alpha, out, mean, inv_std)

    def backward(self, backend, x, y, dy, dx, scratch):
        mean, inv_std = scratch.mean, scratch.inv_std
        backend.batchnorm_backward(x, y, dy, self.gamma, mean, inv_std, True, self.activation,
                                   self.alpha, dx, self.dgamma, self.dbeta)

    def get_config(self):
        return {"momentum": self.momentum, "epsilon": self.epsilon, "center": self.center,
                "scale": self.scale, **super().get_config()}

    def describe(self):
        fused = "" if self.activation == "identity" else f", {self.activation}"
        return f"BatchNormalization({fused[2:]})" if fused else "BatchNormalization"


class _Statistics:
    """The statistics of a batch norm's last forward, which its backward reads: mean and
    inv_std, (M,) each. Per column, not per row: not a tuple of arrays, which the reference
    loop (fastnn.backends.reference_loop) would cut to a short batch's rows."""

    __slots__ = ("mean", "inv_std")

    def __init__(self, mean: np.ndarray, inv_std: np.ndarray):
        self.mean, self.inv_std = mean, inv_std


def fuse_activations(layers: List[Layer]) -> None:
    """Run each Activation that follows a BatchNormalization inside the batch norm's kernels.

    The Activation must not be the model's last layer (there the loss may take over a
    sigmoid or softmax) and must be one of the kernels' activations; it then shares the
    batch norm's buffers (``aliases_input``) and does nothing itself. Called by the model
    when it builds.
    """
    for before, layer in zip(layers, layers[1:-1]):
        if (isinstance(before, BatchNormalization) and isinstance(layer, Activation)
                and before.activation == "identity" and layer.activation in ACTIVATIONS
                and layer.activation != "identity"):
            before.activation, before.alpha = layer.activation, layer.alpha
            layer.aliases_input = True
