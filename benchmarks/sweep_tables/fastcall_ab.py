"""A slice of the GEMM sweep with and without the C call entry of matmul, in ONE process:
NumPy's ``@``, ``ops.matmul`` through cffi (``c_backend.matmul_entry`` set to None: the code
before the entry) and ``ops.matmul`` through the entry (kernels/fastcall), in alternating
blocks; medians and fastest blocks, each result checked against a float64 product. The same
GEMM runs in both fastnn columns: only the call path differs.

    python benchmarks/sweep_tables/fastcall_ab.py float32 1,8,32 16,256,1024 16,256,1024 nn,tn,nt
"""
import sys

import numpy as np

from ab_slice import run
from fastnn import ops
from fastnn.backends import c_backend, set_backend, set_num_threads

set_backend("c")
set_num_threads(2)
ENTRY = c_backend.matmul_entry
assert ENTRY is not None, c_backend.FASTCALL_UNAVAILABLE
ENTRIES = {"numpy": ENTRY, "cffi": None, "entry": ENTRY}  # ops.matmul's path of each column


def calls(a, b, ta, tb, outs):
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)
    e = np.empty_like(outs["cffi"])
    return {"numpy": lambda: np.matmul(a_op, b_op, out=e),
            "cffi": lambda: ops.matmul(a, b, ta, tb, out=outs["cffi"]),
            "entry": lambda: ops.matmul(a, b, ta, tb, out=outs["entry"])}


def enter(name):
    c_backend.matmul_entry = ENTRIES[name]


try:
    run(sys.argv, ("cffi", "entry"), calls, enter, unit="us")
finally:
    c_backend.matmul_entry = ENTRY
