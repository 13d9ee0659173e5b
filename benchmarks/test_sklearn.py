"""fastnn.sklearn's estimators against scikit-learn's own MLPs: whole ``fit`` calls.

Groups (compare the rows within each; ``scikit-learn`` is the reference). Each fastnn row
also fits scikit-learn's estimator before each of its own rounds (untimed by the row, timed
apart), so the two alternate on the shared machine; the row's ``speedup vs scikit-learn``
(printed in the summary, and in ``--benchmark-json``) is the median of those scikit-learn
fits over the row's median:

* ``sklearn fit digits``: ``MLPClassifier(hidden_layer_sizes=(128,), solver="adam",
  batch_size=32, max_iter=20, random_state=0)`` on 80% of the UCI digits (1437 x 64).
* ``sklearn fit 1 epoch 784-256-128-10 batch 128``: ``solver="sgd"``, ``max_iter=1`` on
  synthetic MNIST-shaped float32 data (60000 x 784, 10 classes).
* ``sklearn fit 1 epoch 32-64-64-2 batch 32``: the default adam, ``max_iter=1`` on 50000 x 32
  float32, 2 classes (one logistic output unit, as scikit-learn builds it).

Rows: ``scikit-learn`` (sklearn.neural_network) and each fastnn backend through
``fastnn.sklearn`` with the same parameters (float32, fastnn's default). Run:

    python -m pytest benchmarks/test_sklearn.py --benchmark-group-by=group
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from sklearn import neural_network
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

import fastnn
from fastnn import sklearn as fastnn_sklearn

from conftest import SETTLE_SECONDS, THREADS

IMPLEMENTATIONS = ["scikit-learn"] + fastnn.available_backends()


def digits():
    x, y = load_digits(return_X_y=True)
    x_train, _, y_train, _ = train_test_split((x / 16.0).astype(np.float32), y,
                                              test_size=0.2, random_state=0)
    return x_train, y_train


def synthetic(samples, features, classes, seed=0):
    """float32 inputs in [0, 1) with labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    x = rng.random((samples, features), dtype=np.float32)
    teacher = rng.standard_normal((features, classes)).astype(np.float32)
    return x, ((x - 0.5) @ teacher).argmax(axis=1)


CASES = {
    "digits": (digits, dict(hidden_layer_sizes=(128,), solver="adam", batch_size=32,
                            max_iter=20, random_state=0), 9),
    "1 epoch 784-256-128-10 batch 128": (
        lambda: synthetic(60000, 784, 10),
        dict(hidden_layer_sizes=(256, 128), solver="sgd", batch_size=128, max_iter=1,
             learning_rate_init=0.01, random_state=0), 3),
    "1 epoch 32-64-64-2 batch 32": (
        lambda: synthetic(50000, 32, 2),
        dict(hidden_layer_sizes=(64, 64), batch_size=32, max_iter=1, random_state=0), 5),
}


@pytest.fixture(scope="module")
def datasets():
    return {name: make() for name, (make, _, _) in CASES.items()}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_fit(benchmark, datasets, case, implementation):
    benchmark.group = f"sklearn fit {case}"
    x, y = datasets[case]
    _, params, rounds = CASES[case]

    def fit_with(estimator):
        def fit():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return estimator(**params).fit(x, y)
        return fit

    fit_scikit_learn = fit_with(neural_network.MLPClassifier)
    reference = []  # seconds of the scikit-learn fits alternating with this row's rounds

    def setup():
        start = time.perf_counter()
        fit_scikit_learn()
        reference.append(time.perf_counter() - start)
        time.sleep(SETTLE_SECONDS)  # OpenBLAS's threads spin a while after a call

    benchmark.extra_info["implementation"] = implementation
    # OpenBLAS (scikit-learn's products) is limited to THREADS for the whole row, outside the
    # timed fits: threadpool_limits scans the loaded libraries, about 2 ms a call here, which
    # is no part of either fit
    with threadpool_limits(THREADS):
        if implementation == "scikit-learn":
            model = benchmark.pedantic(fit_scikit_learn, rounds=rounds, iterations=1,
                                       warmup_rounds=1)
        else:
            fit = fit_with(lambda **kwargs: fastnn_sklearn.MLPClassifier(
                **kwargs, backend=implementation))
            model = benchmark.pedantic(fit, setup=setup, rounds=rounds, iterations=1,
                                       warmup_rounds=1)
    assert np.isfinite(model.loss_)
    assert model.score(x, y) > 1.5 / len(model.classes_)  # it learned something
    stats = getattr(benchmark, "stats", None)
    if stats and stats.stats.median and len(reference) > 1:
        benchmark.extra_info["speedup vs scikit-learn"] = (float(np.median(reference[1:]))
                                                           / stats.stats.median)
