"""Hostile input never crashes a backend: NaN/inf propagate as in the NumPy reference,
read-only and empty arrays get documented results, sizes past int32 are indexed right, and
the C kernels report memory they cannot get.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.backends.contract import ACTIVATIONS

from conftest import BACKENDS

F32 = np.float32


def with_non_finite(shape, value, rows=(0,), seed=0):
    array = np.random.default_rng(seed).standard_normal(shape).astype(F32)
    for row in rows:
        array[row, row % shape[1]] = value
    return array


def assert_same_non_finite_pattern(got, expected):
    """NaN where the reference has NaN, +-inf where it has +-inf, finite elsewhere."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))


def reference(function, *args, **kwargs):
    with fastnn.use_backend("numpy"):
        return function(*args, **kwargs)


NON_FINITE = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_propagates_non_finite_like_the_reference(backend, value, activation):
    x = with_non_finite((5, 33), value, rows=(0, 3))
    w = np.random.default_rng(1).standard_normal((33, 17)).astype(F32)
    b = np.zeros(17, F32)
    with np.errstate(all="ignore"):
        y = ops.linear_forward(x, w, b, activation)
        assert_same_non_finite_pattern(y, reference(ops.linear_forward, x, w, b, activation))
        dy = np.ones_like(y)
        for got, want in zip(ops.linear_backward(x, w, y, dy, activation),
                             reference(ops.linear_backward, x, w, y, dy, activation)):
            assert_same_non_finite_pattern(got, want)


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_matmul_and_softmax_propagate_non_finite(backend, value):
    a = with_non_finite((6, 20), value, rows=(2,))
    b = np.random.default_rng(2).standard_normal((20, 9)).astype(F32)
    with np.errstate(all="ignore"):
        assert_same_non_finite_pattern(ops.matmul(a, b), reference(ops.matmul, a, b))
        for function in (ops.softmax, ops.log_softmax):
            got = function(a)
            assert_same_non_finite_pattern(got, reference(function, a))
            assert np.isfinite(got[[0, 1, 3, 4, 5]]).all(), "a bad row must not spill"


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_losses_report_non_finite_input(backend, value):
    logits = with_non_finite((4, 7), value, rows=(1,))
    labels = np.array([0, 3, 6, 2])
    with np.errstate(all="ignore"):
        loss, grad = ops.softmax_cross_entropy(logits, labels, "none")
        expected_loss, expected_grad = reference(ops.softmax_cross_entropy, logits, labels,
                                                 "none")
        assert_same_non_finite_pattern(grad, expected_grad)
        assert_same_non_finite_pattern(loss, expected_loss)
        total, _ = ops.mse(logits, np.zeros_like(logits))
        assert not np.isfinite(total)


def test_nan_gradient_poisons_only_its_parameters(backend):
    param, grad = np.ones(100, F32), np.zeros(100, F32)
    grad[7] = np.nan
    ops.sgd_step(param, grad, lr=0.1)
    assert np.isnan(param[7]) and np.isfinite(np.delete(param, 7)).all()


def test_read_only_inputs_are_fine(backend):
    x = np.ones((3, 4), F32)
    w = np.ones((4, 2), F32)
    b = np.zeros(2, F32)
    for array in (x, w, b):
        array.flags.writeable = False
    np.testing.assert_array_equal(ops.linear_forward(x, w, b, "relu"), np.full((3, 2), 4, F32))
    loss, grad = ops.softmax_cross_entropy(x, np.zeros(3, np.int64))
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)


def test_labels_in_a_column_are_named_as_such():
    # (N, 1) integer labels: "expected dtype float32 or float64, got int64" did not say why
    with pytest.raises(TypeError, match=r"class labels of shape \(N,\) = \(4,\).*got int64 "
                       r"of shape \(4, 1\) \(labels in a column: ravel them\)"):
        ops.softmax_cross_entropy(np.zeros((4, 3), F32), np.array([[0], [1], [2], [1]]))


def test_empty_arrays(backend):
    empty = np.zeros((0, 5), F32)
    assert ops.softmax(empty).shape == (0, 5)
    assert ops.matmul(empty, np.ones((5, 3), F32)).shape == (0, 3)
    assert ops.one_hot(np.zeros(0, np.int64), 4).shape == (0, 4)
    with pytest.raises(ValueError, match="logits: empty"):
        ops.softmax_cross_entropy(empty, np.zeros(0, np.int64))
    ops.sgd_step(np.zeros(0, F32), np.zeros(0, F32), lr=0.1)  # nothing to update: no error


# Sizes past 2**31 elements: the arrays are np.zeros, which the OS maps to shared zero pages,
# so reading them costs time but no memory. A kernel indexing with 32-bit ints would crash or
# read the wrong elements.
HUGE_ROWS, HUGE_COLUMNS = 2 ** 16, 2 ** 15 + 1  # 2**31 + 2**16 elements


def test_products_past_int32_are_indexed_correctly(backend):
    huge = np.zeros((HUGE_ROWS, HUGE_COLUMNS), F32)
    x = np.ones((1, HUGE_ROWS), F32)
    b = np.arange(HUGE_COLUMNS, dtype=F32)
    y = ops.linear_forward(x, huge, b, "identity")
    np.testing.assert_array_equal(y[0], b)
    scores = huge  # every row all-zero: argmax is column 0
    labels = np.zeros(HUGE_ROWS, np.int64)
    labels[-1] = HUGE_COLUMNS - 1
    assert ops.accuracy(scores, labels) == (HUGE_ROWS - 1) / HUGE_ROWS


