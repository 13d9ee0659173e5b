"""The GEMM micro-kernel in explicit SIMD: an MR x NR tile of FMAs on whole vectors.

LLVM's loop and SLP vectorizers on AVX-512 CPUs (Skylake-X to Sapphire Rapids)
prefer 256-bit vectors, so a micro-kernel written as Numba loops tops out at
half the FMA width. This intrinsic emits the same loop with vectors of the
host's full width instead (512 bits with AVX-512F, else 256, else 128): per
inner index, NR/lanes loads of packed b, MR broadcasts of packed a and
MR * NR/lanes fused multiply-adds into accumulators that stay in registers
(12 of 32 zmm). Rounding is that of one FMA per term, as the loop version had.
"""

from __future__ import annotations

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Rows of the micro-tile: MR broadcasts of packed a per inner index.
MR = 6
_features = binding.get_host_cpu_features()
#: Width of one SIMD register, the widest the host has.
VECTOR_BITS = 512 if _features.get("avx512f") else 256 if _features.get("avx") else 128
#: Columns of the micro-tile, in registers: MR * VECTORS_PER_ROW accumulators.
VECTORS_PER_ROW = 2
#: Bytes of one micro-tile row: NR = TILE_BYTES // itemsize (32 float32 with AVX-512).
TILE_BYTES = VECTOR_BITS // 8 * VECTORS_PER_ROW


@intrinsic
def tile_product(typingctx, packed_a, a_start, packed_b, b_start, depth, dest, dest_start,
                 dest_stride, accumulate):
    """An MR x NR tile of the product of packed panels, written or added into dest:

    dest.flat[dest_start + r * dest_stride + c] (+)= sum over p < depth of
    packed_a[a_start + p * MR + r] * packed_b[b_start + p * NR + c].

    packed_a, packed_b: contiguous 1-D float arrays; dest: a C-contiguous float array
    of the same dtype (a GEMM output, written in place, or a scratch tile); starts,
    stride, depth: ints >= 0 with every index in bounds (not checked); accumulate:
    add to dest instead of overwriting it. Taking offsets rather than slices saves a
    view, i.e. two atomic reference count updates on arrays all threads share.
    """
    if not all(isinstance(t, types.Array) and t.dtype == dest.dtype
               for t in (packed_a, packed_b, dest)):
        return None
    dtype = dest.dtype
    signature_args = (packed_a, a_start, packed_b, b_start, depth, dest, dest_start,
                      dest_stride, accumulate)

    def codegen(context, builder, signature, args):
        scalar = context.get_value_type(dtype)
        lanes = VECTOR_BITS // dtype.bitwidth
        width = lanes * VECTORS_PER_ROW
        vector = ir.VectorType(scalar, lanes)
        vector_pointer = vector.as_pointer()
        align = dtype.bitwidth // 8
        index = ir.IntType(64)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fma.v{lanes}f{dtype.bitwidth}")
        a_data, b_data, dest_data = (
            context.make_array(signature.args[k])(context, builder, args[k]).data
            for k in (0, 2, 5))
        a_start, b_start, depth, dest_start, dest_stride = (
            context.cast(builder, args[k], signature.args[k], types.int64)
            for k in (1, 3, 4, 6, 7))
        zero = ir.Constant(vector, [ir.Constant(scalar, 0.0)] * lanes)
        # Allocas in the entry block: mem2reg turns them into registers.
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS_PER_ROW)]
               for _ in range(MR)]
        undefined = ir.Constant(vector, ir.Undefined)
        broadcast_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        with cgutils.for_range(builder, depth) as loop:
            b_row = builder.add(b_start, builder.mul(loop.index, ir.Constant(index, width)))
            b_vectors = [builder.load(builder.bitcast(
                builder.gep(b_data, [builder.add(b_row, ir.Constant(index, v * lanes))]),
                vector_pointer), align=align) for v in range(VECTORS_PER_ROW)]
            a_row = builder.add(a_start, builder.mul(loop.index, ir.Constant(index, MR)))
            for r in range(MR):
                a = builder.load(builder.gep(a_data, [builder.add(a_row, ir.Constant(index, r))]))
                a_vector = builder.shuffle_vector(
                    builder.insert_element(undefined, a, ir.Constant(ir.IntType(32), 0)),
                    undefined, broadcast_mask)
                for v in range(VECTORS_PER_ROW):
                    total = builder.call(fma, [a_vector, b_vectors[v], builder.load(acc[r][v])])
                    builder.store(total, acc[r][v])
        add = context.cast(builder, args[8], signature.args[8], types.boolean)
        for r in range(MR):
            row = builder.add(dest_start, builder.mul(ir.Constant(index, r), dest_stride))
            for v in range(VECTORS_PER_ROW):
                target = builder.bitcast(
                    builder.gep(dest_data, [builder.add(row, ir.Constant(index, v * lanes))]),
                    vector_pointer)
                value = builder.load(acc[r][v])
                with builder.if_then(add):
                    builder.store(builder.fadd(builder.load(target, align=align), value),
                                  acc[r][v])
                builder.store(builder.load(acc[r][v]), target, align=align)
        return context.get_dummy_value()

    return types.void(*signature_args), codegen
