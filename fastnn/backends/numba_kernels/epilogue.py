"""What the linear layer does to a GEMM result while it is still in cache:
add the bias, apply the activation. Each activation gets its own loop, so the
choice is made once per row segment and each loop vectorizes."""

from __future__ import annotations

import numpy as np
from numba import njit

from .scalar_math import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH, like, sigmoid, tanh


@njit(cache=True, error_model="numpy")
def bias_activate(out, i, start, stop, bias, code, alpha):
    """``out[i, j] = act(out[i, j] + bias[j])`` in place for j in start..stop.

    out: float (N, M); bias: float (M,) or None; code: contract.ACTIVATION_CODES.
    Indexes out directly (a row view would cost an atomic reference count update)
    with unsigned indices: a signed index that LLVM cannot prove non-negative gets
    a wraparound select per element, which kept the sigmoid/tanh loops scalar.
    """
    row = np.uintp(i)
    count = stop - start
    if bias is not None:
        for c in range(count):
            j = np.uintp(start + c)
            out[row, j] += bias[j]
    if code == IDENTITY:
        return
    zero = like(out[row, start], 0.0)
    slope = like(out[row, start], alpha)
    if code == RELU:
        for c in range(count):
            j = np.uintp(start + c)
            out[row, j] = zero if out[row, j] < zero else out[row, j]  # keeps NaN
    elif code == LEAKY_RELU:
        for c in range(count):
            j = np.uintp(start + c)
            out[row, j] = out[row, j] if out[row, j] > zero else out[row, j] * slope
    elif code == SIGMOID:
        for c in range(count):
            j = np.uintp(start + c)
            out[row, j] = sigmoid(out[row, j])
    elif code == TANH:
        for c in range(count):
            j = np.uintp(start + c)
            out[row, j] = tanh(out[row, j])
