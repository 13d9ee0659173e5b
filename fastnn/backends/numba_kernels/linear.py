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

from .gemm import (blocked_scratch_sizes, direct_scratch_size, gemm_blocked_into, gemm_rows,
                   gemm_tiles, tiled)
from .fp_mode import fp_enter, fp_leave
from .partition import add_rows_in_order, chunk_bounds
from .scalar_math import IDENTITY, derivative_from_output
from .team import region_enter, region_leave, task_enter, task_leave


@njit(cache=True, error_model="numpy")
def dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, start, stop):
    """``dz = dy * act'(y)`` for rows start..stop, and ``db = the sum of those dz rows``."""
    mode = fp_enter()
    slope = y.dtype.type(alpha)
    db[:] = 0
    for i in range(start, stop):
        for j in range(y.shape[1]):
            value = dy[i, j] * derivative_from_output(y[i, j], code, slope)
            dz[i, j] = value
            db[j] += value
    fp_leave(mode)


@njit(cache=True, error_model="numpy")
def linear_backward_direct(x, w, y, dy, code, alpha, dx, dw, db):
    """Backward of a tiny layer on the calling thread, without packing."""
    mode = fp_enter()
    linear_backward_direct_into(x, w, y, dy, code, alpha, dx, dw, db, np.empty_like(dy),
                                np.empty(direct_backward_scratch_size(*x.shape, w.shape[1], x),
                                         x.dtype))
    fp_leave(mode)


@njit(cache=True, error_model="numpy")
def direct_backward_scratch_size(n, k, m, like):
    """Elements of linear_backward_direct_into's GEMM scratch (the larger of its two GEMMs)."""
    return max(direct_scratch_size(k, m, n, like), direct_scratch_size(n, k, m, like))


@njit(cache=True, error_model="numpy")
def linear_backward_direct_into(x, w, y, dy, code, alpha, dx, dw, db, dz, scratch):
    """linear_backward_direct with dz (N, M) and the GEMMs' scratch
    (direct_backward_scratch_size) given."""
    dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, 0, dy.shape[0])
    n, k, m = x.shape[0], x.shape[1], dy.shape[1]
    if tiled(k, m, n):  # gemm_direct, one call layer less (see tiled)
        gemm_tiles(x, dz, True, False, dw, None, IDENTITY, 0.0, scratch)
    else:
        gemm_rows(x, dz, True, False, dw, None, IDENTITY, 0.0, 0, k)
    if dx is not None and tiled(n, k, m):
        gemm_tiles(dz, w, False, True, dx, None, IDENTITY, 0.0, scratch)
    elif dx is not None:
        gemm_rows(dz, w, False, True, dx, None, IDENTITY, 0.0, 0, n)


@njit(cache=True, error_model="numpy", parallel=True)
def dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads, partial_db):
    """dz_and_bias_grad_rows on ``threads`` chunks of rows, partial db sums (partial_db:
    (threads, M)) added after."""
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(y.shape[0], threads, task)
        dz_and_bias_grad_rows(y, dy, code, alpha, dz, partial_db[task], start, stop)
        task_leave(mode)
    region_leave(region)
    serial = fp_enter()
    add_rows_in_order(partial_db, threads, db)
    fp_leave(serial)


@njit(cache=True, error_model="numpy")
def backward_scratch_sizes(n, k, m, threads, like):
    """Elements of the GEMM scratch arrays of linear_backward_blocked_into (the larger of its
    two GEMMs, each of the three)."""
    sizes_dw = blocked_scratch_sizes(k, m, n, threads, like)
    sizes_dx = blocked_scratch_sizes(n, k, m, threads, like)
    return (max(sizes_dw[0], sizes_dx[0]), max(sizes_dw[1], sizes_dx[1]),
            max(sizes_dw[2], sizes_dx[2]))


@njit(cache=True, error_model="numpy")
def linear_backward_blocked(x, w, y, dy, code, alpha, dx, dw, db, threads):
    """Backward on ``threads`` threads with the blocked GEMM."""
    a_size, tile_size, b_size = backward_scratch_sizes(x.shape[0], x.shape[1], w.shape[1],
                                                       threads, x)
    linear_backward_blocked_into(x, w, y, dy, code, alpha, dx, dw, db, threads,
                                 np.empty_like(dy), np.empty((threads, db.shape[0]), db.dtype),
                                 np.empty(a_size, x.dtype), np.empty(tile_size, x.dtype),
                                 np.empty(b_size, x.dtype))


@njit(cache=True, error_model="numpy")
def linear_backward_blocked_into(x, w, y, dy, code, alpha, dx, dw, db, threads, dz, partial_db,
                                 a_scratch, tile_scratch, b_scratch):
    """linear_backward_blocked with its memory given: dz (N, M), partial_db (threads, M) and
    the GEMM's scratch (backward_scratch_sizes)."""
    dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads, partial_db)
    gemm_blocked_into(x, dz, True, False, dw, None, IDENTITY, 0.0, threads, a_scratch,
                      tile_scratch, b_scratch)
    if dx is not None:
        gemm_blocked_into(dz, w, False, True, dx, None, IDENTITY, 0.0, threads, a_scratch,
                          tile_scratch, b_scratch)