def test_bad_data_never_changes_a_model(backend):
    """Every rejected fit/evaluate/predict leaves the weights exactly as they were."""
    model = fastnn.Sequential([fastnn.Dense(6, "relu", input_dim=4), fastnn.Dense(3, "softmax")],
                              seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.build()  # the weights exist before the first fit, so there is something to compare
    before = model.get_weights()
    assert len(before) == 4
    good_x, good_y = np.ones((5, 4), F32), np.zeros(5, np.int64)
    bad_calls = [
        lambda: model.fit(np.ones((5, 3), F32), good_y, verbose=0),
        lambda: model.fit(good_x, np.full(5, 7), verbose=0),
        lambda: model.fit(good_x, np.full(5, -1), verbose=0),
        lambda: model.fit(good_x, good_y[:4], verbose=0),
        lambda: model.fit(np.full((5, 4), np.inf, F32), good_y, verbose=0),
        lambda: model.fit(np.zeros((0, 4), F32), good_y[:0], verbose=0),
        lambda: model.evaluate(np.ones((5, 4, 1), F32), good_y, verbose=0),
        lambda: model.predict(np.ones((5, 5), F32)),
    ]
    for call in bad_calls:
        with pytest.raises((TypeError, ValueError)):
            call()
        for got, expected in zip(model.get_weights(), before):
            np.testing.assert_array_equal(got, expected)


def test_model_accepts_read_only_misaligned_and_transposed_inputs(backend):
    model = fastnn.Sequential([fastnn.Dense(6, "tanh", input_dim=4), fastnn.Dense(3, "softmax")],
                              seed=0)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(F32).T  # (8, 4) view
    raw = np.zeros(x.nbytes + 1, np.uint8)
    misaligned = raw[1:].view(F32).reshape(8, 4)
    misaligned[...] = x
    x.flags.writeable = False
    expected = model.predict(np.ascontiguousarray(x))
    for view in (x, misaligned):
        np.testing.assert_allclose(model.predict(view), expected, rtol=1e-6)


OUT_OF_SCRATCH = """
import numpy as np
import fastnn
from fastnn import Dense, Sequential, ops

fastnn.set_backend("c")
small = np.ones((4, 4), np.float32)
big = np.ones((600, 600), np.float32)
zeros = np.zeros(600, np.float32)
calls = {
    "matmul": lambda: ops.matmul(big, big),
    "linear_forward": lambda: ops.linear_forward(big, big, zeros, "relu"),
    "linear_backward": lambda: ops.linear_backward(big, big, big, big, "relu"),
}
for name, call in calls.items():
    try:
        call()
        print(name, "returned")
    except MemoryError as error:
        print(name, "MemoryError:", error)
model = Sequential([Dense(600, "relu", input_dim=600), Dense(3, "softmax")], seed=0)
model.compile("sgd", "sparse_categorical_crossentropy")
model.build()
before = model.get_weights()
assert len(before) == 4
try:
    model.fit(big, np.zeros(600, np.int64), batch_size=600, epochs=1, verbose=0)
    print("fit returned")
except MemoryError:
    print("fit MemoryError")
print("weights unchanged:", all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())))
print("small matmul afterwards:", ops.matmul(small, small)[0, 0])
"""


@pytest.mark.skipif("c" not in BACKENDS, reason="backend c is not built here")
def test_c_kernels_report_scratch_memory_they_cannot_get():
    """Out of scratch memory, the C kernels raise MemoryError, not abort the process, and the
    model is left as it was. FASTNN_SCRATCH_LIMIT makes every request above 64 KB fail."""
    result = subprocess.run([sys.executable, "-c", OUT_OF_SCRATCH], capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "FASTNN_SCRATCH_LIMIT": "65536"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in ("matmul", "linear_forward", "linear_backward"):
        assert f"{name} MemoryError: {name}: the C backend could not allocate" in "\n".join(
            lines), result.stdout
    assert "fit MemoryError" in lines, result.stdout
    assert "weights unchanged: True" in lines, result.stdout
    assert "small matmul afterwards: 4.0" in lines, result.stdout


MANY_THREADS = """
import numpy as np, fastnn
from fastnn import ops
fastnn.set_backend("c")
rng = np.random.default_rng(0)
for threads in (64, 1024):
    fastnn.set_num_threads(threads)
    for n, k, m in ((1024, 784, 256), (128, 784, 256), (2048, 64, 64)):
        x = rng.standard_normal((n, k)).astype(np.float32)
        w = rng.standard_normal((k, m)).astype(np.float32)
        for precision in ("float32", "bfloat16"):
            y = ops.linear_forward(x, w, np.zeros(m, np.float32), "relu", precision=precision)
            dy = rng.standard_normal((n, m)).astype(np.float32)
            dx, dw, db = ops.linear_backward(x, w, y, dy, "relu", precision=precision)
            fastnn.set_num_threads(1)
            expected = ops.linear_backward(x, w, y, dy, "relu", precision=precision)
            fastnn.set_num_threads(threads)
            close = all(np.allclose(got, want, rtol=1e-3, atol=1e-3 * np.sqrt(n))
                        for got, want in zip((dx, dw, db), expected))
            print(threads, n, k, m, precision, "close" if close else "DIFFERENT")
"""


@pytest.mark.skipif("c" not in BACKENDS, reason="backend c is not built here")
def test_more_threads_than_work_or_cpus_is_no_crash():
    """fastnn.set_num_threads takes up to 1024 (as torch.set_num_threads, past the CPUs):
    the bfloat16 weight gradient on AMX then gave threads no pairs of blocks and divided by
    their zero blocks (SIGFPE, the process killed) from 64 threads on."""
    result = subprocess.run([sys.executable, "-c", MANY_THREADS], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    lines = result.stdout.splitlines()
    assert len(lines) == 12 and all(line.endswith(" close") for line in lines), lines
