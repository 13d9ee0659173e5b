"""Issue 20's wide-layer targets: ``linear_forward`` and ``linear_backward`` on the c backend
against the numpy backend (NumPy's ``@``, OpenBLAS here) at the same shapes, float32.

    python benchmarks/wide_layers.py [--threads 2] [--rounds 9] [NxKxM ...]

Default shapes: 256 x 2048 -> 2048 and 128 x 4096 -> 4096 (a batch of N rows of K features
into M units, ReLU), where the issue asks for at least 1.1x NumPy. The two backends alternate
in one process, each block after a 0.2 s idle pause (so OpenBLAS's idle threads stop
spinning); a block is the median of ``--calls`` calls; the table gives the median over
``--rounds`` blocks in ms, fastnn's GFLOP/s (a forward pass 2 N K M flops, a backward pass
4 N K M: the input and weight gradients) and the ratio of the medians numpy / c (above 1: the
c backend is faster).
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

import numpy as np

from fastnn import arguments, ops, set_num_threads, use_backend

import bench_common  # benchmarks/bench_common.py, beside this script

SHAPES = ["256x2048x2048", "128x4096x4096"]


_shape = bench_common.shape_type("NxKxM (a batch of N rows, K features, M units)",
                                 "256x2048x2048")


def main(argv=None) -> List[Dict]:
    """Run, print the table, and return its rows (shape, pass, both medians in s, ratio)."""
    parser = bench_common.parser(__doc__, _shape, SHAPES, rounds=9)
    parser.add_argument("--calls", type=arguments.positive_int, default=9)
    args = parser.parse_args(argv)
    set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'N x K -> M':>18}  {'pass':>8}  {'c ms':>8}  {'numpy ms':>9}  {'c GFLOP/s':>9}"
          f"  numpy / c")
    for n, k, m in args.shapes:
        x = rng.standard_normal((n, k), dtype=np.float32)
        w = (rng.standard_normal((k, m), dtype=np.float32) * k ** -0.5).astype(np.float32)
        b = rng.standard_normal(m, dtype=np.float32)
        dy = rng.standard_normal((n, m), dtype=np.float32)
        out = np.empty((n, m), np.float32)
        dx, dw = np.empty((n, k), np.float32), np.empty((k, m), np.float32)
        db = np.empty(m, np.float32)
        y = ops.linear_forward(x, w, b, "relu")
        passes = {"forward": (lambda: ops.linear_forward(x, w, b, "relu", out=out), 2.0),
                  "backward": (lambda: ops.linear_backward(x, w, y, dy, "relu", dx=dx, dw=dw,
                                                           db=db), 4.0)}
        for name, (call, flops_per) in passes.items():
            times = {"c": [], "numpy": []}
            for _ in range(args.rounds):
                for backend in times:
                    with use_backend(backend):
                        time.sleep(0.2)
                        call()
                        times[backend].append(bench_common.block_median(call, args.calls))
            c, theirs = (statistics.median(times[key]) for key in ("c", "numpy"))
            rows.append({"shape": (n, k, m), "pass": name, "c_s": c, "numpy_s": theirs,
                         "ratio": theirs / c})
            print(f"{f'{n}x{k}->{m}':>18}  {name:>8}  {c * 1e3:8.3f}  {theirs * 1e3:9.3f}  "
                  f"{flops_per * n * k * m / c / 1e9:9.0f}  {theirs / c:9.2f}")
    return rows


if __name__ == "__main__":
    main()
