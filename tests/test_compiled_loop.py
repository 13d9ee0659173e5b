"""The compiled training loop (backend ``train_steps`` over a fastnn.plan.TrainingPlan)
against the per-layer path, the reference it must reproduce."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Callback, Dense, Dropout, Sequential, counter_rng, losses
from fastnn import plan as plan_module
from fastnn.backends import load_backend

from conftest import BACKENDS, DTYPES

ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh"]
OPTIMIZERS = {
    "sgd": lambda: SGD(0.05),
    "sgd-momentum-decay": lambda: SGD(0.05, momentum=0.9, weight_decay=0.01),
    "sgd-nesterov": lambda: SGD(0.05, momentum=0.8, nesterov=True, weight_decay=0.001),
    "adam": lambda: Adam(0.01, weight_decay=0.001),
}
#: Losses whose compiled loop computes the loss in C or Numba code of its own rather than
#: with the per-layer path's kernel: binary cross-entropy is NumPy code in the per-layer
#: path (losses.BinaryCrossentropy), whose float32 exp and log1p (NumPy's SIMD ones) can
#: differ from C's and LLVM's by an ulp, so the weights agree to float tolerance there.
OWN_LOSS_CODE = {"binary_crossentropy"}


def data(rows=53, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    labels = (x[:, :classes] + 0.3 * rng.standard_normal((rows, classes))).argmax(axis=1)
    return x, labels


def targets_for(loss, labels, classes=3):
    if loss == "sparse_categorical_crossentropy":
        return labels
    one_hot = np.eye(classes)[labels]
    if loss == "categorical_crossentropy":
        return 0.9 * one_hot + 0.1 / classes  # soft rows: the probabilities path
    return one_hot  # binary_crossentropy, mse: one value per output


def output_activation(loss):
    return {"sparse_categorical_crossentropy": "softmax", "categorical_crossentropy": "softmax",
            "binary_crossentropy": "sigmoid", "mse": "identity"}[loss]


def train(backend, compiled, dtype=np.float32, activation="tanh",
          loss="sparse_categorical_crossentropy", optimizer="sgd-nesterov", batch_size=8,
          dropout=0.25, epochs=2, callbacks=(), shuffle=True, matmul_precision=None):
    x, labels = data()
    y = targets_for(loss, labels)
    layers = [Dense(7, activation, input_dim=5)]
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(6, activation), Dense(3, output_activation(loss))]
    model = Sequential(layers, dtype=dtype, seed=1, matmul_precision=matmul_precision)
    model.compile(OPTIMIZERS[optimizer](), loss, ["accuracy"])
    model.compiled_loop = compiled
    with fastnn.use_backend(backend):
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, seed=3,
                            callbacks=list(callbacks), shuffle=shuffle)
    return model, history.history


def assert_same_training(backend, exact=True, **settings):
    per_layer, per_layer_history = train(backend, False, **settings)
    compiled, compiled_history = train(backend, True, **settings)
    assert plan_module.unsupported(compiled) is None
    dtype = np.dtype(settings.get("dtype", np.float32))
    for a, b in zip(per_layer.get_weights(), compiled.get_weights()):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            rtol = 1e-4 if dtype == np.float32 else 1e-10
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert per_layer_history["accuracy"] == compiled_history["accuracy"]
    # The compiled loops sum each batch's loss in float64, the per-layer path in the dtype.
    np.testing.assert_allclose(per_layer_history["loss"], compiled_history["loss"],
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


# -- the same weights as the per-layer path ------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_trains_bit_for_bit_as_the_per_layer_path(backend, dtype, activation):
    assert_same_training(backend, dtype=dtype, activation=activation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy",
                                  "binary_crossentropy", "mse"])
def test_every_loss_trains_as_the_per_layer_path(backend, dtype, loss):
    exact = backend == "numpy" or loss not in OWN_LOSS_CODE
    assert_same_training(backend, exact=exact, dtype=dtype, loss=loss)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_trains_bit_for_bit_as_the_per_layer_path(backend, dtype, optimizer):
    assert_same_training(backend, dtype=dtype, optimizer=optimizer)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("batch_size", [None, 1, 8, 53, 100], ids=lambda b: f"batch-{b}")
def test_every_batch_size_trains_bit_for_bit_as_the_per_layer_path(backend, dtype, batch_size):
    # 53 rows: batch 8 leaves a last batch of 5; None, 53 and 100 are one full batch.
    assert_same_training(backend, dtype=dtype, batch_size=batch_size)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_wide_model_takes_the_blocked_and_parallel_kernels_bit_for_bit(backend, precision):
    """Layers large enough for the packed GEMMs and the backends' parallel kernels, in each
    matmul precision (a context's, which the plan reads at every call); evaluate and predict
    too."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 160)).astype(np.float32)
    y = x[:, :10].argmax(axis=1)
    results = []
    for compiled in (False, True):
        model = Sequential([Dense(256, "relu"), Dropout(0.1), Dense(192, "tanh"),
                            Dense(10, "softmax")], seed=0)
        model.compile(SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
        model.compiled_loop = compiled
        with fastnn.use_backend(backend), fastnn.matmul_precision(precision):
            model.fit(x, y, epochs=2, batch_size=128, verbose=0, seed=2)
            results.append((model.get_weights(), model.evaluate(x, y, verbose=0),
                            model.predict(x)))
    (weights, loss, outputs), (weights_c, loss_c, outputs_c) = results
    for a, b in zip(weights, weights_c):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loss_c, loss, rtol=1e-6)
    np.testing.assert_array_equal(outputs_c, outputs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_loops_agree_with_the_numpy_reference(backend):
    reference, _ = train("numpy", True, dtype=np.float64, optimizer="adam")
    model, _ = train(backend, True, dtype=np.float64, optimizer="adam")
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# -- dropout ------------------------------------------------------------------------

def test_the_plan_and_the_kernels_share_their_constants():
    c = pytest.importorskip("fastnn.backends.c_backend")
    from fastnn.backends.numba_kernels import train as numba_train
    names = {"LAYER_DENSE": "LAYER_DENSE", "LAYER_DROPOUT": "LAYER_DROPOUT",
             "LAYER_INTS": "LAYER_INTS", "LAYER_REALS": "LAYER_REALS",
             "CONFIG_SIZE": "CONFIG_SIZE", "HYPER_SIZE": "HYPER_SIZE"}
    for column in ("KIND", "INPUTS", "UNITS", "ACTIVATION", "WEIGHT", "BIAS", "OUTPUT", "MASK",
                   "KEY", "THRESHOLD", "PRECISION"):
        names[column] = f"LI_{column}"
        assert getattr(numba_train, column) == getattr(plan_module, column)
    for column in ("ALPHA", "SCALE"):
        names[column] = f"LR_{column}"
    for prefix in ("LOSS_", "OPTIMIZER_", "METRIC_", "MODE_", "C_", "H_", "PRECISION_"):
        for name in dir(plan_module):
            if name.startswith(prefix):
                names[name] = name
                if hasattr(numba_train, name):
                    assert getattr(numba_train, name) == getattr(plan_module, name), name
    for plan_name, c_name in names.items():
        assert getattr(c.lib, f"FASTNN_{c_name}") == getattr(plan_module, plan_name), plan_name


def test_masks_follow_the_counter_based_generator_on_every_backend():
    """Two steps of a dropout model: on every backend the dropout layer's output is the data
    times the reference draw's mask, bit for bit."""
    x, labels = data(rows=40, features=64)
    x = x.astype(np.float32)
    outputs = {}
    for backend in BACKENDS:
        model = Sequential([Dropout(0.3, input_dim=64), Dense(3, "softmax")], seed=0)
        model.compile(SGD(0.1), "sparse_categorical_crossentropy")
        clock = counter_rng.StepClock()
        for position, layer in enumerate(model.layers):
            layer.set_random(99, position, clock)
        model.build(64)
        checked = model._prepare(x, labels)
        plan = plan_module.build(model, checked, 16, 99, clock)
        plan.refresh(epoch=4)
        stats = np.zeros((2, 2))
        with fastnn.use_backend(backend) as module:
            assert module.train_steps(plan, np.arange(40), 1, 2, stats) == 2
        outputs[backend] = plan.layer_output(0, 8).copy()  # the last step's: rows 32..39
    scratch = counter_rng.MaskScratch(16 * 64)
    key = counter_rng.step_key(counter_rng.layer_key(99, 0), 4, 2)
    keep = counter_rng.draw_keep(key, counter_rng.keep_threshold(0.3), scratch, 16 * 64)
    mask = np.where(keep, np.float32(1 / 0.7), np.float32(0))[:8 * 64].reshape(8, 64)
    assert 0.2 < 1 - keep.mean() < 0.4
    for backend, output in outputs.items():
        np.testing.assert_array_equal(output, x[32:40] * mask, err_msg=backend)


def test_counter_rng_matches_its_scalar_definition():
    scratch = counter_rng.MaskScratch(50)
    key = counter_rng.step_key(counter_rng.layer_key(7, 2), 1, 3)
    keep = counter_rng.draw_keep(key, counter_rng.keep_threshold(0.5), scratch, 50)
    scalar = [counter_rng.mix(key + (e + 1) * counter_rng.GOLDEN) >> 40 >= 1 << 23
              for e in range(50)]
    assert keep.tolist() == scalar


class SwitchBackends(Callback):
    """Makes a different backend current at the start of each epoch."""

    def __init__(self, names):
        self.names = names

    def on_epoch_begin(self, epoch, logs=None):
        fastnn.set_backend(self.names[epoch % len(self.names)])


def test_switching_backends_between_epochs_keeps_training_within_tolerance():
    straight, _ = train("numpy", True, dtype=np.float64, epochs=4)
    switched, _ = train("numpy", True, dtype=np.float64, epochs=4,
                        callbacks=[SwitchBackends(BACKENDS[::-1])])
    for a, b in zip(straight.get_weights(), switched.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


# -- non-finite losses --------------------------------------------------------------

def non_finite_fit_on_both_paths(backend, make_model, x, y, **fit_args):
    """Fit ``make_model()`` (a compiled Sequential) on x, y on the per-layer path and on the
    compiled loop, each raising NonFiniteLossError; asserts the same message and the same
    (finite) weights on both, and returns the message."""
    results = []
    for compiled in (False, True):
        model = make_model()
        model.compiled_loop = compiled
        with fastnn.use_backend(backend), np.errstate(all="ignore"):
            with pytest.raises(fastnn.NonFiniteLossError) as error:
                model.fit(x, y, verbose=0, shuffle=False, **fit_args)
        results.append((str(error.value), model.get_weights()))
    (message, weights), (compiled_message, compiled_weights) = results
    assert message == compiled_message
    for a, b in zip(weights, compiled_weights):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(b).all()
    return compiled_message


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_loss_stops_at_its_step_with_the_weights_before_it(backend):
    x = np.linspace(1, 4, 16).reshape(-1, 1) * 1e3

    def make_model():
        model = Sequential([Dense(1, input_dim=1)], seed=0)
        model.compile(SGD(lr=10.0), "mse")
        return model

    message = non_finite_fit_on_both_paths(backend, make_model, x, x[:, 0], epochs=50,
                                           batch_size=2)
    # Several steps update the weights before the loss overflows.
    assert re.match(r"loss is (inf|nan) at epoch 1, step [2-8] of 8", message), message


# -- callbacks, train_on_batch, fallback --------------------------------------------

class BatchLog(Callback):
    def __init__(self):
        self.calls = []

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("end", batch, logs["loss"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_batch_hooks_are_called_around_every_step(backend):
    log = BatchLog()
    with_hooks, _ = train(backend, True, callbacks=[log], epochs=1)
    without, _ = train(backend, True, epochs=1)
    steps = 7  # 53 rows, batch 8
    assert [call[:2] for call in log.calls] == [(kind, step) for step in range(steps)
                                                for kind in ("begin", "end")]
    assert all(np.isfinite(call[2]) for call in log.calls if call[0] == "end")
    for a, b in zip(with_hooks.get_weights(), without.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_on_batch_is_one_step_and_returns_the_loss_before_it(backend):
    x, labels = data()
    results = []
    for compiled in (False, True):
        model = Sequential([Dense(6, "relu", input_dim=5), Dropout(0.2), Dense(3, "softmax")],
                           seed=0)
        model.compile(Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
        model.compiled_loop = compiled
        model.build(5)
        with fastnn.use_backend(backend):
            before = model.get_weights()
            assert len(before) == 4
            first = model.train_on_batch(x[:20], labels[:20])
            assert any((a != b).any() for a, b in zip(before, model.get_weights()))
            second = model.train_on_batch(x[20:40], labels[20:40], return_dict=True)
        results.append((first, second, model.get_weights()))
    (first, second, weights), (compiled_first, compiled_second, compiled_weights) = results
    assert isinstance(first, list) and len(first) == 2 and 0 <= first[1] <= 1
    np.testing.assert_allclose(first, compiled_first, rtol=1e-5)
    assert set(second) == {"loss", "accuracy"}
    for a, b in zip(weights, compiled_weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd-momentum-decay", "adam"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_model_trains_on_by_itself_as_the_original_would(backend, optimizer, how):
    # deepcopy copied each parameter (a view into the model's buffer) as an array of its own:
    # the copy's fit left its weights as they were; after a train_on_batch, whose kept plan
    # holds the C backend's struct of pointers, deepcopy raised TypeError; pickle raised
    # TypeError on the optimizer's weak reference to its model
    import copy
    import pickle
    duplicate = copy.deepcopy if how == "deepcopy" else lambda m: pickle.loads(pickle.dumps(m))
    x, labels = data()
    model = Sequential([Dense(6, "relu", input_dim=5), Dense(3, "softmax")], seed=0)
    model.compile(OPTIMIZERS[optimizer](), "sparse_categorical_crossentropy")
    with fastnn.use_backend(backend):
        model.fit(x[:20], labels[:20], epochs=2, batch_size=8, verbose=0)
        model.train_on_batch(x[20:30], labels[20:30])
        twin = duplicate(model)
        assert plan_module.unsupported(twin) is None  # the compiled loop runs the copy
        np.testing.assert_array_equal(twin.predict(x), model.predict(x))
        kept = model.get_weights()
        twin.fit(x[30:], labels[30:], epochs=2, batch_size=8, shuffle=False, verbose=0)
        for before, after in zip(kept, twin.get_weights()):
            assert (before != after).any()
        for a, b in zip(kept, model.get_weights()):  # the original did not move
            np.testing.assert_array_equal(a, b)
        model.fit(x[30:], labels[30:], epochs=2, batch_size=8, shuffle=False, verbose=0)
        for a, b in zip(twin.get_weights(), model.get_weights()):  # the optimizer's state
            np.testing.assert_array_equal(a, b)                   # was copied too


def test_train_on_batch_without_dropout_matches_a_full_batch_epoch():
    x, labels = data()
    one = Sequential([Dense(6, "tanh", input_dim=5), Dense(3, "softmax")], seed=0)
    one.compile(SGD(0.1), "sparse_categorical_crossentropy")
    expected_loss = one.evaluate(x, labels)
    loss = one.train_on_batch(x, labels)
    two = Sequential([Dense(6, "tanh", input_dim=5), Dense(3, "softmax")], seed=0)
    two.compile(SGD(0.1), "sparse_categorical_crossentropy")
    two.fit(x, labels, epochs=1, batch_size=None, verbose=0)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_array_equal(a, b)


class HalfMeanSquaredError(losses.MeanSquaredError):
    """A loss the plan does not know: fit falls back to the per-layer path."""

    def __call__(self, backend, outputs, targets, grad, scratch, sample_weight=None):
        value = super().__call__(backend, outputs, targets, grad, scratch, sample_weight)
        if grad is not None:
            grad *= 0.5
        return 0.5 * value


def test_what_the_plan_does_not_cover_trains_on_the_per_layer_path(monkeypatch):
    x, labels = data()
    y = np.eye(3)[labels]
    model = Sequential([Dense(4, "relu", input_dim=5), Dense(3)], seed=0)
    model.compile(SGD(0.1), HalfMeanSquaredError())
    model.build(5)
    assert "loss is a HalfMeanSquaredError" in plan_module.unsupported(model)
    for name in BACKENDS:
        def refuse(*args):
            raise AssertionError("the compiled loop ran a model it does not support")
        monkeypatch.setattr(load_backend(name), "train_steps", refuse)
    before = model.evaluate(x, y)
    model.fit(x, y, epochs=5, verbose=0, seed=0)
    assert model.evaluate(x, y) < before


# -- bfloat16 matmul precision ------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("batch_size", [1, 8, None], ids=lambda b: f"batch-{b}")
def test_bfloat16_matmuls_train_bit_for_bit_as_the_per_layer_path(backend, optimizer,
                                                                  batch_size):
    """Dense layers in bfloat16 matmul precision (each layer's GEMMs on rounded operands, as
    the per-layer kernels) in the compiled loop: the weights of the per-layer path bit for
    bit, a short last batch included (53 rows at batch 8)."""
    assert_same_training(backend, matmul_precision="bfloat16", optimizer=optimizer,
                         batch_size=batch_size)
    float32, _ = train(backend, True, optimizer=optimizer, batch_size=batch_size)
    bfloat16, _ = train(backend, True, optimizer=optimizer, batch_size=batch_size,
                        matmul_precision="bfloat16")
    assert not np.array_equal(float32.get_weights()[0], bfloat16.get_weights()[0])


@pytest.mark.skipif("numba" not in BACKENDS, reason="the numba backend is not under test here")
def test_the_numba_loop_gets_bfloat16_copies_only_for_a_plan_with_bfloat16(monkeypatch):
    """A plan without bfloat16 layers passes None for the three bfloat16 copies, so that
    Numba compiles its loop without their branches; a plan with them gets arrays of
    rounded_sizes (13 rows at batch 13 of 5 inputs, 7 x 6 weights)."""
    from fastnn.backends.numba_kernels import train as numba_train
    original, copies = numba_train.train_steps, []

    def record(*args):
        copies.append(args[-3:])
        return original(*args)

    monkeypatch.setattr(numba_train, "train_steps", record)
    train("numba", True, batch_size=13)
    assert copies and all(copy is None for step in copies for copy in step)
    copies.clear()
    train("numba", True, batch_size=13, matmul_precision="bfloat16")
    assert copies
    for round_a, round_w, round_dz in copies:
        assert (round_a.size, round_w.size, round_dz.size) == (13 * 7, 7 * 6, 13 * 7)

# -- evaluate ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy",
                                  "binary_crossentropy", "mse"])
def test_evaluate_runs_the_compiled_loop_without_changing_anything(backend, loss):
    """evaluate and fit's validation: the compiled loop in evaluation mode (dropout off,
    nothing updated) gives the per-layer path's loss and accuracy."""
    model, _ = train(backend, True, loss=loss, optimizer="adam")
    x, labels = data(rows=2100, seed=5)  # INFERENCE_BATCH 1024: three batches, one short
    y = targets_for(loss, labels)
    weights, steps = model.get_weights(), model.optimizer.steps
    results = {}
    with fastnn.use_backend(backend):
        for compiled in (True, False):
            model.compiled_loop = compiled
            results[compiled] = model.evaluate(x, y, return_dict=True)
    assert model.optimizer.steps == steps
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert results[True]["accuracy"] == results[False]["accuracy"]
    assert results[True]["loss"] == pytest.approx(results[False]["loss"], rel=1e-5)
    assert np.isfinite(results[True]["loss"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_logs_match_the_per_layer_path(backend):
    histories = []
    for compiled in (True, False):
        x, labels = data()
        model = Sequential([Dense(7, "relu", input_dim=5), Dropout(0.3), Dense(3, "softmax")],
                           seed=0)
        model.compile(SGD(0.1), "sparse_categorical_crossentropy", ["accuracy"])
        model.compiled_loop = compiled
        with fastnn.use_backend(backend):
            histories.append(model.fit(x, labels, epochs=2, batch_size=8, verbose=0, seed=1,
                                       validation_split=0.3).history)
    assert histories[0]["val_accuracy"] == histories[1]["val_accuracy"]
    np.testing.assert_allclose(histories[0]["val_loss"], histories[1]["val_loss"], rtol=1e-5)
