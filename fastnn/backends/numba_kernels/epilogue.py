"""What the linear layer does to a GEMM result while it is still in cache:
add the bias, apply the activation. Each activation gets its own loop, so the
choice is made once per row segment and each loop vectorizes."""

from __future__ import annotations

from numba import njit

from .scalar_math import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH, like, sigmoid, tanh


@njit(cache=True, error_model="numpy")
def bias_activate(out, i, start, stop, bias, code, alpha):
    """``out[i, j] = act(out[i, j] + bias[j])`` in place for j in start..stop.

    out: float (N, M); bias: float (M,) or None; code: contract.ACTIVATION_CODES.
    Indexes out directly: a row view would cost an atomic reference count update.
    """
    if bias is not None:
        for j in range(start, stop):
            out[i, j] += bias[j]
    if code == IDENTITY:
        return
    zero = like(out[i, start], 0.0)
    slope = like(out[i, start], alpha)
    if code == RELU:
        for j in range(start, stop):
            out[i, j] = zero if out[i, j] < zero else out[i, j]  # keeps NaN
    elif code == LEAKY_RELU:
        for j in range(start, stop):
            out[i, j] = out[i, j] if out[i, j] > zero else out[i, j] * slope
    elif code == SIGMOID:
        for j in range(start, stop):
            out[i, j] = sigmoid(out[i, j])
    elif code == TANH:
        for j in range(start, stop):
            out[i, j] = tanh(out[i, j])
