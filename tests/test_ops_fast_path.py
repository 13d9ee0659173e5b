"""The fast path of ops.matmul, linear_forward and linear_backward (fastnn/ops.py).

Plain arrays (C-contiguous, aligned, writable, one float dtype, no zero dimension) skip the
general checks; everything else must still take them. So: the two paths give the same bits,
and every input that only just misses the fast path (a read-only array, a non-native byte
order, an int alpha, an activation alias, a wrong output buffer) gets the general path's
answer or its error.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import ops


def _random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _read_only(array):
    """A copy the fast path refuses (not writable), with the same values: the general path."""
    copy = array.copy()
    copy.flags.writeable = False
    return copy


def _strided(array):
    """A strided view with the same values, which no fast path takes (backend c's C entry
    takes read-only arrays, so matmul's general path needs this)."""
    return np.repeat(array, 2, axis=-1)[..., ::2]


SHAPES = [(1, 3, 5), (4, 1, 7), (17, 33, 9), (64, 16, 1)]


@pytest.mark.parametrize("n,k,m", SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_fast_and_general_paths_agree(backend, dtype, n, k, m, trans_a, trans_b):
    a = _random((k, n) if trans_a else (n, k), dtype, 1)
    b = _random((m, k) if trans_b else (k, m), dtype, 2)
    fast = ops.matmul(a, b, trans_a, trans_b)
    general = ops.matmul(_strided(a), _strided(b), trans_a, trans_b)
    np.testing.assert_array_equal(fast, general)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    np.testing.assert_allclose(fast, expected, rtol=1e-4, atol=1e-4)
    out = np.full((n, m), np.nan, dtype)  # a caller's buffer, overwritten
    assert ops.matmul(a, b, trans_a, trans_b, out=out) is out
    np.testing.assert_array_equal(out, fast)
    # flags given as ints are flags too
    np.testing.assert_array_equal(ops.matmul(a, b, int(trans_a), int(trans_b)), fast)


def _peak_bytes(call):
    """Bytes allocated at the peak of call() (tracemalloc: NumPy reports its buffers)."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("a_view", [False, True], ids=["a", "a_view"])
@pytest.mark.parametrize("b_view", [False, True], ids=["b", "b_view"])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_reads_transposed_views_in_place(backend, dtype, a_view, b_view, trans_a,
                                                trans_b):
    """An operand that is a transposed view (Fortran order, as ``w.T`` of a C-ordered w) is
    read through the other transpose flag, as BLAS reads it: the product is op(a) @ op(b) of
    the arrays as given, and the view is not copied (the peak of allocated memory is that of
    the same product of C-ordered arrays)."""
    n, k, m = 33, 300, 200
    a_shape, b_shape = ((k, n) if trans_a else (n, k)), ((m, k) if trans_b else (k, m))
    a_c, b_c = _random(a_shape, dtype, 6), _random(b_shape, dtype, 7)
    # the same matrices, stored transposed: the views' values are those of a_c and b_c
    a = np.ascontiguousarray(a_c.T).T if a_view else a_c
    b = np.ascontiguousarray(b_c.T).T if b_view else b_c
    assert a.flags.f_contiguous == a_view and b.flags.f_contiguous == b_view
    got = ops.matmul(a, b, trans_a, trans_b)
    expected = ((a_c.T if trans_a else a_c).astype(np.float64)
                @ (b_c.T if trans_b else b_c))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    views = _peak_bytes(lambda: ops.matmul(a, b, trans_a, trans_b))
    plain = _peak_bytes(lambda: ops.matmul(a_c, b_c, trans_a, trans_b))
    # a copy of a view would add its bytes (240-480 KB here) to the peak
    assert views <= plain + min(a.nbytes, b.nbytes) // 4, (views, plain)


@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu", "sigmoid", "tanh"])
def test_linear_fast_and_general_paths_agree(backend, dtype, activation):
    x, w, b = _random((5, 7), dtype, 3), _random((7, 3), dtype, 4), _random(3, dtype, 5)
    fast = ops.linear_forward(x, w, b, activation, 0.2)
    general = ops.linear_forward(_read_only(x), w, b, activation, 0.2)
    np.testing.assert_array_equal(fast, general)
    dy = _random(fast.shape, dtype, 6)
    fast_grads = ops.linear_backward(x, w, fast, dy, activation, 0.2)
    general_grads = ops.linear_backward(x, w, fast, _read_only(dy), activation, 0.2)
    for got, expected in zip(fast_grads, general_grads):
        np.testing.assert_array_equal(got, expected)
    buffers = [np.full(g.shape, np.nan, dtype) for g in fast_grads]
    got = ops.linear_backward(x, w, fast, dy, activation, 0.2, dx=buffers[0], dw=buffers[1],
                              db=buffers[2])
    assert all(g is buffer for g, buffer in zip(got, buffers))
    for g, expected in zip(got, fast_grads):
        np.testing.assert_array_equal(g, expected)
    dx, dw, db = ops.linear_backward(x, w, fast, dy, activation, 0.2, need_dx=False,
                                     dx=np.empty(1))  # dx is ignored without need_dx
    assert dx is None
    np.testing.assert_array_equal(dw, fast_grads[1])


def test_the_general_path_takes_what_the_fast_path_leaves(backend):
    x, w, b = _random((2, 3), np.float32, 7), _random((3, 4), np.float32, 8), np.zeros(4, np.float32)
    expected = ops.linear_forward(x, w, b, "leaky_relu", 0.5)
    # an int alpha, an activation alias, non-native byte order, lists
    np.testing.assert_array_equal(ops.linear_forward(x, w, b, "identity", 1),
                                  ops.linear_forward(x, w, b, None))
    np.testing.assert_array_equal(ops.linear_forward(x, w, b, "linear"),
                                  ops.linear_forward(x, w, b, "identity"))
    np.testing.assert_array_equal(
        ops.linear_forward(x, w, b, "leaky_relu", np.float32(0.5)), expected)
    swapped = x.astype(x.dtype.newbyteorder())
    with pytest.raises(TypeError, match="x:"):
        ops.linear_forward(swapped, w, b)
    np.testing.assert_allclose(ops.matmul(x.tolist(), w.astype(np.float64)), x @ w, rtol=1e-6)
    # zero dimensions: an empty sum, an empty batch
    np.testing.assert_array_equal(ops.matmul(np.ones((2, 0)), np.ones((0, 3))), np.zeros((2, 3)))
    assert ops.matmul(np.ones((0, 2)), np.ones((2, 3))).shape == (0, 3)
    assert ops.linear_forward(np.ones((0, 3), np.float32), w, b).shape == (0, 4)


BAD = {
    "out dtype": (lambda a, b: ops.matmul(a, b, out=np.empty((2, 4))), TypeError, "out:"),
    "out read-only": (lambda a, b: ops.matmul(a, b, out=_read_only(np.empty((2, 4), np.float32))),
                      ValueError, "out:"),
    "out strided": (lambda a, b: ops.matmul(a, b, out=np.empty((2, 8), np.float32)[:, ::2]),
                    ValueError, "out:"),
    "out list": (lambda a, b: ops.matmul(a, b, out=[[0.0] * 4] * 2), TypeError, "out:"),
    "precision name": (lambda a, b: ops.matmul(a, b, precision="half"), ValueError,
                       "precision"),
    "bfloat16 float64": (lambda a, b: ops.matmul(a.astype(float), b.astype(float),
                                                 precision="bfloat16"), ValueError, "precision"),
    "transposed inner": (lambda a, b: ops.matmul(a, b, trans_b=True), ValueError, "b:"),
    "transpose flag string": (lambda a, b: ops.matmul(a.T.copy(), b, trans_a="yes"),
                              TypeError, "trans_a: expected True or False, got 'yes'"),
    "alpha inf": (lambda a, b: ops.linear_forward(a, b, np.zeros(4, np.float32), "leaky_relu",
                                                  float("inf")), ValueError, "alpha"),
    "alpha bool": (lambda a, b: ops.linear_forward(a, b, np.zeros(4, np.float32), "relu",
                                                   True), TypeError, "alpha"),
    "activation list": (lambda a, b: ops.linear_forward(a, b, np.zeros(4, np.float32),
                                                        ["relu"]), ValueError, "activation"),
    "bias dtype": (lambda a, b: ops.linear_forward(a, b, np.zeros(4)), TypeError, "b:"),
    "empty weights": (lambda a, b: ops.linear_forward(a[:, :0], b[:0], np.zeros(4, np.float32)),
                      ValueError, "w:"),
    "dw buffer shape": (lambda a, b: ops.linear_backward(a, b, a @ b, a @ b,
                                                         dw=np.empty((4, 3), np.float32)),
                        ValueError, "dw:"),
    "db buffer dtype": (lambda a, b: ops.linear_backward(a, b, a @ b, a @ b,
                                                         db=np.empty(4)), TypeError, "db:"),
    "dx buffer read-only": (lambda a, b: ops.linear_backward(
        a, b, a @ b, a @ b, dx=_read_only(np.empty((2, 3), np.float32))), ValueError, "dx:"),
    "dy dtype": (lambda a, b: ops.linear_backward(a, b, a @ b, (a @ b).astype(float)),
                 TypeError, "dy:"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_inputs_next_to_the_fast_path_get_the_general_error(backend, case):
    call, exception, word = BAD[case]
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(exception) as info:
        call(a, b)
    assert word in str(info.value)


def test_fast_path_follows_the_current_backend_and_precision():
    a, b = _random((3, 40), np.float32, 9), _random((40, 5), np.float32, 10)
    with fastnn.use_backend("numpy"):
        reference = ops.matmul(a, b)
        with fastnn.matmul_precision("bfloat16"):
            rounded = ops.matmul(a, b)
        expected = ops.matmul(ops.round_bfloat16(a), ops.round_bfloat16(b))
    np.testing.assert_allclose(rounded, expected, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(rounded, reference)
    np.testing.assert_allclose(ops.matmul(a, b), reference, rtol=1e-5, atol=1e-5)
