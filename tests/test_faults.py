"""Faults users reported, as whole kinds: one optimizer in two models, degenerate
output/loss pairs and targets, Keras' validation_split arithmetic, file modes."""

from __future__ import annotations

import gc
import json
import os
import stat

import numpy as np
import pytest

import fastnn
from fastnn import Adam, Dense, Sequential, SGD
from fastnn import bench
from fastnn.callbacks import CSVLogger, History, ModelCheckpoint
from fastnn.files import atomic_write


def blobs(samples=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(samples) % 3
    x = rng.normal(0, 0.3, (samples, 4)) + 2 * np.eye(4)[y]
    return x.astype(np.float32), y


def net(seed=0):
    return Sequential([Dense(16, "relu", input_dim=4), Dense(3, "softmax")], seed=seed)


# -- one optimizer, one model ---------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: SGD(0.05, momentum=0.9), lambda: Adam(0.01)])
def test_one_optimizer_object_cannot_be_compiled_into_two_models(make):
    optimizer = make()
    a, b = net(), net(1)
    a.compile(optimizer, "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="already compiled into another model"):
        b.compile(optimizer, "sparse_categorical_crossentropy")
    assert b.optimizer is None  # b was left as it was
    # the owner may recompile with it; a recompiled owner releases it
    a.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    a.compile("sgd", "sparse_categorical_crossentropy")
    b.compile(optimizer, "sparse_categorical_crossentropy")
    assert b.optimizer is optimizer


def test_an_optimizer_of_a_discarded_model_may_be_reused():
    optimizer = SGD(0.1)
    a = net()
    a.compile(optimizer, "sparse_categorical_crossentropy")
    del a
    gc.collect()
    b = net()
    b.compile(optimizer, "sparse_categorical_crossentropy")


def test_the_reported_case_each_model_with_its_own_optimizer_learns():
    x, y = blobs(300)
    shared = SGD(0.05, momentum=0.9)
    a, b = net(), net(1)
    a.compile(shared, "sparse_categorical_crossentropy", metrics=["accuracy"])
    b.compile(SGD(**shared.get_config()), "sparse_categorical_crossentropy", metrics=["accuracy"])
    a.build(4), b.build(4)
    losses = a.fit(x, y, epochs=3, verbose=0)["loss"]
    assert losses[2] < losses[0] * 0.5
    b.fit(x, y, epochs=3, verbose=0)
    accuracy = a.evaluate(x, y)[1]
    b.fit(x, y, epochs=3, verbose=0)
    a.fit(x, y, epochs=1, verbose=0)
    assert a.evaluate(x, y)[1] >= accuracy - 0.02 and accuracy > 0.9


# -- degenerate output/loss pairs and targets ---------------------------------------

@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_a_softmax_over_one_unit_is_refused_pointing_to_sigmoid(loss):
    model = Sequential([Dense(4, "relu", input_dim=3), Dense(1, "softmax")])
    optimizer = SGD(0.1)
    with pytest.raises(ValueError, match="sigmoid.*binary_crossentropy"):
        model.compile(optimizer, loss)
    assert model.optimizer is None and model.loss is None  # nothing changed
    fixed = Sequential([Dense(4, "relu", input_dim=3), Dense(1, "sigmoid")])
    fixed.compile(optimizer, "binary_crossentropy")  # the optimizer was not taken


@pytest.mark.parametrize("rows,row,message", [
    ([[1, 0], [0, 0], [0, 1]], 1, "sums to 0"),
    ([[1, 0], [0.5, 0.4], [0, 1]], 1, "sums to 0.9"),
    ([[1, 0], [0, 1], [1.5, -0.5]], 2, "has a negative probability -0.5"),
    ([[1, 0], [0, 1], [1, 1]], 2, "sums to 2"),
])
def test_probability_targets_must_be_rows_summing_to_one(rows, row, message):
    model = Sequential([Dense(2, "softmax", input_dim=2)])
    model.compile("sgd", "categorical_crossentropy")
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=rf"^y: row {row} {message}"):
        model.fit(x, np.array(rows, np.float32), verbose=0)
    with pytest.raises(ValueError, match=rf"^validation_data\[1\]: row {row}"):
        model.fit(x, np.eye(2)[[0, 1, 0]], verbose=0, validation_data=(x, np.array(rows)))
    with pytest.raises(ValueError, match=rf"^y: row {row}"):
        model.evaluate(x, np.array(rows))


def test_soft_targets_within_the_tolerance_are_accepted():
    model = Sequential([Dense(3, "softmax", input_dim=2)])
    model.compile("sgd", "categorical_crossentropy")
    soft = np.array([[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.0, 0.9002]], np.float32)
    assert np.isfinite(model.evaluate(np.zeros((3, 2)), soft))


# -- validation_split: Keras' arithmetic ----------------------------------------------

@pytest.mark.parametrize("samples,split,held_out", [
    (1797, 0.1, 180), (10, 0.05, 1), (10, 0.5, 5), (7, 0.3, 3), (100, 0.2, 20), (3, 0.5, 2),
])
def test_validation_split_holds_out_what_keras_does(samples, split, held_out):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(samples, 4)).astype(np.float32), rng.integers(0, 3, samples)
    model = net()
    model.compile(SGD(0.01), "sparse_categorical_crossentropy")
    seen = []

    class Steps(fastnn.Callback):
        def on_test_batch_end(self, batch, logs=None):
            seen.append(batch)

    history = model.fit(x, y, epochs=1, batch_size=samples, verbose=0,
                        validation_split=split, callbacks=[Steps()])
    assert held_out == samples - int(np.floor(samples * (1 - split)))
    assert history["val_loss"][0] == pytest.approx(
        model.evaluate(x[samples - held_out:], y[samples - held_out:]), rel=1e-6)
    assert history["val_loss"][0] != pytest.approx(
        model.evaluate(x[samples - held_out - 1:], y[samples - held_out - 1:]), rel=1e-6)


