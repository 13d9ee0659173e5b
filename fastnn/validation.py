"""Argument checks for the public boundary; every message names the argument.

Backends trust what passes here (see :mod:`fastnn.backends.contract`), so
this is the only place a shape, dtype or layout is checked.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import aligned
from .backends.contract import ACTIVATIONS, FLOAT_DTYPES, LABEL_DTYPE
from .precision import is_bfloat16


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def float_array(name: str, value, ndim: Optional[int] = None,
                dtype: Optional[np.dtype] = None) -> np.ndarray:
    """``value`` as a C-contiguous, aligned float32/float64 array.

    Views that are transposed, sliced or misaligned are copied; the values are
    never converted to another dtype. ``dtype``, when given, is the dtype the
    call already uses (mixing float32 and float64 is an error).
    """
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:
            raise TypeError(f"{name}: expected a float array, got {_describe(value)}") from exc
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {value.dtype}")
    if dtype is not None and value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} like the other arrays of this call, "
                        f"got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {value.ndim}-D with shape "
                         f"{value.shape}")
    if not (value.flags.c_contiguous and value.flags.aligned):
        value = np.require(value, requirements=["C", "A"])
    return value


def bfloat16_array(name: str, value, ndim: int, like: Optional[str] = None) -> np.ndarray:
    """``value``, a bfloat16 array (``ml_dtypes.bfloat16``), as a C-contiguous aligned one;
    views are copied, values never converted. TypeError for another dtype (``like``: the
    argument that is bfloat16, named in the message), ValueError for another rank."""
    if not is_bfloat16(value):
        got = value.dtype if isinstance(value, np.ndarray) else _describe(value)
        raise TypeError(f"{name}: expected dtype bfloat16" + (f" like {like}" if like else "")
                        + f", got {got}")
    if value.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got {value.ndim}-D with shape "
                         f"{value.shape}")
    if not (value.flags.c_contiguous and value.flags.aligned):
        value = np.require(value, requirements=["C", "A"])
    return value


def label_array(name: str, value, num_classes: int, length: int) -> np.ndarray:
    """Integer class labels as C-contiguous int64 (N,), each in [0, num_classes)."""
    value = np.asarray(value)
    if value.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {value.dtype}")
    if value.ndim != 1 or value.shape[0] != length:
        raise ValueError(f"{name}: expected shape ({length},) to match the batch, got "
                         f"{value.shape}")
    if length:
        within(name, value, num_classes, "labels")
    return np.ascontiguousarray(value, dtype=LABEL_DTYPE)


def within(name: str, value: np.ndarray, bound: int, what: str) -> None:
    """Check that every integer of the non-empty ``value`` lies in [0, bound)."""
    low, high = value.min(), value.max()
    if low < 0 or high >= bound:
        bad = int(low) if low < 0 else int(high)
        raise ValueError(f"{name}: {what} must lie in [0, {bound}), got {bad}")


def output_array(name: str, value, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A caller-supplied output buffer, or a new one when ``value`` is None (on a 64-byte
    line when large: :func:`fastnn.aligned.output`).

    A supplied buffer must already have the exact shape and dtype and be
    C-contiguous, aligned and writable, since results are written into it.
    """
    if value is None:
        return aligned.output(shape, dtype)
    writable_array(name, value, shape, dtype)
    return value


def writable_array(name: str, value, shape: Tuple[int, ...], dtype: np.dtype) -> None:
    """Check an array that a kernel updates in place (outputs, parameters, state)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {_describe(value)}")
    if value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {value.dtype}")
    if value.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {value.shape}")
    if not (value.flags.c_contiguous and value.flags.aligned):
        raise ValueError(f"{name}: must be C-contiguous and aligned to be updated in place")
    if not value.flags.writeable:
        raise ValueError(f"{name}: is read-only; it is updated in place")


def same_shape(name: str, value: np.ndarray, shape: Tuple[int, ...]) -> None:
    if value.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {value.shape}")


def non_empty_batch(name: str, value: np.ndarray) -> None:
    if value.size == 0:
        raise ValueError(f"{name}: empty batch (shape {value.shape}); the result is undefined")


def activation_name(activation) -> str:
    """The canonical activation name; None means identity ("linear" is Keras' alias)."""
    if activation is None or activation == "linear":
        return "identity"
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown activation {activation!r}; expected one of "
                         f"{list(ACTIVATIONS)} or None")
    return activation


def finite_number(name: str, value) -> float:
    """A real, finite scalar as a Python float (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {_describe(value)}")
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return float(value)


def flag(name: str, value) -> bool:
    """True or False (a Python or NumPy bool; not 0, 1 nor a string) as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def seed_value(name: str, value, bits: Optional[int] = None) -> Optional[int]:
    """None, or a non-negative int as a Python int: the entropy NumPy's ``SeedSequence`` (and
    so ``numpy.random.default_rng``) takes; with ``bits``, below ``2**bits`` (a key of that
    many bits, which larger seeds would alias). Bools are not seeds. TypeError for a value
    of another type, ValueError for one out of range; both name the argument."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected None or an int >= 0, got {value!r}")
    value = int(value)
    if value < 0 or (bits is not None and value >= 1 << bits):
        bound = "an int >= 0" if bits is None else f"an int in [0, 2**{bits})"
        raise ValueError(f"{name}: expected None or {bound}, got {value}")
    return value


def positive_number(name: str, value, allow_zero: bool = False) -> float:
    value = finite_number(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value}")
    return value
