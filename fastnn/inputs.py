"""Checks of the data given to ``fit``, ``evaluate`` and ``predict``, done once per call.

After these, the step code trusts its arrays: C-contiguous, of the model's dtype,
finite, non-empty, with matching lengths. Every message names the argument.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional

import numpy as np

from .backends import get_backend


#: The one array (this object) whose finiteness the caller has just checked, within
#: checked_finite's scope on this thread: features() does not pass over it again.
_CHECKED_FINITE: ContextVar[Optional[np.ndarray]] = ContextVar("fastnn_checked_finite",
                                                               default=None)


@contextmanager
def checked_finite(x: Optional[np.ndarray]) -> Iterator[None]:
    """Within the block, ``features`` takes the array ``x`` (this very object, already
    C-contiguous of the model's dtype) as finite without a second pass over it: for a caller
    that has just checked it with the backend's ``all_finite`` (fastnn.sklearn's fit, whose
    60000 x 784 float32 check takes about 6.6 ms) and hands it on unchanged. ``None``: no
    array is taken as checked. Per thread (a ContextVar), and only for the block."""
    token = _CHECKED_FINITE.set(x)
    try:
        yield
    finally:
        _CHECKED_FINITE.reset(token)


def features(argument: str, x, dtype: np.dtype, input_dim: Optional[int]) -> np.ndarray:
    """``x`` as a C-contiguous (N, input_dim) array of ``dtype``; N >= 1, all finite.

    A 1-D x is one feature per sample when the model takes one input (as Keras).
    """
    try:
        x = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{argument}: expected a 2-D numeric array, could not convert: {exc}"
                        ) from exc
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{argument}: expected numeric inputs, got dtype {x.dtype}")
    if x.ndim == 1 and input_dim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise ValueError(f"{argument}: expected a 2-D array (samples, features), got shape "
                         f"{x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{argument}: empty: no samples (shape {x.shape})")
    if input_dim is not None and x.shape[1] != input_dim:
        raise ValueError(f"{argument}: expected {input_dim} features per sample as the model's "
                         f"input, got shape {x.shape}")
    if x.shape[1] == 0:
        raise ValueError(f"{argument}: empty: no features (shape {x.shape})")
    given = x
    with np.errstate(over="ignore", invalid="ignore"):  # values past dtype's range: below
        x = np.ascontiguousarray(x, dtype=dtype)
    # The current backend's kernel: one pass over memory (C: both threads, about 6 ms for
    # 60000 x 784 float32).
    if x is not _CHECKED_FINITE.get() and not get_backend().all_finite(x):
        if x is not given and given.dtype.kind == "f" and np.isfinite(given).all():
            raise beyond_range(argument, given, dtype)
        raise ValueError(f"{argument}: contains NaN or infinity")
    return x


def beyond_range(argument: str, given: np.ndarray, dtype: np.dtype) -> ValueError:
    """The error for finite ``given`` whose values overflow ``dtype`` (1e300 in float32)."""
    largest = float(np.max(np.abs(given.astype(np.float64, copy=False))))
    return ValueError(f"{argument}: values up to {largest:.3g} in magnitude are beyond the "
                      f"range of dtype {np.dtype(dtype).name} (at most "
                      f"{np.finfo(dtype).max:.3g}); use float64 or scale {argument}")


def same_length(argument: str, y: np.ndarray, samples: int) -> None:
    if len(y) != samples:
        raise ValueError(f"{argument}: has {len(y)} samples but x has {samples}")


def batch_size(value, samples: int) -> int:
    """The number of rows per step: None means all ``samples`` (full-batch descent)."""
    if value is None:
        return samples
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"batch_size: expected a positive int or None (full batch), got "
                         f"{value!r}")
    return min(int(value), samples)


def count(argument: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{argument}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def fraction(argument: str, value) -> float:
    if (isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not 0 <= value < 1):
        raise ValueError(f"{argument}: expected a fraction in [0, 1), got {value!r}")
    return float(value)
