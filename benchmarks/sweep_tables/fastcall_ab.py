"""A slice of the GEMM sweep with and without the C call entry of matmul, in ONE process:
NumPy's ``@``, ``ops.matmul`` through cffi (``c_backend.matmul_entry`` set to None: the code
before the entry) and ``ops.matmul`` through the entry (kernels/fastcall), in alternating
blocks; medians and fastest blocks, each result checked against a float64 product. The same
GEMM runs in both fastnn columns: only the call path differs.

    python benchmarks/sweep_tables/fastcall_ab.py float32 1,8,32 16,256,1024 16,256,1024 nn,tn,nt
"""
import math
import os
import sys
import time

import numpy as np

from fastnn import bench_sweep, ops
from fastnn.backends import c_backend, set_backend, set_num_threads

set_backend("c")
set_num_threads(2)
ENTRY = c_backend.matmul_entry
assert ENTRY is not None, c_backend.FASTCALL_UNAVAILABLE

dtype = sys.argv[1]
ms, ks, ns = (tuple(int(x) for x in arg.split(",")) for arg in sys.argv[2:5])
transposes = sys.argv[5].split(",")
BLOCK, ROUNDS, SETTLE = 0.01, 5, 0.05


def block(f, count):
    t = time.perf_counter()
    for _ in range(count):
        f()
    return (time.perf_counter() - t) / count


def with_entry(entry, call):
    def run():
        c_backend.matmul_entry = entry
        return call()
    return run


rows = []
print(f"# {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}; "
      f"medians (fastest) of {ROUNDS} alternating blocks of >= {BLOCK * 1e3:.0f} ms", flush=True)
for m, k, n, t in bench_sweep.shapes(ms, ks, ns, transposes):
    a, b = bench_sweep.operands(m, k, n, t, dtype)
    ta, tb = t[0] == "t", t[1] == "t"
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)
    o1, o2, e = np.empty((m, n), dtype), np.empty((m, n), dtype), np.empty((m, n), dtype)
    calls = {"numpy": lambda: np.matmul(a_op, b_op, out=e),
             "cffi": lambda: ops.matmul(a, b, ta, tb, out=o1),
             "entry": lambda: ops.matmul(a, b, ta, tb, out=o2)}
    entries = {"numpy": ENTRY, "cffi": None, "entry": ENTRY}
    ref = a_op.astype(np.float64) @ b_op.astype(np.float64)
    tol = math.sqrt(k) * (1e-4 if dtype == "float32" else 1e-12)
    for name, f in calls.items():
        c_backend.matmul_entry = entries[name]
        f()
    # not bit for bit here: a first call may run on another thread count (a busy machine's
    # fallback, kernels/internal.h), which changes a K split's sums (tests/test_matmul_entry.py
    # checks the bits)
    assert all(np.allclose(o, ref, rtol=tol, atol=tol) for o in (o1, o2)), (m, k, n, t)
    count = max(1, min(2000, int(BLOCK / max(1e-7, min(block(f, 1) for f in calls.values())))))
    res = {name: [] for name in calls}
    for _ in range(ROUNDS):
        for name, f in calls.items():
            c_backend.matmul_entry = entries[name]
            time.sleep(SETTLE)
            res[name].append(block(f, count))
    c_backend.matmul_entry = ENTRY
    med = {x: float(np.median(v)) for x, v in res.items()}
    best = {x: min(v) for x, v in res.items()}
    rows.append(dict(m=m, k=k, n=n, t=t, med=med, best=best))
    print(f"{dtype:<8} {t:<3} {m:>5} x{k:>5} x{n:>5}  numpy {med['numpy'] * 1e6:9.2f} us  "
          f"cffi {med['cffi'] * 1e6:9.2f} us x{med['numpy'] / med['cffi']:5.2f} "
          f"(best x{best['numpy'] / best['cffi']:5.2f})  entry {med['entry'] * 1e6:9.2f} us "
          f"x{med['numpy'] / med['entry']:5.2f} (best x{best['numpy'] / best['entry']:5.2f})",
          flush=True)


def summary(selected, label):
    if not selected:
        return
    for which in ("cffi", "entry"):
        r = [x["med"]["numpy"] / x["med"][which] for x in selected]
        rb = [x["best"]["numpy"] / x["best"][which] for x in selected]
        print(f"# {label}: {which:5s} {len(r)} shapes, geometric mean "
              f"x{math.exp(sum(map(math.log, r)) / len(r)):.2f}, worst x{min(r):.2f}, "
              f"{sum(v < 0.9 for v in r)} below x0.90 (fastest blocks: geometric mean "
              f"x{math.exp(sum(map(math.log, rb)) / len(rb)):.2f}, worst x{min(rb):.2f}, "
              f"{sum(v < 0.9 for v in rb)} below)")


summary(rows, "all")
summary([x for x in rows if 2 * x["m"] * x["k"] * x["n"] <= 1e6], "<= 1 MFLOP")
summary([x for x in rows if 2 * x["m"] * x["k"] * x["n"] > 1e6], "> 1 MFLOP")
print(f"# end {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}")
