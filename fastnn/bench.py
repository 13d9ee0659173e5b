"""``fastnn bench``: time every kernel on every backend at 1 and 2 threads.

A short, self-contained run for users (the pytest-benchmark suites in
``benchmarks/`` are the thorough version): each kernel at a few shapes, every
available backend, each thread count; a table per kernel with the median
time, the rate (GFLOP/s or GB/s) and the speedup over the ``numpy`` backend
at the same thread count; the results as JSON; optionally a bar chart.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from . import ops
from .backends import available_backends, get_num_threads, set_num_threads, use_backend

F32 = np.float32

#: Shapes shared with the pytest-benchmark suites in benchmarks/.
SQUARE_GEMMS = (1024, 2048)
MLP_LINEAR_SHAPES = ((128, 784, 256), (1024, 784, 256))
XENT_SHAPES = ((65536, 10), (4096, 1000), (512, 32000))
OPTIMIZER_SIZES = (784 * 256, 4 * 1024 * 1024)


@dataclass
class Case:
    """One kernel at one shape: ``prepare()`` builds the operands and returns the call."""

    kernel: str
    shape: str
    prepare: Callable[[], Callable[[], object]]
    flops: float = 0.0
    bytes_moved: float = 0.0


def _random(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(F32)


def _in(precision):
    """The kernel name's suffix for a matmul precision (fastnn.precision)."""
    return "" if precision == "float32" else f" {precision}"


def _gemm(n, k, m, precision="float32"):
    def prepare():
        a, b, out = _random((n, k), 1), _random((k, m), 2), np.empty((n, m), F32)
        return lambda: ops.matmul(a, b, out=out, precision=precision)
    return Case("matmul" + _in(precision), f"{n}x{k}x{m}", prepare, flops=2.0 * n * k * m)


def _linear_forward(n, k, m, precision="float32"):
    def prepare():
        x, w, b = _random((n, k), 3), _random((k, m), 4, k ** -0.5), _random(m, 5)
        out = np.empty((n, m), F32)
        return lambda: ops.linear_forward(x, w, b, "relu", out=out, precision=precision)
    return Case("linear_forward relu" + _in(precision), f"{n}x{k}->{m}", prepare,
                flops=2.0 * n * k * m)


def _linear_backward(n, k, m, precision="float32"):
    def prepare():
        x, w, b = _random((n, k), 3), _random((k, m), 4, k ** -0.5), _random(m, 5)
        y, dy = ops.linear_forward(x, w, b, "relu"), _random((n, m), 6)
        dx, dw, db = np.empty((n, k), F32), np.empty((k, m), F32), np.empty(m, F32)
        return lambda: ops.linear_backward(x, w, y, dy, "relu", dx=dx, dw=dw, db=db,
                                           precision=precision)
    return Case("linear_backward relu" + _in(precision), f"{n}x{k}->{m}", prepare,
                flops=4.0 * n * k * m)


def _softmax_cross_entropy(n, c):
    def prepare():
        logits, grad = _random((n, c), 7, 3.0), np.empty((n, c), F32)
        labels = np.random.default_rng(8).integers(0, c, n)
        return lambda: ops.softmax_cross_entropy(logits, labels, grad=grad)
    return Case("softmax_cross_entropy", f"{n}x{c}", prepare, bytes_moved=8.0 * n * c)


def _sgd(size):
    def prepare():
        param, grad, velocity = _random(size, 9), _random(size, 10), np.zeros(size, F32)
        return lambda: ops.sgd_step(param, grad, velocity, lr=1e-9, momentum=0.9)
    return Case("sgd_step momentum", str(size), prepare, bytes_moved=20.0 * size)


def _adam(size):
    def prepare():
        param, grad = _random(size, 11), _random(size, 12)
        m, v = np.zeros(size, F32), np.zeros(size, F32)
        return lambda: ops.adam_step(param, grad, m, v, 1, lr=1e-9)
    return Case("adam_step", str(size), prepare, bytes_moved=28.0 * size)


def cases(quick: bool = False) -> List[Case]:
    """The kernels and shapes of a run; ``quick`` keeps the smaller shape of each."""
    first = (lambda shapes: shapes[:1]) if quick else (lambda shapes: shapes)
    return ([_gemm(s, s, s) for s in first(SQUARE_GEMMS)]
            + [_linear_forward(*s) for s in first(MLP_LINEAR_SHAPES)]
            + [_linear_backward(*s) for s in first(MLP_LINEAR_SHAPES)]
            # bfloat16 matmul precision (fastnn.precision)
            + [_gemm(s, s, s, "bfloat16") for s in first(SQUARE_GEMMS)]
            + [_linear_forward(*s, "bfloat16") for s in first(MLP_LINEAR_SHAPES)]
            + [_linear_backward(*s, "bfloat16") for s in first(MLP_LINEAR_SHAPES)]
            + [_softmax_cross_entropy(*s) for s in first(XENT_SHAPES)]
            + [_sgd(s) for s in first(OPTIMIZER_SIZES)]
            + [_adam(s) for s in first(OPTIMIZER_SIZES)])


