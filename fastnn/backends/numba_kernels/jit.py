"""``njit`` for fastnn's kernels: compiled once per argument types, not once per constant.

Numba types a constant passed from one jitted function to another (``True``, ``0``, a module
constant such as ``IDENTITY``) as a literal type, and compiles the callee once for every
literal value it meets: ``numba.core.types.Dispatcher.get_call_type`` passes the literal types
through (only ``@overload`` templates try the non-literal types first). fastnn's kernels pass
many constants (transpose flags, a first row of 0, one thread, no activation), so the Numba
training loop compiled the blocked GEMM six times for one dtype (three transposes, one thread
or many). A kernel made by this ``njit`` is typed, when another kernel calls it, with its
arguments' non-literal types: one compilation serves every constant (the first float32 fit
compiled in 135-159 s instead of 181-184 on the twenty-fourth session's host; README,
"Compilation").

``literal_arguments=True`` keeps Numba's behaviour for a kernel whose speed or result type
comes from a constant: ``gemm.direct_tile`` (strides of 1: contiguous vector loads),
``gemm.direct_panel`` (the tile width; generic, the 128x784->256 product took 1.75x as long)
and ``scalar_math.activate``/``derivative_from_output`` (the activation code).
Functions with ``inline="always"`` are inlined before typing, so their constants reach the
code they are inlined into either way.
"""

from __future__ import annotations

import numba
from numba.core import types


def njit(*, literal_arguments: bool = False, **options):
    """``numba.njit(**options)``, whose dispatcher compiles calls from jitted code for the
    non-literal types of their arguments unless ``literal_arguments``.

    Raises:
        TypeError: options that ``numba.njit`` rejects (raised by Numba).
    """
    jit = numba.njit(**options)
    if literal_arguments:
        return jit

    def decorate(function):
        dispatcher = jit(function)
        typed_call = dispatcher.get_call_template

        def get_call_template(args, kws):
            return typed_call(tuple(types.unliteral(a) for a in args),
                              {name: types.unliteral(t) for name, t in kws.items()})

        dispatcher.get_call_template = get_call_template
        return dispatcher

    return decorate
