"""Saving and loading a Sequential model as one ``.npz`` file, with no pickle.

The file holds a marker, a format version, the architecture and compile
settings as a JSON string, each parameter array as ``param_<layer>_<i>``, and
the optimizer's state (momentum, Adam's moments and step count) as
``optimizer_<name>``, so that training resumes where it stopped.
It is written atomically by :func:`fastnn.files.atomic_write` (a temporary
file beside the target, renamed over it, with the mode a plain ``open`` would
give), so an interrupted save never leaves a half-written model. Reading uses
``allow_pickle=False`` and checks everything before building anything, so a
malformed or foreign file raises :class:`ModelFileError` and changes nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from . import layers as layers_module
from .files import atomic_write
from . import losses as losses_module
from . import optimizers as optimizers_module

MARKER = "fastnn.Sequential"
FORMAT_VERSION = 1
OPTIMIZER_PREFIX = "optimizer_"
#: The first bytes of every .npz file (a zip archive).
ZIP_MAGIC = b"PK\x03\x04"


class ModelFileError(ValueError):
    """A file is not a readable fastnn model (or does not fit the model loading it)."""


def _config_of(model) -> Dict[str, Any]:
    compiled = None
    if model.loss is not None:
        compiled = {"loss": model.loss.name, "loss_config": model.loss.get_config(),
                    "optimizer": model.optimizer.name,
                    "optimizer_config": model.optimizer.get_config(), "metrics": model.metrics}
    return {"dtype": model.dtype.name, "seed": model.seed,
            "matmul_precision": model.matmul_precision,
            "layers": [{"class": type(layer).__name__, "config": layer.get_config()}
                       for layer in model.layers],
            "compile": compiled}


def save_model(model, path, include_optimizer: bool = True) -> None:
    """Write ``model`` to ``path``; without ``include_optimizer`` the file holds the
    architecture and weights only (what ``save_weights`` writes; ``load_weights`` reads
    either)."""
    if not model.built:
        raise ValueError("model: not built yet, so there are no weights to save; fit it or "
                         "call build() first")
    for position, layer in enumerate(model.layers):  # what load_model could not rebuild
        if layers_module.LAYERS.get(type(layer).__name__) is not type(layer):
            raise ValueError(f"model: layer {position} is a {type(layer).__name__}, a class "
                             f"load_model does not know, so the file could not be loaded; "
                             f"register it first (fastnn.layers.register)")
    arrays = {"fastnn_format": np.array(MARKER), "format_version": np.array(FORMAT_VERSION),
              "config": np.array(json.dumps(_config_of(model)))}
    for position, layer in enumerate(model.layers):
        for index, param in enumerate(layer.weights):  # trainable, then moving statistics
            arrays[f"param_{position}_{index}"] = param
    if model.optimizer is not None and include_optimizer:
        for name, value in model.optimizer.state().items():
            arrays[f"{OPTIMIZER_PREFIX}{name}"] = value
    with atomic_write(path, what="the model") as file:
        np.savez_compressed(file, **arrays)


def _read(path) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """The config and every array of a model file, all checked for form."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: not a fastnn model file (it is a folder)")
    with open(path, "rb") as file:
        start = file.read(len(ZIP_MAGIC))
    if start != ZIP_MAGIC:  # text, pickle, a bare .npy array...: NumPy's own errors would
        # talk about pickles and allow_pickle, which is no advice for a model file
        raise ModelFileError(f"{path}: not a fastnn model file (a fastnn model is an .npz "
                             f"archive, as written by Sequential.save; this file is not one)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:  # any failure to read a damaged archive (zlib.error, a
        # compression method zipfile lacks, a header NumPy cannot parse, ...) is the file's
        reason = ("it holds pickled Python objects, which a fastnn model never does"
                  if "pickle" in str(exc) else f"{type(exc).__name__}: {exc}")
        raise ModelFileError(f"{path}: not a fastnn model file, or a damaged one "
                             f"({reason})") from exc
    marker = arrays.get("fastnn_format")
    if marker is None or marker.shape != () or str(marker) != MARKER:
        raise ModelFileError(f"{path}: not a fastnn model file (no {MARKER!r} marker)")
    version = arrays.get("format_version")
    if version is None or version.shape != () or int(version) != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported fastnn model format version "
                             f"{None if version is None else version.tolist()!r}; this fastnn "
                             f"reads version {FORMAT_VERSION}")
    try:
        config = json.loads(str(arrays["config"]))
        layer_specs = config["layers"]
        if not (isinstance(layer_specs, list) and layer_specs
                and all(isinstance(spec, dict) for spec in layer_specs)):
            raise ValueError("'layers' must be a non-empty list of layer entries")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: malformed model configuration: {exc}") from exc
    return config, arrays


