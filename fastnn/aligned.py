"""Arrays that start on a 64-byte cache line, as PyTorch's CPU allocator places its tensors.

NumPy promises 16 bytes: its large arrays start 16 bytes past a line (glibc's mmap chunks), so
each 64-byte row of a block the kernels store into one straddles two lines, and the bfloat16
GEMM streams a C past the caches (float32, and bfloat16 on AVX512-BF16 dot products) only when
its rows start on lines (kernels/amx_gemm.c, STREAM_MIN_BYTES). Measured on the Zen 5 host (2
threads, medians, alternating in one process), ``ops.matmul(a, b, precision="bfloat16")`` into a
C on a line against 16 bytes past one: 1024 x 16 x 2048 (8 MB) 3.1x faster, 512 x 64 x 1024 (2
MB) 1.4x; below 2 MB, and with a long K (1024 x 256 x 1024), the same within the noise
(0.91-1.05x). So fastnn places the outputs it allocates itself on lines from that size on
(:func:`output`), and the training buffers of :class:`fastnn.workspace.Workspace` always.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np

LINE_BYTES = 64
#: Outputs of at least this many bytes are placed on a line by :func:`output`: the float32
#: C the bfloat16 GEMM streams (kernels/amx_gemm.c's STREAM_MIN_BYTES).
OUTPUT_MIN_BYTES = 2 * 1024 * 1024


def empty(shape: Union[int, Tuple[int, ...]], dtype) -> np.ndarray:
    """An uninitialised C-ordered array of ``shape`` and ``dtype`` whose first element starts
    on a 64-byte line: a view into a buffer up to 64 bytes longer (its ``base``). Raises as
    ``np.empty`` does for a bad shape or dtype."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(side < 0 for side in shape):
        raise ValueError(f"shape: expected sizes >= 0, got {shape}")
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + LINE_BYTES, np.uint8)
    start = -raw.ctypes.data % LINE_BYTES
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def output(shape: Tuple[int, ...], dtype) -> np.ndarray:
    """A buffer for a kernel's output: :func:`empty` from OUTPUT_MIN_BYTES on, else
    ``np.empty`` (whose few microseconds less matter more for a small product)."""
    dtype = np.dtype(dtype)
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize >= OUTPUT_MIN_BYTES:
        return empty(shape, dtype)
    return np.empty(shape, dtype)
