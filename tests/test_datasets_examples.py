"""The bundled datasets, the examples of the course notes as tests, and ``fastnn train``."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import cli
from fastnn.datasets import animals, load_digits, train_test_split, xor

from conftest import BACKENDS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- datasets ------------------------------------------------------------------

def test_digits_are_the_uci_set_as_scikit_learn_ships_it():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0 and x.max() == 1
    np.testing.assert_array_equal(x * 16, np.round(x * 16))  # pixels were integers 0..16
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    images, _ = load_digits(flatten=False)
    assert images.shape == (1797, 8, 8)


#: SHA-256 of scikit-learn 1.9.1's ``load_digits()``: ``data`` as uint8 bytes, then ``target``
#: as int64 bytes. Recorded once, so the check runs without scikit-learn installed.
SCIKIT_LEARN_DIGITS_SHA256 = "65e5b4619795efb40c1082f4c350c049e4ad552200d369b6ae99e21eef5e72c5"


def test_digits_match_scikit_learn_byte_for_byte():
    x, y = load_digits()
    pixels = np.round(x * 16).astype(np.uint8)
    digest = hashlib.sha256(pixels.tobytes() + y.astype(np.int64).tobytes()).hexdigest()
    assert digest == SCIKIT_LEARN_DIGITS_SHA256


def test_train_test_split_is_deterministic_and_disjoint():
    x, y = load_digits()
    first = train_test_split(x, y, test_fraction=0.2, seed=0)
    second = train_test_split(x, y, test_fraction=0.2, seed=0)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    x_train, x_test, y_train, y_test = first
    assert len(x_test) == 359 and len(x_train) == 1438 and len(y_test) == 359
    rows = {row.tobytes() for row in x_train}
    assert sum(row.tobytes() in rows for row in x_test) < 5  # only true duplicate images
    other = train_test_split(x, y, test_fraction=0.2, seed=1)[1]
    assert not np.array_equal(other, x_test)
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(x, y, test_fraction=1.0)


@pytest.mark.parametrize("arguments, error, name", [
    ({"test_fraction": "a"}, TypeError, "test_fraction"),
    ({"test_fraction": None}, TypeError, "test_fraction"),
    ({"test_fraction": float("nan")}, ValueError, "test_fraction"),
    ({"test_fraction": 0}, ValueError, "test_fraction"),
    ({"seed": "a"}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_train_test_split_names_a_bad_argument(arguments, error, name):
    x, y = xor()
    with pytest.raises(error, match=f"^{name}: expected"):
        train_test_split(x, y, **arguments)


def test_xor_and_animals_tables():
    x, y = xor()
    np.testing.assert_array_equal(y, np.logical_xor(x[:, 0], x[:, 1]))
    x, y, names = animals()
    np.testing.assert_array_equal(x, [[0, 0], [1, 0], [1, 1], [0, 0], [0, 0], [0, 1]])
    assert [names[i] for i in y.argmax(axis=1)] == ["other", "mammal", "bird", "other",
                                                    "other", "bird"]


# -- the examples ----------------------------------------------------------------

def test_softmax_table_matches_the_course_notes(capsys):
    expected = [[2.44728471e-01, 6.65240956e-01, 9.00305732e-02],
                [9.00305732e-02, 2.44728471e-01, 6.65240956e-01],
                [2.06106005e-09, 4.53978686e-05, 9.99954600e-01]]
    np.testing.assert_allclose(load_example("softmax_table").main(), expected, rtol=1e-8)
    assert "2.44728471e-01" in capsys.readouterr().out


@pytest.mark.parametrize("backend", BACKENDS)
def test_xor_is_learned_by_two_layers_and_not_by_one(backend):
    example = load_example("xor")
    with fastnn.use_backend(backend):
        results = example.main()
    _, y = xor()
    classes, accuracy = results[8]
    np.testing.assert_array_equal(classes, y)
    assert accuracy == 1.0
    assert results[0][1] < 1.0  # a linear classifier cannot separate XOR


@pytest.mark.parametrize("backend", BACKENDS)
def test_fur_wings_classifier_learns_every_animal(backend):
    with fastnn.use_backend(backend):
        model = load_example("animals").main()
    x, y, _ = animals()
    np.testing.assert_array_equal(model.predict_classes(x), y.argmax(axis=1))


def test_digits_example_reaches_95_percent(capsys):
    assert load_example("digits").main(verbose=0) >= 0.95
    assert "same predictions" in capsys.readouterr().out


# -- fastnn train --------------------------------------------------------------

def test_train_command_reaches_95_percent_on_the_digits(capsys):
    assert cli.main(["train"]) == 0
    shown = capsys.readouterr()
    match = re.search(r"test accuracy: ([\d.]+)%", shown.out)
    assert match and float(match.group(1)) >= 95.0, shown.out
    assert "ms per epoch" in shown.out
    assert "Epoch 20/20" in shown.out and "samples/s" in shown.out  # a line per epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_command_options_on_every_backend(backend, capsys):
    assert cli.main(["train", "--backend", backend, "--epochs", "3", "--hidden", "32,16",
                     "--optimizer", "adam", "--batch-size", "64", "--quiet"]) == 0
    shown = capsys.readouterr()
    assert f"backend {backend}" in shown.out and "64-32-16-10 MLP" in shown.out
    assert shown.err == ""


def test_python_m_fastnn_train_runs():
    root = str(EXAMPLES.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "fastnn", "train", "--epochs", "2",
                             "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout


def test_train_command_rejects_bad_hidden_sizes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--hidden", "32,x"])
    assert "comma-separated" in capsys.readouterr().err


def test_batch_norm_rescues_the_deep_sigmoid_network(capsys):
    """examples/batchnorm_sigmoid.py: the deep sigmoid network stalls near chance without
    batch normalization (vanishing gradients) and trains with it."""
    without, with_batch_norm = load_example("batchnorm_sigmoid").main()
    assert without < 0.3 and with_batch_norm >= 0.9
    shown = capsys.readouterr().out
    assert "without batch norm" in shown and "with batch norm" in shown
