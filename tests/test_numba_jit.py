"""fastnn/backends/numba_kernels/jit.py: a kernel called from other kernels with constant
arguments is compiled once for their types, not once per constant; ``literal_arguments=True``
keeps Numba's compilation per constant.

What it saves (the first Numba fit's compile time) is in the README; here, behaviour only.
"""

from __future__ import annotations

import pytest

from conftest import BACKENDS

pytest.importorskip("numba")
if "numba" not in BACKENDS:  # not under test (FASTNN_TEST_BACKENDS), or does not load here
    pytest.skip("the numba backend is not under test", allow_module_level=True)

from numba.core import types  # noqa: E402

from fastnn.backends.numba_kernels import jit  # noqa: E402


def callers_of(callee):
    """A jitted caller that passes callee three constant patterns, and one variable."""
    @jit.njit(cache=False)
    def caller(n):
        return callee(True, 0, n) + callee(False, 1, n) + callee(True, 2, n) + callee(n > 0, n, n)
    return caller


def branchy(flag, start, n):
    return n + start if flag else n - start


def literal_types(signature):
    return [t for t in signature if isinstance(t, types.Literal)]


def test_constants_from_a_kernel_compile_the_callee_once_for_their_types():
    callee = jit.njit(cache=False)(branchy)
    assert callers_of(callee)(5) == (5 + 0) + (5 - 1) + (5 + 2) + (5 + 5)
    assert len(callee.signatures) == 1, callee.signatures
    assert literal_types(callee.signatures[0]) == []


def test_literal_arguments_keeps_one_compilation_per_constant():
    callee = jit.njit(cache=False, literal_arguments=True)(branchy)
    assert callers_of(callee)(5) == (5 + 0) + (5 - 1) + (5 + 2) + (5 + 5)
    assert len(callee.signatures) == 4, callee.signatures
    assert sum(bool(literal_types(s)) for s in callee.signatures) == 3


def test_a_call_from_python_is_typed_as_numba_types_it():
    callee = jit.njit(cache=False)(branchy)
    assert callee(True, 3, 4) == 7 and callee(False, 3, 4) == 1
    assert len(callee.signatures) == 1
