"""The Keras callback protocol and the callbacks, against what Keras documents."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import fastnn
from fastnn import Callback, Dense, Sequential, SGD
from fastnn.callbacks import (CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                              ReduceLROnPlateau)


def classifier(seed=0, lr=0.1, metrics=("accuracy",)):
    model = Sequential([Dense(8, "relu", input_dim=4), Dense(3, "softmax")], seed=seed)
    model.compile(SGD(lr, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=list(metrics))
    return model


def blobs(samples=60, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    y = np.arange(samples) % 3
    x = rng.normal(0, noise, (samples, 4)) + 2 * np.eye(4)[y]
    return x.astype(np.float32), y


class Recorder(Callback):
    """Every hook call, in order, with its arguments (it overrides every hook)."""

    def __init__(self):
        self.calls = []


def _recording(name):
    def hook(self, *args):
        logs = args[-1] if args and isinstance(args[-1], dict) else None
        self.calls.append((name, args[0] if args and isinstance(args[0], int) else None,
                           None if logs is None else dict(logs)))
    return hook


for _name in [name for name in vars(Callback) if name.startswith("on_")]:
    setattr(Recorder, _name, _recording(_name))


class Hooks(Callback):
    """Overrides every batch hook (so fit calls them) and records them."""

    def __init__(self):
        self.calls = []

    def _record(self, name, batch, logs):
        self.calls.append((name, batch, dict(logs or {})))

    def on_train_batch_begin(self, batch, logs=None):
        self._record("train_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._record("train_end", batch, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._record("test_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._record("test_end", batch, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._record("predict_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self.calls.append(("predict_end", batch, logs["outputs"].copy()))

    def on_epoch_end(self, epoch, logs=None):
        self._record("epoch_end", epoch, logs)


# -- the protocol ---------------------------------------------------------------

def test_batch_hooks_are_called_with_keras_arguments_and_running_logs():
    x, y = blobs(50)
    model = classifier()
    hooks = Hooks()
    model.fit(x, y, epochs=2, batch_size=20, shuffle=False, verbose=0, callbacks=[hooks],
              validation_data=(x[:10], y[:10]))
    names = [name for name, _, _ in hooks.calls]
    per_epoch = (["train_begin", "train_end"] * 3 + ["test_begin", "test_end", "epoch_end"])
    assert names == per_epoch * 2
    train_ends = [(batch, logs) for name, batch, logs in hooks.calls if name == "train_end"]
    assert [batch for batch, _ in train_ends] == [0, 1, 2, 0, 1, 2]
    # the running mean over the epoch's batches so far: the last one is the epoch's value
    epoch_logs = [logs for name, _, logs in hooks.calls if name == "epoch_end"]
    assert train_ends[2][1]["loss"] == pytest.approx(epoch_logs[0]["loss"])
    assert train_ends[2][1]["accuracy"] == pytest.approx(epoch_logs[0]["accuracy"])
    assert sorted(train_ends[0][1]) == ["accuracy", "loss"]
    # the first batch's running loss is that batch's loss (weights as before its step)
    with_state = classifier()
    first = with_state.evaluate(x[:20], y[:20], batch_size=None)[0]
    assert train_ends[0][1]["loss"] == pytest.approx(first, rel=1e-5)
    test_end = [logs for name, _, logs in hooks.calls if name == "test_end"][0]
    assert test_end["loss"] == pytest.approx(epoch_logs[0]["val_loss"])


def test_evaluate_and_predict_call_their_hooks():
    x, y = blobs(30)
    model = classifier()
    hooks, recorder = Hooks(), Recorder()
    model.evaluate(x, y, batch_size=8, callbacks=[hooks, recorder])
    assert [(n, b) for n, b, _ in hooks.calls] == [
        (name, step) for step in range(4) for name in ("test_begin", "test_end")]
    assert [c[0] for c in recorder.calls][0] == "on_test_begin"
    assert recorder.calls[-1][0] == "on_test_end" and "loss" in recorder.calls[-1][2]
    hooks.calls.clear()
    probabilities = model.predict(x, batch_size=8, callbacks=[hooks])
    ends = [outputs for name, _, outputs in hooks.calls if name == "predict_end"]
    assert len(ends) == 4
    np.testing.assert_array_equal(np.concatenate(ends), probabilities)  # probabilities
    np.testing.assert_allclose(ends[0].sum(axis=1), 1, rtol=1e-5)


def test_fit_calls_the_hooks_in_keras_order():
    x, y = blobs(20)
    recorder = Recorder()
    model = classifier()
    model.fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[recorder],
              validation_split=0.5)
    names = [name for name, _, _ in recorder.calls]
    epoch = (["on_epoch_begin"] + ["on_train_batch_begin", "on_train_batch_end"]
             + ["on_test_begin", "on_test_batch_begin", "on_test_batch_end", "on_test_end",
                "on_epoch_end"])
    assert names == ["on_train_begin"] + epoch * 2 + ["on_train_end"]
    assert recorder.calls[-1][2]["val_loss"] == recorder.calls[-2][2]["val_loss"]


def test_stop_training_from_a_callback_ends_after_that_epoch():
    class StopAt(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    x, y = blobs()
    model = classifier()
    history = model.fit(x, y, epochs=10, verbose=0, callbacks=[StopAt()])
    assert history.epoch == [0, 1] and len(history["loss"]) == 2
    assert model.history is history
    # reset at train begin: the next fit runs all its epochs
    assert len(model.fit(x, y, epochs=3, verbose=0).epoch) == 3


def test_stop_training_from_a_batch_hook_ends_after_that_batch():
    steps = []

    class StopAfterTwo(Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append((batch, logs["loss"]))
            if batch == 1:
                self.model.stop_training = True

    x, y = blobs(60)
    model = classifier()
    history = model.fit(x, y, epochs=5, batch_size=10, verbose=0, callbacks=[StopAfterTwo()],
                        validation_split=0.5)
    assert [batch for batch, _ in steps] == [0, 1] and history.epoch == [0]
    # the epoch's loss is the mean over the two batches it trained; validation still ran
    assert history["loss"] == [steps[1][1]] and len(history["val_loss"]) == 1
    # the model took exactly two steps: a fresh one trained two steps has the same weights
    two_steps = classifier()
    two_steps.fit(x[:20], y[:20], epochs=1, batch_size=10, shuffle=False, verbose=0)
    stepped = classifier()
    stepped.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0,
                callbacks=[StopAfterTwo()])
    for got, expected in zip(stepped.get_weights(), two_steps.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_stop_training_set_at_train_begin_is_reset_by_fit_first():
    model = classifier()
    model.stop_training = True
    x, y = blobs()
    assert len(model.fit(x, y, epochs=2, verbose=0).epoch) == 2


def test_callback_documents_its_hooks():
    doc = Callback.__doc__
    for hook in ("on_train_begin", "on_epoch_begin", "on_train_batch_begin",
                 "on_train_batch_end", "on_test_batch_begin", "on_test_batch_end",
                 "on_predict_batch_begin", "on_predict_batch_end", "on_epoch_end",
                 "on_train_end", "stop_training"):
        assert hook in doc
        assert hook == "stop_training" or callable(getattr(Callback, hook))


def test_callbacks_must_be_callbacks():
    x, y = blobs()
    with pytest.raises(TypeError, match="callbacks"):
        classifier().fit(x, y, verbose=0, callbacks=[lambda: None])
    with pytest.raises(TypeError, match="callbacks"):
        classifier().fit(x, y, verbose=0, callbacks=Callback())


# -- EarlyStopping --------------------------------------------------------------

class Scripted(Callback):
    """Replaces the monitored value of each epoch with a scripted one (before the callbacks
    after it see the logs) and records the weights at each epoch's end."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key, self.weights = values, key, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


