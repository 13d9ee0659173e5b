"""The contract suite: every kernel on every available backend, both dtypes,
awkward shapes, against the float64 NumPy oracle.

A new backend is tested by registering it: the ``backend`` fixture runs each
test once per name in ``fastnn.available_backends()``.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.backends.contract import ACTIVATIONS

from conftest import assert_close, oracle

GEMM_SHAPES = [  # (N, K, M): op(a) is N x K, op(b) is K x M
    (1, 1, 1), (1, 17, 3), (3, 1, 17), (17, 3, 64), (64, 129, 17), (129, 64, 3),
    (1000, 17, 129), (3, 1000, 64), (129, 129, 1000), (64, 1000, 1),
    # big enough for two threads, so each of the C GEMM's paths runs with edge tiles, edge
    # panels and several K blocks: few rows (between one and two row blocks); many rows with
    # a narrow B (one panel and an edge one) and with a wide B (several column panels)
    (300, 800, 96), (600, 500, 100), (520, 300, 1100),
    # at the C GEMM's switches between paths (float32 / float64 block sizes differ): m at
    # GEMM_FEW_ROWS (504 / 280) and just past it, an output of exactly 64 Ki numbers, the shortest
    # K that is split, and too short a K to split
    (504, 70, 130), (505, 130, 64), (280, 120, 130), (256, 64, 256), (64, 63, 1024),
    # IN_PLACE with the threads on rows (at least as many rows as K, one to three column
    # panels, the last one an edge): a hidden layer at a large batch; the panel narrows with
    # the vector (AVX-512, AVX2, portable), so one shape per width
    (250, 64, 70), (270, 96, 40), (270, 200, 20), (270, 200, 12),
]
# The shapes of the GEMM sweep (fastnn.bench_sweep, issue 20) at sizes a test can afford: every
# path of gemm_plan.h (SMALL by rows and by columns, both of its loops; IN_PLACE; SPLIT_K; PACKED
# with the threads on rows and on columns, B rows 4 KB apart) with edge tiles and K tails.
SWEEP_GEMM_SHAPES = [(m, k, n) for m in (1, 8, 32, 128, 512) for k in (16, 256, 1024)
                     for n in (16, 256, 1024)]
SMALL_GEMM_SHAPES = [  # at most 8 rows or columns of C, K not a whole number of vectors
    (2, 17, 3), (3, 100, 70), (4, 1000, 33), (5, 33, 1000), (6, 2049, 40), (7, 1000, 600),
    (9, 300, 8), (600, 257, 1), (1000, 33, 5), (300, 1025, 7), (2000, 40, 2), (33, 3, 6),
    # B' packed into rows (K of one vector or less, 4+ rows, B transposed) and the
    # one-vector-wide chunks with the sums in registers, with ragged edges
    (5, 9, 37), (8, 16, 300), (4, 7, 1000), (6, 500, 13), (13, 500, 6), (1, 1000, 16),
    # 4-8 rows with B' in L2: the register tiles of two vectors, a last tile of one
    # vector and a part (21 float32 columns) or of whole vectors (48), and 8 x 256 x 256
    (4, 300, 21), (6, 257, 48), (8, 256, 256), (300, 77, 5),
]
# A C of at most 16 columns and 32 rows or more, K of 128 or more: with A transposed, float32
# computes C^T (gemm_plan.c's `narrow`), on one thread and split along K (from 2 MFLOP); with
# only B transposed, float32 takes the SMALL path's dot products over any rows (one thread) and
# float64 splits K (a C of one column panel); odd N below the 16 of a vector, K not a whole
# number of blocks or vectors, M not a whole number of panels.
NARROW_GEMM_SHAPES = [(32, 128, 16), (45, 300, 9), (64, 1000, 13), (100, 129, 16),
                      (33, 2049, 15), (504, 200, 16), (40, 4000, 10),
                      # past the few-rows paths: read in place on rows (C's edge tile too)
                      (1030, 300, 13), (700, 2049, 16)]
# The tenth session's C GEMM changes (issue 20): rows of A 4 KB apart (K of 512 float64, 1024
# float32) read in place as half tiles, with an edge tile and one vector or several panels;
# PACKED's threads taking row chunks (2100 and 1030 rows) of a narrow B, edge panels included.
CLIFF_GEMM_SHAPES = [(43, 512, 70), (100, 1024, 40), (2100, 100, 200), (1030, 257, 70)]
# The few-rows path's tiles of equal rows (gemm_impl.h's gemm_row_tiles): M of one tile of 9-14
# rows and of 2-8 tiles of 7-14 rows (3-6 rows for the AVX2 kernels), read in place with A
# transposed or not; one vector of columns (10) and a panel with an edge (40).
ROW_TILE_GEMM_SHAPES = [(m, 37, n) for m in (9, 13, 14, 15, 22, 28, 29, 32, 43, 64, 100)
                        for n in (10, 40)]
LINEAR_SHAPES = [(1, 1, 1), (1, 3, 17), (3, 17, 1), (17, 64, 129), (129, 1000, 64),
                 (1000, 129, 3), (64, 3, 1000),
                 # the GEMM paths of the sweep with the epilogue: SMALL (8 rows), PACKED with
                 # the threads on columns, PACKED on rows with a wide B
                 (8, 256, 1024), (32, 1024, 1024), (600, 300, 2000),
                 # the weight gradient x^T dz of 10 and 16 outputs as C^T (NARROW_GEMM_SHAPES),
                 # on one thread and split along K
                 (300, 40, 10), (2000, 64, 16),
                 # a tabular classifier's last layer (2 outputs), and 8 outputs: the numba
                 # backend's gemm_narrow in both of its loops (forward, weight gradient)
                 (32, 64, 2), (200, 9, 8),
                 # tiles of equal rows with the epilogue: the digits' MLP at batch 32, and 43
                 # rows (11 + 11 + 11 + 10) of one vector of columns
                 (32, 64, 128), (43, 37, 10),
                 # the tabular MLP's hidden layer at batch 256: forward and input gradient on
                 # IN_PLACE with the threads on rows
                 (256, 64, 64)]
ROW_SHAPES = [(1, 1), (1, 3), (3, 17), (17, 1), (64, 129), (129, 1000), (1000, 10)]
FLAT_SIZES = [1, 3, 17, 64, 129, 1000, 4099]


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test's own key, the same in every process."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


# -- all_finite ----------------------------------------------------------------

NON_FINITE_CASES = [(None, None)] + [(bad, where) for bad in (np.nan, np.inf, -np.inf)
                                      for where in ("first", "middle", "last")]


@pytest.mark.parametrize("size", [1, 17, 4099, (1 << 20) + 3], ids=str)
@pytest.mark.parametrize("bad,where", NON_FINITE_CASES, ids=str)
def test_all_finite(backend, dtype, size, bad, where):
    """Exactly np.isfinite(x).all(), for a single bad element anywhere (the largest size runs
    on two threads); huge finite values are finite."""
    rng = rng_for("all_finite", size)
    x = (rng.standard_normal(size) * 1e3).astype(dtype)
    if size > 1:
        x[size // 3], x[-1] = np.finfo(dtype).max, -np.finfo(dtype).max
    if bad is not None:
        x[{"first": 0, "middle": size // 2, "last": size - 1}[where]] = bad
    assert ops.all_finite(x.reshape(1, -1)) is bool(np.isfinite(x).all())


# -- take_rows -----------------------------------------------------------------

@pytest.mark.parametrize("row_shape", [(), (2,), (5,), (3, 4), (784,)], ids=str)
@pytest.mark.parametrize("source_dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("rows,batch", [(7, 3), (300, 1000), (5000, 4096)], ids=str)
def test_take_rows(backend, source_dtype, row_shape, rows, batch):
    """Every backend gathers exactly numpy's source[index], repeats included; the larger
    cases run on two threads; rows of 4, 8 and 16 bytes take C's fixed-size moves."""
    rng = rng_for("take_rows", source_dtype, row_shape, rows, batch)
    source = (rng.standard_normal((rows,) + row_shape) * 100).astype(source_dtype)
    index = rng.integers(0, rows, batch)
    index[:2] = rows - 1, 0  # both ends
    got = ops.take_rows(source, index)
    assert got.dtype == source.dtype and got.shape == (batch,) + row_shape
    np.testing.assert_array_equal(got, source[index])


