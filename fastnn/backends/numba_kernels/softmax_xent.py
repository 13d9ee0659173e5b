"""Row-wise softmax, log-softmax, and softmax and sigmoid cross-entropy (loss and gradient).

Every row is max-subtracted, so logits of magnitude 1e4 neither overflow nor
underflow to a wrong answer. Row reductions (max, sums) run on LANES
independent partial results in a stack array, combined at the end of the row:
the inner loop is an elementwise SIMD operation, vectorized without fastmath,
and the result does not depend on the compiler's choices. Exponentials are
computed in a loop of their own, over a chunk of rows at once (about
CHUNK_ELEMENTS, so it stays in L1): rows of 10 classes then still fill
whole vectors.

Each kernel comes as ``*_rows(..., start, stop, scratch)``, serial over a range
of rows (called directly for small inputs), and ``*_parallel(..., threads)``,
which runs it over ``threads`` chunks of rows. Each runs in fastnn's floating-point mode
(fp_mode; team for the parallel loops).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .fp_mode import fp_enter, fp_leave
from .partition import chunk_bounds
from .scalar_math import exp_nonpositive
from .stack import stack_array
from .team import region_enter, region_leave, task_enter, task_leave

#: Partial results per row reduction: two AVX registers of float32.
LANES = 16
#: Elements per chunk of rows whose exponentials are taken in one loop (16 KiB float32).
CHUNK_ELEMENTS = 4096


@njit(cache=True, error_model="numpy")
def rows_per_chunk(x):
    return max(1, CHUNK_ELEMENTS // x.shape[1])


@njit(cache=True, error_model="numpy")
def scratch_for(x):
    """Per-task scratch: a chunk of rows for exponentials nobody asked to keep."""
    return np.empty((rows_per_chunk(x), x.shape[1]), dtype=x.dtype)


# The row helpers take a 2-D array and a row index instead of a row view: a view
# bumps the array's reference count, an atomic operation that two threads working
# on the same array turn into cache-line ping-pong, once per row (or per block).

@njit(cache=True, error_model="numpy")
def row_max(x, i):
    """Largest element of x[i] (NaNs are skipped here; they still reach the sums)."""
    length = x.shape[1]
    full = length - length % LANES
    best = x[i, 0]
    if full:
        lanes = stack_array(LANES, x)
        for lane in range(LANES):
            lanes[lane] = x[i, lane]
        for block in range(1, full // LANES):
            for lane in range(LANES):
                value = x[i, block * LANES + lane]
                lanes[lane] = value if value > lanes[lane] else lanes[lane]
        for lane in range(LANES):
            best = lanes[lane] if lanes[lane] > best else best
    for j in range(full, length):
        best = x[i, j] if x[i, j] > best else best
    return best


# Compiled on its own (LLVM inlines it): inlined by Numba, its select tripped an internal
# check of Numba's SSA pass (NumbaIRAssumptionWarning).
@njit(cache=True, error_model="numpy")
def _positive_part(weight, value):
    """``weight * value`` where weight > 0, else 0 (0 * log 0 = 0, also for value -inf)."""
    product = weight * value
    return product if weight > 0 else weight - weight


def weighted_term(x, i, j, shift, weights):
    """``weights[i, j] * (x[i, j] - shift)``, 0 where the weight is not positive (0 * log 0
    = 0: a target of 0 adds nothing against a logit of -inf); a None shift or weights drops
    its part (chosen at compile time, so a plain row sum costs nothing extra)."""
    value = x[i, j] if shift is None else x[i, j] - shift
    return value if weights is None else weights[i, j] * value


@overload(weighted_term, inline="always")
def _weighted_term_overload(x, i, j, shift, weights):
    no_shift, no_weights = (isinstance(t, types.NoneType) for t in (shift, weights))
    if no_shift and no_weights:
        return lambda x, i, j, shift, weights: x[i, j]
    if no_weights:
        return lambda x, i, j, shift, weights: x[i, j] - shift
    if no_shift:
        return lambda x, i, j, shift, weights: _positive_part(weights[i, j], x[i, j])
    return lambda x, i, j, shift, weights: _positive_part(weights[i, j], x[i, j] - shift)


# inline="always": inlined by Numba itself; left to LLVM, a call per row stayed,
# a third of the time of a 10-class cross-entropy.
@njit(cache=True, error_model="numpy", inline="always")
def weighted_shifted_sum(x, i, shift, weights):
    """``sum(weights[i] * (x[i] - shift))`` over LANES partial sums; shift None
    means 0 and weights None means all 1 (so ``weighted_shifted_sum(x, i, None,
    None)`` is the sum of row i)."""
    length = x.shape[1]
    full = length - length % LANES
    total = x.dtype.type(0)
    if full:
        lanes = stack_array(LANES, x)
        lanes[:] = 0
        for block in range(full // LANES):
            for lane in range(LANES):
                lanes[lane] += weighted_term(x, i, block * LANES + lane, shift, weights)
        for lane in range(LANES):
            total += lanes[lane]
    for j in range(full, length):
        total += weighted_term(x, i, j, shift, weights)
    return total


@njit(cache=True, error_model="numpy")
def row_sum(x, i):
    """Sum of x[i], over LANES partial sums."""
    return weighted_shifted_sum(x, i, None, None)


# "reassoc" lets LLVM split the sum into independent partial sums of its choice: for the
# short rows of a 10-class problem, row_sum's lanes do not apply and a chain of dependent adds
# made label smoothing cost 1.25x the plain kernel. (Only the last bits of the sum change.)
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def shifted_row_sum(values, i):
    """Sum of values[i] (a shifted row of logits, for label smoothing's uniform part)."""
    total = values.dtype.type(0)
    for j in range(values.shape[1]):
        total += values[i, j]
    return total


@njit(cache=True, error_model="numpy")
def exp_shifted(x, i, shift, dest, dest_row):
    """``dest[dest_row, j] = exp(x[i, j] - shift)`` (shift: the row's max or more);
    dest may be x."""
    for j in range(x.shape[1]):
        dest[dest_row, j] = exp_nonpositive(x[i, j] - shift)


@njit(cache=True, error_model="numpy")
def write_shifted(x, i, shift, dest, dest_row):
    """``dest[dest_row] = x[i] - shift``; dest may be x."""
    for j in range(x.shape[1]):
        dest[dest_row, j] = x[i, j] - shift


@njit(cache=True, error_model="numpy")
def exp_rows_in_place(values, first, stop):
    """``values[first:stop] = exp(values[first:stop])`` (entries <= 0), one flat loop."""
    flat = values[first:stop].reshape(-1)  # one view per chunk, not per row
    for k in range(flat.shape[0]):
        flat[k] = exp_nonpositive(flat[k])


# -- softmax, log_softmax -----------------------------------------------------------

@njit(cache=True, error_model="numpy")
def softmax_rows(x, out, start, stop, scratch):
    """``out[i] = softmax(x[i])`` for rows start..stop of x, out: float (N, C); out may be x."""
    mode = fp_enter()
    for first in range(start, stop, rows_per_chunk(x)):
        last = min(first + rows_per_chunk(x), stop)
        for i in range(first, last):
            write_shifted(x, i, row_max(x, i), out, i)
        exp_rows_in_place(out, first, last)
        for i in range(first, last):
            inverse = x.dtype.type(1) / row_sum(out, i)
            for j in range(x.shape[1]):
                out[i, j] *= inverse
    fp_leave(mode)


@njit(cache=True, error_model="numpy")
def log_softmax_rows(x, out, start, stop, scratch):
    """``out[i] = x[i] - max - log(sum(exp(x[i] - max)))``; out may be x."""
    mode = fp_enter()
    for i in range(start, stop):
        shift = row_max(x, i)
        exp_shifted(x, i, shift, scratch, 0)
        shift += math.log(row_sum(scratch, 0))
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] - shift
    fp_leave(mode)


