"""Property-based tests: random shapes, dtypes, views and magnitudes, every kernel, every
backend, against the float64 NumPy oracle.

Examples per kernel per backend: 25 by default, 200 with FASTNN_HYPOTHESIS_PROFILE=full.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastnn
from fastnn import ops
from fastnn.backends.contract import ACTIVATIONS

from conftest import BACKENDS, TOLERANCES, oracle

sizes = st.integers(1, 70)
dtypes = st.sampled_from([np.float32, np.float64])
layouts = st.sampled_from(["contiguous", "transposed", "strided"])
exponents = st.integers(-30, 4)  # magnitudes 1e-30 .. 1e4


def draw_array(data, shape, dtype, magnitude=1.0, label=""):
    """A random array of ``shape`` in a drawn memory layout: contiguous, a transposed
    view, or a view of every other row of a larger array."""
    layout = data.draw(layouts, label=f"{label} layout")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label=f"{label} seed")
    rng = np.random.default_rng(seed)
    if layout == "transposed" and len(shape) == 2:
        return (rng.standard_normal(shape[::-1]) * magnitude).astype(dtype).T
    if layout == "strided":
        base = (rng.standard_normal((2 * shape[0],) + tuple(shape[1:])) * magnitude)
        return base.astype(dtype)[::2]
    return (rng.standard_normal(shape) * magnitude).astype(dtype)


def assert_matches(got, expected, dtype, scale):
    """Within the dtype's tolerance of the oracle, allowing for values below its range."""
    rtol, atol = TOLERANCES[np.dtype(dtype)]
    floor = 64 * np.finfo(dtype).tiny
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=rtol,
                               atol=max(atol * scale, floor))


backends = pytest.mark.parametrize("backend_name", BACKENDS)


@backends
@given(data=st.data(), n=sizes, k=sizes, m=sizes, dtype=dtypes, exponent=exponents,
       trans_a=st.booleans(), trans_b=st.booleans())
def test_matmul(backend_name, data, n, k, m, dtype, exponent, trans_a, trans_b):
    magnitude = 10.0 ** exponent
    a = draw_array(data, (k, n) if trans_a else (n, k), dtype, magnitude, "a")
    b = draw_array(data, (m, k) if trans_b else (k, m), dtype, 1.0, "b")
    with fastnn.use_backend(backend_name):
        got = ops.matmul(a, b, trans_a, trans_b)
    expected = oracle(ops.matmul, a, b, trans_a, trans_b)
    assert_matches(got, expected, dtype, scale=4 * magnitude * np.sqrt(k))


@backends
@given(data=st.data(), n=sizes, k=sizes, m=sizes, dtype=dtypes, exponent=exponents,
       activation=st.sampled_from(ACTIVATIONS))
def test_linear_forward_and_backward(backend_name, data, n, k, m, dtype, exponent, activation):
    magnitude = 10.0 ** exponent
    x = draw_array(data, (n, k), dtype, magnitude, "x")
    w = draw_array(data, (k, m), dtype, 1.0 / np.sqrt(k), "w")
    b = draw_array(data, (m,), dtype, magnitude, "b")
    dy = draw_array(data, (n, m), dtype, 1.0, "dy")
    with fastnn.use_backend(backend_name):
        y = ops.linear_forward(x, w, b, activation, alpha=0.2)
    assert_matches(y, oracle(ops.linear_forward, x, w, b, activation, alpha=0.2), dtype,
                   scale=4 * magnitude)
    with fastnn.use_backend(backend_name):
        grads = ops.linear_backward(x, w, y, dy, activation, alpha=0.2)
    expected = oracle(ops.linear_backward, x, w, y, dy, activation, alpha=0.2)
    scales = (4 * np.sqrt(m), 4 * magnitude * np.sqrt(n), 4 * np.sqrt(n))
    for got, want, scale in zip(grads, expected, scales):
        assert_matches(got, want, dtype, scale)


@backends
@given(data=st.data(), n=sizes, c=sizes, dtype=dtypes, exponent=exponents,
       log=st.booleans())
def test_softmax_and_log_softmax(backend_name, data, n, c, dtype, exponent, log):
    magnitude = 10.0 ** exponent
    x = draw_array(data, (n, c), dtype, magnitude, "x")
    function = ops.log_softmax if log else ops.softmax
    with fastnn.use_backend(backend_name):
        got = function(x)
    assert_matches(got, oracle(function, x), dtype, scale=max(magnitude, 1) if log else 1)


