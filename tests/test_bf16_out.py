"""ops.matmul of float32 operands in bfloat16 precision into a bfloat16 ``out``
(ml_dtypes.bfloat16), what ``torch.mm`` returns under ``torch.autocast("cpu",
dtype=torch.bfloat16)``: on every backend the float32 result of the same call rounded to
bfloat16 (so the bits of bfloat16 operands too), within the float64 oracle's bound, and the
argument checks of the public boundary."""

from __future__ import annotations

import ml_dtypes  # in the dev extra
import numpy as np
import pytest

import fastnn
from fastnn import ops

from conftest import BACKENDS
from test_bf16_operands import SHAPES, _bfloat16, _half, _thread_counts
from test_bf16_operands import _float32_operands as _operands  # the kernels round them


def _bfloat16_out(shape):
    return np.full(shape, 7, ml_dtypes.bfloat16)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_a_bfloat16_out_holds_the_float32_result_rounded(backend_name, trans_a, trans_b):
    rng = np.random.default_rng(31)
    with fastnn.use_backend(backend_name):
        for _ in _thread_counts(backend_name):
            for shape in SHAPES:
                n, k, m = shape
                a, b = _operands(rng, shape, trans_a, trans_b)
                sums = ops.matmul(a, b, trans_a, trans_b, precision="bfloat16")
                out = _bfloat16_out((n, m))
                assert ops.matmul(a, b, trans_a, trans_b, out=out, precision="bfloat16") is out
                want = _bfloat16(ops.round_bfloat16(sums))
                np.testing.assert_array_equal(_half(out), _half(want), err_msg=str(shape))
                # the bits of the same numbers given as bfloat16 operands
                ha = _bfloat16(ops.round_bfloat16(a))
                hb = _bfloat16(ops.round_bfloat16(b))
                np.testing.assert_array_equal(_half(ops.matmul(ha, hb, trans_a, trans_b)),
                                              _half(out), err_msg=str(shape))
                # the float64 oracle: products of the rounded operands, float32 sums within
                # 2e-5 sum_k |a||b| (as fastnn bench --sweep), then half a bfloat16 ulp; the
                # rows of subnormals may sum to 0 (VDPBF16PS and AMX flush them): k x 1.2e-38
                # x max |b| at most, below 1e-33 here
                ra = ops.round_bfloat16(a).astype(np.float64)
                rb = ops.round_bfloat16(b).astype(np.float64)
                op_a, op_b = (ra.T if trans_a else ra), (rb.T if trans_b else rb)
                exact = op_a @ op_b
                bound = 2e-5 * (np.abs(op_a) @ np.abs(op_b)) + np.abs(exact) * 2.0 ** -8
                got = out.astype(np.float64)
                assert (np.abs(got - exact) <= bound + 1e-33).all(), shape


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_the_context_precision_views_overlap_and_nan(backend_name):
    """The bfloat16 precision of the context applies as an explicit one does; a transposed
    view is read through the other flag; an out that overlaps an operand is computed aside;
    a NaN reaches only its row."""
    rng = np.random.default_rng(32)
    a, b = _operands(rng, (70, 300, 90), 0, 0)
    with fastnn.use_backend(backend_name):
        want = _half(_bfloat16(ops.round_bfloat16(ops.matmul(a, b, precision="bfloat16"))))
        with fastnn.matmul_precision("bfloat16"):
            np.testing.assert_array_equal(_half(ops.matmul(a, b, out=_bfloat16_out((70, 90)))),
                                          want)
        bt = np.ascontiguousarray(b.T)
        viewed = ops.matmul(a, bt.T, out=_bfloat16_out((70, 90)), precision="bfloat16")
        np.testing.assert_array_equal(
            _half(viewed),
            _half(_bfloat16(ops.round_bfloat16(ops.matmul(a, bt.T, precision="bfloat16")))))
        # out's bytes are the first bytes of a: the product is computed aside
        buffer = np.zeros(70 * 300, np.float32)
        shared_a = buffer.reshape(70, 300)
        shared_a[...] = a
        overlapping = buffer.view(ml_dtypes.bfloat16)[:70 * 90].reshape(70, 90)
        ops.matmul(shared_a, b, out=overlapping, precision="bfloat16")
        np.testing.assert_array_equal(_half(overlapping), want)
        dirty = a.copy()
        dirty[17, 150] = np.nan
        got = ops.matmul(dirty, b, out=_bfloat16_out((70, 90)), precision="bfloat16")
        assert np.isnan(got[17].astype(np.float32)).all()
        others = np.arange(70) != 17
        np.testing.assert_array_equal(_half(got[others]), want[others])


def test_bad_bfloat16_outs_raise_naming_the_argument():
    f = np.ones((4, 5), np.float32)
    out = np.empty((4, 4), ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match="out: a bfloat16 out needs float32 operands in "
                                        "bfloat16 precision, got float32 operands in float32"):
        ops.matmul(f, f.T, out=out, precision="float32")
    with fastnn.matmul_precision("float32"):
        with pytest.raises(TypeError, match="out: a bfloat16 out needs"):
            ops.matmul(f, f.T, out=out)
    with pytest.raises(TypeError, match="got float64 operands in float32 precision"):
        ops.matmul(f.astype(np.float64), f.T.astype(np.float64), out=out)
    with pytest.raises(ValueError, match="precision"):
        ops.matmul(f.astype(np.float64), f.T.astype(np.float64), out=out, precision="bfloat16")
    with pytest.raises(ValueError, match="out: expected shape"):
        ops.matmul(f, f.T, out=np.empty((5, 4), ml_dtypes.bfloat16), precision="bfloat16")
    with pytest.raises(ValueError, match="out"):
        ops.matmul(f, f.T, out=np.empty((4, 8), ml_dtypes.bfloat16)[:, ::2],
                   precision="bfloat16")
    # an empty sum: zeros, in bfloat16
    empty = ops.matmul(np.ones((3, 0), np.float32), np.ones((0, 2), np.float32),
                       out=_bfloat16_out((3, 2)), precision="bfloat16")
    np.testing.assert_array_equal(empty.astype(np.float32), np.zeros((3, 2), np.float32))
