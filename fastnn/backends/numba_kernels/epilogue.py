"""What the linear layer does to a GEMM result while it is still in cache:
add the bias, apply the activation. Each activation gets its own loop, so the
choice is made once per row segment and each loop vectorizes."""

from __future__ import annotations

from numba import njit

from .scalar_math import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH, like, sigmoid, tanh


@njit(cache=True, error_model="numpy")
def bias_activate(values, bias, bias_start, code, alpha):
    """``values[j] = act(values[j] + bias[bias_start + j])`` in place over a 1-D segment.

    values: float (L,); bias: float (>= bias_start + L,) or None;
    code: contract.ACTIVATION_CODES.
    """
    if bias is not None:
        for j in range(values.shape[0]):
            values[j] += bias[bias_start + j]
    if code == IDENTITY:
        return
    zero = like(values[0], 0.0)
    slope = like(values[0], alpha)
    if code == RELU:
        for j in range(values.shape[0]):
            values[j] = zero if values[j] < zero else values[j]  # keeps NaN
    elif code == LEAKY_RELU:
        for j in range(values.shape[0]):
            values[j] = values[j] if values[j] > zero else values[j] * slope
    elif code == SIGMOID:
        for j in range(values.shape[0]):
            values[j] = sigmoid(values[j])
    elif code == TANH:
        for j in range(values.shape[0]):
            values[j] = tanh(values[j])