# -- matmul ------------------------------------------------------------------

@pytest.mark.parametrize("shape", GEMM_SHAPES + SWEEP_GEMM_SHAPES + SMALL_GEMM_SHAPES +
                         NARROW_GEMM_SHAPES + CLIFF_GEMM_SHAPES + ROW_TILE_GEMM_SHAPES,
                         ids=str)
@pytest.mark.parametrize("trans_a", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["b", "bT"])
def test_matmul(backend, dtype, shape, trans_a, trans_b):
    n, k, m = shape
    rng = rng_for("matmul", shape, trans_a, trans_b)
    a = rng.standard_normal((k, n) if trans_a else (n, k)).astype(dtype)
    b = rng.standard_normal((m, k) if trans_b else (k, m)).astype(dtype)
    got = ops.matmul(a, b, trans_a=trans_a, trans_b=trans_b)
    expected = (a.astype(np.float64).T if trans_a else a.astype(np.float64)) @ \
        (b.astype(np.float64).T if trans_b else b.astype(np.float64))
    assert got.shape == (n, m)
    assert_close(got, expected, dtype, scale=np.sqrt(k) * 4)


def test_matmul_writes_into_out_and_reuses_it(backend, dtype):
    rng = rng_for("matmul-out")
    a, b = rng.standard_normal((33, 65)).astype(dtype), rng.standard_normal((65, 17)).astype(dtype)
    out = np.full((33, 17), np.nan, dtype=dtype)
    result = ops.matmul(a, b, out=out)
    assert result is out
    assert_close(out, a.astype(np.float64) @ b.astype(np.float64), dtype, scale=40)


