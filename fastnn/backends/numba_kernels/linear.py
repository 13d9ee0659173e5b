"""The dense layer ``y = act(x @ w + b)``: forward is the GEMM with its bias and
activation epilogue; backward forms ``dz = dy * act'(y)`` and ``db`` in one pass
over the rows, then two GEMMs that read the transposes in place.

x: float (N, K); w: float (K, M); b, db: float (M,); y, dy: float (N, M);
dx: float (N, K) or None; dw: float (K, M). code: contract.ACTIVATION_CODES.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .gemm import gemm_parallel, gemm_serial
from .partition import chunk_bounds
from .scalar_math import derivative_from_output


@njit(cache=True)
def dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, start, stop):
    """``dz = dy * act'(y)`` for rows start..stop, and ``db = sum of those dz rows``."""
    slope = y.dtype.type(alpha)
    db[:] = 0
    for i in range(start, stop):
        for j in range(y.shape[1]):
            value = dy[i, j] * derivative_from_output(y[i, j], code, slope)
            dz[i, j] = value
            db[j] += value


@njit(cache=True)
def linear_backward_serial(x, w, y, dy, code, alpha, dx, dw, db):
    dz = np.empty_like(dy)
    dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, 0, dy.shape[0])
    gemm_serial(x, dz, True, False, dw, None, 0, 0.0)
    if dx is not None:
        gemm_serial(dz, w, False, True, dx, None, 0, 0.0)


@njit(cache=True, parallel=True)
def _dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads):
    partial = np.empty((threads, db.shape[0]), dtype=db.dtype)
    for task in prange(threads):
        start, stop = chunk_bounds(y.shape[0], threads, task)
        dz_and_bias_grad_rows(y, dy, code, alpha, dz, partial[task], start, stop)
    db[:] = partial[0]
    for task in range(1, threads):
        db += partial[task]


@njit(cache=True)
def linear_backward_parallel(x, w, y, dy, code, alpha, dx, dw, db, threads):
    dz = np.empty_like(dy)
    _dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads)
    gemm_parallel(x, dz, True, False, dw, None, 0, 0.0, threads)
    if dx is not None:
        gemm_parallel(dz, w, False, True, dx, None, 0, 0.0, threads)
