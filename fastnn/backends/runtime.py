"""How the compiled backends behave on a real machine: OpenMP's wait, subnormals, fork.

Imported by :mod:`fastnn.backends` before any backend, so that its first step runs before
GNU OpenMP (libgomp, which the C backend and Numba's ``omp`` threading layer share) is loaded.

* **Waiting threads.** Between two parallel kernels, GNU OpenMP's idle threads spin, by default
  for about 300000 rounds (milliseconds) before they sleep. On a machine where something else
  wants the cores - a busy neighbour process, or NumPy's own thread pool when NumPy and fastnn
  calls alternate - the spinning threads take the cores from the work that is waiting. When
  the user has set neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``, fastnn sets
  ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT`: a wait short enough to give the core back at once,
  long enough that the back-to-back kernels of one training step find their threads awake.
  An explicit setting of either variable is left alone (``OMP_WAIT_POLICY=active`` for a
  machine of one's own). A library that loaded libgomp before fastnn was imported (torch
  brings its own copy; scikit-learn shares it) keeps the policy it started with. The C and
  Numba kernels also fall back to one thread for a while when a parallel region finds the
  other cores taken (kernels/internal.h, ``fastnn_contended``; numba_kernels/team.py). A worker
  woken after its spin onto the calling thread's CPU moves off it at the start of the next C
  region (kernels/affinity.c; the calling thread's own mask is never changed).
* **NumPy's waiting threads.** OpenBLAS (NumPy's and SciPy's BLAS) keeps its idle workers
  spinning for about 2**28 cycles (a tenth of a second) after each call; a fastnn kernel right
  after NumPy's ``@`` found the other core taken and ran at the speed of one thread (1.86x its
  time alone at 1024^3, c; 1.69x, numba). When the user has not set
  ``OPENBLAS_THREAD_TIMEOUT`` and NumPy is not loaded yet (``import fastnn`` first, or the
  ``fastnn`` command), fastnn sets it to :data:`OPENBLAS_TIMEOUT`, OpenBLAS's shortest wait
  (2**4 cycles): NumPy's own calls kept their times (0.98-1.03x, 1024^3 down to 64x512x512
  back to back) and fastnn's call after NumPy's took 0.98x (c) and 1.06x (numba) its time
  alone. Once NumPy is loaded its OpenBLAS keeps the timeout it started with; set the variable
  in the shell then.
* **Subnormal numbers** (magnitudes below 1.2e-38 in float32, 2.2e-308 in float64) make
  every arithmetic instruction that meets one tens of times slower on x86 CPUs. By default,
  fastnn's C and Numba kernels run with flush-to-zero and denormals-are-zero on every thread
  that runs them, and put each thread's own mode back afterwards, so NumPy and the rest of the
  program keep IEEE arithmetic. :func:`set_flush_denormal` (``fastnn.set_flush_denormal``, as
  ``torch.set_flush_denormal``) switches it. What changes is stated in
  :mod:`fastnn.backends.contract`.
* **fork.** GNU OpenMP's thread pool does not survive ``fork()``: a child made by
  ``multiprocessing``'s ``fork`` start method (Python 3.11's default on Linux) would wait
  forever for the parent's threads (C), or be terminated by Numba's check. In a forked child
  every backend runs its kernels on the calling thread alone (:func:`in_forked_child`); the
  ``spawn`` and ``forkserver`` start methods give a child its own threads.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List

#: GOMP_SPINCOUNT fastnn sets when the user set no wait policy: about 10-50 microseconds of
#: spinning on current x86 CPUs (libgomp's default without OMP_WAIT_POLICY is 300000).
SPIN_COUNT = 10000

#: The variables by which a user states a wait policy of their own.
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _set_default_wait_policy() -> bool:
    """Set GOMP_SPINCOUNT unless the user set a wait policy; True when it was set here."""
    if any(name in os.environ for name in WAIT_POLICY_VARIABLES):
        return False
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    return True


#: Whether fastnn chose the wait policy (False: the user's own setting is in force).
WAIT_POLICY_SET_BY_FASTNN = _set_default_wait_policy()

#: OPENBLAS_THREAD_TIMEOUT fastnn sets when the user set none and NumPy is not loaded yet:
#: OpenBLAS's idle workers wait 2**4 cycles, its least, before they sleep (OpenBLAS's
#: default is 28: 2**28 cycles).
OPENBLAS_TIMEOUT = 4


def _set_default_openblas_timeout() -> bool:
    """Set OPENBLAS_THREAD_TIMEOUT unless the user set it or OpenBLAS may already be loaded
    (NumPy or SciPy imported: it read its environment then); True when it was set here."""
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ or "numpy" in sys.modules or "scipy" in sys.modules:
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(OPENBLAS_TIMEOUT)
    return True


#: Whether fastnn chose OpenBLAS's wait (False: the user's setting, or NumPy came first).
OPENBLAS_TIMEOUT_SET_BY_FASTNN = _set_default_openblas_timeout()

# -- subnormals -----------------------------------------------------------------------

_flush_denormal = True
_listeners: List[Callable[[bool], None]] = []


def set_flush_denormal(mode: bool) -> bool:
    """Flush subnormal numbers to zero in fastnn's kernels (True, the default) or keep them.

    With ``True``, every C and Numba kernel runs with flush-to-zero (a subnormal result is
    written as a zero of the same sign) and denormals-are-zero (a subnormal input counts as a
    zero) on each of its threads, and restores each thread's previous mode when it returns;
    NumPy and the rest of the program are not affected. With ``False`` the kernels keep IEEE
    subnormals (and run tens of times slower on them). The ``numpy`` backend always follows
    NumPy's IEEE arithmetic. Same name and meaning as ``torch.set_flush_denormal``, whose
    setting is process-wide instead.

    Args:
        mode: bool.
    Returns:
        True (the mode is supported on every CPU fastnn builds for).
    Raises:
        TypeError: mode is not a bool.
    """
    global _flush_denormal
    if not isinstance(mode, bool):
        raise TypeError(f"mode: expected a bool, got {type(mode).__name__} {mode!r}")
    _flush_denormal = mode
    for listener in list(_listeners):
        listener(mode)
    return True


def flush_denormal() -> bool:
    """Whether fastnn's kernels flush subnormals to zero now (see set_flush_denormal)."""
    return _flush_denormal


def on_flush_denormal(listener: Callable[[bool], None]) -> None:
    """Call ``listener(mode)`` now and whenever the mode changes (a backend's own switch)."""
    _listeners.append(listener)
    listener(_flush_denormal)


# -- fork -------------------------------------------------------------------------------

_forked_child = False


def _mark_forked_child() -> None:
    global _forked_child
    _forked_child = True


os.register_at_fork(after_in_child=_mark_forked_child)


def in_forked_child() -> bool:
    """True in a process made by fork() after fastnn was imported: kernels run on one thread."""
    return _forked_child
