"""Issue 20's wide-layer targets in ONE process, alternating blocks, medians (fastest):
``linear_forward`` and ``linear_backward`` (relu) at 256 x 2048 -> 2048 and 128 x 4096 -> 4096
against the same in NumPy, and the 784-2048-2048-10 epoch at batch 256 against PyTorch eager
float32 (fastnn.bench_training), on NT threads (default 2; NumPy's through threadpoolctl).

    NT=2 python benchmarks/sweep_tables/wide_targets.py linear
    NT=2 python benchmarks/sweep_tables/wide_targets.py epoch 4096
"""
import sys, time, numpy as np, os
os.environ.setdefault("OMP_NUM_THREADS","2")
import fastnn
from fastnn import ops
from fastnn.bench_training import fastnn_epoch, torch_epoch
NT=int(os.environ.get("NT","2")); fastnn.set_backend("c"); fastnn.set_num_threads(NT)
from threadpoolctl import threadpool_limits; threadpool_limits(NT)
what=sys.argv[1]
def alt(fs, rounds=7, settle=0.1):
    res={k:[] for k in fs}
    for r in range(rounds):
        for k,f in fs.items():
            time.sleep(settle); t=time.perf_counter(); f(); res[k].append(time.perf_counter()-t)
    return {k:(float(np.median(v)),min(v)) for k,v in res.items()}
rng=np.random.default_rng(0)
if what=="linear":
    for n,k,m in [(256,2048,2048),(128,4096,4096)]:
        x=rng.standard_normal((n,k)).astype("f4"); w=(rng.standard_normal((k,m))*0.02).astype("f4"); b=np.zeros(m,"f4")
        y=ops.linear_forward(x,w,b,"relu"); dy=rng.standard_normal((n,m)).astype("f4")
        reps=5
        def npf():
            for _ in range(reps): np.maximum(x@w+b,0)
        def fnf():
            for _ in range(reps): ops.linear_forward(x,w,b,"relu")
        def npb():
            for _ in range(reps):
                dz=dy*(y>0); dw=x.T@dz; dx=dz@w.T; db=dz.sum(0)
        def fnb():
            for _ in range(reps): ops.linear_backward(x,w,y,dy,"relu")
        r=alt({"np_fwd":npf,"fn_fwd":fnf,"np_bwd":npb,"fn_bwd":fnb})
        print(f"{n}x{k}->{m} fwd np {r['np_fwd'][0]/reps*1e3:.2f} fn {r['fn_fwd'][0]/reps*1e3:.2f} ms x{r['np_fwd'][0]/r['fn_fwd'][0]:.2f} (best x{r['np_fwd'][1]/r['fn_fwd'][1]:.2f}) | bwd np {r['np_bwd'][0]/reps*1e3:.2f} fn {r['fn_bwd'][0]/reps*1e3:.2f} ms x{r['np_bwd'][0]/r['fn_bwd'][0]:.2f} (best x{r['np_bwd'][1]/r['fn_bwd'][1]:.2f})", flush=True)
else:
    samples=int(sys.argv[2]) if len(sys.argv)>2 else 8192
    x=rng.standard_normal((samples,784)).astype("f4"); y=rng.integers(0,10,samples).astype(np.int64)
    fe=fastnn_epoch("c",x,y,256,(2048,2048)); te=torch_epoch(x,y,256,(2048,2048),"relu",NT)
    fe(); te()
    r=alt({"fastnn":fe,"torch":te},rounds=5)
    print(f"784-2048-2048-10 batch 256, {samples} rows: fastnn {r['fastnn'][0]*1e3:.0f} ms (best {r['fastnn'][1]*1e3:.0f}) torch {r['torch'][0]*1e3:.0f} ms (best {r['torch'][1]*1e3:.0f}) torch/fastnn x{r['torch'][0]/r['fastnn'][0]:.2f} (best x{r['torch'][1]/r['fastnn'][1]:.2f})", flush=True)
