"""The bfloat16 rounding of bfloat16 matmul precision, bit for bit as the reference
(:func:`fastnn.backends.numpy_backend.round_bfloat16`, the contract's ``round_bfloat16``).

The kernels take the float32 bits as uint32 views (``array.view(np.uint32)``, made by the
caller), so the arithmetic is on integers: round to nearest, ties to even.
"""

from __future__ import annotations

from numba import njit, prange

from .indexing import indices
from .team import region_enter, region_leave, task_enter, task_leave


@njit(cache=True, inline="always")
def _round_bits(u):
    if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN: quiet, sign and top payload bits kept
        return (u | 0x00400000) & 0xFFFF0000
    return (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000


@njit(cache=True)
def round_range(bits, out_bits, start, stop):
    """``out_bits[i]`` = the bits of ``bits[i]`` rounded, for i in start..stop; uint32 (size,)."""
    for i in indices(start, stop):
        out_bits[i] = _round_bits(bits[i])


@njit(cache=True, parallel=True)
def round_parallel(bits, out_bits, threads):
    """round_range over all of the arrays, in ``threads`` equal parts."""
    size = bits.size
    region = region_enter()  # (integer arithmetic: the floating-point mode does not matter)
    for t in prange(threads):
        mode = task_enter()
        round_range(bits, out_bits, size * t // threads, size * (t + 1) // threads)
        task_leave(mode)
    region_leave(region)
