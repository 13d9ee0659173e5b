"""fastnn bench's training rows (fastnn/bench_training.py): each backend's epoch and, in the
same run, plain NumPy's (and PyTorch's when installed), with speedups over the numpy backend;
the three implementations train the same network (their losses agree)."""

import importlib.util

import numpy as np
import pytest

from fastnn import bench, bench_training


def test_training_rows_time_the_backends_and_plain_numpy_in_one_run():
    xor = [case for case in bench_training.cases(quick=True) if "XOR" in case.shape]
    results = bench.run(["numpy"], (1,), quick=True, progress=False, selected=xor)
    names = [r["backend"] for r in results]
    expected = ["numpy", "plain-numpy"] + (["torch"] if importlib.util.find_spec("torch")
                                           else [])
    assert names == expected
    assert all(r["median_s"] > 0 and r["GFLOP/s"] > 0 for r in results)
    assert results[0]["speedup_vs_numpy"] == 1.0
    assert "plain-numpy" in bench.format_table(results)


@pytest.mark.parametrize("implementation", ["fastnn", "plain-numpy", "torch"])
def test_the_implementations_learn_the_tabular_rule(implementation):
    x, y = bench_training.tabular(4000)
    if implementation == "torch":
        pytest.importorskip("torch")
        epoch = bench_training.torch_epoch(x, y, 32, (16,), threads=1)
    elif implementation == "plain-numpy":
        epoch = bench_training.plain_numpy_epoch(x, y, 32, (16,))
    else:
        epoch = bench_training.fastnn_epoch("numpy", x, y, 32, (16,))
    losses = [epoch() for _ in range(3)]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] < np.log(2) + 0.1