def _weights(path, config: Dict[str, Any], arrays: Dict[str, np.ndarray],
             model) -> List[np.ndarray]:
    """The file's parameters in the order of ``model``'s, checked against its shapes.
    Raises ModelFileError naming the file and the array for a missing one, a wrong shape or
    dtype, or NaN/infinite numbers."""
    weights = []
    for position, layer in enumerate(model.layers):
        for index, param in enumerate(layer.weights):
            key = f"param_{position}_{index}"
            value = arrays.get(key)
            if value is None:
                raise ModelFileError(f"{path}: missing weights {key!r}")
            if value.shape != param.shape or value.dtype.kind != "f":
                raise ModelFileError(f"{path}: weights {key!r} have shape {value.shape} and "
                                     f"dtype {value.dtype}; the model needs {param.shape} floats")
            if not np.isfinite(value).all():
                raise ModelFileError(f"{path}: weights {key!r} hold NaN or infinite numbers; "
                                     f"a model's weights are finite")
            weights.append(value)
    return weights


def load_model(path):
    """A Sequential model saved with :meth:`Sequential.save`: architecture, weights, compile
    settings and the optimizer's state (fresh when the file has none)."""
    from .model import Sequential

    config, arrays = _read(path)
    try:
        model = Sequential([layers_module.from_config(spec["class"], spec["config"])
                            for spec in config["layers"]],
                           dtype=config["dtype"], seed=config.get("seed"),
                           matmul_precision=config.get("matmul_precision"))
        model.build()
        compiled = config.get("compile")
        if compiled:
            optimizer = optimizers_module.from_config(compiled["optimizer"],
                                                      compiled["optimizer_config"])
            model.compile(optimizer, losses_module.from_config(compiled["loss"],
                                                               compiled.get("loss_config")),
                          compiled["metrics"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: malformed model configuration: "
                             f"{type(exc).__name__}: {exc}") from exc
    weights = _weights(path, config, arrays, model)
    state = {name[len(OPTIMIZER_PREFIX):]: value for name, value in arrays.items()
             if name.startswith(OPTIMIZER_PREFIX)}
    if state and model.optimizer is not None:
        try:
            model.optimizer.load_state(state)
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from exc
    elif state:
        raise ModelFileError(f"{path}: holds optimizer state but no compile settings")
    model.set_weights(weights)
    return model


def read_weights_for(model, path) -> List[np.ndarray]:
    """The weights in ``path`` for ``model``, which must have the same architecture."""
    config, arrays = _read(path)
    saved = [(spec.get("class"), spec.get("config", {}).get("units"))
             for spec in config["layers"]]
    # units as the configs say (None for the layers whose size follows their input: their
    # built units would never match), the shapes are checked weight by weight below
    expected = [(type(layer).__name__, layer.get_config().get("units")) for layer in model.layers]
    if saved != expected:
        raise ModelFileError(f"{path}: holds layers {saved}, but the model has {expected}")
    if not model.built:
        raise ValueError("model: not built yet; build it before loading weights into it")
    return _weights(path, config, arrays, model)