@pytest.mark.parametrize("size", [4, 64, 300])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_into_an_out_that_overlaps_an_input(backend, dtype, size, trans_b):
    """The kernels never see an out that aliases an input (ops computes aside): out is a,
    b, or a view over part of b. Was silently wrong on c and numba from size 64."""
    rng = rng_for("matmul-overlap", size, trans_b)
    square = rng.standard_normal((size, size)).astype(dtype)
    wide = rng.standard_normal((size, 2 * size)).astype(dtype)

    def inside(w):  # a (size, size) C-contiguous view over the middle of w's memory
        start = size * size // 2
        return w.reshape(-1)[start:start + size * size].reshape(size, size)

    cases = {"out is a": lambda s, w: (s, s[::-1].copy(), s),
             "out is b": lambda s, w: (s[::-1].copy(), s, s),
             "out inside b": lambda s, w: (w.copy(), w.reshape(2 * size, size), inside(w))}
    for name, make in cases.items():
        a, b, out = make(square.copy(), wide.copy())
        if trans_b and b.shape[0] == b.shape[1]:
            expected = a.astype(np.float64) @ b.astype(np.float64).T
        elif trans_b:
            continue  # (2size, size) b transposed does not fit a (size, size)
        else:
            expected = a.astype(np.float64) @ b.astype(np.float64)
        result = ops.matmul(a, b, trans_b=trans_b, out=out)
        assert result is out, name
        assert_close(out, expected, dtype, scale=4 * np.sqrt(size))


def test_matmul_of_empty_inner_dimension_is_zero(backend, dtype):
    got = ops.matmul(np.ones((3, 0), dtype), np.ones((0, 4), dtype))
    assert got.shape == (3, 4) and not got.any()


def test_matmul_reads_views_correctly(backend, dtype):
    rng = rng_for("views")
    big = rng.standard_normal((40, 60)).astype(dtype)
    a = big[::2, 1:30]          # strided rows, offset columns
    b = big[5:34, ::3].T.T      # column-strided
    got = ops.matmul(a, b)
    assert_close(got, a.astype(np.float64) @ b.astype(np.float64), dtype, scale=30)


# -- linear layer --------------------------------------------------------------

