"""The reference backend: plain, readable NumPy, the oracle of every test.

Each function implements the kernel of the same name in
:class:`fastnn.backends.contract.Backend`; read the contract for shapes and
dtypes. Clarity wins over speed here, except that transposes stay views (BLAS
reads them in place) and outputs are written into the given arrays.
"""

from __future__ import annotations

import sys

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ..precision import float32_target, rounded_operands, store_rounded
from . import reference_loop

NAME = "numpy"

#: No compiled entry for ops.matmul's plain case: it calls matmul below (contract.py).
matmul_entry = None


def set_num_threads(n: int) -> None:
    """NumPy's BLAS keeps its own thread pool; threadpoolctl sizes it."""
    threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> int:
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts, default=1)


def round_bfloat16(x, out):
    """The reference bfloat16 rounding (contract): round to nearest even on the bits."""
    u = x.view(np.uint32)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) \
        & np.uint32(0xFFFF0000)
    quiet_nan = (u | np.uint32(0x00400000)) & np.uint32(0xFFFF0000)
    out.view(np.uint32)[...] = np.where(nan, quiet_nan, rounded)


def _in_precision(precision, *arrays):
    """The GEMM operands as the precision reads them (fastnn.precision.rounded_operands)."""
    return rounded_operands(round_bfloat16, precision, *arrays)


def matmul(a, b, trans_a, trans_b, out, precision="float32"):
    a, b = _in_precision(precision, a, b)
    target = float32_target(out)
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=target)
    store_rounded(round_bfloat16, target, out)


def _sigmoid(z, out):
    # exp(-|z|) never overflows, so sigmoid(-1000) is 0 without a warning.
    e = np.exp(-np.abs(z))
    np.divide(np.where(z >= 0, 1.0, e), 1.0 + e, out=out)


def _activate(z, activation, alpha):
    """Apply ``activation`` to ``z`` in place."""
    if activation == "relu":
        np.maximum(z, 0, out=z)
    elif activation == "leaky_relu":
        np.multiply(z, np.where(z > 0, 1.0, alpha).astype(z.dtype), out=z)
    elif activation == "sigmoid":
        _sigmoid(z, out=z)
    elif activation == "tanh":
        np.tanh(z, out=z)


def _derivative_from_output(y, activation, alpha):
    """act'(z) written as a function of y = act(z)."""
    if activation == "relu":
        return (y > 0).astype(y.dtype)
    if activation == "leaky_relu":
        return np.where(y > 0, 1.0, alpha).astype(y.dtype)
    if activation == "sigmoid":
        return y * (1 - y)
    if activation == "tanh":
        return 1 - y * y
    return np.ones_like(y)


def linear_forward(x, w, b, activation, alpha, out, precision="float32"):
    np.matmul(*_in_precision(precision, x, w), out=out)
    out += b
    _activate(out, activation, alpha)


def linear_backward(x, w, y, dy, activation, alpha, dx, dw, db, precision="float32"):
    dz = dy * _derivative_from_output(y, activation, alpha)
    np.sum(dz, axis=0, out=db)
    x, w, dz = _in_precision(precision, x, w, dz)
    np.matmul(x.T, dz, out=dw)
    if dx is not None:
        np.matmul(dz, w.T, out=dx)


def _log_softmax(x):
    with np.errstate(over="ignore"):  # a spread past the dtype's range gives -inf: intended
        shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(x, out):
    shifted = x - x.max(axis=1, keepdims=True)
    np.exp(shifted, out=out)
    out /= out.sum(axis=1, keepdims=True)


def log_softmax(x, out):
    out[...] = _log_softmax(x)


def _smoothed_targets(logits, target, label_smoothing, counted):
    """The target rows t' = (1 - eps) t + eps / C as floats (ignored rows: any finite row)."""
    if target.ndim == 1:
        probs = np.zeros_like(logits)
        probs[np.arange(len(target)), np.where(counted, target, 0)] = 1
    else:
        probs = target.astype(logits.dtype)
    if label_smoothing:
        probs = (1 - label_smoothing) * probs + label_smoothing / logits.shape[1]
    return probs


def _row_weights(n, dtype, counted, sample_weight):
    weights = np.ones(n, dtype) if sample_weight is None else sample_weight.astype(dtype)
    return np.where(counted, weights, 0).astype(dtype)


