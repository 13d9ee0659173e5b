"""Issue 14's training targets, measured in alternating rounds in one process (2 threads).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/training_targets.py \\
        [--rounds 7] [--only mnist,tabular,xor] [--quick]

``benchmarks/test_training.py`` (pytest-benchmark) times each row's epochs back to back, a
row after the other; on a shared machine a slow spell of a few seconds then meets one row and
not the row it is compared with (MNIST-shaped batch 32, c against PyTorch: 1.76x to 4.57x over
four runs of one build, the fifteenth session). Here each round times one epoch of every
implementation in turn (back-to-back epochs for at least ``BLOCK_SECONDS``: XOR's and the
tabular set's are short), the order rotated from round to round, each after an idle pause
(``SETTLE_SECONDS``: the other libraries' spinning threads go to sleep first), and a ratio is
the median over the rounds of the ratio of the two epochs of the same round, so that both
sides of each ratio meet the same moments of the machine. The range printed beside it is the
lowest and highest round.

Workloads (fastnn/bench_training.py, the same as test_training.py's): the MNIST-shaped
784-256-128-10 relu MLP on 60000 x 784 float32 at batch 32 and 128, the tabular 32-64-64-2
on 50000 x 32 at batch 32 and 256, XOR 2-8-2 tanh at batch 4 (1024 steps of one epoch).
Implementations: every fastnn backend through ``Sequential.fit`` (its compiled training
loop on c and numba, the per-layer path on numpy), ``plain-numpy`` (the training written
plainly in NumPy) and ``torch`` (PyTorch eager, when installed).

A benchmark, not a test: it prints each target with its measured ratio and "met" or "NOT
met", and exits 0 either way (tests/test_training_targets.py runs it once, ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import fastnn
from fastnn import bench_training

THREADS = 2
#: Idle seconds before each timed epoch: OpenBLAS's idle workers spin for up to ~0.1 s after a
#: call and OpenMP's for milliseconds (benchmarks/conftest.py's SETTLE_SECONDS).
SETTLE_SECONDS = 0.3
#: Least seconds of a timed block of epochs (alternate).
BLOCK_SECONDS = 0.2


def implementations() -> List[str]:
    names = fastnn.available_backends() + ["plain-numpy"]
    return names + (["torch"] if importlib.util.find_spec("torch") is not None else [])


def alternate(epochs: Dict[str, Callable[[], float]], rounds: int, settle: float,
              block_seconds: float = 0.0) -> Dict[str, List[float]]:
    """Seconds of one epoch of each implementation per round: round r runs them in the order
    rotated by r, each after ``settle`` idle seconds, as a block of back-to-back epochs that
    lasts at least ``block_seconds`` (the epochs of a training run follow each other; a single
    1 ms XOR epoch right after an idle pause took 2.3 us a step instead of 1.0: cold caches and
    sleeping threads), its mean per epoch. Each is run once untimed first, which sizes its
    block."""
    names = list(epochs)
    repeats = {}
    for name in names:
        begin = time.perf_counter()
        epochs[name]()
        repeats[name] = max(1, math.ceil(block_seconds / (time.perf_counter() - begin)))
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(settle)
            begin = time.perf_counter()
            for _ in range(repeats[name]):
                epochs[name]()
            times[name].append((time.perf_counter() - begin) / repeats[name])
    return times


def paired(times: Dict[str, List[float]], slow: str, fast: str) -> Optional[List[float]]:
    """Per-round ratios time(slow) / time(fast) (how many times faster ``fast`` is), or None
    when either was not measured."""
    if slow not in times or fast not in times:
        return None
    return [s / f for s, f in zip(times[slow], times[fast])]


#: (workload, slower implementation, faster one, least ratio, what the issue says).
#: A ratio is time(slower) / time(faster): "c at least 4x plain NumPy" is plain-numpy / c >= 4.
RATIO_TARGETS = [
    ("tabular b32", "plain-numpy", "c", 4.0, "tabular batch 32: c at least 4x plain NumPy"),
    ("tabular b32", "torch", "c", 20.0, "tabular batch 32: c at least 20x PyTorch"),
    ("tabular b32", "c", "numba", 1 / 1.5, "tabular batch 32: numba within 1.5x of c"),
    ("mnist b32", "torch", "c", 4.0, "MNIST-shaped batch 32: c at least 4x PyTorch eager"),
    ("mnist b128", "plain-numpy", "c", 2.0, "MNIST-shaped batch 128: c at least 2x plain NumPy"),
]
WORKLOADS = ["mnist b128", "mnist b32", "tabular b32", "tabular b256", "xor"]


def workloads(only: Sequence[str], quick: bool):
    """name -> (x, y, batch, hidden, activation) of the workloads asked for."""
    out = {}
    if "mnist" in only:
        data = bench_training.mnist_shaped(6000 if quick else bench_training.MNIST_SAMPLES)
        out["mnist b128"] = (*data, 128, bench_training.MNIST_HIDDEN, "relu")
        out["mnist b32"] = (*data, 32, bench_training.MNIST_HIDDEN, "relu")
    if "tabular" in only:
        data = bench_training.tabular(5000 if quick else bench_training.TABULAR_SAMPLES)
        out["tabular b32"] = (*data, 32, bench_training.TABULAR_HIDDEN, "relu")
        out["tabular b256"] = (*data, 256, bench_training.TABULAR_HIDDEN, "relu")
    if "xor" in only:
        out["xor"] = (*bench_training.xor_tiled(), 4, (8,), "tanh")
    return out


def describe(ratios: List[float]) -> str:
    return f"x{statistics.median(ratios):5.2f} (rounds x{min(ratios):.2f}-x{max(ratios):.2f})"


def report(measured: Dict[str, Dict[str, List[float]]]) -> List[str]:
    """The lines of the report: each workload's median times, then each target."""
    lines = []
    for workload, times in measured.items():
        cells = [f"{name} {statistics.median(t) * 1e3:.1f} ms" for name, t in times.items()]
        lines.append(f"{workload:<13} " + ", ".join(cells))
    lines.append("")
    for workload, slow, fast, least, text in RATIO_TARGETS:
        ratios = paired(measured.get(workload, {}), slow, fast)
        if ratios is None:
            continue
        shown = ([1 / r for r in ratios] if least < 1 else ratios)  # numba / c as a slowdown
        met = statistics.median(ratios) >= least
        lines.append(f"{text:<58} {describe(shown)}  {'met' if met else 'NOT met'}")
    if "xor" in measured:
        steps = len(bench_training.xor_tiled()[0]) // 4
        for name, most in (("c", 1.0), ("numba", 2.0)):
            if name in measured["xor"]:
                per_step = [t / steps * 1e6 for t in measured["xor"][name]]
                median = statistics.median(per_step)
                lines.append(f"{'XOR 2-8-2 batch 4: ' + name + f' at most {most:g} us a step':<58} "
                             f"{median:5.2f} us (rounds {min(per_step):.2f}-{max(per_step):.2f})"
                             f"  {'met' if median <= most else 'NOT met'}")
    for workload, times in measured.items():
        ratios = paired(times, "numpy", "numba")
        if ratios is not None:
            met = statistics.median(ratios) > 1
            lines.append(f"{workload + ': numba faster than the numpy backend':<58} "
                         f"{describe(ratios)}  {'met' if met else 'NOT met'}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="rounds of epochs (default 7)")
    parser.add_argument("--only", default="mnist,tabular,xor",
                        help="comma-separated of mnist, tabular, xor")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the rows, one round, no pause: checks the script runs")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive integer, got {args.rounds}")
    only = [part for part in args.only.split(",") if part]
    unknown = sorted(set(only) - {"mnist", "tabular", "xor"})
    if unknown:
        parser.error(f"--only: expected names among mnist, tabular, xor, got {', '.join(unknown)}")
    rounds, settle, block = ((1, 0.0, 0.0) if args.quick
                             else (args.rounds, SETTLE_SECONDS, BLOCK_SECONDS))
    fastnn.set_num_threads(THREADS)
    measured = {}
    for workload, (x, y, batch, hidden, activation) in workloads(only, args.quick).items():
        epochs = {name: bench_training.epoch_of(name, x, y, batch, hidden, activation, THREADS)
                  for name in implementations()}
        measured[workload] = alternate(epochs, rounds, settle, block)
    print(f"{rounds} alternating rounds, {THREADS} threads, median epoch times "
          f"(blocks of at least {block:g} s):")
    print("\n".join(report(measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