def linear_operands(shape, dtype, key):
    n, k, m = shape
    rng = rng_for("linear", shape, key)
    x = rng.standard_normal((n, k)).astype(dtype)
    w = (rng.standard_normal((k, m)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_forward(backend, dtype, shape, activation):
    x, w, b = linear_operands(shape, dtype, activation)
    got = ops.linear_forward(x, w, b, activation, alpha=0.1)
    expected = oracle(ops.linear_forward, x, w, b, activation, alpha=0.1)
    assert_close(got, expected, dtype, scale=8)


def test_linear_forward_matches_formula():
    """The oracle itself against the formulas written out once more."""
    x, w, b = linear_operands((5, 7, 3), np.float64, "formula")
    z = x @ w + b
    formulas = {
        "identity": z, "relu": np.maximum(z, 0), "leaky_relu": np.where(z > 0, z, 0.1 * z),
        "sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z),
    }
    for activation, expected in formulas.items():
        got = oracle(ops.linear_forward, x, w, b, activation, alpha=0.1)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=activation)


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward(backend, dtype, shape, activation):
    x, w, b = linear_operands(shape, dtype, activation)
    y = oracle(ops.linear_forward, x, w, b, activation, alpha=0.1).astype(dtype)
    dy = rng_for("dy", shape).standard_normal(y.shape).astype(dtype)
    dx, dw, db = ops.linear_backward(x, w, y, dy, activation, alpha=0.1)
    ex, ew, eb = oracle(ops.linear_backward, x, w, y, dy, activation, alpha=0.1)
    n, k, m = shape
    assert_close(dx, ex, dtype, scale=4 * np.sqrt(m))
    assert_close(dw, ew, dtype, scale=4 * np.sqrt(n))
    assert_close(db, eb, dtype, scale=4 * np.sqrt(n))


def test_linear_backward_without_input_gradient(backend, dtype):
    x, w, b = linear_operands((17, 9, 5), dtype, "no-dx")
    y = ops.linear_forward(x, w, b, "tanh")
    dy = np.ones_like(y)
    dx, dw, db = ops.linear_backward(x, w, y, dy, "tanh", need_dx=False)
    assert dx is None
    _, ew, eb = oracle(ops.linear_backward, x, w, y, dy, "tanh")
    assert_close(dw, ew, dtype, scale=8)
    assert_close(db, eb, dtype, scale=8)


def test_linear_of_empty_batch_is_empty(backend, dtype):
    x, w, b = linear_operands((1, 4, 3), dtype, "empty")
    assert ops.linear_forward(x[:0], w, b, "relu").shape == (0, 3)


def test_sigmoid_of_minus_1000_is_zero_without_warning(backend, dtype):
    x = np.array([[-1000.0, 1000.0, 0.0]], dtype=dtype)
    identity = np.eye(3, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = ops.linear_forward(x, identity, np.zeros(3, dtype), "sigmoid")
    np.testing.assert_array_equal(y, np.array([[0.0, 1.0, 0.5]], dtype=dtype))


# -- softmax family -------------------------------------------------------------

def test_softmax_table_from_design_notes(backend):
    x = np.array([[1, 2, 0], [-1, 0, 1], [-10, 0, 10]], dtype=np.float64)
    table = np.array([[2.44728471e-01, 6.65240956e-01, 9.00305732e-02],
                      [9.00305732e-02, 2.44728471e-01, 6.65240956e-01],
                      [2.06106005e-09, 4.53978686e-05, 9.99954600e-01]])
    np.testing.assert_allclose(ops.softmax(x), table, rtol=0, atol=1e-8)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("magnitude", [1.0, 1e4])
def test_softmax_and_log_softmax(backend, dtype, shape, magnitude):
    x = (rng_for("softmax", shape).standard_normal(shape) * magnitude).astype(dtype)
    assert_close(ops.softmax(x), oracle(ops.softmax, x), dtype)
    log_probs = ops.log_softmax(x)
    assert np.isfinite(log_probs).all() or magnitude > 1  # -inf-free for moderate inputs
    assert_close(log_probs, oracle(ops.log_softmax, x), dtype, scale=magnitude)


def test_softmax_in_place(backend, dtype):
    x = rng_for("in-place").standard_normal((7, 5)).astype(dtype)
    expected = oracle(ops.softmax, x)
    assert ops.softmax(x, out=x) is x
    assert_close(x, expected, dtype)


def cross_entropy_by_hand(logits, target):
    """Independent float64 formula: -sum t * (z - logsumexp(z))."""
    z = logits.astype(np.float64)
    log_sum = np.logaddexp.reduce(z, axis=1, keepdims=True)
    log_probs = z - log_sum
    if target.ndim == 1:
        return -log_probs[np.arange(len(target)), target]
    return -(target * log_probs).sum(axis=1)


def cross_entropy_operands(shape, dtype, target_kind, magnitude=3.0):
    n, c = shape
    rng = rng_for("xent", shape, target_kind)
    logits = (rng.standard_normal(shape) * magnitude).astype(dtype)
    if target_kind == "labels":
        return logits, rng.integers(0, c, n)
    probs = rng.random(shape)
    return logits, (probs / probs.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES + [(65, 32000)], ids=str)
@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy(backend, dtype, shape, target_kind, reduction):
    logits, target = cross_entropy_operands(shape, dtype, target_kind)
    loss, grad = ops.softmax_cross_entropy(logits, target, reduction)
    expected_loss, expected_grad = oracle(ops.softmax_cross_entropy, logits, target, reduction)
    rows = cross_entropy_by_hand(logits, target)
    by_hand = {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]
    np.testing.assert_allclose(expected_loss, by_hand, rtol=1e-10, atol=1e-12)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
def test_softmax_cross_entropy_is_stable_at_1e4(backend, dtype, target_kind):
    logits, target = cross_entropy_operands((33, 7), dtype, target_kind, magnitude=1e4)
    loss, grad = ops.softmax_cross_entropy(logits, target, "none")
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, cross_entropy_by_hand(logits, target), rtol=1e-5)
    assert_close(grad, oracle(ops.softmax_cross_entropy, logits, target, "none")[1], dtype)


def test_softmax_cross_entropy_gradient_in_place_and_loss_only(backend, dtype):
    logits, labels = cross_entropy_operands((19, 11), dtype, "labels")
    expected_loss, expected_grad = oracle(ops.softmax_cross_entropy, logits, labels)
    loss_only, no_grad = ops.softmax_cross_entropy(logits, labels, compute_grad=False)
    assert no_grad is None
    loss, grad = ops.softmax_cross_entropy(logits, labels, grad=logits)
    assert grad is logits
    for value in (loss_only, loss):
        np.testing.assert_allclose(value, expected_loss, rtol=1e-5)
    assert_close(logits, expected_grad, dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse(backend, dtype, shape, reduction):
    rng = rng_for("mse", shape)
    pred, target = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    loss, grad = ops.mse(pred, target, reduction)
    diff = pred.astype(np.float64) - target
    scale = 1 / diff.size if reduction == "mean" else 1.0
    np.testing.assert_allclose(loss, scale * (diff ** 2).sum(), rtol=1e-5 if dtype == np.float32
                               else 1e-12)
    assert_close(grad, 2 * scale * diff, dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
def test_one_hot_and_accuracy(backend, dtype, shape):
    n, c = shape
    rng = rng_for("one-hot", shape)
    labels = rng.integers(0, c, n)
    rows = ops.one_hot(labels, c, dtype=dtype)
    np.testing.assert_array_equal(rows, np.eye(c, dtype=dtype)[labels])
    scores = rng.standard_normal(shape).astype(dtype)
    expected = np.mean(scores.argmax(axis=1) == labels)
    assert ops.accuracy(scores, labels) == expected
    assert ops.accuracy(scores, rows) == expected
    assert ops.accuracy(rows, labels) == 1.0


def test_accuracy_breaks_ties_like_argmax(backend, dtype):
    scores = np.array([[1, 1, 0], [0, 2, 2]], dtype=dtype)
    assert ops.accuracy(scores, np.array([0, 1])) == 1.0
    assert ops.accuracy(scores, np.array([1, 2])) == 0.0


# -- optimizer steps -------------------------------------------------------------

SGD_SETTINGS = [dict(momentum=0.0, nesterov=False, weight_decay=0.0),
                dict(momentum=0.9, nesterov=False, weight_decay=0.0),
                dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
                dict(momentum=0.0, nesterov=False, weight_decay=1e-2)]


@pytest.mark.parametrize("size", FLAT_SIZES)
@pytest.mark.parametrize("settings", SGD_SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_sgd_step(backend, dtype, size, settings):
    rng = rng_for("sgd", size)
    param = rng.standard_normal(size).astype(dtype)
    reference = param.astype(np.float64)
    velocity = np.zeros_like(param) if settings["momentum"] else None
    reference_velocity = np.zeros(size)
    for step in range(3):
        grad = rng.standard_normal(size).astype(dtype)
        ops.sgd_step(param, grad, velocity, lr=0.1, **settings)
        # PyTorch's SGD, written out.
        g = grad + settings["weight_decay"] * reference
        if settings["momentum"]:
            reference_velocity = settings["momentum"] * reference_velocity + g
            g = g + settings["momentum"] * reference_velocity if settings["nesterov"] \
                else reference_velocity
        reference = reference - 0.1 * g
    assert_close(param, reference, dtype)
    if velocity is not None:
        assert_close(velocity, reference_velocity, dtype, scale=10)


def test_sgd_step_on_matrices(backend, dtype):
    param = np.ones((3, 4), dtype)
    velocity = np.zeros_like(param)
    ops.sgd_step(param, np.full_like(param, 2), velocity, lr=0.5, momentum=0.5)
    assert_close(param, np.zeros((3, 4)), dtype)
    assert_close(velocity, np.full((3, 4), 2.0), dtype)


@pytest.mark.parametrize("size", FLAT_SIZES)
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_step(backend, dtype, size, weight_decay):
    rng = rng_for("adam", size)
    param = rng.standard_normal(size).astype(dtype)
    m, v = np.zeros_like(param), np.zeros_like(param)
    reference, rm, rv = param.astype(np.float64), np.zeros(size), np.zeros(size)
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    for step in range(1, 4):
        grad = rng.standard_normal(size).astype(dtype)
        ops.adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay)
        g = grad + weight_decay * reference
        rm = beta1 * rm + (1 - beta1) * g
        rv = beta2 * rv + (1 - beta2) * g * g
        reference = reference - lr * (rm / (1 - beta1 ** step)) / (
            np.sqrt(rv / (1 - beta2 ** step)) + eps)
    assert_close(param, reference, dtype, scale=10)
    assert_close(m, rm, dtype)
    assert_close(v, rv, dtype)


# -- batch normalization, activations, and the loss options --------------------------

BATCHNORM_SHAPES = [(1, 1), (1, 3), (3, 17), (17, 1), (64, 129), (129, 1000), (1000, 10),
                    (1024, 256)]


def batchnorm_operands(shape, dtype, key):
    rng = rng_for("batchnorm", shape, key)
    n, m = shape
    x = (rng.standard_normal(shape) * 3 + rng.standard_normal(m) * 10).astype(dtype)
    gamma, beta = (rng.standard_normal(m).astype(dtype) for _ in range(2))
    moving_mean = rng.standard_normal(m).astype(dtype)
    moving_var = (rng.random(m) + 0.5).astype(dtype)
    return x, gamma, beta, moving_mean, moving_var


@pytest.mark.parametrize("shape", BATCHNORM_SHAPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_batchnorm_forward_and_backward(backend, dtype, shape, activation, training):
    """Outputs, statistics, moving statistics and gradients against the float64 oracle."""
    x, gamma, beta, moving_mean, moving_var = batchnorm_operands(shape, dtype, activation)
    ref_mean, ref_var = moving_mean.astype(np.float64), moving_var.astype(np.float64)
    out, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, 0.9,
                                               1e-3, training, activation, alpha=0.1)
    with fastnn.use_backend("numpy"):  # not oracle(): it would update copies of ref_*
        expected = ops.batchnorm_forward(x.astype(np.float64), gamma.astype(np.float64),
                                         beta.astype(np.float64), ref_mean, ref_var, 0.9, 1e-3,
                                         training, activation, alpha=0.1)
    scale = 1 + np.abs(x).max()
    assert_close(out, expected[0], dtype, scale=scale * 4)
    assert_close(mean, expected[1], dtype, scale=scale)
    assert_close(inv_std, expected[2], dtype, scale=scale * 40)
    assert_close(moving_mean, ref_mean, dtype, scale=scale)
    assert_close(moving_var, ref_var, dtype, scale=scale * scale)
    dy = rng_for("batchnorm-dy", shape).standard_normal(shape).astype(dtype)
    y = expected[0].astype(dtype)
    got = ops.batchnorm_backward(x, y, dy, gamma, mean, inv_std, training, activation, 0.1)
    want = oracle(ops.batchnorm_backward, x, y, dy, gamma, mean, inv_std, training,
                  activation, 0.1)
    n = shape[0]
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        assert_close(g, w, dtype, scale=40 * np.sqrt(n) * (1 + np.abs(w).max()))
    dx, dgamma, dbeta = ops.batchnorm_backward(x, y, dy, gamma, mean, inv_std, training,
                                               activation, 0.1, need_dx=False)
    assert dx is None
    assert_close(dgamma, want[1], dtype, scale=40 * np.sqrt(n) * (1 + np.abs(want[1]).max()))


def test_batchnorm_oracle_matches_formula():
    """The oracle itself against Keras' formulas, written out once more."""
    x, gamma, beta, moving_mean, moving_var = batchnorm_operands((9, 4), np.float64, "formula")
    mean, var = x.mean(axis=0), x.var(axis=0)  # numpy's var is the biased one
    new_mean, new_var = 0.9 * moving_mean + 0.1 * mean, 0.9 * moving_var + 0.1 * var
    with fastnn.use_backend("numpy"):
        out, _, inv_std = ops.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, 0.9,
                                                1e-3, True, "relu")
    np.testing.assert_allclose(out, np.maximum(gamma * (x - mean) / np.sqrt(var + 1e-3) + beta,
                                               0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moving_mean, new_mean, rtol=1e-12)
    np.testing.assert_allclose(moving_var, new_var, rtol=1e-12)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(var + 1e-3), rtol=1e-12)


@pytest.mark.parametrize("size", FLAT_SIZES + [1 << 17])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_forward_and_backward(backend, dtype, size, activation):
    rng = rng_for("activation", size, activation)
    x = (rng.standard_normal(size) * 4).astype(dtype).reshape(1, -1)
    y = ops.activation_forward(x, activation, alpha=0.1)
    assert_close(y, oracle(ops.activation_forward, x, activation, alpha=0.1), dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y64 = y.astype(np.float64)
    assert_close(ops.activation_backward(y, dy, activation, alpha=0.1),
                 oracle(ops.activation_backward, y64, dy, activation, alpha=0.1), dtype)


XENT_OPTIONS = [dict(), dict(label_smoothing=0.1), dict(ignore_index=2),
                dict(label_smoothing=0.3, ignore_index=-100), dict(sample_weight=True),
                dict(label_smoothing=1.0, sample_weight=True, ignore_index=0)]


@pytest.mark.parametrize("shape", ROW_SHAPES + [(65, 32000)], ids=str)
@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
@pytest.mark.parametrize("options", XENT_OPTIONS, ids=str)
def test_softmax_cross_entropy_options(backend, dtype, shape, target_kind, options):
    """Every option against the oracle (which tests/test_losses_options.py checks against
    PyTorch); "mean" also checks the count of the rows that are not ignored."""
    reduction = "mean"
    logits, target = cross_entropy_operands(shape, dtype, target_kind)
    options = dict(options)
    rng = rng_for("xent-options", shape)
    if options.get("sample_weight"):
        options["sample_weight"] = rng.random(shape[0]) * 2
    if "ignore_index" in options:
        if target_kind == "probabilities":
            return  # integer labels only: tests/test_losses_options.py checks the error
        target = target.copy()
        target[rng.random(shape[0]) < 0.3] = options["ignore_index"]
    loss, grad = ops.softmax_cross_entropy(logits, target, reduction, **options)
    expected_loss, expected_grad = oracle(ops.softmax_cross_entropy, logits, target, reduction,
                                          **options)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
@pytest.mark.parametrize("options", [dict(), dict(label_smoothing=0.2),
                                     dict(sample_weight=True)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_cross_entropy(backend, dtype, shape, options, reduction):
    rng = rng_for("sigmoid-xent", shape)
    logits = (rng.standard_normal(shape) * 5).astype(dtype)
    target = rng.random(shape).astype(dtype)
    options = dict(options)
    if options.get("sample_weight"):
        options["sample_weight"] = rng.random(shape[0]) * 2
    loss, grad = ops.sigmoid_cross_entropy(logits, target, reduction, **options)
    expected_loss, expected_grad = oracle(ops.sigmoid_cross_entropy, logits, target, reduction,
                                          **options)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
def test_mse_with_sample_weight(backend, dtype, shape):
    rng = rng_for("mse-weight", shape)
    pred, target = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    weights = rng.random(shape[0]) * 3
    loss, grad = ops.mse(pred, target, "mean", sample_weight=weights)
    diff = pred.astype(np.float64) - target
    np.testing.assert_allclose(loss, (weights[:, None] * diff ** 2).sum() / diff.size,
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(grad, 2 * weights[:, None] * diff / diff.size, dtype)
