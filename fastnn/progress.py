"""The per-epoch progress bar of ``fit``: tqdm, with loss, metrics and samples/s.

tqdm is a well-kept library that handles terminals, notebooks, redirection
and rate estimates; this module only decides what the bar says. The step
loop calls :meth:`EpochBar.advance`, which costs a counter update and, a few
times a second, a refresh of the shown running loss.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Dict

from tqdm.auto import tqdm

#: Seconds between refreshes of the running loss shown on the bar.
REFRESH_SECONDS = 0.2


def format_logs(logs: Dict[str, float]) -> str:
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


class EpochBar:
    """One bar for one epoch of ``total`` samples.

    ``running_logs()`` gives the epoch's loss and metrics so far; it is called
    only when the bar refreshes, so the step loop builds no dict.
    """

    def __init__(self, epoch: int, epochs: int, total: int,
                 running_logs: Callable[[], Dict[str, float]]):
        self._running_logs = running_logs
        width = len(str(epochs))
        self._bar = tqdm(total=total, desc=f"Epoch {epoch + 1:>{width}}/{epochs}",
                         unit=" samples", unit_scale=True, leave=True, file=sys.stderr,
                         dynamic_ncols=True, mininterval=REFRESH_SECONDS)
        self._next_refresh = time.perf_counter() + REFRESH_SECONDS

    def advance(self, samples: int) -> None:
        """Count ``samples`` more trained samples."""
        now = time.perf_counter()
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_SECONDS
            self._bar.set_postfix_str(format_logs(self._running_logs()), refresh=False)
        self._bar.update(samples)

    def close(self, logs: Dict[str, float]) -> None:
        """Show the epoch's final loss, metrics and validation results, and end the bar."""
        self._bar.set_postfix_str(format_logs(logs), refresh=False)
        self._bar.close()
