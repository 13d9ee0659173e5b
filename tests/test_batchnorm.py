"""BatchNormalization, Activation and Dense(use_bias=False): the kernels against PyTorch's
BatchNorm1d in float64, finite differences, edge cases, and the layer in a model.

Conventions compared (see fastnn/normalization.py): Keras' momentum m is PyTorch's 1 - m;
both normalize a training batch with its biased variance, but PyTorch updates its running
variance with the unbiased one (divided by N - 1) where Keras and fastnn use the biased one.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastnn
from fastnn import (SGD, Activation, BatchNormalization, Dense, Dropout, Sequential, initializers,
                    ops)
from fastnn.datasets import load_digits, train_test_split

from conftest import BACKENDS
from test_gradcheck import assert_gradient_matches, numerical_gradient

MOMENTUM, EPSILON = 0.99, 1e-3
TORCH_ACTIVATIONS = {"identity": lambda t: t, "relu": "relu", "sigmoid": "sigmoid",
                     "tanh": "tanh"}


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def operands(n, m, key=""):
    rng = rng_for("bn", n, m, key)
    x = rng.standard_normal((n, m)) * 2 + rng.standard_normal(m) * 5
    gamma, beta = rng.standard_normal(m), rng.standard_normal(m)
    return x, gamma, beta, rng.standard_normal(m), rng.random(m) + 0.5, rng.standard_normal((n, m))


def torch_batchnorm(x, gamma, beta, moving_mean, moving_var, dy, training, activation):
    """Output, input and parameter gradients, and running statistics of torch's BatchNorm1d
    (float64) with Keras' momentum converted."""
    torch = pytest.importorskip("torch")
    layer = torch.nn.BatchNorm1d(x.shape[1], eps=EPSILON, momentum=1 - MOMENTUM,
                                 dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma))
        layer.bias.copy_(torch.tensor(beta))
        layer.running_mean.copy_(torch.tensor(moving_mean))
        layer.running_var.copy_(torch.tensor(moving_var))
    layer.train(training)
    leaf = torch.tensor(x, requires_grad=True)
    act = TORCH_ACTIVATIONS[activation]
    out = layer(leaf)
    out = act(out) if callable(act) else getattr(torch, act)(out)
    (out * torch.tensor(dy)).sum().backward()
    return (out.detach().numpy(), leaf.grad.numpy(), layer.weight.grad.numpy(),
            layer.bias.grad.numpy(), layer.running_mean.numpy(), layer.running_var.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 1), (7, 3), (64, 129), (1024, 256), (128, 784)], ids=str)
