"""The GEMM micro-kernel in explicit SIMD: an MR x NR tile of FMAs on whole vectors; and
the 8 x 8 block transpose in registers with which a direct product copies op(b) = b.T
(:func:`transpose_block`).

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
    signature_args = (packed_a, a_start, packed_b, b_start, depth, dest, dest_start,
                      dest_stride, accumulate)

    def codegen(context, builder, signature, args):
        index = ir.IntType(64)
        strides = (ir.Constant(index, 1), ir.Constant(index, MR),
                   ir.Constant(index, VECTOR_BITS // dest.dtype.bitwidth * VECTORS_PER_ROW))
        _tile_codegen(context, builder, signature, args, dest.dtype, (0, 1, 2, 3, 4, 5, 6, 7, 8),
                      strides)
        return context.get_dummy_value()

    return types.void(*signature_args), codegen


@intrinsic
def tile_product_strided(typingctx, a, a_start, a_row_stride, a_depth_stride, b, b_start,
                         b_depth_stride, depth, dest, dest_start, dest_stride, accumulate):
    """tile_product on operands read in place, without packing:

    dest.flat[dest_start + r * dest_stride + c] (+)= sum over p < depth of
    a.flat[a_start + r * a_row_stride + p * a_depth_stride]
    * b.flat[b_start + p * b_depth_stride + c]

    for r < MR, c < NR. a, b, dest: C-contiguous float arrays (any rank) of one dtype;
    every index in bounds (not checked). With strides (1, MR, NR) it is tile_product;
    (K, 1, M) reads a row-major (N, K) a and (K, M) b; (1, N, M) reads a.T of an (K, N) a.
    """
    if not all(isinstance(t, types.Array) and t.dtype == dest.dtype for t in (a, b, dest)):
        return None
    signature_args = (a, a_start, a_row_stride, a_depth_stride, b, b_start, b_depth_stride,
                      depth, dest, dest_start, dest_stride, accumulate)

    def codegen(context, builder, signature, args):
        strides = tuple(context.cast(builder, args[k], signature.args[k], types.int64)
                        for k in (2, 3, 6))
        _tile_codegen(context, builder, signature, args, dest.dtype, (0, 1, 4, 5, 7, 8, 9, 10, 11),
                      strides)
        return context.get_dummy_value()

    return types.void(*signature_args), codegen


def _tile_codegen(context, builder, signature, args, dtype, where, strides):
    """The tile's IR. where: the argument positions of (a, a_start, b, b_start, depth, dest,
    dest_start, dest_stride, accumulate); strides: i64 values (a's row, a's depth, b's depth)."""
    a_arg, a_start_arg, b_arg, b_start_arg, depth_arg, dest_arg, dest_start_arg, \
        dest_stride_arg, accumulate_arg = where
    a_row_stride, a_depth_stride, b_depth_stride = strides
    scalar = context.get_value_type(dtype)
    lanes = VECTOR_BITS // dtype.bitwidth
    vector = ir.VectorType(scalar, lanes)
    vector_pointer = vector.as_pointer()
    align = dtype.bitwidth // 8
    index = ir.IntType(64)
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector, [vector] * 3),
        f"llvm.fma.v{lanes}f{dtype.bitwidth}")
    a_data, b_data, dest_data = (
        context.make_array(signature.args[k])(context, builder, args[k]).data
        for k in (a_arg, b_arg, dest_arg))
    a_start, b_start, depth, dest_start, dest_stride = (
        context.cast(builder, args[k], signature.args[k], types.int64)
        for k in (a_start_arg, b_start_arg, depth_arg, dest_start_arg, dest_stride_arg))
    zero = ir.Constant(vector, [ir.Constant(scalar, 0.0)] * lanes)
    # Allocas in the entry block: mem2reg turns them into registers.
    acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS_PER_ROW)]
           for _ in range(MR)]
    undefined = ir.Constant(vector, ir.Undefined)
    broadcast_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    with cgutils.for_range(builder, depth) as loop:
        b_row = builder.add(b_start, builder.mul(loop.index, b_depth_stride))
        b_vectors = [builder.load(builder.bitcast(
            builder.gep(b_data, [builder.add(b_row, ir.Constant(index, v * lanes))]),
            vector_pointer), align=align) for v in range(VECTORS_PER_ROW)]
        a_row = builder.add(a_start, builder.mul(loop.index, a_depth_stride))
        for r in range(MR):
            a = builder.load(builder.gep(a_data, [
                builder.add(a_row, builder.mul(ir.Constant(index, r), a_row_stride))]))
            a_vector = builder.shuffle_vector(
                builder.insert_element(undefined, a, ir.Constant(ir.IntType(32), 0)),
                undefined, broadcast_mask)
            for v in range(VECTORS_PER_ROW):
                total = builder.call(fma, [a_vector, b_vectors[v], builder.load(acc[r][v])])
                builder.store(total, acc[r][v])
    add = context.cast(builder, args[accumulate_arg], signature.args[accumulate_arg],
                       types.boolean)
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


