"""Dropout masks from a counter-based generator: the same bits on every backend.

A mask element is a pure function of (seed, layer, epoch, step, element), so the
numpy, numba and C backends draw the same masks (each implements these few lines:
``dropout_key`` of kernels/train_impl.h and of numba_kernels/train.py), and a
switch of backend between epochs keeps training within float tolerance of an
unswitched run. The mixing function is the finalizer of SplitMix64 (Steele, Lea &
Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014), a bijection
of 64-bit words that passes BigCrush when fed a counter.

Keys, all arithmetic modulo 2**64:

* ``layer_key = mix(seed ^ mix(layer + 1))``, once per fit and layer (``layer`` is the
  position in the model; a Dropout's own ``seed`` replaces the fit's);
* ``step_key = mix(mix(layer_key + epoch) + step)`` (``step`` counts from 0 within the epoch);
* element ``e`` (row-major index within the batch's (N, units) block) draws
  ``h = mix(step_key + (e + 1) * GOLDEN)`` and is kept when ``h >> 40 >= threshold``,
  ``threshold = ceil(rate * 2**24)``: dropped with probability ``rate`` to within 2**-24,
  the same for float32 and float64 models.
"""

from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
#: The top bits of a hash compared against the threshold.
UNIFORM_BITS = 24


def mix(z: int) -> int:
    """SplitMix64's finalizer on a Python int taken modulo 2**64."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    return z ^ (z >> 31)


def layer_key(seed: int, layer: int) -> int:
    """The key of the layer at position ``layer`` of a model trained with ``seed``."""
    return mix((seed & MASK64) ^ mix(layer + 1))


def step_key(key: int, epoch: int, step: int) -> int:
    return mix(mix(key + epoch) + step)


def keep_threshold(rate: float) -> int:
    """Elements whose ``h >> 40`` is below this are dropped."""
    return math.ceil(rate * (1 << UNIFORM_BITS))


def as_signed(word: int) -> int:
    """A 64-bit word as the int64 of the same bits (what the plan's int64 table holds)."""
    return word - (1 << 64) if word >= 1 << 63 else word


class StepClock:
    """Where training is: the epoch and step (from 0) whose dropout masks are drawn now."""

    def __init__(self):
        self.epoch = 0
        self.step = 0


class MaskScratch:
    """Per-batch-size buffers to draw masks of ``size`` elements without allocating."""

    def __init__(self, size: int):
        # (e + 1) * GOLDEN, wrapping: the counter part of every element's input.
        self.counters = np.arange(1, size + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        self.hash = np.empty(size, np.uint64)
        self.shifted = np.empty(size, np.uint64)
        self.keep = np.empty(size, bool)


def draw_keep(key: int, threshold: int, scratch: MaskScratch, size: int) -> np.ndarray:
    """bool (size,) view of ``scratch.keep``: which of the first ``size`` elements are kept
    under the step key ``key``. In place, in NumPy: the readable reference."""
    h, shifted = scratch.hash[:size], scratch.shifted[:size]
    np.add(scratch.counters[:size], np.uint64(key), out=h)
    np.right_shift(h, np.uint64(30), out=shifted)
    np.bitwise_xor(h, shifted, out=h)
    np.multiply(h, np.uint64(MIX1), out=h)
    np.right_shift(h, np.uint64(27), out=shifted)
    np.bitwise_xor(h, shifted, out=h)
    np.multiply(h, np.uint64(MIX2), out=h)
    np.right_shift(h, np.uint64(31), out=shifted)
    np.bitwise_xor(h, shifted, out=h)
    np.right_shift(h, np.uint64(64 - UNIFORM_BITS), out=h)
    keep = scratch.keep[:size]
    np.greater_equal(h, np.uint64(threshold), out=keep)
    return keep
