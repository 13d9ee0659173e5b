"""The timing loop of this folder's one-process A/B scripts (sweep_ab.py, fastcall_ab.py).

For each shape of a sweep slice (fastnn.bench_sweep's shapes and operands): NumPy's ``@``
and two fastnn calls in alternating blocks of at least BLOCK seconds, each after an idle
SETTLE, ROUNDS rounds; each result first checked against a float64 product; a line per shape
(medians, NumPy time / fastnn time, and the same of the fastest blocks), then the geometric
mean, worst and count below 0.9x over all shapes, those of at most 1 MFLOP and the rest.

    run(sys.argv, ("before", "after"), calls, unit="ms")

``calls(a, b, trans_a, trans_b, outs)`` returns {"numpy": ..., side: ...} for both sides,
each writing its ``outs[side]``; ``enter(name)``, when given, runs before each of a call's
blocks (fastcall_ab.py: which call path ops.matmul takes).
"""
import math
import os
import time

import numpy as np

from fastnn import bench_sweep

BLOCK, ROUNDS, SETTLE = 0.01, int(os.environ.get("AB_ROUNDS", "5")), 0.05
UNITS = {"ms": (1e3, 4), "us": (1e6, 2)}


def block(f, count):
    t = time.perf_counter()
    for _ in range(count):
        f()
    return (time.perf_counter() - t) / count


def _stamp():
    return f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}"


def _ratios(rows, which, key):
    return [row[key]["numpy"] / row[key][which] for row in rows]


def _geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def summary(rows, sides, label):
    for which in sides:
        r, rb = _ratios(rows, which, "med"), _ratios(rows, which, "best")
        print(f"# {label}: {which:6s} {len(r)} shapes, geometric mean x{_geomean(r):.2f}, "
              f"worst x{min(r):.2f}, {sum(v < 0.9 for v in r)} below x0.90 (fastest blocks: "
              f"geometric mean x{_geomean(rb):.2f}, worst x{min(rb):.2f}, "
              f"{sum(v < 0.9 for v in rb)} below)")


def run(argv, sides, calls, enter=lambda name: None, unit="ms"):
    """argv: the script, dtype, M's, K's, N's (comma-separated) and the transposes."""
    dtype = argv[1]
    ms, ks, ns = (tuple(int(x) for x in arg.split(",")) for arg in argv[2:5])
    transposes = argv[5].split(",")
    scale, digits = UNITS[unit]
    rows = []
    print(f"# {_stamp()}; medians (fastest) of {ROUNDS} alternating blocks of >= "
          f"{BLOCK * 1e3:.0f} ms", flush=True)
    for m, k, n, t in bench_sweep.shapes(ms, ks, ns, transposes):
        a, b = bench_sweep.operands(m, k, n, t, dtype)
        ta, tb = t[0] == "t", t[1] == "t"
        outs = {side: np.empty((m, n), dtype) for side in sides}
        fs = calls(a, b, ta, tb, outs)
        for name, f in fs.items():
            enter(name)
            f()
        ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        tol = math.sqrt(k) * (1e-4 if dtype == "float32" else 1e-12)
        # not bit for bit: a first call may run on another thread count (a busy machine's
        # fallback, kernels/internal.h), which changes a K split's sums
        assert all(np.allclose(o, ref, rtol=tol, atol=tol) for o in outs.values()), (m, k, n, t)
        count = max(1, min(2000, int(BLOCK / max(1e-7, min(block(f, 1) for f in fs.values())))))
        res = {name: [] for name in fs}
        for _ in range(ROUNDS):
            for name, f in fs.items():
                enter(name)
                time.sleep(SETTLE)
                res[name].append(block(f, count))
        med = {x: float(np.median(v)) for x, v in res.items()}
        best = {x: min(v) for x, v in res.items()}
        rows.append(dict(m=m, k=k, n=n, t=t, med=med, best=best))
        line = (f"{dtype:<8} {t:<3} {m:>5} x{k:>5} x{n:>5}  "
                f"numpy {med['numpy'] * scale:9.{digits}f} {unit}")
        for side in sides:
            line += (f"  {side} {med[side] * scale:9.{digits}f} {unit} "
                     f"x{med['numpy'] / med[side]:5.2f} "
                     f"(best x{best['numpy'] / best[side]:5.2f})")
        print(line, flush=True)
    small = [x for x in rows if 2 * x["m"] * x["k"] * x["n"] <= 1e6]
    large = [x for x in rows if 2 * x["m"] * x["k"] * x["n"] > 1e6]
    for label, selected in (("all", rows), ("<= 1 MFLOP", small), ("> 1 MFLOP", large)):
        if selected:
            summary(selected, sides, label)
    print(f"# end {_stamp()}")
    return rows
