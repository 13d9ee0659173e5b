"""Scalar helpers inlined into the kernels: exp/expm1 that LLVM can vectorize,
the activations and their derivatives.

Without Intel SVML (not shipped with llvmlite's wheels), ``math.exp`` in a loop
stays a scalar libm call per element. The versions here use only arithmetic,
``floor``, an int conversion and a bit cast, so a loop over them becomes SIMD
code. They cover only ``x <= 0``, which is all the kernels need:
softmax takes ``exp(x - max)``, sigmoid ``exp(-|z|)``, tanh ``expm1(-2|z|)``.

Each helper takes float32 or float64 scalars and computes in that type; the
constants of each type come from :func:`exp_constants` (a per-type overload),
so one source serves both dtypes.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

#: Codes of contract.ACTIVATIONS, repeated as globals so jitted code folds them.
IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = range(5)

_MANTISSA_BITS = {types.float32: (ir.IntType(32), 23, 127),
                  types.float64: (ir.IntType(64), 52, 1023)}


@intrinsic
def pow2(typingctx, k):
    """``2.0 ** k`` for an integer-valued float ``k`` in the normal exponent range,
    built directly from the exponent bits (one shift and a bit cast)."""
    if k not in _MANTISSA_BITS:
        return None
    int_type, mantissa_bits, bias = _MANTISSA_BITS[k]

    def codegen(context, builder, signature, args):
        exponent = builder.add(builder.fptosi(args[0], int_type), ir.Constant(int_type, bias))
        bits = builder.shl(exponent, ir.Constant(int_type, mantissa_bits))
        return builder.bitcast(bits, context.get_value_type(k))

    return k(k), codegen


def _exp_constants_of(float_type, lowest, ln2_hi, ln2_lo, degree):
    """Range-reduction constants and Taylor coefficients 1/n!, n = degree..1, in float_type."""
    coefficients = tuple(float_type(1.0 / math.factorial(n)) for n in range(degree, 0, -1))
    return (float_type(lowest), float_type(1.0 / math.log(2.0)), float_type(ln2_hi),
            float_type(ln2_lo), coefficients)


# lowest: below it exp underflows past the smallest normal number (2**-126 / 2**-1022),
# so the result is flushed to 0. ln2 is split Cody-Waite style: k * ln2_hi is exact for
# every k in range. Degrees keep the truncation error of the reduced series (|r| <= ln2/2)
# under half an ulp of the type.
_EXP_CONSTANTS = {
    types.float32: _exp_constants_of(np.float32, -87.0, 0.693359375, -2.12194440e-4, 7),
    types.float64: _exp_constants_of(np.float64, -708.0, 6.93145751953125e-1,
                                     1.42860682030941723212e-6, 13),
}


def exp_constants(x):
    """(lowest, log2(e), ln2_hi, ln2_lo, expm1 Taylor coefficients) in the type of x."""
    raise NotImplementedError("jitted code only")


@overload(exp_constants)
def _exp_constants_overload(x):
    constants = _EXP_CONSTANTS.get(x)
    if constants is not None:
        return lambda x: constants


def like(x, value):
    """``value`` converted to the float type of the scalar ``x`` (folded at compile time)."""
    raise NotImplementedError("jitted code only")


@overload(like)
def _like_overload(x, value):
    if isinstance(x, types.Float):
        scalar_type = as_dtype(x).type
        return lambda x, value: scalar_type(value)


@njit(cache=True, error_model="numpy")
def _reduce_exponent(x):
    """x = k*ln2 + r with |r| <= ln2/2; returns (2**k, expm1(r))."""
    _, log2e, ln2_hi, ln2_lo, coefficients = exp_constants(x)
    k = np.floor(x * log2e + like(x, 0.5))
    r = (x - k * ln2_hi) - k * ln2_lo
    series = like(x, 0.0)
    for c in coefficients:  # Horner over a constant tuple: unrolled
        series = series * r + c
    return pow2(k), series * r


@njit(cache=True, error_model="numpy")
def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0`` (0 below the normal range), in the type of x."""
    scale, expm1_r = _reduce_exponent(x)
    result = scale + scale * expm1_r
    return like(x, 0.0) if x < exp_constants(x)[0] else result  # NaN stays NaN


@njit(cache=True, error_model="numpy")
def expm1_nonpositive(x):
    """``exp(x) - 1`` for ``x <= 0``, accurate also for tiny ``|x|``."""
    lowest = exp_constants(x)[0]
    scale, expm1_r = _reduce_exponent(lowest if x < lowest else x)  # keeps NaN
    # 2**k * (1 + e) - 1 = 2**k * e + (2**k - 1): exact cancellation when k == 0.
    return scale * expm1_r + (scale - like(x, 1.0))


@njit(cache=True, error_model="numpy")
def sigmoid(z):
    """``1 / (1 + exp(-z))`` without overflow: exp(-|z|) <= 1."""
    e = exp_nonpositive(-abs(z))
    s = like(z, 1.0) / (like(z, 1.0) + e)
    return s if z >= 0 else e * s


@njit(cache=True, error_model="numpy")
def tanh(z):
    """``tanh(z) = -expm1(-2|z|) / (2 + expm1(-2|z|))`` with the sign of z."""
    m = expm1_nonpositive(like(z, -2.0) * abs(z))
    t = -m / (like(z, 2.0) + m)
    return t if z >= 0 else -t


@njit(cache=True, error_model="numpy")
def activate(z, code, alpha):
    """The activation of ``code`` at ``z``; alpha is leaky_relu's negative slope."""
    if code == RELU:
        return max(z, like(z, 0.0))
    if code == LEAKY_RELU:
        return z if z > 0 else z * alpha
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return tanh(z)
    return z


@njit(cache=True, error_model="numpy")
def derivative_from_output(y, code, alpha):
    """act'(z) written with the output y = act(z) (see contract.ACTIVATIONS)."""
    one = like(y, 1.0)
    if code == RELU:
        return one if y > 0 else like(y, 0.0)
    if code == LEAKY_RELU:
        return one if y > 0 else alpha
    if code == SIGMOID:
        return y * (one - y)
    if code == TANH:
        return one - y * y
    return one
