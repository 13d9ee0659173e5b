"""GEMM ``out = act(op(a) @ op(b) + bias)``: the engine of matmul and the linear layer.

a: float (N, K), or (K, N) when trans_a; b: float (K, M), or (M, K) when
trans_b; out: float (N, M); bias: float (M,) or None; code: an activation
code (IDENTITY for a plain product); alpha: leaky_relu's slope. Transposes are
read in place, while packing.

Layered as in BLIS / GotoBLAS:

* for each panel of columns, op(b)'s K x NC block is packed once, by all
  threads, slice by slice of KC inner indices, into NR-wide micro-panels (each
  KC x NR, row-major: the NR values of one inner index are adjacent);
* tasks (row blocks of at most MC rows, times column groups when rows are too
  few to occupy every thread) pack their MC x KC block of op(a) into MR-tall
  micro-panels and run the macro-kernel on it;
* the micro-kernel (simd.tile_product) accumulates an MR x NR tile over KC in
  vector registers: 6 x 2 zmm registers of float32 or float64 with AVX-512;
* after the last KC slice the tile is added to ``out`` and the epilogue
  (bias, activation) runs while it is in L1.

Small products skip all that: :func:`gemm_direct` runs the micro-kernel on a and b in
place (only op(b) = b.T and the edges are copied), :func:`gemm_rows` the tiniest as loops.
Products too large for one thread whose op(a) fits in L2 (:func:`direct_fits`: an MLP's
layers at batch 32 to 512) run gemm_direct's micro-panels on all threads
(:func:`gemm_blocked_into`), each thread a contiguous run of them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload

from .epilogue import bias_activate
from .fp_mode import fp_enter, fp_leave
from .simd import BLOCK, MR, TILE_BYTES, tile_product, tile_product_strided, transpose_block
from .team import region_enter, region_leave, task_enter, task_leave
from .views import rows_of, span_of

#: The micro-tile is MR rows by NR = TILE_BYTES // itemsize columns (see simd.py).
#: Inner block (a KC x NR micro-panel of b stays in L1: 32 KiB with AVX-512), rows
#: of op(a) per task (an MC x KC block stays in L2), columns of op(b) per packed panel.
KC = 256
MC = 144
#: Packed op(b) per panel of columns, all slices (2 MiB of float32, one core's L2):
#: sets the panel width, so that the tasks find the panel in L2 (or L3) as they sweep it.
PACKED_B_ELEMENTS = 1 << 19


def tile_width(like):
    """NR: micro-tile columns for like's dtype (AVX-512: 32 float32, 16 float64)."""
    return TILE_BYTES // like.itemsize


@overload(tile_width)
def _tile_width_constant(like):
    # A constant per dtype: the array's itemsize field is only known at run time, and
    # LLVM must see a constant trip count to keep the tile in registers.
    width = TILE_BYTES * 8 // like.dtype.bitwidth
    return lambda like: width


# -- direct product for tiny sizes ---------------------------------------------------

@njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def row_dot(a, i, b, j, inner):
    """dot(a[i, :inner], b[j, :inner]). "reassoc" lets LLVM keep a vector of partial sums
    (the dx = dz @ w.T of a small layer): a strict left-to-right sum was scalar code, 5-8
    GFLOP/s at 32 x 64 x 64 against 26-34 for the other direct products."""
    total = a.dtype.type(0)
    for p in range(inner):
        total += a[i, p] * b[j, p]
    return total


@njit(cache=True, error_model="numpy")
def gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, start, stop):
    """Rows start..stop of the product, straight from a and b (no packing)."""
    inner = b.shape[1] if trans_b else b.shape[0]
    cols = out.shape[1]
    for i in range(start, stop):
        if trans_b and not trans_a:  # out[i, j] = dot(a[i], b[j]): contiguous rows
            for j in range(cols):
                out[i, j] = row_dot(a, i, b, j, inner)
        elif trans_b:
            for j in range(cols):
                total = out.dtype.type(0)
                for p in range(inner):
                    total += a[p, i] * b[j, p]
                out[i, j] = total
        else:  # out[i] = sum_p op(a)[i, p] * b[p]: vectorized over the row
            out[i, :] = 0
            for p in range(inner):
                scale = a[p, i] if trans_a else a[i, p]
                for j in range(cols):
                    out[i, j] += scale * b[p, j]
    bias_activate(out, start, stop, 0, cols, bias, code, alpha)


