"""A slice of the GEMM sweep, an earlier build against the current one in ONE process: NumPy's
``@``, the earlier code (its fastnn/ops.py, fastnn/backends/c_backend.py and built C extension,
loaded from BEFORE_DIR) and the installed fastnn, in alternating blocks; medians and fastest
blocks, both checked against a float64 product.

    mkdir before && git show REV:fastnn/ops.py > before/ops.py \
        && git show REV:fastnn/backends/c_backend.py > before/c_backend.py \
        && cp <REV's build>/fastnn/_c/_kernels.abi3.so <REV's build>/fastnn/_c/_fastcall.*.so before/
    BEFORE_DIR=before python benchmarks/sweep_tables/sweep_ab.py float32 1,8,32 16,256,1024 \
        16,256,1024 nn,tn,nt

The earlier wrappers run the earlier extension (its own thread count, set to 2 like the current
one's); the earlier ops module is handed the earlier wrappers after the same registry lookup.
The C call entry (``_fastcall``) keeps the kernel addresses it is bound to in the module, so the
earlier side loads its own copy of it from BEFORE_DIR (a file of another path is another module
instance); with the installed one alone, binding it to the earlier kernels would make both
sides run them.
"""
import importlib.util
import os
import sys

import numpy as np

import fastnn.backends as backends
from ab_slice import run
from fastnn import ops
from fastnn.backends import set_backend, set_num_threads

BEFORE = os.environ.get("BEFORE_DIR", "before")
#: AB_THREADS=1 times both builds and NumPy (threadpoolctl) on one thread: a kernel's own speed,
#: without the other core's load or the busy-machine fallback (default 2, as the sweep)
THREADS = int(os.environ.get("AB_THREADS", "2"))
set_backend("c")
set_num_threads(THREADS)
if THREADS != 2:
    from threadpoolctl import threadpool_limits
    threadpool_limits(THREADS)


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


kern_old = _load("before._kernels", os.path.join(BEFORE, "_kernels.abi3.so"))
kern_old.lib.fastnn_set_num_threads(THREADS)
fastcall_old = [f for f in os.listdir(BEFORE) if f.startswith("_fastcall.")]
if fastcall_old:
    _load("before._fastcall", os.path.join(BEFORE, fastcall_old[0]))
src = open(os.path.join(BEFORE, "c_backend.py")).read().replace(
    "from .._c._kernels import ffi, lib",
    "import sys as _s; ffi, lib = _s.modules['before._kernels'].ffi, "
    "_s.modules['before._kernels'].lib").replace(
    "from .._c import _fastcall",
    "import sys as _s; _fastcall = _s.modules['before._fastcall']" if fastcall_old else
    "raise ImportError('no _fastcall in BEFORE_DIR')")
open(os.path.join(BEFORE, "c_backend_old_so.py"), "w").write(src)
cb_old = _load("fastnn.backends._c_before_oldso", os.path.join(BEFORE, "c_backend_old_so.py"))
ops_old = _load("fastnn._ops_before", os.path.join(BEFORE, "ops.py"))
_real = backends.get_backend
ops_old.get_backend = lambda: (_real(), cb_old)[1]


def calls(a, b, ta, tb, outs):
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)
    e = np.empty_like(outs["before"])
    return {"numpy": lambda: np.matmul(a_op, b_op, out=e),
            "before": lambda: ops_old.matmul(a, b, ta, tb, out=outs["before"]),
            "after": lambda: ops.matmul(a, b, ta, tb, out=outs["after"])}


run(sys.argv, ("before", "after"), calls, unit="ms")
