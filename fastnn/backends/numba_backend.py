"""The Numba backend: every kernel of :mod:`fastnn.backends.contract` as jitted code.

The kernels live in :mod:`fastnn.backends.numba_kernels` (GEMM, linear layer,
softmax family, optimizers); this module is what the registry imports. Each
function here only picks a variant: small problems run a serial jitted kernel
on the calling thread (a parallel launch costs microseconds, more than a tiny
kernel), large ones the ``prange`` version on :func:`get_num_threads` threads.
Compiled code is cached on disk (``cache=True``), so only the first run on a
machine pays for compilation. Threading layer and thread count: see README.md, "numba".
Every kernel runs in the floating-point mode of :func:`fastnn.set_flush_denormal`
(numba_kernels.fp_mode), and every parallel loop falls back to one thread for a while when
the other cores are taken (numba_kernels.team).
"""

from __future__ import annotations

from ..environment import numba_num_threads

numba_num_threads()  # a bad NUMBA_NUM_THREADS: ValueError naming it, before Numba reads it

import numba  # noqa: E402
import numpy as np

from . import numba_kernels  # noqa: F401  (picks the threading layer first)
from . import runtime
from ..precision import float32_target, rounded_operands, store_rounded
from .contract import ACTIVATION_CODES

from .numba_kernels import (batchnorm, bf16, fp_mode, gemm, linear, optim, pointwise,
                            softmax_xent, train)
from .numba_notice import install as _install_compile_notice

_install_compile_notice()  # one line on stderr when a first run compiles the kernels
# fastnn.set_flush_denormal: the flag every kernel reads when it starts (numba_kernels.fp_mode).
runtime.on_flush_denormal(fp_mode.set_flush)

NAME = "numba"

#: No compiled entry for ops.matmul's plain case: it calls matmul below (contract.py).
matmul_entry = None
_IDENTITY = ACTIVATION_CODES["identity"]

#: Below these sizes a kernel runs serially: work per element times size must
#: outweigh the launch of a parallel region (a few microseconds).
PARALLEL_MIN_MULTIPLY_ADDS = 1 << 21
PARALLEL_MIN_ELEMENTS = 1 << 15
#: Products with fewer multiply-adds skip packing and blocking altogether (gemm.gemm_direct:
#: the micro-kernel reads the operands in place), on the calling thread. Measured on one
#: thread (float32, us, direct / blocked): NN x @ w 32x64x64 2.1 / 7.6, 256x64x64 9.9 / 23,
#: 128x256x128 39 / 74, 128x784x256 256 / 415; TN x.T @ dz 2.2 / 6.7, 12.7 / 33, 50 / 70,
#: 216 / 312; NT dz @ w.T 4.9 / 7.5, 12.6 / 23, 64 / 65, 384 / 353 (copying w.T dominates).
#: So every product below the parallel threshold is direct.
#: (PARALLEL_MIN_MULTIPLY_ADDS: 2^21, ~25 us of one thread's work: a launch costs microseconds
#: on a quiet machine and far more when another process holds the other core, and the small
#: layers of a tabular MLP, up to 256x64x64, were slower on two threads than on one.)
DIRECT_MAX_MULTIPLY_ADDS = PARALLEL_MIN_MULTIPLY_ADDS

