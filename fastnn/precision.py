"""Matmul precision: the precision the GEMMs of float32 matmuls and dense layers run in.

``"float32"`` (the default) multiplies float32 numbers. ``"bfloat16"`` rounds both operands
of each GEMM (``matmul``; ``linear_forward``; both GEMMs of ``linear_backward``, ``dw`` and
``dx``) to bfloat16, round to nearest even (:func:`fastnn.ops.round_bfloat16`), and
accumulates the products in float32. Arrays stay float32 in and out; bias, activation,
``dz``, ``db``, the loss, the optimizer and the weights stay float32, and ``dw`` is written in
float32 straight from the accumulators. On CPUs with AMX-BF16 the C backend runs these GEMMs
on AMX tiles; elsewhere, and on the other backends, it rounds the operands and runs the
float32 kernels: the same products, summed in another order.

The analogue of PyTorch's ``torch.set_float32_matmul_precision("medium")`` and of the
matmuls of Keras' ``"mixed_bfloat16"`` policy (accepted here as an alias of ``"bfloat16"``).
It applies to float32 arrays only: float64 ones always multiply in float64, and asking for
bfloat16 explicitly with float64 arrays raises ValueError.

Operands already in bfloat16 (``ml_dtypes.bfloat16`` arrays, the NumPy dtype of JAX and
TensorFlow; fastnn reads them without importing ml_dtypes) multiply in :func:`fastnn.ops.matmul`
as bfloat16 precision multiplies rounded float32 ones: exact products summed in float32, the
result rounded to bfloat16 (as ``torch.mm`` on bfloat16 tensors returns it) or kept float32 in
a float32 ``out``; the C backend's AMX and AVX512-BF16 kernels read and write them in place.

The setting is a process-wide default (:func:`set_matmul_precision`) under a context-local
override (:func:`matmul_precision`, restored on exit also when the body raises), like the
backend's :func:`fastnn.use_backend`.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import numpy as np

#: The precisions, by their canonical names.
PRECISIONS = ("float32", "bfloat16")
#: Other accepted names: Keras' mixed-precision policy name.
ALIASES = {"mixed_bfloat16": "bfloat16"}

_default = "float32"
_override: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "fastnn_matmul_precision", default=None)


def precision_name(precision, argument: str = "precision") -> str:
    """The canonical name of ``precision`` ("float32" or "bfloat16"); ValueError otherwise."""
    if isinstance(precision, str):
        name = ALIASES.get(precision, precision)
        if name in PRECISIONS:
            return name
    raise ValueError(f"{argument}: expected one of {list(PRECISIONS) + list(ALIASES)}, "
                     f"got {precision!r}")


def set_matmul_precision(precision: str) -> None:
    """Make ``precision`` ("float32", "bfloat16" or "mixed_bfloat16") the process-wide default.

    Raises ValueError for another name.
    """
    global _default
    _default = precision_name(precision)


def get_matmul_precision() -> str:
    """The matmul precision in this thread/context now: "float32" or "bfloat16"."""
    return _override.get() or _default


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[str]:
    """Run the body with matmul precision ``precision`` in this thread/context only.

    The previous precision is restored on exit, also when the body raises.
    """
    token = _override.set(precision_name(precision))
    try:
        yield _override.get()
    finally:
        _override.reset(token)


def resolve(precision, dtype, argument: str = "precision") -> str:
    """The precision a GEMM on arrays of ``dtype`` runs in.

    ``precision`` None means the current setting (:func:`get_matmul_precision`), which
    applies to float32 arrays only. An explicit "bfloat16" with float64 arrays raises
    ValueError naming ``argument``.
    """
    if precision is None:
        current = get_matmul_precision()
        return current if np.dtype(dtype) == np.float32 else "float32"
    name = precision_name(precision, argument)
    if name == "bfloat16" and np.dtype(dtype) != np.float32:
        raise ValueError(f"{argument}: bfloat16 matmul precision needs float32 arrays, got "
                         f"{np.dtype(dtype)}; use float32 data or {argument}='float32'")
    return name


def is_bfloat16_dtype(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is ``ml_dtypes.bfloat16``'s: a 2-byte dtype named "bfloat16"
    (ml_dtypes itself is not imported)."""
    return dtype.itemsize == 2 and dtype.name == "bfloat16"


def is_bfloat16(array) -> bool:
    """Whether ``array`` is a NumPy array of bfloat16 numbers (:func:`is_bfloat16_dtype`)."""
    return isinstance(array, np.ndarray) and is_bfloat16_dtype(array.dtype)


def widen_bfloat16(array: np.ndarray) -> np.ndarray:
    """The bfloat16 numbers of ``array`` as float32 numbers, exactly: each one's 16 bits
    followed by 16 zero bits (a new C-ordered array of the same shape)."""
    bits = np.ascontiguousarray(array).view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32)


def float32_target(out: np.ndarray) -> np.ndarray:
    """Where a GEMM that writes float32 puts a product bound for ``out``: ``out`` itself, or
    a new float32 array for a bfloat16 ``out`` (then :func:`store_rounded` it)."""
    return np.empty(out.shape, np.float32) if is_bfloat16(out) else out


def store_rounded(round_bfloat16, target: np.ndarray, out: np.ndarray) -> None:
    """``out = target`` rounded to bfloat16 by the backend's ``round_bfloat16`` kernel when
    ``target`` is :func:`float32_target`'s own array (nothing to do when it is ``out``)."""
    if target is not out:
        round_bfloat16(target, target)
        out.view(np.uint16)[...] = target.view(np.uint32) >> 16


def rounded_operands(round_bfloat16, precision: str, *arrays):
    """The GEMM operands as ``precision`` reads them: the arrays themselves for "float32",
    copies rounded by the backend's ``round_bfloat16(x, out)`` kernel for "bfloat16" (the
    numpy and numba backends round first, then multiply in float32), and bfloat16 arrays
    widened to float32 (:func:`widen_bfloat16`: already bfloat16 numbers)."""
    if precision != "bfloat16":
        return arrays
    rounded = []
    for array in arrays:
        if is_bfloat16(array):
            rounded.append(widen_bfloat16(array))
        else:
            copy = np.empty_like(array)
            round_bfloat16(array, copy)
            rounded.append(copy)
    return tuple(rounded)
