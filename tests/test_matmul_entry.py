"""The C call entry of ops.matmul (kernels/fastcall/fastcall.c, ``c_backend.matmul_entry``).

It takes the plain case alone and returns None for anything else, so: its products are the
cffi path's bit for bit (float32 and float64 operands in float32 precision, float32 ones in
bfloat16 precision into a float32 or bfloat16 result, bfloat16 operands into a bfloat16 or
float32 result); every input next to
the plain case (a view, another dtype, a subclass, a bad ``out``...) makes the entry itself
return None, and ops.matmul then gives the answer or the error it gives with no entry at all;
ops.matmul calls it only on backend "c" with a valid precision name; and fastnn works when
the extension is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import ml_dtypes  # in the dev extra: fastnn itself reads bfloat16 arrays without it
import numpy as np
import pytest

import fastnn
from fastnn import environment, ops

from conftest import BACKENDS

pytestmark = pytest.mark.skipif("c" not in BACKENDS, reason="backend c is not under test")

if "c" in BACKENDS:
    from fastnn.backends import c_backend
    ENTRY = c_backend.matmul_entry
else:  # pragma: no cover - skipped above
    c_backend = ENTRY = None

needs_entry = pytest.mark.skipif(ENTRY is None, reason="the C call entry is not built here")


def _random(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _operands(n, k, m, trans_a, trans_b, dtype, seed=0):
    a = _random((k, n) if trans_a else (n, k), dtype, seed)
    b = _random((m, k) if trans_b else (k, m), dtype, seed + 1)
    return a, b


def _cffi_product(a, b, trans_a, trans_b, precision="float32", dtype=None):
    """The same kernel through the cffi wrapper (the backend's matmul), into a new array of
    ``dtype`` (default: the operands')."""
    n = a.shape[1] if trans_a else a.shape[0]
    m = b.shape[0] if trans_b else b.shape[1]
    out = np.full((n, m), np.nan, dtype or a.dtype)
    c_backend.matmul(a, b, trans_a, trans_b, out, precision)
    return out


class Spy:
    """Stands in for matmul_entry: records each call and what the real entry returned."""

    def __init__(self):
        self.results = []

    def __call__(self, *args):
        result = ENTRY(*args)
        self.results.append(result)
        return result


@pytest.fixture
def spy(monkeypatch):
    spy = Spy()
    monkeypatch.setattr(c_backend, "matmul_entry", spy)
    return spy


@pytest.fixture
def no_entry(monkeypatch):
    """ops.matmul as it is when the extension is missing."""
    monkeypatch.setattr(c_backend, "matmul_entry", None)


# The sweep's small shapes, GEMV-like ones, one big enough for the threaded paths, and odd
# sizes at the kernels' edges.
SHAPES = [(1, 1, 1), (1, 16, 16), (8, 256, 16), (32, 256, 256), (1, 784, 256), (3, 17, 129),
          (129, 64, 3), (256, 300, 200), (5, 1, 7)]


@needs_entry
@pytest.mark.parametrize("n,k,m", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_entry_products_are_the_cffi_paths_bit_for_bit(dtype, n, k, m, trans_a, trans_b):
    a, b = _operands(n, k, m, trans_a, trans_b, dtype)
    expected = _cffi_product(a, b, trans_a, trans_b)
    got = ENTRY(a, b, trans_a, trans_b, None, False)
    assert type(got) is np.ndarray and got.dtype == dtype and got.shape == (n, m)
    assert got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, expected)
    out = np.full((n, m), np.nan, dtype)
    assert ENTRY(a, b, int(trans_a), int(trans_b), out, False) is out  # flags as ints too
    np.testing.assert_array_equal(out, expected)
    reference = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@needs_entry
@pytest.mark.parametrize("n,k,m", [(1, 16, 2048), (3, 17, 129), (1, 1, 1), (64, 200, 96)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("views", ["a", "b", "both"])
def test_transposed_views_take_the_entry_with_the_flag_flipped(dtype, n, k, m, trans_a, trans_b,
                                                               views):
    """A Fortran-ordered operand (w.T of a C-ordered w) is the C-ordered array it views, read
    with its transpose flag flipped: the entry runs the same kernel call as the cffi path with
    the flags, so the same bits, and never returns None for it."""
    a, b = _operands(n, k, m, trans_a, trans_b, dtype, seed=5)
    expected = _cffi_product(a, b, trans_a, trans_b)
    # the same matrices op(a), op(b) given as transposed views with the other flag
    a_arg, ta = (a.T, not trans_a) if views in ("a", "both") else (a, trans_a)
    b_arg, tb = (b.T, not trans_b) if views in ("b", "both") else (b, trans_b)
    got = ENTRY(a_arg, b_arg, ta, tb, None, False)
    assert got is not None
    np.testing.assert_array_equal(got, expected)
    out = np.full((n, m), np.nan, dtype)
    assert ENTRY(a_arg, b_arg, int(ta), int(tb), out, 0) is out
    np.testing.assert_array_equal(out, expected)
    with fastnn.use_backend("c"):
        np.testing.assert_array_equal(ops.matmul(a_arg, b_arg, ta, tb), expected)


@needs_entry
def test_a_transposed_view_with_a_wrong_inner_dimension_gets_the_python_paths_error():
    a, b = _random((3, 4), np.float32, 1), _random((5, 4), np.float32, 2)
    assert ENTRY(a, b.T, True, False, None, False) is None  # op(a) is 4 x 3, op(b) 4 x 5: 3 != 4
    with fastnn.use_backend("c"), pytest.raises(ValueError, match="^b: inner dimension"):
        ops.matmul(a, b.T, True, False)


@needs_entry
def test_ops_matmul_takes_the_entry_for_the_plain_case(spy):
    a, b = _operands(4, 6, 5, False, False, np.float32)
    with fastnn.use_backend("c"):
        got = ops.matmul(a, b)
        assert ops.matmul(a, b, precision="float32", out=np.empty((4, 5), np.float32)) \
            is not None
        read_only = a.copy()
        read_only.flags.writeable = False  # inputs need not be writable
        ops.matmul(read_only, b)
    assert len(spy.results) == 3 and all(r is not None for r in spy.results)
    np.testing.assert_array_equal(got, _cffi_product(a, b, False, False))


def _subclass(array):
    class Sub(np.ndarray):
        pass
    return array.view(Sub)


def _read_only(array):
    array = array.copy()
    array.flags.writeable = False
    return array


A, B = _random((3, 4), np.float32, 1), _random((4, 5), np.float32, 2)

#: Calls next to the plain case: (a, b, trans_a, trans_b, out) for the entry and ops.matmul.
NEAR_MISSES = {
    "a non-contiguous": (np.concatenate([A, A], axis=1)[:, :4], B, False, False, None),
    "b a Fortran-ordered column slice": (A, np.asfortranarray(np.concatenate([B, B]))[:4],
                                         False, False, None),
    "b a strided view": (A, np.repeat(B, 2, axis=1)[:, ::2], False, False, None),
    "a float16": (A.astype(np.float16), B, False, False, None),
    "float16 operands": (A.astype(np.float16), B.astype(np.float16), False, False, None),
    "a int64": (A.astype(np.int64), B.astype(np.int64), False, False, None),
    "mixed dtypes": (A, B.astype(np.float64), False, False, None),
    "a subclass": (_subclass(A), B, False, False, None),
    "b subclass": (A, _subclass(B), False, False, None),
    "a list": (A.tolist(), B, False, False, None),
    "a 1-D": (A[0].copy(), B, False, False, None),
    "b 3-D": (A, B[None], False, False, None),
    "zero rows": (A[:0], B, False, False, None),
    "zero inner": (A[:, :0], B[:0], False, False, None),
    "zero columns": (A, B[:, :0], False, False, None),
    "mismatched inner": (A, B, False, True, None),
    "byte-swapped": (A.astype(A.dtype.newbyteorder()), B, False, False, None),
    "trans_a numpy bool": (A.T.copy(), B, np.True_, False, None),
    "trans_b None": (A, B, False, None, None),
    "out wrong shape": (A, B, False, False, np.empty((5, 3), np.float32)),
    "out wrong dtype": (A, B, False, False, np.empty((3, 5), np.float64)),
    "out strided": (A, B, False, False, np.empty((3, 10), np.float32)[:, ::2]),
    "out read-only": (A, B, False, False, _read_only(np.empty((3, 5), np.float32))),
    "out subclass": (A, B, False, False, _subclass(np.empty((3, 5), np.float32))),
    "out list": (A, B, False, False, [[0.0] * 5] * 3),
    "a bfloat16, b float32": (A.astype(ml_dtypes.bfloat16), B, False, False, None),
    "a float32, b bfloat16": (A, B.astype(ml_dtypes.bfloat16), False, False, None),
    "bfloat16 operands, out float64": (A.astype(ml_dtypes.bfloat16),
                                       B.astype(ml_dtypes.bfloat16), False, False,
                                       np.empty((3, 5), np.float64)),
    "bfloat16 operands, out strided": (A.astype(ml_dtypes.bfloat16),
                                       B.astype(ml_dtypes.bfloat16), False, False,
                                       np.empty((3, 10), ml_dtypes.bfloat16)[:, ::2]),
    "float32 operands, out bfloat16": (A, B, False, False,
                                       np.empty((3, 5), ml_dtypes.bfloat16)),
    "bfloat16 a strided view": (np.concatenate([A, A], axis=1).astype(ml_dtypes.bfloat16)[:, :4],
                                B.astype(ml_dtypes.bfloat16), False, False, None),
}


@needs_entry
@pytest.mark.parametrize("case", list(NEAR_MISSES))
def test_near_misses_leave_the_entry_and_get_the_python_paths_answer(case, monkeypatch):
    a, b, trans_a, trans_b, out = NEAR_MISSES[case]
    copies = [x.copy() if isinstance(x, np.ndarray) else x for x in (a, b, out)]
    assert ENTRY(a, b, trans_a, trans_b, out, False) is None
    for before, after in zip(copies, (a, b, out)):  # nothing was written
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(before, after)

    def run(entry):
        monkeypatch.setattr(c_backend, "matmul_entry", entry)
        target = out.copy() if isinstance(out, np.ndarray) and out.base is None else out
        try:
            with fastnn.use_backend("c"):
                return np.array(ops.matmul(a, b, trans_a, trans_b, out=target))
        except Exception as error:  # noqa: BLE001 - compared below
            return type(error), str(error)

    with_entry, without_entry = run(ENTRY), run(None)
    if isinstance(without_entry, tuple):
        assert with_entry == without_entry  # the same error, word for word
        # (a transpose flag that is not a bool or an int, None included, is refused by name)
        assert without_entry[1].split(":")[0] in ("a", "b", "out", "trans_a", "trans_b")
    else:
        np.testing.assert_array_equal(with_entry, without_entry)
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        expected = (a64.T if trans_a else a64) @ (b64.T if trans_b else b64)
        tolerance = 4e-3 if with_entry.dtype == ml_dtypes.bfloat16 else 1e-5  # 2^-9: rounding
        np.testing.assert_allclose(with_entry.astype(np.float64), expected, rtol=tolerance,
                                   atol=tolerance)


@needs_entry
def test_an_out_that_overlaps_an_input_leaves_the_entry():
    """ops.matmul then computes aside (tests/test_contract.py checks its result)."""
    square = _random((8, 8), np.float32, 3)
    before = square.copy()
    assert ENTRY(square, square.T.copy(), False, False, square, False) is None
    assert ENTRY(square[:4], square, False, False, square[4:], False) is None
    disjoint = square[:, :4].copy(), square[4:, :].copy()
    assert ENTRY(*disjoint, False, False, square, False) is not None
    assert not np.array_equal(square, before)  # a disjoint out is written: the check can fail


@needs_entry
@pytest.mark.parametrize("precision,context", [("bfloat16", None), ("mixed_bfloat16", None),
                                               (None, "bfloat16")])
def test_bfloat16_precision_takes_the_entry_with_its_flag(spy, precision, context):
    a, b = _operands(5, 40, 3, False, False, np.float32)
    with fastnn.use_backend("c"):
        if context:
            with fastnn.matmul_precision(context):
                got = ops.matmul(a, b)
        else:
            got = ops.matmul(a, b, precision=precision)
    assert len(spy.results) == 1 and spy.results[0] is got
    np.testing.assert_array_equal(got, _cffi_product(a, b, False, False, "bfloat16"))
    assert not np.array_equal(got, _cffi_product(a, b, False, False))


@needs_entry
@pytest.mark.parametrize("n,k,m", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
def test_entry_in_bfloat16_precision_is_the_cffi_paths_bit_for_bit(n, k, m, trans_a, trans_b):
    a, b = _operands(n, k, m, trans_a, trans_b, np.float32, seed=2)
    expected = _cffi_product(a, b, trans_a, trans_b, "bfloat16")
    got = ENTRY(a, b, trans_a, trans_b, None, True)
    assert type(got) is np.ndarray and got.dtype == np.float32 and got.shape == (n, m)
    np.testing.assert_array_equal(got, expected)
    out = np.full((n, m), np.nan, np.float32)
    assert ENTRY(a.T, b.T, int(not trans_a), int(not trans_b), out, 1) is out  # views, ints
    np.testing.assert_array_equal(out, expected)
    # a bfloat16 out: the same sums rounded (fastnn_matmul_bf16_rounded)
    rounded = _cffi_product(a, b, trans_a, trans_b, "bfloat16", dtype=ml_dtypes.bfloat16)
    np.testing.assert_array_equal(rounded.view(np.uint16),
                                  (ops.round_bfloat16(expected).view(np.uint32) >> 16)
                                  .astype(np.uint16))
    out = np.full((n, m), np.nan, ml_dtypes.bfloat16)
    assert ENTRY(a, b.T, trans_a, int(not trans_b), out, True) is out
    np.testing.assert_array_equal(out.view(np.uint16), rounded.view(np.uint16))
    # in float32 precision a bfloat16 out is not plain (the Python path's TypeError)
    assert ENTRY(a, b, trans_a, trans_b, np.empty((n, m), ml_dtypes.bfloat16), False) is None


@needs_entry
def test_float64_in_bfloat16_precision_leaves_the_entry(spy):
    """An explicit bfloat16 precision is an error for float64 arrays; the context's leaves
    them in float64: the Python path decides both."""
    a, b = _operands(4, 6, 5, False, False, np.float64)
    assert ENTRY(a, b, False, False, None, True) is None
    with fastnn.use_backend("c"):
        with pytest.raises(ValueError, match="^precision: bfloat16 matmul precision needs"):
            ops.matmul(a, b, precision="bfloat16")
        with fastnn.matmul_precision("bfloat16"):
            got = ops.matmul(a, b)
    np.testing.assert_array_equal(got, _cffi_product(a, b, False, False))
    assert spy.results == [None, None]


def _bfloat16_operands(n, k, m, trans_a, trans_b, seed=0):
    return tuple(x.astype(ml_dtypes.bfloat16)
                 for x in _operands(n, k, m, trans_a, trans_b, np.float32, seed))


@needs_entry
@pytest.mark.parametrize("n,k,m", SHAPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True),
                                             (True, True)])
@pytest.mark.parametrize("bfloat16", [False, True])
def test_entry_on_bfloat16_operands_is_the_cffi_paths_bit_for_bit(n, k, m, trans_a, trans_b,
                                                                  bfloat16):
    """Into a new bfloat16 result, a bfloat16 out or a float32 out (the sums), whatever the
    precision flag; transposed views with the other flag too."""
    a, b = _bfloat16_operands(n, k, m, trans_a, trans_b, seed=3)
    rounded = _cffi_product(a, b, trans_a, trans_b)
    sums = _cffi_product(a, b, trans_a, trans_b, dtype=np.float32)
    got = ENTRY(a, b, trans_a, trans_b, None, bfloat16)
    assert type(got) is np.ndarray and got.dtype == ml_dtypes.bfloat16 and got.shape == (n, m)
    np.testing.assert_array_equal(got.view(np.uint16), rounded.view(np.uint16))
    for dtype, expected in ((ml_dtypes.bfloat16, rounded), (np.float32, sums)):
        out = np.full((n, m), np.nan, dtype)
        assert ENTRY(a.T, b.T, int(not trans_a), int(not trans_b), out, bfloat16) is out
        np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8))
    reference = ((a.T if trans_a else a).astype(np.float64)
                 @ (b.T if trans_b else b).astype(np.float64))
    np.testing.assert_allclose(sums, reference, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@needs_entry
def test_ops_matmul_takes_the_entry_for_bfloat16_operands(spy):
    a, b = _bfloat16_operands(6, 70, 9, False, True, seed=4)
    with fastnn.use_backend("c"):
        got = ops.matmul(a, b, False, True)
        sums = ops.matmul(a, b, False, True, out=np.empty((6, 9), np.float32),
                          precision="float32")
    assert len(spy.results) == 2 and spy.results[0] is got and spy.results[1] is sums
    np.testing.assert_array_equal(got.view(np.uint16),
                                  _cffi_product(a, b, False, True).view(np.uint16))


@needs_entry
@pytest.mark.parametrize("backend_name", [name for name in BACKENDS if name != "c"])
def test_other_backends_never_reach_the_entry(spy, backend_name):
    a, b = _operands(3, 4, 5, False, False, np.float64)
    with fastnn.use_backend(backend_name):
        got = ops.matmul(a, b)
    assert spy.results == []
    np.testing.assert_allclose(got, a @ b, rtol=1e-12)


@needs_entry
def test_a_backend_switch_in_a_thread_is_honoured(spy):
    """use_backend is per thread: a thread on "numpy" skips the entry, this one takes it."""
    a, b = _operands(3, 4, 5, False, False, np.float32)
    seen = []

    def other():
        with fastnn.use_backend("numpy"):
            seen.append(len(spy.results))
            ops.matmul(a, b)
            seen.append(len(spy.results))

    with fastnn.use_backend("c"):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        ops.matmul(a, b)
    assert seen == [0, 0] and len(spy.results) == 1


@needs_entry
def test_entry_from_many_threads_gives_the_same_products():
    a, b = _operands(64, 200, 96, False, True, np.float32)
    expected = _cffi_product(a, b, False, True)
    failures = []

    def work():
        for _ in range(20):
            if not np.array_equal(ENTRY(a, b, False, True, None, False), expected):
                failures.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


@needs_entry
def test_entry_arguments_are_checked():
    with pytest.raises(TypeError, match="6 arguments"):
        ENTRY(A, B, False, False, None)
    for flag in (None, 1.0, "bfloat16"):  # not a bool or an int: not plain
        assert ENTRY(A, B, False, False, None, flag) is None
    from fastnn._c import _fastcall
    with pytest.raises(TypeError, match="5 arguments"):
        _fastcall.bind(1, 1)
    with pytest.raises(ValueError, match="address is 0"):
        _fastcall.bind(1, 1, 0, 1, 1)
    with pytest.raises(TypeError):
        _fastcall.bind("a", 1, 1, 1, 1)


def test_the_entry_is_built_where_backend_c_is_required():
    """CI and sanitize.sh require backend "c" (FASTNN_REQUIRE_BACKENDS): its call entry must
    have built and loaded too, or the tests above would silently skip."""
    if "c" not in (environment.backend_list("FASTNN_REQUIRE_BACKENDS") or []):
        pytest.skip("FASTNN_REQUIRE_BACKENDS does not require backend c here")
    assert ENTRY is not None, c_backend.FASTCALL_UNAVAILABLE


def test_ops_matmul_without_the_entry_gives_the_same_bits(no_entry):
    a, b = _operands(7, 33, 9, True, False, np.float32)
    with fastnn.use_backend("c"):
        got = ops.matmul(a, b, True, False)
    np.testing.assert_array_equal(got, _cffi_product(a, b, True, False))


MISSING = """
import sys
sys.modules["fastnn._c._fastcall"] = None  # the extension is missing: import fails
import numpy as np
import fastnn
from fastnn import ops
from fastnn.backends import c_backend
assert c_backend.matmul_entry is None
assert c_backend.FASTCALL_UNAVAILABLE, "no reason given"
print([line for line in c_backend.isa_report() if "call entry" in line][0])
a = np.arange(12, dtype=np.float32).reshape(3, 4)
with fastnn.use_backend("c"):
    got = ops.matmul(a, a.T.copy())
    try:
        ops.matmul(a, a)
    except ValueError as error:
        print("error:", error)
print(np.array_equal(got, a.astype(np.float64) @ a.T))
"""


def test_fastnn_works_when_the_extension_is_missing():
    result = subprocess.run([sys.executable, "-c", MISSING], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "FASTNN_BACKEND": "c"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("  matmul call entry: cffi only ("), lines
    assert lines[1].startswith("error: b: inner dimension 3"), lines
    assert lines[2] == "True", lines


SCRATCH = """
import numpy as np
from fastnn.backends import c_backend
big, small = np.ones((600, 600), np.float32), np.ones((4, 4), np.float32)
print(c_backend.matmul_entry(big, big, False, False, None, False))
print(c_backend.matmul_entry(small, small, False, False, None, False)[0, 0])
"""


@needs_entry
def test_entry_returns_none_when_the_kernel_cannot_get_scratch_memory():
    """The Python path then runs the kernel again and raises its MemoryError
    (tests/test_robustness.py checks that message through ops.matmul)."""
    result = subprocess.run([sys.executable, "-c", SCRATCH], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "FASTNN_SCRATCH_LIMIT": "65536"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None", "4.0"], result.stdout
