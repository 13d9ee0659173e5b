"""Metrics by Keras' names, and class_weight / sample_weight, against float64 NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import Dense, Sequential, SGD


ALL_METRICS = ["binary_accuracy", "categorical_accuracy", "top_k_categorical_accuracy", "mae",
               "mse"]
SPARSE_METRICS = ["binary_accuracy", "sparse_categorical_accuracy",
                  "sparse_top_k_categorical_accuracy", "mae", "mse"]


def data(samples=97, inputs=6, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(samples, inputs)).astype(np.float32), rng.integers(0, classes, samples)


def softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_metrics(probabilities, labels, classes):
    """Keras' definitions, in float64."""
    p = probabilities.astype(np.float64)
    one_hot = np.eye(classes)[labels]
    label_scores = p[np.arange(len(p)), labels]
    return {"binary_accuracy": np.mean((p > 0.5) == (one_hot > 0.5)),
            "categorical_accuracy": np.mean(p.argmax(1) == labels),
            "top_k": np.mean((p > label_scores[:, None]).sum(1) < 5),
            "mae": np.mean(np.abs(p - one_hot)), "mse": np.mean((p - one_hot) ** 2)}


def softmax_model(metrics, loss="categorical_crossentropy", classes=10, seed=0):
    model = Sequential([Dense(16, "tanh", input_dim=6), Dense(classes, "softmax")], seed=seed)
    model.compile(SGD(0.05), loss, metrics=metrics)
    return model


@pytest.mark.parametrize("sparse", [False, True], ids=["one_hot", "sparse"])
def test_every_metric_matches_keras_definition_in_evaluate_history_and_progress(sparse, backend,
                                                                                capsys):
    x, labels = data()
    y = labels if sparse else np.eye(10, dtype=np.float32)[labels]
    names = SPARSE_METRICS if sparse else ALL_METRICS
    loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
    model = softmax_model(names, loss)
    results = model.evaluate(x, y, batch_size=16, return_dict=True)
    expected = expected_metrics(model.predict(x), labels, 10)
    keys = {"categorical_accuracy": "categorical_accuracy",
            "sparse_categorical_accuracy": "categorical_accuracy",
            "top_k_categorical_accuracy": "top_k", "sparse_top_k_categorical_accuracy": "top_k",
            "binary_accuracy": "binary_accuracy", "mae": "mae", "mse": "mse"}
    assert list(results) == ["loss"] + names
    for name in names:
        assert results[name] == pytest.approx(expected[keys[name]], rel=1e-5, abs=1e-6), name
    # full-batch training: the epoch's metrics are those of the weights before its one step
    history = model.fit(x, y, epochs=1, batch_size=None, verbose=2)
    for name in names:
        assert history[name][0] == pytest.approx(results[name], rel=1e-5, abs=1e-6), name
    line = capsys.readouterr().out
    for name in names:
        assert f"{name}: " in line


def test_top_k_counts_ties_at_the_boundary_as_in_and_fewer_classes_than_k():
    # the label's score ties with the 5th largest: in the top 5 (TensorFlow's in_top_k)
    model = Sequential([Dense(7, "softmax", input_dim=7, kernel_initializer="zeros")])
    model.compile("sgd", "sparse_categorical_crossentropy",
                  metrics=["sparse_top_k_categorical_accuracy"])
    assert model.evaluate(np.eye(7, dtype=np.float32), np.arange(7))[1] == 1.0
    model.set_weights([np.diag([0, 5, 4, 3, 2, 1, 1]).astype(np.float32), np.zeros(7)])
    x = np.ones((1, 7), np.float32)
    # scores (0, 5, 4, 3, 2, 1, 1): class 0 has 6 above it, class 6 has 4 above it
    assert model.evaluate(x, [0])[1] == 0.0 and model.evaluate(x, [6])[1] == 1.0
    small = softmax_model(["sparse_top_k_categorical_accuracy"],
                          "sparse_categorical_crossentropy", classes=3)
    xs, ys = data(classes=3)
    assert small.evaluate(xs, ys)[1] == 1.0  # 3 classes < k = 5: every label is in the top 5


