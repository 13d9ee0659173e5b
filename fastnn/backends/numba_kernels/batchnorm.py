"""Batch normalization (statistics, normalize, scale, shift and an activation) and its
backward, and the elementwise activation kernels.

As in the C kernels (kernels/batchnorm_impl.h), the threads split the rows: each sums the
columns of its rows into its own partial sums, the partials are combined into per-column
coefficients (M numbers: serial), then each thread writes its rows, which it reads a second
time while they are in its cache. ``*_serial`` run on the calling thread, ``*_parallel`` on
``threads`` tasks; both share the row kernels.

The activation is chosen once per row, outside the loop over its elements
(:func:`activate_span`): with the choice inside, per element, LLVM left the loops scalar
(the exp of sigmoid and tanh is in them), and the forward at 128 x 784 took 285 us instead of
10-30. The derivatives, without exp, vectorize either way.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .fp_mode import fp_enter, fp_leave
from .indexing import indices
from .team import region_enter, region_leave, task_enter, task_leave

from .partition import chunk_bounds
from .scalar_math import LEAKY_RELU, RELU, SIGMOID, TANH, activate, derivative_from_output


@njit(cache=True, error_model="numpy")
def activate_span(x, out, start, stop, code, slope):
    """out[start:stop] = act(x[start:stop]) (out may be x), the activation picked once: each
    loop has a constant code, its branches fold and it vectorizes."""
    if code == RELU:
        for k in indices(start, stop):
            out[k] = activate(x[k], RELU, slope)
    elif code == LEAKY_RELU:
        for k in indices(start, stop):
            out[k] = activate(x[k], LEAKY_RELU, slope)
    elif code == SIGMOID:
        for k in indices(start, stop):
            out[k] = activate(x[k], SIGMOID, slope)
    elif code == TANH:
        for k in indices(start, stop):
            out[k] = activate(x[k], TANH, slope)
    else:
        for k in indices(start, stop):
            out[k] = x[k]


@njit(cache=True, error_model="numpy")
def moment_sums(x, start, stop, sums, squares):
    """Column sums of ``x[i] - x[0]`` and of their squares over rows start..stop, added into
    sums and squares (M,). Shifted by the first row, the variance stays exact for large means."""
    for i in range(start, stop):
        for j in range(x.shape[1]):
            d = x[i, j] - x[0, j]
            sums[j] += d
            squares[j] += d * d


@njit(cache=True, error_model="numpy")
def finish_statistics(x, partial, gamma, moving_mean, moving_var, momentum, epsilon, training,
                      mean, inv_std, scale):
    """Per column: mean and inv_std from the partial sums (training; the moving statistics
    updated) or from the moving statistics, and scale = gamma * inv_std."""
    n = x.shape[0]
    dtype = x.dtype.type
    keep = dtype(momentum)
    for j in range(x.shape[1]):
        if training:
            d = dtype(0)
            square = dtype(0)
            for task in range(partial.shape[0]):
                d += partial[task, 0, j]
                square += partial[task, 1, j]
            d /= n
            var = square / n - d * d
            var = var if var > 0 else dtype(0)  # rounding; a constant column is exactly 0
            m = x[0, j] + d
            moving_mean[j] = keep * moving_mean[j] + (1 - keep) * m
            moving_var[j] = keep * moving_var[j] + (1 - keep) * var
        else:
            m = moving_mean[j]
            var = moving_var[j]
        mean[j] = m
        inv_std[j] = dtype(1) / math.sqrt(var + dtype(epsilon))
        scale[j] = gamma[j] * inv_std[j]


@njit(cache=True, error_model="numpy")
def normalize_rows(x, mean, scale, beta, code, alpha, out, start, stop):
    """``out[i] = act((x[i] - mean) * scale + beta)`` for rows start..stop."""
    slope = x.dtype.type(alpha)
    for i in range(start, stop):
        row, x_row = out[i], x[i]
        for j in range(x.shape[1]):
            row[j] = (x_row[j] - mean[j]) * scale[j] + beta[j]
        activate_span(row, row, 0, x.shape[1], code, slope)


@njit(cache=True, error_model="numpy")
def batchnorm_forward_serial(x, gamma, beta, moving_mean, moving_var, momentum, epsilon,
                             training, code, alpha, out, mean, inv_std):
    mode = fp_enter()
    partial = np.zeros((1, 2, x.shape[1]), x.dtype)
    if training:
        moment_sums(x, 0, x.shape[0], partial[0, 0], partial[0, 1])
    scale = np.empty(x.shape[1], x.dtype)
    finish_statistics(x, partial, gamma, moving_mean, moving_var, momentum, epsilon, training,
                      mean, inv_std, scale)
    normalize_rows(x, mean, scale, beta, code, alpha, out, 0, x.shape[0])
    fp_leave(mode)


# The parallel drivers take their scratch (partial: zeros (threads, 2, M); scale or coef)
# from the caller: an array allocated inside a parallel=True function becomes a parallel loop
# of its own, one more team start and barrier per call (at 128 x 784 under load, a median of
# 110 ms instead of 1.3 ms).
@njit(cache=True, error_model="numpy", parallel=True)
def batchnorm_forward_parallel(x, gamma, beta, moving_mean, moving_var, momentum, epsilon,
                               training, code, alpha, out, mean, inv_std, partial, scale):
    n = x.shape[0]
    threads = partial.shape[0]
    if training:
        region = region_enter()
        for task in prange(threads):
            mode = task_enter()
            start, stop = chunk_bounds(n, threads, task)
            moment_sums(x, start, stop, partial[task, 0], partial[task, 1])
            task_leave(mode)
        region_leave(region)
    serial = fp_enter()  # the serial part between the loops, on the calling thread
    finish_statistics(x, partial, gamma, moving_mean, moving_var, momentum, epsilon, training,
                      mean, inv_std, scale)
    fp_leave(serial)
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(n, threads, task)
        normalize_rows(x, mean, scale, beta, code, alpha, out, start, stop)
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy")
def gradient_sums(x, y, dy, mean, inv_std, code, alpha, start, stop, dbeta, dgamma):
    """Column sums of dz = dy * act'(y) into dbeta and of dz * xhat into dgamma (M,), added,
    over rows start..stop."""
    slope = x.dtype.type(alpha)
    for i in range(start, stop):
        for j in range(x.shape[1]):
            dz = dy[i, j] * derivative_from_output(y[i, j], code, slope)
            dbeta[j] += dz
            dgamma[j] += dz * ((x[i, j] - mean[j]) * inv_std[j])


@njit(cache=True, error_model="numpy")
def finish_gradients(n, partial, gamma, inv_std, batch_statistics, dgamma, dbeta, coef):
    """dbeta, dgamma from the partial sums, and coef = (scale, offset, slope) per column of
    ``dx = scale * (dz - offset - (x - mean) * slope)``."""
    for j in range(dbeta.shape[0]):
        b = partial[0, 0, j]
        g = partial[0, 1, j]
        for task in range(1, partial.shape[0]):
            b += partial[task, 0, j]
            g += partial[task, 1, j]
        dbeta[j] = b
        dgamma[j] = g
        coef[0, j] = gamma[j] * inv_std[j]
        coef[1, j] = b / n if batch_statistics else 0
        coef[2, j] = g / n * inv_std[j] if batch_statistics else 0


@njit(cache=True, error_model="numpy")
def dx_rows(x, y, dy, mean, coef, code, alpha, dx, start, stop):
    slope = x.dtype.type(alpha)
    for i in range(start, stop):
        for j in range(x.shape[1]):
            dz = dy[i, j] * derivative_from_output(y[i, j], code, slope)
            dx[i, j] = coef[0, j] * (dz - coef[1, j] - (x[i, j] - mean[j]) * coef[2, j])


@njit(cache=True, error_model="numpy")
def batchnorm_backward_serial(x, y, dy, gamma, mean, inv_std, batch_statistics, code, alpha,
                              dx, dgamma, dbeta):
    mode = fp_enter()
    partial = np.zeros((1, 2, x.shape[1]), x.dtype)
    gradient_sums(x, y, dy, mean, inv_std, code, alpha, 0, x.shape[0], partial[0, 0],
                  partial[0, 1])
    coef = np.empty((3, x.shape[1]), x.dtype)
    finish_gradients(x.shape[0], partial, gamma, inv_std, batch_statistics, dgamma, dbeta, coef)
    if dx is not None:
        dx_rows(x, y, dy, mean, coef, code, alpha, dx, 0, x.shape[0])
    fp_leave(mode)


@njit(cache=True, error_model="numpy", parallel=True)
def batchnorm_backward_parallel(x, y, dy, gamma, mean, inv_std, batch_statistics, code, alpha,
                                dx, dgamma, dbeta, partial, coef):
    n = x.shape[0]
    threads = partial.shape[0]
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(n, threads, task)
        gradient_sums(x, y, dy, mean, inv_std, code, alpha, start, stop, partial[task, 0],
                      partial[task, 1])
        task_leave(mode)
    region_leave(region)
    serial = fp_enter()
    finish_gradients(n, partial, gamma, inv_std, batch_statistics, dgamma, dbeta, coef)
    fp_leave(serial)
    if dx is not None:
        region = region_enter()
        for task in prange(threads):
            mode = task_enter()
            start, stop = chunk_bounds(n, threads, task)
            dx_rows(x, y, dy, mean, coef, code, alpha, dx, start, stop)
            task_leave(mode)
        region_leave(region)


# -- elementwise activations (flat arrays) -------------------------------------------------

@njit(cache=True, error_model="numpy")
def activation_forward_range(x, code, alpha, out, start, stop):
    mode = fp_enter()
    slope = x.dtype.type(alpha)
    activate_span(x, out, start, stop, code, slope)
    fp_leave(mode)


@njit(cache=True, error_model="numpy")
def activation_backward_range(y, dy, code, alpha, dx, start, stop):
    mode = fp_enter()
    slope = y.dtype.type(alpha)
    for k in indices(start, stop):
        dx[k] = dy[k] * derivative_from_output(y[k], code, slope)
    fp_leave(mode)


@njit(cache=True, error_model="numpy", parallel=True)
def activation_forward_parallel(x, code, alpha, out, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(x.shape[0], threads, task)
        activation_forward_range(x, code, alpha, out, start, stop)
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy", parallel=True)
def activation_backward_parallel(y, dy, code, alpha, dx, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(y.shape[0], threads, task)
        activation_backward_range(y, dy, code, alpha, dx, start, stop)
        task_leave(mode)
    region_leave(region)