@pytest.mark.parametrize("activation", list(TORCH_ACTIVATIONS))
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_matches_torch_batchnorm1d(backend, shape, activation, training):
    x, gamma, beta, moving_mean, moving_var, dy = operands(*shape, activation)
    expected = torch_batchnorm(x, gamma, beta, moving_mean, moving_var, dy, training,
                               activation)
    out_torch, dx_torch, dgamma_torch, dbeta_torch, mean_torch, var_torch = expected
    with fastnn.use_backend(backend):
        out, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, moving_mean, moving_var,
                                                   MOMENTUM, EPSILON, training, activation)
        dx, dgamma, dbeta = ops.batchnorm_backward(x, out, dy, gamma, mean, inv_std, training,
                                                   activation)
    tolerance = dict(rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out, out_torch, **tolerance)
    np.testing.assert_allclose(dx, dx_torch, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dgamma, dgamma_torch, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dbeta, dbeta_torch, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(moving_mean, mean_torch, **tolerance)
    if not training:
        np.testing.assert_allclose(moving_var, var_torch, **tolerance)
        return
    # The one convention that differs: torch's running variance takes the unbiased batch
    # variance, Keras' (and ours) the biased one.
    n = shape[0]
    biased, unbiased = x.var(axis=0), x.var(axis=0, ddof=1)
    np.testing.assert_allclose(moving_var, var_torch - (1 - MOMENTUM) * (unbiased - biased),
                               **tolerance)
    assert not np.allclose(moving_var, var_torch, rtol=1e-9) or n > 1000


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moving_statistics_over_several_steps(backend, dtype):
    """m_t = momentum m_{t-1} + (1 - momentum) batch_t, the biased variance (Keras)."""
    rng = rng_for("steps")
    mean, var = np.zeros(5, dtype), np.ones(5, dtype)
    expected_mean, expected_var = np.zeros(5), np.ones(5)
    with fastnn.use_backend(backend):
        for _ in range(4):
            x = (rng.standard_normal((33, 5)) * 3 + 2).astype(dtype)
            ops.batchnorm_forward(x, np.ones(5, dtype), np.zeros(5, dtype), mean, var, 0.9)
            expected_mean = 0.9 * expected_mean + 0.1 * x.mean(axis=0, dtype=np.float64)
            expected_var = 0.9 * expected_var + 0.1 * x.var(axis=0, dtype=np.float64)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(mean, expected_mean, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(var, expected_var, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_of_one_gives_beta_without_nan(backend, dtype):
    """Documented (fastnn/normalization.py), as Keras: variance 0, so the output is act(beta),
    the input gradient 0 and the moving variance decays; PyTorch refuses such a batch."""
    x = np.array([[3.0, -1.0, 1e4]], dtype)
    gamma, beta = np.array([2.0, 1.0, 0.5], dtype), np.array([0.5, -0.25, 1.0], dtype)
    mean, var = np.zeros(3, dtype), np.ones(3, dtype)
    with fastnn.use_backend(backend):
        out, _, inv_std = ops.batchnorm_forward(x, gamma, beta, mean, var, 0.9, 1e-3, True,
                                                "tanh")
        dx, dgamma, dbeta = ops.batchnorm_backward(x, out, np.ones_like(x), gamma, mean * 0 + x[0],
                                                   inv_std, True, "tanh")
    np.testing.assert_allclose(out[0], np.tanh(beta), rtol=1e-6)
    np.testing.assert_allclose(var, 0.9, rtol=1e-6)
    np.testing.assert_allclose(mean, 0.1 * x[0], rtol=1e-6)
    np.testing.assert_allclose(dx, 0, atol=1e-6)
    np.testing.assert_allclose(dgamma, 0, atol=1e-6)
    assert np.isfinite(dbeta).all()
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(3).train()(torch.ones(1, 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_constant_feature_has_variance_zero_and_no_nan(backend, dtype):
    rng = rng_for("constant")
    x = rng.standard_normal((50, 4)).astype(dtype)
    x[:, 1] = 123.25  # constant, with a large mean
    gamma, beta = np.ones(4, dtype), np.full(4, 0.5, dtype)
    mean, var = np.zeros(4, dtype), np.ones(4, dtype)
    with fastnn.use_backend(backend):
        out, batch_mean, inv_std = ops.batchnorm_forward(x, gamma, beta, mean, var)
        dy = rng.standard_normal(x.shape).astype(dtype)
        grads = ops.batchnorm_backward(x, out, dy, gamma, batch_mean, inv_std)
    assert all(np.isfinite(a).all() for a in (out, mean, var, inv_std) + grads)
    np.testing.assert_array_equal(out[:, 1], 0.5)
    assert var[1] == pytest.approx(MOMENTUM, rel=1e-6)  # the batch variance was exactly 0
    np.testing.assert_allclose(inv_std[1], 1 / np.sqrt(EPSILON), rtol=1e-6)
    # xhat is 0 there, so dx = gamma inv_std (dy - mean(dy)): finite, not 0 (epsilon > 0).
    column = dy[:, 1].astype(np.float64)
    np.testing.assert_allclose(grads[0][:, 1], (column - column.mean()) / np.sqrt(EPSILON),
                               rtol=1e-4)
    np.testing.assert_allclose(grads[1][1], 0, atol=1e-6)  # dgamma: sum dz * xhat


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["identity", "tanh", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_gradients_by_finite_differences(backend, activation, training):
    x, gamma, beta, moving_mean, moving_var, weights = operands(6, 4, "fd")

    def loss():
        mean, var = moving_mean.copy(), moving_var.copy()  # left as they were
        out, _, _ = ops.batchnorm_forward(x, gamma, beta, mean, var, MOMENTUM, EPSILON,
                                          training, activation, alpha=0.1)
        return float(np.sum(weights * out))

    with fastnn.use_backend(backend):
        out, mean, inv_std = ops.batchnorm_forward(x, gamma, beta, moving_mean.copy(),
                                                   moving_var.copy(), MOMENTUM, EPSILON,
                                                   training, activation, alpha=0.1)
        dx, dgamma, dbeta = ops.batchnorm_backward(x, out, weights, gamma, mean, inv_std,
                                                   training, activation, alpha=0.1)
        assert_gradient_matches(dx, numerical_gradient(loss, x), "dx")
        assert_gradient_matches(dgamma, numerical_gradient(loss, gamma), "dgamma")
        assert_gradient_matches(dbeta, numerical_gradient(loss, beta), "dbeta")


def test_bad_arguments_name_themselves():
    x, gamma, beta, mean, var, _ = operands(4, 3)
    with pytest.raises(ValueError, match="momentum: expected a number in"):
        ops.batchnorm_forward(x, gamma, beta, mean, var, momentum=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        ops.batchnorm_forward(x, gamma, beta, mean, var, epsilon=0)
    with pytest.raises(ValueError, match=r"gamma: expected shape \(3,\)"):
        ops.batchnorm_forward(x, gamma[:2], beta, mean, var)
    with pytest.raises(TypeError, match="moving_var: expected dtype float64"):
        ops.batchnorm_forward(x, gamma, beta, mean, var.astype(np.float32))
    read_only = mean.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="moving_mean: is read-only"):
        ops.batchnorm_forward(x, gamma, beta, read_only, var)
    ops.batchnorm_forward(x, gamma, beta, read_only, var, training=False)  # only read
    with pytest.raises(ValueError, match="x: empty batch"):
        ops.batchnorm_forward(x[:0], gamma, beta, mean, var)
    with pytest.raises(ValueError, match="activation: unknown activation 'swish'"):
        ops.batchnorm_backward(x, x, x, gamma, mean, var, activation="swish")
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=-0.1)
    with pytest.raises(TypeError, match="center: expected True or False"):
        BatchNormalization(center="yes")
    with pytest.raises(ValueError, match="gamma_initializer: unknown initializer"):
        BatchNormalization(gamma_initializer="twos")
    with pytest.raises(TypeError, match="use_bias"):
        Dense(3, use_bias=None)


# -- the layers in a model -------------------------------------------------------------------

def digits():
    x, y = load_digits()
    return train_test_split(x, y, test_fraction=0.2, seed=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_normalized_model_learns_the_digits(backend):
    x_train, x_test, y_train, y_test = digits()
    model = Sequential([Dense(64, use_bias=False), BatchNormalization(), Activation("relu"),
                        Dropout(0.1), Dense(32, use_bias=False), BatchNormalization(),
                        Activation("relu"), Dense(10, "softmax")], seed=0)
    model.compile(SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy", ["accuracy"])
    with fastnn.use_backend(backend):
        model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0, seed=0)
        _, accuracy = model.evaluate(x_test, y_test)
    assert accuracy >= 0.97


def test_evaluate_and_predict_use_the_moving_statistics():
    x_train, x_test, y_train, _ = digits()
    model = Sequential([Dense(16, "relu"), BatchNormalization(momentum=0.5, center=False),
                        Dense(10, "softmax")], seed=1)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=2, verbose=0, seed=0)
    dense, norm, output = model.layers
    hidden = np.maximum(x_test @ dense.w + dense.b, 0)
    normalized = (norm.gamma * (hidden - norm.moving_mean)
                  / np.sqrt(norm.moving_variance + norm.epsilon))
    logits = normalized @ output.w + output.b
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x_test), expected, rtol=1e-4, atol=1e-6)
    # Row by row or all at once: inference does not depend on the batch.
    np.testing.assert_allclose(model.predict(x_test[:5], batch_size=1),
                               model.predict(x_test[:5]), rtol=1e-5, atol=1e-7)
    before = norm.moving_mean.copy()
    model.evaluate(x_test, model.predict_classes(x_test))
    np.testing.assert_array_equal(norm.moving_mean, before)  # not updated outside training


def test_training_updates_the_moving_statistics_but_not_through_the_optimizer():
    x_train, _, y_train, _ = digits()
    model = Sequential([Dense(8, "relu"), BatchNormalization(), Dense(10, "softmax")], seed=0)
    model.compile(SGD(0.1), "sparse_categorical_crossentropy")
    model.build(64)
    w, b = model.layers[0].w.copy(), model.layers[0].b.copy()  # what the forward used
    model.fit(x_train[:64], y_train[:64], epochs=1, batch_size=64, verbose=0)
    norm = model.layers[1]
    hidden = np.maximum(x_train[:64] @ w + b, 0)
    # One full-batch step from zeros and ones (the optimizer ran after the forward).
    np.testing.assert_allclose(norm.moving_mean, 0.01 * hidden.mean(axis=0), rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(norm.moving_variance, 0.99 + 0.01 * hidden.var(axis=0),
                               rtol=1e-5)
    assert not any(array is norm.moving_mean or array is norm.moving_variance
                   for layer in model.layers for array in layer.params)


def test_weights_summary_and_count_params_as_keras():
    model = Sequential([Dense(32, use_bias=False, input_dim=64), BatchNormalization(),
                        Activation("relu"), Dense(10), BatchNormalization(scale=False),
                        Activation("softmax")])
    # Keras: 64*32 + 4*32 + (32*10 + 10) + 3*10 = 2048 + 128 + 330 + 30 = 2536, of which
    # 2*32 + 2*10 = 84 non-trainable.
    assert model.count_params() == 2536
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert "Total params: 2,536" in text
    assert "Trainable params: 2,452" in text and "Non-trainable params: 84" in text
    model.build()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(64, 32), (32,), (32,), (32,), (32,), (32, 10), (10,), (10,), (10,),
                      (10,)]
    assert model.count_params() == sum(w.size for w in model.get_weights())
    lines = []
    model.summary(print_fn=lines.append)
    assert "Activation(relu, fused)" in lines[0] and "BatchNormalization(relu)" in lines[0]


def test_initializers_and_center_scale():
    layer = BatchNormalization(center=False, gamma_initializer=initializers.Ones(),
                               moving_mean_initializer="ones",
                               moving_variance_initializer=initializers.RandomUniform(1, 2))
    layer.build(5, np.dtype(np.float64), np.random.default_rng(0))
    assert len(layer.params) == 1 and layer.params[0] is layer.gamma
    np.testing.assert_array_equal(layer.beta, 0)
    np.testing.assert_array_equal(layer.moving_mean, 1)
    assert ((layer.moving_variance >= 1) & (layer.moving_variance <= 2)).all()
    neither = BatchNormalization(center=False, scale=False)
    neither.build(3, np.dtype(np.float32), np.random.default_rng(0))
    assert neither.params == [] and len(neither.weights) == 2


def test_saved_and_loaded_with_the_model(tmp_path):
    x_train, x_test, y_train, _ = digits()
    model = Sequential([Dense(16, use_bias=False), BatchNormalization(momentum=0.9,
                                                                      epsilon=1e-2),
                        Activation("tanh"), Dense(10, "softmax")], seed=0)
    model.compile(SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=2, verbose=0, seed=0)
    model.save(tmp_path / "bn.npz")
    loaded = fastnn.load_model(tmp_path / "bn.npz")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    norm = loaded.layers[1]
    assert (norm.momentum, norm.epsilon) == (0.9, 1e-2) and norm.activation == "tanh"
    assert not loaded.layers[0].use_bias
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    saved_variance = norm.moving_variance.copy()
    # Training resumes identically (the moving statistics and momentum came back).
    for m in (model, loaded):
        m.fit(x_train, y_train, epochs=1, verbose=0, seed=5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = Sequential([Dense(16, use_bias=False), BatchNormalization(), Activation("tanh"),
                        Dense(10, "softmax")])
    other.build(64)
    other.load_weights(tmp_path / "bn.npz")
    np.testing.assert_array_equal(other.layers[1].moving_variance, saved_variance)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_activation_equals_separate_layers(backend):
    """BatchNormalization then Activation runs as one kernel; the result equals the batch
    norm alone followed by the activation kernel, in training (outputs and gradients)."""
    x_train, _, y_train, _ = digits()
    results = []
    with fastnn.use_backend(backend):
        for separate in (False, True):
            layers = [Dense(24, use_bias=False), BatchNormalization(), Activation("sigmoid"),
                      Dense(10, "softmax")]
            if separate:  # a Dropout(0) between them stops the fusion and copies through
                layers.insert(2, Dropout(0.0))
            model = Sequential(layers, seed=0, dtype="float64")
            model.compile(SGD(0.1), "sparse_categorical_crossentropy")
            model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0, seed=0)
            results.append(model.get_weights())
            assert model.layers[2].aliases_input is not separate
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_activation_layer_alone_and_as_softmax_output(backend):
    x_train, x_test, y_train, y_test = digits()
    with fastnn.use_backend(backend):
        model = Sequential([Dense(32), Activation("leaky_relu", alpha=0.1), Dense(10),
                            Activation("softmax")], seed=0)
        model.compile(SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy", ["accuracy"])
        model.fit(x_train, y_train, epochs=10, verbose=0, seed=0)
        probabilities = model.predict(x_test)
        _, accuracy = model.evaluate(x_test, y_test)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert accuracy > 0.9
    dense = model.layers[0]
    hidden = x_test[:3] @ dense.w + dense.b
    np.testing.assert_allclose(ops.activation_forward(hidden, "leaky_relu", 0.1),
                               np.where(hidden > 0, hidden, 0.1 * hidden), rtol=1e-6)
    with pytest.raises(ValueError, match="softmax is only supported on the output layer"):
        Sequential([Dense(4, input_dim=3), Activation("softmax"), Dense(2)]).build()


def test_dense_without_bias():
    layer = Dense(3, use_bias=False, kernel_initializer="ones")
    model = Sequential([layer], dtype="float64")
    model.build(2)
    assert [w.shape for w in model.get_weights()] == [(2, 3)] and model.count_params() == 6
    np.testing.assert_array_equal(model.predict([[1.0, 2.0]]), [[3.0, 3.0, 3.0]])
    assert layer.get_config()["use_bias"] is False
