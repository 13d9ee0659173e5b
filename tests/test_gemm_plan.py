"""The C GEMM's plan (kernels/gemm_plan.h): the contract's GEMM shapes reach every path, on one
thread and on several, and the shapes of issue 20 take the path meant for them."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn

c_backend = pytest.importorskip("fastnn.backends.c_backend")
from conftest import at_offset  # noqa: E402
from test_contract import (GEMM_SHAPES, NARROW_GEMM_SHAPES, SMALL_GEMM_SHAPES,  # noqa: E402
                           SWEEP_GEMM_SHAPES)

PATHS = {0: "SMALL", 1: "IN_PLACE", 2: "SPLIT_K", 3: "PACKED"}


def plan(n, k, m, trans_a=False, trans_b=False, dtype="float32"):
    """(path, threads, row_threads, col_threads) of op(a) (n x k) @ op(b) (k x m)."""
    ffi, lib = c_backend.ffi, c_backend.lib
    out = [ffi.new("int *") for _ in range(3)]
    path = getattr(lib, f"fastnn_gemm_plan_{'f32' if dtype == 'float32' else 'f64'}")(
        n, m, k, trans_a, trans_b, *out)
    return PATHS[path], out[0][0], out[1][0], out[2][0]


def panel_columns(dtype):
    """Columns of a panel of the C GEMM's micro-kernel (two vectors) in the kernels running now
    (AMX runs the AVX-512 float kernels)."""
    vector_bytes = {"avx512": 64, "amx": 64, "avx2": 32, "portable": 16}[c_backend.ISA]
    return 2 * vector_bytes // np.dtype(dtype).itemsize


def panel_rows():
    """Rows of a panel of the C GEMM's micro-kernel (kernels/instance.h's MR, both dtypes) in the
    kernels running now."""
    return {"avx512": 14, "amx": 14, "avx2": 6, "portable": 6}[c_backend.ISA]


@pytest.fixture
def two_threads():
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(2)
    yield
    c_backend.set_num_threads(saved)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_contract_shapes_reach_every_path_and_split(two_threads, dtype):
    seen = set()
    for n, k, m in GEMM_SHAPES + SWEEP_GEMM_SHAPES + SMALL_GEMM_SHAPES + NARROW_GEMM_SHAPES:
        for trans_a in (False, True):
            for trans_b in (False, True):
                path, threads, rows, cols = plan(n, k, m, trans_a, trans_b, dtype)
                seen.add((path, threads > 1))
                if path in ("PACKED", "IN_PLACE") and threads > 1:
                    seen.add((f"{path} on rows" if rows > 1 else f"{path} on columns", True))
    wanted = {(path, many) for path in PATHS.values() for many in (False, True)
              if path != "SPLIT_K" or many}  # a K split needs two threads
    wanted |= {("PACKED on rows", True), ("PACKED on columns", True),
               ("IN_PLACE on rows", True), ("IN_PLACE on columns", True)}
    assert wanted <= seen, sorted(wanted - seen)


def test_issue_20_shapes_take_their_paths(two_threads):
    # one sample (and up to 8): the SMALL path's threads by the bytes of B' alone, 256 KB a
    # thread: the 784 KB of a 784-256 layer's weights on two threads, each half in its core's
    # L2; half of that on one.
    # B' read by its rows: the threads split K (SMALL's row kernels), each a contiguous part
    assert plan(1, 784, 256)[:2] == ("SPLIT_K", 2)
    assert plan(1, 256, 784, trans_b=True)[:2] == ("SMALL", 2)  # its input gradient
    assert plan(256, 784, 1, trans_a=True)[:2] == ("SPLIT_K", 2)  # one output: C^T, one row
    assert plan(256, 784, 1)[:2] == ("SMALL", 2)  # the same by dot products: columns split
    assert plan(1, 392, 256)[:2] == ("SMALL", 1)
    assert plan(1, 512, 128, dtype="float64")[:2] == ("SPLIT_K", 2)
    assert plan(2, 784, 256)[:2] == ("SPLIT_K", 2)  # two rows: the bytes, not the 0.8 MFLOP
    assert plan(8, 256, 1024, trans_b=True)[:2] == ("SMALL", 2)  # 1 MB: columns split
    assert plan(1024, 256, 8)[:2] == ("SMALL", 2)  # C^T, 8 columns
    assert plan(8, 256, 256)[:2] == ("SMALL", 1)  # 256 KB
    assert plan(1, 2048, 2048)[:2] == ("SPLIT_K", 2)    # memory-bound: both threads stream
    assert plan(1, 32, 65536)[:2] == ("SMALL", 2)       # K too short for parts: columns
    assert plan(8, 64, 16384)[:2] == ("SMALL", 2)       # 8 rows of C' want 64 of K a part
    assert plan(8, 128, 8192)[:2] == ("SPLIT_K", 2)
    # a narrow C' (a few panels of columns: too few for the column split's threads) still
    # splits K by the bytes of B'
    assert plan(1, 4096, 64)[:2] == ("SPLIT_K", 2)
    assert plan(2, 8192, 48, trans_a=True)[:2] == ("SPLIT_K", 2)
    assert plan(4096, 64, 1, trans_a=True)[:2] == ("SPLIT_K", 2)  # C^T
    assert plan(1, 1024, 40)[:2] == ("SMALL", 1)  # 160 KB
    assert plan(1000, 129, 3)[0] == "SMALL"             # few columns: C^T
    assert plan(128, 2048, 4096) == ("PACKED", 2, 1, 2)  # wide B, few rows: split columns
    assert plan(128, 1024, 1024)[0] == "PACKED"         # B rows 4 KB apart: packed
    # ... but read in place where C has at most two panels of rows (each panel of B read by
    # at most two row tiles): a 16-feature layer of 2048 units at a batch of up to 28
    two_panels = 2 * panel_rows()
    for dtype in ("float32", "float64"):
        assert plan(two_panels, 16, 2048, dtype=dtype)[0] == "IN_PLACE"
        assert plan(two_panels + 1, 16, 2048, dtype=dtype)[0] == "PACKED"
        assert plan(two_panels, 64, 1024, dtype=dtype)[0] != "PACKED"
        assert plan(two_panels + 1, 64, 1024, dtype=dtype)[0] == "PACKED"
    assert plan(2048, 256, 16)[:3] == ("IN_PLACE", 2, 2)  # many rows, one panel: on rows
    # ... also on one thread, a C of one panel (wider than the SMALL path's 8 columns: both
    # dtypes with AVX-512, float32 with AVX2)
    for dtype in ("float32", "float64"):
        if panel_columns(dtype) > 8:
            # 1 MFLOP with C's writes counted (GEMM_C_WRITE_MACS: 1024 x 16 x 32 float32 with
            # AVX-512); twice the rows take both threads
            rows = 1024 * 128 // (panel_columns(dtype) * np.dtype(dtype).itemsize)
            assert plan(rows // 2, 16, panel_columns(dtype), dtype=dtype)[:3] == (
                "IN_PLACE", 1, 1)
            assert plan(rows, 16, panel_columns(dtype), dtype=dtype)[:3] == ("IN_PLACE", 2, 2)
    assert plan(128, 256, 256)[:2] == ("SPLIT_K", 2)    # a layer's forward pass
    # a hidden layer's weight gradient x^T dz (A transposed, no more columns than rows): the
    # threads split the rows, each packing its rows of A, not all of A as a column split would
    assert plan(256, 32, 128, trans_a=True) == ("PACKED", 2, 2, 1)
    assert plan(256, 128, 128, trans_a=True) == ("PACKED", 2, 2, 1)
    assert plan(256, 128, 512, trans_b=True)[:2] == ("IN_PLACE", 2)  # an input gradient
    # past the few rows with a short K (a tabular network's first layer at batch 512, where
    # writing C is most of the work): the threads split C's rows, each writing whole rows,
    # not a part of every row (gemm_plan.c's SHARED_ROWS_C_COST)
    for trans_a, trans_b in [(False, False), (False, True), (True, False), (True, True)]:
        assert plan(512, 16, 256, trans_a, trans_b) == ("PACKED", 2, 2, 1)
    assert plan(600, 32, 256) == ("PACKED", 2, 2, 1)
    assert plan(512, 16, 256, dtype="float64") == ("PACKED", 2, 2, 1)
    # ... but over a few rows, where a row split has each thread copy all of a wide B: columns
    assert plan(128, 64, 4096) == ("PACKED", 2, 1, 2)
    # ... and over a few rows too where K is at most 16 (outer products of a batch of 1-16):
    # rows (gemm_plan.c's SHARED_ROWS_ANY_M_K)
    assert plan(128, 1, 1024, trans_a=True) == ("PACKED", 2, 2, 1)
    assert plan(48, 4, 2048, trans_a=True) == ("PACKED", 2, 2, 1)
    assert plan(64, 4, 1024) == ("PACKED", 2, 2, 1)
    # C's writes count in the threads (GEMM_C_WRITE_MACS): 1 MFLOP with a K of 16 on two
    # threads (a 16-feature network's first layer at batch 128), 1 MFLOP with a K of 256 on one
    for trans_a, trans_b in [(False, False), (False, True), (True, False), (True, True)]:
        assert plan(128, 16, 256, trans_a, trans_b)[1] == 2
    assert plan(784, 1, 256, trans_a=True)[1] == 2  # a weight gradient at batch 1
    assert plan(32, 256, 64)[1] == 1
    # a hidden layer at a large batch (the tabular MLP at batch 256): forward pass and input
    # gradient with the threads on rows, B read whole by each, no K split's partial products
    nr = panel_columns("float32")  # 1.5 panels of columns
    assert plan(300, 300, 3 * nr // 2) == ("IN_PLACE", 2, 2, 1)
    assert plan(300, 300, 3 * nr // 2, trans_b=True) == ("IN_PLACE", 2, 2, 1)
    # A C of one panel of columns and a long K: split along K whatever the transposes (it can
    # be split neither by columns nor, without each thread packing all of B, by rows). A
    # panel is two vectors: 32 float32 / 16 float64 columns with AVX-512, 16 / 8 with AVX2,
    # 8 / 4 with the portable kernels; K grows as the panel narrows, to keep the flops. A C of
    # at most FASTNN_GEMM_SMALL (8) columns takes the SMALL path (C^T) first, or on two threads
    # (256 KB of B' a thread) that path's K split.
    def expected(columns, path):
        return "SMALL" if columns <= 8 else path

    nr32, nr64 = panel_columns("float32"), panel_columns("float64")
    for trans_a, trans_b in [(False, False), (True, False), (False, True)]:
        for got, columns in [(plan(32, 1024 * 16 // nr64, nr64, trans_a, trans_b, "float64"), nr64),
                             (plan(33, 2049 * 32 // nr32, nr32 - 1, trans_a, trans_b), nr32 - 1)]:
            assert got[0] == expected(columns, "SPLIT_K") or (columns <= 8 and
                                                               got[:2] == ("SPLIT_K", 2))
            assert got[0] == "SMALL" or got[1] == 2
    # ... and below 2 MFLOP (float32) on one thread a C of half a panel; with only B
    # transposed, dot products from a K of 4 panels' width
    half = nr32 // 2
    assert plan(32, 1024, half, trans_a=True)[:2] == (expected(half, "IN_PLACE"), 1)
    assert plan(32, 1024, half, trans_b=True)[:2] == ("SMALL", 1)
    assert plan(100, 4 * nr32 + 1, half, trans_b=True)[:2] == ("SMALL", 1)
    # A transposed, a C of at most half a panel (10 columns where that is 16 or more), any
    # rows: C^T, its tiles a panel wide, not PACKED's over a transposing copy of all of A
    if half >= 10:
        assert plan(512, 128, 10, trans_a=True)[:2] == ("IN_PLACE", 1)  # below 2 MFLOP
        assert plan(784, 128, 10, trans_a=True)[:2] == ("SPLIT_K", 2)  # MNIST's dW, batch 128
    # a short K keeps the tiles
    assert plan(32, 2 * nr32, half, trans_b=True)[0] == expected(half, "IN_PLACE")


def test_one_thread_plans_have_one_thread():
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(1)
    try:
        for shape in [(1, 2048, 2048), (128, 2048, 4096), (1024, 784, 256)]:
            assert plan(*shape)[1] == 1
    finally:
        c_backend.set_num_threads(saved)
    assert fastnn.get_num_threads()  # the registry still answers


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows,inner,cols", [(32, 32, 64), (64, 32, 64), (28, 5, 33),
                                             (64, 129, 40), (128, 32, 100), (129, 32, 64),
                                             (64, 64, 512), (32, 128, 300), (128, 256, 512),
                                             (96, 300, 256), (32, 256, 16), (100, 784, 10),
                                             (24, 2048, 32), (64, 1024, 64), (100, 300, 40),
                                             (256, 64, 10), (150, 256, 20), (512, 128, 10),
                                             (784, 128, 10)])
def test_a_transposed_with_short_rows_is_read_in_place_correctly(dtype, threads, rows, inner,
                                                                  cols):
    """op(a) = a.T (a weight gradient x^T dz) on the few-rows path, where A's rows are short
    enough to be read in place (GEMM_A_T_IN_PLACE_BYTES, 512 bytes: 128 float32 or 64
    float64, over at most 16 KB, or of any span at most 256 bytes apart or for a thread's one
    column panel: 32x256x16, 100x784x10, 64x1024x64, and rows 0.6-1 KB apart: 256x64x10,
    150x256x20; 512x128x10 and 784x128x10 as C^T) or just too long (129 float32, 128 and
    129 float64, or a longer span: 100x300x40 in float64), on one thread and, for the larger
    products (64x64x512, 32x128x300 in place in float32), with the threads splitting the
    columns; against float64 NumPy."""
    rng = np.random.default_rng(rows * 1000 + cols)
    a = rng.standard_normal((inner, rows)).astype(dtype)  # op(a) is rows x inner
    b = rng.standard_normal((inner, cols)).astype(dtype)
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    try:
        assert plan(rows, inner, cols, trans_a=True, dtype=dtype)[0] in ("IN_PLACE", "PACKED",
                                                                         "SPLIT_K")
        with fastnn.use_backend("c"):
            got = fastnn.ops.matmul(a, b, trans_a=True)
    finally:
        c_backend.set_num_threads(saved)
    want = a.astype(np.float64).T @ b.astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(inner))


def _product_and_layer(threads, x, w, bias, trans_b):
    """((ops.matmul(x, op(w)), ops.linear_forward(x, op(w), bias, "relu")), the plan of that
    product) on backend c with `threads` threads (the thread count restored after)."""
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    try:
        n, k = x.shape
        got = plan(n, k, w.shape[0] if trans_b else w.shape[1], False, trans_b, x.dtype.name)
        with fastnn.use_backend("c"):
            return (fastnn.ops.matmul(x, w, False, trans_b),
                    fastnn.ops.linear_forward(x, w.T if trans_b else w, bias, "relu")), got
    finally:
        c_backend.set_num_threads(saved)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("n,k", [(1030, 300), (700, 2049)])
def test_many_rows_of_half_a_panel_are_read_in_place_on_rows(threads, trans_b, n, k):
    """More rows than the few-rows paths take (504 float32) and a C of at most half a panel of
    columns (one vector, 16 float32 with AVX-512), A not transposed: IN_PLACE with the threads
    on rows, on one thread too (PACKED's tiles were half padding: 1024 x 2048 x 16 took 1.6-2.6x
    longer). Each element sums its K products in the same order whatever the rows around it,
    so the bits of one thread, with the epilogue (bias and relu) too; against float64 NumPy.
    With narrower panels (AVX2, portable) such a C is at most FASTNN_GEMM_SMALL (8) columns
    and takes the SMALL path (C^T)."""
    columns = panel_columns("float32") // 2
    rng = np.random.default_rng(n + k)
    x = rng.standard_normal((n, k)).astype(np.float32)
    w = rng.standard_normal((columns, k) if trans_b else (k, columns)).astype(np.float32)
    bias = rng.standard_normal(columns).astype(np.float32)
    results = {}
    for count in sorted({1, threads}):
        results[count], got = _product_and_layer(count, x, w, bias, trans_b)
        if columns <= 8:  # (its threads by the bytes of the big operand too)
            assert got[0] == "SMALL"
        else:
            assert got[:3] == ("IN_PLACE", count, count)
    for one, many in zip(results[1], results[threads]):
        assert one.tobytes() == many.tobytes()
    want = x.astype(np.float64) @ (w.T if trans_b else w).astype(np.float64)
    np.testing.assert_allclose(results[threads][0], want, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    np.testing.assert_allclose(results[threads][1], np.maximum(want + bias, 0), rtol=1e-5,
                               atol=1e-5 * np.sqrt(k))


#: PACKED on two threads with more chunks than threads (gemm_plan.h): the columns cut into B
#: blocks (600 x 700 x 1500), the rows into chunks of 256 rows or more (2100 x 100 x 200,
#: 1030 x 257 x 70), each with edge tiles, edge panels and (700) several K blocks
PACKED_CHUNK_SHAPES = [(600, 700, 1500), (2100, 100, 200), (1030, 257, 140)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_b", [False, True])
def test_rows_split_in_place_gives_the_bits_of_one_thread(dtype, trans_b):
    """IN_PLACE with the threads on rows: each thread's rows are cut into tiles of their own,
    yet every element sums its K products in the same order, so two threads give the bits of
    one, with the epilogue (bias and relu) too; against float64 NumPy as well."""
    rng = np.random.default_rng(8)
    # two or three column panels, the last an edge, and more than the SMALL path's 8; rows
    # within the few-rows paths' (504 float32, 280 float64) and at least K, and flops for two
    # threads with the narrowest (portable) panel
    n, k = (400, 256) if dtype == "float32" else (270, 270)
    m = max(panel_columns(dtype), 8) + 3
    x = rng.standard_normal((n, k)).astype(dtype)
    w = rng.standard_normal((m, k) if trans_b else (k, m)).astype(dtype)
    bias = rng.standard_normal(m).astype(dtype)
    results = {}
    for threads in (1, 2):
        results[threads], got = _product_and_layer(threads, x, w, bias, trans_b)
        if threads == 2:
            assert got[:3] == ("IN_PLACE", 2, 2)
    for one, two in zip(results[1], results[2]):
        assert one.tobytes() == two.tobytes()
    want = x.astype(np.float64) @ (w.T if trans_b else w).astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(results[2][0], want, rtol=tol, atol=tol * np.sqrt(k))
    np.testing.assert_allclose(results[2][1], np.maximum(want + bias, 0), rtol=tol,
                               atol=tol * np.sqrt(k))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_packed_chunks_give_the_bits_of_one_thread(dtype, trans_a, trans_b):
    """The threads of the PACKED path take chunks of C from a shared counter, so which thread
    computes which part of C changes from call to call: every element must still sum its K
    blocks in the same order, so two threads give the bits of one (and of the busy machine's
    one-thread fallback, which runs the product as one cell), against float64 NumPy too."""
    rng = np.random.default_rng(7)
    grids = set()
    saved = c_backend.get_num_threads()
    try:
        for n, k, m in PACKED_CHUNK_SHAPES:
            a = rng.standard_normal((k, n) if trans_a else (n, k)).astype(dtype)
            b = rng.standard_normal((m, k) if trans_b else (k, m)).astype(dtype)
            results = {}
            for threads in (1, 2):
                c_backend.set_num_threads(threads)
                path, used, rows, cols = plan(n, k, m, trans_a, trans_b, dtype)
                assert (path, used) == ("PACKED", threads)
                if threads == 2:
                    grids.add("rows" if rows > 1 else "columns")
                with fastnn.use_backend("c"):
                    results[threads] = fastnn.ops.matmul(a, b, trans_a, trans_b)
            assert results[1].tobytes() == results[2].tobytes(), (n, k, m)
            want = (a.T if trans_a else a).astype(np.float64) @ \
                (b.T if trans_b else b).astype(np.float64)
            tol = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(results[2], want, rtol=tol, atol=tol * np.sqrt(k))
    finally:
        c_backend.set_num_threads(saved)
    assert grids == {"rows", "columns"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows,inner,cols", [(32, 1024, 16), (128, 2048, 16), (100, 1024, 40),
                                             (43, 512, 70), (29, 4096, 9)])
def test_rows_of_a_4_kb_apart_read_in_halves_correctly(dtype, threads, rows, inner, cols):
    """A not transposed read in place on the few-rows paths with a row stride of a multiple of
    4 KB (K of 1024 float32, 512 float64 ...): with AVX-512's 14-row tiles each runs as two
    tiles of 7 rows (gemm_tile_halves), with an epilogue (linear_forward: bias, relu), full
    tiles and an edge tile (43, 29, 100 rows), one vector and wider panels; on one thread and
    split along K or by columns; against float64 NumPy."""
    # A B that fits half of this host's L2 (gemm_plan.h, rule 4: else the PACKED path, as on a
    # Zen 3 core's 512 KB for 43 x 512 x 70 float64), by the kernels' own fastnn_l2_bytes.
    itemsize = np.dtype(dtype).itemsize
    cols = min(cols, c_backend.lib.fastnn_l2_bytes() // 2 // (inner * itemsize))
    rng = np.random.default_rng(rows + inner + cols)
    x = rng.standard_normal((rows, inner)).astype(dtype)
    w = rng.standard_normal((inner, cols)).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    try:
        assert plan(rows, inner, cols, dtype=dtype)[0] in ("IN_PLACE", "SPLIT_K", "SMALL")
        with fastnn.use_backend("c"):
            product = fastnn.ops.matmul(x, w)
            layer = fastnn.ops.linear_forward(x, w, bias, "relu")
    finally:
        c_backend.set_num_threads(saved)
    want = x.astype(np.float64) @ w.astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(product, want, rtol=tol, atol=tol * np.sqrt(inner))
    np.testing.assert_allclose(layer, np.maximum(want + bias, 0), rtol=tol,
                               atol=tol * np.sqrt(inner))


SINGLE_ROW_CHUNK_SHAPES = [(1, 2048, 2050), (2, 1000, 4100), (3, 300, 3001), (2100, 700, 1),
                           (4099, 500, 2)]

SINGLE_ROW_CHUNK_CHECK = """
    import hashlib, numpy as np, fastnn
    from fastnn import ops
    fastnn.set_backend("c")
    fastnn.set_num_threads(2)
    digest = hashlib.sha256()
    for dtype in (np.float32, np.float64):
        for rows, inner, cols in {shapes!r}:
            for trans_a in (False, True):
                for trans_b in (False, True):
                    rng = np.random.default_rng(rows + inner + cols)
                    a = rng.standard_normal((inner, rows) if trans_a else (rows, inner))
                    b = rng.standard_normal((cols, inner) if trans_b else (inner, cols))
                    digest.update(ops.matmul(a.astype(dtype), b.astype(dtype), trans_a,
                                             trans_b).tobytes())
    print(digest.hexdigest())
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("rows,inner,cols", SINGLE_ROW_CHUNK_SHAPES)
def test_single_rows_in_chunks_are_computed_once_each(two_threads, dtype, trans_a, trans_b,
                                                      rows, inner, cols):
    """The SMALL path's threads take chunks of C's long side (up to 4 a thread, for 1-3 rows
    of C or, as C^T, columns), each its own first; where B' is read by its rows, parts of K
    instead (SPLIT_K on SMALL's row kernels, up to 4 a thread): every column and every part of
    K computed once, uneven last chunks, with an epilogue (linear_forward: bias, relu) where
    neither operand is transposed; the same bits from call to call whichever thread takes
    which chunk; against float64 NumPy."""
    rng = np.random.default_rng(rows + inner + cols)
    a = rng.standard_normal((inner, rows) if trans_a else (rows, inner)).astype(dtype)
    b = rng.standard_normal((cols, inner) if trans_b else (inner, cols)).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    by_rows = trans_a if cols < rows else not trans_b  # B' (op(A)^T for C^T) read by its rows
    want_path = "SPLIT_K" if by_rows else "SMALL"
    assert plan(rows, inner, cols, trans_a, trans_b, dtype)[:2] == (want_path, 2)
    with fastnn.use_backend("c"):
        calls = [fastnn.ops.matmul(a, b, trans_a, trans_b) for _ in range(3)]
        layer = fastnn.ops.linear_forward(a, b, bias, "relu") if not (trans_a or trans_b) \
            else None
    assert all(call.tobytes() == calls[0].tobytes() for call in calls)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(calls[0], want, rtol=tol, atol=tol * np.sqrt(inner))
    if layer is not None:
        np.testing.assert_allclose(layer, np.maximum(want + bias, 0), rtol=tol,
                                   atol=tol * np.sqrt(inner))