#: Side of the square block that transpose_block moves: 8 rows of 8 elements, one vector
#: each (256 bits of float32, 512 of float64).
BLOCK = 8


@intrinsic
def transpose_block(typingctx, source, source_start, source_stride, dest, dest_start,
                    dest_stride):
    """dest.flat[dest_start + c * dest_stride + r] = source.flat[source_start + r *
    source_stride + c] for r, c < BLOCK: an 8 x 8 block transposed in registers.

    source, dest: C-contiguous float arrays of one dtype; starts and strides: ints >= 0, every
    index in bounds (not checked). Eight row loads, the three rounds of shuffles of the
    usual in-register transpose (interleave pairs of rows, then pairs of pairs, then the
    halves; for float32 on AVX-512 LLVM emits 16 unpacks and 4 lane permutes), eight row
    stores; the element-by-element copy it replaced moved 64 values with 128 scalar
    instructions.
    """
    if not all(isinstance(t, types.Array) for t in (source, dest)) \
            or source.dtype != dest.dtype or not isinstance(source.dtype, types.Float):
        return None
    signature_args = (source, source_start, source_stride, dest, dest_start, dest_stride)

    def codegen(context, builder, signature, args):
        scalar = context.get_value_type(source.dtype)
        vector = ir.VectorType(scalar, BLOCK)
        pointer = vector.as_pointer()
        align = source.dtype.bitwidth // 8
        source_data, dest_data = (context.make_array(signature.args[k])(context, builder,
                                                                      args[k]).data
                                  for k in (0, 3))
        source_start, source_stride, dest_start, dest_stride = (
            context.cast(builder, args[k], signature.args[k], types.int64) for k in (1, 2, 4, 5))

        def row_pointer(data, start, stride, row):
            offset = builder.add(start, builder.mul(ir.Constant(ir.IntType(64), row), stride))
            return builder.bitcast(builder.gep(data, [offset]), pointer)

        def shuffle(first, second, mask):
            return builder.shuffle_vector(first, second, ir.Constant(
                ir.VectorType(ir.IntType(32), BLOCK), mask))

        rows = [builder.load(row_pointer(source_data, source_start, source_stride, r),
                             align=align) for r in range(BLOCK)]
        # Round 1: rows 2i and 2i + 1 interleaved, in each half: pairs (a[2i][c], a[2i+1][c]).
        low, high = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
        pairs = []
        for i in range(0, BLOCK, 2):
            pairs += [shuffle(rows[i], rows[i + 1], low), shuffle(rows[i], rows[i + 1], high)]
        # Round 2: pairs of pairs, four rows' elements of a column together in each half.
        quads = []
        for base in (0, 4):  # rows 0-3, rows 4-7
            first, second = pairs[base], pairs[base + 2]  # unpacklo of rows (0,1) and (2,3)
            third, fourth = pairs[base + 1], pairs[base + 3]  # their unpackhi
            quads += [shuffle(first, second, [0, 1, 8, 9, 4, 5, 12, 13]),
                      shuffle(first, second, [2, 3, 10, 11, 6, 7, 14, 15]),
                      shuffle(third, fourth, [0, 1, 8, 9, 4, 5, 12, 13]),
                      shuffle(third, fourth, [2, 3, 10, 11, 6, 7, 14, 15])]
        # Round 3: the low halves give columns 0-3, the high halves columns 4-7.
        for q in range(4):
            for half, column in (([0, 1, 2, 3, 8, 9, 10, 11], q),
                                 ([4, 5, 6, 7, 12, 13, 14, 15], q + 4)):
                builder.store(shuffle(quads[q], quads[q + 4], half),
                              row_pointer(dest_data, dest_start, dest_stride, column),
                              align=align)
        return context.get_dummy_value()

    return types.void(*signature_args), codegen
