"""Row-wise softmax, log-softmax and softmax cross-entropy (loss and gradient).

Every row is max-subtracted, so logits of magnitude 1e4 neither overflow nor
underflow to a wrong answer. Row reductions (max, sums) run on LANES
independent partial results in a stack array, combined at the end of the row:
the inner loop is an elementwise SIMD operation, vectorized without fastmath,
and the result does not depend on the compiler's choices. Exponentials are
computed in a loop of their own (read one row, write one row), the shape
LLVM vectorizes best.

Each kernel comes as ``*_rows(..., start, stop, scratch)``, serial over a range
of rows (called directly for small inputs), and ``*_parallel(..., threads)``,
which runs it over ``threads`` chunks of rows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .partition import chunk_bounds
from .scalar_math import exp_nonpositive
from .stack import stack_array

#: Partial results per row reduction: two AVX registers of float32.
LANES = 16


@njit(cache=True, error_model="numpy")
def scratch_for(x):
    """Per-task scratch: one row of x's length (exponentials nobody asked to keep)."""
    return np.empty(x.shape[1], dtype=x.dtype)


@njit(cache=True, error_model="numpy")
def row_max(row):
    """Largest element of a 1-D row (NaNs are skipped here; they still reach the sums)."""
    length = row.shape[0]
    full = length - length % LANES
    best = row[0]
    if full:
        lanes = stack_array(LANES, row)
        lanes[:] = row[:LANES]
        for start in range(LANES, full, LANES):
            block = row[start:start + LANES]
            for lane in range(LANES):
                lanes[lane] = block[lane] if block[lane] > lanes[lane] else lanes[lane]
        for lane in range(LANES):
            best = lanes[lane] if lanes[lane] > best else best
    for j in range(full, length):
        best = row[j] if row[j] > best else best
    return best


@njit(cache=True, error_model="numpy")
def row_sum(row):
    """Sum of a 1-D row, over LANES partial sums."""
    length = row.shape[0]
    full = length - length % LANES
    lanes = stack_array(LANES, row)
    lanes[:] = 0
    for start in range(0, full, LANES):
        block = row[start:start + LANES]
        for lane in range(LANES):
            lanes[lane] += block[lane]
    total = lanes[0]
    for lane in range(1, LANES):
        total += lanes[lane]
    for j in range(full, length):
        total += row[j]
    return total


@njit(cache=True, error_model="numpy")
def exp_shifted(row, shift, dest):
    """``dest[j] = exp(row[j] - shift)`` (row's max or more as shift); dest may be row."""
    for j in range(row.shape[0]):
        dest[j] = exp_nonpositive(row[j] - shift)


@njit(cache=True, error_model="numpy")
def weighted_shifted_sums(weights, row, shift):
    """``(sum(weights * (row - shift)), sum(weights))`` of two 1-D rows."""
    length = row.shape[0]
    full = length - length % LANES
    dots, totals = stack_array(LANES, row), stack_array(LANES, row)
    dots[:] = 0
    totals[:] = 0
    for start in range(0, full, LANES):
        w_block, x_block = weights[start:start + LANES], row[start:start + LANES]
        for lane in range(LANES):
            dots[lane] += w_block[lane] * (x_block[lane] - shift)
            totals[lane] += w_block[lane]
    dot, total = dots[0], totals[0]
    for lane in range(1, LANES):
        dot += dots[lane]
        total += totals[lane]
    for j in range(full, length):
        dot += weights[j] * (row[j] - shift)
        total += weights[j]
    return dot, total


# -- softmax, log_softmax -----------------------------------------------------------

@njit(cache=True, error_model="numpy")
def softmax_rows(x, out, start, stop, scratch):
    """``out[i] = softmax(x[i])`` for rows start..stop of x, out: float (N, C); out may be x."""
    for i in range(start, stop):
        row, dest = x[i], out[i]
        exp_shifted(row, row_max(row), dest)
        inverse = row.dtype.type(1) / row_sum(dest)
        for j in range(row.shape[0]):
            dest[j] *= inverse


@njit(cache=True, error_model="numpy")
def log_softmax_rows(x, out, start, stop, scratch):
    """``out[i] = x[i] - max - log(sum(exp(x[i] - max)))``; out may be x."""
    for i in range(start, stop):
        row, dest = x[i], out[i]
        shift = row_max(row)
        exp_shifted(row, shift, scratch)
        shift += math.log(row_sum(scratch))
        for j in range(row.shape[0]):
            dest[j] = row[j] - shift


# -- softmax cross-entropy ------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop, scratch):
    """Loss (and gradient, unless grad is None) of rows start..stop.

    logits: float (N, C); target: int64 (N,) labels or float (N, C) probabilities;
    row_loss: float (N,); grad: float (N, C) or None, may be logits itself.
    Passes over a row: max; (target weights); exp, written to grad; sum; scale.
    """
    scale = logits.dtype.type(grad_scale)
    for i in range(start, stop):
        row = logits[i]
        exps = scratch if grad is None else grad[i]
        shift = row_max(row)
        # Read what the loss needs from the row before exps (maybe the row) is written.
        if target.ndim == 1:
            label = target[i]
            weighted, weight = row[label] - shift, row.dtype.type(1)
        else:
            weighted, weight = weighted_shifted_sums(target[i], row, shift)
        exp_shifted(row, shift, exps)
        total = row_sum(exps)
        row_loss[i] = weight * math.log(total) - weighted
        if grad is None:
            continue
        factor = scale / total
        if target.ndim == 1:
            for j in range(row.shape[0]):
                exps[j] *= factor
            exps[label] -= scale
        else:
            probabilities = target[i]
            for j in range(row.shape[0]):
                exps[j] = exps[j] * factor - scale * probabilities[j]


# -- parallel drivers: chunks of rows on threads ------------------------------------

@njit(cache=True, error_model="numpy", parallel=True)
def softmax_parallel(x, out, threads):
    for task in prange(threads):
        start, stop = chunk_bounds(x.shape[0], threads, task)
        softmax_rows(x, out, start, stop, scratch_for(x))


@njit(cache=True, error_model="numpy", parallel=True)
def log_softmax_parallel(x, out, threads):
    for task in prange(threads):
        start, stop = chunk_bounds(x.shape[0], threads, task)
        log_softmax_rows(x, out, start, stop, scratch_for(x))


@njit(cache=True, error_model="numpy", parallel=True)
def softmax_xent_parallel(logits, target, grad_scale, row_loss, grad, threads):
    for task in prange(threads):
        start, stop = chunk_bounds(logits.shape[0], threads, task)
        softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop,
                          scratch_for(logits))