#: Multiply-adds below which gemm_direct runs the plain loops of gemm_rows (XOR's 4 x 2 x 8:
#: the micro-kernel's zero-padded edges would be most of the work).
TILED_MIN_MULTIPLY_ADDS = 2048
#: op(a) of at most these bytes (half of a 1 MiB L2): a product too large for the calling thread
#: alone (gemm_blocked_into) still runs the direct micro-kernel, the threads taking shares of
#: its column micro-panels (gemm_blocked_into): each thread sweeps all of op(a) from its L2 for
#: each of its micro-panels of op(b), instead of packing. Measured on one thread (float32, us,
#: direct / blocked, busy machine): 128x256x128 40 / 73, 32x784x256 74 / 232, 128x784x256
#: 215 / 423 (an MNIST MLP's products at batch 32 and 128).
DIRECT_A_BYTES = 1 << 19
#: Rows of b that transpose_into moves as a strip: each 8-column step of the strip then writes
#: 256-byte runs of out's rows, not one 32-byte piece of eight lines far apart.
TRANSPOSE_ROWS = 64


@njit(cache=True, error_model="numpy")
def transpose_into(b, out):
    """out[p * R + j] = b[j, p] for b: float (R, C), out: 1-D of at least R * C elements.
    Whole simd.BLOCK squares in registers (simd.transpose_block), strip by strip of
    TRANSPOSE_ROWS rows, then the edges. Measured on one thread (float32, us; the former
    element-by-element copy of 8 x 8 blocks / this): 64 x 64 0.90 / 0.26, 256 x 128
    7.8 / 3.0, 128 x 784 22 / 7.9 (a backward's op(b) = W.T), 1024 x 1024 4480 / 580."""
    rows, cols = b.shape
    flat = b.reshape(-1)
    full_rows, full_cols = rows - rows % BLOCK, cols - cols % BLOCK
    for j1 in range(0, full_rows, TRANSPOSE_ROWS):
        for p0 in range(0, full_cols, BLOCK):
            for j0 in range(j1, min(j1 + TRANSPOSE_ROWS, full_rows), BLOCK):
                transpose_block(flat, j0 * cols + p0, cols, out, p0 * rows + j0, rows)
    for j in range(full_rows, rows):
        for p in range(cols):
            out[p * rows + j] = flat[j * cols + p]
    for j in range(full_rows):
        for p in range(full_cols, cols):
            out[p * rows + j] = flat[j * cols + p]


@njit(cache=True, error_model="numpy")
def direct_scratch_size(rows, cols, inner, like):
    """Elements of gemm_direct's scratch: op(b) copied (trans_b), the padded edge panels of
    op(b) and op(a), one tile; or, for a narrow product, gemm_narrow's out.T."""
    width = tile_width(like)
    tiles = inner * (cols + width + MR) + MR * width
    return max(tiles, rows * cols) if narrow(cols) else tiles


#: Columns at or below which gemm_tiles runs gemm_narrow: there the micro-tile's NR = 32
#: (float32) columns would be mostly zero padding (a classifier's last layer, 2 to 8 outputs).
#: A short inner dimension is no reason: measured, the micro-tiles beat the loops there.
NARROW_MAX = 8


