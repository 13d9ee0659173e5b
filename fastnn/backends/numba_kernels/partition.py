"""How parallel drivers split a range of rows among tasks."""

from __future__ import annotations

from numba import njit


@njit(cache=True, error_model="numpy")
def chunk_bounds(length, chunks, index):
    """Bounds ``(start, stop)`` of chunk ``index`` of ``chunks`` near-equal
    contiguous pieces of ``range(length)``."""
    return index * length // chunks, (index + 1) * length // chunks
