"""GEMM ``out = act(op(a) @ op(b) + bias)``: the engine of matmul and the linear layer.

a: float (N, K), or (K, N) when trans_a; b: float (K, M), or (M, K) when
trans_b; out: float (N, M); bias: float (M,) or None; code: an activation
code (IDENTITY for a plain product). Transposes are read in place.
"""

from __future__ import annotations

from numba import njit, prange

from .epilogue import bias_activate
from .partition import chunk_bounds


@njit(cache=True)
def gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, start, stop):
    """Rows start..stop of the product, straight from a and b (no packing)."""
    inner = b.shape[1] if trans_b else b.shape[0]
    for i in range(start, stop):
        row = out[i]
        if trans_b:  # out[i, j] = dot(op(a)[i], b[j]): b's rows are contiguous
            for j in range(row.shape[0]):
                total = row.dtype.type(0)
                for p in range(inner):
                    total += (a[p, i] if trans_a else a[i, p]) * b[j, p]
                row[j] = total
        else:  # out[i] = sum_p op(a)[i, p] * b[p]: vectorized over the row
            row[:] = 0
            for p in range(inner):
                scale = a[p, i] if trans_a else a[i, p]
                for j in range(row.shape[0]):
                    row[j] += scale * b[p, j]
        bias_activate(row, bias, code, alpha)


@njit(cache=True)
def gemm_serial(a, b, trans_a, trans_b, out, bias, code, alpha):
    """The whole product on the calling thread."""
    gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, 0, out.shape[0])


@njit(cache=True, parallel=True)
def gemm_parallel(a, b, trans_a, trans_b, out, bias, code, alpha, threads):
    """The whole product on ``threads`` threads."""
    for task in prange(threads):
        start, stop = chunk_bounds(out.shape[0], threads, task)
        gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, start, stop)