#: Threads for parallel kernels; NUMBA_NUM_THREADS (default: all cores) is
#: both the initial value and the ceiling, the size of Numba's thread pool.
_max_threads = numba.config.NUMBA_NUM_THREADS
_threads = _max_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (at most NUMBA_NUM_THREADS) in later calls, from any Python thread."""
    global _threads
    _threads = max(1, min(int(n), _max_threads))


def get_num_threads() -> int:
    return _threads


def _launch_with(threads: int) -> None:
    """Set this Python thread's Numba thread count and dynamic scheduling.

    Both settings are per calling thread, and calling them inside jitted code
    would defeat the disk cache. Chunk size 1 hands out prange iterations (GEMM
    tasks, row chunks) one at a time, so a thread the OS has descheduled does
    not hold back a share of the work while the others wait at the barrier.
    """
    numba.set_num_threads(threads)
    numba.set_parallel_chunksize(1)


def _parallel(work: int) -> bool:
    """Whether a kernel over ``work`` elements runs in parallel (if so, set up for it)."""
    if _threads > 1 and work >= PARALLEL_MIN_ELEMENTS and not runtime.in_forked_child():
        _launch_with(_threads)
        return True
    return False


# -- dense algebra -------------------------------------------------------------------

def _gemm_threads(n: int, k: int, m: int) -> int:
    """0 for a direct (unpacked) product of (n, k) and (k, m) matrices, else the
    threads of a blocked one, set for this Python thread as in :func:`_parallel`
    (the blocked kernels are parallel=True, also when they run on one thread)."""
    work = n * k * m
    if work < DIRECT_MAX_MULTIPLY_ADDS or runtime.in_forked_child():  # no pool after fork
        return 0
    threads = _threads if work >= PARALLEL_MIN_MULTIPLY_ADDS else 1
    _launch_with(threads)
    return threads


def _gemm(a, b, trans_a, trans_b, out, bias, code, alpha):
    n, m = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    threads = _gemm_threads(n, k, m)
    if threads:
        gemm.gemm_blocked(a, b, trans_a, trans_b, out, bias, code, alpha, threads)
    else:
        gemm.gemm_direct(a, b, trans_a, trans_b, out, bias, code, alpha,
                         np.empty(gemm.direct_scratch_size(n, m, k, out), out.dtype))


def round_bfloat16(x, out):
    bits, out_bits = x.reshape(-1).view(np.uint32), out.reshape(-1).view(np.uint32)
    if _parallel(x.size):
        bf16.round_parallel(bits, out_bits, _threads)
    else:
        bf16.round_range(bits, out_bits, 0, x.size)


def _in_precision(precision, *arrays):
    """The GEMM operands as the precision reads them (fastnn.precision.rounded_operands)."""
    return rounded_operands(round_bfloat16, precision, *arrays)


def matmul(a, b, trans_a, trans_b, out, precision="float32"):
    a, b = _in_precision(precision, a, b)
    target = float32_target(out)
    _gemm(a, b, trans_a, trans_b, target, None, _IDENTITY, 0.0)
    store_rounded(round_bfloat16, target, out)


def linear_forward(x, w, b, activation, alpha, out, precision="float32"):
    x, w = _in_precision(precision, x, w)
    _gemm(x, w, False, False, out, b, ACTIVATION_CODES[activation], alpha)


def linear_backward(x, w, y, dy, activation, alpha, dx, dw, db, precision="float32"):
    code = ACTIVATION_CODES[activation]
    if precision == "bfloat16":
        # dz and db from the float32 dz, then the two GEMMs on rounded operands.
        dz = np.empty_like(dy)
        if _parallel(dy.size):
            linear.dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, _threads,
                                             np.empty((_threads, db.shape[0]), db.dtype))
        else:
            linear.dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, 0, dy.shape[0])
        x, w, dz = _in_precision(precision, x, w, dz)
        matmul(x, dz, True, False, dw)
        if dx is not None:
            matmul(dz, w, False, True, dx)
        return
    threads = _gemm_threads(*x.shape, w.shape[1])
    if threads:
        linear.linear_backward_blocked(x, w, y, dy, code, alpha, dx, dw, db, threads)
    else:
        linear.linear_backward_direct(x, w, y, dy, code, alpha, dx, dw, db)


# -- softmax and losses ----------------------------------------------------------------

def softmax(x, out):
    if _parallel(x.size):
        softmax_xent.softmax_parallel(x, out, _threads)
    else:
        softmax_xent.softmax_rows(x, out, 0, x.shape[0], softmax_xent.scratch_for(x))


def log_softmax(x, out):
    if _parallel(x.size):
        softmax_xent.log_softmax_parallel(x, out, _threads)
    else:
        softmax_xent.log_softmax_rows(x, out, 0, x.shape[0], softmax_xent.scratch_for(x))


def softmax_cross_entropy(logits, target, grad_scale, row_loss, grad, label_smoothing=0.0,
                          ignore_index=None, sample_weight=None):
    # Without ignore_index every label is in [0, C), so -1 matches none.
    ignore = -1 if ignore_index is None else ignore_index
    if _parallel(logits.size):
        softmax_xent.softmax_xent_parallel(logits, target, grad_scale, row_loss, grad, _threads,
                                           label_smoothing, ignore, sample_weight)
    else:
        softmax_xent.softmax_xent_rows(logits, target, grad_scale, row_loss, grad, 0,
                                       logits.shape[0], softmax_xent.scratch_for(logits),
                                       label_smoothing, ignore, sample_weight)


def sigmoid_cross_entropy(logits, target, grad_scale, row_loss, grad, label_smoothing=0.0,
                          sample_weight=None):
    if _parallel(logits.size * 4):  # an exp and a log1p per element
        softmax_xent.sigmoid_xent_parallel(logits, target, grad_scale, row_loss, grad,
                                           label_smoothing, sample_weight, _threads)
    else:
        softmax_xent.sigmoid_xent_rows(logits, target, grad_scale, row_loss, grad,
                                       label_smoothing, sample_weight, 0, logits.shape[0])


def mse(pred, target, grad_scale, grad, sample_weight=None):
    if _parallel(pred.size):
        return float(pointwise.mse_parallel(pred, target, grad_scale, grad, _threads,
                                            sample_weight))
    return float(pointwise.mse_rows(pred, target, grad_scale, grad, 0, pred.shape[0],
                                    sample_weight))


# -- batch normalization and activations -------------------------------------------------

def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, momentum, epsilon, training,
                      activation, alpha, out, mean, inv_std):
    code = ACTIVATION_CODES[activation]
    if _parallel(x.size) and x.shape[0] > 1:
        partial = np.zeros((min(_threads, x.shape[0]), 2, x.shape[1]), x.dtype)
        batchnorm.batchnorm_forward_parallel(x, gamma, beta, moving_mean, moving_var, momentum,
                                             epsilon, training, code, alpha, out, mean, inv_std,
                                             partial, np.empty(x.shape[1], x.dtype))
    else:
        batchnorm.batchnorm_forward_serial(x, gamma, beta, moving_mean, moving_var, momentum,
                                           epsilon, training, code, alpha, out, mean, inv_std)


def batchnorm_backward(x, y, dy, gamma, mean, inv_std, batch_statistics, activation, alpha,
                       dx, dgamma, dbeta):
    code = ACTIVATION_CODES[activation]
    if _parallel(x.size) and x.shape[0] > 1:
        partial = np.zeros((min(_threads, x.shape[0]), 2, x.shape[1]), x.dtype)
        batchnorm.batchnorm_backward_parallel(x, y, dy, gamma, mean, inv_std, batch_statistics,
                                              code, alpha, dx, dgamma, dbeta, partial,
                                              np.empty((3, x.shape[1]), x.dtype))
    else:
        batchnorm.batchnorm_backward_serial(x, y, dy, gamma, mean, inv_std, batch_statistics,
                                            code, alpha, dx, dgamma, dbeta)


def activation_forward(x, activation, alpha, out):
    code, flat, flat_out = ACTIVATION_CODES[activation], x.reshape(-1), out.reshape(-1)
    if _parallel(flat.size):
        batchnorm.activation_forward_parallel(flat, code, alpha, flat_out, _threads)
    else:
        batchnorm.activation_forward_range(flat, code, alpha, flat_out, 0, flat.size)


def activation_backward(y, dy, activation, alpha, dx):
    code, flat_y, flat_dy, flat_dx = (ACTIVATION_CODES[activation], y.reshape(-1),
                                      dy.reshape(-1), dx.reshape(-1))
    if _parallel(flat_y.size):
        batchnorm.activation_backward_parallel(flat_y, flat_dy, code, alpha, flat_dx, _threads)
    else:
        batchnorm.activation_backward_range(flat_y, flat_dy, code, alpha, flat_dx, 0,
                                            flat_y.size)


def one_hot(labels, out):
    if _parallel(out.size):
        pointwise.one_hot_parallel(labels, out, _threads)
    else:
        pointwise.one_hot_rows(labels, out, 0, out.shape[0])


def count_correct(scores, labels):
    if _parallel(scores.size):
        return int(pointwise.count_correct_parallel(scores, labels, _threads))
    return int(pointwise.count_correct_rows(scores, labels, 0, scores.shape[0]))


# -- data ------------------------------------------------------------------------------

def all_finite(x):
    flat = x.reshape(-1)
    if _parallel(flat.size):
        total = pointwise.non_finite_sum_parallel(flat, _threads)
    else:
        total = pointwise.non_finite_sum(flat, 0, flat.size)
    return bool(total == 0)  # NaN compares unequal


def take_rows(source, index, out):
    # As 2-D arrays of rows, so that one compiled kernel per dtype serves any row shape.
    source_rows = source.reshape(source.shape[0], -1)
    out_rows = out.reshape(out.shape[0], -1)
    if _parallel(out.size):
        pointwise.take_rows_parallel(source_rows, index, out_rows, _threads)
    else:
        pointwise.take_rows_range(source_rows, index, out_rows, 0, out.shape[0])


# -- optimizer steps (in place) ---------------------------------------------------------

def sgd_step(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    if _parallel(param.size):
        optim.sgd_parallel(param, grad, velocity, lr, momentum, nesterov, weight_decay,
                           _threads)
    else:
        optim.sgd_range(param, grad, velocity, lr, momentum, nesterov, weight_decay, 0,
                        param.size)


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    if _parallel(param.size):
        optim.adam_parallel(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step,
                            _threads)
    else:
        optim.adam_range(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, 0,
                         param.size)


# -- the compiled training loop ----------------------------------------------------------

#: The thresholds above, as numba_kernels.train reads them.
_LIMITS = np.array([DIRECT_MAX_MULTIPLY_ADDS, PARALLEL_MIN_MULTIPLY_ADDS, PARALLEL_MIN_ELEMENTS],
                   np.int64)


def _train_scratch(plan, threads):
    """The GEMMs' scratch, dz, the partial bias gradients and the bfloat16 copies of a plan's
    steps (None when no layer is in bfloat16), made once per plan, thread count and set of
    bfloat16 layers."""
    rounded = train.rounded_sizes(plan.layer_ints, plan.batch)  # the precisions in force
    cached = plan.cache.get(NAME)
    if cached is not None and cached[0] == (threads, rounded):
        return cached[1]
    last = plan.samples - (plan.steps - 1) * plan.batch
    a_size, tile_size, b_size, dz_size = train.scratch_sizes(
        plan.layer_ints, plan.batch, last, threads, _LIMITS, plan.params)
    widest = int(plan.layer_ints[:, 2].max())
    scratch = (np.empty(a_size, plan.dtype), np.empty(tile_size, plan.dtype),
               np.empty(b_size, plan.dtype), np.empty(dz_size, plan.dtype),
               np.empty((threads, widest), plan.dtype), np.empty((1, 1), plan.dtype),
               *(np.empty(size, plan.dtype) if size else None for size in rounded))
    plan.cache[NAME] = ((threads, rounded), scratch)
    return scratch


def train_steps(plan, order, first_step, steps, stats):
    scratch = _train_scratch(plan, _threads)
    _launch_with(_threads)
    return int(train.train_steps(
        plan.layer_ints, plan.layer_reals, plan.config, plan.hyper, plan.params, plan.grads,
        plan.state1, plan.state2, plan.x, plan.labels, plan.targets, plan.classes, plan.flags,
        plan.x_batch, plan.labels_batch, plan.targets_batch, plan.classes_batch,
        plan.flags_batch, plan.acts, plan.dacts, plan.masks, plan.row_loss, plan.outputs, order,
        first_step,
        steps, stats, _threads, _LIMITS, *scratch))
