"""The GEMM sweep's plumbing (fastnn.bench_sweep and ``fastnn bench --sweep``): rows, summary,
options. Its figures are benchmarks, not tests."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import fastnn
from fastnn import bench_sweep, cli, ops


def test_grid_holds_the_issue_shapes():
    grid = bench_sweep.shapes(bench_sweep.M_VALUES, bench_sweep.KN_VALUES,
                              bench_sweep.KN_VALUES, bench_sweep.TRANSPOSES)
    assert len(grid) == 8 * 5 * 5 * 4
    assert (128, 4096, 4096, "nn") in grid and (1, 16, 16, "tt") in grid
    sizes = [m * k * n for m, k, n, _ in grid]
    assert sizes == sorted(sizes)  # smallest first, so a time budget keeps the small ones


@pytest.mark.skipif("c" not in fastnn.available_backends(), reason="needs the C backend")
def test_run_measures_checks_and_summarises(capsys):
    rows = bench_sweep.run(ms=(1, 9), ks=(16,), ns=(33,), transposes=("nt",),
                           dtypes=("float64",), threads=1, progress=None)
    assert [(r["m"], r["k"], r["n"], r["transposes"], r["dtype"]) for r in rows] == [
        (1, 16, 33, "nt", "float64"), (9, 16, 33, "nt", "float64")]
    for row in rows:
        assert row["fastnn_s"] > 0 and row["rival_s"] > 0
        assert math.isclose(row["ratio"], row["rival_s"] / row["fastnn_s"])
    summary = bench_sweep.summary(rows)
    assert summary["shapes"] == 2 and summary["worst"] == min(r["ratio"] for r in rows)
    assert "geometric mean" in bench_sweep.format_summary(rows)


def test_a_spent_budget_stops_the_sweep():
    assert bench_sweep.run(ms=(1,), ks=(16,), ns=(16,), transposes=("nn",),
                           dtypes=("float32",), budget_seconds=-1.0, progress=None) == []


@pytest.mark.parametrize("option,value", [("--transposes", "nx"), ("--dtypes", "float16"),
                                          ("--ms", "0"), ("--ks", "8,x"), ("--ns", "16,16")])
def test_cli_rejects_unknown_sweep_options(option, value, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["bench", "--sweep", "--quick", option, value])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert option in error and repr(value) in error and error.count("\n") == 1


def test_slices_of_the_grid_are_measured_alone(capsys):
    """--ms, --ks and --ns pick the values of M, K and N to sweep."""
    args = cli.build_parser().parse_args(
        ["bench", "--sweep", "--ms", "2,3", "--ks", "5", "--ns", "7", "--transposes", "tn",
         "--dtypes", "float64", "--sweep-threads", "1", "--sweep-backend", "numpy"])
    rows = bench_sweep.run_from_args(args)
    assert [(r["m"], r["k"], r["n"], r["transposes"], r["dtype"], r["result_dtype"])
            for r in rows] == [(2, 5, 7, "tn", "float64", "float64"),
                               (3, 5, 7, "tn", "float64", "float64")]
    assert "2 shapes" in capsys.readouterr().out


@pytest.mark.skipif("c" not in fastnn.available_backends(), reason="needs the C backend")
def test_the_bfloat16_sweep_measures_against_torch_and_checks_each_product(capsys):
    """--dtypes bfloat16: fastnn's bfloat16 matmul precision against torch.mm under autocast on
    the float32 tensors; bfloat16_operands against torch.mm on bfloat16 tensors; each product
    checked against the float64 product of the rounded operands."""
    pytest.importorskip("torch")  # CI installs it (.ci/run)
    args = cli.build_parser().parse_args(
        ["bench", "--sweep", "--ms", "3,40", "--ks", "24", "--ns", "17", "--transposes", "nt",
         "--dtypes", "bfloat16,bfloat16_operands", "--sweep-threads", "1"])
    rows = bench_sweep.run_from_args(args)
    assert [(r["m"], r["dtype"], r["rival"]) for r in rows] == [
        (3, "bfloat16", "autocast"), (40, "bfloat16", "autocast"),
        (3, "bfloat16_operands", "torch"), (40, "bfloat16_operands", "torch")]
    # both write a bfloat16 result, as torch.mm returns under autocast and on bfloat16 tensors
    assert {r["result_dtype"] for r in rows} == {"bfloat16"}
    for row in rows:
        assert math.isclose(row["ratio"], row["rival_s"] / row["fastnn_s"])
    assert ("PyTorch autocast bfloat16 or PyTorch bfloat16 time / fastnn time"
            in capsys.readouterr().out)


def test_the_bfloat16_sweep_says_when_torch_runs_under_fastnns_short_wait(monkeypatch, capsys):
    """PyTorch shares the process's libgomp: under the wait fastnn set, the bfloat16 sweep says
    so and how to time both under libgomp's default; under a wait the user set, nothing."""
    pytest.importorskip("torch")
    from fastnn.backends import runtime
    argv = ["bench", "--sweep", "--ms", "2", "--ks", "8", "--ns", "3", "--transposes", "nn",
            "--dtypes", "bfloat16", "--sweep-threads", "1"]
    for set_by_fastnn in (True, False):
        monkeypatch.setattr(runtime, "WAIT_POLICY_SET_BY_FASTNN", set_by_fastnn)
        bench_sweep.run_from_args(cli.build_parser().parse_args(argv))
        out = capsys.readouterr().out
        assert ("GOMP_SPINCOUNT=300000" in out) == set_by_fastnn
    monkeypatch.setattr(runtime, "WAIT_POLICY_SET_BY_FASTNN", True)
    bench_sweep.run_from_args(cli.build_parser().parse_args(argv[:-4] + ["--dtypes", "float32"]))
    assert "GOMP_SPINCOUNT" not in capsys.readouterr().out


