"""``fastnn bench``: time every kernel on every backend at 1 and 2 threads.

A short, self-contained run for users (the pytest-benchmark suites in
``benchmarks/`` are the thorough version): each kernel at a few shapes, every
available backend, each thread count; a table per kernel with the median
time, its spread (the interquartile range, IQR, as a share of the median),
the rate (GFLOP/s or GB/s) and the speedup over the ``numpy`` backend at the
same thread count; the results as JSON with ``--json PATH``; a chart with
``--plot FILE``. The training rows (``train epoch``, fastnn/bench_training.py) time
whole epochs through ``Sequential.fit`` and, in the same run, the same training in
plain NumPy (``plain-numpy``) and PyTorch eager (``torch``, when installed).

A row whose IQR exceeds ``BUSY_SPREAD`` of its median is marked: the machine
was busy (other processes took the cores) and its figures are unsure. So is a
row with more threads that is over ``STALL_FACTOR`` times slower than the same
backend's row with the fewest threads: every call waited for a busy core (on
an oversubscribed machine a parallel region's barrier waits out the
scheduler's time slice, some 30 ms, in every call, so the spread stays small).

The run is a list of :class:`Case` from :func:`cases` measured by :func:`run`;
another set of cases (a GEMM shape sweep, say) is another function returning
cases, and per-call settings belong in a case's ``prepare``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from . import bench_training, ops
from .backends import available_backends, get_num_threads, set_num_threads, use_backend
from .files import atomic_write, write_text

F32 = np.float32

#: Shapes shared with the pytest-benchmark suites in benchmarks/.
SQUARE_GEMMS = (1024, 2048)
MLP_LINEAR_SHAPES = ((128, 784, 256), (1024, 784, 256))
XENT_SHAPES = ((65536, 10), (4096, 1000), (512, 32000))
OPTIMIZER_SIZES = (784 * 256, 4 * 1024 * 1024)


@dataclass
class Case:
    """One kernel at one shape: ``prepare()`` builds the operands and returns the call.
    ``others``: rows besides the backends' (plain NumPy, PyTorch), by name: a function of the
    thread count that returns the call."""

    kernel: str
    shape: str
    prepare: Callable[[], Callable[[], object]]
    flops: float = 0.0
    bytes_moved: float = 0.0
    others: Dict[str, Callable[[int], Callable[[], object]]] = field(default_factory=dict)


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
            + [_adam(s) for s in first(OPTIMIZER_SIZES)]
            # whole training epochs, against plain NumPy and PyTorch (fastnn/bench_training.py)
            + bench_training.cases(quick))


#: A row whose interquartile range exceeds this share of its median is marked busy.
BUSY_SPREAD = 0.2
#: A row with more threads this many times slower than with the fewest is marked busy.
STALL_FACTOR = 3.0
#: Fewest timed calls per row: quartiles of fewer say little.
MIN_REPEATS = 5


def timings(call: Callable[[], object], min_time: float,
            max_repeats: int = 200) -> List[float]:
    """Wall times of ``call`` (at least MIN_REPEATS, for ``min_time`` seconds) after one
    warm-up call (compiles, faults pages in)."""
    call()
    times: List[float] = []
    started = time.perf_counter()
    while len(times) < MIN_REPEATS or (time.perf_counter() - started < min_time
                                       and len(times) < max_repeats):
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return times


def summary(times: List[float]) -> Dict[str, object]:
    """Median, quartiles, spread (IQR / median) and the busy mark of some timings."""
    q1, median, q3 = (float(q) for q in np.percentile(times, [25, 50, 75]))
    spread = (q3 - q1) / median
    return {"median_s": median, "q1_s": q1, "q3_s": q3, "repeats": len(times),
            "spread": spread, "busy": spread > BUSY_SPREAD}


def run(backends: Optional[List[str]] = None, threads=(1, 2), quick: bool = False,
        progress: bool = True, selected: Optional[List[Case]] = None) -> List[Dict]:
    """Time each case of ``selected`` (default: :func:`cases`) on every backend at each
    thread count; one result dict per (case, backend, thread count)."""
    from tqdm import tqdm

    backends = backends or available_backends()
    if "numpy" not in backends:
        backends = ["numpy"] + list(backends)  # the reference of every speedup
    all_cases = cases(quick) if selected is None else selected
    results: List[Dict] = []
    saved_threads = max(get_num_threads().values(), default=None)
    # disable=None: no bar when standard error is not a terminal (a log file gets no \r)
    bar = tqdm(total=sum((len(backends) + len(case.others)) * len(threads)
                         for case in all_cases),
               disable=None if progress else True, desc="fastnn bench", unit="run")
    try:
        for case in all_cases:
            for count in threads:
                set_num_threads(count)
                for name in backends + list(case.others):
                    bar.set_postfix_str(f"{case.kernel} {case.shape} {name} x{count}")
                    if name in case.others:
                        stats = summary(timings(case.others[name](count), 0.1 if quick else 0.4))
                    else:
                        with use_backend(name):
                            stats = summary(timings(case.prepare(), 0.1 if quick else 0.4))
                    seconds = stats["median_s"]
                    results.append({
                        "kernel": case.kernel, "shape": case.shape, "backend": name,
                        "threads": count, **stats,
                        "GFLOP/s": case.flops / seconds / 1e9 if case.flops else None,
                        "GB/s": case.bytes_moved / seconds / 1e9 if case.bytes_moved else None,
                    })
                    bar.update()
    finally:
        bar.close()
        if saved_threads:
            set_num_threads(saved_threads)
    _add_speedups(results)
    _mark_stalls(results)
    return results


def _add_speedups(results: List[Dict]) -> None:
    """Each row's speedup over the numpy row of its kernel, shape and thread count, and the
    range that the row's own quartiles give it (the reference's median held fixed)."""
    reference = {(r["kernel"], r["shape"], r["threads"]): r["median_s"]
                 for r in results if r["backend"] == "numpy"}
    for r in results:
        base = reference[(r["kernel"], r["shape"], r["threads"])]
        r["speedup_vs_numpy"] = base / r["median_s"]
        r["speedup_range"] = [base / r["q3_s"], base / r["q1_s"]]


def _mark_stalls(results: List[Dict]) -> None:
    """Mark busy the rows over STALL_FACTOR times slower than the same kernel, shape and
    backend at the fewest threads (``stalled``)."""
    fewest: Dict[tuple, Dict] = {}
    for r in results:
        key = (r["kernel"], r["shape"], r["backend"])
        if key not in fewest or r["threads"] < fewest[key]["threads"]:
            fewest[key] = r
    for r in results:
        base = fewest[(r["kernel"], r["shape"], r["backend"])]
        r["stalled"] = r["median_s"] > STALL_FACTOR * base["median_s"]
        r["busy"] = r["busy"] or r["stalled"]


def format_table(results: List[Dict]) -> str:
    """A table per kernel and shape: backend, threads, median time, its spread (IQR as a
    share of the median, "!" when over BUSY_SPREAD), rate, speedup over numpy; then a
    note on the marked rows, if any."""
    lines: List[str] = []
    key = None
    for r in results:
        if (r["kernel"], r["shape"]) != key:
            key = (r["kernel"], r["shape"])
            lines += ["", f"{r['kernel']}  {r['shape']}",
                      f"  {'backend':<8}{'threads':>8}{'median':>12}{'IQR':>8}"
                      f"{'rate':>16}{'vs numpy':>10}"]
        rate = (f"{r['GFLOP/s']:.1f} GFLOP/s" if r["GFLOP/s"] is not None
                else f"{r['GB/s']:.1f} GB/s")
        spread = f"{r['spread']:.0%}" + ("!" if r["busy"] else " ")
        lines.append(f"  {r['backend']:<8}{r['threads']:>8}{r['median_s'] * 1e3:>10.3f}ms"
                     f"{spread:>8}{rate:>16}{r['speedup_vs_numpy']:>9.2f}x")
    busy = sum(r["busy"] for r in results)
    if busy:
        stalled = sum(r.get("stalled", False) for r in results)
        lines += ["", f"! {busy} of {len(results)} rows spread by more than "
                      f"{BUSY_SPREAD:.0%} of their median (interquartile range)"
                      + (f" or ran over {STALL_FACTOR:g}x slower with more threads "
                         f"({stalled} rows)" if stalled else "")
                      + ": the machine was busy while they ran; their figures are unsure, "
                        "run again on a quieter machine"]
    return "\n".join(lines)


def write_json(results: List[Dict], path: str) -> None:
    import fastnn
    document = {"fastnn": fastnn.__version__, "machine": platform.machine(),
                "processor": platform.processor(), "date": time.strftime("%Y-%m-%d"),
                "results": results}
    write_text(path, json.dumps(document, indent=1))


def plot_speedups(results: List[Dict], path: str) -> None:
    """A horizontal bar chart of every backend's speedup over numpy, a group of bars per
    kernel and shape, one bar per backend and thread count, each with the range its own
    interquartile range gives (an error bar), on a log axis centred on 1x; a busy row's
    label ends with "!"."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    labels = list(dict.fromkeys((r["kernel"], r["shape"]) for r in results))
    series = sorted({(r["backend"], r["threads"]) for r in results if r["backend"] != "numpy"})
    rows = {(r["kernel"], r["shape"], r["backend"], r["threads"]): r for r in results}
    height = 0.8 / max(len(series), 1)
    figure, axes = plt.subplots(figsize=(9, 1.2 + 0.28 * len(labels) * max(len(series), 1)))
    positions = np.arange(len(labels))[::-1].astype(float)  # the first kernel on top
    for i, (backend, count) in enumerate(series):
        present = [j for j, (k, s) in enumerate(labels) if (k, s, backend, count) in rows]
        chosen = [rows[(*labels[j], backend, count)] for j in present]  # plain-numpy: some
        speedups = np.array([r["speedup_vs_numpy"] for r in chosen])
        low = speedups - np.array([r["speedup_range"][0] for r in chosen])
        high = np.array([r["speedup_range"][1] for r in chosen]) - speedups
        # bars start at 1x, so a slowdown extends left and a speedup right
        axes.barh(positions[present] - i * height, speedups - 1.0, height, left=1.0,
                  xerr=[low, high], capsize=2, error_kw={"linewidth": 0.8},
                  label=f"{backend}, {count} thread{'s' * (count > 1)}")
    axes.axvline(1.0, color="black", linewidth=0.8)
    busy = {(r["kernel"], r["shape"]) for r in results if r["busy"]}
    axes.set_yticks(positions - height * (len(series) - 1) / 2)
    axes.set_yticklabels([f"{k} {s}" + (" !" if (k, s) in busy else "") for k, s in labels],
                         fontsize=8)
    axes.set_xscale("log")  # speedups span 0.5x to 20x; a linear axis flattens the small ones
    # The axis spans the medians (robust to a few slow calls) of the rows that did not stall:
    # a stalled row's bar, or a noisy row's error bar, runs off the edge instead of
    # stretching the axis (its label says "!").
    medians = ([r["speedup_vs_numpy"] for r in results if not r.get("stalled")]
               or [r["speedup_vs_numpy"] for r in results])
    axes.set_xlim(min(min(medians), 1.0) / 1.5, max(max(medians), 1.0) * 1.5)
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("speedup over numpy (x, log scale; error bars: interquartile range)")
    title = "fastnn kernels: speedup over the NumPy reference"
    if busy:
        title += "\n! = the machine was busy while a row of this kernel ran (see the table)"
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, dpi=120, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(figure)