def test_early_stopping_patience_and_min_delta_as_keras():
    x, y = blobs()
    # Keras: stop when `wait >= patience` epochs passed without an improvement > min_delta
    values = [1.0, 0.8, 0.79, 0.795, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.05)
    history = classifier().fit(x, y, epochs=10, verbose=0,
                               callbacks=[Scripted(values), stopper])
    # epoch 2 (0.79) and 3 (0.795) improve on 0.8 by less than 0.05 -> stop after epoch 3
    assert history.epoch == [0, 1, 2, 3] and stopper.stopped_epoch == 3
    assert stopper.best == 0.8 and stopper.best_epoch == 1


def test_early_stopping_restores_the_best_epochs_weights_bit_for_bit():
    x, y = blobs()
    values = [1.0, 0.5, 0.7, 0.8, 0.9, 0.3]
    scripted = Scripted(values)
    stopper = EarlyStopping(patience=3, restore_best_weights=True)
    model = classifier()
    history = model.fit(x, y, epochs=6, verbose=0, callbacks=[scripted, stopper])
    assert history.epoch == [0, 1, 2, 3, 4]  # stopped at epoch 4 (3 epochs without gain)
    for got, best in zip(model.get_weights(), scripted.weights[1]):
        np.testing.assert_array_equal(got, best)
    assert not np.array_equal(scripted.weights[4][0], scripted.weights[1][0])