def test_binary_metrics_of_a_sigmoid_and_a_regression_model():
    x, labels = data(classes=2)
    targets = np.stack([labels, 1 - labels], axis=1).astype(np.float32)
    model = Sequential([Dense(8, "relu", input_dim=6), Dense(2, "sigmoid")], seed=1)
    model.compile("sgd", "binary_crossentropy", metrics=["binary_accuracy", "mae", "mse",
                                                         "accuracy"])
    got = model.evaluate(x, targets, return_dict=True)
    p = model.predict(x).astype(np.float64)
    assert got["binary_accuracy"] == pytest.approx(np.mean((p > 0.5) == (targets > 0.5)))
    assert got["accuracy"] == got["binary_accuracy"]
    assert got["mae"] == pytest.approx(np.mean(np.abs(p - targets)), rel=1e-5)
    assert got["mse"] == pytest.approx(np.mean((p - targets) ** 2), rel=1e-5)
    regression = Sequential([Dense(3, input_dim=6)], seed=2)
    regression.compile("sgd", "mse", metrics=["mae", "mse"])
    values = np.random.default_rng(3).normal(size=(97, 3))
    got = regression.evaluate(x, values, return_dict=True)
    p = regression.predict(x).astype(np.float64)
    assert got["mae"] == pytest.approx(np.mean(np.abs(p - values)), rel=1e-5)
    assert got["mse"] == pytest.approx(got["loss"], rel=1e-5)


def test_metric_names_and_pairs_that_cannot_mean_anything_are_refused():
    model = Sequential([Dense(3, "softmax", input_dim=2)])
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["f1"])
    with pytest.raises(ValueError, match="sparse_categorical_accuracy"):
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["categorical_accuracy"])
    with pytest.raises(ValueError, match="'top_k_categorical_accuracy'"):
        model.compile("sgd", "sparse_categorical_crossentropy",
                      metrics=["top_k_categorical_accuracy"])
    with pytest.raises(ValueError, match="'categorical_accuracy'"):
        model.compile("sgd", "categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])
    with pytest.raises(ValueError, match="binary_accuracy"):
        Sequential([Dense(1, "sigmoid", input_dim=2)]).compile(
            "sgd", "binary_crossentropy", metrics=["categorical_accuracy"])
    model.compile("sgd", "sparse_categorical_crossentropy",
                  metrics=["acc", "mean_absolute_error"])
    assert model.metrics == ["accuracy", "mae"]


# -- sample_weight and class_weight ----------------------------------------------

def one_step(model, x, y, **weights):
    model.fit(x, y, epochs=1, batch_size=None, shuffle=False, verbose=0, **weights)
    return model.get_weights()


CASES = {
    "sparse_categorical_crossentropy": ("softmax", 4),
    "categorical_crossentropy": ("softmax", 4),
    "binary_crossentropy": ("sigmoid", 3),
    "mse": (None, 3),
}


def reference_step(loss, kernel, bias, x, y, w, lr):
    """One SGD step of a single Dense layer on sum_i w_i loss_i / N, in float64 NumPy."""
    x = x.astype(np.float64)
    z = x @ kernel + bias
    n, m = z.shape
    if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        t = np.eye(m)[y] if y.ndim == 1 else y
        p = softmax64(z)
        rows = -(t * np.log(p)).sum(1)
        dz = (p - t) / n
        value = np.dot(w, rows) / n
    elif loss == "binary_crossentropy":
        elementwise = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        value = np.dot(w, elementwise.sum(1)) / (n * m)
        dz = (1 / (1 + np.exp(-z)) - y) / (n * m)
    else:
        value = np.dot(w, ((z - y) ** 2).sum(1)) / (n * m)
        dz = 2 * (z - y) / (n * m)
    dz = dz * w[:, None]
    return value, kernel - lr * x.T @ dz, bias - lr * dz.sum(0)


@pytest.mark.parametrize("loss", list(CASES))
def test_weighted_loss_and_gradient_match_float64_numpy(loss, backend):
    activation, units = CASES[loss]
    rng = np.random.default_rng(7)
    n = 37
    x = rng.normal(size=(n, 5))
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, units, n)
    elif loss == "categorical_crossentropy":
        y = softmax64(rng.normal(size=(n, units)))  # soft targets
    elif loss == "binary_crossentropy":
        y = rng.random((n, units))
    else:
        y = rng.normal(size=(n, units))
    w = rng.random(n) * 3
    w[::5] = 0.0
    model = Sequential([Dense(units, activation, input_dim=5)], dtype="float64", seed=3)
    model.compile(SGD(0.5), loss)
    model.build()
    kernel, bias = model.get_weights()
    value, new_kernel, new_bias = reference_step(loss, kernel, bias, x, y, w, 0.5)
    assert model.evaluate(x, y, sample_weight=w) == pytest.approx(value, rel=1e-10)
    assert model.evaluate(x, y, sample_weight=w, batch_size=8) == pytest.approx(value, rel=1e-10)
    history = model.fit(x, y, epochs=1, batch_size=None, verbose=0, sample_weight=w)
    assert history["loss"][0] == pytest.approx(value, rel=1e-10)
    got_kernel, got_bias = model.get_weights()
    np.testing.assert_allclose(got_kernel, new_kernel, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_bias, new_bias, rtol=1e-10, atol=1e-12)