# -- softmax cross-entropy ------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop, scratch,
                      label_smoothing=0.0, ignore_index=-1, weight=None):
    """Loss (and gradient, unless grad is None) of rows start..stop.

    logits: float (N, C); target: int64 (N,) labels (rows labelled ignore_index get loss
    and gradient 0; -1 when there is none, as labels are then in [0, C)) or float (N, C)
    probabilities; row_loss: float (N,); grad: float (N, C) or None, may be logits itself;
    weight: float (N,) per-row weights or None. The target is smoothed to
    ``(1 - eps) t + eps / C`` (eps = label_smoothing).
    By chunks of rows: max, the target's part of the loss and the shifted row
    (written to grad, or scratch; with smoothing, its sum is taken there while it is in L1);
    exp of the chunk; sums, log and scaling.
    """
    mode = fp_enter()
    dtype = logits.dtype.type
    scale = dtype(grad_scale)
    eps = dtype(label_smoothing)
    keep = dtype(1) - eps
    uniform = eps / logits.shape[1]
    chunk = rows_per_chunk(logits)
    for first in range(start, stop, chunk):
        last = min(first + chunk, stop)
        if grad is None:
            exps, offset = scratch, first
        else:
            exps, offset = grad, 0
        for i in range(first, last):
            shift = row_max(logits, i)
            # Read what the loss needs from the row before exps (maybe the row) is written.
            if target.ndim == 1:
                row_loss[i] = 0
                if target[i] != ignore_index:
                    row_loss[i] = keep * (shift - logits[i, target[i]])
            else:
                row_loss[i] = -keep * weighted_shifted_sum(logits, i, shift, target)
            write_shifted(logits, i, shift, exps, i - offset)
            if eps != 0:
                row_loss[i] -= uniform * shifted_row_sum(exps, i - offset)
        exp_rows_in_place(exps, first - offset, last - offset)
        for i in range(first, last):
            if target.ndim == 1 and target[i] == ignore_index:
                row_loss[i] = 0
                if grad is not None:
                    grad[i, :] = 0
                continue
            w = dtype(1)
            if weight is not None:
                w = weight[i]
            total = row_sum(exps, i - offset)
            # loss = mass * log(total) - sum(t' * (row - shift)), mass = sum(t')
            mass = dtype(1) if target.ndim == 1 else keep * row_sum(target, i) + eps
            row_loss[i] = w * (row_loss[i] + mass * math.log(total))
            if grad is None:
                continue
            row_scale = scale * w
            factor = row_scale / total
            smooth = row_scale * uniform
            if target.ndim == 1:
                for j in range(logits.shape[1]):
                    grad[i, j] = grad[i, j] * factor - smooth
                grad[i, target[i]] -= row_scale * keep
            else:
                for j in range(logits.shape[1]):
                    grad[i, j] = grad[i, j] * factor - (row_scale * keep * target[i, j] + smooth)
    fp_leave(mode)