def test_early_stopping_mode_max_auto_and_start_from_epoch():
    x, y = blobs()
    accuracies = [0.5, 0.6, 0.4, 0.4, 0.4, 0.4, 0.4]
    stopper = EarlyStopping(monitor="accuracy", patience=1)  # auto: accuracy should rise
    history = classifier().fit(x, y, epochs=7, verbose=0,
                               callbacks=[Scripted(accuracies, "accuracy"), stopper])
    assert history.epoch == [0, 1, 2]
    # start_from_epoch: epochs before it are not monitored (0.1 at epoch 0 is ignored)
    values = [0.1, 0.9, 0.8, 0.85, 0.86]
    stopper = EarlyStopping(patience=1, start_from_epoch=1)
    history = classifier().fit(x, y, epochs=5, verbose=0, callbacks=[Scripted(values), stopper])
    assert history.epoch == [0, 1, 2, 3] and stopper.best == 0.8
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="lowest")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


def test_early_stopping_warns_when_the_monitor_is_missing():
    x, y = blobs()
    with pytest.warns(UserWarning, match="val_loss"):
        history = classifier().fit(x, y, epochs=2, verbose=0, callbacks=[EarlyStopping()])
    assert len(history.epoch) == 2


@pytest.mark.parametrize("callback", [lambda: EarlyStopping(monitor="val_los"),
                                      lambda: ReduceLROnPlateau(monitor="nope"),
                                      lambda: EarlyStopping(monitor="accuracy")])
def test_a_monitor_this_fit_never_logs_raises_naming_it(callback):
    x, y = blobs()
    model = classifier(metrics=())  # no accuracy: "accuracy" is a name it never logs
    with pytest.raises(ValueError, match="monitor: .* does not log; expected one of: loss, "
                                         "val_loss"):
        model.fit(x, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[callback()])


# -- ModelCheckpoint ------------------------------------------------------------

def test_model_checkpoint_fills_epoch_and_log_fields_and_saves_every_epoch(tmp_path):
    x, y = blobs()
    model = classifier()
    pattern = str(tmp_path / "ckpt" / "m-{epoch:02d}-{val_loss:.3f}.npz")
    saved = Scripted([0.5, 0.25, 0.125])
    model.fit(x, y, epochs=3, verbose=0,
              callbacks=[saved, ModelCheckpoint(pattern, save_best_only=False)])
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["m-01-0.500.npz", "m-02-0.250.npz",
                                                   "m-03-0.125.npz"]
    loaded = fastnn.load_model(tmp_path / "ckpt" / "m-02-0.250.npz")
    for got, expected in zip(loaded.get_weights(), saved.weights[1]):
        np.testing.assert_array_equal(got, expected)
    assert loaded.optimizer.state()  # the full model: the optimizer state too


def test_model_checkpoint_save_best_only_and_weights_only(tmp_path):
    x, y = blobs()
    model = classifier()
    path = tmp_path / "best.npz"
    scripted = Scripted([0.9, 0.4, 0.6, 0.3, 0.35])
    checkpoint = ModelCheckpoint(path, monitor="val_loss", save_best_only=True,
                                 save_weights_only=True)
    writes = []
    original = model.save_weights
    model.save_weights = lambda p: (writes.append(os.fspath(p)), original(p))
    model.fit(x, y, epochs=5, verbose=0, callbacks=[scripted, checkpoint])
    assert len(writes) == 3  # epochs 0, 1 and 3 improved
    with np.load(path) as archive:
        assert not [name for name in archive.files if name.startswith("optimizer_")]
    other = classifier(seed=5)
    other.build()
    other.load_weights(path)
    for got, expected in zip(other.get_weights(), scripted.weights[3]):
        np.testing.assert_array_equal(got, expected)


