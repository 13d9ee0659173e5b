"""The Keras callback protocol, :class:`History`, and the callbacks people use.

``fit``, ``evaluate`` and ``predict`` call the hooks of :class:`Callback` at the
moments Keras does (see its docstring), with Keras' arguments. A callback steers
training as in Keras: ``self.model.stop_training = True`` ends ``fit`` after the
current batch (and that epoch's validation and ``on_epoch_end``); the learning
rate is ``self.model.optimizer.learning_rate``.

The callbacks take Keras' names, arguments and defaults (Keras 3,
https://keras.io/api/callbacks/): :class:`EarlyStopping`, :class:`ModelCheckpoint`,
:class:`LearningRateScheduler`, :class:`ReduceLROnPlateau`, :class:`CSVLogger`.
Where Keras only warns about a bad argument (an unknown ``mode``; a ``monitor`` that names
nothing the fit logs, found at the end of the first epoch), these raise ValueError naming it.
"""

from __future__ import annotations

import csv
import inspect
import io
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .files import atomic_write, write_text
from .metrics import direction_of
from .validation import finite_number, positive_number

Logs = Optional[Dict[str, Any]]


class Callback:
    """Hooks called during ``fit``, ``evaluate`` and ``predict``; override what you need.

    Attributes: ``model``, the model being trained or used; ``params``, a dict
    with ``epochs``, ``steps`` (batches per epoch, or per evaluate/predict call)
    and ``verbose``.

    The hooks, in the order ``fit`` calls them (each as in Keras):

    - ``on_train_begin(logs)`` once; ``model.stop_training`` has just been set False.
    - per epoch: ``on_epoch_begin(epoch, logs)``; per batch
      ``on_train_batch_begin(batch, logs)`` and ``on_train_batch_end(batch, logs)``
      (``batch`` counts from 0 in the epoch; the end's ``logs`` hold the epoch's
      running mean ``loss`` and metrics so far); then, with validation data, the
      test hooks below; then ``on_epoch_end(epoch, logs)`` with the epoch's
      ``loss``, metrics and their ``val_`` counterparts.
    - ``on_train_end(logs)`` once, with the last epoch's logs.

    ``evaluate`` (and ``fit``'s validation): ``on_test_begin(logs)``,
    ``on_test_batch_begin(batch, logs)`` / ``on_test_batch_end(batch, logs)``
    (running ``loss`` and metrics), ``on_test_end(logs)`` (the results).
    ``predict``: ``on_predict_begin(logs)``, ``on_predict_batch_begin(batch, logs)``
    / ``on_predict_batch_end(batch, logs)`` (``logs["outputs"]``: the batch's
    predictions), ``on_predict_end(logs)``.
    ``on_batch_begin`` / ``on_batch_end`` are Keras' older names of the train
    batch hooks (the defaults of those call them).

    Setting ``self.model.stop_training = True`` in any ``fit`` hook ends training
    after the current batch. Between batches a callback may change anything a user
    could: the learning rate, the weights, or the backend
    (:func:`fastnn.set_backend`). ``fit`` skips the batch hooks when no callback
    overrides them, so they cost nothing otherwise.
    """

    model = None
    params: Dict[str, Any] = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Logs = None) -> None:
        pass

    def on_train_end(self, logs: Logs = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        pass

    def on_batch_begin(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        self.on_batch_end(batch, logs)

    def on_test_begin(self, logs: Logs = None) -> None:
        pass

    def on_test_end(self, logs: Logs = None) -> None:
        pass

    def on_test_batch_begin(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_test_batch_end(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_predict_begin(self, logs: Logs = None) -> None:
        pass

    def on_predict_end(self, logs: Logs = None) -> None:
        pass

    def on_predict_batch_begin(self, batch: int, logs: Logs = None) -> None:
        pass

    def on_predict_batch_end(self, batch: int, logs: Logs = None) -> None:
        pass


#: The batch hooks of each mode, and the methods that implement them.
_BATCH_HOOKS = {"train": ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin",
                          "on_batch_end"),
                "test": ("on_test_batch_begin", "on_test_batch_end"),
                "predict": ("on_predict_batch_begin", "on_predict_batch_end")}


def _overrides(callback: Callback, names: Sequence[str]) -> bool:
    """Does ``callback`` define one of the hooks ``names`` (in its class or on itself)?"""
    return any(name in vars(callback)
               or getattr(type(callback), name, None) is not getattr(Callback, name)
               for name in names)


class CallbackList:
    """Calls each hook on every callback in order (History last, as in Keras).

    ``batch_hooks(mode)`` is False when no callback overrides the batch hooks of
    ``mode`` ("train", "test", "predict"), so loops skip building batch logs.
    """

    def __init__(self, callbacks: Sequence[Callback], model, params: Dict[str, Any]):
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"callbacks: expected fastnn.Callback objects, got "
                                f"{type(callback).__name__}")
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            callback.set_model(model)
            callback.set_params(params)
        self._batch_hooks = {mode: any(_overrides(callback, names) for callback in self.callbacks)
                             for mode, names in _BATCH_HOOKS.items()}

    def batch_hooks(self, mode: str) -> bool:
        return self._batch_hooks[mode]

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args) -> None:
            for callback in self.callbacks:
                getattr(callback, hook)(*args)
        return call


def callback_list(callbacks: Optional[Sequence[Callback]], model, params: Dict[str, Any],
                  history: Optional["History"] = None) -> CallbackList:
    """The hooks of one ``fit``/``evaluate``/``predict`` call (``callbacks`` may be None)."""
    if callbacks is not None and not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks: expected a list of fastnn.Callback objects, got "
                        f"{type(callbacks).__name__}")
    return CallbackList(list(callbacks or ()) + ([history] if history is not None else []),
                        model, params)