@njit(cache=True, error_model="numpy")
def sigmoid_xent_rows(logits, target, grad_scale, row_loss, grad, label_smoothing, weight,
                      start, stop):
    """Binary cross-entropy of sigmoid(logits) over rows start..stop: row_loss[i] =
    w_i sum_j (max(z, 0) - z t' + log1p(exp(-|z|))), t' = (1 - eps) t + eps / 2, and
    grad = grad_scale w_i (sigmoid(z) - t') unless grad is None. logits, target, grad:
    float (N, M); weight: float (N,) or None."""
    mode = fp_enter()
    dtype = logits.dtype.type
    keep = dtype(1 - label_smoothing)
    half = dtype(label_smoothing / 2)
    one = dtype(1)
    for i in range(start, stop):
        w = one
        if weight is not None:
            w = weight[i]
        row_scale = dtype(grad_scale) * w
        total = dtype(0)
        for j in range(logits.shape[1]):
            z = logits[i, j]
            t = target[i, j] * keep + half
            e = exp_nonpositive(-abs(z))  # in (0, 1]: never overflows
            total += (z if z > 0 else dtype(0)) - z * t + math.log1p(e)
            if grad is not None:
                grad[i, j] = row_scale * ((one if z >= 0 else e) / (one + e) - t)
        row_loss[i] = w * total
    fp_leave(mode)


# -- parallel drivers: chunks of rows on threads ------------------------------------

@njit(cache=True, error_model="numpy", parallel=True)
def softmax_parallel(x, out, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(x.shape[0], threads, task)
        softmax_rows(x, out, start, stop, scratch_for(x))
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy", parallel=True)
def log_softmax_parallel(x, out, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(x.shape[0], threads, task)
        log_softmax_rows(x, out, start, stop, scratch_for(x))
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy", parallel=True)
def softmax_xent_parallel(logits, target, grad_scale, row_loss, grad, threads,
                          label_smoothing=0.0, ignore_index=-1, weight=None):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(logits.shape[0], threads, task)
        softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop,
                          scratch_for(logits), label_smoothing, ignore_index, weight)
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy", parallel=True)
def sigmoid_xent_parallel(logits, target, grad_scale, row_loss, grad, label_smoothing, weight,
                          threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(logits.shape[0], threads, task)
        sigmoid_xent_rows(logits, target, grad_scale, row_loss, grad, label_smoothing, weight,
                          start, stop)
        task_leave(mode)
    region_leave(region)