def test_weights_in_float32_mini_batches_match_float64():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(50, 5)).astype(np.float32), rng.integers(0, 4, 50)
    w = rng.random(50)
    results = {}
    for dtype in ("float32", "float64"):
        model = Sequential([Dense(4, "softmax", input_dim=5)], dtype=dtype, seed=3)
        model.compile(SGD(0.1), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0, sample_weight=w)
        results[dtype] = model.get_weights()
    for got, expected in zip(results["float32"], results["float64"]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unit_weights_change_nothing_and_zero_weights_remove_rows():
    x, y = data(classes=4)
    plain = one_step(softmax_model(None, "sparse_categorical_crossentropy", 4), x, y)
    ones = one_step(softmax_model(None, "sparse_categorical_crossentropy", 4), x, y,
                    sample_weight=np.ones(len(x)))
    for a, b in zip(plain, ones):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # weight 2 on the first half and 0 on the rest == the first half alone (same N divisor:
    # Keras divides by the batch size, so the half alone has half the rows and weight 1)
    keep = np.r_[np.full(48, 2.0), np.zeros(49)]
    weighted = one_step(softmax_model(None, "sparse_categorical_crossentropy", 4), x, y,
                        sample_weight=keep * 97 / 96)
    half = one_step(softmax_model(None, "sparse_categorical_crossentropy", 4), x[:48], y[:48])
    for a, b in zip(weighted, half):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("targets", ["sparse", "one_hot", "binary"])
def test_class_weight_is_the_per_row_weight_of_each_rows_class(targets):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    labels = rng.integers(0, 2 if targets == "binary" else 3, 40)
    if targets == "binary":
        y, loss, output = labels.astype(np.float32), "binary_crossentropy", Dense(1, "sigmoid")
    else:
        y = labels if targets == "sparse" else np.eye(3, dtype=np.float32)[labels]
        loss = ("sparse_categorical_crossentropy" if targets == "sparse"
                else "categorical_crossentropy")
        output = Dense(3, "softmax")
    class_weight = {0: 0.5, 1: 3.0}  # class 2 unnamed: weight 1 (Keras)
    table = np.array([0.5, 3.0, 1.0])

    def trained(**weights):
        model = Sequential([Dense(4, "tanh", input_dim=5), type(output)(**output.get_config())],
                           seed=0)
        model.compile(SGD(0.1), loss)
        model.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0, **weights)
        return model.get_weights()

    by_class = trained(class_weight=class_weight)
    by_row = trained(sample_weight=table[labels])
    unweighted = trained()
    for a, b in zip(by_class, by_row):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(by_class[0], unweighted[0])


