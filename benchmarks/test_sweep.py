"""The GEMM sweep of issue 20 as pytest-benchmark groups: one group per shape, rows c and numpy.

The grid is fastnn.bench_sweep's quick subset (M in {1, 8, 32, 128, 256, 1024}, K and N in
{16, 256, 2048}, the transposes nn, tn, nt of training, float32); the full grid, float64
and the worst-ratio / geometric-mean summary are ``fastnn bench --sweep`` (or ``python -m
fastnn.bench_sweep``). Deselect with ``-k "not sweep"``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_sweep.py \\
        --benchmark-group-by=group
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn import ops
from fastnn.bench_sweep import QUICK_KN, QUICK_M, QUICK_TRANSPOSES, operands, shapes

SWEEP = shapes(QUICK_M, QUICK_KN, QUICK_KN, QUICK_TRANSPOSES)


@pytest.mark.parametrize("implementation", ["c", "numpy"], indirect=True)
@pytest.mark.parametrize("m,k,n,transposes", SWEEP,
                         ids=[f"{t}-{m}x{k}x{n}" for m, k, n, t in SWEEP])
def test_gemm_sweep(benchmark, implementation, m, k, n, transposes):
    """ops.matmul on the c backend against NumPy's ``@`` (the numpy backend's matmul is
    NumPy's own product)."""
    benchmark.group = f"gemm sweep {transposes} {m}x{k}x{n}"
    a, b = operands(m, k, n, transposes, np.float32)
    trans_a, trans_b = transposes[0] == "t", transposes[1] == "t"
    out = np.empty((m, n), np.float32)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    call = lambda: ops.matmul(a, b, trans_a, trans_b, out=out)  # noqa: E731
    np.testing.assert_allclose(call(), expected, rtol=1e-3, atol=1e-3 * np.sqrt(k))
    result = benchmark(call)
    benchmark.extra_info["implementation"] = implementation
    stats = getattr(benchmark, "stats", None)
    if stats and stats.stats.median:
        benchmark.extra_info["GFLOP/s"] = 2.0 * m * k * n / stats.stats.median / 1e9
    assert result is out
