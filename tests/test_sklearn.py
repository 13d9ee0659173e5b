"""fastnn.sklearn against scikit-learn itself: its estimator checks, and each semantic of
its MLPClassifier / MLPRegressor compared with the real one.

With dtype="float64" and shuffle=False, fastnn's estimators follow scikit-learn's
trajectory to rounding (same initial weights, batches, L2 term, losses, optimizer steps,
schedules and stopping), so most tests compare weights and loss curves directly.
"""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn import neural_network
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastnn
from fastnn import counter_rng
from fastnn import plan as plan_module
from fastnn.sklearn import MLPClassifier, MLPRegressor

from conftest import BACKENDS

EXTRAS = {"backend", "dtype", "dropout", "matmul_precision"}


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# -- data ----------------------------------------------------------------------------------

def classification(n=150, classes=3, features=6, seed=0):
    x, y = make_classification(n_samples=n, n_features=features, n_informative=4,
                               n_classes=classes, random_state=seed)
    return x, y


def regression(n=300, seed=0, outputs=1):
    """A smooth function of three features, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 3))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 - x[:, 0] * x[:, 2] + 0.1 * rng.normal(size=n)
    if outputs > 1:
        y = np.column_stack([y, np.cos(x[:, 1]) + x[:, 2]])
    return x, y


def both(kind, **params):
    """(fastnn's float64 estimator, scikit-learn's) with the same parameters."""
    ours = {"classifier": MLPClassifier, "regressor": MLPRegressor}[kind]
    theirs = {"classifier": neural_network.MLPClassifier,
              "regressor": neural_network.MLPRegressor}[kind]
    return ours(dtype="float64", **params), theirs(**params)


def assert_same_training(ours, theirs, rtol=1e-7):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    for mine, real in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert mine.shape == real.shape
        np.testing.assert_allclose(mine, real, rtol=rtol, atol=1e-9)


# -- parameters and attributes -------------------------------------------------------------

@pytest.mark.parametrize("ours, theirs", [(MLPClassifier, neural_network.MLPClassifier),
                                          (MLPRegressor, neural_network.MLPRegressor)])
def test_parameters_are_scikit_learns_plus_fastnns_keyword_only_extras(ours, theirs):
    mine, real = ours().get_params(), theirs().get_params()
    assert {key: mine[key] for key in real} == real
    assert set(mine) - set(real) == EXTRAS
    assert mine["dtype"] == "float32" and mine["backend"] is None
    kinds = {name: parameter.kind for name, parameter
             in inspect.signature(ours).parameters.items()}
    real_kinds = {name: parameter.kind for name, parameter
                  in inspect.signature(theirs).parameters.items()}
    assert {name: kinds[name] for name in real_kinds} == real_kinds  # e.g. solver keyword-only
    assert {kinds[name] for name in EXTRAS} == {inspect.Parameter.KEYWORD_ONLY}


def test_fitted_attributes_match_scikit_learns():
    x, y = classification()
    ours, theirs = both("classifier", hidden_layer_sizes=(7, 5), max_iter=3, random_state=0)
    ours.fit(x, y), theirs.fit(x, y)
    for name in ("classes_", "n_features_in_", "n_layers_", "n_outputs_", "out_activation_",
                 "validation_scores_", "best_validation_score_"):
        assert np.all(getattr(ours, name) == getattr(theirs, name)), name
    assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-9)
    assert [c.shape for c in ours.coefs_] == [(6, 7), (7, 5), (5, 3)]
    assert [b.shape for b in ours.intercepts_] == [(7,), (5,), (3,)]
    assert ours.out_activation_ == "softmax"
    assert ours.coefs_[0].dtype == np.float64
    assert MLPClassifier(max_iter=2).fit(x, y).coefs_[0].dtype == np.float32  # the default


def test_feature_names_in():
    pandas = pytest.importorskip("pandas")  # an optional check of an optional input type
    x, y = classification()
    frame = pandas.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    model = MLPClassifier(max_iter=2).fit(frame, y)
    assert list(model.feature_names_in_) == list(frame.columns)


@pytest.mark.parametrize("params, error, match", [
    ({"solver": "lbfgs"}, NotImplementedError, "solver.*'adam'.*'sgd'"),
    ({"backend": "gpu"}, ValueError, "backend"),
    ({"dtype": "float16"}, ValueError, "dtype"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"matmul_precision": "float16"}, ValueError, "matmul_precision"),
    ({"matmul_precision": "bfloat16", "dtype": "float64"}, ValueError,
     "matmul_precision: 'bfloat16' needs dtype='float32'"),
    ({"solver": "sgd", "momentum": 1.0}, ValueError, "momentum"),
    ({"hidden_layer_sizes": (4, 0)}, ValueError, "hidden_layer_sizes"),
    ({"activation": "softplus"}, ValueError, "activation"),
])
def test_bad_parameters_raise_naming_them(params, error, match):
    x, y = classification()
    with pytest.raises(error, match=match):
        MLPClassifier(**params).fit(x, y)


def test_poisson_loss_is_refused():
    x, y = regression()
    with pytest.raises(NotImplementedError, match="loss"):
        MLPRegressor(loss="poisson").fit(x, np.abs(y))


def test_importing_fastnn_does_not_import_scikit_learn():
    code = "import sys, fastnn; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# -- training semantics, against scikit-learn ----------------------------------------------

def test_initial_weights_are_scikit_learns_glorot_uniform():
    """One sgd epoch at a negligible learning rate leaves the initial weights: they equal
    scikit-learn's (weights and biases, bound sqrt(6 / (fan_in + fan_out)))."""
    x, y = classification()
    for activation, factor in (("relu", 6.0), ("logistic", 2.0)):
        ours, theirs = both("classifier", hidden_layer_sizes=(40,), activation=activation,
                            solver="sgd", momentum=0.0, learning_rate_init=1e-300,
                            max_iter=1, random_state=3)
        ours.fit(x, y), theirs.fit(x, y)
        for mine, real in zip(ours.coefs_ + ours.intercepts_,
                              theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_array_equal(mine, real)
        bound = np.sqrt(factor / (6 + 40))
        assert np.abs(ours.intercepts_[0]).max() <= bound
        assert np.abs(ours.intercepts_[0]).max() > 0.8 * bound  # biases are drawn too


@pytest.mark.parametrize("params", [
    {"solver": "adam"},
    {"solver": "adam", "beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-4},
    {"solver": "sgd", "momentum": 0.0},
    {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": False},
    {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": True},
    {"solver": "sgd", "learning_rate": "invscaling", "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "adaptive", "tol": 10.0, "n_iter_no_change": 1},
], ids=["adam", "adam-settings", "sgd", "sgd-momentum", "sgd-nesterov", "invscaling",
        "adaptive"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_training_follows_scikit_learn(params, activation):
    x, y = classification(n=130)
    ours, theirs = both("classifier", hidden_layer_sizes=(9, 6), activation=activation,
                        alpha=0.01, batch_size=20, max_iter=12, shuffle=False, random_state=1,
                        **params)
    ours.fit(x, y), theirs.fit(x, y)
    assert_same_training(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(x), theirs.predict_proba(x), rtol=1e-7,
                               atol=1e-10)


def test_adaptive_learning_rate_divides_by_five_and_stops_as_scikit_learn():
    x, y = classification()
    ours, theirs = both("classifier", solver="sgd", learning_rate="adaptive", tol=100.0,
                        n_iter_no_change=1, max_iter=200, shuffle=False, random_state=0)
    ours.fit(x, y), theirs.fit(x, y)
    assert 10 < ours.n_iter_ < 200  # divided by 5 until <= 1e-6, then stopped
    assert_same_training(ours, theirs)
    assert ours._optimizer.lr == pytest.approx(theirs._optimizer.learning_rate)


def test_l2_term_is_scaled_by_the_batch_so_loss_depends_on_batch_size():
    x, y = classification(n=130)
    losses = []
    for batch_size in (50, 130):  # 50 leaves a last batch of 30
        ours, theirs = both("classifier", alpha=1.0, batch_size=batch_size, max_iter=3,
                            shuffle=False, random_state=0)
        ours.fit(x, y), theirs.fit(x, y)
        assert_same_training(ours, theirs)
        losses.append(ours.loss_curve_[0])
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
    ours, theirs = both("classifier", alpha=1.0, batch_size=50, max_iter=1, shuffle=False,
                        random_state=0)
    without_l2 = both("classifier", alpha=0.0, batch_size=50, max_iter=1, shuffle=False,
                      random_state=0)[0].fit(x, y)
    assert ours.fit(x, y).loss_ > without_l2.loss_ + 0.1


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_l2_term_of_a_weight_matrix_with_a_kernel_call_of_its_own(solver):
    """W1 of 130 x 300 is too large to share the optimizer's kernel call with its
    neighbours (fastnn.optimizers.JOIN_LIMIT): its L2 term goes through the call's weight
    decay, the joined small parameters' through a mask."""
    x, y = classification(n=120, features=130)
    assert 130 * 300 >= fastnn.optimizers.JOIN_LIMIT
    ours, theirs = both("classifier", hidden_layer_sizes=(300,), solver=solver, alpha=0.5,
                        batch_size=50, max_iter=4, shuffle=False, random_state=0)
    ours.fit(x, y), theirs.fit(x, y)
    assert_same_training(ours, theirs)


def test_binary_string_labels_have_one_logistic_unit():
    x, y = classification(classes=2)
    labels = np.array(["no", "yes"])[y]
    ours, theirs = both("classifier", hidden_layer_sizes=(8,), max_iter=20, shuffle=False,
                        random_state=0)
    ours.fit(x, labels), theirs.fit(x, labels)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 1
    assert ours.coefs_[-1].shape == (8, 1)
    assert ours.predict_proba(x).shape == (len(x), 2)
    assert_same_training(ours, theirs)
    np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
    assert ours.predict(x).dtype == labels.dtype
    np.testing.assert_allclose(ours.predict_log_proba(x), theirs.predict_log_proba(x),
                               rtol=1e-6)


@pytest.mark.parametrize("fitted, labels", [
    (np.arange(10), [3, 0, 9, 3]),                              # multiclass
    (np.arange(10, dtype=np.int8), [3, 0, 9, 3]),               # classes 0..9 of int8
    ([2, 5, 7], [7, 2, 2]),                                     # integers, not 0..k-1
    ([0, 1, 2], [2, -1]),                                       # 0..k-1: below the range
    ([0, 1], [1, 0, 0]),                                        # binary: one column
    (np.array(["b", "a", "c"], dtype=object), ["c", "a"]),      # strings, a subset
    ([0.0, 1.0, 2.0, 3.0], [2.0, 2.0]),                         # floats, one class seen
    ([True, False], [True, True]),
    ([0, 1, 2], [0, 5]),                                        # unseen: transform's path
    ([4, 4], [4, 4]),                                           # one class: transform's path
])
def test_binarized_labels_are_label_binarizers(fitted, labels):
    from sklearn.preprocessing import LabelBinarizer
    from fastnn.sklearn import _binarize
    binarizer = LabelBinarizer().fit(np.asarray(fitted))
    labels = np.asarray(labels, dtype=np.asarray(fitted).dtype)
    (ours, indices) = _binarize(binarizer, labels)
    theirs = binarizer.transform(labels).astype(bool)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    known = np.isin(labels, binarizer.classes_).all() and len(binarizer.classes_) >= 2
    assert (indices is not None) == bool(known)
    if indices is not None:  # the class of each label: a softmax's targets
        np.testing.assert_array_equal(binarizer.classes_[indices], labels)



@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
@pytest.mark.parametrize("labels", [[7], [7, 7, 2], [0, 1, 1, 0], [5, 0, 9, 5, 3], [-4, 2, -4],
                                    [100, 3, 100]])
def test_fitted_binarizers_are_label_binarizers(dtype, labels):
    """fit's direct path for integer labels fits what LabelBinarizer().fit fits: the same
    attributes, classes_ of the same dtype and values, the same type of target."""
    from sklearn.preprocessing import LabelBinarizer
    from fastnn.sklearn import _fit_binarizer
    if np.dtype(dtype).kind == "u" and min(labels) < 0:
        labels = [abs(label) for label in labels]
    y = np.asarray(labels, dtype=dtype)
    ours, theirs = _fit_binarizer(y), LabelBinarizer().fit(y)
    assert vars(ours).keys() == vars(theirs).keys()
    assert ours.y_type_ == theirs.y_type_ and ours.sparse_input_ == theirs.sparse_input_
    assert ours.classes_.dtype == theirs.classes_.dtype
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_array_equal(ours.transform(y), theirs.transform(y))

def test_multilabel_indicator_targets():
    x, y = make_multilabel_classification(n_samples=120, n_features=8, n_classes=4,
                                          random_state=0)
    ours, theirs = both("classifier", hidden_layer_sizes=(10,), alpha=0.1, batch_size=32,
                        max_iter=15, shuffle=False, random_state=0)
    ours.fit(x, y), theirs.fit(x, y)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 4
    assert_same_training(ours, theirs)
    np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
    assert ours.predict_proba(x).shape == (120, 4)


@pytest.mark.parametrize("outputs", [1, 2])
def test_regressor_follows_scikit_learn(outputs):
    x, y = regression(outputs=outputs)
    ours, theirs = both("regressor", hidden_layer_sizes=(12,), alpha=0.01, batch_size=64,
                        max_iter=10, shuffle=False, random_state=0)
    ours.fit(x, y), theirs.fit(x, y)
    assert_same_training(ours, theirs)
    assert ours.out_activation_ == "identity"
    assert ours.predict(x).shape == y.shape
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-7, atol=1e-10)


def test_stops_after_n_iter_no_change_epochs_without_tol_gain():
    x, y = classification()
    ours, theirs = both("classifier", tol=0.05, n_iter_no_change=3, max_iter=500,
                        shuffle=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # stopped early: no warning
        ours.fit(x, y)
    theirs.fit(x, y)
    assert ours.n_iter_ < 500
    assert_same_training(ours, theirs)
    assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-7)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_early_stopping_on_the_validation_score_restores_the_best_weights(kind):
    x, y = classification(n=300, classes=2) if kind == "classifier" else regression()
    ours, theirs = both(kind, early_stopping=True, validation_fraction=0.2, tol=1e-3,
                        n_iter_no_change=4, learning_rate_init=0.05, max_iter=300,
                        shuffle=False, random_state=0)
    ours.fit(x, y), theirs.fit(x, y)
    assert ours.n_iter_ < 300
    assert ours.best_loss_ is None
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-7)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_)
    assert ours.best_validation_score_ == max(ours.validation_scores_)
    assert_same_training(ours, theirs)  # the restored best weights, not the last ones


def test_convergence_warning_at_max_iter():
    x, y = classification()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\) reached"):
        MLPClassifier(max_iter=3, tol=0.0).fit(x, y)


def test_warm_start_continues_as_scikit_learn():
    x, y = classification()
    ours, theirs = both("classifier", warm_start=True, solver="sgd", max_iter=4,
                        shuffle=False, random_state=0)
    for _ in range(3):
        ours.fit(x, y), theirs.fit(x, y)
    assert len(ours.loss_curve_) == 12
    assert_same_training(ours, theirs)
    with pytest.raises(ValueError, match="warm_start can only be used"):
        ours.fit(x, (y + 1) % 5)


def test_partial_fit_as_scikit_learn():
    x, y = classification()
    ours, theirs = both("classifier", solver="sgd", learning_rate="invscaling",
                        shuffle=False, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clone(ours).partial_fit(x, y)
    for start in (0, 50, 100):
        rows = slice(start, start + 50)
        ours.partial_fit(x[rows], y[rows], classes=[0, 1, 2])
        theirs.partial_fit(x[rows], y[rows], classes=[0, 1, 2])
    assert_same_training(ours, theirs)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(x, y, classes=[0, 1, 2])
    regressor = MLPRegressor(max_iter=5).partial_fit(*regression())
    assert regressor.n_iter_ == 1


def test_non_finite_weights_raise_as_scikit_learn():
    x, y = regression(n=64)
    x = x * 1e10
    for model in both("regressor", solver="sgd", learning_rate_init=10.0, max_iter=5):
        with pytest.raises(ValueError, match="non-finite parameter weights"), \
                np.errstate(all="ignore"):
            model.fit(x, y)


def test_digits_accuracy_within_a_point_of_scikit_learn():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2,
                                                        random_state=0)
    params = dict(hidden_layer_sizes=(128,), solver="adam", batch_size=32, max_iter=20,
                  random_state=0)
    ours = MLPClassifier(**params).fit(x_train, y_train).score(x_test, y_test)
    theirs = neural_network.MLPClassifier(**params).fit(x_train, y_train).score(x_test, y_test)
    assert ours > 0.95
    assert abs(ours - theirs) <= 0.01


def test_regression_r2_within_a_hundredth_of_scikit_learn():
    x, y = regression(n=1000, seed=1)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)
    params = dict(hidden_layer_sizes=(32, 32), max_iter=200, random_state=0)
    ours = MLPRegressor(**params).fit(x_train, y_train).score(x_test, y_test)
    theirs = neural_network.MLPRegressor(**params).fit(x_train, y_train).score(x_test, y_test)
    assert ours > 0.9
    assert abs(ours - theirs) <= 0.01


# -- fastnn's extras -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_trains_the_same_model(backend):
    x, y = classification()
    reference = MLPClassifier(dtype="float64", max_iter=5, random_state=0, backend="numpy")
    model = MLPClassifier(dtype="float64", max_iter=5, random_state=0, backend=backend)
    reference.fit(x, y), model.fit(x, y)
    for mine, real in zip(model.coefs_, reference.coefs_):
        np.testing.assert_allclose(mine, real, rtol=1e-9, atol=1e-12)
    assert fastnn.get_backend_name() == fastnn.backends._default()  # restored


def test_dropout_is_seeded_and_changes_training():
    x, y = classification()
    runs = [MLPClassifier(dropout=rate, max_iter=5, random_state=0).fit(x, y)
            for rate in (0.5, 0.5, 0.0)]
    np.testing.assert_array_equal(runs[0].coefs_[0], runs[1].coefs_[0])
    assert not np.allclose(runs[0].coefs_[0], runs[2].coefs_[0])
    assert runs[0].n_layers_ == 3 and len(runs[0].coefs_) == 2


@pytest.mark.parametrize("precision", ["bfloat16", "mixed_bfloat16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_matmuls_train_as_the_model_of_that_precision(backend, precision):
    """matmul_precision="bfloat16" trains a Sequential of bfloat16 GEMMs (fastnn.precision):
    other weights than float32's, and the digits learned as well, within 2 points."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x / 16.0, y, test_size=0.2,
                                                        random_state=0)
    params = dict(hidden_layer_sizes=(64,), solver="adam", batch_size=32, max_iter=5,
                  random_state=0, backend=backend)
    half = MLPClassifier(matmul_precision=precision, **params).fit(x_train, y_train)
    full = MLPClassifier(**params).fit(x_train, y_train)
    assert half._model.matmul_precision == "bfloat16"
    assert all(layer.matmul_precision == "bfloat16" for layer in half._model.layers)
    assert not np.allclose(half.coefs_[0], full.coefs_[0], rtol=1e-4, atol=1e-5)
    assert half.score(x_test, y_test) > 0.93
    assert abs(half.score(x_test, y_test) - full.score(x_test, y_test)) <= 0.02


def test_verbose_prints_scikit_learns_lines(capsys):
    x, y = classification()
    MLPClassifier(max_iter=2, verbose=True).fit(x, y)
    assert capsys.readouterr().out.startswith("Iteration 1, loss = ")


# -- scikit-learn's tools --------------------------------------------------------------------

def test_pipeline_cross_val_score_and_grid_search_in_two_processes():
    x, y = classification(n=200)
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(max_iter=50, random_state=0))
    scores = cross_val_score(pipeline, x, y, cv=3)
    assert scores.mean() > 0.6
    grid = {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__hidden_layer_sizes":
            [(8,), (16,)]}
    searches = [GridSearchCV(pipeline, grid, cv=3, n_jobs=jobs).fit(x, y) for jobs in (1, 2)]
    np.testing.assert_allclose(searches[0].cv_results_["mean_test_score"],
                               searches[1].cv_results_["mean_test_score"])
    assert searches[1].best_estimator_.score(x, y) > 0.6


def test_clone_and_pickle():
    x, y = classification()
    model = MLPClassifier(solver="sgd", max_iter=5, random_state=0).fit(x, y)
    fresh = clone(model)
    assert not hasattr(fresh, "coefs_") and fresh.get_params() == model.get_params()
    blob = pickle.dumps(model)
    assert model._model is not None  # pickling left the model as it was
    assert b"Sequential" not in blob  # weights are stored as arrays, not fastnn objects
    restored = pickle.loads(blob)
    np.testing.assert_array_equal(restored.predict_proba(x), model.predict_proba(x))
    # partial_fit resumes with the optimizer's state (momentum) as if never pickled
    model.partial_fit(x, y), restored.partial_fit(x, y)
    for mine, real in zip(restored.coefs_, model.coefs_):
        np.testing.assert_array_equal(mine, real)


def test_replaced_coefs_are_used_by_predict():
    x, y = classification()
    model = MLPClassifier(max_iter=3, random_state=0).fit(x, y)
    before = model.predict_proba(x)
    model.coefs_ = [np.zeros_like(c) for c in model.coefs_]
    model.intercepts_ = [np.zeros_like(b) for b in model.intercepts_]
    np.testing.assert_allclose(model.predict_proba(x), np.full_like(before, 1 / 3))


# -- the compiled training loop --------------------------------------------------------------
# The estimators train through the backends' train_steps (fastnn.plan reads the compiled_as
# descriptions of their layers, losses and optimizers). Each configuration below is trained
# twice on every backend, through the compiled loop and through the per-layer path (the plan
# refused by the test), and the two must give the same weights and loss curves: float64 to
# rtol 1e-10 (measured: bit for bit), float32 (shuffled, with dropout) to rtol 1e-5.

COMPILED_CASES = {
    "multiclass-adam-l2": ("classifier", "multiclass", dict(solver="adam", alpha=0.01)),
    "binary-sgd-nesterov": ("classifier", "binary", dict(solver="sgd", alpha=0.05,
                                                         learning_rate_init=0.05)),
    "multilabel-sgd-momentum": ("classifier", "multilabel", dict(
        solver="sgd", nesterovs_momentum=False, alpha=0.1, learning_rate_init=0.05)),
    "multiclass-sgd-no-momentum": ("classifier", "multiclass", dict(solver="sgd", momentum=0.0,
                                                                    alpha=0.0)),
    "invscaling": ("classifier", "multiclass", dict(solver="sgd", learning_rate="invscaling",
                                                    learning_rate_init=0.2)),
    "adaptive": ("classifier", "multiclass", dict(solver="sgd", learning_rate="adaptive",
                                                  tol=10.0, n_iter_no_change=1)),
    "regressor-adam": ("regressor", "one", dict(solver="adam", alpha=0.01,
                                                learning_rate_init=0.01)),
    "regressor-2-outputs-sgd": ("regressor", "two", dict(solver="sgd", alpha=0.01,
                                                         learning_rate_init=0.01)),
    "early-stopping": ("classifier", "binary", dict(early_stopping=True, tol=1e-3,
                                                    n_iter_no_change=2,
                                                    learning_rate_init=0.05)),
}


def compiled_case_data(targets):
    if targets == "multilabel":
        return make_multilabel_classification(n_samples=120, n_features=8, n_classes=4,
                                              random_state=0)
    if targets in ("one", "two"):
        return regression(n=200, outputs=1 if targets == "one" else 2)
    return classification(n=140, classes=2 if targets == "binary" else 3)


def fit_on_both_paths(monkeypatch, backend, make, fit):
    """(estimator trained through the compiled loop, through the per-layer path); asserts
    that the first did call the backend's train_steps and the second did not."""
    module = fastnn.backends.load_backend(backend)
    real, calls = module.train_steps, []

    def counted(*args):
        calls.append(args[2:4])
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(module, "train_steps", counted)
        compiled = fit(make())
        assert calls, "the compiled loop did not train"
        del calls[:]
        patch.setattr(plan_module, "unsupported", lambda model: "the per-layer path (test)")
        per_layer = fit(make())
        assert not calls
    return compiled, per_layer


def assert_same_model(compiled, per_layer, rtol, atol):
    assert compiled.n_iter_ == per_layer.n_iter_ and compiled.t_ == per_layer.t_
    np.testing.assert_allclose(compiled.loss_curve_, per_layer.loss_curve_, rtol=rtol)
    for a, b in zip(compiled.coefs_ + compiled.intercepts_,
                    per_layer.coefs_ + per_layer.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("case", list(COMPILED_CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_compiled_loop_trains_as_the_per_layer_path(monkeypatch, backend, case):
    kind, targets, params = COMPILED_CASES[case]
    x, y = compiled_case_data(targets)
    estimator = {"classifier": MLPClassifier, "regressor": MLPRegressor}[kind]

    def make():
        return estimator(hidden_layer_sizes=(9, 6), batch_size=32, max_iter=8, shuffle=False,
                         random_state=1, dtype="float64", backend=backend, **params)

    compiled, per_layer = fit_on_both_paths(monkeypatch, backend, make,
                                            lambda model: model.fit(x, y))
    assert_same_model(compiled, per_layer, rtol=1e-10, atol=1e-12)
    if params.get("early_stopping"):
        np.testing.assert_allclose(compiled.validation_scores_, per_layer.validation_scores_)


def fit_in_chunks_and_one_step_at_a_time(monkeypatch, backend, make, fit):
    """(estimator trained in the compiled loop's chunks of steps, the same trained with one
    step per train_steps call). The C loop fuses the optimizer's step with the weight
    gradient in every step of a call but its last (kernels/train_impl.h), so the second
    never fuses it."""
    module = fastnn.backends.load_backend(backend)
    real, counts = module.train_steps, []

    def counted(plan, order, first, count, stats):
        counts.append(count)
        return real(plan, order, first, count, stats)

    def one_at_a_time(plan, order, first, count, stats):
        done = 0
        while done < count and real(plan, order, first + done, 1, stats[done:done + 1]) == 1:
            done += 1
        return done

    with monkeypatch.context() as patch:
        patch.setattr(module, "train_steps", counted)
        chunked = fit(make())
    assert max(counts) > 1  # the chunked fit ran several steps a call
    with monkeypatch.context() as patch:
        patch.setattr(module, "train_steps", one_at_a_time)
        single = fit(make())
    return chunked, single


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fused_optimizer_step_keeps_scikit_learns_terms(monkeypatch, backend, dtype,
                                                             solver):
    """Layers wide enough for the C loop to fuse the optimizer's step with the weight gradient
    (kernels/linear_impl.h; tests/test_compiled_gemm_paths.py): with scikit-learn's L2 term
    (its sum of squares in the loss too), its Nesterov momentum and its Adam eps, the chunked
    fit (fused) gives the weights and loss curve of one step per call (never fused) bit for
    bit."""
    x, y = classification(n=240, features=600, classes=5)

    def make():
        return MLPClassifier(hidden_layer_sizes=(45, 200), solver=solver, alpha=0.01,
                             batch_size=24, max_iter=2, random_state=1, dtype=dtype,
                             backend=backend)

    chunked, single = fit_in_chunks_and_one_step_at_a_time(monkeypatch, backend, make,
                                                           lambda model: model.fit(x, y))
    for a, b in zip(chunked.coefs_ + chunked.intercepts_, single.coefs_ + single.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert chunked.loss_curve_ == single.loss_curve_


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_compiled_loop_trains_float32_shuffled_dropout_and_partial_fit(monkeypatch, backend,
                                                                           solver):
    x, y = classification(n=150)

    def make():
        return MLPClassifier(hidden_layer_sizes=(16,), solver=solver, alpha=0.01, batch_size=16,
                             max_iter=3, random_state=0, dropout=0.2, backend=backend)

    compiled, per_layer = fit_on_both_paths(monkeypatch, backend, make,
                                            lambda model: model.fit(x, y))
    assert compiled.coefs_[0].dtype == np.float32
    assert_same_model(compiled, per_layer, rtol=1e-5, atol=1e-6)

    def partial_fits(model):
        for start in (0, 50, 100):
            model.partial_fit(x[start:start + 50], y[start:start + 50], classes=[0, 1, 2])
        return model

    compiled, per_layer = fit_on_both_paths(monkeypatch, backend, make, partial_fits)
    assert compiled.t_ == 150
    assert_same_model(compiled, per_layer, rtol=1e-5, atol=1e-6)


def test_the_plan_reads_compiled_as_from_the_class_body_only():
    """A subclass of a described loss, optimizer or layer may compute anything: the plan
    refuses it (per-layer path) instead of inheriting the description."""
    from fastnn.sklearn import _HalfSquaredError, _Penalty, _PenalizedDense, _SklearnAdam

    class MyLoss(_HalfSquaredError):
        pass

    class MyAdam(_SklearnAdam):
        pass

    class MyDense(_PenalizedDense):
        pass

    penalty = _Penalty(0.1)

    def model(layer=_PenalizedDense, loss=_HalfSquaredError, optimizer=_SklearnAdam):
        network = fastnn.Sequential([layer(2, "identity", penalty)], dtype="float64")
        network.build(3)
        network.compile(optimizer(0.01, 0.9, 0.999, 1e-8, penalty), loss())
        return network

    assert plan_module.unsupported(model()) is None
    assert "MyLoss" in plan_module.unsupported(model(loss=MyLoss))
    assert "MyAdam" in plan_module.unsupported(model(optimizer=MyAdam))
    assert "MyDense" in plan_module.unsupported(model(layer=MyDense))
    plan = plan_module.build(model(), (np.zeros((4, 3)), np.zeros((4, 2)), None), 4, 0,
                             counter_rng.StepClock())
    plan.refresh(0)
    assert plan.hyper[plan_module.H_L2] == 0.1
    assert plan.config[plan_module.C_EPS_UNCORRECTED] == 1
    assert plan.hyper[plan_module.H_LOSS_SCALE] == 0.5
    assert plan.hyper[plan_module.H_GRAD_SCALE] == 1.0  # 2 outputs / 2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("features, hidden", [(6, (8, 5)), (300, (256,))])
def test_loss_does_not_depend_on_the_compiled_loops_chunks(monkeypatch, backend, features,
                                                           hidden):
    """The compiled loop's calls cover as many steps as fit in CHUNK_SECONDS, which follows
    the clock; loss_ must come out the same whatever the chunks were. The L2 term's ||W||^2
    is summed by the first step of a call and by each update for the next step (the fold):
    both must give the same bits. A 300 x 256 matrix has enough chunks for C's sum of squares
    to share them between two threads."""
    from fastnn import model as model_module
    x, y = classification(classes=3, features=features)
    curves = []
    for seconds in (1e-12, 1e12):  # one step a call; calls growing 4x each time
        monkeypatch.setattr(model_module, "CHUNK_SECONDS", seconds)
        estimator = MLPClassifier(hidden_layer_sizes=hidden, batch_size=3, max_iter=3,
                                  alpha=0.5, random_state=0, backend=backend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            curves.append(estimator.fit(x, y).loss_curve_)
    assert curves[0] == curves[1]


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layout", ["float64", "float32", "sparse"])
def test_non_finite_x_raises_scikit_learns_error(kind, bad, layout):
    """fit checks X's finiteness with fastnn's kernel and, when it fails, raises the
    ValueError scikit-learn's own MLP raises for that X (same message), before any fitted
    attribute is set."""
    import scipy.sparse
    x, y = classification() if kind == "classifier" else regression()
    x = x.astype(np.float32 if layout == "float32" else np.float64)
    x[7, 1] = bad
    if layout == "sparse":
        x = scipy.sparse.csr_matrix(x)
    ours, theirs = both(kind, max_iter=2)
    with pytest.raises(ValueError) as their_error:
        theirs.fit(x, y)
    with pytest.raises(ValueError) as our_error:
        ours.fit(x, y)
    assert str(our_error.value) == str(their_error.value)
    assert not hasattr(ours, "coefs_")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_fit_checks_x_for_nan_and_infinity_once(monkeypatch):
    """fit passes over X once for NaN and infinity (its own all_finite check); the model's
    fit takes that array as checked (inputs.checked_finite) instead of a second pass."""
    from fastnn import inputs
    x, y = classification()
    x = np.ascontiguousarray(x, np.float32)
    seen = []
    real = inputs.get_backend

    class Counting:
        def __init__(self, backend):
            self.backend = backend

        def __getattr__(self, name):
            return getattr(self.backend, name)

        def all_finite(self, array):
            seen.append(array.shape)
            return self.backend.all_finite(array)

    monkeypatch.setattr(inputs, "get_backend", lambda: Counting(real()))
    MLPClassifier(max_iter=2).fit(x, y)
    assert x.shape not in seen  # Sequential.fit did not check X again
    with pytest.raises(ValueError, match="x: contains NaN or infinity"):
        fastnn.Sequential([fastnn.Dense(3, "softmax")]).predict(np.full((2, 6), np.nan))
    assert seen  # the counting check is the one features() runs outside fit


def test_x_beyond_float32_is_refused_in_float32():
    """Finite float64 X that overflows float32 (fastnn's default dtype) is refused with a
    ValueError naming x (scikit-learn computes in float64 and has no such case)."""
    x, y = classification()
    x[3, 2] = 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warning before the error
        with pytest.raises(ValueError, match=r"X: values up to 1e\+300 in magnitude are "
                                             r"beyond the range of dtype float32 .*"
                                             r"use float64 or scale X"):
            MLPClassifier(max_iter=2).fit(x, y)
    MLPClassifier(max_iter=2, dtype=np.float64).fit(x, y)  # the way out the message names
