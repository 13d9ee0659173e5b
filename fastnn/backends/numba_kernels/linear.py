"""The dense layer ``y = act(x @ w + b)``: forward is the GEMM with its bias and
activation epilogue (see gemm.py); backward forms ``dz = dy * act'(y)`` and
``db`` in one pass over the rows, then runs two GEMMs that read the transposes
in place: ``dw = x.T @ dz`` and ``dx = dz @ w.T`` (skipped when dx is None).

x: float (N, K); w: float (K, M); y, dy: float (N, M); dx: float (N, K) or
None; dw: float (K, M); db: float (M,). code: contract.ACTIVATION_CODES.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .fpmode import fp_enter, fp_leave
from .gemm import gemm_blocked, gemm_rows
from .partition import chunk_bounds
from .scalar_math import IDENTITY, derivative_from_output


@njit(cache=True, error_model="numpy")
def dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, start, stop, flush=True):
    """``dz = dy * act'(y)`` for rows start..stop, and ``db = the sum of those dz rows``;
    flush: the floating-point mode (fpmode.py)."""
    saved = fp_enter(flush)
    slope = y.dtype.type(alpha)
    db[:] = 0
    for i in range(start, stop):
        for j in range(y.shape[1]):
            value = dy[i, j] * derivative_from_output(y[i, j], code, slope)
            dz[i, j] = value
            db[j] += value
    fp_leave(saved)


@njit(cache=True, error_model="numpy")
def linear_backward_direct(x, w, y, dy, code, alpha, dx, dw, db, flush=True):
    """Backward of a tiny layer on the calling thread, without packing."""
    dz = np.empty_like(dy)
    dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, 0, dy.shape[0], flush)
    gemm_rows(x, dz, True, False, dw, None, IDENTITY, 0.0, 0, dw.shape[0], flush)
    if dx is not None:
        gemm_rows(dz, w, False, True, dx, None, IDENTITY, 0.0, 0, dx.shape[0], flush)


@njit(cache=True, error_model="numpy", parallel=True)
def dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads, flush=True):
    """dz_and_bias_grad_rows on ``threads`` chunks of rows, partial db sums added after."""
    partial_db = np.empty((threads, db.shape[0]), dtype=db.dtype)
    for task in prange(threads):
        start, stop = chunk_bounds(y.shape[0], threads, task)
        dz_and_bias_grad_rows(y, dy, code, alpha, dz, partial_db[task], start, stop, flush)
    db[:] = partial_db[0]
    for task in range(1, threads):
        db += partial_db[task]


@njit(cache=True, error_model="numpy")
def linear_backward_blocked(x, w, y, dy, code, alpha, dx, dw, db, threads, flush=True):
    """Backward on ``threads`` threads with the blocked GEMM."""
    dz = np.empty_like(dy)
    dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads, flush)
    gemm_blocked(x, dz, True, False, dw, None, IDENTITY, 0.0, threads, flush)
    if dx is not None:
        gemm_blocked(dz, w, False, True, dx, None, IDENTITY, 0.0, threads, flush)
