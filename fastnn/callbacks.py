"""What ``fit`` reports after each epoch: :class:`History` and user :class:`Callback` s."""

from __future__ import annotations

from typing import Dict, List, Optional


class Callback:
    """Hooks ``fit`` calls around each epoch, as in Keras (override what you need).

    ``self.model`` is the model being trained. ``logs`` holds the epoch's
    ``loss``, metrics and their ``val_`` counterparts. Between epochs a callback
    may change anything a user could: the learning rate, or the backend with
    :func:`fastnn.set_backend`.
    """

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        pass


class History(Callback):
    """Per-epoch results of a fit: ``history["loss"][i]`` is epoch i's mean training loss.

    Keys: ``loss``, each metric (``accuracy``), and ``val_loss``/``val_accuracy``
    when there is validation data. ``epoch`` lists the epoch numbers (from 0).
    """

    def __init__(self):
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> List[float]:
        return self.history[key]

    def __repr__(self) -> str:
        last = ", ".join(f"{key}={values[-1]:.4g}" for key, values in self.history.items())
        return f"History({len(self.epoch)} epochs; last: {last})"
