"""benchmarks/training_targets.py (issue 14's training targets in alternating rounds): its
round order, its paired ratios and its verdicts on made-up times, and one quick run of the
script itself so that it does not rot. Speed itself is not asserted here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "training_targets.py"


@pytest.fixture(scope="module")
def targets():
    spec = importlib.util.spec_from_file_location("training_targets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_round_rotates_the_order_and_times_every_implementation(targets):
    calls = []
    epochs = {name: (lambda name=name: calls.append(name) or 0.0) for name in "abc"}
    times = targets.alternate(epochs, rounds=3, settle=0.0)
    assert calls[:3] == ["a", "b", "c"]  # the untimed first epochs
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_ratios_pair_the_epochs_of_one_round(targets):
    # a slow spell in round 2 meets both sides: the paired ratios stay 4, 4, 4
    times = {"plain-numpy": [4.0, 40.0, 4.0], "c": [1.0, 10.0, 1.0]}
    assert targets.paired(times, "plain-numpy", "c") == [4.0, 4.0, 4.0]
    assert targets.paired(times, "torch", "c") is None


def test_the_report_says_met_or_not_met_against_each_target(targets):
    measured = {
        "tabular b32": {"c": [1.0, 1.0, 1.0], "numba": [1.6, 1.6, 1.4],
                        "numpy": [3.0, 3.0, 3.0], "plain-numpy": [3.9, 4.1, 4.2],
                        "torch": [25.0, 19.0, 21.0]},
        "mnist b128": {"c": [1.0, 1.0, 1.0], "plain-numpy": [1.5, 1.7, 1.6]},
    }
    lines = "\n".join(targets.report(measured))
    assert "c at least 4x plain NumPy" in lines
    verdicts = {line.split("  ")[0]: line.rsplit("  ", 1)[1]
                for line in lines.splitlines() if line.endswith("met")}
    assert verdicts["tabular batch 32: c at least 4x plain NumPy"] == "met"  # median 4.1
    assert verdicts["tabular batch 32: c at least 20x PyTorch"] == "met"  # median 21
    assert verdicts["tabular batch 32: numba within 1.5x of c"] == "NOT met"  # median 1.6
    assert verdicts["MNIST-shaped batch 128: c at least 2x plain NumPy"] == "NOT met"
    assert verdicts["tabular b32: numba faster than the numpy backend"] == "met"
    assert "x 1.60 (rounds x1.40-x1.60)" in lines  # numba / c shown as numba's slowdown
    assert "MNIST-shaped batch 32" not in lines  # not measured: no verdict


def test_a_quick_run_prints_every_measured_target():
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--only", "tabular,xor"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tabular b32" in out and "xor" in out
    if "c" in fastnn.available_backends():
        assert "tabular batch 32: c at least 4x plain NumPy" in out
        assert "XOR 2-8-2 batch 4: c at most 1 us a step" in out
    assert "mnist" not in out


@pytest.mark.parametrize("args, message", [(["--rounds", "0"], "--rounds"),
                                           (["--only", "mnist,cifar"], "--only")])
def test_a_bad_argument_is_a_one_line_error(args, message):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"training_targets.py: error: {message}")
    assert "Traceback" not in result.stderr
