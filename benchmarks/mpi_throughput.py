"""Data-parallel throughput: 2 MPI ranks of 1 thread against 1 process of 2 threads.

    python benchmarks/mpi_throughput.py [--rows 30000] [--epochs 3] [--batch 256 1024]

Trains the 784-256-128-10 relu MLP (SGD, momentum 0.9) on random MNIST-shaped float32 data
at the same global batch both ways, alternating single / MPI runs, and prints the median
epoch time of each, the throughput ratio, and the share of each MPI step spent in the
gradient Allreduce. The MPI run is this script under ``mpiexec -n 2 python -m mpi4py``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def train(rows: int, epochs: int, batch: int, backend: str) -> dict:
    import fastnn
    from fastnn import distributed

    fastnn.set_backend(backend)
    rng = np.random.default_rng(0)
    x = rng.random((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    model = fastnn.Sequential([fastnn.Dense(256, "relu", input_dim=784),
                               fastnn.Dense(128, "relu"), fastnn.Dense(10, "softmax")], seed=0)
    model.compile(fastnn.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    comm = distributed.current()
    local_batch = batch // (comm.size if comm else 1)
    seconds = []
    for epoch in range(epochs + 1):  # the first epoch warms up
        started = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=local_batch, seed=epoch, verbose=0)
        seconds.append(time.perf_counter() - started)
    allreduce = distributed.DataParallel.allreduce_seconds if comm else 0.0
    return {"epoch": float(np.median(seconds[1:])), "allreduce_share":
            allreduce / sum(seconds), "threads": fastnn.get_num_threads()[backend],
            "ranks": comm.size if comm else 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--backend", default="c")
    parser.add_argument("--rounds", type=int, default=2, help="alternating pairs of runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = train(args.rows, args.epochs, args.batch[0], args.backend)
        from fastnn import distributed
        if distributed.is_main():
            print(json.dumps(result))
        return
    mpiexec = Path(sys.executable).parent / "mpiexec"
    here = os.path.abspath(__file__)
    common = ["--rows", str(args.rows), "--epochs", str(args.epochs), "--backend",
              args.backend, "--worker"]
    for batch in args.batch:
        single, parallel = [], []
        for _ in range(args.rounds):
            env = dict(os.environ, FASTNN_NUM_THREADS="2", OMP_NUM_THREADS="2")
            out = subprocess.run([sys.executable, here, *common, "--batch", str(batch)],
                                 capture_output=True, text=True, env=env, check=True).stdout
            single.append(json.loads(out.splitlines()[-1]))
            env = {k: v for k, v in os.environ.items()
                   if k not in ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS")}
            out = subprocess.run([str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", "2",
                                  sys.executable, "-m", "mpi4py", here, *common, "--batch",
                                  str(batch)], capture_output=True, text=True, env=env,
                                 check=True).stdout
            parallel.append(json.loads(out.splitlines()[-1]))
        one = np.median([r["epoch"] for r in single])
        two = np.median([r["epoch"] for r in parallel])
        share = np.median([r["allreduce_share"] for r in parallel])
        print(f"global batch {batch}: 1 process x {single[0]['threads']} threads "
              f"{one * 1e3:.0f} ms/epoch; 2 ranks x {parallel[0]['threads']} thread "
              f"{two * 1e3:.0f} ms/epoch; throughput ratio {one / two:.2f}x; "
              f"allreduce {share:.1%} of the MPI run's time ({args.rows} rows)")


if __name__ == "__main__":
    main()
