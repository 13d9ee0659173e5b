"""Operands and outputs that end where memory ends (the last page of a mapping, followed by a
page nobody may read), or start right after such a page: every backend's GEMM and dense layer
reads and writes only their elements. A kernel that loads a whole vector past a row's last
number, or a row past the last one, would stop the test process with a segfault (a failure);
with its loads masked it would be right, and these tests check that the numbers are those of
the same call on operands placed in ordinary memory, bit for bit.

(Masked loads whose masked-off lanes or whole addresses fall on such pages do not fault, but
AMD Zen 5 runs each as a slow assist: the bfloat16 packing of B no longer loads the rows past
K at all, amx_gemm.c's pairs_of. That is speed, measured by the benchmarks, not tested here.)
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import ml_dtypes  # in the dev extra
import numpy as np
import pytest

import fastnn
from fastnn import ops

from conftest import BACKENDS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="mprotect through ctypes: Linux")

PAGE = mmap.PAGESIZE
# no access after the array: more than 16 rows of the widest B below (16 x 4096 bytes), so a
# row past K read on the last k-block would land in it
AFTER = 256 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _guarded(x: np.ndarray, end: bool) -> np.ndarray:
    """A copy of x (C order) that ends at the end of a page followed by AFTER bytes of no
    access (end) or starts at a page preceded by one page of no access (not end)."""
    body = -(-max(x.nbytes, 1) // PAGE) * PAGE
    mapping = mmap.mmap(-1, PAGE + body + AFTER)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    for start, size in ((base, PAGE), (base + PAGE + body, AFTER)):
        if _libc.mprotect(start, size, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")
    offset = PAGE + (body - x.nbytes if end else 0)
    # the array keeps the mapping alive (it holds the buffer); freed with the array
    placed = np.frombuffer(mapping, np.uint8, x.nbytes, offset).view(x.dtype).reshape(x.shape)
    placed[...] = x
    return placed


# (M, K, N): K of 16 and other K not a multiple of 32 (the bfloat16 kernels' last k-block
# holds rows past K), one row, narrow outputs, edges of every vector width, a B of long rows
SHAPES = [(1, 16, 1024), (64, 16, 2048), (33, 47, 130), (200, 300, 7), (1, 1000, 17),
          (100, 17, 64), (31, 784, 33), (8, 1000, 33), (130, 64, 96)]
# bfloat16: float32 operands in bfloat16 precision, a float32 result; bfloat16_out: the same
# operands, a bfloat16 result (as autocast returns)
KINDS = ["float64", "float32", "bfloat16", "bfloat16_out", "bfloat16_operands"]


def _operands(rng, kind, shape, trans_a, trans_b):
    m, k, n = shape
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    if kind == "float64":
        return a, b
    a, b = a.astype(np.float32), b.astype(np.float32)
    if kind == "bfloat16_operands":
        return a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)
    return a, b


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("end", [True, False], ids=["ending-at-a-guard", "after-a-guard"])
def test_matmul_reads_and_writes_only_its_arrays(backend_name, kind, end):
    rng = np.random.default_rng(41)
    precision = "bfloat16" if kind in ("bfloat16", "bfloat16_out") else None
    with fastnn.use_backend(backend_name):
        for shape in SHAPES:
            for trans_a in (False, True):
                for trans_b in (False, True):
                    a, b = _operands(rng, kind, shape, trans_a, trans_b)
                    result = (np.empty((shape[0], shape[2]), ml_dtypes.bfloat16)
                              if kind == "bfloat16_out" else None)
                    want = ops.matmul(a, b, trans_a, trans_b, out=result, precision=precision)
                    out = _guarded(np.full(want.shape, 7, want.dtype), end)
                    got = ops.matmul(_guarded(a, end), _guarded(b, end), trans_a, trans_b,
                                     out=out, precision=precision)
                    assert got is out
                    np.testing.assert_array_equal(
                        got.view(np.uint8), want.view(np.uint8),
                        err_msg=f"{shape} trans_a={trans_a} trans_b={trans_b}")


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("end", [True, False], ids=["ending-at-a-guard", "after-a-guard"])
def test_dense_layer_reads_and_writes_only_its_arrays(backend_name, precision, end):
    rng = np.random.default_rng(42)
    with fastnn.use_backend(backend_name):
        for m, k, n in SHAPES:
            x = rng.standard_normal((m, k)).astype(np.float32)
            w = rng.standard_normal((k, n)).astype(np.float32)
            bias = rng.standard_normal(n).astype(np.float32)
            dy = rng.standard_normal((m, n)).astype(np.float32)
            y = ops.linear_forward(x, w, bias, "relu", precision=precision)
            grads = ops.linear_backward(x, w, y, dy, "relu", precision=precision)
            gx, gw, gb = (_guarded(v, end) for v in (x, w, bias))
            got_y = ops.linear_forward(gx, gw, gb, "relu", precision=precision,
                                       out=_guarded(np.zeros_like(y), end))
            np.testing.assert_array_equal(got_y, y, err_msg=str((m, k, n)))
            outs = [_guarded(np.zeros_like(v), end) for v in grads]
            got = ops.linear_backward(gx, gw, _guarded(y, end), _guarded(dy, end), "relu",
                                      dx=outs[0], dw=outs[1], db=outs[2],
                                      precision=precision)
            for name, g, want in zip(("dx", "dw", "db"), got, grads):
                np.testing.assert_array_equal(g, want, err_msg=f"{name} {(m, k, n)}")