@njit(cache=True, error_model="numpy", inline="always")
def narrow(cols):
    """Whether gemm_tiles runs a product of ``cols`` columns as gemm_narrow."""
    return cols <= NARROW_MAX


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def gemm_narrow(a, b, trans_a, trans_b, out, bias, code, alpha, scratch):
    """gemm_tiles' products of few columns (see narrow), in loops that LLVM vectorizes along
    their long side; scratch as gemm_tiles' (direct_scratch_size elements):

    * op(a) = a: dots of a's rows with op(b)'s columns (b copied transposed first when
      op(b) = b), vectorized along the inner dimension (row_dot);
    * op(a) = a.T: out.T built in scratch, each row a sum of multiples of a's rows,
      vectorized along out's rows, then copied into out.

    Measured on one thread (float32, relu, us, micro-tiles / these loops): 32 x 64 x 2
    1.27 / 0.36, 64 x 32 x 2 with a.T 1.13 / 0.48, 128 x 256 x 4 11.0 / 5.3, 512 x 64 x 1
    10.7 / 2.1 (a tabular classifier's last layer: forward, weight gradient; and wider).
    """
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    if not trans_a:
        columns = b
        if not trans_b:  # op(b)'s columns as rows: b.T, row-major (cols, inner)
            transpose_into(b, scratch)
            columns = rows_of(scratch, 0, cols, inner)
        for i in range(rows):
            for j in range(cols):
                out[i, j] = row_dot(a, i, columns, j, inner)
    else:
        transposed = rows_of(scratch, 0, cols, rows)  # out.T
        transposed[:, :] = 0
        for p in range(inner):
            for j in range(cols):
                scale = b[j, p] if trans_b else b[p, j]
                for i in range(rows):
                    transposed[j, i] += scale * a[p, i]
        for i in range(rows):
            for j in range(cols):
                out[i, j] = transposed[j, i]
    bias_activate(out, 0, rows, 0, cols, bias, code, alpha)


@njit(cache=True, error_model="numpy")
def pad_edge(source, depth_major, first, stop, inner, width, padded):
    """padded[p * width + c] = element (first + c, p) of source for first + c < stop, else 0;
    element (i, p) is source[p, i] when depth_major, else source[i, p]."""
    for p in range(inner):
        for c in range(width):
            i = np.uintp(first + c)  # unsigned: contiguous loads when depth_major (indexing.py)
            value = padded.dtype.type(0)
            if first + c < stop:
                value = source[p, i] if depth_major else source[i, p]
            padded[p * width + c] = value


@njit(cache=True, error_model="numpy", inline="always")
def padded(count, panel):
    """Whether a direct product copies the last partial panel of its ``count`` rows (panel:
    MR) or columns (panel: NR) zero-padded (pad_edge). Only when there are fewer than a
    panel in all: otherwise the last ``panel`` rows (columns) are read in place,
    overlapping the panel before, and the tile's rows (columns) already written are
    skipped (direct_panel, direct_panel_run). The copy of op(a)'s rows, element by element
    across them, took 0.2 us of a 32 x 64 x 64 product's 1.8 (one thread, float32)."""
    return count % panel != 0 and count < panel


@njit(cache=True, error_model="numpy")
def direct_tile(a, a_start, a_row_stride, a_depth_stride, b, b_start, b_depth_stride, depth,
                out, i0, j0, tile_rows, tile_cols, tile, first):
    """out[i0:i0+tile_rows, j0:j0+tile_cols] = one micro-tile of the product (gemm_direct);
    when the tile is partial, from tile[first + r * NR + c]: first skips the tile's rows
    and columns that were read in place but are already written."""
    width = tile_width(out)
    if tile_rows == MR and tile_cols == width:
        tile_product_strided(a, a_start, a_row_stride, a_depth_stride, b, b_start,
                             b_depth_stride, depth, out, i0 * out.shape[1] + j0, out.shape[1],
                             False)
    else:
        tile_product_strided(a, a_start, a_row_stride, a_depth_stride, b, b_start,
                             b_depth_stride, depth, tile, 0, width, False)
        for r in range(tile_rows):  # unsigned indices: contiguous moves (indexing.py)
            row, at = np.uintp(i0 + r), first + r * width
            for c in range(tile_cols):
                out[row, np.uintp(j0 + c)] = tile[np.uintp(at + c)]


