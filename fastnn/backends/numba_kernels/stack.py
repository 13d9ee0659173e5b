"""Small arrays on the stack, for accumulators that LLVM should keep in registers.

A heap array (np.empty) is memory LLVM must assume other arrays may alias, so
every update is a load and a store; a stack array of constant size whose
indices are all known after unrolling is promoted to registers.
"""

from __future__ import annotations

from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _stack_pointer(typingctx, count, like):
    if not isinstance(count, types.IntegerLiteral) or not isinstance(like, types.Array):
        return None
    size = ir.Constant(ir.IntType(64), count.literal_value)

    def codegen(context, builder, signature, args):
        # alloca_once puts the allocation in the entry block, where LLVM's SROA looks.
        return cgutils.alloca_once(builder, context.get_value_type(like.dtype), size=size)

    return types.CPointer(like.dtype)(count, like), codegen


@njit(cache=True, error_model="numpy", inline="always")
def stack_array(count, like):
    """Uninitialised 1-D array of ``count`` (a module-level int constant) elements of
    like's dtype, on the caller's stack: valid only until the caller returns."""
    return carray(_stack_pointer(count, like), count)
