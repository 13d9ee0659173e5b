"""Backend "c": thin cffi wrappers over the compiled kernels of kernels/ (see fastnn.h).

Each function implements the kernel of the same name in
:class:`fastnn.backends.contract.Backend` (shapes, dtypes, in-place rules there). The
arguments were validated by :mod:`fastnn.ops`, so a wrapper only picks the float32 or
float64 C function by the dtype and passes pointers: it costs well under 2 µs, which
matters for small networks. The GIL is released while a C function runs (cffi API mode).

Importing this module raises ImportError when the extension was not built; the message
carries the build's reason (fastnn/_c/BUILD_ERROR.txt), which ``fastnn info`` shows.

The extension holds a copy of each hot kernel per instruction set (kernels/isa.h); the best
one this CPU and OS allow runs, or the one named by ``FASTNN_ISA`` (``portable``, ``avx2``,
``avx512`` or ``amx``), which may only be one allowed here: a bad or unavailable name raises
ValueError at import. :func:`isa_report` says which runs and why the higher ones do not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import numpy as np

from .. import environment
from ..precision import is_bfloat16
from . import runtime
from .contract import ACTIVATION_CODES

# kernels/runtime.c reads FASTNN_SCRATCH_LIMIT with strtoull, which takes "abc" for 0:
# a bad value makes this backend unavailable, with the variable named as the reason.
environment.scratch_limit()
# The OpenMP runtime reads OMP_NUM_THREADS when it loads with the extension, below; libgomp
# ignores a malformed value with a message on stderr that stops nothing: ValueError naming it.
environment.omp_num_threads()


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

#: The instruction sets the kernels are compiled for, lowest first (kernels/fastnn.h).
ISAS = tuple(ffi.string(lib.fastnn_isa_name(i)).decode() for i in range(lib.FASTNN_ISA_COUNT))


def isa_unavailable(isa: str) -> str:
    """Why instruction set ``isa`` (one of :data:`ISAS`) cannot run here; "" when it can."""
    return ffi.string(lib.fastnn_isa_unavailable(ISAS.index(isa))).decode()


def requested_isa() -> str:
    """The instruction set FASTNN_ISA names ("" when unset). ValueError, naming the variable,
    for a name that is not an instruction set or one this CPU and OS cannot run."""
    requested = os.environ.get("FASTNN_ISA", "").strip().lower()
    if requested and requested not in ISAS:
        raise ValueError(f"environment variable FASTNN_ISA: expected one of "
                         f"{', '.join(ISAS)} (or unset), got {os.environ['FASTNN_ISA']!r}")
    if requested and isa_unavailable(requested):
        raise _cannot_run(requested)
    return requested


def _cannot_run(isa: str) -> ValueError:
    """The error of a FASTNN_ISA this CPU and OS cannot run, with why and the best here."""
    best = ISAS[lib.fastnn_isa_best()]
    return ValueError(f"environment variable FASTNN_ISA: {isa!r} cannot run here "
                      f"({isa_unavailable(isa)}); the best allowed here is {best!r}")


def _apply_isa_setting() -> str:
    """Select the instruction set named by FASTNN_ISA (default: the best allowed here)."""
    requested = requested_isa()
    if not requested:
        return ISAS[lib.fastnn_isa_current()]
    if lib.fastnn_isa_select(ISAS.index(requested)) != 0:
        raise _cannot_run(requested)
    return requested


#: The instruction set the kernels run: FASTNN_ISA, else the best this CPU and OS allow.
ISA = _apply_isa_setting()

#: How bfloat16 matmul precision multiplies: "amx", "avx512_bf16" or "float32" (fastnn.h).
BF16_GEMM = ffi.string(lib.fastnn_bf16_gemm_name()).decode()

#: The vector code the float kernels run: "avx512" (also under "amx"), "avx2" or "portable".
SIMD = ffi.string(lib.fastnn_simd_name()).decode()


def isa_report() -> List[str]:
    """Lines for ``fastnn info``: the instruction set in use and why each higher one is not."""
    best = lib.fastnn_isa_best()
    forced = " (forced by FASTNN_ISA)" if ISAS.index(ISA) < best else ""
    built = [isa for number, isa in enumerate(ISAS) if lib.fastnn_isa_compiled(number)]
    lines = [f"instruction set: {ISA}{forced}; built for {', '.join(built)}"]
    for isa in ISAS[ISAS.index(ISA) + 1:]:
        reason = isa_unavailable(isa) or "allowed here, but FASTNN_ISA asks for a lower one"
        lines.append(f"  not {isa}: {reason}")
    how = {"amx": "AMX tiles",
           "avx512_bf16": "AVX512-BF16 dot products (no AMX here)",
           "float32": "the float32 kernels (operands rounded to bfloat16 first)"}
    lines.append(f"  bfloat16 matmul precision runs on {how[BF16_GEMM]}")
    lines.append("  matmul call entry: " + ("C (kernels/fastcall)" if matmul_entry is not None
                                             else f"cffi only ({FASTCALL_UNAVAILABLE})"))
    return lines


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
        # The cdata type itself, not its name: from_buffer then skips a lookup of the name
        # (20 ns of its 95-115 ns per array, measured).
        self.array_type = ffi.typeof(f"{ctype}[]")
        for name in ("matmul", "linear_forward", "linear_backward", "softmax", "log_softmax",
                     "xent_labels", "xent_probs", "sigmoid_xent", "mse", "one_hot",
                     "count_correct", "all_finite", "sgd_step", "adam_step",
                     "batchnorm_forward", "batchnorm_backward", "activation_forward",
                     "activation_backward", "train_steps"):
            setattr(self, name, getattr(lib, f"fastnn_{name}_{suffix}"))


_BY_DTYPE = {np.dtype(np.float32): _Kernels("f32", "float"),
             np.dtype(np.float64): _Kernels("f64", "double")}
_LABELS = "int64_t[]"


def set_num_threads(n: int) -> None:
    lib.fastnn_set_num_threads(n)


def get_num_threads() -> int:
    return lib.fastnn_get_num_threads()


def _one_thread_after_fork() -> None:
    """GNU OpenMP's thread pool does not survive fork(): a child process that enters a
    parallel region the parent has used waits for threads that do not exist (measured: a
    forked child's 512x512 matmul hung). A forked child therefore runs the kernels on one
    thread; processes started by spawn or joblib's loky are fresh and keep every thread."""
    lib.fastnn_set_num_threads(1)


os.register_at_fork(after_in_child=_one_thread_after_fork)


#: The float32 kernels in bfloat16 matmul precision (kernels/bf16.c).
_BF16 = {"matmul": lib.fastnn_matmul_bf16, "linear_forward": lib.fastnn_linear_forward_bf16,
         "linear_backward": lib.fastnn_linear_backward_bf16}


def round_bfloat16(x, out):
    lib.fastnn_round_bf16(_from_buffer("float[]", out), _from_buffer("float[]", x), x.size)


# -- the C call entry of a plain matmul (kernels/fastcall/fastcall.c) ---------------------
# fastnn.ops.matmul calls ``matmul_entry(a, b, trans_a, trans_b, out, bfloat16)`` first when
# the current backend has one (see the contract): it checks the call and runs
# fastnn_matmul_f32/_f64/_bf16/_bf16_operands/_bf16_rounded all in C, or returns None, and
# the Python path below runs. It calls the cffi extension's own GEMMs through their
# addresses, bound here.

def _fastcall_entry():
    """The extension's matmul, bound to this extension's GEMMs; None and why not when it
    was not built."""
    try:
        from .._c import _fastcall
    except ImportError as exc:
        build_error = Path(__file__).resolve().parent.parent / "_c" / "FASTCALL_BUILD_ERROR.txt"
        reason = build_error.read_text().strip() if build_error.exists() else str(exc)
        return None, reason
    _fastcall.bind(*(int(ffi.cast("uintptr_t", ffi.addressof(lib, f"fastnn_matmul_{s}")))
                     for s in ("f32", "f64", "bf16", "bf16_operands", "bf16_rounded")))
    return _fastcall.matmul, ""


#: The C call entry of ops.matmul's plain case, or None (FASTCALL_UNAVAILABLE says why).
matmul_entry, FASTCALL_UNAVAILABLE = _fastcall_entry()


# The three GEMM wrappers are called on tiny arrays too (one sample, a small layer), where
# Python's time is most of the call: each reads its kernel without a helper call, takes the
# sizes from the output's shape and checks the status inline. Their cost was measured piece by
# piece (timeit, 1 x 16 x 16 float32): the C call itself 0.29 us (cffi's argument conversion and
# GIL release most of it), each from_buffer 0.09-0.11 us, the rest of the wrapper 0.2 us; a data
# pointer as an integer costs more than from_buffer (``a.ctypes.data`` 1.1 us,
# ``a.__array_interface__`` 0.8 us), so the pointers stay cffi buffers.

def matmul(a, b, trans_a, trans_b, out, precision="float32"):
    if is_bfloat16(a):
        out_bf16 = is_bfloat16(out)
        # (cffi reads a bfloat16 array's buffer as 16-bit numbers as it is)
        status = lib.fastnn_matmul_bf16_operands(
            _from_buffer("uint16_t[]", out) if out_bf16 else _from_buffer("float[]", out),
            out_bf16, _from_buffer("uint16_t[]", a), _from_buffer("uint16_t[]", b), out.shape[0],
            a.shape[0] if trans_a else a.shape[1], out.shape[1], trans_a, trans_b)
        if status:
            _check(status, "matmul")
        return
    n, m = out.shape
    if is_bfloat16(out):  # float32 operands in bfloat16 precision, the sums rounded
        status = lib.fastnn_matmul_bf16_rounded(
            _from_buffer("uint16_t[]", out), _from_buffer("float[]", a),
            _from_buffer("float[]", b), n, a.shape[0] if trans_a else a.shape[1], m, trans_a,
            trans_b)
        if status:
            _check(status, "matmul")
        return
    k = _BY_DTYPE[a.dtype]
    t = k.array_type
    kernel = _BF16["matmul"] if precision == "bfloat16" else k.matmul
    status = kernel(_from_buffer(t, out), _from_buffer(t, a), _from_buffer(t, b), n,
                    a.shape[0] if trans_a else a.shape[1], m, trans_a, trans_b)
    if status:  # FASTNN_OK is 0
        _check(status, "matmul")


def linear_forward(x, w, b, activation, alpha, out, precision="float32"):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    n, inner = x.shape
    kernel = _BF16["linear_forward"] if precision == "bfloat16" else k.linear_forward
    status = kernel(_from_buffer(t, out), _from_buffer(t, x), _from_buffer(t, w),
                    _from_buffer(t, b), n, inner, out.shape[1], ACTIVATION_CODES[activation],
                    alpha)
    if status:
        _check(status, "linear_forward")


def linear_backward(x, w, y, dy, activation, alpha, dx, dw, db, precision="float32"):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    n, inner = x.shape
    kernel = _BF16["linear_backward"] if precision == "bfloat16" else k.linear_backward
    status = kernel(_NULL if dx is None else _from_buffer(t, dx), _from_buffer(t, dw),
                    _from_buffer(t, db), _from_buffer(t, x), _from_buffer(t, w),
                    _from_buffer(t, y), _from_buffer(t, dy), n, inner, db.shape[0],
                    ACTIVATION_CODES[activation], alpha)
    if status:
        _check(status, "linear_backward")


def softmax(x, out):
    k = _BY_DTYPE[x.dtype]
    k.softmax(_from_buffer(k.array_type, out), _from_buffer(k.array_type, x), *x.shape)


def log_softmax(x, out):
    k = _BY_DTYPE[x.dtype]
    k.log_softmax(_from_buffer(k.array_type, out), _from_buffer(k.array_type, x), *x.shape)


def _optional(t, array):
    return _NULL if array is None else _from_buffer(t, array)


def softmax_cross_entropy(logits, target, grad_scale, row_loss, grad, label_smoothing=0.0,
                          ignore_index=None, sample_weight=None):
    k = _BY_DTYPE[logits.dtype]
    t = k.array_type
    if target.ndim == 1:
        # Without ignore_index every label is in [0, C), so -1 matches none.
        k.xent_labels(_from_buffer(t, row_loss), _optional(t, grad), _from_buffer(t, logits),
                      _from_buffer(_LABELS, target), _optional(t, sample_weight),
                      *logits.shape, grad_scale, label_smoothing,
                      -1 if ignore_index is None else ignore_index)
    else:
        k.xent_probs(_from_buffer(t, row_loss), _optional(t, grad), _from_buffer(t, logits),
                     _from_buffer(t, target), _optional(t, sample_weight), *logits.shape,
                     grad_scale, label_smoothing)


def sigmoid_cross_entropy(logits, target, grad_scale, row_loss, grad, label_smoothing=0.0,
                          sample_weight=None):
    k = _BY_DTYPE[logits.dtype]
    t = k.array_type
    k.sigmoid_xent(_from_buffer(t, row_loss), _optional(t, grad), _from_buffer(t, logits),
                   _from_buffer(t, target), _optional(t, sample_weight), *logits.shape,
                   grad_scale, label_smoothing)


def mse(pred, target, grad_scale, grad, sample_weight=None):
    k = _BY_DTYPE[pred.dtype]
    t = k.array_type
    return k.mse(_optional(t, grad), _from_buffer(t, pred), _from_buffer(t, target),
                 _optional(t, sample_weight), *pred.shape, grad_scale)


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, momentum, epsilon, training,
                      activation, alpha, out, mean, inv_std):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    _check(k.batchnorm_forward(_from_buffer(t, out), _from_buffer(t, mean),
                               _from_buffer(t, inv_std), _from_buffer(t, moving_mean),
                               _from_buffer(t, moving_var), _from_buffer(t, x),
                               _from_buffer(t, gamma), _from_buffer(t, beta), *x.shape,
                               momentum, epsilon, training, ACTIVATION_CODES[activation],
                               alpha), "batchnorm_forward")


