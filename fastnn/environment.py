"""The FASTNN_* environment variables that fastnn reads at run time, each checked here.

Each reader returns the variable's value, or None when it is unset or empty, and
raises ValueError naming the variable, what it expects and what it got: the
same kind of message as a bad argument, so the command line prints it as one
line (see fastnn.cli). Build-time variables (CC, FASTNN_EXTRA_CFLAGS) are read
by kernels/build_ffi.py; the folders' (FASTNN_CACHE_DIR, FASTNN_DATA) by
fastnn.cache and fastnn.datasets through :func:`folder`; FASTNN_ISA by the C
backend when it loads. The variables our dependencies read (NUMBA_NUM_THREADS,
NUMBA_THREADING_LAYER, OMP_NUM_THREADS) are checked here too: Numba and OpenMP
would ignore a malformed one, or fail later with a message that does not name it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional


def _text(variable: str) -> Optional[str]:
    text = os.environ.get(variable, "").strip()
    return text or None


def _bad(variable: str, expected: str, text: str, note: str = "") -> ValueError:
    """The error of a bad value: ``environment variable X: expected E, got 'text'{note}``."""
    return ValueError(f"environment variable {variable}: expected {expected}, "
                      f"got {text!r}{note}")


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


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a batch
    scheduler; ``os.cpu_count()`` where the platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: Why a thread count is bounded by :func:`usable_cpus` (the kernels are compute-bound).
THREADS_BOUND_REASON = "more threads than CPUs only make the kernels wait for each other"


def thread_count_bound() -> str:
    """How a thread count's bound reads in a message: ``from 1 to 2 (the CPUs ...)``."""
    return (f"an integer from 1 to {usable_cpus()} (the CPUs this process may use: "
            f"{THREADS_BOUND_REASON})")


def _thread_count(variable: str) -> Optional[int]:
    """A thread count: an integer from 1 to :func:`usable_cpus`."""
    text = _text(variable)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= usable_cpus():
        raise _bad(variable, thread_count_bound(), text)
    return int(text)


def numba_num_threads() -> Optional[int]:
    """NUMBA_NUM_THREADS: the size of Numba's thread pool, read by Numba when it is imported,
    and the numba backend's thread count: an integer from 1 to :func:`usable_cpus`. (Numba
    itself ignores a value that is not an integer, with a warning and a traceback, and fails
    only at the first parallel kernel on 0.)"""
    return _thread_count("NUMBA_NUM_THREADS")


def omp_num_threads() -> Optional[List[int]]:
    """OMP_NUM_THREADS: the C backend's OpenMP thread count, read by the OpenMP runtime (which
    ignores a malformed value silently): positive integers, comma-separated as the OpenMP
    specification allows (one per nesting level). No upper bound: other programs of the same
    shell read it too."""
    text = _text("OMP_NUM_THREADS")
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() and int(part) >= 1 for part in parts):
        raise _bad("OMP_NUM_THREADS", "a positive integer (or comma-separated ones, one per "
                   "nesting level)", text)
    return [int(part) for part in parts]


#: The values of NUMBA_THREADING_LAYER that Numba knows (its documentation, "Selecting a
#: threading layer"): a type of layer, or a layer by name.
NUMBA_THREADING_LAYERS = ("default", "safe", "forksafe", "threadsafe", "tbb", "omp", "workqueue")


def numba_threading_layer() -> Optional[str]:
    """NUMBA_THREADING_LAYER: the threading layer Numba uses (fastnn picks ``omp`` when it is
    unset); Numba reports a bad one only at the first parallel kernel, without naming it."""
    text = _text("NUMBA_THREADING_LAYER")
    if text is not None and text not in NUMBA_THREADING_LAYERS:
        raise _bad("NUMBA_THREADING_LAYER", f"one of {', '.join(NUMBA_THREADING_LAYERS)}", text)
    return text


def folder(variable: str) -> Optional[Path]:
    """A folder named by ``variable`` (FASTNN_CACHE_DIR, FASTNN_DATA): None when unset or
    empty; ``~`` is expanded. The path must be absolute (a relative one would name another
    folder each time fastnn runs from another working folder) and, when it exists, a folder.
    It need not exist: the code that writes there creates it."""
    text = _text(variable)
    if text is None:
        return None
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise _bad(variable, "an absolute path to a folder (a relative one would change with "
                   "the working folder)", text)
    if path.exists() and not path.is_dir():
        raise _bad(variable, "a folder", text, ", which is not a folder")
    return path


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
    """FASTNN_NUM_THREADS: threads per process under MPI (fastnn.distributed), an integer
    from 1 to :func:`usable_cpus` (as NUMBA_NUM_THREADS and ``--threads``)."""
    return _thread_count("FASTNN_NUM_THREADS")


def mpi_timeout() -> Optional[float]:
    """FASTNN_MPI_TIMEOUT: seconds a rank waits under MPI for every rank to call ``fit``
    before it raises TimeoutError (fastnn.distributed.DataParallel.meet): a finite number
    > 0 (default 1800, torch.distributed's 30 minutes)."""
    text = _text("FASTNN_MPI_TIMEOUT")
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0.0 < seconds < float("inf"):
        raise _bad("FASTNN_MPI_TIMEOUT", "a finite number of seconds > 0", text)
    return seconds


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
    "FASTNN_MPI_TIMEOUT": mpi_timeout,
    "FASTNN_CACHE_DIR": _cache_dir,
    "FASTNN_DATA": _data_dir,
    "FASTNN_ISA": _isa,
    "NUMBA_NUM_THREADS": numba_num_threads,
    "NUMBA_THREADING_LAYER": numba_threading_layer,
    "OMP_NUM_THREADS": omp_num_threads,
}


def check() -> None:
    """Read every run-time variable once, so that a bad one fails before any work."""
    for read in RUN_TIME.values():
        read()
