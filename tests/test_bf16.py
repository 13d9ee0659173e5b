"""bfloat16 matmul precision (fastnn.precision) and the C extension's instruction sets.

The rounding is checked bit for bit against an independent definition (the nearest of the
two bfloat16 neighbours, in float64) and every backend against the reference; the GEMMs
against a float64 GEMM of the rounded operands, element by element within
2e-5 * sum_k |a_ik| |b_kj| (the float32 accumulation; never a relative tolerance alone).
Under FASTNN_ISA=amx (or the emulated AMX build of kernels/vector_paths.sh) the C GEMMs
here run on AMX tiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.backends import numpy_backend

from conftest import BACKENDS, at_offset

BOUND = 2e-5


def _bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def _independent_rounding(x):
    """Nearest bfloat16 of each float32 by comparing the two neighbours in float64; ties to
    the even one; NaN stays NaN (checked apart)."""
    u = _bits(x).astype(np.uint64)
    low = (u & 0xFFFF0000).astype(np.uint32)
    high = (low.astype(np.uint64) + 0x10000).astype(np.uint32)  # next bfloat16 away from 0
    value = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d_low = np.abs(value - low.view(np.float32).astype(np.float64))
        d_high = np.abs(high.view(np.float32).astype(np.float64) - value)
        # past the largest bfloat16 the upper neighbour is infinity: compare with 2^128
        top = (high & 0x7FFFFFFF) == 0x7F800000
        d_high = np.where(top, 2.0 ** 128 - np.abs(value), d_high)
    even_low = ((low >> 16) & 1) == 0
    pick_high = (d_high < d_low) | ((d_high == d_low) & ~even_low)
    return np.where(pick_high, high, low)


SPECIAL = np.array([
    0.0, -0.0, 1.0, -1.0, np.inf, -np.inf,
    1 + 2 ** -8,                # tie, even below: 1
    1 + 3 * 2 ** -8,            # tie, odd below: up
    -(1 + 2 ** -8), 1 + 2 ** -8 + 2 ** -23,  # just above a tie: up
    3.4028235e38, -3.4028235e38, 3.3961776e38,  # round up to infinity; the largest bfloat16
    1e-40, -1e-40, 2 ** -149, 2 ** -133, 3 * 2 ** -134, 1.1754942e-38,  # subnormals
    65504.0, 1e-8, 3.14159265,
], np.float32)


def test_rounding_reference_matches_an_independent_definition():
    rng = np.random.default_rng(0)
    finite = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    finite = finite[(finite & 0x7F800000) != 0x7F800000].view(np.float32)
    x = np.concatenate([SPECIAL, finite])
    got = ops.round_bfloat16(x) if fastnn.get_backend_name() == "numpy" else None
    out = np.empty_like(x)
    numpy_backend.round_bfloat16(x, out)
    np.testing.assert_array_equal(_bits(out), _independent_rounding(x))
    if got is not None:
        np.testing.assert_array_equal(_bits(got), _bits(out))
    # the named cases, spelled out
    named = {1 + 2 ** -8: 1.0, 1 + 3 * 2 ** -8: 1 + 2 ** -6, 3.4028235e38: np.inf,
             -3.4028235e38: -np.inf, 2 ** -149: 0.0, 3 * 2 ** -134: 2 ** -132}
    for value, expected in named.items():
        assert ops.round_bfloat16(np.array([value], np.float32))[0] == np.float32(expected)
    assert _bits(ops.round_bfloat16(np.array([-0.0], np.float32)))[0] == 0x80000000


def test_rounding_keeps_nan_a_nan():
    nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7F80FFFF,
                     0xFFFFFFFF], np.uint32).view(np.float32)
    out = ops.round_bfloat16(nans)
    assert np.isnan(out).all()
    np.testing.assert_array_equal(_bits(out) >> 31, _bits(nans) >> 31)  # sign kept


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_every_backend_rounds_bit_for_bit_as_the_reference(backend_name):
    rng = np.random.default_rng(1)
    x = np.concatenate([SPECIAL, rng.integers(0, 2 ** 32, 300_000, dtype=np.uint64)
                        .astype(np.uint32).view(np.float32)])
    x = x[:x.size // 7 * 7].reshape(-1, 7)[:, :5].copy()  # rows of a strided view, copied
    expected = np.empty_like(x)
    numpy_backend.round_bfloat16(x, expected)
    with fastnn.use_backend(backend_name):
        got = ops.round_bfloat16(x)
        in_place = x.copy()
        ops.round_bfloat16(in_place, out=in_place)
    np.testing.assert_array_equal(_bits(got), _bits(expected))
    np.testing.assert_array_equal(_bits(in_place), _bits(expected))


def _rounded64(x):
    return ops.round_bfloat16(np.ascontiguousarray(x, np.float32)).astype(np.float64)


def _check_within_bound(got, a, b):
    """got vs the float64 product of the rounded operands a (N, K), b (K, M)."""
    a64, b64 = _rounded64(a), _rounded64(b)
    expected = a64 @ b64
    bound = BOUND * (np.abs(a64) @ np.abs(b64)) + 1e-30
    excess = np.abs(got.astype(np.float64) - expected) - bound
    assert excess.max() <= 0, f"error exceeds the bound by {excess.max()}"


SHAPES = [(n, k, m) for k in (1, 3, 17, 31, 32, 33, 784) for n, m in ((1, 1), (16, 33), (31, 16))] \
    + [(17, 64, 47), (32, 32, 32), (33, 100, 15), (128, 784, 256), (47, 256, 10)]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_bfloat16_matmul_within_the_bound(backend_name, trans_a, trans_b):
    rng = np.random.default_rng(2)
    with fastnn.use_backend(backend_name):
        for n, k, m in SHAPES:
            a = rng.standard_normal((n, k)).astype(np.float32)
            b = rng.standard_normal((k, m)).astype(np.float32) * 3
            got = ops.matmul(a.T.copy() if trans_a else a, b.T.copy() if trans_b else b,
                             trans_a=trans_a, trans_b=trans_b, precision="bfloat16")
            _check_within_bound(got, a, b)


# Few rows (at most 128) and B not transposed, split by columns, with dot products: where K is
# a whole number of k-blocks of 32, or the rows of B are longer than 4 KB (N > 1024), B is
# packed (rounded) 32 column pairs and 2 k-blocks at a time and the sums are carried across
# the pieces (K of 1056: 33 blocks in 17 pieces; a last group short, a last pair of one column
# block, an epilogue); the others, with a last k-block short, take own groups of B's columns
# or B packed whole. On tiles, up to 256 rows, K past 1024 and many column pairs, B packed 16
# pairs and 8 k-blocks at a time: 200 x 2112 x 1100 (7 row pairs, the last one block; 66
# k-blocks in 9 pieces of 7 and 8).
FEW_ROWS = [(32, 1056, 1000), (100, 640, 90), (70, 320, 1000), (128, 2112, 520), (5, 704, 33),
            (32, 1030, 1000), (100, 600, 90), (128, 2100, 520), (32, 1056, 1030),
            (100, 640, 2050), (70, 600, 1100), (200, 2112, 1100)]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_few_rows_products_do_not_depend_on_the_split(backend_name):
    _products_do_not_depend_on_the_split(backend_name, FEW_ROWS, seed=9)


# Many rows, split by rows between the threads, A packed (float32 operands): each thread packs
# its next pair of row blocks beside the tile products of the one before (amx_gemm.c's
# pack_ahead), into two slots when B is one chunk (330 x 200 x 70: 21 row blocks, the last
# pair one block, K % 32 != 0), or during the first pass over B's chunks (480 x 4096 x 200:
# 256 KB pairs, chunks of 2 of B's 7 pairs).
BY_ROWS_PACKED_A = [(330, 200, 70), (480, 4096, 200), (1024, 784, 256)]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_products_of_a_packed_ahead_do_not_depend_on_the_split(backend_name):
    _products_do_not_depend_on_the_split(backend_name, BY_ROWS_PACKED_A, seed=10)


# Split by columns, a short K and many column pairs: B packed 8 pairs at a time, the next 8
# beside the blocks of the 8 before (amx_gemm.c's b_ahead), in two slots: 64 x 200 x 2100 (K %
# 32 != 0, a last pair of one column block, 33 pairs a thread), 256 x 256 x 4096.
BY_COLUMNS_B_AHEAD = [(64, 200, 2100), (256, 256, 4096)]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_products_of_b_packed_ahead_do_not_depend_on_the_split(backend_name):
    _products_do_not_depend_on_the_split(backend_name, BY_COLUMNS_B_AHEAD, seed=11)


# Paths of amx_gemm.c whose blocks' sums carry over parts of K (shapes, seed):
#  - blocks_in_pieces: split by rows with A transposed (x^T dz), 512 rows or more and K of 1024 or
#    more, K in pieces, A's and B's next piece packed beside the blocks of the one before: 528
#    x 1056 x 80 (33 k-blocks in 5 pieces of 6 and 7, an odd last row block and column block),
#    1024 x 2048 x 256;
#  - k_split_gemm: a small C (at most 64 blocks of 32 x 32) over a K of 4096 or more, K in two
#    halves, each on one thread, their sums added after, in every layout: 48 x 4100 x 40 (the
#    second half ends in part of a k-block, edge blocks), 32 x 4096 x 256.
PARTS_OF_K = {"blocks_in_pieces": ([(528, 1056, 80), (1024, 2048, 256)], 12),
              "k_split_gemm": ([(48, 4100, 40), (32, 4096, 256)], 13)}


@pytest.mark.parametrize("path", sorted(PARTS_OF_K))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_products_over_parts_of_k_do_not_depend_on_the_split(backend_name, path):
    shapes, seed = PARTS_OF_K[path]
    _products_do_not_depend_on_the_split(backend_name, shapes, seed)


def _products_do_not_depend_on_the_split(backend_name, shapes, seed):
    """Within the bound, the same bits on 1 and 2 threads, and, where the products are
    bfloat16 dot products (exact in float32, the two operands of each pair entering alike),
    x @ w equal bit for bit to (w' @ x')', whose many rows go through the other path (both
    operands packed whole): each sum adds the same products in the same order on both
    (on the numpy backend, OpenBLAS's order follows its kernel for each layout: there within
    float32 rounding). Where C has no bfloat16 instructions (FASTNN_ISA=portable or avx2) its
    bfloat16 GEMM is the float32 one on rounded copies, whose bits follow its thread split:
    there the bound, and agreement within float32 rounding."""
    rng = np.random.default_rng(seed)
    with fastnn.use_backend(backend_name):
        saved = fastnn.get_num_threads()[backend_name] if backend_name != "numpy" else None
        try:
            for n, k, m in shapes:
                x = rng.standard_normal((n, k)).astype(np.float32)
                w = rng.standard_normal((k, m)).astype(np.float32)
                bias = rng.standard_normal(m).astype(np.float32)
                outputs = []
                for threads in (1, 2):
                    if saved:
                        fastnn.set_num_threads(threads)
                    outputs.append((ops.matmul(x, w, precision="bfloat16"),
                                    ops.matmul(x.T.copy(), w, trans_a=True,
                                               precision="bfloat16"),
                                    ops.linear_forward(x, w, bias, "relu",
                                                       precision="bfloat16"),
                                    ops.matmul(w, x, trans_a=True, trans_b=True,
                                               precision="bfloat16")))
                product, product_tn, forward, transposed = outputs[0]
                _check_within_bound(product, x, w)
                if backend_name == "c" and _c_bf16_gemm() == "float32":
                    # no bfloat16 instructions (FASTNN_ISA=portable or avx2): the float32
                    # GEMM on rounded copies, whose sums' order follows its own paths and
                    # thread split (K split by threads): the bound, and the same results
                    for got in (product_tn, transposed.T, *outputs[1][:2]):
                        np.testing.assert_allclose(got, product, rtol=1e-5, atol=1e-4)
                    continue
                for one, two in zip(*outputs):
                    np.testing.assert_array_equal(_bits(two), _bits(one))
                if backend_name == "numpy":
                    # the numpy backend's GEMM is OpenBLAS's float32 one on rounded copies,
                    # whose order of summation follows its kernel for each layout (on this
                    # machine's build 5 x 704 x 33 with A transposed differs in the last bit
                    # of its edge column): agreement within float32 rounding
                    np.testing.assert_allclose(product_tn, product, rtol=1e-5, atol=1e-4)
                else:
                    np.testing.assert_array_equal(_bits(product_tn), _bits(product))
                np.testing.assert_array_equal(
                    _bits(forward), _bits(np.maximum(product + bias, 0)))
                if backend_name == "c":
                    np.testing.assert_array_equal(_bits(transposed.T), _bits(product))
        finally:
            if saved:
                fastnn.set_num_threads(saved)


@pytest.mark.parametrize("shape", [(70, 1056, 250), (97, 600, 70)])
def test_edge_blocks_give_the_bits_of_full_blocks(shape):
    """On bfloat16 instructions (AMX tiles, or AVX512-BF16 dot products), a full 32 x 32 block
    of C runs on 2 x 2 tiles (or 8 x 2 dot products), an edge block (rows or columns past the
    last multiple of 32) on fewer, and the few-rows dot products sum K in pieces: a row of A
    repeated in the edge rows, and a column of B in the edge columns, must give the same bits
    there, on 1 and 2 threads, A or B transposed (both splits of the threads: by rows, by
    columns). Each sum adds the same exact products in the same order on every path."""
    if _c_bf16_gemm() == "float32":
        pytest.skip("no bfloat16 instructions in this copy of the C kernels (FASTNN_ISA)")
    n, k, m = shape
    rng = np.random.default_rng(11)
    a = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal((k, m)).astype(np.float32)
    a[n - 1] = a[5]          # row n - 1 is in the edge row pair (n % 32 != 0)
    b[:, m - 2] = b[:, 7]    # column m - 2 likewise
    with fastnn.use_backend("c"):
        saved = fastnn.get_num_threads()["c"]
        try:
            for threads in (1, 2):
                fastnn.set_num_threads(threads)
                for trans_a, trans_b in ((0, 0), (1, 0), (0, 1)):
                    c = ops.matmul(a.T.copy() if trans_a else a, b.T.copy() if trans_b else b,
                                   trans_a=trans_a, trans_b=trans_b, precision="bfloat16")
                    full = m // 32 * 32
                    np.testing.assert_array_equal(_bits(c[n - 1, :full]), _bits(c[5, :full]))
                    full = n // 32 * 32
                    np.testing.assert_array_equal(_bits(c[:full, m - 2]), _bits(c[:full, 7]))
        finally:
            fastnn.set_num_threads(saved)


@pytest.mark.parametrize("k", [1, 16, 17, 47, 80])
def test_zero_columns_past_k_change_no_bit(k):
    """K is padded with zeros to whole k-blocks of 32 (kernels/amx_gemm.c); the dot products
    skip the pairs of the last k-block that are all padding. The same product with K padded
    by hand to a multiple of 32 (zeros in A's columns and B's rows) must give the same bits,
    the sign of zero included: products of about -1e-40 flush to -0 on bfloat16 instructions,
    and adding the padding's +0 products turns a -0 sum into +0 (as the tiles do). Few rows
    and many (the few-rows pieces and the packed blocks), A or B transposed, 1 and 2 threads."""
    if _c_bf16_gemm() == "float32":
        pytest.skip("no bfloat16 instructions in this copy of the C kernels (FASTNN_ISA)")
    rng = np.random.default_rng(13)
    padded_k = -(-k // 32) * 32
    with fastnn.use_backend("c"):
        saved = fastnn.get_num_threads()["c"]
        try:
            for n, m in ((8, 300), (300, 200)):
                a = np.zeros((n, padded_k), np.float32)
                b = np.zeros((padded_k, m), np.float32)
                a[:, :k] = rng.standard_normal((n, k))
                b[:k] = rng.standard_normal((k, m))
                a[: n // 2, :k] = 1e-20   # these rows' products: about -1e-40, flushed to -0
                b[:k, : m // 2] = -1e-20
                for threads in (1, 2):
                    fastnn.set_num_threads(threads)
                    for trans_a, trans_b in ((0, 0), (1, 0), (0, 1)):
                        def product(x, y):
                            return ops.matmul(x.T.copy() if trans_a else x,
                                              y.T.copy() if trans_b else y, trans_a=trans_a,
                                              trans_b=trans_b, precision="bfloat16")
                        short = product(np.ascontiguousarray(a[:, :k]),
                                        np.ascontiguousarray(b[:k]))
                        np.testing.assert_array_equal(_bits(short), _bits(product(a, b)))
                        assert (_bits(short[: n // 2, : m // 2]) == 0).all()  # +0, not -0
        finally:
            fastnn.set_num_threads(saved)


@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1)])
def test_a_large_c_on_cache_lines_gets_the_bits_of_one_off_them(trans_a, trans_b):
    """A float32 C of 2 MB or more whose rows start on cache lines is written by streaming
    stores (kernels/amx_gemm.c, STREAM_MIN_BYTES), 16 bytes off a line by regular ones: the
    same bits, on 1 and 2 threads, with an edge column block (1008 = 31 x 32 + 16), a NaN row,
    and through linear_forward's epilogue (bias, then ReLU)."""
    if _c_bf16_gemm() == "float32":
        pytest.skip("no bfloat16 instructions in this copy of the C kernels (FASTNN_ISA)")
    n, k, m = 600, 64, 1008  # C: 2.4 MB
    rng = np.random.default_rng(12)
    a = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal((k, m)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    a[n // 3, k // 2] = np.nan
    op_a, op_b = (a.T.copy() if trans_a else a), (b.T.copy() if trans_b else b)
    with fastnn.use_backend("c"):
        saved = fastnn.get_num_threads()["c"]
        try:
            for threads in (1, 2):
                fastnn.set_num_threads(threads)
                got = {}
                for offset in (0, 16):
                    out = at_offset(np.zeros((n, m), np.float32), offset)
                    assert ops.matmul(op_a, op_b, trans_a=trans_a, trans_b=trans_b, out=out,
                                      precision="bfloat16") is out
                    layer = at_offset(np.zeros((n, m), np.float32), offset)
                    if not (trans_a or trans_b):
                        ops.linear_forward(a, b, bias, "relu", out=layer, precision="bfloat16")
                    got[offset] = out, layer
                for aligned, off in zip(got[0], got[16]):
                    np.testing.assert_array_equal(_bits(aligned), _bits(off))
        finally:
            fastnn.set_num_threads(saved)
    product, layer = got[0]
    assert np.isnan(product[n // 3]).all()
    rows = np.arange(n) != n // 3
    _check_within_bound(product[rows], a[rows], b)
    if not (trans_a or trans_b):
        np.testing.assert_array_equal(_bits(layer[rows]),
                                      _bits(np.maximum(product[rows] + bias, 0)))


def _c_bf16_gemm():
    from fastnn.backends import c_backend
    return c_backend.BF16_GEMM


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bfloat16_is_not_float32(backend_name):
    """The bound is tight enough to tell the precisions apart: float32 products of the
    unrounded operands miss it."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 256)).astype(np.float32)
    b = rng.standard_normal((256, 32)).astype(np.float32)
    with fastnn.use_backend(backend_name):
        full = ops.matmul(a, b, precision="float32")
    with pytest.raises(AssertionError):
        _check_within_bound(full, a, b)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_bfloat16_linear_forward_and_backward(backend_name, activation):
    rng = np.random.default_rng(4)
    for n, k, m in ((33, 784, 47), (128, 256, 128), (5, 31, 10)):
        x = rng.standard_normal((n, k)).astype(np.float32)
        w = (rng.standard_normal((k, m)) * 0.1).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        dy = rng.standard_normal((n, m)).astype(np.float32)
        with fastnn.use_backend(backend_name):
            y = ops.linear_forward(x, w, b, activation, precision="bfloat16")
            dx, dw, db = ops.linear_backward(x, w, y, dy, activation, precision="bfloat16")
        z = _rounded64(x) @ _rounded64(w)
        bound = BOUND * (np.abs(_rounded64(x)) @ np.abs(_rounded64(w)))
        pre = z + b
        act = {"identity": lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}
        # the activation's slope is at most 1: the bound carries through it
        assert (np.abs(y - act[activation](pre)) <= bound + 1e-6 * np.abs(pre) + 1e-6).all()
        dz = dy * {"identity": np.ones_like(y), "relu": (y > 0).astype(np.float32),
                   "tanh": 1 - y * y}[activation]
        np.testing.assert_allclose(db, dz.astype(np.float64).sum(0), rtol=1e-5, atol=1e-4)
        _check_within_bound(dw, x.T, dz)
        _check_within_bound(dx, dz, w.T)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_nan_in_one_row_changes_only_that_row(backend_name):
    rng = np.random.default_rng(5)
    for k in (784, 33, 32):
        x = rng.standard_normal((64, k)).astype(np.float32)
        w = rng.standard_normal((k, 40)).astype(np.float32)
        b = np.zeros(40, np.float32)
        with fastnn.use_backend(backend_name):
            clean = ops.linear_forward(x, w, b, precision="bfloat16")
            x[17, k // 2] = np.nan
            dirty = ops.linear_forward(x, w, b, precision="bfloat16")
            dirty_t = ops.matmul(w, x, trans_a=True, trans_b=True, precision="bfloat16")
        assert np.isnan(dirty[17]).all()
        others = np.arange(64) != 17
        np.testing.assert_array_equal(dirty[others], clean[others])
        assert np.isnan(dirty_t[:, 17]).all() and not np.isnan(dirty_t[:, others]).any()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_eight_python_threads_give_the_serial_results(backend_name):
    rng = np.random.default_rng(6)
    cases = [(rng.standard_normal((n, 784)).astype(np.float32),
              rng.standard_normal((784, 256)).astype(np.float32)) for n in (8, 64, 128, 200)]
    with fastnn.use_backend(backend_name):
        serial = [ops.matmul(a, b, precision="bfloat16") for a, b in cases]
    results, errors = {}, []

    def run(t):
        try:
            with fastnn.use_backend(backend_name):
                for repeat in range(3):
                    for i, (a, b) in enumerate(cases):
                        results[t, repeat, i] = ops.matmul(a, b, precision="bfloat16")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8 * 3 * len(cases)
    for (_, _, i), got in results.items():
        np.testing.assert_array_equal(got, serial[i])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_subnormal_epilogues_flush_alike_on_every_thread(backend_name):
    """The bias and activation after a bfloat16 GEMM run in the kernels' floating-point mode
    on every thread of its team (flush-to-zero by default, fastnn.set_flush_denormal): a
    subnormal bias gives the same output on 2 threads as on 1, row by row."""
    rng = np.random.default_rng(8)
    x = np.zeros((256, 512), np.float32)
    x[:, 0] = rng.standard_normal(256).astype(np.float32)
    w = np.zeros((512, 256), np.float32)
    bias = np.full(256, 3e-39, np.float32)  # subnormal in float32
    outputs = []
    with fastnn.use_backend(backend_name):
        saved = fastnn.get_num_threads()[backend_name] if backend_name != "numpy" else None
        try:
            for threads in (1, 2):
                fastnn.set_num_threads(threads)
                outputs.append(ops.linear_forward(x, w, bias, "identity",
                                                  precision="bfloat16"))
        finally:
            if saved:
                fastnn.set_num_threads(saved)
    np.testing.assert_array_equal(outputs[1], outputs[0])
    if backend_name != "numpy":  # NumPy keeps IEEE subnormals; the compiled kernels flush
        assert not outputs[0].any()


# -- the API ---------------------------------------------------------------------------

def test_precision_setting_and_context():
    assert fastnn.get_matmul_precision() == "float32"
    with fastnn.matmul_precision("mixed_bfloat16"):
        assert fastnn.get_matmul_precision() == "bfloat16"
        with pytest.raises(RuntimeError):
            with fastnn.matmul_precision("float32"):
                assert fastnn.get_matmul_precision() == "float32"
                raise RuntimeError("restored on the way out")
        assert fastnn.get_matmul_precision() == "bfloat16"
    assert fastnn.get_matmul_precision() == "float32"
    fastnn.set_matmul_precision("bfloat16")
    try:
        assert fastnn.get_matmul_precision() == "bfloat16"
    finally:
        fastnn.set_matmul_precision("float32")
    for bad in ("half", "", None, 16):
        with pytest.raises(ValueError, match="precision"):
            fastnn.set_matmul_precision(bad)


def test_the_setting_reaches_ops_for_float32_only():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((20, 300)).astype(np.float32)
    b = rng.standard_normal((300, 9)).astype(np.float32)
    explicit = ops.matmul(a, b, precision="bfloat16")
    with fastnn.matmul_precision("bfloat16"):
        np.testing.assert_array_equal(ops.matmul(a, b), explicit)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        np.testing.assert_array_equal(ops.matmul(a64, b64), ops.matmul(a64, b64,
                                                                       precision="float32"))
    with pytest.raises(ValueError, match="precision: bfloat16 .* float64"):
        ops.matmul(a.astype(np.float64), b.astype(np.float64), precision="bfloat16")
    with pytest.raises(ValueError, match="precision"):
        ops.linear_forward(a, b, np.zeros(9, np.float32), precision="bf15")


def _digits_model(**kwargs):
    return fastnn.Sequential([fastnn.Dense(128, "relu", input_dim=64),
                              fastnn.Dense(10, "softmax")], seed=0, **kwargs)


def test_model_precision_saved_and_loaded(tmp_path):
    model = _digits_model(matmul_precision="bfloat16")
    model.compile(fastnn.SGD(0.1), "sparse_categorical_crossentropy")
    model.build()
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastnn.load_model(path)
    assert loaded.matmul_precision == "bfloat16"
    x = np.random.default_rng(8).random((50, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    keras = _digits_model(dtype="mixed_bfloat16")
    assert keras.dtype == np.float32 and keras.matmul_precision == "bfloat16"
    with pytest.raises(ValueError, match="matmul_precision: bfloat16 .* float64"):
        _digits_model(dtype="float64", matmul_precision="bfloat16")
    with pytest.raises(ValueError, match="matmul_precision"):
        _digits_model(matmul_precision="fp8")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_training_in_bfloat16_learns_the_digits(backend_name):
    x, y = fastnn.datasets.load_digits()
    x_train, x_test, y_train, y_test = fastnn.datasets.train_test_split(x, y, seed=0)
    with fastnn.use_backend(backend_name):
        model = _digits_model(matmul_precision="bfloat16")
        model.compile(fastnn.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
        model.fit(x_train, y_train, epochs=20, batch_size=32, seed=0, verbose=0)
        accuracy = float(np.mean(model.predict_classes(x_test) == y_test))
    assert accuracy >= 0.97


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bfloat16_weight_gradients_point_where_float32_ones_do(backend_name):
    """One batch of the MNIST-shaped 784-256-128-10 net at its initial (Glorot) weights, on
    128 of the digits scaled up to 28 x 28 pixels: each weight gradient's cosine similarity
    with float32's. (Measured 0.99963-0.99999 over four seeds.)"""
    rng = np.random.default_rng(9)
    images, classes = fastnn.datasets.load_digits(flatten=False)
    pick = rng.choice(len(images), 128, replace=False)
    scale = np.arange(28) * 8 // 28  # nearest pixel of the 8 x 8 image
    x = np.ascontiguousarray(images[pick][:, scale][:, :, scale].reshape(128, 784))
    labels = classes[pick].astype(np.int64)
    sizes = [784, 256, 128, 10]
    weights = [(rng.uniform(-1, 1, (k, m)) * np.sqrt(6 / (k + m))).astype(np.float32)
               for k, m in zip(sizes[:-1], sizes[1:])]
    biases = [np.zeros(m, np.float32) for m in sizes[1:]]

    def gradients(precision):
        activations = [x]
        for i, (w, b) in enumerate(zip(weights, biases)):
            act = "relu" if i < 2 else "identity"
            activations.append(ops.linear_forward(activations[-1], w, b, act,
                                                  precision=precision))
        _, dy = ops.softmax_cross_entropy(activations[-1], labels)
        grads = []
        for i in reversed(range(3)):
            act = "relu" if i < 2 else "identity"
            dx, dw, _ = ops.linear_backward(activations[i], weights[i], activations[i + 1], dy,
                                            act, need_dx=i > 0, precision=precision)
            grads.append(dw)
            dy = dx
        return grads

    with fastnn.use_backend(backend_name):
        full, half = gradients("float32"), gradients("bfloat16")
    for g32, g16 in zip(full, half):
        g32, g16 = g32.ravel().astype(np.float64), g16.ravel().astype(np.float64)
        assert g32 @ g16 / np.linalg.norm(g32) / np.linalg.norm(g16) > 0.999
        assert not np.array_equal(g32, g16)


# -- the instruction sets of the C extension -------------------------------------------

needs_c = pytest.mark.skipif("c" not in BACKENDS, reason="backend c is not under test here")


def _c_isa(env_value):
    env = dict(os.environ, FASTNN_ISA=env_value)
    return subprocess.run([sys.executable, "-c", "import fastnn.backends.c_backend as c; "
                           "print(c.ISA, c.SIMD); print(*c.isa_report(), sep='\\n')"],
                          env=env, capture_output=True, text=True, timeout=120)


@needs_c
def test_fastnn_isa_forces_a_lower_set_and_rejects_a_bad_one():
    from fastnn.backends import c_backend
    assert c_backend.ISAS == ("portable", "avx2", "avx512", "amx")
    run = _c_isa("portable")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "portable portable"
    # (a build of only the portable copy, e.g. by clang, has nothing higher to force it below)
    assert ("forced by FASTNN_ISA" in run.stdout) == (c_backend.lib.fastnn_isa_best() > 0)
    bad = _c_isa("avx1024")
    assert bad.returncode != 0 and "FASTNN_ISA" in bad.stderr and "avx1024" in bad.stderr
    unavailable = [isa for isa in c_backend.ISAS if c_backend.isa_unavailable(isa)]
    for isa in unavailable:
        run = _c_isa(isa)
        assert run.returncode != 0 and "FASTNN_ISA" in run.stderr


@needs_c
def test_isa_report_says_why_each_higher_set_is_off():
    from fastnn.backends import c_backend
    report = c_backend.isa_report()
    assert report[0].startswith(f"instruction set: {c_backend.ISA}")
    higher = c_backend.ISAS[c_backend.ISAS.index(c_backend.ISA) + 1:]
    for isa in higher:
        assert any(line.strip().startswith(f"not {isa}: ") for line in report)
    assert c_backend.isa_unavailable("portable") == ""


@needs_c
def test_isa_report_lists_the_copies_this_build_holds():
    """The report's "built for" names the compiled copies (not every name); a set not compiled in
    says so with what it needs and the compiler that built the extension."""
    from fastnn.backends import c_backend
    lib = c_backend.lib
    built = [isa for number, isa in enumerate(c_backend.ISAS) if lib.fastnn_isa_compiled(number)]
    assert built[0] == "portable" and c_backend.ISA in built
    assert c_backend.isa_report()[0].endswith("; built for " + ", ".join(built))
    assert lib.fastnn_isa_compiled(-1) == 0 and lib.fastnn_isa_compiled(len(c_backend.ISAS)) == 0
    for number, isa in enumerate(c_backend.ISAS):
        reason = c_backend.isa_unavailable(isa)
        if isa not in built:
            assert reason.startswith(("not compiled in (", "needs AVX2 first")), reason
            assert "built by" in reason or "left out by" in reason or "AVX2 first" in reason
        else:
            assert "not compiled in" not in reason, reason