def small_split_k_parts(inner, b_bytes):
    """The parts of K of SMALL's row kernels on two threads (gemm_plan.c: one a thread where
    B' (b_bytes) fits in the two threads' L2, by the kernels' own fastnn_l2_bytes; else at least
    256 rows of B' a part, at most 4 a thread): part q is rows inner * q // parts up to the
    next."""
    l2 = c_backend.lib.fastnn_l2_bytes()
    parts = 2 if b_bytes <= 2 * l2 else 2 * min(4, max(1, inner // (256 * 2)))
    return [(inner * q // parts, inner * (q + 1) // parts) for q in range(parts)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,inner,cols,trans_a", [(1, 4096, 4100, False), (1, 784, 256, True),
                                                     (3, 300, 3001, False), (2100, 700, 1, True),
                                                     (1, 1500, 130, False), (1, 2048, 2050, True),
                                                     (1, 8192, 40, False), (2, 4096, 64, True)])
def test_small_split_k_adds_its_parts_in_order(two_threads, dtype, rows, inner, cols, trans_a):
    """A few rows of C' whose B' is read by its rows, on two threads: the threads split K
    (SPLIT_K on SMALL's row kernels), and C is the sum of the parts' products added in their
    order, each part's product the one a single thread computes for those rows of K: bit for
    bit (C^T for a C of one column), and so with linear_forward's bias and relu after the sum."""
    rng = np.random.default_rng(rows + inner + cols)
    a = rng.standard_normal((inner, rows) if trans_a else (rows, inner)).astype(dtype)
    b = rng.standard_normal((inner, cols)).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    assert plan(rows, inner, cols, trans_a, False, dtype)[:2] == ("SPLIT_K", 2)
    with fastnn.use_backend("c"):
        product = fastnn.ops.matmul(a, b, trans_a, False)
        layer = None if trans_a else fastnn.ops.linear_forward(a, b, bias, "relu")
        c_backend.set_num_threads(1)
        big = a if cols < rows else b  # B' (op(A)^T for C^T), read by its rows
        parts = [fastnn.ops.matmul(np.ascontiguousarray(a[k0:k1] if trans_a else a[:, k0:k1]),
                                   np.ascontiguousarray(b[k0:k1]), trans_a, False)
                 for k0, k1 in small_split_k_parts(inner, big.nbytes)]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    assert product.tobytes() == total.tobytes()
    if layer is not None:
        assert layer.tobytes() == np.maximum(total + bias, 0).astype(dtype).tobytes()
    want = (a.T if trans_a else a).astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(product, want, rtol=tol, atol=tol * np.sqrt(inner))


def test_single_rows_in_chunks_keep_their_bits_on_a_busy_machine():
    """The busy machine's one-thread fallback runs the SMALL path's chunks (or, B' read by its
    rows, SPLIT_K's parts of K) in turn, the same chunks as the two threads take: the same bits
    as on two threads, every transpose, both dtypes (a chunk's width picks its kernel for its
    last vector, and the parts of K fix the sums' order, so the fallback must not run other
    parts than the threads do)."""
    from test_engine import run_python
    code = SINGLE_ROW_CHUNK_CHECK.format(shapes=SINGLE_ROW_CHUNK_SHAPES)
    normal = run_python(code, FASTNN_ASSUME_CONTENDED="0")
    busy = run_python(code, FASTNN_ASSUME_CONTENDED="1")
    assert normal.returncode == 0 and busy.returncode == 0, normal.stderr + busy.stderr
    assert normal.stdout == busy.stdout


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_small_path_bits_do_not_depend_on_where_b_lies(dtype, threads):
    """The SMALL path reads B in place; where its rows all start as far past a cache line, its
    row kernel takes the columns up to the first line boundary in a vector of their own (kept
    apart from the others' sums). The same bits for B on a line and at every whole element past
    one, B in L2 and not, one or two long runs of a row, few columns (one vector and a part;
    up to four vectors of a B in L2, GEMM_SMALL_NARROW_IN_L2), the narrow last chunks, an
    epilogue; a NaN and an infinity in A stay in their rows; against float64 NumPy."""
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    rng = np.random.default_rng(31)
    itemsize = np.dtype(dtype).itemsize
    try:
        for rows, inner, cols in [(1, 256, 1024), (2, 1024, 256), (3, 500, 304), (1, 64, 1040),
                                  (1, 48, 20), (2, 100, 2053), (1, 1024, 16), (2, 300, 16),
                                  (1, 40, 4101), (3, 7, 2048), (1, 1024, 64), (2, 300, 50),
                                  (3, 200, 30), (1, 2048, 40)]:
            a = rng.standard_normal((rows, inner)).astype(dtype)
            if rows > 1:
                a[1, 3], a[rows - 1, inner - 1] = np.nan, np.inf
            b = rng.standard_normal((inner, cols)).astype(dtype)
            bias = rng.standard_normal(cols).astype(dtype)
            # (SPLIT_K: the threads' parts of K on SMALL's row kernels)
            assert plan(rows, inner, cols, dtype=dtype)[0] in ("SMALL", "SPLIT_K")
            with fastnn.use_backend("c"):
                results = [(fastnn.ops.matmul(a, placed), fastnn.ops.linear_forward(
                            a, placed, bias, "relu"))
                           for placed in (at_offset(b, offset)
                                          for offset in range(0, 64, itemsize))]
            for product, layer in results[1:]:
                assert product.tobytes() == results[0][0].tobytes(), (rows, inner, cols)
                assert layer.tobytes() == results[0][1].tobytes(), (rows, inner, cols)
            with np.errstate(invalid="ignore"):
                want = a.astype(np.float64) @ b.astype(np.float64)
            tol = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(results[0][0], want, rtol=tol, atol=tol * np.sqrt(inner))
            np.testing.assert_allclose(results[0][1], np.maximum(want + bias, 0), rtol=tol,
                                       atol=tol * np.sqrt(inner))
    finally:
        c_backend.set_num_threads(saved)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_small_path_columns_of_c_transposed_do_not_depend_on_where_a_lies(dtype):
    """A C of a column or a few is computed as C^T, whose row kernel reads op(A) in place (A
    transposed: op(A)^T's rows are A's; rows on whole cache lines or not) and writes C's columns
    a stride apart: the same bits for A on a line and at every whole element past one, against
    float64 NumPy."""
    rng = np.random.default_rng(32)
    for rows, inner, cols in [(512, 64, 1), (1024, 33, 2), (256, 203, 3), (300, 64, 1)]:
        a = rng.standard_normal((inner, rows)).astype(dtype)
        b = rng.standard_normal((inner, cols)).astype(dtype)
        assert plan(rows, inner, cols, True, False, dtype)[0] == "SMALL"
        with fastnn.use_backend("c"):
            results = [fastnn.ops.matmul(at_offset(a, offset), b, True, False)
                       for offset in range(0, 64, np.dtype(dtype).itemsize)]
        for product in results[1:]:
            assert product.tobytes() == results[0].tobytes(), (rows, inner, cols)
        want = a.T.astype(np.float64) @ b.astype(np.float64)
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(results[0], want, rtol=tol, atol=tol * np.sqrt(inner))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_single_row_of_dot_products_has_the_bits_of_a_row_among_two(dtype, threads):
    """One row of A' against a B' read by dot products (B transposed, so its columns are
    contiguous; or, for a C of one column computed as C^T, A not transposed) takes a vector's
    width of columns at a time, their sums across lanes done together (simd.h's hsums); a
    product of two rows takes four columns at a time, a sum across lanes each. The same
    products in the same order, sums of the same bits: the single row's C equals the first row
    of the two rows' C bit for bit, for K and N with and without tails, a NaN and an infinity
    in a column of B each. (In the portable copy, a * b + c is fused or not as GCC contracts
    it, which differed between the one-row and two-row dot products, as it did in the AVX2
    copy before its fma became FMA3's intrinsic: the bits are compared only where fma is one
    instruction, simd.h's FASTNN_SIMD_FUSED_FMA; the sums against NumPy everywhere.)"""
    fused_fma = c_backend.ISA in ("avx2", "avx512", "amx")
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    rng = np.random.default_rng(33)
    try:
        for inner, cols in [(16, 1024), (16, 4099), (3, 40), (40, 17), (100, 300), (64, 2048),
                            (1000, 33)]:
            a = rng.standard_normal((2, inner)).astype(dtype)
            b = rng.standard_normal((cols, inner)).astype(dtype)
            b[cols // 3, 0], b[cols // 2, inner - 1] = np.nan, np.inf  # a column each
            assert plan(1, inner, cols, False, True, dtype)[0] == "SMALL"
            with fastnn.use_backend("c"), np.errstate(invalid="ignore"):
                one = fastnn.ops.matmul(a[:1], b, False, True)
                two = fastnn.ops.matmul(a, b, False, True)
                # C of one column: C^T = op(B)^T op(A)^T, op(A)^T read by dot products
                column = fastnn.ops.matmul(b, a[:1], False, True)
                columns = fastnn.ops.matmul(b, a, False, True)
                want = a.astype(np.float64) @ b.T.astype(np.float64)
            if fused_fma:
                assert one.tobytes() == two[:1].tobytes(), (inner, cols)
                assert column.tobytes() == np.ascontiguousarray(columns[:, :1]).tobytes()
            tol = 1e-5 if dtype == "float32" else 1e-12
            for got in (one, two, column.T, columns.T):
                np.testing.assert_allclose(got, want[:len(got)], rtol=tol,
                                           atol=tol * np.sqrt(inner))
    finally:
        c_backend.set_num_threads(saved)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_few_columns_of_c_by_dot_products_in_lanes(dtype, threads):
    """A C of 1-8 columns with contiguous rows over a short K (x @ W of an output layer of a
    few classes) is computed as C^T by dot products; in float32 where fma is one instruction,
    the dots of VLEN consecutive numbers of C (its rows of N one after the other) are summed
    across lanes together and stored as one vector (small_dot_lanes). Against float64 NumPy,
    with rows past a multiple of the vector width, a NaN in one row of x reaching only that
    row, linear_forward's bias and relu; and (float32 on AVX-512) each column of C has the bits
    of the product by that column alone, however many columns there are. (AVX2's eight lanes
    send C's of 5-8 columns to small_columns, which sums in another order.)"""
    fused_fma = c_backend.ISA in ("avx512", "amx")
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    rng = np.random.default_rng(50)
    tol = 1e-5 if dtype == "float32" else 1e-12
    try:
        for rows, inner in [(1024, 32), (1003, 48), (37, 64), (16, 33), (259, 40)]:
            x = rng.standard_normal((rows, inner)).astype(dtype)
            w = rng.standard_normal((inner, 8)).astype(dtype)
            bias = rng.standard_normal(8).astype(dtype)
            x[rows // 3, inner - 1] = np.nan
            want = x.astype(np.float64) @ w.astype(np.float64)
            ok = np.arange(rows) != rows // 3
            alone = []
            with fastnn.use_backend("c"), np.errstate(invalid="ignore"):
                for j in range(8):
                    alone.append(fastnn.ops.matmul(x, np.ascontiguousarray(w[:, j:j + 1])))
                for cols in range(1, 9):
                    wc = np.ascontiguousarray(w[:, :cols])
                    assert plan(rows, inner, cols, False, False, dtype)[0] == "SMALL"
                    got = fastnn.ops.matmul(x, wc)
                    layer = fastnn.ops.linear_forward(x, wc, bias[:cols], "relu")
                    assert np.isnan(got).any(axis=1).tolist() == (~ok).tolist(), (rows, cols)
                    np.testing.assert_allclose(got[ok], want[ok, :cols], rtol=tol,
                                               atol=tol * np.sqrt(inner))
                    np.testing.assert_allclose(
                        layer[ok], np.maximum(want[ok, :cols] + bias[:cols], 0), rtol=tol,
                        atol=tol * np.sqrt(inner))
                    if fused_fma and dtype == "float32":
                        for j in range(cols):
                            assert got[:, j].tobytes() == alone[j][:, 0].tobytes(), (
                                rows, inner, cols, j)
    finally:
        c_backend.set_num_threads(saved)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_small_columns_of_c_in_vectors(dtype, threads):
    """A C of a few columns with contiguous rows (C^T: x @ W of an output layer of 2-8 classes,
    A transposed too) or a few rows against a transposed B, with a short K or rows that fill
    most of a vector, takes small_columns: each column of C' in one vector, its sums over K in
    order. Against float64 NumPy (with an epilogue: linear_forward's bias and relu), columns
    past a multiple of eight, a NaN in one row of A reaching only that row of C; and the bits
    of each row of C (a column of C') do not depend on how many rows there are or the threads."""
    lanes = panel_columns(dtype) // 2  # a vector's
    saved = c_backend.get_num_threads()
    c_backend.set_num_threads(threads)
    rng = np.random.default_rng(49)
    tol = 1e-5 if dtype == "float32" else 1e-12
    try:
        for rows, inner, cols in [(1024, 16, 8), (1003, 16, 8), (259, 32, 8), (1000, 17, 5),
                                  (777, 7, 3), (4100, 32, 8), (64, 40, 8)]:
            cols = min(cols, lanes)
            x = rng.standard_normal((rows, inner)).astype(dtype)
            w = rng.standard_normal((inner, cols)).astype(dtype)
            bias = rng.standard_normal(cols).astype(dtype)
            x[rows // 3, inner // 2] = np.nan
            want = x.astype(np.float64) @ w.astype(np.float64)
            assert plan(rows, inner, cols, False, False, dtype)[0] == "SMALL"
            with fastnn.use_backend("c"), np.errstate(invalid="ignore"):
                got = fastnn.ops.matmul(x, w)
                got_t = fastnn.ops.matmul(np.ascontiguousarray(x.T), w, True, False)
                layer = fastnn.ops.linear_forward(x, w, bias, "relu")
                part = fastnn.ops.matmul(x[: rows // 2 + 5], w)
            nan_row = np.isnan(got).any(axis=1)
            assert nan_row.tolist() == [r == rows // 3 for r in range(rows)], (rows, inner, cols)
            ok = ~nan_row
            for product in (got, got_t):
                np.testing.assert_allclose(product[ok], want[ok], rtol=tol,
                                           atol=tol * np.sqrt(inner))
            with np.errstate(invalid="ignore"):
                np.testing.assert_allclose(layer[ok], np.maximum(want[ok] + bias, 0), rtol=tol,
                                           atol=tol * np.sqrt(inner))
            assert part.tobytes() == got[: rows // 2 + 5].tobytes(), (rows, inner, cols)
        # a few rows against a transposed B: C' is C, stored a row each (where a vector has 8
        # lanes or fewer, blocks of eight columns transposed in registers; where it has more,
        # each vector of B''s rows transposed and the rows of C summed in vectors; 5 x 48 x 13:
        # float64's four lanes past a block of eight columns, K of three vectors; 6 x 16 x 1029:
        # a last block of five columns): a NaN in one row of A reaches only that row of C
        for rows, inner, cols in [(8, 16, 2048), (6, 16, 1029), (8, 32, 100), (5, 48, 13)]:
            rows = min(rows, lanes)
            a = rng.standard_normal((rows, inner)).astype(dtype)
            b = rng.standard_normal((cols, inner)).astype(dtype)
            a[rows // 2, inner - 1] = np.nan
            assert plan(rows, inner, cols, False, True, dtype)[0] == "SMALL"
            with fastnn.use_backend("c"), np.errstate(invalid="ignore"):
                got = fastnn.ops.matmul(a, b, False, True)
                want = a.astype(np.float64) @ b.T.astype(np.float64)
            assert np.isnan(got).all(axis=1).tolist() == [r == rows // 2 for r in range(rows)]
            ok = np.arange(rows) != rows // 2
            np.testing.assert_allclose(got[ok], want[ok], rtol=tol, atol=tol * np.sqrt(inner))
            # at K of one vector (4 to 8 rows all take small_columns), a row's bits do not
            # depend on how many rows there are, nor on A being transposed
            if rows >= 8 and inner == 16:
                with fastnn.use_backend("c"):
                    four = fastnn.ops.matmul(a[:4], b, False, True)
                    a_t = np.ascontiguousarray(a.T)
                    four_t = fastnn.ops.matmul(np.ascontiguousarray(a_t[:, :4]), b, True, True)
                    all_t = fastnn.ops.matmul(a_t, b, True, True)
                assert four.tobytes() == got[:4].tobytes(), (rows, inner, cols)
                assert four_t.tobytes() == four.tobytes() == all_t[:4].tobytes(), (
                    rows, inner, cols)
    finally:
        c_backend.set_num_threads(saved)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_packed_a_kept_across_b_blocks(dtype, trans_a, trans_b):
    """The PACKED path with A packed once for many B blocks (gemm_impl.h's GEMM_A_REUSE_BLOCKS:
    2600 columns are 3 or more B blocks on any L2 of 2 MB or less) and more rows than one block
    of A holds (GEMM_A_BLOCK_BYTES, 2 MB: 2000 rows of K blocks of 384 float32 or 256 float64),
    two or three K blocks, edge tiles and panels, A transposed in groups (pack_a_group_t), with
    an epilogue (linear_forward: bias, relu): against float64 NumPy, and the same bits on one
    thread and two."""
    n, k, m = 2000, 768, 2600
    rng = np.random.default_rng(7)
    a = rng.standard_normal((k, n) if trans_a else (n, k)).astype(dtype)
    b = rng.standard_normal((m, k) if trans_b else (k, m)).astype(dtype)
    bias = rng.standard_normal(m).astype(dtype)
    assert c_backend.lib.fastnn_l2_bytes() <= 2 * 1024 * 1024  # else fewer B blocks
    saved = c_backend.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            c_backend.set_num_threads(threads)
            assert plan(n, k, m, trans_a, trans_b, dtype=dtype)[0] == "PACKED"
            with fastnn.use_backend("c"):
                results[threads] = fastnn.ops.matmul(a, b, trans_a, trans_b)
                if not trans_a and not trans_b:
                    layer = fastnn.ops.linear_forward(a, b, bias, "relu")
    finally:
        c_backend.set_num_threads(saved)
    assert results[1].tobytes() == results[2].tobytes()
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(results[2], want, rtol=tol, atol=tol * np.sqrt(k))
    if not trans_a and not trans_b:
        np.testing.assert_allclose(layer, np.maximum(want + bias, 0), rtol=tol,
                                   atol=tol * np.sqrt(k))