def bad_weight_cases():
    n = 20
    return [
        ({"sample_weight": -np.ones(n)}, ValueError, r"sample_weight\[0\]: expected a finite "
                                                     r"weight >= 0, got -1"),
        ({"sample_weight": np.r_[np.ones(n - 1), np.nan]}, ValueError,
         r"sample_weight\[19\].*nan"),
        ({"sample_weight": np.ones(n - 1)}, ValueError, r"shape \(20,\), got shape \(19,\)"),
        ({"sample_weight": np.ones((n, 2))}, ValueError, "one weight per sample"),
        ({"sample_weight": ["a"] * n}, TypeError, "sample_weight: expected numbers"),
        ({"class_weight": {0: 1.0, 3: 2.0}}, ValueError, "class 3 is not a class of the model"),
        ({"class_weight": {-1: 2.0}}, ValueError, "class -1 is not a class"),
        ({"class_weight": {0: -2.0}}, ValueError, r"class_weight\[0\]: expected a finite "
                                                  r"weight >= 0"),
        ({"class_weight": {1: float("nan")}}, ValueError, r"class_weight\[1\]"),
        ({"class_weight": {"cat": 2.0}}, TypeError, "keys must be integer classes"),
        ({"class_weight": [1.0, 2.0]}, TypeError, "expected a dict"),
        ({"class_weight": {0: 1.0}, "sample_weight": np.ones(n)}, ValueError, "not both"),
    ]


@pytest.mark.parametrize("weights,error,message", bad_weight_cases())
def test_bad_weights_get_a_clear_error_and_leave_the_model_unchanged(weights, error, message):
    x, y = data(samples=20, classes=3)
    model = softmax_model(None, "sparse_categorical_crossentropy", 3)
    model.build(6)
    before = model.get_weights()
    with pytest.raises(error, match=message):
        model.fit(x, y, verbose=0, **weights)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    if "sample_weight" in weights and "class_weight" not in weights:
        with pytest.raises(error, match=message):
            model.evaluate(x, y, sample_weight=weights["sample_weight"])


def test_class_weight_names_a_row_whose_class_it_cannot_weigh():
    x = np.zeros((3, 2), np.float32)
    model = Sequential([Dense(1, input_dim=2)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="row 2 of y is class 3"):
        model.fit(x, np.array([0.0, 1.0, 2.7]), verbose=0, class_weight={0: 1.0})


def test_validation_weights_from_a_triple_and_from_validation_split():
    x, y = data(samples=60, classes=3)
    w = np.random.default_rng(1).random(60)
    model = softmax_model(None, "sparse_categorical_crossentropy", 3)
    history = model.fit(x[:40], y[:40], epochs=1, verbose=0,
                        validation_data=(x[40:], y[40:], w[40:]))
    assert history["val_loss"][0] == pytest.approx(
        model.evaluate(x[40:], y[40:], sample_weight=w[40:]), rel=1e-6)
    history = model.fit(x, y, epochs=1, verbose=0, validation_split=0.25, sample_weight=w)
    assert history["val_loss"][0] == pytest.approx(
        model.evaluate(x[45:], y[45:], sample_weight=w[45:]), rel=1e-6)
    assert history["val_loss"][0] != pytest.approx(model.evaluate(x[45:], y[45:]), rel=1e-6)


def test_class_weight_weighs_the_training_rows_only_as_keras():
    x, y = data(samples=60, classes=3)
    model = softmax_model(None, "sparse_categorical_crossentropy", 3)
    history = model.fit(x, y, epochs=1, verbose=0, validation_split=0.25,
                        class_weight={0: 5.0, 1: 0.1})
    assert history["val_loss"][0] == pytest.approx(model.evaluate(x[45:], y[45:]), rel=1e-6)
