"""What ``fit`` shows of each epoch, on standard output as Keras does.

verbose=1 on a terminal (or in a Jupyter notebook): a tqdm bar with the running
loss while the epoch trains, replaced at its end by one line that carries
every metric of the epoch (the bar itself is cut to the terminal's width, the
line is not). verbose=1 anywhere else (a pipe, a log file, CI) and verbose=2:
that one line per epoch only, with no ``\\r``, as Keras' verbose=2 does.

tqdm is a well-kept library that handles terminals, notebooks and rate
estimates; this module only decides what is shown. The step loop calls
:meth:`EpochBar.advance`, which costs a counter update and, a few times a
second, a refresh of the shown running loss.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Callable, Dict, Optional, TextIO, Tuple

from tqdm.auto import tqdm

#: Seconds between refreshes of the running loss shown on the bar.
REFRESH_SECONDS = 0.2
#: The (columns, lines) assumed when a terminal reports none (a 0x0 pseudo-terminal, say).
FALLBACK_SIZE = (80, 24)
#: The bar while the epoch trains; the running metrics come last, so that a narrow
#: terminal cuts them before the counts (the epoch's line shows them all at the end).
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def format_logs(logs: Dict[str, float]) -> str:
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


def epoch_line(epoch: int, epochs: int, logs: Dict[str, float], seconds: float,
               samples: int) -> str:
    """``Epoch 3/20: loss: 0.1234 - accuracy: 0.9650 - 12ms (204k samples/s)``."""
    width = len(str(epochs))
    rate = tqdm.format_sizeof(samples / seconds) if seconds > 0 else "?"
    took = f"{seconds * 1e3:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
    return f"Epoch {epoch + 1:>{width}}/{epochs}: {format_logs(logs)} - {took} ({rate} samples/s)"


def wrap(line: str, columns: int) -> str:
    """``line`` broken at its `` - `` separators into lines of at most ``columns``
    characters where it can be, the later ones indented (for a terminal)."""
    parts = line.split(" - ")
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) <= columns:
            lines[-1] += " - " + part
        else:
            lines.append("    " + part)
    return "\n".join(lines)


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where tqdm.auto draws a widget)."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


def interactive(stream: TextIO) -> bool:
    """Whether a bar redrawn in place can be shown on ``stream``."""
    try:
        return stream.isatty() or _in_notebook()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def terminal_size() -> Tuple[int, int]:
    """The terminal's (columns, lines); ``FALLBACK_SIZE`` where it reports 0 (or none)."""
    columns, lines = shutil.get_terminal_size(FALLBACK_SIZE)
    return columns or FALLBACK_SIZE[0], lines or FALLBACK_SIZE[1]


class EpochBar:
    """What one epoch of ``total`` samples shows, by ``verbose`` (1 or 2, see above).

    ``running_logs()`` gives the epoch's loss and metrics so far; it is called
    only when the bar refreshes, so the step loop builds no dict.
    """

    def __init__(self, epoch: int, epochs: int, total: int,
                 running_logs: Callable[[], Dict[str, float]], verbose: int = 1,
                 stream: Optional[TextIO] = None):
        self._epoch, self._epochs, self._total = epoch, epochs, total
        self._running_logs = running_logs
        self._stream = sys.stdout if stream is None else stream
        self._started = time.perf_counter()
        self._samples = 0
        self._bar = None
        self._columns = FALLBACK_SIZE[0]
        if verbose == 1 and interactive(self._stream):
            self._columns, lines = terminal_size()
            width = len(str(epochs))
            self._bar = tqdm(total=total, desc=f"Epoch {epoch + 1:>{width}}/{epochs}",
                             unit=" samples", leave=False, file=self._stream,
                             ncols=self._columns, nrows=lines, bar_format=BAR_FORMAT,
                             mininterval=REFRESH_SECONDS)
            self._next_refresh = self._started + REFRESH_SECONDS

    def advance(self, samples: int) -> None:
        """Count ``samples`` more trained samples."""
        self._samples += samples
        if self._bar is None:
            return
        now = time.perf_counter()
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_SECONDS
            self._bar.set_postfix_str(format_logs(self._running_logs()), refresh=False)
        self._bar.update(samples)

    def close(self, logs: Dict[str, float]) -> None:
        """End the bar and show the epoch's line: its loss, metrics and validation results
        (when the epoch was cut short by an exception, how far it got; nothing when it was
        cut short before its first step: the exception alone says what happened)."""
        seconds = time.perf_counter() - self._started
        line = epoch_line(self._epoch, self._epochs, logs, seconds, self._samples)
        failed = sys.exc_info()[0] is not None
        if failed:
            line += f" - stopped after {self._samples} of {self._total} samples"
        if self._bar is not None:
            self._bar.close()
            line = wrap(line, self._columns)
        if failed and self._samples == 0:  # nothing trained: its zeros would only mislead,
            return  # and the error that follows says what happened
        self._stream.write(line + "\n")
        self._stream.flush()