class History(Callback):
    """Per-epoch results of a fit: ``history["loss"][i]`` is epoch i's mean training loss.

    Keys: ``loss``, each metric (``accuracy``, ``mae``, ...), and ``val_loss``,
    ``val_accuracy``, ... when there is validation data; ``learning_rate`` when a
    learning-rate callback adds it. ``epoch`` lists the epoch numbers (from 0).
    ``fit`` returns it, and sets it as ``model.history`` (as Keras).
    """

    def __init__(self):
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self.model is not None:
            self.model.history = self  # as Keras: model.history is the last fit's History

    def __getitem__(self, key: str) -> List[float]:
        return self.history[key]

    def __repr__(self) -> str:
        last = ", ".join(f"{key}={values[-1]:.4g}" for key, values in self.history.items())
        return f"History({len(self.epoch)} epochs; last: {last})"

    def plot(self, path, title: Optional[str] = None):
        """Draw the training curves into an image file ``path`` (format from its suffix:
        .png, .svg, .pdf, ...) and return the matplotlib Figure.

        One panel per quantity (loss, then each metric), epochs (from 1) on the x axis,
        the training value and, when present, the validation value. Needs matplotlib
        (``pip install matplotlib``, or the ``plot`` extra of fastnn-cpu; ImportError says so
        otherwise). The file is written atomically with the mode a plain ``open`` would give.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(f"History.plot needs matplotlib: pip install matplotlib (the plot "
                              f"extra of fastnn-cpu) ({exc})") from exc
        names = [key for key in self.history if not key.startswith("val_")]
        names += [key[4:] for key in self.history
                  if key.startswith("val_") and key[4:] not in self.history]
        if not names:
            raise ValueError("history: empty; fit the model before plotting its history")
        figure = Figure(figsize=(4.2 * len(names), 3.4))
        FigureCanvasAgg(figure)
        for position, name in enumerate(names):
            axes = figure.add_subplot(1, len(names), position + 1)
            for key, label in ((name, "training"), (f"val_{name}", "validation")):
                if key in self.history:
                    values = self.history[key]
                    axes.plot(np.arange(1, len(values) + 1), values, marker="o",
                              markersize=3, label=label)
            axes.set_xlabel("epoch")
            axes.set_title(name)
            axes.grid(alpha=0.3)
            axes.legend()
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        suffix = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
        with atomic_write(path) as file:
            figure.savefig(file, format=suffix)
        return figure


# -- monitoring a quantity -----------------------------------------------------

def _mode(mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    return mode


def _improves(monitor: str, mode: str) -> Callable[[float, float], bool]:
    """``better(a, b)``: is a better than b for ``monitor`` in ``mode`` (strictly)."""
    if mode == "auto":
        mode = direction_of(monitor[4:] if monitor.startswith("val_") else monitor)
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)


def _monitored(callback: str, monitor: str, logs: Logs) -> Optional[float]:
    """The value of ``monitor`` in an epoch's logs. Missing: a validation quantity of a fit
    without validation data (the ``val_`` form of a key the logs hold) warns and gives None,
    as Keras does; any other name (a misspelling: nothing this fit logs) raises ValueError
    naming ``monitor``, where Keras would warn at every epoch and never act."""
    logs = logs or {}
    value = logs.get(monitor)
    if value is None:
        available = ", ".join(logs) or "nothing"
        if not (monitor.startswith("val_") and monitor[4:] in logs):
            raise ValueError(f"monitor: {callback} is conditioned on {monitor!r}, which this "
                             f"fit does not log; expected one of: {available}")
        warnings.warn(f"{callback} is conditioned on {monitor!r}, which is not available "
                      f"(no validation data); available: {available}", stacklevel=3)
    return value


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving (Keras' EarlyStopping).

    monitor: a key of the epoch logs ("val_loss", "accuracy", ...). min_delta: an
    improvement must exceed this. patience: epochs without improvement before
    stopping. mode: "min", "max" or "auto" (from the metric: losses and errors
    fall, accuracies rise). baseline: a value to beat, else training stops after
    ``patience`` epochs. restore_best_weights: at the end of training, set the
    weights of the best epoch (bit for bit; the optimizer's state is not
    restored, as in Keras). start_from_epoch: epochs before monitoring starts.
    After training, ``stopped_epoch`` is the epoch (from 0) that stopped it (0
    when none did) and ``best_epoch`` the best one.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: Optional[float] = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0):
        self.monitor = monitor
        self.min_delta = abs(finite_number("min_delta", min_delta))
        self.patience = _count("patience", patience)
        self.verbose = verbose
        self.mode = _mode(mode)
        self.baseline = None if baseline is None else finite_number("baseline", baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = _count("start_from_epoch", start_from_epoch)
        self._better = _improves(monitor, self.mode)

    def _is_improvement(self, value: float, reference: Optional[float]) -> bool:
        if reference is None:
            return True
        # "by more than min_delta": lower by min_delta when minimising, higher when maximising
        shifted = value + self.min_delta if self._better(0.0, 1.0) else value - self.min_delta
        return self._better(shifted, reference)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = _monitored("EarlyStopping", self.monitor, logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class _AnyLog(dict):
    """Log values for trying a filepath template: a float for every name."""

    def __missing__(self, key):
        return 0.5


def _template(filepath) -> str:
    """ModelCheckpoint's filepath as a str, its template tried with epoch 1 and float logs.
    Raises TypeError (not a str path) or ValueError naming filepath."""
    try:
        path = os.fspath(filepath)
    except TypeError:
        raise TypeError(f"filepath: expected a str or os.PathLike path, got "
                        f"{type(filepath).__name__}") from None
    if not isinstance(path, str):
        raise TypeError(f"filepath: expected a str path (it holds str.format fields), got "
                        f"{type(path).__name__}")
    try:
        path.format_map(_AnyLog(epoch=1))
    except (ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
        raise ValueError(f"filepath: {path!r} is not a valid template for str.format with "
                         f"epoch (an int) and the epoch logs (floats): {exc}") from None
    return path


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after every epoch (Keras' ModelCheckpoint).

    filepath: a path that may hold ``str.format`` fields filled from ``epoch``
    (from 1) and the epoch logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``; a
    template that cannot format an int epoch and float logs (a bad format code such as
    ``{epoch:s}``, an unmatched brace, a positional field) raises ValueError naming
    filepath when the callback is made, a field the logs lack raises KeyError naming it
    at the end of the epoch. Missing directories are
    created. monitor / mode: the quantity compared with ``save_best_only``: then
    a file is written only when ``monitor`` improved on the best so far (strictly;
    ``initial_value_threshold`` is the value to beat first). save_weights_only:
    :meth:`Sequential.save_weights` (architecture and weights) instead of
    :meth:`Sequential.save` (also the optimizer state). Each file is written
    atomically, with the mode a plain ``open`` would give.
    """

    def __init__(self, filepath, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str = "epoch",
                 initial_value_threshold: Optional[float] = None):
        self.filepath = _template(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = _mode(mode)
        if save_freq != "epoch":
            raise ValueError(f"save_freq: only 'epoch' is supported, got {save_freq!r}")
        self._better = _improves(monitor, self.mode)
        self.initial_value_threshold = (None if initial_value_threshold is None else
                                        finite_number("initial_value_threshold",
                                                      initial_value_threshold))
        self.best = self.initial_value_threshold

    def _path(self, epoch: int, logs: Logs) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **(logs or {}))
        except KeyError as exc:
            raise KeyError(f"filepath: cannot fill field {exc} of {self.filepath!r}; the logs "
                           f"hold {sorted(logs or {})} (and epoch)") from None
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"filepath: cannot format {self.filepath!r} with epoch "
                             f"{epoch + 1} and the logs {logs}: {exc}") from None

    def on_epoch_end(self, epoch, logs=None):
        path = self._path(epoch, logs)
        if self.save_best_only:
            current = _monitored("ModelCheckpoint", self.monitor, logs)
            if current is None:
                return
            if self.best is not None and not self._better(current, self.best):
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from "
                          f"{self.best:.5f}")
                return
            if self.verbose > 0:
                print(f"Epoch {epoch + 1}: {self.monitor} improved to {current:.5f}, saving "
                      f"model to {path}")
            self.best = current
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)


