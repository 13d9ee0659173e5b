"""Sequential.predict on the compiled loop (plan.MODE_PREDICT) against the per-layer path
(``compiled_loop = False``), which it must reproduce bit for bit: the same kernel calls on the
same rows, then the same deferred softmax or sigmoid (Dense.finish_outputs)."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import (Activation, Adam, BatchNormalization, Callback, Dense, Dropout, Sequential,
                    plan as plan_module)

from conftest import BACKENDS, DTYPES

#: loss -> the output layer's activation that goes with it
OUTPUTS = {"sparse_categorical_crossentropy": "softmax", "binary_crossentropy": "sigmoid",
           "mse": "linear"}


def make_model(loss, dtype, batch_norm=True, fused_activation=False):
    """A trained model with dropout (and batch norm layers, their moving statistics moved
    off 0 and 1 by a fit)."""
    layers = [Dense(9, "relu", input_dim=5), Dropout(0.4)]
    if batch_norm:
        layers += [Dense(8, use_bias=False), BatchNormalization()]
        layers.append(Activation("tanh") if fused_activation else Dropout(0.2))
    layers.append(Dense(3, OUTPUTS[loss]))
    model = Sequential(layers, dtype=dtype, seed=2)
    model.compile(Adam(0.01), loss, ["accuracy"] if loss != "mse" else None)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5))
    labels = rng.integers(0, 3, 40)
    y = labels if loss == "sparse_categorical_crossentropy" else np.eye(3)[labels]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    return model


def both_predictions(model, x, batch_size, monkeypatch):
    """(compiled, per-layer) predictions; asserts the compiled loop ran for the first."""
    built = []
    original = plan_module.build_predict

    def spy(*args, **kwargs):
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(plan_module, "build_predict", spy)
    model.compiled_loop = True
    compiled = model.predict(x, batch_size=batch_size)
    assert len(built) == 1, "predict did not run the compiled loop"
    model.compiled_loop = False
    per_layer = model.predict(x, batch_size=batch_size)
    assert len(built) == 1, "compiled_loop = False still ran the compiled loop"
    model.compiled_loop = True
    return compiled, per_layer


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("loss", sorted(OUTPUTS))
@pytest.mark.parametrize("batch_size", [None, 1, 16])  # 16: 37 rows, a short last batch
def test_compiled_predict_equals_per_layer_predict(backend, dtype, loss, batch_size,
                                                   monkeypatch):
    with fastnn.use_backend(backend):
        model = make_model(loss, dtype)
        weights, steps = model.get_weights(), model.optimizer.steps
        x = np.random.default_rng(7).standard_normal((37, 5))
        compiled, per_layer = both_predictions(model, x, batch_size, monkeypatch)
    assert compiled.dtype == per_layer.dtype == np.dtype(dtype)
    assert compiled.shape == per_layer.shape == (37, 3)
    np.testing.assert_array_equal(compiled, per_layer)
    if OUTPUTS[loss] == "softmax":  # probabilities, not the loop's pre-softmax logits
        np.testing.assert_allclose(compiled.sum(axis=1), 1, rtol=1e-5)
    elif OUTPUTS[loss] == "sigmoid":
        assert ((compiled > 0) & (compiled < 1)).all()
    # nothing changed: weights (batch norm's moving statistics among them), Adam's steps
    assert model.optimizer.steps == steps
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_predict_with_an_activation_fused_into_batch_norm(backend, monkeypatch):
    with fastnn.use_backend(backend):
        model = make_model("sparse_categorical_crossentropy", np.float32,
                           fused_activation=True)
        x = np.random.default_rng(3).standard_normal((2100, 5))  # INFERENCE_BATCH: 3 steps
        compiled, per_layer = both_predictions(model, x, 1024, monkeypatch)
    np.testing.assert_array_equal(compiled, per_layer)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_is_deterministic_and_dropout_is_off(backend):
    """Dropout off: two predictions agree, and a model without its dropout predicts the
    same."""
    with fastnn.use_backend(backend):
        model = make_model("sparse_categorical_crossentropy", np.float64, batch_norm=False)
        x = np.random.default_rng(4).standard_normal((30, 5))
        first, second = model.predict(x, batch_size=7), model.predict(x, batch_size=7)
        plain = Sequential([Dense(9, "relu", input_dim=5), Dense(3, "softmax")],
                           dtype=np.float64)
        plain.compile(Adam(0.01), "sparse_categorical_crossentropy")
        plain.build(5)
        plain.set_weights(model.get_weights())
        without_dropout = plain.predict(x, batch_size=7)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, without_dropout)


def test_predict_batch_hooks_and_uncompiled_models_take_the_per_layer_path(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the compiled loop ran")

    model = make_model("mse", np.float32)
    x = np.random.default_rng(5).standard_normal((10, 5))
    model.compiled_loop = False
    expected = model.predict(x, batch_size=4)  # the GEMM's rounding may depend on the rows
    model.compiled_loop = True

    class Batches(Callback):
        def __init__(self):
            super().__init__()
            self.outputs = []

        def on_predict_batch_end(self, batch, logs=None):
            self.outputs.append(logs["outputs"].copy())

    monkeypatch.setattr(plan_module, "build_predict", refuse)
    batches = Batches()
    np.testing.assert_array_equal(model.predict(x, batch_size=4, callbacks=[batches]),
                                  expected)
    assert [len(b) for b in batches.outputs] == [4, 4, 2]
    uncompiled = Sequential([Dense(3, input_dim=5)], seed=0)
    assert uncompiled.predict(x).shape == (10, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad, error, words", [
    (np.full((4, 5), np.nan), ValueError, "x"),
    (np.zeros((4, 6)), ValueError, "x"),
    (np.zeros((4, 5, 1)), ValueError, "x"),
    (np.zeros((0, 5)), ValueError, "x"),
    (np.array([["a"] * 5]), TypeError, "x"),
])
def test_predict_on_bad_input_raises_the_per_layer_paths_errors(backend, bad, error, words):
    model = make_model("sparse_categorical_crossentropy", np.float32)
    messages = []
    with fastnn.use_backend(backend):
        for compiled in (True, False):
            model.compiled_loop = compiled
            with pytest.raises(error, match=words) as caught:
                model.predict(bad)
            messages.append(str(caught.value))
        model.compiled_loop = True
        with pytest.raises(ValueError, match="batch_size"):
            model.predict(np.zeros((4, 5)), batch_size=0)
    assert messages[0] == messages[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_predict_before_any_fit(backend, monkeypatch):
    """A model compiled but never trained (built by predict itself) predicts compiled."""
    model = Sequential([Dense(8, "relu", input_dim=2), Dense(2, "softmax")], seed=0)
    model.compile(Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    x = np.random.default_rng(6).standard_normal((10, 2))
    with fastnn.use_backend(backend):
        compiled, per_layer = both_predictions(model, x, 3, monkeypatch)
    np.testing.assert_array_equal(compiled, per_layer)
