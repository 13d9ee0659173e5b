"""Optimizer steps, in place, PyTorch's semantics.

Arrays of any rank (C-contiguous) are viewed flat inside the jitted code, which
costs nothing there and saves Python-side reshapes on every tiny step.
``*_range`` update flat elements start..stop serially; ``*_parallel`` split the
elements among ``threads`` threads. Scalars arrive as Python floats and are
converted to the parameter's dtype once, so float32 updates stay float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .fp_mode import fp_enter, fp_leave
from .indexing import indices
from .partition import chunk_bounds
from .team import region_enter, region_leave, task_enter, task_leave


def flat(array):
    """A C-contiguous array viewed as 1-D; None stays None."""
    return None if array is None else array.reshape(-1)


@overload(flat)
def _flat_overload(array):
    if isinstance(array, types.NoneType):
        return lambda array: None
    return lambda array: array.reshape(-1)


@njit(cache=True, error_model="numpy")
def sgd_range(param, grad, velocity, lr, momentum, nesterov, weight_decay, start, stop):
    """SGD on flat elements start..stop. param, grad, velocity: float, one shape (velocity None
    exactly when momentum is 0): g = grad + wd*param; v = momentum*v + g;
    g = g + momentum*v (Nesterov) or v; param -= lr * g."""
    # A new name for the flat velocity: Numba prunes `velocity is not None` only
    # while the argument itself is never reassigned.
    mode = fp_enter()
    param, grad, flat_velocity = flat(param), flat(grad), flat(velocity)
    cast = param.dtype.type
    lr, momentum, weight_decay = cast(lr), cast(momentum), cast(weight_decay)
    for i in indices(start, stop):
        g = grad[i] + weight_decay * param[i] if weight_decay else grad[i]
        if velocity is not None:
            v = momentum * flat_velocity[i] + g
            flat_velocity[i] = v
            g = g + momentum * v if nesterov else v
        param[i] -= lr * g
    fp_leave(mode)


@njit(cache=True, error_model="numpy")
def adam_range(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, start, stop):
    """Adam on flat elements start..stop; param, grad, m, v: float, one shape; step >= 1."""
    mode = fp_enter()
    param, grad, m, v = flat(param), flat(grad), flat(m), flat(v)
    cast = param.dtype.type
    # Bias corrections in float64 once, then everything in the parameter's dtype.
    inv_correction1 = cast(1.0 / (1.0 - beta1 ** step))
    inv_correction2 = cast(1.0 / (1.0 - beta2 ** step))
    lr, eps, weight_decay = cast(lr), cast(eps), cast(weight_decay)
    beta1, beta2 = cast(beta1), cast(beta2)
    one = cast(1)
    for i in indices(start, stop):
        g = grad[i] + weight_decay * param[i] if weight_decay else grad[i]
        m_i = beta1 * m[i] + (one - beta1) * g
        v_i = beta2 * v[i] + (one - beta2) * g * g
        m[i], v[i] = m_i, v_i
        param[i] -= lr * (m_i * inv_correction1) / (np.sqrt(v_i * inv_correction2) + eps)
    fp_leave(mode)



@njit(cache=True, error_model="numpy", parallel=True)
def sgd_parallel(param, grad, velocity, lr, momentum, nesterov, weight_decay, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(param.size, threads, task)
        sgd_range(param, grad, velocity, lr, momentum, nesterov, weight_decay, start, stop)
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy", parallel=True)
def adam_parallel(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, threads):
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(param.size, threads, task)
        adam_range(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, start, stop)
        task_leave(mode)
    region_leave(region)
