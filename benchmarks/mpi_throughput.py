"""Data-parallel throughput: 2 MPI ranks of 1 thread against 1 process of 2 threads.

    python benchmarks/mpi_throughput.py [--rows 30000] [--epochs 3] [--batch 256 1024]
                                        [--hidden 256 128] [--backend c] [--rounds 2]

Trains a relu MLP 784-hidden-10 (784-256-128-10 by default; SGD, momentum 0.9) on random
MNIST-shaped float32 data at the same global batch both ways, alternating single / MPI runs,
and prints the median epoch time of each, the throughput ratio, the time per step, and the
gradient Allreduce's time per step and share of the MPI run's steps (its time inside fit,
which includes waiting for the slower rank, and the Allreduce of a buffer of the same size
timed alone after a barrier, median of 50), with an 8-byte Allreduce's time (the latency).
The MPI run is this script under ``mpiexec -n 2 python -m mpi4py``; ``fit`` runs the compiled
loop there as in the single process (gradients call, Allreduce, update call per step).

    python benchmarks/mpi_throughput.py --scaling STEP_MS GRADIENT_MB [STEP_MS GRADIENT_MB ...]

prints, without training, the ring-allreduce model of the README ("Scaling on paper") for a
measured compute time per step and gradient size: the Allreduce's time, its share of the step
and the efficiency on 8 and 64 nodes over NETWORKS.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


#: Network assumptions of the scaling model: (name, bandwidth in bytes/s, latency in s), the
#: bandwidth an MPI large-message transfer reaches (about 80-90% of the line rate).
NETWORKS = (("25 GbE (TCP)", 2.5e9, 15e-6), ("100 Gb/s InfiniBand EDR", 11e9, 1.5e-6))


def ring_allreduce_seconds(nodes: int, size: float, bandwidth: float, latency: float) -> float:
    """Ring allreduce of ``size`` bytes over ``nodes``: reduce-scatter then allgather, each
    p - 1 steps of size / p bytes: 2 (p - 1) / p * size / bandwidth + 2 (p - 1) * latency
    (Patarasuk & Yuan 2009; Thakur, Rabenseifner & Gropp 2005; the reduction's arithmetic
    left out)."""
    return 2 * (nodes - 1) / nodes * size / bandwidth + 2 * (nodes - 1) * latency


def print_scaling(pairs) -> None:
    for step_ms, megabytes in zip(pairs[::2], pairs[1::2]):
        for name, bandwidth, latency in NETWORKS:
            for nodes in (8, 64):
                reduce = ring_allreduce_seconds(nodes, megabytes * 1e6, bandwidth, latency)
                step = step_ms * 1e-3 + reduce
                print(f"{megabytes:.2f} MB, compute {step_ms:.2f} ms/step, {name}, {nodes} "
                      f"nodes: allreduce {reduce * 1e3:.3f} ms, {reduce / step:.0%} of the "
                      f"step, efficiency {step_ms * 1e-3 / step:.0%}")


def time_allreduce(comm, size: int, dtype, repeats: int = 50) -> float:
    """Median seconds of an in-place Allreduce of ``size`` elements, after a barrier."""
    buffer = np.ones(size, dtype)
    seconds = []
    for repeat in range(repeats + 5):
        comm.comm.Barrier()
        started = time.perf_counter()
        comm.allreduce_sum(buffer)
        if repeat >= 5:
            seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def train(rows: int, epochs: int, batch: int, backend: str, hidden) -> dict:
    import fastnn
    from fastnn import distributed

    fastnn.set_backend(backend)
    rng = np.random.default_rng(0)
    x = rng.random((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    layers = [fastnn.Dense(hidden[0], "relu", input_dim=784)]
    layers += [fastnn.Dense(units, "relu") for units in hidden[1:]]
    model = fastnn.Sequential(layers + [fastnn.Dense(10, "softmax")], seed=0)
    model.compile(fastnn.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    comm = distributed.current()
    ranks = comm.size if comm else 1
    local_batch = batch // ranks
    seconds, reducing = [], []
    for epoch in range(epochs + 1):  # the first epoch warms up
        before = distributed.DataParallel.allreduce_seconds
        started = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=local_batch, seed=epoch, verbose=0)
        seconds.append(time.perf_counter() - started)
        reducing.append(distributed.DataParallel.allreduce_seconds - before)
    steps = -(-(rows // ranks) // local_batch)
    params = sum(w.size for w in model.get_weights())
    result = {"epoch": float(np.median(seconds[1:])), "steps": steps, "ranks": ranks,
              "threads": fastnn.get_num_threads()[backend], "gradient_bytes": 4 * params,
              "compiled": fastnn.plan.unsupported(model) is None,
              "allreduce_in_fit": float(np.median(reducing[1:])) / steps,
              "allreduce_share": sum(reducing[1:]) / sum(seconds[1:])}
    if comm is not None:
        result["allreduce_alone"] = time_allreduce(comm, params, np.float32)
        result["latency"] = time_allreduce(comm, 1, np.float64)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--backend", default="c")
    parser.add_argument("--rounds", type=int, default=2, help="alternating pairs of runs")
    parser.add_argument("--scaling", type=float, nargs="+", metavar="STEP_MS GRADIENT_MB",
                        help="print the ring-allreduce model for these figures and stop")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scaling:
        if len(args.scaling) % 2:
            parser.error("--scaling: expected pairs STEP_MS GRADIENT_MB")
        print_scaling(args.scaling)
        return
    if args.worker:
        result = train(args.rows, args.epochs, args.batch[0], args.backend, args.hidden)
        from fastnn import distributed
        if distributed.is_main():
            print(json.dumps(result))
        return
    mpiexec = Path(sys.executable).parent / "mpiexec"
    here = os.path.abspath(__file__)
    common = ["--rows", str(args.rows), "--epochs", str(args.epochs), "--backend",
              args.backend, "--hidden", *map(str, args.hidden), "--worker"]
    print(f"784-{'-'.join(map(str, args.hidden))}-10, {args.backend} backend, {args.rows} rows, "
          f"medians of {args.rounds} alternating runs of {args.epochs} epochs")
    for batch in args.batch:
        single, parallel = [], []
        for _ in range(args.rounds):
            env = dict(os.environ, FASTNN_NUM_THREADS="2", OMP_NUM_THREADS="2",
                       NUMBA_NUM_THREADS="2")
            out = subprocess.run([sys.executable, here, *common, "--batch", str(batch)],
                                 capture_output=True, text=True, env=env, check=True).stdout
            single.append(json.loads(out.splitlines()[-1]))
            env = {k: v for k, v in os.environ.items()
                   if k not in ("FASTNN_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
            out = subprocess.run([str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", "2",
                                  sys.executable, "-m", "mpi4py", here, *common, "--batch",
                                  str(batch)], capture_output=True, text=True, env=env,
                                 check=True).stdout
            parallel.append(json.loads(out.splitlines()[-1]))

        def median(runs, key):
            return float(np.median([run[key] for run in runs]))

        one, two = median(single, "epoch"), median(parallel, "epoch")
        steps = single[0]["steps"]
        print(f"global batch {batch} ({steps} steps/epoch, gradients "
              f"{single[0]['gradient_bytes'] / 1e6:.2f} MB, compiled loop "
              f"{single[0]['compiled'] and parallel[0]['compiled']}): "
              f"1 process x {single[0]['threads']} threads {one * 1e3:.0f} ms/epoch "
              f"({one / steps * 1e3:.2f} ms/step); 2 ranks x {parallel[0]['threads']} thread "
              f"{two * 1e3:.0f} ms/epoch ({two / steps * 1e3:.2f} ms/step); throughput ratio "
              f"{one / two:.2f}x; Allreduce in fit {median(parallel, 'allreduce_in_fit') * 1e3:.3f}"
              f" ms/step = {median(parallel, 'allreduce_share'):.1%} of the step; alone "
              f"{median(parallel, 'allreduce_alone') * 1e3:.3f} ms; 8-byte Allreduce "
              f"{median(parallel, 'latency') * 1e6:.1f} us")
        print("  ratios per round:", " ".join(f"{s['epoch'] / p['epoch']:.2f}"
                                              for s, p in zip(single, parallel)))


if __name__ == "__main__":
    main()
