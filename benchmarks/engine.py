"""The engine on a real machine (issue 14): the ratios of its targets, measured.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/engine.py [--backends c,numba]

* busy neighbour: a 2-thread kernel while ``python -c "while True: pass"`` runs, against the
  same kernel on 1 thread with no neighbour (target: at most 1.3x);
* interleaved: NumPy's ``a @ b`` and ``fastnn.ops.matmul(a, b)`` alternating in one loop,
  each against the same calls in a loop of its own (target: at most 1.2x);
* subnormal: a kernel on subnormal data against the same kernel on normal data, 1 thread
  (target: at most 1.2x).

Each figure is the median over blocks of calls; the blocks of the two sides of a ratio
alternate, so a slow spell of a shared machine meets both. Ratios only: the absolute
times depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

import fastnn
from fastnn import ops


def block_seconds(call, count):
    begin = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - begin) / count


def alternate(first, second, count, rounds=7, setup_first=None, setup_second=None):
    """Median seconds per call of ``first`` and ``second`` in alternating blocks."""
    first_times, second_times = [], []
    for _ in range(rounds):
        if setup_first:
            setup_first()
        first_times.append(block_seconds(first, count))
        if setup_second:
            setup_second()
        second_times.append(block_seconds(second, count))
    return float(np.median(first_times)), float(np.median(second_times))


def kernels(dtype=np.float32):
    """name -> call, for the shapes of the issue."""
    rng = np.random.default_rng(0)
    a256 = rng.standard_normal((256, 256)).astype(dtype)
    x = rng.standard_normal((128, 784)).astype(dtype)
    w = (rng.standard_normal((784, 256)) / 28).astype(dtype)
    b = np.zeros(256, dtype)
    y = ops.linear_forward(x, w, b, "relu")
    return {
        "matmul 256^3": lambda: ops.matmul(a256, a256),
        "linear_forward 128x784->256": lambda: ops.linear_forward(x, w, b, "relu"),
        "linear_backward 128x784->256": lambda: ops.linear_backward(x, w, y, y, "relu"),
    }


def busy_neighbour(backend, rounds=5):
    """Blocks of 2-thread calls beside a busy process alternate with blocks of 1-thread calls
    without it, so the machine's other load meets both sides alike."""
    rows = []
    with fastnn.use_backend(backend):
        for name, call in kernels().items():
            call()
            count = max(3, int(0.05 / max(block_seconds(call, 3), 1e-6)))
            alone, busy = [], []
            for _ in range(rounds):
                fastnn.set_num_threads(1)
                time.sleep(0.1)
                alone.append(block_seconds(call, count))
                fastnn.set_num_threads(2)
                neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    time.sleep(0.3)
                    busy.append(block_seconds(call, count))
                finally:
                    neighbour.kill()
                    neighbour.wait()
            alone_s, busy_s = float(np.median(alone)), float(np.median(busy))
            rows.append((f"busy neighbour, {backend}, {name}", busy_s / alone_s,
                         f"2 threads + neighbour {busy_s * 1e3:.3f} ms / 1 thread alone "
                         f"{alone_s * 1e3:.3f} ms"))
    return rows


def openblas_wait():
    """How long OpenBLAS's idle workers spin, as this process started it: this script imports
    NumPy before fastnn, so fastnn's short default (fastnn.backends.runtime) applies only when
    the variable is set in the environment."""
    value = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    return f"OPENBLAS_THREAD_TIMEOUT={value}" if value else "OpenBLAS's default wait"


def interleaved(backend, size=1024):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size)).astype(np.float32)
    out_np, out_fn = np.empty_like(a), np.empty_like(a)
    with fastnn.use_backend(backend):
        fastnn.set_num_threads(2)
        ours = lambda: ops.matmul(a, a, out=out_fn)  # noqa: E731
        theirs = lambda: np.matmul(a, a, out=out_np)  # noqa: E731
        both = lambda: (theirs(), ours())  # noqa: E731
        ours(), theirs()
        ours_alone, theirs_alone = alternate(ours, theirs, 5,
                                             setup_first=lambda: time.sleep(0.15),
                                             setup_second=lambda: time.sleep(0.15))
        # In the alternating loop, time each library's calls on their own clock.
        ours_mixed, theirs_mixed = [], []
        for _ in range(35):
            begin = time.perf_counter()
            theirs()
            middle = time.perf_counter()
            ours()
            end = time.perf_counter()
            theirs_mixed.append(middle - begin)
            ours_mixed.append(end - middle)
        del both
    ours_mixed, theirs_mixed = float(np.median(ours_mixed)), float(np.median(theirs_mixed))
    return [(f"interleaved, {backend} matmul {size}^3, {openblas_wait()}", ours_mixed / ours_alone,
             f"{ours_mixed * 1e3:.2f} ms / alone {ours_alone * 1e3:.2f} ms"),
            (f"interleaved, NumPy @ {size}^3 (beside {backend})", theirs_mixed / theirs_alone,
             f"{theirs_mixed * 1e3:.2f} ms / alone {theirs_alone * 1e3:.2f} ms")]


def subnormal(backend):
    rows = []
    rng = np.random.default_rng(2)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    tiny = a * np.float32(1e-39)
    b = np.zeros(256, np.float32)
    y, y_tiny = ops.linear_forward(a, a, b), ops.linear_forward(tiny, a, b)
    cases = {
        "matmul 256^2": (lambda: ops.matmul(a, a), lambda: ops.matmul(tiny, a)),
        "linear_forward 256^2": (lambda: ops.linear_forward(a, a, b, "relu"),
                                 lambda: ops.linear_forward(tiny, a, b, "relu")),
        "linear_backward 256^2": (lambda: ops.linear_backward(a, a, y, a, "relu"),
                                  lambda: ops.linear_backward(tiny, a, y_tiny, tiny, "relu")),
    }
    with fastnn.use_backend(backend):
        fastnn.set_num_threads(1)
        for name, (normal, sub) in cases.items():
            normal(), sub()
            count = max(3, int(0.03 / max(block_seconds(normal, 3), 1e-6)))
            normal_s, sub_s = alternate(normal, sub, count)
            rows.append((f"subnormal, {backend}, {name}", sub_s / normal_s,
                         f"{sub_s * 1e6:.1f} us / normal data {normal_s * 1e6:.1f} us"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(
        n for n in ("c", "numba") if n in fastnn.available_backends()))
    parser.add_argument("--only", default="busy,interleaved,subnormal")
    args = parser.parse_args(argv)
    rows = []
    for backend in args.backends.split(","):
        if "subnormal" in args.only:
            rows += subnormal(backend)
        if "interleaved" in args.only:
            rows += interleaved(backend)
        if "busy" in args.only:
            rows += busy_neighbour(backend)
    for name, ratio, detail in rows:
        print(f"{name:<55} x{ratio:5.2f}   {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
