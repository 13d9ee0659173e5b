"""The floating-point mode of a thread running a Numba kernel: flush-to-zero and
denormals-are-zero, as the C kernels' ``fastnn_fp_enter`` / ``fastnn_fp_leave``
(kernels/internal.h).

While :func:`set_flush` is on (``fastnn.set_flush_denormal(True)``, the default), every
kernel called from Python, and every ``prange`` body on whichever thread runs it, starts
with ``mode = fp_enter()`` (MXCSR's FTZ and DAZ bits set, unless they already were) and
ends with ``fp_leave(mode)``, which puts back the thread's own mode (its status flags
raised by the kernel are kept). So the calling Python thread and the OpenMP threads that
other libraries share keep IEEE arithmetic outside fastnn. A kernel called from another
kernel finds the bits set and changes nothing: nesting costs one ``stmxcsr``.

The switch is a flag in memory that the kernels read when they start, through a symbol
(:data:`FLAG_SYMBOL`) that LLVM resolves when it loads the code, also from Numba's disk
cache: neither baked into cached code as a constant nor an extra argument of every
kernel (each argument of a call from Python costs about 0.1 us of Numba's dispatch).

A thread inherits the mode of the thread that creates it: an OpenMP thread that the pool
starts for a parallel loop while the calling thread flushes starts in FTZ|DAZ, and its own
fp_enter would keep that. So a worker thread (not the calling thread) that starts a task with
either bit set, in a process whose threads run without them (:data:`_process_flushes`, read
at import), is given them cleared when the task ends (:func:`fp_inherited`).

x86-64 only (SSE's MXCSR); elsewhere these are no-ops and the kernels keep the IEEE
subnormals (:data:`SUPPORTED`).
"""

from __future__ import annotations

import ctypes

from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Whether the host has a mode these intrinsics set (x86-64's MXCSR).
SUPPORTED = binding.get_process_triple().startswith(("x86_64", "i386", "i686"))
#: MXCSR: flush-to-zero (bit 15) and denormals-are-zero (bit 6).
FTZ_DAZ = 0x8040
#: MXCSR's six sticky exception flags (kept as the kernel raised them, on leaving).
STATUS_FLAGS = 0x3F
#: fp_enter's value when it changed nothing (fp_leave then changes nothing either).
UNCHANGED = -1

#: The flag (1: flush), read by every kernel at its start.
FLAG_SYMBOL = "fastnn_numba_flush_denormal"
_flag = ctypes.c_int32(1)
binding.add_symbol(FLAG_SYMBOL, ctypes.addressof(_flag))
#: 1 when the importing thread already ran with FTZ or DAZ (set below).
PROCESS_SYMBOL = "fastnn_numba_process_flushes"
_process_flushes = ctypes.c_int32(0)
binding.add_symbol(PROCESS_SYMBOL, ctypes.addressof(_process_flushes))


def set_flush(mode: bool) -> None:
    """Flush subnormals in the kernels that start from now on (runtime.on_flush_denormal)."""
    _flag.value = 1 if mode else 0


def flush() -> bool:
    return bool(_flag.value)


def external_global(module, value_type, name):
    """The module's declaration of the process-wide variable ``name`` (one per module)."""
    try:
        return module.get_global(name)
    except KeyError:
        variable = cgutils.add_global_variable(module, value_type, name)
        variable.linkage = "external"
        return variable


_I8_POINTER = ir.IntType(8).as_pointer()
_MXCSR_FUNCTION = ir.FunctionType(ir.VoidType(), [_I8_POINTER])


def _mxcsr(builder, name, slot):
    function = cgutils.get_or_insert_function(builder.module, _MXCSR_FUNCTION, name)
    builder.call(function, [builder.bitcast(slot, _I8_POINTER)])


def _read_mxcsr(builder):
    slot = cgutils.alloca_once(builder, ir.IntType(32))
    _mxcsr(builder, "llvm.x86.sse.stmxcsr", slot)
    return builder.load(slot)


def _write_mxcsr(builder, value):
    slot = cgutils.alloca_once(builder, ir.IntType(32))
    builder.store(value, slot)
    _mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)


@intrinsic
def mxcsr(typingctx):
    """This thread's MXCSR (0 where there is none)."""

    def codegen(context, builder, signature, args):
        if not SUPPORTED:
            return ir.Constant(ir.IntType(64), 0)
        return builder.zext(_read_mxcsr(builder), ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def fp_enter(typingctx):
    """Set FTZ|DAZ on this thread if flushing is on and they are not set; returns the
    previous MXCSR (int64) if it changed it, else UNCHANGED."""

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        result = cgutils.alloca_once_value(builder, ir.Constant(i64, UNCHANGED))
        if not SUPPORTED:
            return builder.load(result)
        flag = builder.load_atomic(external_global(builder.module, i32, FLAG_SYMBOL),
                                   "monotonic", 4)
        with builder.if_then(builder.icmp_unsigned("!=", flag, ir.Constant(i32, 0))):
            saved = _read_mxcsr(builder)
            bits = ir.Constant(i32, FTZ_DAZ)
            with builder.if_then(builder.icmp_unsigned("!=", builder.and_(saved, bits), bits)):
                _write_mxcsr(builder, builder.or_(saved, bits))
                builder.store(builder.zext(saved, i64), result)
        return builder.load(result)

    return types.int64(), codegen


@intrinsic
def fp_leave(typingctx, saved):
    """Undo fp_enter (saved: its value): the thread's previous mode, with the exception
    flags as they are now."""
    if not isinstance(saved, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        if not SUPPORTED:
            return context.get_dummy_value()
        i32, i64 = ir.IntType(32), ir.IntType(64)
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        with builder.if_then(builder.icmp_signed(">=", value, ir.Constant(i64, 0))):
            status = builder.and_(_read_mxcsr(builder), ir.Constant(i32, STATUS_FLAGS))
            mode = builder.and_(builder.trunc(value, i32), ir.Constant(i32, ~STATUS_FLAGS))
            _write_mxcsr(builder, builder.or_(mode, status))
        return context.get_dummy_value()

    return types.void(saved), codegen


@intrinsic
def fp_inherited(typingctx):
    """For a worker thread whose fp_enter changed nothing: its mode with FTZ and DAZ cleared
    (for fp_leave) if either is set while the process runs without them, else UNCHANGED."""

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        result = cgutils.alloca_once_value(builder, ir.Constant(i64, UNCHANGED))
        if not SUPPORTED:
            return builder.load(result)
        process = builder.load_atomic(external_global(builder.module, i32, PROCESS_SYMBOL),
                                      "monotonic", 4)
        with builder.if_then(builder.icmp_unsigned("==", process, ir.Constant(i32, 0))):
            current = _read_mxcsr(builder)
            bits = ir.Constant(i32, FTZ_DAZ)
            with builder.if_then(builder.icmp_unsigned("!=", builder.and_(current, bits),
                                                       ir.Constant(i32, 0))):
                cleared = builder.and_(current, ir.Constant(i32, ~FTZ_DAZ))
                builder.store(builder.zext(cleared, i64), result)
        return builder.load(result)

    return types.int64(), codegen


@njit(cache=True)
def _current_mode():
    return mxcsr()


_process_flushes.value = 1 if _current_mode() & FTZ_DAZ else 0
