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
import threading
import warnings
from types import ModuleType
from typing import Dict, Iterator, List, Optional

from . import runtime  # noqa: F401  (first: the OpenMP wait policy, before libgomp loads)
from .. import environment
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


class CBackendUnavailableWarning(RuntimeWarning):
    """The fastest backend, "c", did not load, so the default is a slower one."""


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
        except ValueError:
            # A bad setting (an environment variable such as FASTNN_ISA) is the user's
            # error, reported as such each time, not a backend that cannot load here.
            raise
        except Exception as exc:  # any failure to load makes it unavailable
            _failures[name] = f"{type(exc).__name__}: {exc}"
            raise BackendUnavailableError(name, _failures[name]) from exc
        if _requested_threads is not None:
            module.set_num_threads(_requested_threads)
        _loaded[name] = module
        return module


def _unavailable_reason(name: str) -> Optional[str]:
    """None when backend ``name`` loads (loading it), else the reason it does not."""
    try:
        load_backend(name)
    except BackendUnavailableError as exc:
        return exc.reason
    return None


def backend_status() -> Dict[str, Optional[str]]:
    """Every known backend mapped to None when available, else the reason it is not."""
    return {name: _unavailable_reason(name) for name in BACKEND_MODULES}


def available_backends() -> List[str]:
    """Names of the backends that load on this machine, fastest first."""
    return [name for name, reason in backend_status().items() if reason is None]


def _initial_default() -> str:
    requested = environment.backend()  # ValueError naming FASTNN_BACKEND when unknown
    if requested:
        try:
            load_backend(requested)
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(
                requested, f"{exc.reason} (environment variable FASTNN_BACKEND asks for it)"
            ) from None
        return requested
    # The first backend that loads, fastest first; the ones after it are not imported: a user
    # of "c" does not pay for Numba's import and thread pool (a process's first ops.matmul took
    # 485-873 ms with every backend loaded here, 4-5 ms so; a first fastnn.sklearn fit on the
    # digits 376 ms against 25 ms for the next).
    reasons: Dict[str, str] = {}
    for name in BACKEND_MODULES:
        reason = _unavailable_reason(name)
        if reason is None:
            if "c" in reasons:
                _warn_c_unavailable(reasons["c"], name)
            return name
        reasons[name] = reason
    raise BackendUnavailableError("numpy", reasons.get("numpy", "no backend loads"))


def _warn_c_unavailable(reason: str, default: str) -> None:
    """Say once, when the default backend is first chosen, why it is not "c".

    Without this, an install whose C build failed (no compiler: the build only records why in
    fastnn/_c/BUILD_ERROR.txt) silently trains on a slower backend. Choosing a backend
    (FASTNN_BACKEND, set_backend) is the way to say that is intended, and silences it.
    """
    warnings.warn(f"fastnn: backend 'c' is unavailable ({reason}); using {default!r} instead. "
                  f"`fastnn info` lists the backends; set FASTNN_BACKEND={default} to choose "
                  f"it and silence this warning.", CBackendUnavailableWarning)


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
    name = _override.get() or _default()
    # A loaded backend without the lock: every public kernel call asks, and a dict read is
    # atomic (the lock costs a third of a small matmul's Python time).
    module = _loaded.get(name)
    return module if module is not None else load_backend(name)


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
    """Use ``n`` threads in the kernels of every backend loaded now or later (as
    ``torch.set_num_threads``).

    n: an int from 1 to :data:`fastnn.arguments.MAX_THREADS` (1024). More threads than CPUs
    are allowed (they only oversubscribe the cores); the numba backend uses at most
    ``NUMBA_NUM_THREADS`` (the size of Numba's pool, fixed when Numba starts) and NumPy's
    OpenBLAS at most the count it was built for. ValueError naming ``n`` otherwise, before
    any backend changes: a count the C runtime cannot hold never reaches it.
    """
    from ..arguments import MAX_THREADS

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n: expected an int number of threads from 1 to {MAX_THREADS}, "
                         f"got {n!r}")
    global _requested_threads
    _requested_threads = n
    for module in list(_loaded.values()):
        module.set_num_threads(n)


def get_num_threads() -> Dict[str, int]:
    """Threads each loaded backend uses now, by name (int each); the current backend is
    loaded first, so the dict always holds it (``{}`` in a fresh process before)."""
    get_backend()
    return {name: module.get_num_threads() for name, module in list(_loaded.items())}

