"""The FASTNN_* environment variables that fastnn reads at run time, each checked here.

Each reader returns the variable's value, or None when it is unset or empty, and
raises ValueError naming the variable, what it expects and what it got: the
same kind of message as a bad argument, so the command line prints it as one
line (see fastnn.cli). Build-time variables (CC, FASTNN_EXTRA_CFLAGS) are read
by kernels/build_ffi.py; the cache folder's (FASTNN_CACHE_DIR) by fastnn.cache,
and checked here through it; FASTNN_ISA by the C backend when it loads.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

def _text(variable: str) -> Optional[str]:
    text = os.environ.get(variable, "").strip()
    return text or None


def _bad(variable: str, expected: str, text: str) -> ValueError:
    return ValueError(f"environment variable {variable}: expected {expected}, got {text!r}")


def _backend_names() -> List[str]:
    from .backends import BACKEND_MODULES  # imported when read: the registry imports us
    return list(BACKEND_MODULES)


def backend() -> Optional[str]:
    """FASTNN_BACKEND: the default backend, a name of the registry (c, numba, numpy)."""
    text = _text("FASTNN_BACKEND")
    if text is not None and text not in _backend_names():
        raise _bad("FASTNN_BACKEND", f"one of {', '.join(_backend_names())} (or unset)", text)
    return text


def _integer(variable: str, minimum: int, unit: str = "") -> Optional[int]:
    text = _text(variable)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < minimum:
        raise _bad(variable, f"an integer >= {minimum}{unit}", text)
    return int(text)


def scratch_limit() -> Optional[int]:
    """FASTNN_SCRATCH_LIMIT: bytes of scratch memory a C kernel may hold per buffer (read by
    kernels/runtime.c; larger requests fail as if memory had run out: a testing aid)."""
    return _integer("FASTNN_SCRATCH_LIMIT", 0, " (bytes)")


def backend_list(variable: str) -> Optional[List[str]]:
    """A comma-separated list of backend names (FASTNN_TEST_BACKENDS and the like)."""
    text = _text(variable)
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in _backend_names() for name in names):
        raise _bad(variable, f"comma-separated names from {', '.join(_backend_names())}", text)
    return names


def positive_int(variable: str) -> Optional[int]:
    """A positive integer (FASTNN_BENCH_THREADS and the like)."""
    return _integer(variable, 1)


def num_threads() -> Optional[int]:
    """FASTNN_NUM_THREADS: threads per process under MPI (fastnn.distributed)."""
    return positive_int("FASTNN_NUM_THREADS")


def _cache_dir() -> object:
    from .cache import cache_dir  # raises ValueError naming FASTNN_CACHE_DIR
    return cache_dir()


def _data_dir() -> object:
    from .datasets.download import data_dir  # raises ValueError naming FASTNN_DATA
    return data_dir()


def _isa() -> object:
    if _text("FASTNN_ISA") is None:
        return None
    try:
        from .backends import c_backend
    except ImportError:  # no C backend here: nothing reads the variable
        return None
    return c_backend.requested_isa()  # raises ValueError naming FASTNN_ISA


#: What :func:`check` reads: every variable the library reads while it runs.
RUN_TIME: Dict[str, Callable[[], object]] = {
    "FASTNN_BACKEND": backend,
    "FASTNN_SCRATCH_LIMIT": scratch_limit,
    "FASTNN_NUM_THREADS": num_threads,
    "FASTNN_CACHE_DIR": _cache_dir,
    "FASTNN_DATA": _data_dir,
    "FASTNN_ISA": _isa,
}


def check() -> None:
    """Read every run-time variable once, so that a bad one fails before any work."""
    for read in RUN_TIME.values():
        read()