def test_model_checkpoint_names_a_missing_field(tmp_path):
    x, y = blobs()
    with pytest.raises(KeyError, match="val_accuracy"):
        classifier().fit(x, y, verbose=0,
                         callbacks=[ModelCheckpoint(str(tmp_path / "{val_accuracy}.npz"))])


@pytest.mark.parametrize("template", ["m-{epoch:s}.npz", "m-{epoch:02d.npz", "m-{}.npz",
                                      "m-{loss:d}.npz", "m-}.npz", "m-{epoch.bad}.npz"])
def test_model_checkpoint_refuses_a_bad_template_when_made(template, tmp_path):
    with pytest.raises(ValueError, match="^filepath: ") as error:
        ModelCheckpoint(str(tmp_path / "ck" / template))
    assert template in str(error.value)


def test_model_checkpoint_accepts_good_templates_and_refuses_a_bytes_path(tmp_path):
    for template in ["m.npz", "m-{epoch:03d}-{val_loss:.3f}.npz", "m-{epoch}-{{x}}.npz",
                     "m-{foo}.npz"]:  # a field the logs lack is found at the epoch's end
        ModelCheckpoint(tmp_path / template)
    with pytest.raises(TypeError, match="^filepath: "):
        ModelCheckpoint(b"m.npz")
    with pytest.raises(TypeError, match="^filepath: "):
        ModelCheckpoint(3)


# -- learning-rate callbacks ----------------------------------------------------

def test_learning_rate_scheduler_sets_the_rate_each_epoch_and_logs_it():
    x, y = blobs()
    model = classifier(lr=0.1)
    seen = []

    class Seen(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(self.model.optimizer.lr)

    scheduler = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[scheduler, Seen()])
    assert seen == [0.1, 0.05, 0.025]
    assert history["learning_rate"] == [0.1, 0.05, 0.025]
    one_argument = LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[one_argument])
    assert model.optimizer.lr == 0.02
    for bad in (0.0, float("nan"), "fast", None):
        with pytest.raises(ValueError, match="schedule"):
            model.fit(x, y, verbose=0, callbacks=[LearningRateScheduler(lambda e, lr: bad)])


def test_the_scheduled_rate_is_the_rate_the_optimizer_steps_with():
    x, y = blobs()
    a, b = classifier(lr=0.1), classifier(lr=0.1)
    a.fit(x, y, epochs=2, verbose=0, shuffle=False, seed=1,
          callbacks=[LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.01)])
    b.fit(x, y, epochs=1, verbose=0, shuffle=False, seed=1)
    b.optimizer.lr = 0.01
    b.fit(x, y, epochs=1, verbose=0, shuffle=False, seed=1)
    for got, expected in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_reduce_lr_on_plateau_as_keras():
    x, y = blobs()
    model = classifier(lr=0.1)
    # min_delta 1e-4 (Keras' default): 0.5 -> 0.49995 is no improvement
    values = [1.0, 0.5, 0.49995, 0.6, 0.7, 0.4, 0.45, 0.46, 0.47, 0.48]
    reducer = ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.02, cooldown=1)
    history = model.fit(x, y, epochs=10, verbose=0, callbacks=[Scripted(values), reducer])
    # logged: the rate each epoch trained with; reduced after epoch 3 (epochs 2, 3 without
    # gain), after epoch 7 (the cooldown epoch 4 counts 1; 5 improves; 6, 7 do not) and
    # after epoch 9 (8, 9), there floored at min_lr.
    assert history["learning_rate"] == pytest.approx(
        [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert model.optimizer.lr == pytest.approx(0.02)
    for bad in ({"factor": 1.0}, {"factor": 0}, {"patience": -1}, {"min_lr": -1},
                {"mode": "up"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ReduceLROnPlateau(**bad)


def test_reduce_lr_on_plateau_stops_at_min_lr():
    x, y = blobs()
    model = classifier(lr=0.1)
    reducer = ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.005)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[Scripted([1.0] * 5), reducer])
    assert model.optimizer.lr == 0.005


# -- CSVLogger ------------------------------------------------------------------

def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.reader(file))


def test_csv_logger_writes_a_row_per_epoch_with_keras_columns(tmp_path):
    x, y = blobs()
    path = tmp_path / "log.csv"
    model = classifier()
    history = model.fit(x, y, epochs=3, verbose=0, validation_split=0.2,
                        callbacks=[CSVLogger(path)])
    rows = read_csv(path)
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "2"]
    assert [float(row[2]) for row in rows[1:]] == history["loss"]
    assert [float(row[4]) for row in rows[1:]] == history["val_loss"]
    # without validation data Keras adds val_ columns filled with NA
    model.fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    rows = read_csv(path)
    assert rows[0] == ["epoch;accuracy;loss;val_accuracy;val_loss"]
    assert rows[1][0].endswith(";NA;NA") and len(rows) == 2