@backends
@given(data=st.data(), n=sizes, c=sizes, dtype=dtypes, exponent=exponents,
       labels=st.booleans(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_softmax_cross_entropy(backend_name, data, n, c, dtype, exponent, labels, reduction):
    magnitude = 10.0 ** exponent
    logits = draw_array(data, (n, c), dtype, magnitude, "logits")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="target seed"))
    if labels:
        target = rng.integers(0, c, n)
    else:
        target = rng.random((n, c))
        target = (target / target.sum(axis=1, keepdims=True)).astype(dtype)
    with fastnn.use_backend(backend_name):
        loss, grad = ops.softmax_cross_entropy(logits, target, reduction)
    expected_loss, expected_grad = oracle(ops.softmax_cross_entropy, logits, target, reduction)
    assert_matches(grad, expected_grad, dtype, scale=1)
    loss_scale = max(magnitude, 1) * (n if reduction == "sum" else 1)
    assert_matches(np.asarray(loss, dtype=dtype), np.asarray(expected_loss), dtype,
                   scale=10 * loss_scale)


@backends
@given(data=st.data(), n=sizes, m=sizes, dtype=dtypes, exponent=exponents)
def test_mse(backend_name, data, n, m, dtype, exponent):
    magnitude = 10.0 ** exponent
    pred = draw_array(data, (n, m), dtype, magnitude, "pred")
    target = draw_array(data, (n, m), dtype, magnitude, "target")
    with fastnn.use_backend(backend_name):
        loss, grad = ops.mse(pred, target)
    expected_loss, expected_grad = oracle(ops.mse, pred, target)
    assert_matches(grad, expected_grad, dtype, scale=magnitude)
    assert_matches(np.asarray(loss, dtype=dtype), np.asarray(expected_loss), dtype,
                   scale=10 * magnitude ** 2)


@backends
@given(data=st.data(), n=sizes, c=sizes, dtype=dtypes)
def test_one_hot_and_accuracy(backend_name, data, n, c, dtype):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1), label="seed"))
    labels = rng.integers(0, c, n)
    scores = draw_array(data, (n, c), dtype, 1.0, "scores")
    with fastnn.use_backend(backend_name):
        rows = ops.one_hot(labels, c, dtype=dtype)
        fraction = ops.accuracy(scores, labels)
    np.testing.assert_array_equal(rows, np.eye(c, dtype=dtype)[labels])
    assert fraction == np.mean(scores.argmax(axis=1) == labels)


@backends
@given(data=st.data(), size=st.integers(1, 5000), dtype=dtypes, exponent=exponents,
       momentum=st.sampled_from([0.0, 0.5, 0.9]), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 1e-3]))
def test_sgd_step(backend_name, data, size, dtype, exponent, momentum, nesterov, weight_decay):
    nesterov = nesterov and momentum > 0
    magnitude = 10.0 ** exponent
    param = draw_array(data, (size,), dtype, magnitude, "param").copy()
    grad = draw_array(data, (size,), dtype, magnitude, "grad")
    velocity = draw_array(data, (size,), dtype, magnitude, "velocity").copy() \
        if momentum else None
    expected = [param.astype(np.float64), None if velocity is None else velocity.astype(float)]
    with fastnn.use_backend("numpy"):
        ops.sgd_step(expected[0], grad.astype(np.float64), expected[1], 0.1, momentum,
                     nesterov, weight_decay)
    with fastnn.use_backend(backend_name):
        ops.sgd_step(param, grad, velocity, 0.1, momentum, nesterov, weight_decay)
    assert_matches(param, expected[0], dtype, scale=4 * magnitude)
    if velocity is not None:
        assert_matches(velocity, expected[1], dtype, scale=4 * magnitude)


@backends
@given(data=st.data(), size=st.integers(1, 5000), dtype=dtypes, exponent=exponents,
       step=st.integers(1, 1000))
def test_adam_step(backend_name, data, size, dtype, exponent, step):
    magnitude = 10.0 ** exponent
    param = draw_array(data, (size,), dtype, 1.0, "param").copy()
    grad = draw_array(data, (size,), dtype, magnitude, "grad")
    m = draw_array(data, (size,), dtype, magnitude, "m").copy()
    v = np.abs(draw_array(data, (size,), dtype, magnitude ** 2, "v"))
    expected = [a.astype(np.float64) for a in (param, m, v)]
    with fastnn.use_backend("numpy"):
        ops.adam_step(expected[0], grad.astype(np.float64), expected[1], expected[2], step)
    with fastnn.use_backend(backend_name):
        ops.adam_step(param, grad, m, v, step)
    assert_matches(param, expected[0], dtype, scale=10)
    assert_matches(m, expected[1], dtype, scale=magnitude)
    assert_matches(v, expected[2], dtype, scale=magnitude ** 2)