def _takes_two_arguments(function: Callable) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY,
                                                     p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch (Keras' LearningRateScheduler).

    schedule: ``schedule(epoch, lr) -> new lr`` (epoch from 0; ``schedule(epoch)``
    is accepted too, as in Keras). The result must be a finite number > 0, else
    ValueError. The epoch logs get ``learning_rate``.
    """

    def __init__(self, schedule: Callable, verbose: int = 0):
        if not callable(schedule):
            raise TypeError(f"schedule: expected a function of (epoch, lr), got "
                            f"{type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        self._two = _takes_two_arguments(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        value = (self.schedule(epoch, optimizer.learning_rate) if self._two
                 else self.schedule(epoch))
        try:
            optimizer.learning_rate = value
        except (TypeError, ValueError) as exc:
            raise ValueError(f"schedule: returned {value!r} for epoch {epoch}; expected a "
                             f"learning rate, a finite number > 0") from exc
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{optimizer.learning_rate}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving (Keras').

    After ``patience`` epochs without an improvement of more than ``min_delta``,
    ``lr = max(lr * factor, min_lr)`` (only while lr > min_lr), then ``cooldown``
    epochs pass before counting again. factor: in (0, 1). The epoch logs get
    ``learning_rate`` (the rate the epoch trained with).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0):
        self.monitor = monitor
        self.factor = finite_number("factor", factor)
        if not 0 < self.factor < 1:
            raise ValueError(f"factor: expected a number in (0, 1), got {factor!r}")
        self.patience = _count("patience", patience)
        self.verbose = verbose
        self.mode = _mode(mode)
        self.min_delta = positive_number("min_delta", min_delta, allow_zero=True)
        self.cooldown = _count("cooldown", cooldown)
        self.min_lr = positive_number("min_lr", min_lr, allow_zero=True)
        self._better = _improves(monitor, self.mode)

    def on_train_begin(self, logs=None):
        self.wait, self.cooldown_counter, self.best = 0, 0, None

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if logs is not None:
            logs["learning_rate"] = optimizer.learning_rate
        current = _monitored("ReduceLROnPlateau", self.monitor, logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        minimising = self._better(0.0, 1.0)
        shifted = current + self.min_delta if minimising else current - self.min_delta
        if self.best is None or self._better(shifted, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and optimizer.learning_rate > np.float32(self.min_lr):
                optimizer.learning_rate = max(optimizer.learning_rate * self.factor,
                                              self.min_lr)
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                          f"{optimizer.learning_rate}.")
                self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file (Keras' CSVLogger).

    Columns: ``epoch`` (from 0, as Keras), then the log keys sorted (with the
    ``val_`` columns Keras adds, "NA" when there is no validation). append: keep
    an existing file's rows (and header) and add after them; else the file is
    replaced. The whole file is rewritten atomically after each epoch (with the
    mode a plain ``open`` gives, or the mode the file had), so it is never seen
    half-written.
    """

    def __init__(self, filename, separator: str = ",", append: bool = False):
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)

    def on_train_begin(self, logs=None):
        self._text, self._header, self.keys = "", True, None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as file:
                self._text = file.read()
            self._header = not self._text.strip()
            if self._text and not self._text.endswith("\n"):
                self._text += "\n"

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(key.startswith("val_") for key in self.keys):
                self.keys += [f"val_{key}" for key in self.keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch"] + self.keys,
                                delimiter=self.sep, lineterminator="\n")
        if self._header:
            writer.writeheader()
            self._header = False
        writer.writerow({"epoch": epoch, **{key: _csv_value(logs.get(key, "NA"))
                                            for key in self.keys}})
        self._text += buffer.getvalue()
        write_text(self.filename, self._text)


def _csv_value(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) > 0:
        return f"[{', '.join(map(str, value))}]"
    return value