@njit(cache=True, error_model="numpy")
def direct_panel(a, trans_a, pad_a, b, b_start, b_depth_stride, out, j0, tile_cols, bias, code,
                 alpha, tile, skip_cols):
    """Columns j0..j0+tile_cols of gemm_direct, all rows: op(b)'s micro-panel read from
    b.flat[b_start + p * b_depth_stride + c], of which columns c < skip_cols (done by the
    panel before) are not written."""
    rows = out.shape[0]
    width = tile_width(out)
    inner = a.shape[0] if trans_a else a.shape[1]
    full_rows = rows - rows % MR
    for i0 in range(0, full_rows, MR):
        if trans_a:  # op(a)[r, p] = a[p, i0 + r]
            direct_tile(a, i0, 1, rows, b, b_start, b_depth_stride, inner, out, i0, j0, MR,
                        tile_cols, tile, skip_cols)
        else:
            direct_tile(a, i0 * inner, inner, 1, b, b_start, b_depth_stride, inner, out, i0,
                        j0, MR, tile_cols, tile, skip_cols)
    if padded(rows, MR):
        direct_tile(pad_a, 0, 1, MR, b, b_start, b_depth_stride, inner, out, full_rows, j0,
                    rows - full_rows, tile_cols, tile, skip_cols)
    elif full_rows < rows:  # the last MR rows read in place, the panel before's skipped
        last = rows - MR
        first = (full_rows - last) * width + skip_cols
        if trans_a:
            direct_tile(a, last, 1, rows, b, b_start, b_depth_stride, inner, out, full_rows,
                        j0, rows - full_rows, tile_cols, tile, first)
        else:
            direct_tile(a, last * inner, inner, 1, b, b_start, b_depth_stride, inner, out,
                        full_rows, j0, rows - full_rows, tile_cols, tile, first)
    bias_activate(out, 0, rows, j0, j0 + tile_cols, bias, code, alpha)


@njit(cache=True, error_model="numpy")
def gemm_direct(a, b, trans_a, trans_b, out, bias, code, alpha, scratch):
    """The product of small operands on the calling thread, without packing blocks: the
    micro-kernel reads op(a) and op(b) where they are (op(b) = b.T is copied row-major
    first; a last partial row or column panel is read in place as the last full one, or
    copied zero-padded when there is none: padded).
    scratch: 1-D, out's dtype, at least direct_scratch_size elements."""
    mode = fp_enter()
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    if tiled(rows, cols, inner):
        gemm_tiles(a, b, trans_a, trans_b, out, bias, code, alpha, scratch)
    else:
        gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, 0, rows)
    fp_leave(mode)


@njit(cache=True, error_model="numpy", inline="always")
def tiled(rows, cols, inner):
    """Whether gemm_direct runs the micro-kernel (else gemm_rows' loops). Callers on a hot
    path (a training step of XOR) test it themselves and call gemm_tiles or gemm_rows: each
    extra call layer with array arguments cost ~60 ns there."""
    return rows * cols * inner >= TILED_MIN_MULTIPLY_ADDS and inner > 0


@njit(cache=True, error_model="numpy")
def gemm_tiles(a, b, trans_a, trans_b, out, bias, code, alpha, scratch):
    """gemm_direct's micro-tiles (inner > 0), or its loops for a narrow product."""
    inner = a.shape[0] if trans_a else a.shape[1]
    if narrow(out.shape[1]):
        gemm_narrow(a, b, trans_a, trans_b, out, bias, code, alpha, scratch)
        return
    copied_b, pad_b, pad_a, full_cols, panels = prepare_direct(a, b, trans_a, trans_b, out,
                                                               scratch)
    tile = span_of(scratch, inner * (out.shape[1] + tile_width(out) + MR), MR * tile_width(out))
    direct_panel_run(a, b, trans_a, trans_b, out, bias, code, alpha, copied_b, pad_b, pad_a,
                     full_cols, 0, panels, tile)


