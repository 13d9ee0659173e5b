"""Finite-difference checks, in float64, of every differentiable kernel on every backend.

Each analytic gradient from a backend is compared with central differences of
the same backend's forward kernel: relative error below 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import ops
from fastnn.backends.contract import ACTIVATIONS

STEP = 1e-6


def numerical_gradient(loss_of, array):
    """d loss_of() / d array by central differences, perturbing ``array`` in place."""
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + STEP
        upper = loss_of()
        flat[i] = saved - STEP
        lower = loss_of()
        flat[i] = saved
        flat_grad[i] = (upper - lower) / (2 * STEP)
    return grad


def assert_gradient_matches(analytic, numeric, name):
    error = np.abs(analytic - numeric).max() / max(np.abs(numeric).max(), 1e-12)
    assert error < 1e-6, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward_gradients(backend, activation):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((5, 3))
    b = rng.standard_normal(3)
    # The seed keeps pre-activations off relu's kink, where no derivative exists.
    assert np.abs(x @ w + b).min() > 1e-3
    weights = rng.standard_normal((4, 3))  # loss = sum(weights * y), so dy = weights

    def loss():
        return float(np.sum(weights * ops.linear_forward(x, w, b, activation, alpha=0.1)))

    y = ops.linear_forward(x, w, b, activation, alpha=0.1)
    dx, dw, db = ops.linear_backward(x, w, y, weights, activation, alpha=0.1)
    assert_gradient_matches(dx, numerical_gradient(loss, x), "dx")
    assert_gradient_matches(dw, numerical_gradient(loss, w), "dw")
    assert_gradient_matches(db, numerical_gradient(loss, b), "db")


@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_cross_entropy_gradient(backend, target_kind, reduction):
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((6, 5)) * 2
    if target_kind == "labels":
        target = rng.integers(0, 5, 6)
    else:
        target = rng.random((6, 5))
        target /= target.sum(axis=1, keepdims=True)

    def loss():
        return ops.softmax_cross_entropy(logits, target, reduction, compute_grad=False)[0]

    _, grad = ops.softmax_cross_entropy(logits, target, reduction)
    assert_gradient_matches(grad, numerical_gradient(loss, logits), "d logits")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_gradient(backend, reduction):
    rng = np.random.default_rng(13)
    pred, target = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))

    def loss():
        return ops.mse(pred, target, reduction, compute_grad=False)[0]

    _, grad = ops.mse(pred, target, reduction)
    assert_gradient_matches(grad, numerical_gradient(loss, pred), "d pred")