def test_validation_split_accepts_numpy_scalars_as_keras():
    x, y = blobs(20)
    model = net()
    model.compile("sgd", "sparse_categorical_crossentropy")
    history = model.fit(x, y, verbose=0, validation_split=np.float32(0.25))
    assert history["val_loss"][0] == pytest.approx(model.evaluate(x[15:], y[15:]), rel=1e-6)


@pytest.mark.parametrize("samples,split", [(1, 0.5), (10, 0.99), (10, 1e-17)])
def test_validation_split_keras_refuses_is_refused(samples, split):
    x, y = np.zeros((samples, 4), np.float32), np.zeros(samples, np.int64)
    model = net()
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(x, y, verbose=0, validation_split=split)


# -- files: atomic, with the umask's mode, overwritten files keep theirs --------------

@pytest.fixture
def umask():
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def trained():
    x, y = blobs()
    model = net()
    model.compile(SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model, x, y


def writers():
    """Every kind of file fastnn writes, as write(path)."""
    def model_file(path):
        model, _, _ = trained()
        model.build()
        model.save(path)

    def weights_file(path):
        model, _, _ = trained()
        model.build()
        model.save_weights(path)

    def checkpoint(path):
        model, x, y = trained()
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(path)])

    def csv_log(path):
        model, x, y = trained()
        model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path)])

    def bench_json(path):
        bench.write_json([{"kernel": "matmul"}], path)

    def plot(path):
        history = History()
        history.history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}
        history.plot(path)

    return {"model": model_file, "weights": weights_file, "checkpoint": checkpoint,
            "csv": csv_log, "bench_json": bench_json, "plot": plot}


@pytest.mark.parametrize("kind", list(writers()))
@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_mode_a_plain_open_gives(kind, mask, expected, umask, tmp_path):
    path = tmp_path / ("out.png" if kind == "plot" else "out.npz")
    umask(mask)
    writers()[kind](str(path))
    assert mode_of(path) == expected
    with open(tmp_path / "plain", "w"):
        pass
    assert mode_of(tmp_path / "plain") == expected
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, "plain"])  # no temporaries


@pytest.mark.parametrize("kind", list(writers()))
def test_an_overwritten_file_keeps_its_mode(kind, umask, tmp_path):
    path = tmp_path / ("out.png" if kind == "plot" else "out.npz")
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    umask(0o077)
    writers()[kind](str(path))
    assert mode_of(path) == 0o640 and path.read_bytes() != b"old"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path, binary=False) as file:
            file.write("new, half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    bench.write_json([{"kernel": "gemm"}], str(path))
    assert json.loads(path.read_text())["results"] == [{"kernel": "gemm"}]


def test_writing_onto_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        with atomic_write(tmp_path):
            pass


def test_writing_onto_a_device_or_fifo_is_refused_and_leaves_it(tmp_path):
    """The rename would replace it with a regular file (as root, /dev/full became one)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        with atomic_write(fifo):
            pass
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["pipe"]


def test_a_model_of_a_layer_class_load_model_does_not_know_is_not_saved(tmp_path):
    """save refuses it before writing, so a good file at the path stays as it was."""
    class Custom(Dense):
        pass

    model, x, y = trained()
    model.build()
    path = tmp_path / "model.npz"
    model.save(path)
    good = path.read_bytes()
    custom = Sequential([Custom(4, "relu", input_dim=x.shape[1]), Dense(3, "softmax")])
    custom.build()
    with pytest.raises(ValueError, match="layer 0 is a Custom, a class load_model does not "
                                         "know"):
        custom.save(path)
    assert path.read_bytes() == good


def test_every_damaged_byte_of_a_model_file_is_a_model_file_error(tmp_path):
    """A byte flipped anywhere: ModelFileError naming the file, or the model as saved; never
    another exception (zlib.error, NotImplementedError, tokenize.TokenError escaped before)."""
    model, _, _ = trained()
    model.build()
    path = tmp_path / "model.npz"
    model.save(path)
    data = bytearray(path.read_bytes())
    damaged = tmp_path / "damaged.npz"
    saved = [np.array(weight) for weight in model.get_weights()]
    for offset in range(0, len(data), max(1, len(data) // 400)):
        copy = bytearray(data)
        copy[offset] ^= 0x5A
        damaged.write_bytes(bytes(copy))
        try:
            loaded = fastnn.load_model(damaged)
        except fastnn.ModelFileError as error:
            assert str(damaged) in str(error)
        else:  # a byte no check covers (a zip header's spare field): the same weights
            weights = loaded.get_weights()
            assert len(weights) == len(saved)
            for got, want in zip(weights, saved):
                np.testing.assert_array_equal(got, want)