def test_the_autocast_rival_rounds_the_float32_operands_in_every_call():
    """The bfloat16 rows' rival multiplies the float32 tensors under torch.autocast: a bfloat16
    result, the product of the rounded operands; and a change to the float32 operands after the
    rival is built shows in its next product (so the rounding is inside the timed call)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 40)).astype(np.float32), rng.standard_normal((40, 5))
    b = b.astype(np.float32)
    product = bench_sweep._torch_bfloat16(a, b, threads=1, autocast=True)
    got = product()
    assert got.dtype == torch.bfloat16
    import ml_dtypes
    bench_sweep._check(got.float().numpy().astype(ml_dtypes.bfloat16), None, a, b,
                       "bfloat16_operands", "6x40x5")
    a *= 2.0
    assert torch.equal(product(), (2.0 * got.float()).to(torch.bfloat16))
    converted_once = bench_sweep._torch_bfloat16(a, b, threads=1)
    a *= 2.0
    assert torch.equal(converted_once(), (2.0 * got.float()).to(torch.bfloat16))


def test_the_torch_rival_multiplies_a_transposed_operand_in_its_stored_layout():
    """For x.T @ dz and dz @ w.T, PyTorch gets the stored tensors as transposed views (as
    autograd passes them to torch.mm), in bfloat16 and float32 (autocast): not contiguous copies
    of the transposed operands, which would spare it the transposition fastnn does."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    stored = rng.standard_normal((40, 6)).astype(np.float32)  # (K, M): op(A) = stored.T
    for dtype in (None, torch.bfloat16):
        tensor = bench_sweep._torch_tensor(torch, stored.T, dtype)
        assert tensor.shape == (6, 40) and tensor.stride() == (1, 6)
        expected = torch.from_numpy(stored.T.copy())
        assert torch.equal(tensor, expected if dtype is None else expected.to(dtype))
    assert bench_sweep._torch_tensor(torch, stored.T).data_ptr() == stored.ctypes.data
    assert bench_sweep._torch_tensor(torch, stored, torch.bfloat16).stride() == (6, 1)


