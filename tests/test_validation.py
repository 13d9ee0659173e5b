"""Bad input at the public boundary: a clear exception that names the argument.

Run on every backend, since the point is that no backend ever sees bad input.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import ops

F32 = np.float32


def ones(*shape, dtype=F32):
    return np.ones(shape, dtype=dtype)


CASES = {
    # name: (call, exception type, words the message must contain)
    "matmul rank": (lambda: ops.matmul(ones(3), ones(3, 2)), ValueError, ["a:", "2-D", "1-D"]),
    "matmul inner": (lambda: ops.matmul(ones(3, 4), ones(5, 2)), ValueError, ["b:", "4", "5"]),
    "matmul int dtype": (lambda: ops.matmul(np.ones((2, 2), int), ones(2, 2)), TypeError,
                         ["a:", "int64"]),
    "matmul mixed dtype": (lambda: ops.matmul(ones(2, 2), ones(2, 2, dtype=np.float64)),
                           TypeError, ["b:", "float32", "float64"]),
    "matmul float16": (lambda: ops.matmul(ones(2, 2, dtype=np.float16), ones(2, 2)), TypeError,
                       ["a:", "float16"]),
    "matmul out shape": (lambda: ops.matmul(ones(2, 3), ones(3, 4), out=ones(4, 2)), ValueError,
                         ["out:", "(2, 4)", "(4, 2)"]),
    "matmul out read-only": (lambda: ops.matmul(ones(2, 3), ones(3, 4),
                                                out=np.broadcast_to(ones(4), (2, 4))),
                             ValueError, ["out:"]),
    "linear w rows": (lambda: ops.linear_forward(ones(2, 3), ones(4, 5), ones(5)), ValueError,
                      ["w:", "3", "(4, 5)"]),
    "linear bias shape": (lambda: ops.linear_forward(ones(2, 3), ones(3, 5), ones(4)),
                          ValueError, ["b:", "(5,)", "(4,)"]),
    "linear bias rank": (lambda: ops.linear_forward(ones(2, 3), ones(3, 5), ones(1, 5)),
                         ValueError, ["b:", "1-D"]),
    "linear unknown activation": (lambda: ops.linear_forward(ones(2, 3), ones(3, 5), ones(5),
                                                             "swish"),
                                  ValueError, ["activation", "swish", "relu"]),
    "linear alpha": (lambda: ops.linear_forward(ones(2, 3), ones(3, 5), ones(5), "leaky_relu",
                                                alpha=float("nan")), ValueError, ["alpha"]),
    "backward dy shape": (lambda: ops.linear_backward(ones(2, 3), ones(3, 5), ones(2, 5),
                                                      ones(2, 4)), ValueError, ["dy:", "(2, 4)"]),
    "backward y shape": (lambda: ops.linear_backward(ones(2, 3), ones(3, 5), ones(3, 5),
                                                     ones(3, 5)), ValueError, ["y:", "(2, 5)"]),
    "backward empty batch": (lambda: ops.linear_backward(ones(0, 3), ones(3, 5), ones(0, 5),
                                                         ones(0, 5)), ValueError, ["x:", "empty"]),
    "softmax rank": (lambda: ops.softmax(ones(2, 3, 4)), ValueError, ["x:", "3-D"]),
    "all_finite int dtype": (lambda: ops.all_finite(np.ones(3, int)), TypeError, ["x:", "int64"]),
    "all_finite empty": (lambda: ops.all_finite(ones(0, 3)), ValueError, ["x:", "empty"]),
    "take_rows index range": (lambda: ops.take_rows(ones(4, 2), np.array([0, 4])), ValueError,
                              ["index", "[0, 4)", "4"]),
    "take_rows negative index": (lambda: ops.take_rows(ones(4, 2), np.array([-1])), ValueError,
                                 ["index", "-1"]),
    "take_rows float index": (lambda: ops.take_rows(ones(4, 2), np.array([0.0])), TypeError,
                              ["index", "integer", "float64"]),
    "take_rows index rank": (lambda: ops.take_rows(ones(4, 2), np.zeros((1, 1), int)),
                             ValueError, ["index", "1-D", "(1, 1)"]),
    "take_rows empty index": (lambda: ops.take_rows(ones(4, 2), np.zeros(0, int)), ValueError,
                              ["index", "empty"]),
    "take_rows out shape": (lambda: ops.take_rows(ones(4, 2), np.array([0, 1]), out=ones(2, 3)),
                            ValueError, ["out:", "(2, 2)", "(2, 3)"]),
    "take_rows out dtype": (lambda: ops.take_rows(ones(4, 2), np.array([0]),
                                                  out=ones(1, 2, dtype=np.float64)),
                            TypeError, ["out:", "float32", "float64"]),
    "take_rows string source": (lambda: ops.take_rows(np.array(["a", "b"]), np.array([0])),
                                TypeError, ["source", "<U1"]),
    "xent label range": (lambda: ops.softmax_cross_entropy(ones(2, 3), np.array([0, 3])),
                         ValueError, ["target", "[0, 3)", "3"]),
    "xent negative label": (lambda: ops.softmax_cross_entropy(ones(2, 3), np.array([-1, 0])),
                            ValueError, ["target", "-1"]),
    "xent float labels": (lambda: ops.softmax_cross_entropy(ones(2, 3), np.array([0.0, 1.0])),
                          TypeError, ["target", "integer", "float64"]),
    "xent label count": (lambda: ops.softmax_cross_entropy(ones(2, 3), np.array([0, 1, 2])),
                         ValueError, ["target", "(2,)", "(3,)"]),
    "xent prob shape": (lambda: ops.softmax_cross_entropy(ones(2, 3), ones(2, 4)), ValueError,
                        ["target", "(2, 3)", "(2, 4)"]),
    "xent prob dtype": (lambda: ops.softmax_cross_entropy(ones(2, 3), ones(2, 3, dtype=float)),
                        TypeError, ["target", "float64"]),
    "xent empty batch": (lambda: ops.softmax_cross_entropy(ones(0, 3), np.zeros(0, int)),
                         ValueError, ["logits", "empty"]),
    "xent reduction": (lambda: ops.softmax_cross_entropy(ones(2, 3), np.array([0, 1]), "avg"),
                       ValueError, ["reduction", "avg", "mean"]),
    "mse shape": (lambda: ops.mse(ones(2, 3), ones(3, 2)), ValueError, ["target", "(2, 3)"]),
    "mse reduction": (lambda: ops.mse(ones(2, 3), ones(2, 3), "none"), ValueError,
                      ["reduction"]),
    "mse empty": (lambda: ops.mse(ones(0, 3), ones(0, 3)), ValueError, ["pred", "empty"]),
    "one_hot classes": (lambda: ops.one_hot(np.array([0, 1]), 0), ValueError, ["num_classes"]),
    "one_hot range": (lambda: ops.one_hot(np.array([0, 5]), 3), ValueError, ["labels", "5"]),
    "accuracy labels": (lambda: ops.accuracy(ones(2, 3), np.array([0, 9])), ValueError,
                        ["target", "9"]),
    "sgd read-only": (lambda: ops.sgd_step(np.broadcast_to(ones(3), (2, 3)), ones(2, 3)),
                      ValueError, ["param"]),
    "sgd param not array": (lambda: ops.sgd_step([1.0, 2.0], ones(2)), TypeError, ["param"]),
    "sgd non-contiguous": (lambda: ops.sgd_step(ones(4, 4)[:, ::2], ones(4, 2)), ValueError,
                           ["param", "contiguous"]),
    "sgd grad shape": (lambda: ops.sgd_step(ones(3), ones(4)), ValueError, ["grad", "(3,)"]),
    "sgd lr": (lambda: ops.sgd_step(ones(3), ones(3), lr=-1.0), ValueError, ["lr", "-1"]),
    "sgd missing velocity": (lambda: ops.sgd_step(ones(3), ones(3), momentum=0.9), ValueError,
                             ["velocity"]),
    "sgd velocity dtype": (lambda: ops.sgd_step(ones(3), ones(3), ones(3, dtype=float),
                                                momentum=0.9), TypeError, ["velocity"]),
    "adam step": (lambda: ops.adam_step(ones(3), ones(3), ones(3), ones(3), 0), ValueError,
                  ["step"]),
    "adam beta": (lambda: ops.adam_step(ones(3), ones(3), ones(3), ones(3), 1, beta1=1.0),
                  ValueError, ["beta1"]),
    "adam state shape": (lambda: ops.adam_step(ones(3), ones(3), ones(4), ones(3), 1),
                         ValueError, ["m:"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_exception(backend, case):
    call, exception, words = CASES[case]
    with pytest.raises(exception) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from {message!r}"


def test_transposed_and_sliced_views_are_accepted(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype(F32).T        # (6, 4), transposed view
    w = rng.standard_normal((8, 3)).astype(F32)[::2]     # (4, 3), every other row
    b = rng.standard_normal(6).astype(F32)[::2]          # (3,), strided
    assert not (x.flags.c_contiguous or w.flags.c_contiguous or b.flags.c_contiguous)
    y = ops.linear_forward(x, w, b, "tanh")
    expected = np.tanh(x.astype(np.float64) @ w + b)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.softmax(x.T).sum(axis=1), 1, rtol=1e-6)


def test_misaligned_buffer_is_copied(backend):
    raw = np.zeros(4 * 12 + 1, dtype=np.uint8)
    misaligned = raw[1:].view(F32).reshape(3, 4)
    misaligned[...] = np.arange(12).reshape(3, 4)
    assert not misaligned.flags.aligned
    np.testing.assert_allclose(ops.matmul(misaligned, np.eye(4, dtype=F32)), misaligned)


def test_int32_and_uint8_labels_are_accepted(backend):
    logits = np.zeros((3, 4), F32)
    for labels in (np.array([0, 1, 3], np.int32), np.array([0, 1, 3], np.uint8)):
        loss, _ = ops.softmax_cross_entropy(logits, labels)
        np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)
