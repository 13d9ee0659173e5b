"""ops.matmul on bfloat16 operands (ml_dtypes.bfloat16 arrays): the product bfloat16 matmul
precision gives the same numbers as float32 arrays, bit for bit, on every backend (the C
backend's AMX and AVX512-BF16 kernels read the bfloat16 bits in place; the others widen them
to float32 first), and the argument checks of the public boundary."""

from __future__ import annotations

import ml_dtypes  # in the dev extra: fastnn itself reads bfloat16 arrays without it
import numpy as np
import pytest

import fastnn
from fastnn import ops

from conftest import BACKENDS, at_offset

# Edges of every kind: K not a multiple of 32 (a part k-block), rows and columns past the last
# 16 and 32, few rows (the dot products' pieces of K on AVX512-BF16), one row, one column; few
# rows of a long K and many columns (on AMX B packed a group of columns and a piece of K at a
# time, the sums carried across the pieces, a last group short).
# (272, 1056, 600) with A transposed: split by columns, K in pieces (amx_gemm.c's
# blocks_in_pieces over each thread's columns), an odd last row block. (200, 2112, 1100) with
# B transposed: on AMX, B packed 16 column pairs and 8 k-blocks at a time (columns_in_pieces,
# which a float32 B transposed does not take), 7 row pairs, the last one block. (320, 1024,
# 1000), A not transposed: read in place, split by columns, B packed a group of pairs at a time
SHAPES = [(1, 1, 1), (1, 784, 256), (16, 33, 31), (31, 32, 17), (33, 100, 15), (70, 1056, 250),
          (97, 600, 70), (128, 784, 256), (5, 2100, 40), (300, 64, 1100), (30, 2080, 520),
          (272, 1056, 600), (200, 2112, 1100), (320, 1024, 1000)]


def _bits(x):
    return np.ascontiguousarray(x).view(np.uint32)


def _half(x):
    return np.ascontiguousarray(x).view(np.uint16)


def _bfloat16(rounded: np.ndarray) -> np.ndarray:
    """float32 numbers that are bfloat16 numbers (ops.round_bfloat16's) as a bfloat16 array,
    from their bits (not through ml_dtypes' own conversion)."""
    return (rounded.view(np.uint32) >> 16).astype(np.uint16).view(ml_dtypes.bfloat16)


def _float32_operands(rng, shape, trans_a, trans_b):
    """float32 operands of op(a) (n x k) @ op(b) (k x m), not bfloat16 numbers, with some
    subnormals among them."""
    n, k, m = shape
    a = rng.standard_normal((k, n) if trans_a else (n, k)).astype(np.float32)
    b = (rng.standard_normal((m, k) if trans_b else (k, m)) * 3).astype(np.float32)
    a.flat[::7] *= 1e-39
    return a, b


def _operands(rng, shape, trans_a, trans_b):
    """_float32_operands rounded to bfloat16 numbers (still float32 arrays)."""
    a, b = _float32_operands(rng, shape, trans_a, trans_b)
    return ops.round_bfloat16(a), ops.round_bfloat16(b)