@njit(cache=True, error_model="numpy", inline="always")
def prepare_direct(a, b, trans_a, trans_b, out, scratch):
    """The copies of a direct product, in scratch (direct_scratch_size's first part): op(b)
    row-major when it is b.T, op(b)'s last partial micro-panel and op(a)'s last partial
    micro-panel zero-padded when there is no full panel beside them (padded). Returns
    (views of those three: copied_b, pad_b, pad_a; the columns in full micro-panels; the
    micro-panels). Views without a reference (views.span_of): no atomic count updates per
    call."""
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    width = tile_width(out)
    copied_b = span_of(scratch, 0, inner * cols)
    pad_b = span_of(scratch, inner * cols, inner * width)
    pad_a = span_of(scratch, inner * (cols + width), inner * MR)
    if padded(rows, MR):  # the last rows of op(a), zero-padded to MR: pad_a[p * MR + r]
        pad_edge(a, trans_a, rows - rows % MR, rows, inner, MR, pad_a)
    if trans_b:  # op(b) = b.T, row-major (inner, cols)
        transpose_into(b, copied_b)
    full_cols = cols - cols % width
    if padded(cols, width):  # the last columns, zero-padded to NR: pad_b[p * NR + c]
        pad_edge(b, not trans_b, full_cols, cols, inner, width, pad_b)
    return copied_b, pad_b, pad_a, full_cols, (cols + width - 1) // width


@njit(cache=True, error_model="numpy", inline="always")
def direct_panel_run(a, b, trans_a, trans_b, out, bias, code, alpha, copied_b, pad_b, pad_a,
                     full_cols, first, stop, tile):
    """Micro-panels first..stop of a direct product prepared by prepare_direct, in order."""
    cols = out.shape[1]
    width = tile_width(out)
    for panel in range(first, stop):
        j0 = panel * width
        last = cols - width  # when j0 >= full_cols: the last NR columns, read in place
        if j0 >= full_cols and padded(cols, width):  # fewer than NR columns: zero-padded
            direct_panel(a, trans_a, pad_a, pad_b, 0, width, out, full_cols, cols - full_cols,
                         bias, code, alpha, tile, 0)
        elif j0 >= full_cols and trans_b:
            direct_panel(a, trans_a, pad_a, copied_b, last, cols, out, full_cols,
                         cols - full_cols, bias, code, alpha, tile, full_cols - last)
        elif j0 >= full_cols:
            direct_panel(a, trans_a, pad_a, b, last, cols, out, full_cols, cols - full_cols,
                         bias, code, alpha, tile, full_cols - last)
        elif trans_b:
            direct_panel(a, trans_a, pad_a, copied_b, j0, cols, out, j0, width, bias, code,
                         alpha, tile, 0)
        else:
            direct_panel(a, trans_a, pad_a, b, j0, cols, out, j0, width, bias, code, alpha,
                         tile, 0)


@njit(cache=True, error_model="numpy", inline="always")
def direct_fits(rows, inner, like):
    """Whether gemm_blocked_into runs an (rows, cols, inner) product as direct micro-panels
    shared by the threads (op(a) within DIRECT_A_BYTES) rather than packed blocks."""
    return rows * inner * like.itemsize <= DIRECT_A_BYTES and inner > 0


@njit(cache=True, error_model="numpy")
def direct_panels_scratch_sizes(rows, cols, inner, threads, like):
    """(tiles, copies) elements of gemm_blocked_into's scratch for a product that direct_fits:
    a tile per thread, and prepare_direct's copies."""
    width = tile_width(like)
    return threads * MR * width, inner * (cols + width + MR)


