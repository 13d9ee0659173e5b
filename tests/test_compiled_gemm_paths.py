"""The compiled training loop against the per-layer path on layers wide enough for every path
of the C GEMM in the weight gradient x^T dz (gemm_plan.h): SMALL (at most 8 units: 1400 x 7),
IN_PLACE (45 x 200) and PACKED (more inputs than the few-rows bound, 504 in float32, 280 in
float64: 600 x 45), with edge tiles (widths not a multiple of the register tile), several K
blocks (a batch longer than the packed path's K block: 384 in float32, 256 in float64) and
every SGD form (momentum, Nesterov, weight decay) and Adam: the weights bit for bit, the
gradients the call leaves in the layers' ``grads`` too (the contract's train_steps), and the
numpy backend (the reference) within float tolerance. The C loop fuses the optimizer's step
with the weight gradient (kernels/linear_impl.h's linear_backward_update: every optimizer row
at batch 24 on the PACKED and IN_PLACE layers); that fusion broken on purpose (dx from the
stepped weights; an edge tile's rows not stepped; the last element of each tile's run of
momentum SGD and Adam not stepped) made these fail."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Dense, Sequential

from conftest import BACKENDS, DTYPES
from test_compiled_loop import non_finite_fit_on_both_paths

OPTIMIZERS = {
    "sgd": lambda: SGD(0.02),
    "sgd-decay": lambda: SGD(0.02, weight_decay=0.01),
    "sgd-momentum": lambda: SGD(0.02, momentum=0.9),
    "sgd-nesterov-decay": lambda: SGD(0.02, momentum=0.8, nesterov=True, weight_decay=0.003),
    "adam": lambda: Adam(0.002),
}


#: input features and layer widths
SHAPES = {"wide": (600, [45, 200, 5]), "narrow": (1400, [7, 5]),
          # a last column panel of exactly one float32 vector (48 = 32 + 16), read in place
          "vector": (40, [48, 16, 5])}


def wide_data(rows, features=600, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features))
    return x, x[:, :classes].argmax(axis=1)


def fit(backend, compiled, dtype, optimizer, batch_size, rows, shape="wide", epochs=2):
    features, widths = SHAPES[shape]
    x, y = wide_data(rows, features)
    activations = ["relu", "tanh"][:len(widths) - 1] + ["softmax"]
    model = Sequential([Dense(units, activation)
                        for units, activation in zip(widths, activations)], dtype=dtype, seed=4)
    model.compile(OPTIMIZERS[optimizer](), "sparse_categorical_crossentropy", ["accuracy"])
    model.compiled_loop = compiled
    with fastnn.use_backend(backend):
        history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, seed=5)
    return model, history.history


def gradients(model):
    return [g.copy() for layer in model.layers for g in layer.grads]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("batch_size,rows", [(24, 400), (400, 900)],
                         ids=["batch-24", "batch-400"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_wide_layers_train_bit_for_bit_as_the_per_layer_path(backend, dtype, optimizer,
                                                                batch_size, rows, shape):
    per_layer, per_layer_history = fit(backend, False, dtype, optimizer, batch_size, rows, shape)
    compiled, compiled_history = fit(backend, True, dtype, optimizer, batch_size, rows, shape)
    for a, b in zip(per_layer.get_weights(), compiled.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The gradients of the last step are left in the layers' grads, as the per-layer path
    # leaves them.
    for a, b in zip(gradients(per_layer), gradients(compiled)):
        np.testing.assert_array_equal(a, b)
    assert per_layer_history["accuracy"] == compiled_history["accuracy"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["sgd-momentum", "sgd-nesterov-decay"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_wide_layers_agree_with_the_numpy_reference(backend, optimizer, shape):
    reference, _ = fit("numpy", False, np.float64, optimizer, 24, 400, shape)
    model, _ = fit(backend, True, np.float64, optimizer, 24, 400, shape)
    for a, b in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_loss_after_momentum_steps_leaves_the_weights_before_it(backend):
    """Steps of one call with momentum on a wide layer (the PACKED weight gradient), then a
    step whose loss is not finite: nothing of that step is applied."""
    x, _ = wide_data(480)
    y = x[:, :1] * 0.1
    y[300] = 3e38  # row 300 of the unshuffled data, in step 13 of 20 at batch 24: overflows

    def make_model():
        model = Sequential([Dense(45, "relu", input_dim=x.shape[1]), Dense(1)], seed=4)
        model.compile(SGD(1e-4, momentum=0.9), "mse")
        return model

    message = non_finite_fit_on_both_paths(backend, make_model, x, y, epochs=1, batch_size=24)
    assert re.match(r"loss is (inf|nan) at epoch 1, step 1[3-9] of 20", message), message