def median_seconds(call: Callable[[], object], min_time: float, max_repeats: int = 200) -> float:
    """Median wall time of ``call`` after one warm-up call (compiles, faults pages in)."""
    call()
    times: List[float] = []
    started = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < min_time
                             and len(times) < max_repeats):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


def run(backends: Optional[List[str]] = None, threads=(1, 2), quick: bool = False,
        progress: bool = True) -> List[Dict]:
    """Time every case; one result dict per (case, backend, thread count)."""
    from tqdm import tqdm

    backends = backends or available_backends()
    if "numpy" not in backends:
        backends = ["numpy"] + list(backends)  # the reference of every speedup
    all_cases = cases(quick)
    results: List[Dict] = []
    saved_threads = max(get_num_threads().values(), default=None)
    bar = tqdm(total=len(all_cases) * len(backends) * len(threads), disable=not progress,
               desc="fastnn bench", unit="run")
    try:
        for case in all_cases:
            for count in threads:
                set_num_threads(count)
                for name in backends:
                    bar.set_postfix_str(f"{case.kernel} {case.shape} {name} x{count}")
                    with use_backend(name):
                        seconds = median_seconds(case.prepare(), 0.1 if quick else 0.4)
                    results.append({
                        "kernel": case.kernel, "shape": case.shape, "backend": name,
                        "threads": count, "median_s": seconds,
                        "GFLOP/s": case.flops / seconds / 1e9 if case.flops else None,
                        "GB/s": case.bytes_moved / seconds / 1e9 if case.bytes_moved else None,
                    })
                    bar.update()
    finally:
        bar.close()
        if saved_threads:
            set_num_threads(saved_threads)
    _add_speedups(results)
    return results


def _add_speedups(results: List[Dict]) -> None:
    reference = {(r["kernel"], r["shape"], r["threads"]): r["median_s"]
                 for r in results if r["backend"] == "numpy"}
    for r in results:
        r["speedup_vs_numpy"] = reference[(r["kernel"], r["shape"], r["threads"])] / r["median_s"]


def format_table(results: List[Dict]) -> str:
    """A table per kernel and shape: backend, threads, time, rate, speedup over numpy."""
    lines: List[str] = []
    key = None
    for r in results:
        if (r["kernel"], r["shape"]) != key:
            key = (r["kernel"], r["shape"])
            lines += ["", f"{r['kernel']}  {r['shape']}",
                      f"  {'backend':<8}{'threads':>8}{'median':>12}{'rate':>16}{'vs numpy':>10}"]
        rate = (f"{r['GFLOP/s']:.1f} GFLOP/s" if r["GFLOP/s"] is not None
                else f"{r['GB/s']:.1f} GB/s")
        lines.append(f"  {r['backend']:<8}{r['threads']:>8}{r['median_s'] * 1e3:>10.3f}ms"
                     f"{rate:>16}{r['speedup_vs_numpy']:>9.2f}x")
    return "\n".join(lines)


def write_json(results: List[Dict], path: str) -> None:
    import fastnn
    document = {"fastnn": fastnn.__version__, "machine": platform.machine(),
                "processor": platform.processor(), "date": time.strftime("%Y-%m-%d"),
                "results": results}
    with open(path, "w") as stream:
        json.dump(document, stream, indent=1)


def plot_speedups(results: List[Dict], path: str) -> None:
    """A bar chart of every backend's speedup over numpy, per kernel and thread count."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install 'fastnn[plot]' ({exc})")
    labels = sorted({(r["kernel"], r["shape"]) for r in results},
                    key=[(r["kernel"], r["shape"]) for r in results].index)
    series = sorted({(r["backend"], r["threads"]) for r in results if r["backend"] != "numpy"})
    speedup = {(r["kernel"], r["shape"], r["backend"], r["threads"]): r["speedup_vs_numpy"]
               for r in results}
    width = 0.8 / max(len(series), 1)
    figure, axes = plt.subplots(figsize=(max(8, len(labels) * 1.2), 5))
    positions = np.arange(len(labels))
    for i, (backend, count) in enumerate(series):
        axes.bar(positions + i * width, [speedup[(k, s, backend, count)] for k, s in labels],
                 width, label=f"{backend}, {count} thread{'s' * (count > 1)}")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(positions + width * (len(series) - 1) / 2)
    axes.set_xticklabels([f"{k}\n{s}" for k, s in labels], fontsize=7)
    axes.set_yscale("log")  # speedups span 0.5x to 20x; a linear axis flattens the small ones
    axes.set_ylabel("speedup over numpy (x, log scale)")
    axes.set_title("fastnn kernels: speedup over the NumPy reference")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
