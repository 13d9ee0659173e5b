"""argparse types of the command line's options: each turns an option's text into a value or
raises ArgumentTypeError saying what it expects and what it got, which argparse prints after
the option's name (``argument --epochs: expected an int >= 1, got '0'``)."""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable, List

#: The most threads a benchmark option accepts (fastnn bench may measure more threads than
#: CPUs on purpose); ``fastnn train --threads`` accepts at most the CPUs of this process
#: (:func:`threads_for_training`).
MAX_THREADS = 1024


def int_at_least(minimum: int, maximum: int = None) -> Callable[[str], int]:
    """The type of an option that takes an int in [minimum, maximum]."""
    expected = (f"an int >= {minimum}" if maximum is None
                else f"an int from {minimum} to {maximum}")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    parse.__name__ = "int"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
thread_count = int_at_least(1, MAX_THREADS)


def threads_for_training(text: str) -> int:
    """A thread count from 1 to the CPUs this process may use (``os.sched_getaffinity``):
    the kernels are compute-bound, so more threads than CPUs only wait for each other."""
    from .environment import thread_count_bound, usable_cpus

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 1 <= value <= usable_cpus():
        raise argparse.ArgumentTypeError(f"expected {thread_count_bound()}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, say)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def cpu_thread_counts(text: str) -> List[int]:
    """``"1,2"`` -> [1, 2]: comma-separated thread counts, each from 1 to the CPUs this
    process may use (as :func:`threads_for_training`)."""
    from .environment import thread_count_bound

    try:
        return [threads_for_training(part.strip()) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated counts, each "
                                         f"{thread_count_bound()}, got {text!r}") from None


def _backend(name: str, text: str) -> str:
    from .backends import BACKEND_MODULES, BackendUnavailableError, load_backend

    if name not in BACKEND_MODULES:
        got = repr(name) if name == text.strip() else f"{name!r} in {text!r}"
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(BACKEND_MODULES)}, "
                                         f"got {got}")
    try:
        load_backend(name)
    except BackendUnavailableError as exc:
        raise argparse.ArgumentTypeError(f"backend {name!r} is unavailable here: "
                                         f"{exc.reason}") from None
    return name


def backend(text: str) -> str:
    """A backend that loads here (c, numba or numpy)."""
    return _backend(text.strip(), text)


def backends(text: str) -> List[str]:
    """Comma-separated backends that load here."""
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated backend names, each once, "
                                         f"got {text!r}")
    return [_backend(name, text) for name in names]


def output_file(text: str) -> str:
    """A file to write: its folder must exist and be writable (checked before any work)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got ''")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a file path, got the folder {text!r}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} does not "
                                         f"exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} is not "
                                         f"writable")
    return text


def chart_file(text: str) -> str:
    """A file for a matplotlib chart (its format follows the suffix: .png, .svg, .pdf)."""
    path = output_file(text)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise argparse.ArgumentTypeError(
            "needs matplotlib, which is not installed: pip install matplotlib "
            "(or install fastnn with its 'plot' extra)") from None
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise argparse.ArgumentTypeError(f"expected a file name ending in one of "
                                         f"{', '.join('.' + f for f in sorted(formats))}, "
                                         f"got {text!r}")
    return path
