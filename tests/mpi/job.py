"""The data and model of the data-parallel tests, shared by the MPI worker and the tests."""

import numpy as np

import fastnn


def make_data(rows: int):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows + 51, 12)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1).astype(np.int64)
    return x[:rows], y[:rows], x[rows:], y[rows:]


def make_model(optimizer: str) -> fastnn.Sequential:
    model = fastnn.Sequential([fastnn.Dense(16, "tanh", input_dim=12),
                               fastnn.Dense(3, "softmax")], seed=11)
    opt = (fastnn.SGD(0.1, momentum=0.9, nesterov=True) if optimizer == "sgd"
           else fastnn.Adam(0.01))
    model.compile(opt, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def sklearn_classifier(estimator, backend: str, solver: str, batch: int):
    """fastnn.sklearn's MLPClassifier with a strong L2 term (alpha 0.05), no shuffle."""
    return estimator(hidden_layer_sizes=(16,), solver=solver, alpha=0.05, batch_size=batch,
                     learning_rate_init=0.05 if solver == "sgd" else 0.01, max_iter=4,
                     shuffle=False, random_state=0, backend=backend)
