"""The backend registry: which kernel implementation runs, and how to switch.

The current backend is a :class:`contextvars.ContextVar` override (set by
:func:`use_backend`, private to a thread or task) over a process-wide default
(set by :func:`set_backend` or ``FASTNN_BACKEND``). Backends are imported
lazily, so a broken one costs nothing until it is asked for, and its import
error is kept as the reason it is unavailable.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
from types import ModuleType
from typing import Dict, Iterator, List, Optional

from . import runtime  # noqa: F401  (first: the OpenMP wait policy, before libgomp loads)
from .contract import KERNEL_NAMES

#: Every known backend, fastest first; the first available one is the default.
BACKEND_MODULES: Dict[str, str] = {
    "c": "fastnn.backends.c_backend",
    "numba": "fastnn.backends.numba_backend",
    "numpy": "fastnn.backends.numpy_backend",
}


class BackendUnavailableError(ImportError):
    """A known backend could not be loaded here; ``reason`` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"fastnn backend {name!r} is unavailable: {reason}")
        self.name = name
        self.reason = reason


_loaded: Dict[str, ModuleType] = {}
_failures: Dict[str, str] = {}
_load_lock = threading.Lock()
_default_name: Optional[str] = None
_requested_threads: Optional[int] = None  # set_num_threads, applied to later loads too
_override: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "fastnn_backend", default=None)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in BACKEND_MODULES:
        raise ValueError(
            f"backend: unknown backend {name!r}; expected one of {sorted(BACKEND_MODULES)}")
    return name


def load_backend(name: str) -> ModuleType:
    """The module of backend ``name``, importing it on first use.

    Raises ValueError for an unknown name and BackendUnavailableError (with the
    original reason) for a known backend that cannot load here.
    """
    _check_name(name)
    with _load_lock:
        if name in _loaded:
            return _loaded[name]
        if name in _failures:
            raise BackendUnavailableError(name, _failures[name])
        try:
            module = importlib.import_module(BACKEND_MODULES[name])
            missing = [k for k in KERNEL_NAMES if not hasattr(module, k)]
            if missing:
                raise ImportError(f"{module.__name__} lacks kernels {missing}")
        except Exception as exc:  # any failure to load makes it unavailable
            _failures[name] = f"{type(exc).__name__}: {exc}"
            raise BackendUnavailableError(name, _failures[name]) from exc
        if _requested_threads is not None:
            module.set_num_threads(_requested_threads)
        _loaded[name] = module
        return module


def backend_status() -> Dict[str, Optional[str]]:
    """Every known backend mapped to None when available, else the reason it is not."""
    status: Dict[str, Optional[str]] = {}
    for name in BACKEND_MODULES:
        try:
            load_backend(name)
            status[name] = None
        except BackendUnavailableError as exc:
            status[name] = exc.reason
    return status


def available_backends() -> List[str]:
    """Names of the backends that load on this machine, fastest first."""
    return [name for name, reason in backend_status().items() if reason is None]


def _initial_default() -> str:
    requested = os.environ.get("FASTNN_BACKEND", "").strip()
    if requested:
        try:
            _check_name(requested)
        except ValueError as exc:
            raise ValueError(f"FASTNN_BACKEND: {exc}") from None
        load_backend(requested)
        return requested
    return available_backends()[0]


def _default() -> str:
    global _default_name
    if _default_name is None:
        _default_name = _initial_default()
    return _default_name


def get_backend_name() -> str:
    """Name of the backend that kernels run on in this thread/context now."""
    return _override.get() or _default()


def get_backend() -> ModuleType:
    """The backend module that kernels run on in this thread/context now."""
    return load_backend(get_backend_name())


def set_backend(name: str) -> None:
    """Make ``name`` the process-wide default backend (and the current one here)."""
    global _default_name
    load_backend(name)
    _default_name = name
    if _override.get() is not None:
        _override.set(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType]:
    """Run the body with backend ``name`` in this thread/context only.

    The previous backend is restored on exit, also when the body raises.
    """
    module = load_backend(name)
    token = _override.set(name)
    try:
        yield module
    finally:
        _override.reset(token)


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the kernels of every backend loaded now or later."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int number of threads, got {n!r}")
    global _requested_threads
    _requested_threads = n
    for module in list(_loaded.values()):
        module.set_num_threads(n)


def get_num_threads() -> Dict[str, int]:
    """Threads each loaded backend uses now, by name."""
    return {name: module.get_num_threads() for name, module in list(_loaded.items())}

