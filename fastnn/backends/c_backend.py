"""Backend "c": thin cffi wrappers over the compiled kernels of kernels/ (see fastnn.h).

Each function implements the kernel of the same name in
:class:`fastnn.backends.contract.Backend` (shapes, dtypes, in-place rules there). The
arguments were validated by :mod:`fastnn.ops`, so a wrapper only picks the float32 or
float64 C function by the dtype and passes pointers: it costs well under 2 µs, which
matters for small networks. The GIL is released while a C function runs (cffi API mode).

Importing this module raises ImportError when the extension was not built; the message
carries the build's reason (fastnn/_c/BUILD_ERROR.txt), which ``fastnn info`` shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import runtime
from .contract import ACTIVATION_CODES


def _unavailable_reason(import_error: ImportError) -> str:
    build_error = Path(__file__).resolve().parent.parent / "_c" / "BUILD_ERROR.txt"
    if build_error.exists():
        return build_error.read_text().strip()
    return (f"the C extension fastnn._c._kernels is not built ({import_error}); "
            f"reinstall with `pip install .` and a C compiler")


try:
    from .._c._kernels import ffi, lib
except ImportError as _exc:
    raise ImportError(_unavailable_reason(_exc)) from None

NAME = "c"

#: The vector code compiled in: "avx512", "avx2" or "portable".
SIMD = ffi.string(lib.fastnn_simd_name()).decode()

runtime.on_flush_denormal(lambda mode: lib.fastnn_set_flush_denormal(int(mode)))

_from_buffer = ffi.from_buffer
_NULL = ffi.NULL


def _check(status: int, kernel: str) -> None:
    """Raise for the status of a kernel that allocates scratch memory (fastnn.h)."""
    if status != lib.FASTNN_OK:
        raise MemoryError(f"{kernel}: the C backend could not allocate its scratch memory "
                          f"(status {status}); the outputs are not valid")


class _Kernels:
    """The C functions of one float dtype, and how to pass an array of it."""

    def __init__(self, suffix: str, ctype: str):
        self.array_type = f"{ctype}[]"
        for name in ("matmul", "linear_forward", "linear_backward", "softmax", "log_softmax",
                     "xent_labels", "xent_probs", "mse", "one_hot", "count_correct",
                     "all_finite", "sgd_step", "adam_step"):
            setattr(self, name, getattr(lib, f"fastnn_{name}_{suffix}"))


_BY_DTYPE = {np.dtype(np.float32): _Kernels("f32", "float"),
             np.dtype(np.float64): _Kernels("f64", "double")}
_LABELS = "int64_t[]"


def set_num_threads(n: int) -> None:
    lib.fastnn_set_num_threads(n)


def get_num_threads() -> int:
    return lib.fastnn_get_num_threads()


def matmul(a, b, trans_a, trans_b, out):
    k = _BY_DTYPE[a.dtype]
    t = k.array_type
    n, inner = (a.shape[1], a.shape[0]) if trans_a else a.shape
    _check(k.matmul(_from_buffer(t, out), _from_buffer(t, a), _from_buffer(t, b), n, inner,
                    out.shape[1], trans_a, trans_b), "matmul")


def linear_forward(x, w, b, activation, alpha, out):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    n, inner = x.shape
    _check(k.linear_forward(_from_buffer(t, out), _from_buffer(t, x), _from_buffer(t, w),
                            _from_buffer(t, b), n, inner, w.shape[1],
                            ACTIVATION_CODES[activation], alpha), "linear_forward")


def linear_backward(x, w, y, dy, activation, alpha, dx, dw, db):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    n, inner = x.shape
    _check(k.linear_backward(_NULL if dx is None else _from_buffer(t, dx), _from_buffer(t, dw),
                             _from_buffer(t, db), _from_buffer(t, x), _from_buffer(t, w),
                             _from_buffer(t, y), _from_buffer(t, dy), n, inner, w.shape[1],
                             ACTIVATION_CODES[activation], alpha), "linear_backward")


def softmax(x, out):
    k = _BY_DTYPE[x.dtype]
    k.softmax(_from_buffer(k.array_type, out), _from_buffer(k.array_type, x), *x.shape)


def log_softmax(x, out):
    k = _BY_DTYPE[x.dtype]
    k.log_softmax(_from_buffer(k.array_type, out), _from_buffer(k.array_type, x), *x.shape)


def softmax_cross_entropy(logits, target, grad_scale, row_loss, grad):
    k = _BY_DTYPE[logits.dtype]
    t = k.array_type
    grad_ptr = _NULL if grad is None else _from_buffer(t, grad)
    if target.ndim == 1:
        k.xent_labels(_from_buffer(t, row_loss), grad_ptr, _from_buffer(t, logits),
                      _from_buffer(_LABELS, target), *logits.shape, grad_scale)
    else:
        k.xent_probs(_from_buffer(t, row_loss), grad_ptr, _from_buffer(t, logits),
                     _from_buffer(t, target), *logits.shape, grad_scale)


def mse(pred, target, grad_scale, grad):
    k = _BY_DTYPE[pred.dtype]
    t = k.array_type
    return k.mse(_NULL if grad is None else _from_buffer(t, grad), _from_buffer(t, pred),
                 _from_buffer(t, target), pred.size, grad_scale)


def one_hot(labels, out):
    k = _BY_DTYPE[out.dtype]
    k.one_hot(_from_buffer(k.array_type, out), _from_buffer(_LABELS, labels), *out.shape)


def count_correct(scores, labels):
    k = _BY_DTYPE[scores.dtype]
    return k.count_correct(_from_buffer(k.array_type, scores), _from_buffer(_LABELS, labels),
                           *scores.shape)


def all_finite(x):
    k = _BY_DTYPE[x.dtype]
    return bool(k.all_finite(_from_buffer(k.array_type, x), x.size))


def take_rows(source, index, out):
    lib.fastnn_take_rows(_from_buffer("char[]", out), _from_buffer("char[]", source),
                         _from_buffer(_LABELS, index), out.shape[0],
                         out.itemsize * (out.size // out.shape[0]))


def sgd_step(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    k = _BY_DTYPE[param.dtype]
    t = k.array_type
    k.sgd_step(_from_buffer(t, param), _NULL if velocity is None else _from_buffer(t, velocity),
               _from_buffer(t, grad), param.size, lr, momentum, nesterov, weight_decay)


def adam_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    k = _BY_DTYPE[param.dtype]
    t = k.array_type
    k.adam_step(_from_buffer(t, param), _from_buffer(t, m), _from_buffer(t, v),
                _from_buffer(t, grad), param.size, lr, beta1, beta2, eps, weight_decay, step)
