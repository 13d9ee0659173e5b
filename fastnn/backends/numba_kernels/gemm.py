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

Tiny products skip all that: :func:`gemm_rows` reads a and b directly.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import overload

from .epilogue import bias_activate
from .fpmode import fp_enter, fp_leave
from .simd import MR, TILE_BYTES, tile_product

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

@njit(cache=True, error_model="numpy")
def gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, start, stop, flush=True):
    """Rows start..stop of the product, straight from a and b (no packing); flush: the
    floating-point mode (fpmode.py)."""
    saved = fp_enter(flush)
    inner = b.shape[1] if trans_b else b.shape[0]
    cols = out.shape[1]
    for i in range(start, stop):
        if trans_b:  # out[i, j] = dot(op(a)[i], b[j]): b's rows are contiguous
            for j in range(cols):
                total = out.dtype.type(0)
                for p in range(inner):
                    total += (a[p, i] if trans_a else a[i, p]) * b[j, p]
                out[i, j] = total
        else:  # out[i] = sum_p op(a)[i, p] * b[p]: vectorized over the row
            out[i, :] = 0
            for p in range(inner):
                scale = a[p, i] if trans_a else a[i, p]
                for j in range(cols):
                    out[i, j] += scale * b[p, j]
        bias_activate(out, i, 0, cols, bias, code, alpha)
    fp_leave(saved)


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
                for r in range(tile_rows):
                    bias_activate(out, i0 + r, j, j + tile_cols, bias, code, alpha)


# -- driver ------------------------------------------------------------------------

@njit(cache=True, error_model="numpy", parallel=True)
def gemm_blocked(a, b, trans_a, trans_b, out, bias, code, alpha, threads, flush=True):
    """The product on ``threads`` threads (1 is fine: one launch of ~1 us); flush: the
    floating-point mode of every task (fpmode.py).

    Two parallel regions per panel of columns, however deep the product: one packs
    every KC slice of the panel of op(b), the other runs the tasks, each looping over
    the slices itself. Every region ends in a barrier, and on a busy machine each
    barrier may wait for a descheduled thread, so fewer is better.
    """
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    width = tile_width(out)
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
    packed_a = np.empty((tasks, block_rows * depth_max), dtype=out.dtype)
    tiles = np.empty((tasks, MR * width), dtype=out.dtype)
    # Columns per panel: all of op(b)'s slices for them fit in PACKED_B_ELEMENTS.
    panel_cols_max = min(cols, max(width, PACKED_B_ELEMENTS // inner // width * width))
    panel_size = ((panel_cols_max + width - 1) // width) * width * depth_max
    packed_b = np.empty((slices, panel_size), dtype=out.dtype)
    for col0 in range(0, cols, panel_cols_max):
        panel_cols = min(panel_cols_max, cols - col0)
        micro_panels = (panel_cols + width - 1) // width
        for job in prange(slices * micro_panels):
            s, panel = job // micro_panels, job % micro_panels
            inner0 = s * inner // slices
            depth = (s + 1) * inner // slices - inner0
            pack_b_panel(b, trans_b, inner0, depth, col0, panel_cols, packed_b[s], panel)
        for task in prange(tasks):
            saved = fp_enter(flush)
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
            fp_leave(saved)