def softmax_cross_entropy(logits, target, grad_scale, row_loss, grad, label_smoothing=0.0,
                          ignore_index=None, sample_weight=None):
    n = logits.shape[0]
    counted = np.ones(n, bool)
    if target.ndim == 1 and ignore_index is not None:
        counted = target != ignore_index
    log_probs = _log_softmax(logits)
    probs = _smoothed_targets(logits, target, label_smoothing, counted)
    # 0 * log 0 = 0: a class of target weight 0 adds nothing, even at a logit of -inf.
    terms = np.zeros_like(log_probs)
    np.multiply(probs, log_probs, out=terms, where=probs > 0)
    weights = _row_weights(n, logits.dtype, counted, sample_weight)
    row_loss[...] = 0
    np.multiply(-terms.sum(axis=1), weights, out=row_loss, where=counted)
    if grad is None:
        return
    np.exp(log_probs, out=grad)
    grad -= probs
    grad *= (grad_scale * weights)[:, None]


def sigmoid_cross_entropy(logits, target, grad_scale, row_loss, grad, label_smoothing=0.0,
                          sample_weight=None):
    probs = target
    if label_smoothing:
        probs = (1 - label_smoothing) * target + label_smoothing / 2
    decay = np.exp(-np.abs(logits))  # in (0, 1]: never overflows
    terms = np.maximum(logits, 0) - logits * probs + np.log1p(decay)
    weights = _row_weights(len(logits), logits.dtype, True, sample_weight)
    row_loss[...] = terms.sum(axis=1) * weights
    if grad is not None:
        _sigmoid(logits, grad)
        grad -= probs
        grad *= (grad_scale * weights)[:, None]


def mse(pred, target, grad_scale, grad, sample_weight=None):
    diff = pred - target
    weights = 1.0 if sample_weight is None else sample_weight[:, None]
    if grad is not None:
        np.multiply(diff * weights, 2 * grad_scale, out=grad)
    return float(np.sum(diff * diff * weights, dtype=np.float64))


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, momentum, epsilon, training,
                      activation, alpha, out, mean, inv_std):
    if training:
        mean[...] = x.mean(axis=0)
        var = np.square(x - mean).mean(axis=0)  # biased (divided by N), as Keras
        moving_mean *= momentum
        moving_mean += (1 - momentum) * mean
        moving_var *= momentum
        moving_var += (1 - momentum) * var
    else:
        mean[...] = moving_mean
        var = moving_var
    inv_std[...] = 1 / np.sqrt(var + epsilon)
    np.multiply(x - mean, gamma * inv_std, out=out)
    out += beta
    _activate(out, activation, alpha)


def batchnorm_backward(x, y, dy, gamma, mean, inv_std, batch_statistics, activation, alpha,
                       dx, dgamma, dbeta):
    dz = dy * _derivative_from_output(y, activation, alpha)
    xhat = (x - mean) * inv_std
    np.sum(dz, axis=0, out=dbeta)
    np.sum(dz * xhat, axis=0, out=dgamma)
    if dx is None:
        return
    if batch_statistics:
        n = x.shape[0]
        dz = dz - dbeta / n - xhat * (dgamma / n)
    np.multiply(dz, gamma * inv_std, out=dx)


def activation_forward(x, activation, alpha, out):
    np.copyto(out, x)
    _activate(out, activation, alpha)


def activation_backward(y, dy, activation, alpha, dx):
    np.multiply(dy, _derivative_from_output(y, activation, alpha), out=dx)


def one_hot(labels, out):
    out[...] = 0
    out[np.arange(len(labels)), labels] = 1


def count_correct(scores, labels):
    return int(np.count_nonzero(scores.argmax(axis=1) == labels))


def all_finite(x):
    # min propagates NaN and max reaches +inf (min -inf), so the extremes decide; a chunk of
    # 1 MB at a time, so the second reduction reads it from cache (one pass over RAM) and
    # no temporary the size of x is made, unlike isfinite(x).all().
    flat = x.reshape(-1)
    step = (1 << 20) // x.itemsize
    for start in range(0, flat.size, step):
        chunk = flat[start:start + step]
        if not (np.isfinite(chunk.min()) and np.isfinite(chunk.max())):
            return False
    return True


def take_rows(source, index, out):
    # mode="clip" writes straight into out ("raise" would buffer a copy first); the
    # indices were checked, so it clips nothing.
    np.take(source, index, axis=0, out=out, mode="clip")


def sgd_step(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    g = grad + weight_decay * param if weight_decay else grad
    if velocity is not None:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    param -= lr * g


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    g = grad + weight_decay * param if weight_decay else grad
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.dtype)


def train_steps(plan, order, first_step, steps, stats):
    # The per-layer calls of Sequential's step, with this module's kernels: the reference.
    # IEEE results without NumPy's overflow warnings, as the C and Numba loops: a diverging
    # step ends in fit's NonFiniteLossError, which the warnings would only precede.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return reference_loop.train_steps(sys.modules[__name__], plan, order, first_step,
                                          steps, stats)