def _thread_counts(backend_name):
    """1 and 2 threads in turn on backend_name (once, None, on numpy, which has no thread
    count), its thread count restored after."""
    saved = fastnn.get_num_threads()[backend_name] if backend_name != "numpy" else None
    try:
        for threads in (1, 2) if saved else (None,):
            if saved:
                fastnn.set_num_threads(threads)
            yield threads
    finally:
        if saved:
            fastnn.set_num_threads(saved)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_bfloat16_operands_give_the_bits_of_float32_ones(backend_name, trans_a, trans_b):
    rng = np.random.default_rng(21)
    with fastnn.use_backend(backend_name):
        for _ in _thread_counts(backend_name):
            for shape in SHAPES:
                a, b = _operands(rng, shape, trans_a, trans_b)
                want = ops.matmul(a, b, trans_a, trans_b, precision="bfloat16")
                got = ops.matmul(_bfloat16(a), _bfloat16(b), trans_a, trans_b,
                                 out=np.empty(want.shape, np.float32))
                np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=str(shape))
                # by default a bfloat16 result: the float32 sums rounded
                got = ops.matmul(_bfloat16(a), _bfloat16(b), trans_a, trans_b)
                assert got.dtype.name == "bfloat16" and got.shape == want.shape
                np.testing.assert_array_equal(got.view(np.uint16),
                                              _bfloat16(ops.round_bfloat16(want))
                                              .view(np.uint16), err_msg=str(shape))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_views_out_nan_and_the_precision_setting(backend_name):
    """Transposed views are read through the other flag, sliced ones copied; out= is
    written, float32 or bfloat16; a NaN reaches only its row; the float32 setting does not
    apply to operands that are bfloat16 already."""
    rng = np.random.default_rng(22)
    a, b = _operands(rng, (70, 300, 90), 0, 0)
    ha, hb = _bfloat16(a), _bfloat16(b)
    with fastnn.use_backend(backend_name):
        want = _bfloat16(ops.round_bfloat16(ops.matmul(a, b, precision="bfloat16")))
        # (the same transpose on both sides: the float32 kernels' order of summation, which
        # FASTNN_ISA=portable or avx2 runs bfloat16 precision on, follows the transposes)
        bt, hbt = np.ascontiguousarray(b.T), np.ascontiguousarray(hb.T)
        np.testing.assert_array_equal(
            _bits(ops.matmul(ha, hbt.T, out=np.empty((70, 90), np.float32))),
            _bits(ops.matmul(a, bt.T, precision="bfloat16")))
        wide = np.repeat(ha, 2, axis=0)
        np.testing.assert_array_equal(_half(ops.matmul(wide[::2], hb)), _half(want))
        for out in (np.full((70, 90), 7.0, np.float32), np.ones((70, 90), ml_dtypes.bfloat16)):
            assert ops.matmul(ha, hb, out=out) is out
            np.testing.assert_array_equal(_half(out.astype(ml_dtypes.bfloat16)
                                                if out.dtype == np.float32 else out),
                                          _half(want))
        with fastnn.matmul_precision("float32"):
            np.testing.assert_array_equal(_half(ops.matmul(ha, hb, precision="float32")),
                                          _half(want))
        # an out that overlaps an operand: computed aside, float32 sums kept
        buffer = np.zeros(70 * 90 * 2 + 70 * 300, np.float32)
        shared_a = buffer[:70 * 300].view(ml_dtypes.bfloat16)[:70 * 300].reshape(70, 300)
        shared_a[...] = ha
        overlapping = buffer[:70 * 90].reshape(70, 90)
        ops.matmul(shared_a, hb, out=overlapping)
        np.testing.assert_array_equal(_bits(overlapping),
                                      _bits(ops.matmul(a, b, precision="bfloat16")))
        dirty = ha.copy()
        dirty[17, 150] = np.nan
        got = ops.matmul(dirty, hb)
        assert np.isnan(got[17].astype(np.float32)).all()
        others = np.arange(70) != 17
        np.testing.assert_array_equal(_half(got[others]), _half(want[others]))


