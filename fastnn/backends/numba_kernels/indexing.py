"""Loops over a span of a flat array whose start the compiler cannot see.

Numba indexes an array with a signed integer as Python does: a negative index counts from
the end, so ``x[i]`` is ``x[i + n if i < 0 else i]``. In ``for i in range(start, stop)``
with ``start`` an argument, LLVM cannot prove ``i >= 0``; it then vectorizes ``x[i]`` as a
masked gather (one load per lane) and ``out[i] = ...`` as a scatter, or leaves the loop
scalar. Measured on one thread (float32, us; start a run-time 0, then :func:`indices`):
tanh over 32 x 64 elements 9.0 -> 0.93, Adam over 6530 parameters 13.7 -> 1.4, SGD with
momentum 3.9 -> 0.83, the finiteness check over 1.6 M elements 687 -> 80. The kernels that
split a flat array among threads pass such starts (``*_range`` called by ``*_parallel``,
and by the per-layer path from Python), so every 1-D loop over ``start..stop`` takes
:func:`indices`. A 2-D loop whose inner index starts at 0 (``x[i, j]``, ``j`` in
``range(cols)``) keeps its contiguous loads: the row's wrap is the same for all of them.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def indices(start, stop):
    """``range(start, stop)`` with unsigned (uintp) values, for 0 <= start; empty when
    stop <= start. Use the values only as indices: arithmetic between a uintp and an int64
    gives a float64 in Numba."""
    return range(np.uintp(start), np.uintp(max(start, stop)))
