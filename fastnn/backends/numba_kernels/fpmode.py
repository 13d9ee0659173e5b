"""The floating-point mode of a thread running a Numba kernel (see fastnn.backends.runtime).

``saved = fp_enter(flush)`` turns on flush-to-zero and denormals-are-zero (the FTZ and DAZ
bits of x86's MXCSR) when ``flush`` is true and returns the thread's previous mode;
``fp_leave(saved)`` puts it back. Each parallel task and each serial kernel brackets its
arithmetic with the pair, so the threads of Numba's pool and the calling Python thread come
back in their own mode. Intrinsics, so the calls compile to two instructions (stmxcsr,
ldmxcsr) and the kernels stay cacheable. On other CPUs both do nothing.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: MXCSR bits: FTZ (15) and DAZ (6).
FTZ_DAZ = 0x8040
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_I32 = ir.IntType(32)


def _mxcsr_call(builder, name, slot):
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()]), name)
    builder.call(function, [builder.bitcast(slot, ir.IntType(8).as_pointer())])


@intrinsic
def fp_enter(typingctx, flush):
    """uint32 fp_enter(bool flush): set FTZ and DAZ if flush; the previous mode."""
    def codegen(context, builder, signature, args):
        if not _X86:
            return ir.Constant(_I32, 0)
        slot = cgutils.alloca_once(builder, _I32)
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        saved = builder.load(slot)
        wanted = builder.select(args[0], builder.or_(saved, ir.Constant(_I32, FTZ_DAZ)), saved)
        builder.store(wanted, slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return saved
    return types.uint32(types.boolean), codegen


@intrinsic
def fp_leave(typingctx, saved):
    """fp_leave(uint32 saved): restore the mode fp_enter returned."""
    def codegen(context, builder, signature, args):
        if _X86:
            slot = cgutils.alloca_once(builder, _I32)
            builder.store(args[0], slot)
            _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.void(types.uint32), codegen