def test_csv_logger_append_keeps_the_rows_and_header(tmp_path):
    x, y = blobs()
    path = tmp_path / "log.csv"
    model = classifier()
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.2, callbacks=[CSVLogger(path)])
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.2,
              callbacks=[CSVLogger(path, append=True)])
    rows = read_csv(path)
    assert rows[0][0] == "epoch" and [row[0] for row in rows[1:]] == ["0", "1", "0", "1"]
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.2, callbacks=[CSVLogger(path)])
    assert len(read_csv(path)) == 2  # not appending: replaced


# -- History.plot -----------------------------------------------------------------

def test_history_plot_draws_each_quantity_for_training_and_validation(tmp_path, monkeypatch):
    x, y = blobs()
    history = classifier(metrics=["accuracy", "mae"]).fit(x, y, epochs=4, verbose=0,
                                                           validation_split=0.25)
    figure = history.plot(tmp_path / "curve.png", title="blobs")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = figure.get_axes()
    assert [axes.get_title() for axes in panels] == ["loss", "accuracy", "mae"]
    for axes in panels:
        name = axes.get_title()
        lines = {line.get_label(): line for line in axes.get_lines()}
        assert sorted(lines) == ["training", "validation"]
        np.testing.assert_array_equal(lines["training"].get_xdata(), [1, 2, 3, 4])
        np.testing.assert_array_equal(lines["training"].get_ydata(), history[name])
        np.testing.assert_array_equal(lines["validation"].get_ydata(), history[f"val_{name}"])
    history.plot(tmp_path / "curve.svg")
    assert "<svg" in (tmp_path / "curve.svg").read_text()
    with pytest.raises(ValueError, match="empty"):
        fastnn.History().plot(tmp_path / "none.png")
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        history.plot(tmp_path / "again.png")


def test_keras_older_batch_hook_names_are_called_for_training_batches():
    seen = []

    class Old(Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append((batch, sorted(logs)))

    x, y = blobs(30)
    classifier().fit(x, y, epochs=1, batch_size=10, verbose=0, callbacks=[Old()])
    assert seen == [(0, ["accuracy", "loss"]), (1, ["accuracy", "loss"]),
                    (2, ["accuracy", "loss"])]


def test_a_hook_set_on_a_callback_object_is_called():
    seen = []
    callback = Callback()
    callback.on_train_batch_end = lambda batch, logs=None: seen.append(batch)
    x, y = blobs(20)
    classifier().fit(x, y, epochs=1, batch_size=10, verbose=0, callbacks=[callback])
    assert seen == [0, 1]


def test_the_callbacks_example_stops_early_and_keeps_the_best(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "examples" / "callbacks.py"
    spec = importlib.util.spec_from_file_location("example_callbacks", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    history, accuracy = example.main(str(tmp_path), epochs=60, verbose=0)
    assert len(history.epoch) < 60 and accuracy >= 0.95
    assert min(history["learning_rate"]) < 0.05  # reduced on a plateau
    assert len(read_csv(tmp_path / "training.csv")) == len(history.epoch) + 1
    assert (tmp_path / "best.npz").exists() and (tmp_path / "curves.png").exists()
    assert "best checkpoint" in capsys.readouterr().out
