"""fastnn's bfloat16 GEMM against PyTorch's ``torch.mm`` in bfloat16 (issue 20).

    python benchmarks/bf16_vs_torch.py [--threads 2] [--rounds 7] [MxKxN ...]

For each shape (default: the table in README.md, "Figures measured here"), four contenders
alternate in one process, each block after a 0.1 s idle pause (so the other library's idle
threads stop spinning), in two pairs of the same work:

- ``ops.matmul`` on float32 operands in bfloat16 matmul precision (float32 result) against
  ``torch.mm`` on the float32 tensors under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  (bfloat16 result): both round the float32 operands to bfloat16 in every call;
- ``ops.matmul`` on bfloat16 operands (``ml_dtypes.bfloat16`` views of the tensors' memory,
  bfloat16 result) against ``torch.mm`` on bfloat16 tensors: the same bytes read and written.

A block is the median time of enough calls for about 0.3 GFLOP; the table gives the median over
``--rounds`` blocks, in ms, and for fastnn the median of the rounds' ratios PyTorch / fastnn
against its pair (above 1: fastnn is faster). Needs PyTorch and ml_dtypes (both in CI;
ml_dtypes is in the dev extra).
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

import numpy as np

from fastnn import ops, set_num_threads

import bench_common  # benchmarks/bench_common.py, beside this script

SHAPES = ["32x1024x1024", "32x4096x1024", "32x4096x4096", "128x1024x1024", "256x256x4096",
          "256x4096x256", "1024x1024x256", "1024x1024x1024", "1024x4096x4096"]


_shape = bench_common.shape_type("MxKxN", "32x1024x1024")


def main(argv=None) -> List[Dict]:
    """Run, print the table, and return its rows: the shape, each contender's block times (s)
    and the two ratios (PyTorch / fastnn, the medians of the rounds' ratios)."""
    parser = bench_common.parser(__doc__, _shape, SHAPES, rounds=7)
    args = parser.parse_args(argv)
    import ml_dtypes

    from fastnn.bench_sweep import _import_torch
    torch = _import_torch()  # with the OpenMP wait it has without fastnn
    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'M x K x N':>18}  {'f32 operands':>14}  {'autocast':>9}  {'bf16 operands':>14}"
          f"  {'torch.mm':>9}  (ms; PyTorch / fastnn)")
    for m, k, n in args.shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        fa, fb = torch.from_numpy(a), torch.from_numpy(b)
        ta, tb = fa.to(torch.bfloat16), fb.to(torch.bfloat16)
        # fastnn's bfloat16 operands are torch's tensors' own memory: the same bytes at the
        # same addresses (torch aligns them to 64 bytes, which NumPy does not promise)
        ha, hb = (t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) for t in (ta, tb))
        out, hout = np.empty((m, n), np.float32), np.empty((m, n), ml_dtypes.bfloat16)
        def autocast():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torch.mm(fa, fb)

        calls = [lambda: ops.matmul(a, b, out=out, precision="bfloat16"), autocast,
                 lambda: ops.matmul(ha, hb, out=hout), lambda: torch.mm(ta, tb)]
        count = max(5, int(3e8 / (m * n * k)))
        times = [[], [], [], []]
        for _ in range(args.rounds):
            for i, call in enumerate(calls):
                time.sleep(0.1)
                call()
                times[i].append(bench_common.block_median(call, count))
        cells, ratios = [], []
        for mine, theirs in ((times[0], times[1]), (times[2], times[3])):
            ratio = statistics.median(t / o for t, o in zip(theirs, mine))
            ratios.append(ratio)
            cells += [f"{statistics.median(mine) * 1e3:7.3f} ({ratio:4.2f}x)",
                      f"{statistics.median(theirs) * 1e3:9.3f}"]
        print(f"{m:>5} x {k:>4} x {n:>4}  {cells[0]:>14}  {cells[1]:>9}  {cells[2]:>14}  "
              f"{cells[3]:>9}")
        rows.append({"shape": (m, k, n), "times": times, "f32_vs_autocast": ratios[0],
                     "bf16_vs_torch_mm": ratios[1]})
    return rows


if __name__ == "__main__":
    main()
