"""fastnn.aligned: the buffers fastnn allocates start on 64-byte lines where the kernels' stores
need them (the large outputs of ops, the training buffers of a Workspace)."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import aligned, ops
from fastnn.workspace import Workspace


def _on_line(x: np.ndarray) -> bool:
    return x.ctypes.data % aligned.LINE_BYTES == 0


@pytest.mark.parametrize("shape, dtype", [((3, 5), np.float32), (7, np.float64),
                                          ((0, 4), np.float32), ((1024, 1024), np.float32),
                                          ((2, 3, 4), np.int64), ((1000, 600), np.uint16)])
def test_empty_is_on_a_line_and_shaped_as_asked(shape, dtype):
    x = aligned.empty(shape, dtype)
    assert _on_line(x) or x.size == 0  # (NumPy may move an empty view's pointer)
    assert x.shape == ((shape,) if isinstance(shape, int) else shape)
    assert x.dtype == dtype and x.flags.c_contiguous and x.flags.writeable
    x[...] = 1  # the whole view is usable memory
    assert x.sum() == x.size


def test_empty_rejects_a_negative_size():
    with pytest.raises(ValueError, match="shape"):
        aligned.empty((3, -1), np.float32)


def test_output_is_on_a_line_from_its_threshold_on():
    rows = aligned.OUTPUT_MIN_BYTES // (4 * 256)
    assert _on_line(aligned.output((rows, 256), np.float32))
    small = aligned.output((4, 4), np.float32)
    assert small.shape == (4, 4) and small.dtype == np.float32


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_large_outputs_of_ops_are_on_lines(precision):
    """NumPy places arrays of megabytes 16 bytes past a line; fastnn's own outputs of at least
    OUTPUT_MIN_BYTES start on one (the bfloat16 GEMM streams only such a C), and hold the
    same numbers as an output supplied by the caller."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 16)).astype(np.float32)
    w = rng.standard_normal((16, 1024)).astype(np.float32)
    bias = rng.standard_normal(1024).astype(np.float32)
    with fastnn.use_backend("numpy"):
        product = ops.matmul(x, w, precision=precision)
        layer = ops.linear_forward(x, w, bias, "relu", precision=precision)
        x2 = rng.standard_normal((16, 1024)).astype(np.float32)
        w2 = rng.standard_normal((1024, 512)).astype(np.float32)  # dw: 2 MB
        y2 = np.maximum(x2 @ w2, 0)
        _, dw, _ = ops.linear_backward(x2, w2, y2, y2, "relu", precision=precision)
        assert _on_line(product) and _on_line(layer) and _on_line(dw)
        supplied = np.empty_like(product)
        ops.matmul(x, w, out=supplied, precision=precision)
        np.testing.assert_array_equal(product, supplied)


def test_workspace_buffers_are_on_lines():
    model = fastnn.Sequential([fastnn.layers.Dense(33, activation="relu"),
                               fastnn.layers.Dense(5, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    x = np.zeros((40, 7), np.float32)
    y = np.eye(5, dtype=np.float32)[np.arange(40) % 5]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    space = Workspace(model.layers, model.loss, None, 8, np.dtype(np.float32), True,
                      (x, y, None, None))
    buffers = [space.x, space.targets, space.output_grad]
    buffers += [out for _, _, out, _ in space._forward]
    assert all(_on_line(b) for b in buffers)
