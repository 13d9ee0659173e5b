"""Kernels that treat each row (or element) on its own: mean squared error,
one-hot encoding, counting correct argmax predictions, finiteness, gathering rows.

As in softmax_xent, ``*_rows`` run serially over rows start..stop and
``*_parallel`` split the rows among ``threads`` threads. The kernels with arithmetic run in
fastnn's floating-point mode (fp_mode; team for the parallel loops); gathering rows, one-hot
rows and the finiteness sum (x - x is 0 or NaN either way) do not depend on it.
"""

from __future__ import annotations

from numba import njit, prange

from .fp_mode import fp_enter, fp_leave
from .indexing import indices
from .partition import chunk_bounds, sum_in_order, task_sums, task_zeros
from .team import region_enter, region_leave, task_enter, task_leave


# fastmath "reassoc" only lets the float64 sum of squares vectorize; its rounding
# changes in the last bits of a float64 sum, far inside every tolerance.
@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def mse_rows(pred, target, grad_scale, grad, start, stop, sample_weight=None):
    """float64 ``sum_i w_i sum_j (pred - target)**2`` over rows start..stop, and
    ``grad = 2 * grad_scale * w_i * (pred - target)`` there unless grad is None.
    pred, target, grad: float (N, M); sample_weight: float (N,) weights w, or None (all 1)."""
    mode = fp_enter()
    factor = pred.dtype.type(2 * grad_scale)
    total = 0.0
    for i in range(start, stop):
        w = pred.dtype.type(1)
        if sample_weight is not None:
            w = sample_weight[i]
        row_factor = factor * w
        row = 0.0
        for j in range(pred.shape[1]):
            diff = pred[i, j] - target[i, j]
            row += diff * diff
            if grad is not None:
                grad[i, j] = row_factor * diff
        total += row * w
    fp_leave(mode)
    return total


@njit(cache=True, error_model="numpy")
def one_hot_rows(labels, out, start, stop):
    """``out[i] = e_{labels[i]}`` for rows start..stop; labels int64 (N,), out float (N, C)."""
    for i in range(start, stop):
        out[i, :] = 0
        out[i, labels[i]] = 1


@njit(cache=True, error_model="numpy")
def count_correct_rows(scores, labels, start, stop):
    """How many rows start..stop of scores (N, C) have their first maximum at labels[i].

    A NaN counts as the maximum, as in numpy.argmax."""
    mode = fp_enter()  # denormals-are-zero: subnormal scores compare as zeros
    correct = 0
    for i in range(start, stop):
        best, best_index = scores[i, 0], 0
        for j in range(1, scores.shape[1]):
            if best != best:  # NaN found: argmax stops at the first one
                break
            value = scores[i, j]
            if value > best or value != value:
                best, best_index = value, j
        correct += best_index == labels[i]
    fp_leave(mode)
    return correct


@njit(cache=True, error_model="numpy", parallel=True)
def mse_parallel(pred, target, grad_scale, grad, threads, sample_weight=None):
    partial = task_sums(threads)
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(pred.shape[0], threads, task)
        partial[task] = mse_rows(pred, target, grad_scale, grad, start, stop, sample_weight)
        task_leave(mode)
    region_leave(region)
    return sum_in_order(partial)


@njit(cache=True, error_model="numpy", parallel=True)
def one_hot_parallel(labels, out, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(out.shape[0], threads, task)
        one_hot_rows(labels, out, start, stop)
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy", parallel=True)
def count_correct_parallel(scores, labels, threads):
    partial = task_zeros(threads, labels)
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(scores.shape[0], threads, task)
        partial[task] = count_correct_rows(scores, labels, start, stop)
        task_leave(mode)
    region_leave(region)
    return sum_in_order(partial)


@njit(cache=True, error_model="numpy")
def take_rows_range(source, index, out, start, stop):
    """``out[i] = source[index[i]]`` for rows start..stop; source (R, W), out (N, W) of one
    dtype (rows flattened), index int64 (N,). Element by element: a row slice on each side
    was two views per row (atomic reference counts) and Numba's general slice assignment,
    a sixth of a tabular training step at batch 32."""
    width = out.shape[1]
    for i in range(start, stop):
        row = index[i]
        for j in range(width):
            out[i, j] = source[row, j]


@njit(cache=True, error_model="numpy", parallel=True)
def take_rows_parallel(source, index, out, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(out.shape[0], threads, task)
        take_rows_range(source, index, out, start, stop)
        task_leave(mode)
    region_leave(region)


# "reassoc" lets the sum vectorize: the order of a sum of zeros and NaNs does not matter. No
# flag that assumes finite values (nnan, ninf, fast), which would fold x - x to 0.
@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def non_finite_sum(x, start, stop):
    """The sum of ``x[i] - x[i]`` over start..stop of a flat float array: 0 when every element
    is finite, NaN otherwise (inf - inf is NaN). Branch-free, so it vectorizes."""
    total = x.dtype.type(0)
    for i in indices(start, stop):
        total += x[i] - x[i]
    return total


@njit(cache=True, error_model="numpy", parallel=True)
def non_finite_sum_parallel(x, threads):
    partial = task_zeros(threads, x)
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(x.shape[0], threads, task)
        partial[task] = non_finite_sum(x, start, stop)
        task_leave(mode)
    region_leave(region)
    return sum_in_order(partial)
