"""A slice of the GEMM sweep, an earlier build against the current one in ONE process: NumPy's
``@``, the earlier code (its fastnn/ops.py, fastnn/backends/c_backend.py and built C extension,
loaded from BEFORE_DIR) and the installed fastnn, in alternating blocks; medians and fastest
blocks, both checked against a float64 product.

    mkdir before && git show REV:fastnn/ops.py > before/ops.py \
        && git show REV:fastnn/backends/c_backend.py > before/c_backend.py \
        && cp <REV's build>/fastnn/_c/_kernels.abi3.so before/
    BEFORE_DIR=before python benchmarks/sweep_tables/sweep_ab.py float32 1,8,32 16,256,1024 \
        16,256,1024 nn,tn,nt

The earlier wrappers run the earlier extension (its own thread count, set to 2 like the current
one's); the earlier ops module is handed the earlier wrappers after the same registry lookup.
"""
import sys, os, time, math, importlib.util
import numpy as np
BEFORE = os.environ.get("BEFORE_DIR", "before")
import fastnn
from fastnn import ops, bench_sweep
from fastnn.backends import set_backend, set_num_threads
set_backend("c"); set_num_threads(2)

def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec); sys.modules[name] = mod
    spec.loader.exec_module(mod); return mod
kern_old = _load("before._kernels", os.path.join(BEFORE, "_kernels.abi3.so"))
kern_old.lib.fastnn_set_num_threads(2)
src = open(os.path.join(BEFORE, "c_backend.py")).read().replace(
    "from .._c._kernels import ffi, lib",
    "import sys as _s; ffi, lib = _s.modules['before._kernels'].ffi, _s.modules['before._kernels'].lib")
open(os.path.join(BEFORE, "c_backend_old_so.py"), "w").write(src)
cb_old = _load("fastnn.backends._c_before_oldso", os.path.join(BEFORE, "c_backend_old_so.py"))
ops_old = _load("fastnn._ops_before", os.path.join(BEFORE, "ops.py"))
import fastnn.backends as backends
_real = backends.get_backend
ops_old.get_backend = lambda: (_real(), cb_old)[1]

dtype = sys.argv[1]
ms, ks, ns = (tuple(int(x) for x in arg.split(",")) for arg in sys.argv[2:5])
transposes = sys.argv[5].split(",")
BLOCK, ROUNDS, SETTLE = 0.01, 5, 0.05
def block(f, count):
    t = time.perf_counter()
    for _ in range(count): f()
    return (time.perf_counter() - t) / count
rows = []
print(f"# {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}; medians (fastest) of {ROUNDS} alternating blocks of >= {BLOCK*1e3:.0f} ms", flush=True)
for m, k, n, t in bench_sweep.shapes(ms, ks, ns, transposes):
    a, b = bench_sweep.operands(m, k, n, t, dtype)
    ta, tb = t[0] == "t", t[1] == "t"
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)
    o1, o2, e = np.empty((m, n), dtype), np.empty((m, n), dtype), np.empty((m, n), dtype)
    fs = {"numpy": lambda: np.matmul(a_op, b_op, out=e),
          "before": lambda: ops_old.matmul(a, b, ta, tb, out=o1),
          "after": lambda: ops.matmul(a, b, ta, tb, out=o2)}
    for f in fs.values(): f()
    ref = a_op.astype(np.float64) @ b_op.astype(np.float64)
    tol = math.sqrt(k) * (1e-4 if dtype == "float32" else 1e-12)
    assert np.allclose(o1, ref, rtol=tol, atol=tol) and np.allclose(o2, ref, rtol=tol, atol=tol), (m, k, n, t)
    count = max(1, min(2000, int(BLOCK / max(1e-7, min(block(f, 1) for f in fs.values())))))
    res = {name: [] for name in fs}
    for _ in range(ROUNDS):
        for name, f in fs.items():
            time.sleep(SETTLE); res[name].append(block(f, count))
    med = {x: float(np.median(v)) for x, v in res.items()}; best = {x: min(v) for x, v in res.items()}
    row = dict(m=m, k=k, n=n, t=t, med=med, best=best)
    rows.append(row)
    print(f"{dtype:<8} {t:<3} {m:>5} x{k:>5} x{n:>5}  numpy {med['numpy']*1e3:9.4f} ms  before {med['before']*1e3:9.4f} ms"
          f" x{med['numpy']/med['before']:5.2f} (best x{best['numpy']/best['before']:5.2f})  after {med['after']*1e3:9.4f} ms"
          f" x{med['numpy']/med['after']:5.2f} (best x{best['numpy']/best['after']:5.2f})", flush=True)
def summ(sel, label):
    if not sel: return
    for which in ("before", "after"):
        r = [x["med"]["numpy"] / x["med"][which] for x in sel]; rb = [x["best"]["numpy"] / x["best"][which] for x in sel]
        print(f"# {label}: {which:6s} {len(r)} shapes, geometric mean x{math.exp(sum(map(math.log, r))/len(r)):.2f}, worst x{min(r):.2f}, "
              f"{sum(v < 0.9 for v in r)} below x0.90 (fastest blocks: geometric mean x{math.exp(sum(map(math.log, rb))/len(rb)):.2f}, worst x{min(rb):.2f}, {sum(v < 0.9 for v in rb)} below)")
summ(rows, "all")
summ([x for x in rows if 2 * x["m"] * x["k"] * x["n"] <= 1e6], "<= 1 MFLOP")
summ([x for x in rows if 2 * x["m"] * x["k"] * x["n"] > 1e6], "> 1 MFLOP")
print(f"# end {time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}")
