"""The Numba backend: every kernel of :mod:`fastnn.backends.contract` as jitted code.

The kernels live in :mod:`fastnn.backends.numba_kernels` (GEMM, linear layer,
softmax family, optimizers); this module is what the registry imports. Each
function here only picks a variant: small problems run a serial jitted kernel
on the calling thread (a parallel launch costs microseconds, more than a tiny
kernel), large ones the ``prange`` version on :func:`get_num_threads` threads.
Compiled code is cached on disk (``cache=True``), so only the first run on a
machine pays for compilation. Threading layer and thread count: see README.md, "numba".
"""

from __future__ import annotations

import numba

from . import numba_kernels  # noqa: F401  (picks the threading layer first)
from . import runtime
from .contract import ACTIVATION_CODES
from .numba_kernels import gemm, linear, optim, pointwise, softmax_xent

NAME = "numba"
_IDENTITY = ACTIVATION_CODES["identity"]

#: Below these sizes a kernel runs serially: work per element times size must
#: outweigh the launch of a parallel region (a few microseconds).
PARALLEL_MIN_MULTIPLY_ADDS = 1 << 17
PARALLEL_MIN_ELEMENTS = 1 << 15
#: Products with fewer multiply-adds skip packing and blocking altogether.
DIRECT_MAX_MULTIPLY_ADDS = 1 << 14

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
        gemm.gemm_blocked(a, b, trans_a, trans_b, out, bias, code, alpha, threads,
                          runtime.flush_denormal())
    else:
        gemm.gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, 0, n,
                       runtime.flush_denormal())


def matmul(a, b, trans_a, trans_b, out):
    _gemm(a, b, trans_a, trans_b, out, None, _IDENTITY, 0.0)


def linear_forward(x, w, b, activation, alpha, out):
    _gemm(x, w, False, False, out, b, ACTIVATION_CODES[activation], alpha)


def linear_backward(x, w, y, dy, activation, alpha, dx, dw, db):
    code = ACTIVATION_CODES[activation]
    threads = _gemm_threads(*x.shape, w.shape[1])
    if threads:
        linear.linear_backward_blocked(x, w, y, dy, code, alpha, dx, dw, db, threads,
                                       runtime.flush_denormal())
    else:
        linear.linear_backward_direct(x, w, y, dy, code, alpha, dx, dw, db,
                                      runtime.flush_denormal())


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


def softmax_cross_entropy(logits, target, grad_scale, row_loss, grad):
    if _parallel(logits.size):
        softmax_xent.softmax_xent_parallel(logits, target, grad_scale, row_loss, grad, _threads)
    else:
        softmax_xent.softmax_xent_rows(logits, target, grad_scale, row_loss, grad, 0,
                                       logits.shape[0], softmax_xent.scratch_for(logits))


def mse(pred, target, grad_scale, grad):
    if _parallel(pred.size):
        return float(pointwise.mse_parallel(pred, target, grad_scale, grad, _threads))
    return float(pointwise.mse_rows(pred, target, grad_scale, grad, 0, pred.shape[0]))


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