# -- packing ------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def pack_a(a, trans_a, row0, rows, inner0, depth, packed):
    """op(a)[row0:row0+rows, inner0:inner0+depth] into MR-tall micro-panels:
    packed[panel * MR * depth + p * MR + r]; rows past the end are zero.
    Loops run along a's rows either way: p inside for a, r inside for a.T."""
    for panel in range((rows + MR - 1) // MR):
        base = panel * MR * depth
        first = row0 + panel * MR
        valid = min(MR, rows - panel * MR)
        if trans_a:  # op(a)[i, p] = a[p, i]: MR adjacent elements of row p
            for p in range(depth):
                for r in range(valid):
                    packed[base + p * MR + r] = a[inner0 + p, first + r]
        else:
            for r in range(valid):
                for p in range(depth):
                    packed[base + p * MR + r] = a[first + r, inner0 + p]
        for p in range(depth):
            for r in range(valid, MR):
                packed[base + p * MR + r] = 0


@njit(cache=True, error_model="numpy")
def pack_b_panel(b, trans_b, inner0, depth, col0, cols, packed, panel):
    """Micro-panel ``panel`` of op(b)[inner0:inner0+depth, col0:col0+cols]:
    packed[panel * NR * depth + p * NR + c]; columns past the end are zero."""
    width = tile_width(packed)
    base = panel * width * depth
    first = panel * width
    valid = min(width, cols - first)
    if trans_b:  # op(b)[p, j] = b[j, p]: read each b row along p
        for c in range(valid):
            for p in range(depth):
                packed[base + p * width + c] = b[col0 + first + c, inner0 + p]
    else:
        for p in range(depth):
            for c in range(valid):
                packed[base + p * width + c] = b[inner0 + p, col0 + first + c]
    for p in range(depth):
        for c in range(valid, width):
            packed[base + p * width + c] = 0


# -- micro- and macro-kernel -----------------------------------------------------------

@njit(cache=True, error_model="numpy")
def macro_kernel(packed_a, rows, packed_b, depth, panel_first, panel_stop, cols, out, row0,
                 col0, accumulate, finish, bias, code, alpha, tile):
    """out[row0:row0+rows, block columns of micro-panels panel_first..panel_stop] +=
    (or =, unless accumulate) packed_a @ packed_b, then the epilogue if finish.
    cols: columns of the packed panel (the last micro-panel may be partial)."""
    width = tile_width(tile)
    for panel in range(panel_first, panel_stop):
        tile_cols = min(width, cols - panel * width)
        for row_panel in range((rows + MR - 1) // MR):
            a_start, b_start = row_panel * MR * depth, panel * width * depth
            j = col0 + panel * width
            tile_rows = min(MR, rows - row_panel * MR)
            i0 = row0 + row_panel * MR
            if tile_rows == MR and tile_cols == width:  # straight into out
                tile_product(packed_a, a_start, packed_b, b_start, depth, out,
                             i0 * out.shape[1] + j, out.shape[1], accumulate)
            else:  # an edge: through the scratch tile, then the valid part
                tile_product(packed_a, a_start, packed_b, b_start, depth, tile, 0, width,
                             False)
                for r in range(tile_rows):
                    for c in range(tile_cols):
                        previous = out[i0 + r, j + c] if accumulate else 0
                        out[i0 + r, j + c] = previous + tile[r * width + c]
            if finish:
                bias_activate(out, i0, i0 + tile_rows, j, j + tile_cols, bias, code, alpha)


# -- driver ------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def blocked_layout(rows, cols, inner, threads, width):
    """How gemm_blocked splits an (rows, cols, inner) product on ``threads`` threads with
    micro-tiles ``width`` wide: (slices of K, their largest depth, rows per task's block,
    column groups, tasks, columns per packed panel of b, elements per packed panel)."""
    # Balanced slices of the inner dimension, at most KC each.
    slices = (inner + KC - 1) // KC
    depth_max = (inner + slices - 1) // slices
    # Row blocks first; if there are fewer than threads, split the columns too.
    row_blocks = max((rows + MC - 1) // MC, min(threads, (rows + MR - 1) // MR))
    block_rows = ((rows + row_blocks - 1) // row_blocks + MR - 1) // MR * MR
    row_blocks = (rows + block_rows - 1) // block_rows
    col_groups = max(1, min((threads + row_blocks - 1) // row_blocks,
                            (cols + width - 1) // width))
    tasks = row_blocks * col_groups
    # Columns per panel: all of op(b)'s slices for them fit in PACKED_B_ELEMENTS.
    panel_cols_max = min(cols, max(width, PACKED_B_ELEMENTS // inner // width * width))
    panel_size = ((panel_cols_max + width - 1) // width) * width * depth_max
    return slices, depth_max, block_rows, col_groups, tasks, panel_cols_max, panel_size


@njit(cache=True, error_model="numpy")
def blocked_scratch_sizes(rows, cols, inner, threads, like):
    """Elements of the three scratch arrays of gemm_blocked_into: packed a, tiles, packed b."""
    if direct_fits(rows, inner, like):
        tiles, rest = direct_panels_scratch_sizes(rows, cols, inner, threads, like)
        return 1, tiles, rest
    width = tile_width(like)
    slices, depth_max, block_rows, _, tasks, _, panel_size = blocked_layout(
        rows, cols, inner, threads, width)
    return tasks * block_rows * depth_max, tasks * MR * width, slices * panel_size


@njit(cache=True, error_model="numpy")
def gemm_blocked(a, b, trans_a, trans_b, out, bias, code, alpha, threads):
    """The product on ``threads`` threads (1 is fine: one launch of ~1 us), with scratch
    memory of its own (gemm_blocked_into takes it from the caller)."""
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    a_size, tile_size, b_size = blocked_scratch_sizes(rows, cols, inner, threads, out)
    gemm_blocked_into(a, b, trans_a, trans_b, out, bias, code, alpha, threads,
                      np.empty(a_size, out.dtype), np.empty(tile_size, out.dtype),
                      np.empty(b_size, out.dtype))


@njit(cache=True, error_model="numpy", parallel=True)
def gemm_blocked_into(a, b, trans_a, trans_b, out, bias, code, alpha, threads, a_scratch,
                      tile_scratch, b_scratch):
    """gemm_blocked with its scratch memory given: 1-D arrays of out's dtype of at least
    blocked_scratch_sizes elements.

    A product whose op(a) fits in L2 (direct_fits) runs gemm_tiles' micro-panels instead, a
    contiguous run of them per thread (tile_scratch holds a tile per thread, b_scratch
    prepare_direct's copies): the bits of gemm_direct.

    Otherwise two parallel regions per panel of columns, however deep the product: one packs
    every KC slice of the panel of op(b), the other runs the tasks, each looping over
    the slices itself. Every region ends in a barrier, and on a busy machine each
    barrier may wait for a descheduled thread, so fewer is better.
    """
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    width = tile_width(out)
    if direct_fits(rows, inner, out):
        mode = fp_enter()
        copied_b, pad_b, pad_a, full_cols, panels = prepare_direct(a, b, trans_a, trans_b, out,
                                                                   b_scratch)
        fp_leave(mode)
        tasks = min(threads, panels)
        region = region_enter()
        for task in prange(tasks):
            mode = task_enter()
            direct_panel_run(a, b, trans_a, trans_b, out, bias, code, alpha, copied_b, pad_b,
                             pad_a, full_cols, panels * task // tasks,
                             panels * (task + 1) // tasks,
                             span_of(tile_scratch, task * MR * width, MR * width))
            task_leave(mode)
        region_leave(region)
        return
    slices, depth_max, block_rows, col_groups, tasks, panel_cols_max, panel_size = \
        blocked_layout(rows, cols, inner, threads, width)
    packed_a = a_scratch[:tasks * block_rows * depth_max].reshape((tasks, block_rows * depth_max))
    tiles = tile_scratch[:tasks * MR * width].reshape((tasks, MR * width))
    packed_b = b_scratch[:slices * panel_size].reshape((slices, panel_size))
    for col0 in range(0, cols, panel_cols_max):
        panel_cols = min(panel_cols_max, cols - col0)
        micro_panels = (panel_cols + width - 1) // width
        region = region_enter()
        for job in prange(slices * micro_panels):
            mode = task_enter()
            s, panel = job // micro_panels, job % micro_panels
            inner0 = s * inner // slices
            depth = (s + 1) * inner // slices - inner0
            pack_b_panel(b, trans_b, inner0, depth, col0, panel_cols, packed_b[s], panel)
            task_leave(mode)
        region_leave(region)
        region = region_enter()
        for task in prange(tasks):
            mode = task_enter()
            block, group = task // col_groups, task % col_groups
            row0 = block * block_rows
            block_height = min(block_rows, rows - row0)
            for s in range(slices):
                inner0 = s * inner // slices
                depth = (s + 1) * inner // slices - inner0
                pack_a(a, trans_a, row0, block_height, inner0, depth, packed_a[task])
                macro_kernel(packed_a[task], block_height, packed_b[s], depth,
                             group * micro_panels // col_groups,
                             (group + 1) * micro_panels // col_groups, panel_cols, out,
                             row0, col0, s > 0, s == slices - 1, bias, code, alpha,
                             tiles[task])
            task_leave(mode)
        region_leave(region)