def test_the_bfloat16_check_catches_a_wrong_product():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 9)).astype(np.float32), rng.standard_normal((9, 4))
    b = b.astype(np.float32)
    good = ops.round_bfloat16(a).astype(np.float64) @ ops.round_bfloat16(b).astype(np.float64)
    bench_sweep._check(good.astype(np.float32), None, a, b, "bfloat16", "5x9x4")
    bad = good.astype(np.float32)
    bad[2, 3] += 1e-2 * abs(bad[2, 3]) + 1e-3
    with pytest.raises(AssertionError, match="5x9x4 bfloat16: wrong result"):
        bench_sweep._check(bad, None, a, b, "bfloat16", "5x9x4")


def test_the_bfloat16_check_of_a_bfloat16_result_allows_its_rounding_only():
    import ml_dtypes
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 40)).astype(np.float32), rng.standard_normal((40, 5))
    b = b.astype(np.float32)
    exact = ops.round_bfloat16(a).astype(np.float64) @ ops.round_bfloat16(b).astype(np.float64)
    rounded = exact.astype(np.float32).astype(ml_dtypes.bfloat16)
    bench_sweep._check(rounded, None, a, b, "bfloat16_operands", "6x40x5")
    bad = rounded.astype(np.float32)
    bad[1, 2] += 3e-2 * abs(bad[1, 2]) + 1e-2
    with pytest.raises(AssertionError, match="6x40x5 bfloat16_operands: wrong result"):
        bench_sweep._check(bad.astype(ml_dtypes.bfloat16), None, a, b, "bfloat16_operands",
                           "6x40x5")


def test_the_bfloat16_operands_sweep_without_ml_dtypes_says_how_to_install_it(monkeypatch):
    pytest.importorskip("torch")  # (checked first: the rival)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    with pytest.raises(ImportError, match="pip install ml_dtypes"):
        bench_sweep.measure(2, 8, 3, "nn", "bfloat16_operands", threads=1)


def test_the_bfloat16_sweep_without_torch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch"):
        bench_sweep.measure(2, 8, 3, "nn", "bfloat16", threads=1)


def test_torch_is_imported_with_its_own_openmp_wait(monkeypatch):
    """The copy of libgomp that torch brings reads GOMP_SPINCOUNT when torch loads: the sweep
    imports torch without the short spin fastnn sets for its own threads, and puts it back."""
    import importlib.abc
    import importlib.machinery
    import os
    import types

    from fastnn.backends import runtime
    seen = {}

    class FakeTorch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name != "torch":
                return None
            seen["GOMP_SPINCOUNT"] = os.environ.get("GOMP_SPINCOUNT")
            return importlib.machinery.ModuleSpec(name, self)

        def create_module(self, spec):
            return types.ModuleType(spec.name)

        def exec_module(self, module):
            pass

    real_torch = sys.modules.pop("torch", None)  # the fake one must not outlive the test
    try:
        monkeypatch.setattr(sys, "meta_path", [FakeTorch()] + sys.meta_path)
        monkeypatch.setattr(runtime, "WAIT_POLICY_SET_BY_FASTNN", True)
        monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
        torch = bench_sweep._import_torch()
        assert torch is sys.modules["torch"] and seen == {"GOMP_SPINCOUNT": None}
        assert os.environ["GOMP_SPINCOUNT"] == "10000"
        # a wait policy of the user's own is left as it is
        del sys.modules["torch"]
        monkeypatch.setattr(runtime, "WAIT_POLICY_SET_BY_FASTNN", False)
        bench_sweep._import_torch()
        assert seen == {"GOMP_SPINCOUNT": "10000"}
    finally:
        sys.modules.pop("torch", None)
        if real_torch is not None:
            sys.modules["torch"] = real_torch


def test_the_bfloat16_operands_start_on_cache_lines_as_torchs_tensors_do():
    """fastnn's bfloat16 operands in the sweep are the numbers ml_dtypes rounds to, placed on
    64-byte lines as torch places its tensors (whether the AMX kernel reads A in place
    depends on it), C-ordered and writable."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in ((33, 17), (1, 1),
                                                                            (64, 130))]
    for array, placed in zip(arrays, bench_sweep._bfloat16_arrays(*arrays)):
        assert placed.ctypes.data % 64 == 0 and placed.flags.c_contiguous
        assert placed.flags.writeable and placed.dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(placed.view(np.uint16),
                                      array.astype(ml_dtypes.bfloat16).view(np.uint16))
