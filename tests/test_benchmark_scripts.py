"""benchmarks/wide_layers.py and benchmarks/bf16_vs_torch.py run once on tiny shapes, so that
they do not rot: their rows, their ratios and their errors for a bad shape. Speed itself is not
asserted here."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

import fastnn

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def _beside_the_scripts(monkeypatch):
    """The scripts import benchmarks/bench_common.py, which sits beside them: as when they
    run (`python benchmarks/...`), their folder is on the path (for this test only)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif("c" not in fastnn.available_backends(), reason="needs the C backend")
def test_wide_layers_times_both_passes_of_each_shape_against_numpy(capsys):
    wide_layers = _load("wide_layers")
    rows = wide_layers.main(["8x16x4", "5x7x3", "--rounds", "1", "--calls", "1",
                             "--threads", "1"])
    assert [(row["shape"], row["pass"]) for row in rows] == [
        ((8, 16, 4), "forward"), ((8, 16, 4), "backward"),
        ((5, 7, 3), "forward"), ((5, 7, 3), "backward")]
    printed = capsys.readouterr().out.splitlines()[1:]
    for row, line in zip(rows, printed):
        assert row["c_s"] > 0 and row["numpy_s"] > 0
        assert row["ratio"] == row["numpy_s"] / row["c_s"]
        n, k, m = row["shape"]
        assert line.split()[:2] == [f"{n}x{k}->{m}", row["pass"]]
        assert line.split()[-1] == f"{row['ratio']:.2f}"


@pytest.mark.parametrize("shape", ["8x16", "8x0x4", "axbxc"])
def test_wide_layers_rejects_a_bad_shape_naming_it(capsys, shape):
    wide_layers = _load("wide_layers")
    with pytest.raises(SystemExit):
        wide_layers.main([shape])
    assert "argument shapes" in capsys.readouterr().err


@pytest.mark.skipif("c" not in fastnn.available_backends(), reason="needs the C backend")
def test_bf16_vs_torch_pairs_float32_operands_with_autocast_and_bfloat16_with_torch_mm(capsys):
    pytest.importorskip("torch")  # CI installs both (.ci/run)
    pytest.importorskip("ml_dtypes")
    bf16_vs_torch = _load("bf16_vs_torch")
    (row,) = bf16_vs_torch.main(["32x64x48", "--rounds", "2", "--threads", "1"])
    assert row["shape"] == (32, 64, 48)
    f32, autocast, bf16, torch_mm = row["times"]  # the order of the table's columns
    assert all(len(times) == 2 and min(times) > 0 for times in row["times"])
    assert row["f32_vs_autocast"] == statistics.median(t / o for t, o in zip(autocast, f32))
    assert row["bf16_vs_torch_mm"] == statistics.median(t / o for t, o in zip(torch_mm, bf16))
    header, line = capsys.readouterr().out.splitlines()[-2:]
    assert header.split()[5:9] == ["f32", "operands", "autocast", "bf16"]
    assert f"({row['f32_vs_autocast']:4.2f}x)" in line
    assert f"({row['bf16_vs_torch_mm']:4.2f}x)" in line
