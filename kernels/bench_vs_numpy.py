"""C backend vs NumPy on the shapes of issue 3 (float32): medians and minima, GFLOP/s.

    THREADS=2 env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python kernels/bench_vs_numpy.py [big mlp linear xent]

Each library runs in blocks of consecutive calls (interleaving single calls lets the idle
threads of one library fall asleep while the other runs; waking them costs a scheduler tick).
PEAK is the figure the issue quotes for 2 cores; percentages are of it.
"""
import sys, time, numpy as np
from fastnn.backends import numpy_backend as NP, c_backend as C
rng = np.random.default_rng(0); f32 = np.float32
PEAK = 219.0
def pair(fn, fc, reps):
    """Blocks of consecutive calls of one library, alternating: interleaving single calls
    lets each library's idle threads fall asleep while the other runs, and waking them
    costs a scheduler tick (4 ms) on this VM."""
    tn=[]; tc=[]
    block = max(3, reps // 3)
    for _ in range(3):
        for f, ts in ((fn, tn), (fc, tc)):
            f(); f()
            for _ in range(block):
                t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    global LAST_MIN
    LAST_MIN = (min(tn), min(tc))
    return float(np.median(tn)), float(np.median(tc))
def reps_for(f):
    t0=time.perf_counter(); f(); t=time.perf_counter()-t0
    return int(max(7, min(300, 0.6/max(t,1e-6))))
def row(name, tn, tc, flops=None):
    s = f"{name:40s} np {tn*1e3:8.3f} ms  c {tc*1e3:8.3f} ms  {tn/tc:5.2f}x"
    if flops: s += f"  c {flops/tc/1e9:6.1f} GF/s ({flops/tc/1e9/PEAK:4.0%})  np {flops/tn/1e9:6.1f}"
    mn, mc = LAST_MIN
    s += f" | min: {mn/mc:5.2f}x" + (f" c {flops/mc/1e9:6.1f} GF/s" if flops else "")
    print(s, flush=True)
def gemm(n,k,m,ta=False,tb=False,label=None):
    a = rng.standard_normal((k,n) if ta else (n,k)).astype(f32); b = rng.standard_normal((m,k) if tb else (k,m)).astype(f32)
    out=np.empty((n,m),f32); fn=lambda: NP.matmul(a,b,ta,tb,out); fc=lambda: C.matmul(a,b,ta,tb,out)
    tn,tc = pair(fn, fc, reps_for(fn)); row(label or f"matmul {n}x{k}x{m} ta{int(ta)}tb{int(tb)}", tn, tc, 2.0*n*k*m)
import os
from threadpoolctl import threadpool_limits
THREADS = int(os.environ.get("THREADS", "2"))
C.set_num_threads(THREADS); threadpool_limits(THREADS, "blas")
groups = sys.argv[1:] or ["big","mlp","linear","xent"]
if "big" in groups:
    for s in (1024, 2048): gemm(s,s,s)
if "mlp" in groups:
    for (n,k,m) in [(128,784,256),(1024,784,256),(128,256,128)]:
        gemm(n,k,m); gemm(k,n,m,ta=True,label=f"x^T@dz {k}x{n}x{m}"); gemm(n,m,k,tb=True,label=f"dz@w^T {n}x{m}x{k}")
if "linear" in groups:
    for (n,k,m) in [(128,784,256),(1024,784,256)]:
        x=rng.standard_normal((n,k)).astype(f32); w=(rng.standard_normal((k,m))*0.05).astype(f32); b=rng.standard_normal(m).astype(f32)
        out=np.empty((n,m),f32)
        fn=lambda: np.maximum(x@w+b,0); fc=lambda: C.linear_forward(x,w,b,"relu",0.0,out)
        tn,tc=pair(fn,fc,reps_for(fn)); row(f"linear_forward relu ({n},{k}->{m})",tn,tc,2.0*n*k*m)
        y=out.copy(); dy=rng.standard_normal((n,m)).astype(f32); dx=np.empty_like(x); dw=np.empty_like(w); db=np.empty(m,f32)
        fn=lambda: NP.linear_backward(x,w,y,dy,"relu",0.0,dx,dw,db); fc=lambda: C.linear_backward(x,w,y,dy,"relu",0.0,dx,dw,db)
        tn,tc=pair(fn,fc,reps_for(fn)); row(f"linear_backward relu ({n},{k}->{m})",tn,tc,4.0*n*k*m)
if "xent" in groups:
    for (n,c) in [(65536,10),(4096,1000),(512,32000)]:
        lg=rng.standard_normal((n,c)).astype(f32); lb=rng.integers(0,c,n); loss=np.empty(n,f32); g=np.empty_like(lg)
        fn=lambda: NP.softmax_cross_entropy(lg,lb,1.0/n,loss,g); fc=lambda: C.softmax_cross_entropy(lg,lb,1.0/n,loss,g)
        tn,tc=pair(fn,fc,reps_for(fn)); row(f"softmax_xent ({n},{c})",tn,tc)
