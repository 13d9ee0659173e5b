"""One line on standard error when Numba starts compiling fastnn's kernels.

The numba backend compiles a kernel on its first call with new argument
types and keeps the machine code in Numba's disk cache, so a machine's first
run sits for two to three minutes with nothing to show (a progress bar at 0%):
the training loop alone took 141 s to compile for float32 and 134 s for float64
on two Zen 4 cores.
Numba announces a "numba:compile" event only when it really compiles, not when
it loads a kernel from its cache: listening for it says so exactly then, once
per process, and a warm run prints nothing. Under an MPI launcher only rank 0 prints it.

The line goes through the ``fastnn`` logger at WARNING level: with no logging
set up, Python prints the bare message on standard error; an application (or
pytest) that configures logging gets it as a record, and
``logging.getLogger("fastnn").setLevel(logging.ERROR)`` silences it.
"""

from __future__ import annotations

import logging
import sys

from numba.core import event

logger = logging.getLogger("fastnn")


def _cache_folder(dispatcher) -> str:
    """Where Numba caches ``dispatcher``'s code (private Numba attributes: best effort)."""
    try:
        return str(dispatcher._cache._cache_path)
    except AttributeError:
        return "Numba's cache"


class CompileNotice(event.Listener):
    """Says once that fastnn's kernels are being compiled, at the first real compile."""

    def __init__(self):
        self.told = False

    def on_start(self, ev: event.Event) -> None:
        dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", None) or ""
        if self.told or not module.startswith("fastnn."):
            return
        self.told = True
        from ..distributed import launcher_rank
        if launcher_rank() != 0:  # under mpiexec, every rank compiles; rank 0 alone says so
            return
        folder = _cache_folder(dispatcher)
        from ..cache import is_temporary
        kept = ("kept for this process only: the cache folder cannot be written"
                if is_temporary(folder)
                else f"once: later runs load them from the cache in {folder}")
        message = (f"fastnn: compiling the numba backend's kernels for this machine; this "
                   f"takes two to three minutes ({kept})")
        from tqdm import tqdm
        with tqdm.external_write_mode(file=sys.stderr):  # clears a progress bar, then redraws
            logger.warning(message)

    def on_end(self, ev: event.Event) -> None:
        pass


NOTICE = CompileNotice()


def install() -> None:
    """Listen for Numba's compile events (idempotent)."""
    if not getattr(install, "done", False):
        event.register("numba:compile", NOTICE)
        install.done = True
