"""BatchNormalization, Activation and Dense(use_bias=False) in the compiled training loop
(backend ``train_steps`` over a fastnn.plan.TrainingPlan) against the per-layer path.

The compiled loops make the per-layer path's kernel calls (the same serial or parallel
variant, the same arguments), so the weights and the moving statistics come out bit for
bit the same on every backend; the numba and C loops against the numpy reference loop
agree to float64 rounding (rtol 1e-9).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import (SGD, Activation, Adam, BatchNormalization, Dense, Dropout, Sequential)
from fastnn import plan as plan_module

from conftest import BACKENDS, DTYPES


def data(rows=53, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)) * 3 + 1
    labels = (x[:, :classes] + 0.3 * rng.standard_normal((rows, classes))).argmax(axis=1)
    return x, labels


def keras_idiom(dropout=0.25, **first_norm):
    """Dense(use_bias=False), BatchNormalization(), Activation(...) twice, with dropout."""
    layers = [Dense(7, use_bias=False, input_dim=5), BatchNormalization(**first_norm),
              Activation("relu")]
    if dropout:
        layers.append(Dropout(dropout))
    return layers + [Dense(6, use_bias=False), BatchNormalization(momentum=0.9, epsilon=1e-2),
                     Activation("tanh"), Dense(3, "softmax")]


def train(backend, compiled, layers, dtype=np.float32, optimizer=None, batch_size=8, epochs=2,
          validation=False):
    """Fit (53 rows in batches of 8: a last batch of 5), then evaluate; returns the model, the
    history and the evaluation."""
    x, labels = data()
    model = Sequential(layers, dtype=dtype, seed=1)
    model.compile(optimizer() if optimizer else SGD(0.05, momentum=0.9, nesterov=True),
                  "sparse_categorical_crossentropy", ["accuracy"])
    model.compiled_loop = compiled
    x_val, labels_val = data(rows=21, seed=4)
    with fastnn.use_backend(backend):
        history = model.fit(x, labels, epochs=epochs, batch_size=batch_size, verbose=0, seed=3,
                            validation_data=(x_val, labels_val) if validation else None)
        before = [w.copy() for w in model.get_weights()]
        evaluation = model.evaluate(x_val, labels_val, batch_size=batch_size)
    for a, b in zip(before, model.get_weights()):  # evaluate updates nothing
        np.testing.assert_array_equal(a, b)
    return model, history.history, evaluation


def assert_same_training(backend, make_layers, **settings):
    per_layer, per_layer_history, per_layer_evaluation = train(backend, False, make_layers(),
                                                               **settings)
    compiled, compiled_history, compiled_evaluation = train(backend, True, make_layers(),
                                                            **settings)
    assert plan_module.unsupported(compiled) is None
    first = next(layer for layer in compiled.layers if isinstance(layer, BatchNormalization))
    assert np.any(first.moving_mean != 0)  # the moving statistics did move
    # get_weights holds gamma, beta, moving mean and moving variance of each batch norm
    for a, b in zip(per_layer.get_weights(), compiled.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert per_layer_history["accuracy"] == compiled_history["accuracy"]
    rtol = 1e-5 if np.dtype(settings.get("dtype", np.float32)) == np.float32 else 1e-12
    # the compiled loops sum each batch's loss in float64, the per-layer path in the dtype
    np.testing.assert_allclose(per_layer_history["loss"], compiled_history["loss"], rtol=rtol)
    for key in per_layer_history:
        if key.startswith("val_"):
            np.testing.assert_allclose(per_layer_history[key], compiled_history[key],
                                       rtol=rtol)
    np.testing.assert_allclose(per_layer_evaluation, compiled_evaluation, rtol=rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_the_keras_idiom_trains_bit_for_bit_as_the_per_layer_path(backend, dtype):
    assert_same_training(backend, keras_idiom, dtype=dtype, validation=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [1, 53], ids=lambda b: f"batch-{b}")
def test_one_row_and_one_full_batch(backend, batch_size):
    # batch 1: variance 0, the output is beta (documented); 53: the data read in place
    assert_same_training(backend, lambda: keras_idiom(dropout=0.0), batch_size=batch_size,
                         dtype=np.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_and_leaky_relu_sigmoid_fused(backend):
    def layers():
        return [Dense(9, use_bias=False, input_dim=5), BatchNormalization(momentum=0.5),
                Activation("leaky_relu", alpha=0.2), Dense(6), BatchNormalization(),
                Activation("sigmoid"), Dropout(0.5), Dense(3, "softmax")]
    assert_same_training(backend, layers, optimizer=lambda: Adam(0.01, weight_decay=0.001))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_activation_layers_not_fused(backend, dtype):
    """An Activation first, after a Dense, after a Dropout, as the softmax output, and a batch
    norm without a following activation."""
    def layers():
        return [Activation("tanh", input_dim=5), Dense(8, use_bias=False),
                Activation("leaky_relu", alpha=0.1), Dropout(0.2), Activation("sigmoid"),
                BatchNormalization(), Dense(3), Activation("softmax")]
    assert_same_training(backend, layers, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wide_layers_take_the_parallel_kernels_bit_for_bit(backend):
    """Batches large enough for the backends' parallel batch norm and activation kernels."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 160)).astype(np.float32)
    y = x[:, :10].argmax(axis=1)
    weights = []
    for compiled in (False, True):
        model = Sequential([Dense(256, use_bias=False), BatchNormalization(), Activation("relu"),
                            Dropout(0.1), Dense(192), Activation("tanh"), BatchNormalization(),
                            Dense(10, "softmax")], seed=0)
        model.compile(SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
        model.compiled_loop = compiled
        with fastnn.use_backend(backend):
            model.fit(x, y, epochs=2, batch_size=256, verbose=0, seed=2)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_loops_agree_with_the_numpy_reference(backend):
    reference, _, reference_evaluation = train("numpy", True, keras_idiom(), dtype=np.float64)
    model, _, evaluation = train(backend, True, keras_idiom(), dtype=np.float64)
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(reference_evaluation, evaluation, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_on_batch_updates_the_moving_statistics(backend):
    x, labels = data()
    models = []
    for compiled in (False, True):
        model = Sequential(keras_idiom(), seed=0, dtype="float64")
        model.compile(SGD(0.1), "sparse_categorical_crossentropy")
        model.compiled_loop = compiled
        with fastnn.use_backend(backend):
            for start in (0, 16, 32):
                model.train_on_batch(x[start:start + 16], labels[start:start + 16])
        models.append(model)
    assert np.any(models[1].layers[1].moving_mean != 0)
    for a, b in zip(*(m.get_weights() for m in models)):
        np.testing.assert_array_equal(a, b)


def test_the_plan_lays_out_batch_norm_and_says_what_it_cannot_run():
    model = Sequential(keras_idiom(), seed=0)
    model.compile(SGD(0.1), "sparse_categorical_crossentropy")
    model.build(5)
    x, labels = data()
    plan = plan_module.build(model, model._prepare(x, labels), 8, 0,
                             fastnn.counter_rng.StepClock())
    ints, reals = plan.layer_ints, plan.layer_reals
    assert ints[0, plan_module.BIAS] == -1
    norm = model.layers[1]
    assert ints[1, plan_module.KIND] == plan_module.LAYER_BATCHNORM
    assert ints[2, plan_module.KIND] == plan_module.LAYER_ACTIVATION
    assert ints[2, plan_module.OUTPUT] == ints[1, plan_module.OUTPUT]  # fused: one buffer
    assert reals[5, plan_module.MOMENTUM] == 0.9 and reals[5, plan_module.EPSILON] == 1e-2
    gamma = int(ints[1, plan_module.GAMMA])
    np.testing.assert_array_equal(plan.params[gamma:gamma + 7], norm.gamma)
    state = int(ints[1, plan_module.STATE])
    norm.moving_variance[...] = 3
    plan.refresh(0)
    np.testing.assert_array_equal(plan.masks[state + 7:state + 14], 3)
    plan.masks[state:state + 7] = 2
    plan.finish()
    np.testing.assert_array_equal(norm.moving_mean, 2)
    for norm_options in ({"center": False}, {"scale": False}):
        model = Sequential(keras_idiom(**norm_options))
        model.compile(SGD(0.1), "sparse_categorical_crossentropy")
        model.build(5)
        assert plan_module.unsupported(model) == \
            "layer 1 is a BatchNormalization without center or scale"


def test_the_plan_and_the_kernels_share_the_new_constants():
    c = pytest.importorskip("fastnn.backends.c_backend")
    from fastnn.backends.numba_kernels import train as numba_train
    for name in ("LAYER_DENSE", "LAYER_DROPOUT", "LAYER_BATCHNORM", "LAYER_ACTIVATION",
                 "LAYER_INTS", "LAYER_REALS"):
        assert getattr(c.lib, f"FASTNN_{name}") == getattr(plan_module, name), name
    for name in ("LAYER_DENSE", "LAYER_DROPOUT", "LAYER_BATCHNORM", "LAYER_ACTIVATION"):
        assert getattr(numba_train, name) == getattr(plan_module, name), name
    for column in ("GAMMA", "BETA", "STATE"):
        assert getattr(c.lib, f"FASTNN_LI_{column}") == getattr(plan_module, column)
        assert getattr(numba_train, column) == getattr(plan_module, column)
    for column in ("ALPHA", "SCALE", "MOMENTUM", "EPSILON"):
        assert getattr(c.lib, f"FASTNN_LR_{column}") == getattr(plan_module, column)
        assert getattr(numba_train, column) == getattr(plan_module, column)
