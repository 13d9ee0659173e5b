"""Layers, initializers, losses and optimizers; whole-model gradient checks in float64.

The gradient checks run one full-batch step of plain SGD with lr = 1 through
``fit`` (so the update is exactly the gradient: before - after) and compare
it with central differences of ``evaluate``'s loss, on every backend.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Dense, Dropout, Sequential, initializers, losses, optimizers

from conftest import BACKENDS

HIDDEN_ACTIVATIONS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh"]
STEP = 1e-6


def analytic_gradients(model, x, y):
    """d(mean loss)/d(every parameter) from one full-batch SGD step with lr = 1."""
    before = model.get_weights()
    model.fit(x, y, epochs=1, batch_size=None, shuffle=False, verbose=0)
    after = model.get_weights()
    model.set_weights(before)
    return [b - a for b, a in zip(before, after)]


def numerical_gradients(model, x, y):
    weights = model.get_weights()
    grads = []
    for array in weights:
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            losses_at = []
            for value in (saved + STEP, saved - STEP):
                array[index] = value
                model.set_weights(weights)
                losses_at.append(model.evaluate(x, y))
            array[index] = saved
            grad[index] = (losses_at[0] - losses_at[1]) / (2 * STEP)
        grads.append(grad)
    model.set_weights(weights)
    return grads


def assert_gradients_match(model, x, y):
    analytic = analytic_gradients(model, x, y)
    numeric = numerical_gradients(model, x, y)
    for position, (a, n) in enumerate(zip(analytic, numeric)):
        error = np.abs(a - n).max() / max(np.abs(n).max(), 1e-8)
        assert error < 1e-5, f"parameter {position}: relative error {error:.2e}"


def small_model(hidden_activation, output_units, output_activation, loss, seed=3):
    model = Sequential([Dense(5, hidden_activation, input_dim=4, alpha=0.1,
                              bias_initializer="random_normal"),
                        Dense(output_units, output_activation,
                              bias_initializer="random_normal")],
                       dtype="float64", seed=seed)
    model.compile(SGD(lr=1.0), loss)
    model.build()
    return model


# The inputs are kept off relu's kink at 0 by the seeds: finite differences need a smooth loss.
RNG = np.random.default_rng(5)
X = RNG.standard_normal((6, 4))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_gradients_of_softmax_cross_entropy_models(backend, activation, loss):
    labels = np.array([0, 1, 2, 1, 0, 2])
    y = labels if loss.startswith("sparse") else np.eye(3)[labels]
    with fastnn.use_backend(backend):
        assert_gradients_match(small_model(activation, 3, "softmax", loss), X, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradients_of_sigmoid_binary_cross_entropy_models(backend, activation):
    y = np.array([[0, 1], [1, 1], [0.3, 0], [1, 0], [0, 0.8], [1, 1]])
    with fastnn.use_backend(backend):
        assert_gradients_match(small_model(activation, 2, "sigmoid", "binary_crossentropy"), X, y)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output_activation", HIDDEN_ACTIVATIONS)
def test_gradients_of_mse_models(backend, output_activation):
    y = np.random.default_rng(9).standard_normal((6, 2))
    with fastnn.use_backend(backend):
        assert_gradients_match(small_model("tanh", 2, output_activation, "mse"), X, y)


def test_binary_cross_entropy_is_finite_and_exact_for_extreme_logits():
    backend = fastnn.get_backend()
    logits = np.array([[1000.0, -1000.0, 0.0]])
    targets = np.array([[0.0, 1.0, 1.0]])
    loss = losses.BinaryCrossentropy()
    grad = np.empty_like(logits)
    value = loss(backend, logits, targets, grad, loss.make_scratch(1, 3, logits.dtype))
    assert value == pytest.approx((1000 + 1000 + np.log(2)) / 3)
    np.testing.assert_allclose(grad, [[1 / 3, -1 / 3, -0.5 / 3]])


# -- Dense and Dropout --------------------------------------------------------

def test_dense_rejects_unknown_activation_listing_the_valid_ones():
    with pytest.raises(ValueError, match="activation.*'swish'.*relu.*softmax"):
        Dense(3, "swish")


def test_softmax_is_only_allowed_on_the_output_layer():
    model = Sequential([Dense(4, "softmax", input_dim=2), Dense(2, "softmax")])
    with pytest.raises(ValueError, match="softmax is only supported on the output layer"):
        model.build()


@pytest.mark.parametrize("units", [0, -1, 2.5, True])
def test_dense_rejects_bad_units(units):
    with pytest.raises(ValueError, match="units"):
        Dense(units)


def test_dense_infers_its_input_size_and_linear_is_identity():
    model = Sequential([Dense(3, "linear")], dtype="float64", seed=0)
    x = np.arange(8.0).reshape(4, 2)
    out = model.predict(x)
    w, b = model.get_weights()
    np.testing.assert_allclose(out, x @ w + b)


def test_dropout_scales_kept_units_and_drops_about_rate_of_them():
    layer = Dropout(0.25, seed=1)
    layer.build(1000, np.float64, np.random.default_rng())
    x = np.ones((40, 1000))
    out, mask = np.empty_like(x), layer.make_scratch(40, np.float64, True)
    layer.forward(None, x, out, mask, training=True)
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    assert abs((out == 0).mean() - 0.25) < 0.01
    dx = np.empty_like(x)
    layer.backward(None, x, out, x, dx, mask)
    np.testing.assert_array_equal(dx, out)  # the same mask scales the gradient


def test_dropout_is_inactive_outside_training_and_seeded_in_training():
    def model():
        m = Sequential([Dense(16, "relu", input_dim=4), Dropout(0.5), Dense(2, "softmax")],
                       seed=0)
        m.compile("sgd", "sparse_categorical_crossentropy")
        return m

    x, y = np.random.default_rng(0).random((32, 4)), np.arange(32) % 2
    first, second = model(), model()
    np.testing.assert_array_equal(first.predict(x), first.predict(x))  # no randomness
    first.fit(x, y, epochs=2, verbose=0, seed=4)
    second.fit(x, y, epochs=2, verbose=0, seed=4)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rejects_rates_outside_zero_one(rate):
    with pytest.raises(ValueError, match="rate"):
        Dropout(rate)


# -- initializers ------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(initializers.INITIALIZERS))
def test_initializers_by_name_are_seeded_and_shaped(name):
    first = initializers.get(name)((30, 20), np.float32, np.random.default_rng(1))
    second = initializers.get(name)((30, 20), np.float32, np.random.default_rng(1))
    assert first.shape == (30, 20) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


def test_initializer_ranges_follow_keras():
    rng = np.random.default_rng(0)
    assert np.abs(initializers.get("random_uniform")((100, 100), np.float64, rng)).max() <= 0.05
    limit = np.sqrt(6 / (300 + 100))
    glorot = initializers.get("glorot_uniform")((300, 100), np.float64, rng)
    assert np.abs(glorot).max() <= limit and np.abs(glorot).max() > 0.9 * limit
    he = initializers.get("he_normal")((400, 400), np.float64, rng)
    assert he.std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    assert np.abs(he).max() <= 2 * np.sqrt(2 / 400) / 0.87962566103423978 + 1e-12
    assert not initializers.get("zeros")((3,), np.float64, rng).any()
    assert (initializers.get("ones")((3,), np.float64, rng) == 1).all()


def test_an_initializer_with_its_own_seed_ignores_the_model_generator():
    init = initializers.RandomNormal(stddev=1.0, seed=7)
    a = init((5,), np.float64, np.random.default_rng(1))
    b = init((5,), np.float64, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)


def test_unknown_initializer_lists_the_valid_names():
    with pytest.raises(ValueError, match="kernel_initializer.*'orthogonal'.*glorot_uniform"):
        Dense(3, kernel_initializer="orthogonal")


# -- losses and optimizers -----------------------------------------------------

def test_unknown_loss_and_optimizer_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="'hinge'.*categorical_crossentropy.*mse"):
        losses.get("hinge")
    with pytest.raises(ValueError, match="'rmsprop'.*adam.*sgd"):
        optimizers.get("rmsprop")


def test_optimizer_hyperparameters_are_checked():
    with pytest.raises(ValueError, match="lr"):
        SGD(lr=0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        Adam(beta1=1.0)


@pytest.mark.parametrize("make, name, value, error", [
    (SGD, "lr", -0.1, ValueError),
    (SGD, "lr", "a", TypeError),
    (SGD, "lr", float("nan"), ValueError),
    (SGD, "learning_rate", 0, ValueError),
    (SGD, "weight_decay", -1, ValueError),
    (SGD, "momentum", 1.0, ValueError),
    (SGD, "momentum", "a", TypeError),
    (lambda: SGD(momentum=0.9, nesterov=True), "momentum", 0, ValueError),
    (Adam, "beta1", 1.0, ValueError),
    (Adam, "beta2", -0.5, ValueError),
    (Adam, "eps", 0, ValueError),
    (Adam, "weight_decay", float("inf"), ValueError),
])
def test_optimizer_hyperparameters_set_after_construction_are_checked(make, name, value, error):
    """Setting a hyperparameter checks it as the constructor does, names it and keeps the
    old value (a bad lr used to train to 1e35, or to break a later save)."""
    optimizer = make()
    before = optimizer.get_config()
    with pytest.raises(error, match=f"^{name}: "):
        setattr(optimizer, name, value)
    assert optimizer.get_config() == before


def test_optimizer_hyperparameters_set_after_construction_take_effect():
    sgd, adam = SGD(), Adam()
    sgd.lr, sgd.momentum, sgd.weight_decay = 0.5, 0.25, 0.125
    assert sgd.learning_rate == 0.5
    sgd.learning_rate = np.float32(0.75)
    adam.beta1, adam.beta2, adam.eps = 0.5, 0.75, 1e-6
    assert sgd.get_config() == {"lr": 0.75, "momentum": 0.25, "nesterov": False,
                                "weight_decay": 0.125}
    assert adam.get_config() == {"lr": 0.001, "beta1": 0.5, "beta2": 0.75, "eps": 1e-6,
                                 "weight_decay": 0.0}
    for optimizer in (sgd, adam):
        copy = pickle.loads(pickle.dumps(optimizer))
        assert copy.get_config() == optimizer.get_config()
    # an optimizer pickled when hyperparameters were plain attributes still loads
    old = SGD.__new__(SGD)
    old.__setstate__({"lr": 0.5, "weight_decay": 0.0, "momentum": 0.0, "nesterov": False,
                      "_owner": None, "_slots": [], "_steps": [], "_flat": None})
    assert old.get_config()["lr"] == 0.5


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9, nesterov=True,
                                              weight_decay=0.01),
                                  lambda: Adam(0.01, weight_decay=0.01)],
                         ids=["sgd-nesterov", "adam"])
def test_optimizer_steps_follow_the_reference_formulas(make):
    """Three steps through the bound optimizer equal the validated ops on copies."""
    optimizer = make()
    rng = np.random.default_rng(0)
    param, grad = rng.standard_normal(6), rng.standard_normal(6)
    expected = param.copy()
    state = [np.zeros(6), np.zeros(6)]
    optimizer.bind([param], [grad])
    for step in range(1, 4):
        optimizer.step(fastnn.get_backend())
        if isinstance(optimizer, SGD):
            fastnn.ops.sgd_step(expected, grad, state[0], 0.1, 0.9, True, 0.01)
        else:
            fastnn.ops.adam_step(expected, grad, state[0], state[1], step, lr=0.01,
                                 weight_decay=0.01)
    np.testing.assert_allclose(param, expected, rtol=1e-12)


class CountingBackend:
    """The current backend, counting the optimizer kernel calls made through it."""

    def __init__(self):
        self.backend, self.calls = fastnn.get_backend(), []

    def sgd_step(self, param, *args):
        self.calls.append(param.shape)
        return self.backend.sgd_step(param, *args)

    def adam_step(self, param, *args):
        self.calls.append(param.shape)
        return self.backend.adam_step(param, *args)


@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9, nesterov=True,
                                              weight_decay=0.01),
                                  lambda: Adam(0.01, weight_decay=0.01)],
                         ids=["sgd-nesterov", "adam"])
def test_a_model_step_is_one_kernel_call_and_equals_one_call_per_parameter(make):
    """A built model keeps its parameters back to back in one buffer and its gradients in
    another, so the optimizer updates them all in one kernel call, to the same numbers as
    one call per parameter (the same optimizer bound to copies stored apart)."""
    model = Sequential([Dense(5, "tanh", input_dim=3), Dense(2, "softmax")], seed=0)
    model.compile(make(), "sparse_categorical_crossentropy")
    model.build()
    params = [param for layer in model.layers for param in layer.params]
    grads = [grad for layer in model.layers for grad in layer.grads]
    assert optimizers.storage_span(params).shape == (3 * 5 + 5 + 5 * 2 + 2,)
    assert optimizers.storage_span(grads) is not None
    apart = [param.copy() for param in params]
    rng = np.random.default_rng(0)
    grads_apart = [rng.standard_normal(grad.shape).astype(grad.dtype) for grad in grads]
    for grad, value in zip(grads, grads_apart):
        grad[...] = value
    separate = make()
    separate.bind(apart, grads_apart)
    assert optimizers.storage_span(apart) is None
    for _ in range(3):
        counting = CountingBackend()
        model.optimizer.step(counting)
        assert counting.calls == [(32,)]
        counting = CountingBackend()
        separate.step(counting)
        assert counting.calls == [param.shape for param in apart]
    for got, want in zip(params, apart):
        np.testing.assert_array_equal(got, want)
    for name, value in separate.state().items():
        np.testing.assert_array_equal(model.optimizer.state()[name], value)


def test_kernel_calls_join_small_neighbours_and_leave_large_arrays_alone():
    """Large arrays keep a call of their own, so each thread keeps its share of their rows."""
    sizes = [40000, 10, 20, 40000, 5]
    params_storage, grads_storage = np.zeros(sum(sizes)), np.zeros(sum(sizes))
    offsets = np.cumsum([0] + sizes)
    params = [params_storage[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    grads = [grads_storage[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    calls = optimizers.kernel_calls(params, grads)
    assert [(first, end) for first, end, _, _ in calls] == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert calls[0][2] is params[0] and calls[1][2].shape == (30,)
    # gradients stored apart: every parameter its own call
    apart = [grad.copy() for grad in grads]
    assert [(f, e) for f, e, _, _ in optimizers.kernel_calls(params, apart)] == [
        (index, index + 1) for index in range(5)]


def test_storage_span_only_joins_arrays_back_to_back_in_one_buffer():
    storage = np.arange(10.0)
    first, second = storage[0:4].reshape(2, 2), storage[4:10].reshape(3, 2)
    np.testing.assert_array_equal(optimizers.storage_span([first, second]), storage)
    np.testing.assert_array_equal(optimizers.storage_span([second]), storage[4:])
    assert optimizers.storage_span([second, first]) is None          # out of order
    assert optimizers.storage_span([first, storage[5:10]]) is None   # a gap
    assert optimizers.storage_span([first, np.arange(6.0)]) is None  # another buffer
    assert optimizers.storage_span([storage[0:8:2]]) is None          # not contiguous
    assert optimizers.storage_span([np.arange(4.0)]) is None          # owns its data
    assert optimizers.storage_span([]) is None


def test_storage_span_answers_again_only_for_the_same_live_arrays():
    """storage_span remembers its answers by the arrays' identities (fit asks every call):
    asked again it gives the same span, and a new array in a list (same id possible once the
    old one died), or a dtype reassigned in place, is looked at anew."""
    storage = np.arange(10.0)
    first, second = storage[0:4], storage[4:10]
    for _ in range(2):
        span = optimizers.storage_span([first, second])
        assert span is not None and np.shares_memory(span, storage) and span.size == 10
    assert optimizers.storage_span([first, storage[5:10]]) is None
    assert optimizers.storage_span([first, storage[5:10]]) is None  # a remembered None
    del second
    other = np.arange(6.0)  # may take the dead view's id
    assert optimizers.storage_span([first, other]) is None
    second = storage[4:10]
    assert optimizers.storage_span([first, second]).size == 10
    second.dtype = np.int64  # the same bytes read as other numbers: no longer one dtype
    assert optimizers.storage_span([first, second]) is None
    plain = [np.arange(3.0)[0:2], 5]  # not arrays: answered, not remembered
    assert optimizers.storage_span(plain) is None


def test_set_weights_and_load_keep_the_shared_storage(tmp_path):
    """Weights are replaced in place, so the optimizer's one buffer stays the model's."""
    model = Sequential([Dense(4, "relu", input_dim=3), Dense(2, "softmax")], seed=0)
    model.compile(SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.build()
    weights = [np.full_like(weight, 0.5) for weight in model.get_weights()]
    model.set_weights(weights)
    span = optimizers.storage_span([p for layer in model.layers for p in layer.params])
    np.testing.assert_array_equal(span, np.full(3 * 4 + 4 + 4 * 2 + 2, 0.5))
    model.save(tmp_path / "model.npz")
    loaded = fastnn.load_model(tmp_path / "model.npz")
    loaded_params = [p for layer in loaded.layers for p in layer.params]
    assert optimizers.storage_span(loaded_params) is not None
    x, y = np.random.default_rng(1).standard_normal((8, 3)), np.arange(8) % 2
    model.fit(x, y, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def weight_model(backend_seed=0, **dense):
    model = Sequential([Dense(4, "relu", input_dim=3, **dense), fastnn.BatchNormalization(),
                        Dense(2, "softmax")], seed=backend_seed)
    model.compile(SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.build()
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_assigning_a_layer_weight_copies_into_the_model_storage(backend):
    """``layer.w = array`` (a PyTorch user's habit) trains as set_weights does: the values go
    into the model's storage in place. Before, the new array was ignored by training and, with
    another dtype or shape, crashed the C and Numba kernels (heap corruption, segfault)."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((32, 3)).astype(np.float32), np.arange(32) % 2
    assigned, reference = weight_model(), weight_model()
    w = assigned.layers[0].w
    new_w = rng.uniform(-1, 1, (3, 4))  # float64: cast to the model's float32
    new_mean = rng.uniform(-1, 1, 4)
    assigned.layers[0].w = new_w
    assigned.layers[1].moving_mean = new_mean
    assert assigned.layers[0].w is w  # the same array, new values
    weights = reference.get_weights()
    weights[0], weights[4] = new_w, new_mean  # w, b, gamma, beta, moving mean, ...
    reference.set_weights(weights)
    with fastnn.use_backend(backend):
        for model in (assigned, reference):
            model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=0)
    for got, want in zip(assigned.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert np.abs(assigned.get_weights()[0] - new_w).max() > 0  # it trained from new_w


def test_a_bad_weight_assignment_raises_and_changes_nothing():
    model = weight_model(use_bias=False)
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"w: expected shape \(3, 4\), got \(8, 4\)"):
        model.layers[0].w = np.zeros((8, 4), np.float32)
    with pytest.raises(ValueError, match="w: expected finite numbers"):
        model.layers[0].w = np.full((3, 4), np.nan)
    with pytest.raises(ValueError, match="gamma: expected finite numbers"):
        model.layers[1].gamma = ["a"] * 4
    with pytest.raises(AttributeError, match="b: this Dense layer has no such weight"):
        model.layers[0].b = np.ones(4)  # use_bias=False: the kernels' zero bias
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    unbuilt = Dense(3)
    with pytest.raises(AttributeError, match="w: the layer is not built yet"):
        unbuilt.w = np.zeros((2, 3))
    with pytest.raises(AttributeError, match="w: the layer is not built yet"):
        unbuilt.w


def test_loss_and_output_activation_must_fit():
    model = Sequential([Dense(2, "relu", input_dim=2)])
    with pytest.raises(ValueError, match="needs a softmax output"):
        model.compile("sgd", "sparse_categorical_crossentropy")
    model = Sequential([Dense(2, "softmax", input_dim=2)])
    with pytest.raises(ValueError, match="cannot follow a softmax"):
        model.compile("sgd", "mse")
