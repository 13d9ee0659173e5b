"""The same seed gives bit-identical training on one backend and thread count; across thread
counts the results agree within the contract's float32 tolerance."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Dropout, Sequential, SGD

from conftest import BACKENDS


def train(backend, threads, seed=5):
    """Loss history and final weights of a small MLP wide enough to use several threads."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 96)).astype(np.float32)
    y = (x[:, :10].argmax(axis=1)).astype(np.int64)
    saved = max(fastnn.get_num_threads().values())
    fastnn.set_num_threads(threads)
    try:
        with fastnn.use_backend(backend):
            model = Sequential([Dense(192, "relu", input_dim=96), Dropout(0.1),
                                Dense(160, "tanh"), Dense(10, "softmax")], seed=seed)
            model.compile(SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            history = model.fit(x, y, epochs=3, batch_size=128, seed=seed, verbose=0)
    finally:
        fastnn.set_num_threads(saved)
    return history.history["loss"], model.get_weights()


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_is_bit_identical(backend, threads):
    first_loss, first_weights = train(backend, threads)
    second_loss, second_weights = train(backend, threads)
    assert first_loss == second_loss
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)


def test_thread_counts_agree_within_tolerance(backend):
    one_loss, one_weights = train(backend, 1)
    two_loss, two_weights = train(backend, 2)
    np.testing.assert_allclose(one_loss, two_loss, rtol=1e-4)
    for a, b in zip(one_weights, two_weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_backends_agree_within_tolerance():
    """Each backend under test (conftest.BACKENDS: FASTNN_TEST_BACKENDS narrows them, as the
    sanitizer and instruction-set runs do) against the numpy reference."""
    reference_loss, reference_weights = train("numpy", 2)
    for name in BACKENDS:
        loss, weights = train(name, 2)
        np.testing.assert_allclose(loss, reference_loss, rtol=1e-4, err_msg=name)
        for a, b in zip(weights, reference_weights):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4, err_msg=name)