def test_bad_bfloat16_calls_raise_naming_the_argument():
    h = np.ones((4, 5), ml_dtypes.bfloat16)
    f = np.ones((5, 3), np.float32)
    with pytest.raises(TypeError, match="b: expected dtype bfloat16 like a, got float32"):
        ops.matmul(h, f)
    with pytest.raises(TypeError, match="a: expected dtype bfloat16 like b, got float32"):
        ops.matmul(f.T, h.T)
    with pytest.raises(TypeError, match="b: expected dtype bfloat16 like a, got float64"):
        ops.matmul(h, f.astype(np.float64))
    with pytest.raises(ValueError, match="a: expected a 2-D array, got 1-D"):
        ops.matmul(h[0], h.T)
    with pytest.raises(ValueError, match="inner dimension 4 .* does not match 5"):
        ops.matmul(h, h)
    with pytest.raises(TypeError, match="out: expected dtype bfloat16 or float32 for "
                                        "bfloat16 operands, got float64"):
        ops.matmul(h, h.T, out=np.empty((4, 4), np.float64))
    with pytest.raises(ValueError, match="out: expected shape"):
        ops.matmul(h, h.T, out=np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match="out: expected shape"):
        ops.matmul(h, h.T, out=np.empty((5, 4), ml_dtypes.bfloat16))
    with pytest.raises(ValueError, match="precision"):
        ops.matmul(h, h.T, precision="float16")
    empty = ops.matmul(np.ones((3, 0), ml_dtypes.bfloat16), np.ones((0, 2), ml_dtypes.bfloat16))
    assert empty.dtype.name == "bfloat16"
    np.testing.assert_array_equal(empty.astype(np.float32), np.zeros((3, 2), np.float32))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_an_a_read_in_place_gives_the_bits_of_a_packed_one(backend_name):
    """On AMX a bfloat16 A not transposed, with whole k-blocks and row blocks (K % 32 == 0,
    M % 16 == 0) and rows on cache lines, is read by the tiles where it lies; 16 bytes off a
    line it is packed first. Both give the bits of float32 operands, split by rows or by
    columns (64 x 2048 x 1000: B packed in groups of columns and pieces of K; 320 x 1024 x
    1000: B packed a group of pairs at a time against A's 10 pairs, more than a chunk), an
    odd last row block, edge columns, and a NaN only in its row."""
    rng = np.random.default_rng(23)
    shapes = [(16, 32, 16), (48, 64, 40), (64, 1024, 96), (256, 256, 300), (1024, 128, 64),
              (32, 96, 1000), (96, 4096, 33), (64, 2048, 1000), (320, 1024, 1000)]
    with fastnn.use_backend(backend_name):
        for _ in _thread_counts(backend_name):
            for shape in shapes:
                a, b = _operands(rng, shape, 0, 0)
                a[shape[0] // 2, shape[1] // 3] = np.nan
                want = ops.matmul(a, b, precision="bfloat16")
                for offset in (0, 16):
                    ha = at_offset(_bfloat16(a), offset)
                    got = ops.matmul(ha, _bfloat16(b), out=np.empty(want.shape, np.float32))
                    np.testing.assert_array_equal(_bits(got), _bits(want),
                                                  err_msg=f"{shape} offset {offset}")
                assert np.isnan(want[shape[0] // 2]).all()
                # against float64 products of the same numbers: float32 sums of exact
                # products are off by at most K ulps of the sum of their magnitudes
                rows = np.arange(shape[0]) != shape[0] // 2
                a64, b64 = a[rows].astype(np.float64), b.astype(np.float64)
                bound = shape[1] * 2.0 ** -23 * (np.abs(a64) @ np.abs(b64))
                assert (np.abs(want[rows] - a64 @ b64) <= bound).all(), shape


@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_a_large_bfloat16_c_on_cache_lines_gets_the_bits_of_one_off_them(trans_a, trans_b):
    """A bfloat16 C of 2 MB or more whose rows start on cache lines is written by streaming
    stores on the dot products (kernels/amx_gemm.c, STREAM_MIN_BYTES, stream_bf16), 16 bytes
    off a line by regular ones: the same bits, on 1 and 2 threads, with a short K (16: the
    stores bound the time), an edge row block (1100 = 34 x 32 + 12) and a NaN row; the bits
    of float32 operands in bfloat16 precision, rounded to bfloat16. (Rows on lines need 32
    bfloat16 columns a line: M = 1056.)"""
    rng = np.random.default_rng(29)
    n, k, m = 1100, 16, 1056  # C: 2.3 MB of bfloat16
    a, b = _operands(rng, (n, k, m), trans_a, trans_b)
    a[(slice(None), n // 3) if trans_a else (n // 3, slice(None))] = np.nan
    want = ops.round_bfloat16(ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b,
                                         precision="bfloat16"))
    with fastnn.use_backend("c"):
        for _ in _thread_counts("c"):
            for offset in (0, 16):
                out = at_offset(np.zeros((n, m), ml_dtypes.bfloat16), offset)
                got = ops.matmul(_bfloat16(a), _bfloat16(b), trans_a=trans_a, trans_b=trans_b,
                                 out=out)
                assert got is out
                np.testing.assert_array_equal(_bits(got), _bits(_bfloat16(want)),
                                              err_msg=f"offset {offset}")
    assert np.isnan(want[n // 3]).all() and not np.isnan(np.delete(want, n // 3, 0)).any()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_fast_path_gives_the_general_paths_bits(backend_name):
    """Plain bfloat16 operands (C-contiguous, aligned, writable) skip ops.matmul's general
    checks; read-only copies of the same numbers take them: the same bits, bfloat16 or
    float32 out, and a bad precision name is still an error on the fast path."""
    rng = np.random.default_rng(24)
    with fastnn.use_backend(backend_name):
        for shape in ((1, 1, 1), (17, 64, 9), (64, 96, 33)):
            for trans_a, trans_b in ((0, 0), (1, 0), (0, 1)):
                a, b = (_bfloat16(x) for x in _operands(rng, shape, trans_a, trans_b))
                frozen_a, frozen_b = a.copy(), b.copy()
                frozen_a.flags.writeable = frozen_b.flags.writeable = False
                for dtype in (ml_dtypes.bfloat16, np.float32):
                    fast = ops.matmul(a, b, trans_a, trans_b,
                                      out=np.empty(shape[::2], dtype))
                    general = ops.matmul(frozen_a, frozen_b, trans_a, trans_b,
                                         out=np.empty(shape[::2], dtype))
                    np.testing.assert_array_equal(fast.view(np.uint8), general.view(np.uint8))
        with pytest.raises(ValueError, match="precision"):
            ops.matmul(a, b, 0, 1, precision="float8")
