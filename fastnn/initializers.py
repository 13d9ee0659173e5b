"""Weight initializers, by name or as objects, with Keras' names and defaults.

An initializer is called as ``init(shape, dtype, rng)`` and returns a new
C-contiguous array of that shape and dtype. ``shape`` is ``(fan_in, fan_out)``
for a Dense kernel and ``(fan_out,)`` for a bias. The random ones draw from
their own ``seed`` when given one, else from ``rng`` (the model's generator),
so a model built with a seed is reproducible either way.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Type, Union

import numpy as np

from .validation import finite_number, positive_number, seed_value

Shape = Tuple[int, ...]

# Keras draws its "normal" variance-scaling initializers from a normal truncated at two standard
# deviations; this is the standard deviation of the unit normal so truncated, used to rescale.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


class Initializer:
    """The base class of initializers; a subclass implements sample from a generator.

    Dense's kernel_initializer and bias_initializer accept an Initializer or one
    of the names (Keras' names and defaults): "zeros", "ones",
    "random_uniform", "random_normal", "glorot_uniform", "glorot_normal",
    "he_uniform", "he_normal". Called as init(shape, dtype, rng), an
    initializer returns a new C-contiguous array of that shape and dtype.
    seed: an int >= 0 (NumPy's seed) that makes the draws reproducible on their own; None
    draws from rng (the model's generator). Another type raises TypeError, a negative int
    ValueError, as do non-finite bounds, a minval above maxval or a negative stddev.
    """

    #: Name used by :func:`get` and in saved model files.
    name = ""

    def __init__(self, seed: Optional[int] = None):
        self.seed = seed_value("seed", seed)

    def __call__(self, shape: Shape, dtype=np.float32,
                 rng: Optional[np.random.Generator] = None) -> np.ndarray:
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
        elif rng is None:
            rng = np.random.default_rng()
        return np.ascontiguousarray(self.sample(tuple(shape), rng), dtype=dtype)

    def sample(self, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        """Internal, called by __call__: an array of the shape, drawn from rng (float64)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed!r})"


class Zeros(Initializer):
    """All zeros; the name "zeros" (the default bias_initializer)."""

    name = "zeros"

    def sample(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    """All ones; the name "ones"."""

    name = "ones"

    def sample(self, shape, rng):
        return np.ones(shape)


class RandomUniform(Initializer):
    """Uniform on [minval, maxval), Keras' default range ±0.05; the name "random_uniform"."""

    name = "random_uniform"

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: Optional[int] = None):
        super().__init__(seed)
        self.minval, self.maxval = finite_number("minval", minval), finite_number("maxval", maxval)
        if self.minval > self.maxval:
            raise ValueError(f"minval: expected at most maxval ({self.maxval}), got "
                             f"{self.minval}")

    def sample(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)


class RandomNormal(Initializer):
    """Normal with Keras' defaults mean 0, standard deviation 0.05; the name
    "random_normal"."""

    name = "random_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Optional[int] = None):
        super().__init__(seed)
        self.mean = finite_number("mean", mean)
        self.stddev = positive_number("stddev", stddev, allow_zero=True)

    def sample(self, shape, rng):
        return rng.normal(self.mean, self.stddev, shape)


def _fans(shape: Shape) -> Tuple[int, int]:
    """(fan_in, fan_out) of a kernel (fan_in, fan_out) or a vector (n,)."""
    if len(shape) == 1:
        return shape[0], shape[0]
    return shape[0], shape[-1]


def _truncated_normal(shape: Shape, stddev: float, rng: np.random.Generator) -> np.ndarray:
    """Normal(0, stddev) with draws beyond two standard deviations redrawn."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    return values * stddev


class _VarianceScaling(Initializer):
    """Variance ``scale / fan`` where fan is fan_in or the mean of fan_in and fan_out."""

    scale = 1.0
    fan_mode = "avg"  # or "in"
    distribution = "uniform"  # or "normal" (truncated, as Keras)

    def sample(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        fan = fan_in if self.fan_mode == "in" else (fan_in + fan_out) / 2
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        return _truncated_normal(shape, np.sqrt(variance) / _TRUNCATED_NORMAL_STD, rng)


class GlorotUniform(_VarianceScaling):
    """Uniform on ±sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010); the name
    "glorot_uniform" (the default kernel_initializer, as in Keras)."""

    name = "glorot_uniform"


class GlorotNormal(_VarianceScaling):
    """Normal truncated at two standard deviations with variance 2 / (fan_in + fan_out), as
    Keras'; the name "glorot_normal"."""

    name = "glorot_normal"
    distribution = "normal"


class HeUniform(_VarianceScaling):
    """Uniform on ±sqrt(6 / fan_in) (He et al., 2015), for relu layers; the name
    "he_uniform"."""

    name = "he_uniform"
    scale, fan_mode = 2.0, "in"


class HeNormal(_VarianceScaling):
    """Normal truncated at two standard deviations with variance 2 / fan_in, as Keras'; the
    name "he_normal"."""

    name = "he_normal"
    scale, fan_mode, distribution = 2.0, "in", "normal"


INITIALIZERS: Dict[str, Type[Initializer]] = {
    cls.name: cls for cls in (Zeros, Ones, RandomUniform, RandomNormal, GlorotUniform,
                              GlorotNormal, HeUniform, HeNormal)
}


def get(identifier: Union[str, Initializer], argument: str = "initializer") -> Initializer:
    """The initializer named identifier (with default settings), or the Initializer object
    itself. Names: "zeros", "ones", "random_uniform", "random_normal", "glorot_uniform",
    "glorot_normal", "he_uniform", "he_normal". Raises ValueError naming argument for
    another name."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str) and identifier in INITIALIZERS:
        return INITIALIZERS[identifier]()
    raise ValueError(f"{argument}: unknown initializer {identifier!r}; expected an "
                     f"Initializer or one of {sorted(INITIALIZERS)}")
