"""Cross-entropy options (label smoothing, ignored classes, per-row weights, from_logits) against
PyTorch in float64, and the loss objects with Keras' names.

PyTorch is an optional test dependency (``pip install torch``): without it the comparisons with
PyTorch are skipped, and the other tests here still run.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastnn
from fastnn import Dense, SGD, Sequential, losses, ops

from conftest import BACKENDS
from test_gradcheck import assert_gradient_matches, numerical_gradient


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def torch_cross_entropy(logits, target, reduction, label_smoothing=0.0, ignore_index=None,
                        sample_weight=None):
    """Loss and d loss / d logits from torch.nn.functional.cross_entropy in float64; per-row
    weights applied to its per-row losses, then reduced as Keras (sum(w l) / rows counted)."""
    torch = pytest.importorskip("torch")
    leaf = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    target_t = torch.tensor(target) if target.ndim == 1 else torch.tensor(target,
                                                                         dtype=torch.float64)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    if sample_weight is None:
        loss = torch.nn.functional.cross_entropy(leaf, target_t, reduction=reduction,
                                                 label_smoothing=label_smoothing, **kwargs)
    else:
        rows = torch.nn.functional.cross_entropy(leaf, target_t, reduction="none",
                                                 label_smoothing=label_smoothing, **kwargs)
        rows = rows * torch.tensor(sample_weight, dtype=torch.float64)
        counted = len(target) if ignore_index is None else int((target != ignore_index).sum())
        loss = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / counted}[reduction]
    loss.sum().backward()
    return loss.detach().numpy(), leaf.grad.numpy()


# -- softmax cross-entropy against PyTorch ---------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
# ignore_index applies to integer labels only (with probability rows it is an error, tested
# below), as in PyTorch.
@pytest.mark.parametrize("target_kind,ignore_index", [("labels", None), ("labels", 3),
                                                      ("labels", -100),
                                                      ("probabilities", None)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("magnitude", [1.0, 1e4])
def test_softmax_cross_entropy_matches_torch(backend, dtype, target_kind, reduction,
                                             label_smoothing, ignore_index, weighted,
                                             magnitude):
    n, c = 23, 7
    rng = rng_for("torch-xent", target_kind, ignore_index)
    logits = (rng.standard_normal((n, c)) * magnitude).astype(dtype)
    if target_kind == "labels":
        target = rng.integers(0, c, n)
        if ignore_index is not None:
            target[rng.random(n) < 0.3] = ignore_index
            target[0] = ignore_index
    else:
        target = rng.random((n, c)) ** 4
        target = (target / target.sum(axis=1, keepdims=True)).astype(dtype)
    sample_weight = rng.random(n) * 2 if weighted else None
    with fastnn.use_backend(backend):
        loss, grad = ops.softmax_cross_entropy(logits, target, reduction,
                                               label_smoothing=label_smoothing,
                                               ignore_index=ignore_index,
                                               sample_weight=sample_weight)
    expected_loss, expected_grad = torch_cross_entropy(logits.astype(np.float64), target,
                                                       reduction, label_smoothing, ignore_index,
                                                       sample_weight)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(loss, expected_loss, rtol=rtol, atol=rtol * magnitude)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol * 10)


def numpy_cross_entropy_rows(logits, labels, label_smoothing, ignore_index):
    """Per-row softmax cross-entropy of integer labels and its gradient (of the rows' sum) in
    float64 NumPy, torch.nn.functional.cross_entropy's definition: rows of the ignored label
    give 0 and 0."""
    x = logits.astype(np.float64)
    n, c = x.shape
    shifted = x - x.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    kept = labels != ignore_index
    target = np.full((n, c), label_smoothing / c)
    target[np.flatnonzero(kept), labels[kept]] += 1 - label_smoothing
    loss = np.where(kept, -(target * log_p).sum(axis=1), 0.0)
    grad = np.where(kept[:, None], np.exp(log_p) - target, 0.0)
    return loss, grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("c", [2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("label_smoothing,ignore_index", [(0.0, None), (0.1, -100)])
def test_few_classes_match_the_float64_definition(backend, dtype, c, n, label_smoothing,
                                                  ignore_index):
    """A few classes (the C kernels take blocks of rows at a time there, a whole block
    row by row when one of its rows is ignored): per-row losses and the gradient, written
    over the logits (grad=logits, as the training step does), against float64."""
    rng = rng_for("few-classes", c, n)
    logits = (rng.standard_normal((n, c)) * 4).astype(dtype)
    labels = rng.integers(0, c, n)
    if ignore_index is not None:
        labels[rng.random(n) < 0.2] = ignore_index
    expected_loss, expected_grad = numpy_cross_entropy_rows(logits, labels, label_smoothing,
                                                            -1 if ignore_index is None
                                                            else ignore_index)
    with fastnn.use_backend(backend):
        loss, grad = ops.softmax_cross_entropy(logits, labels, "none",
                                               label_smoothing=label_smoothing,
                                               ignore_index=ignore_index, grad=logits)
    tolerance = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(loss, expected_loss, rtol=tolerance, atol=tolerance)
    assert grad is logits
    np.testing.assert_allclose(grad, expected_grad, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_row_ignored_gives_zero_loss_and_gradient(backend):
    """Our choice, documented in ops.softmax_cross_entropy: loss 0 and gradient 0 (PyTorch
    gives NaN, which would stop training on a batch of padding)."""
    logits = rng_for("all-ignored").standard_normal((5, 4))
    target = np.full(5, -1)
    with fastnn.use_backend(backend):
        for reduction in ("mean", "sum"):
            loss, grad = ops.softmax_cross_entropy(logits, target, reduction, ignore_index=-1,
                                                   label_smoothing=0.2)
            assert loss == 0.0 and not grad.any()
        rows, _ = ops.softmax_cross_entropy(logits, target, "none", ignore_index=-1)
        assert not rows.any()
    torch = pytest.importorskip("torch")
    assert torch.isnan(torch.nn.functional.cross_entropy(torch.tensor(logits),
                                                         torch.tensor(target),
                                                         ignore_index=-1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_a_masked_class_gives_the_finite_loss(backend, dtype):
    """0 log 0 = 0: a target of 0 adds nothing, whatever its logit (issue 16)."""
    with fastnn.use_backend(backend):
        loss, grad = ops.softmax_cross_entropy(np.array([[0, -np.inf, 1]], dtype),
                                               np.array([[1, 0, 0]], dtype))
        np.testing.assert_allclose(loss, np.log1p(np.e), rtol=1e-6)
        np.testing.assert_allclose(loss, 1.313262, atol=1e-6)
        e = np.e
        np.testing.assert_allclose(grad, [[1 / (1 + e) - 1, 0, e / (1 + e)]], rtol=1e-6)
        # The labels' path agrees.
        labels_loss, _ = ops.softmax_cross_entropy(np.array([[0, -np.inf, 1]], dtype), [0])
        np.testing.assert_allclose(labels_loss, loss, rtol=1e-6)
        # Logits whose spread overflows float32: x - max is -inf for the first class.
        big = np.finfo(np.float32).max
        loss, grad = ops.softmax_cross_entropy(np.array([[-big, big, big]], dtype),
                                               np.array([[0, 0.5, 0.5]], dtype))
        np.testing.assert_allclose(loss, np.log(2), rtol=1e-6)
        assert np.isfinite(grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_probability_targets_with_label_smoothing_and_sample_weight_match_numpy(backend):
    """The same weighting done in float64 NumPy, written out: sum_i w_i l_i / N."""
    rng = rng_for("numpy-weighting")
    logits, labels = rng.standard_normal((40, 6)) * 3, rng.integers(0, 6, 40)
    weights = rng.random(40) * 3
    eps = 0.15
    target = (1 - eps) * np.eye(6)[labels] + eps / 6
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    rows = -(target * log_probs).sum(axis=1)
    grad = (np.exp(log_probs) - target) * weights[:, None] / 40
    with fastnn.use_backend(backend):
        for kind in (labels, np.eye(6)[labels]):
            loss, got = ops.softmax_cross_entropy(logits, kind, label_smoothing=eps,
                                                  sample_weight=weights)
            np.testing.assert_allclose(loss, (weights * rows).sum() / 40, rtol=1e-12)
            np.testing.assert_allclose(got, grad, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_weight_of_two_is_a_row_counted_twice(backend):
    rng = rng_for("weight-two")
    logits, labels = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    weights = np.array([1, 2, 0, 1, 1, 2.0])
    rows = np.repeat(np.arange(6), weights.astype(int))
    with fastnn.use_backend(backend):
        weighted, _ = ops.softmax_cross_entropy(logits, labels, "sum", sample_weight=weights)
        repeated, _ = ops.softmax_cross_entropy(logits[rows], labels[rows], "sum")
        assert weighted == pytest.approx(repeated, rel=1e-12)
        weighted, _ = ops.mse(logits, logits * 0.5, "sum", sample_weight=weights)
        repeated, _ = ops.mse(logits[rows], logits[rows] * 0.5, "sum")
        assert weighted == pytest.approx(repeated, rel=1e-12)


# -- binary cross-entropy against PyTorch ------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("magnitude", [1.0, 1e4])
def test_sigmoid_cross_entropy_matches_torch(backend, dtype, reduction, label_smoothing,
                                             weighted, magnitude):
    torch = pytest.importorskip("torch")
    n, m = 19, 3
    rng = rng_for("torch-bce")
    logits = (rng.standard_normal((n, m)) * magnitude).astype(dtype)
    target = rng.random((n, m)).astype(dtype)
    weights = rng.random(n) * 2 if weighted else None
    with fastnn.use_backend(backend):
        loss, grad = ops.sigmoid_cross_entropy(logits, target, reduction,
                                               label_smoothing=label_smoothing,
                                               sample_weight=weights)
    leaf = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    smoothed = torch.tensor(target * (1 - label_smoothing) + label_smoothing / 2,
                            dtype=torch.float64)
    weight = None if weights is None else torch.tensor(weights[:, None])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        leaf, smoothed, weight=weight, reduction="none" if reduction == "none" else reduction)
    if reduction == "none":
        expected = expected.mean(dim=1)  # Keras' per-sample loss: the mean over the outputs
    expected.sum().backward()
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=rtol,
                               atol=rtol * magnitude)
    expected_grad = leaf.grad.numpy() * (m if reduction == "none" else 1)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol * 10)


# -- finite differences ------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
def test_options_gradients_by_finite_differences(backend, target_kind):
    rng = np.random.default_rng(21)
    logits = rng.standard_normal((7, 5)) * 2
    weights = rng.random(7) + 0.1
    if target_kind == "labels":
        target, options = rng.integers(0, 5, 7), dict(ignore_index=1)
    else:
        target, options = rng.random((7, 5)), {}
        target /= target.sum(axis=1, keepdims=True)
    options.update(label_smoothing=0.2, sample_weight=weights)
    with fastnn.use_backend(backend):
        def loss():
            return ops.softmax_cross_entropy(logits, target, compute_grad=False, **options)[0]

        _, grad = ops.softmax_cross_entropy(logits, target, **options)
        assert_gradient_matches(grad, numerical_gradient(loss, logits), "d logits")

        binary = rng.random((7, 5))

        def binary_loss():
            return ops.sigmoid_cross_entropy(logits, binary, compute_grad=False,
                                             label_smoothing=0.1, sample_weight=weights)[0]

        _, grad = ops.sigmoid_cross_entropy(logits, binary, label_smoothing=0.1,
                                            sample_weight=weights)
        assert_gradient_matches(grad, numerical_gradient(binary_loss, logits), "d logits")

        def mse_loss():
            return ops.mse(logits, binary, compute_grad=False, sample_weight=weights)[0]

        _, grad = ops.mse(logits, binary, sample_weight=weights)
        assert_gradient_matches(grad, numerical_gradient(mse_loss, logits), "d pred")


# -- bad options -----------------------------------------------------------------------

@pytest.mark.parametrize("call,error,match", [
    (lambda z, y: ops.softmax_cross_entropy(z, y, sample_weight=[1, 2]), ValueError,
     r"sample_weight: expected shape \(3,\)"),
    (lambda z, y: ops.softmax_cross_entropy(z, y, sample_weight=[1, -1, 1]), ValueError,
     "sample_weight: weights must be >= 0"),
    (lambda z, y: ops.mse(z, z, sample_weight=[1, np.nan, 1]), ValueError,
     "sample_weight: contains NaN"),
    (lambda z, y: ops.sigmoid_cross_entropy(z, z, sample_weight=["a", "b", "c"]), TypeError,
     "sample_weight: expected numbers"),
    (lambda z, y: ops.softmax_cross_entropy(z, y, label_smoothing=1.5), ValueError,
     r"label_smoothing: expected a number in \[0, 1\]"),
    (lambda z, y: ops.softmax_cross_entropy(z, y, label_smoothing=-0.1), ValueError,
     "label_smoothing"),
    (lambda z, y: ops.softmax_cross_entropy(z, np.eye(4)[y], ignore_index=0), ValueError,
     "ignore_index: applies to integer class labels only"),
    (lambda z, y: ops.softmax_cross_entropy(z, y, ignore_index=1.5), TypeError,
     "ignore_index: expected None or an int64"),
    (lambda z, y: ops.softmax_cross_entropy(z, [0, 7, -100], ignore_index=-100), ValueError,
     r"target: labels other than ignore_index=-100 must lie in \[0, 4\), got 7"),
    (lambda z, y: ops.softmax_cross_entropy(z, [0, -100, 1]), ValueError,
     r"target: labels must lie in \[0, 4\)"),
])
def test_bad_options_name_the_argument(call, error, match):
    z = np.zeros((3, 4))
    with pytest.raises(error, match=match):
        call(z, np.array([0, 1, 2]))


# -- the loss objects ----------------------------------------------------------------------

def digits_pair():
    x = rng_for("digits-like").random((120, 8))
    return x, (x[:, 0] + x[:, 1] > 1).astype(np.int64) + (x[:, 2] > 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["sparse", "categorical", "binary"])
def test_from_logits_trains_as_the_fused_output(backend, case):
    """A linear output with from_logits=True gives the same training, bit for bit, as a
    softmax/sigmoid output with from_logits=False (the same fused kernels run)."""
    x, labels = digits_pair()
    units, activation = (1, "sigmoid") if case == "binary" else (3, "softmax")
    y = {"sparse": labels, "categorical": np.eye(3)[labels],
         "binary": (labels > 0).astype(float)}[case]
    make = {"sparse": lambda f: losses.SparseCategoricalCrossentropy(from_logits=f),
            "categorical": lambda f: losses.CategoricalCrossentropy(from_logits=f,
                                                                    label_smoothing=0.1),
            "binary": lambda f: losses.BinaryCrossentropy(from_logits=f, label_smoothing=0.1)}
    weights = []
    with fastnn.use_backend(backend):
        for from_logits in (False, True):
            model = Sequential([Dense(16, "tanh", input_dim=8),
                                Dense(units, None if from_logits else activation)], seed=3)
            model.compile(SGD(0.1, momentum=0.9), make[case](from_logits), ["accuracy"])
            # both on the per-layer path: the compiled loop (which runs the fused output but
            # not the options) sums the epoch's loss in float64, the per-layer path in the
            # model's dtype, so the histories would differ in the last digits
            model.compiled_loop = False
            history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0)
            weights.append((model.get_weights(), history.history))
    for a, b in zip(weights[0][0], weights[1][0]):
        np.testing.assert_array_equal(a, b)
    assert weights[0][1] == weights[1][1]


def test_from_logits_checks_the_output_layer():
    model = Sequential([Dense(3, "softmax", input_dim=4)])
    with pytest.raises(ValueError, match="from_logits=True.*linear output"):
        model.compile("sgd", losses.SparseCategoricalCrossentropy(from_logits=True))
    model = Sequential([Dense(3, input_dim=4)])
    with pytest.raises(ValueError, match="use from_logits=True"):
        model.compile("sgd", losses.CategoricalCrossentropy())
    with pytest.raises(ValueError, match="use from_logits=True"):
        Sequential([Dense(1, input_dim=4)]).compile("sgd", losses.BinaryCrossentropy())
    with pytest.raises(TypeError, match="from_logits: expected True or False"):
        losses.BinaryCrossentropy(from_logits="yes")
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.CategoricalCrossentropy(label_smoothing=2)
    with pytest.raises(TypeError, match="ignore_class"):
        losses.SparseCategoricalCrossentropy(ignore_class="none")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignore_class_rows_do_not_train(backend):
    """Rows labelled ignore_class change nothing: training with them equals training on a
    copy where they carry any other label and weight 0 in the loss (checked on the loss's
    gradient, which is all the rows reach)."""
    rng = rng_for("ignore-class")
    logits = rng.standard_normal((10, 4))
    labels = rng.integers(0, 4, 10)
    labels[[1, 4, 7]] = -1
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    targets = loss.targets(labels, 4, np.dtype(np.float64))
    with fastnn.use_backend(backend) as kernels:
        grad = np.empty_like(logits)
        value = loss(kernels, logits, targets, grad, loss.make_scratch(10, 4, np.float64))
        kept = labels != -1
        expected, expected_grad = ops.softmax_cross_entropy(logits[kept], labels[kept])
    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(grad[kept], expected_grad, rtol=1e-12)
    assert not grad[~kept].any()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss.targets(np.array([0, 5, -1]), 4, np.dtype(np.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_objects_take_sample_weight(backend):
    rng = rng_for("loss-weights")
    outputs, weights = rng.standard_normal((8, 3)), rng.random(8)
    binary = rng.random((8, 3))
    labels = rng.integers(0, 3, 8)
    cases = [(losses.SparseCategoricalCrossentropy(), labels,
              lambda: ops.softmax_cross_entropy(outputs, labels, sample_weight=weights)),
             (losses.BinaryCrossentropy(label_smoothing=0.1), binary,
              lambda: ops.sigmoid_cross_entropy(outputs, binary, label_smoothing=0.1,
                                                sample_weight=weights)),
             (losses.MeanSquaredError(), binary,
              lambda: ops.mse(outputs, binary, sample_weight=weights))]
    with fastnn.use_backend(backend) as kernels:
        for loss, target, reference in cases:
            grad = np.empty_like(outputs)
            value = loss(kernels, outputs, target, grad, loss.make_scratch(8, 3, np.float64),
                         sample_weight=weights)
            expected, expected_grad = reference()
            assert value == pytest.approx(expected, rel=1e-12), loss
            np.testing.assert_allclose(grad, expected_grad, rtol=1e-12)


def test_compile_takes_loss_objects_and_a_saved_model_keeps_their_arguments(tmp_path):
    x, labels = digits_pair()
    model = Sequential([Dense(8, "relu", input_dim=8), Dense(3)], seed=0)
    model.compile("adam", losses.SparseCategoricalCrossentropy(from_logits=True,
                                                               ignore_class=2))
    model.fit(x, labels, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz")
    assert isinstance(loaded.loss, losses.SparseCategoricalCrossentropy)
    assert loaded.loss.get_config() == {"from_logits": True, "ignore_class": 2}
    assert repr(loaded.loss) == ("SparseCategoricalCrossentropy(from_logits=True, "
                                 "ignore_class=2)")
    assert loaded.evaluate(x, labels) == pytest.approx(model.evaluate(x, labels), rel=1e-6)
    for name in ("categorical_crossentropy", "binary_crossentropy", "mse"):
        assert losses.get(name).get_config() == losses.from_config(name, {}).get_config()
