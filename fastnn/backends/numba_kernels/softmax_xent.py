"""Row-wise softmax, log-softmax and softmax cross-entropy (loss and gradient).

Every row is max-subtracted, so logits of magnitude 1e4 neither overflow nor
underflow to a wrong answer. Row reductions (max, sums) run on LANES
independent partial results, combined at the end of the row: the inner loop is
then an elementwise SIMD operation, vectorized without fastmath, and the
result does not depend on the compiler's choices.

Each kernel comes as ``*_rows(..., start, stop, scratch)``, serial over a range
of rows (called directly for small inputs), and ``*_parallel(..., threads)``,
which runs it over chunks of rows on ``threads`` threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .partition import chunk_bounds
from .scalar_math import exp_nonpositive

#: Partial results per row reduction: one AVX-512 register of float32.
LANES = 16


@njit(cache=True)
def scratch_for(x):
    """Per-task scratch: two rows of LANES partials, then one row of x's length."""
    return np.empty((3, max(LANES, x.shape[1])), dtype=x.dtype)


@njit(cache=True)
def _lane_total(lanes):
    total = lanes[0]
    for lane in range(1, LANES):
        total += lanes[lane]
    return total


@njit(cache=True)
def row_max(row, lanes):
    """Largest element of a 1-D row (NaNs are skipped here; they still reach the sums)."""
    length = row.shape[0]
    full = length - length % LANES
    best = row[0]
    if full:
        for lane in range(LANES):
            lanes[lane] = row[lane]
        for start in range(LANES, full, LANES):
            for lane in range(LANES):
                value = row[start + lane]
                lanes[lane] = value if value > lanes[lane] else lanes[lane]
        for lane in range(LANES):
            best = lanes[lane] if lanes[lane] > best else best
    for j in range(full, length):
        best = row[j] if row[j] > best else best
    return best


@njit(cache=True)
def exp_shifted_sum(row, shift, dest, lanes):
    """``dest[j] = exp(row[j] - shift)``; returns their sum. dest may be row."""
    length = row.shape[0]
    full = length - length % LANES
    lanes[:LANES] = 0
    for start in range(0, full, LANES):
        for lane in range(LANES):
            e = exp_nonpositive(row[start + lane] - shift)
            dest[start + lane] = e
            lanes[lane] += e
    total = _lane_total(lanes)
    for j in range(full, length):
        e = exp_nonpositive(row[j] - shift)
        dest[j] = e
        total += e
    return total


@njit(cache=True)
def weighted_shifted_sums(weights, row, shift, lanes):
    """``(sum(weights * (row - shift)), sum(weights))`` of two 1-D rows."""
    length = row.shape[0]
    full = length - length % LANES
    lanes[:, :LANES] = 0
    for start in range(0, full, LANES):
        for lane in range(LANES):
            w = weights[start + lane]
            lanes[0, lane] += w * (row[start + lane] - shift)
            lanes[1, lane] += w
    dot, total = _lane_total(lanes[0]), _lane_total(lanes[1])
    for j in range(full, length):
        dot += weights[j] * (row[j] - shift)
        total += weights[j]
    return dot, total


# -- softmax, log_softmax -----------------------------------------------------------

@njit(cache=True)
def softmax_rows(x, out, start, stop, scratch):
    """``out[i] = softmax(x[i])`` for rows start..stop of x, out: float (N, C); out may be x."""
    lanes = scratch[0]
    for i in range(start, stop):
        row, dest = x[i], out[i]
        shift = row_max(row, lanes)
        inverse = row.dtype.type(1) / exp_shifted_sum(row, shift, dest, lanes)
        for j in range(row.shape[0]):
            dest[j] *= inverse


@njit(cache=True)
def log_softmax_rows(x, out, start, stop, scratch):
    """``out[i] = x[i] - max - log(sum(exp(x[i] - max)))``; out may be x."""
    lanes, exps = scratch[0], scratch[2, :x.shape[1]]
    for i in range(start, stop):
        row, dest = x[i], out[i]
        shift = row_max(row, lanes)
        shift += math.log(exp_shifted_sum(row, shift, exps, lanes))
        for j in range(row.shape[0]):
            dest[j] = row[j] - shift


# -- softmax cross-entropy ------------------------------------------------------------

@njit(cache=True)
def softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop, scratch):
    """Loss (and gradient, unless grad is None) of rows start..stop.

    logits: float (N, C); target: int64 (N,) labels or float (N, C) probabilities;
    row_loss: float (N,); grad: float (N, C) or None, may be logits itself.
    One pass for the max, one for exp (written to grad), one to scale it.
    """
    lanes = scratch[:2, :LANES]
    scale = logits.dtype.type(grad_scale)
    for i in range(start, stop):
        row = logits[i]
        exps = scratch[2, :row.shape[0]] if grad is None else grad[i]
        shift = row_max(row, lanes[0])
        # Read what the loss needs from the row before exps (maybe the row) is written.
        if target.ndim == 1:
            label = target[i]
            weighted, weight = row[label] - shift, row.dtype.type(1)
        else:
            weighted, weight = weighted_shifted_sums(target[i], row, shift, lanes)
        total = exp_shifted_sum(row, shift, exps, lanes[0])
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

@njit(cache=True, parallel=True)
def softmax_parallel(x, out, threads):
    for task in prange(threads):
        start, stop = chunk_bounds(x.shape[0], threads, task)
        softmax_rows(x, out, start, stop, scratch_for(x))


@njit(cache=True, parallel=True)
def log_softmax_parallel(x, out, threads):
    for task in prange(threads):
        start, stop = chunk_bounds(x.shape[0], threads, task)
        log_softmax_rows(x, out, start, stop, scratch_for(x))


@njit(cache=True, parallel=True)
def softmax_xent_parallel(logits, target, grad_scale, row_loss, grad, threads):
    for task in prange(threads):
        start, stop = chunk_bounds(logits.shape[0], threads, task)
        softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop,
                          scratch_for(logits))