def batchnorm_backward(x, y, dy, gamma, mean, inv_std, batch_statistics, activation, alpha,
                       dx, dgamma, dbeta):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    _check(k.batchnorm_backward(_optional(t, dx), _from_buffer(t, dgamma),
                                _from_buffer(t, dbeta), _from_buffer(t, x), _from_buffer(t, y),
                                _from_buffer(t, dy), _from_buffer(t, gamma),
                                _from_buffer(t, mean), _from_buffer(t, inv_std), *x.shape,
                                batch_statistics, ACTIVATION_CODES[activation], alpha),
           "batchnorm_backward")


def activation_forward(x, activation, alpha, out):
    k = _BY_DTYPE[x.dtype]
    t = k.array_type
    k.activation_forward(_from_buffer(t, out), _from_buffer(t, x), x.size,
                         ACTIVATION_CODES[activation], alpha)


def activation_backward(y, dy, activation, alpha, dx):
    k = _BY_DTYPE[y.dtype]
    t = k.array_type
    k.activation_backward(_from_buffer(t, dx), _from_buffer(t, y), _from_buffer(t, dy), y.size,
                          ACTIVATION_CODES[activation], alpha)


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


# -- the compiled training loop ----------------------------------------------------------

def _plan_struct(plan):
    """The plan's fastnn_train_plan (fastnn.h), made once per plan and kept in its cache with
    the buffers it points into."""
    cached = plan.cache.get(NAME)
    if cached is not None:
        return cached
    k = _BY_DTYPE[plan.dtype]
    struct = ffi.new("fastnn_train_plan *")
    keep = [struct]

    def pointer(array, ctype):
        if array is None or array.size == 0:
            return _NULL
        buffer = _from_buffer(ctype, array)
        keep.append(buffer)
        return buffer

    t = k.array_type
    struct.layer_ints = pointer(plan.layer_ints, _LABELS)
    struct.layer_reals = pointer(plan.layer_reals, "double[]")
    struct.config = pointer(plan.config, _LABELS)
    struct.hyper = pointer(plan.hyper, "double[]")
    for name in ("params", "grads", "state1", "state2", "x", "targets", "x_batch",
                 "targets_batch", "acts", "dacts", "masks", "row_loss", "outputs"):
        setattr(struct, name, pointer(getattr(plan, name), t))
    for name in ("labels", "classes", "labels_batch", "classes_batch"):
        setattr(struct, name, pointer(getattr(plan, name), _LABELS))
    struct.flags = pointer(plan.flags, "uint8_t[]")
    struct.flags_batch = pointer(plan.flags_batch, "uint8_t[]")
    struct.params_size = plan.params.size
    if plan.classes is plan.labels:  # sparse labels serve as metric labels too
        struct.classes = struct.labels
    cached = plan.cache[NAME] = (k.train_steps, struct, keep, ffi.new("int *"))
    return cached


def train_steps(plan, order, first_step, steps, stats):
    train, struct, _, status = _plan_struct(plan)
    done = train(struct, _from_buffer(_LABELS, order), first_step, steps,
                 _from_buffer("double[]", stats), status)
    _check(status[0], "train_steps")
    return done
