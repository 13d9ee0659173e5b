"""The ``fastnn`` command line: ``fastnn info`` and the commands added beside it."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import List, Optional

from . import train
from .backends.contract import FLOAT_DTYPES


def info(_args: argparse.Namespace) -> int:
    """Print the version, every backend with why it is unavailable, dtypes and threads."""
    import numpy as np

    import fastnn
    from .backends import backend_status, get_backend_name, get_num_threads

    print(f"fastnn {fastnn.__version__} (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs)")
    status = backend_status()
    print("backends:")
    for name, reason in status.items():
        print(f"  {name:<6} {'available' if reason is None else 'unavailable: ' + reason}")
    print(f"default backend: {get_backend_name()}"
          + (f" (FASTNN_BACKEND={os.environ['FASTNN_BACKEND']})"
             if os.environ.get("FASTNN_BACKEND") else ""))
    print(f"dtypes: {', '.join(str(d) for d in FLOAT_DTYPES)}")
    threads = ", ".join(f"{name}={count}" for name, count in get_num_threads().items())
    print(f"threads: {threads}")
    return 0


def bench(args: argparse.Namespace) -> int:
    """Time every kernel on every backend at each thread count; table, JSON, plot."""
    from . import bench as benchmark

    if args.sweep:  # --- the GEMM sweep (engineer gemm; fastnn/bench_sweep.py) ---
        from . import bench_sweep
        bench_sweep.run_from_args(args)
        return 0
    backends = args.backends.split(",") if args.backends else None
    threads = tuple(int(t) for t in args.threads.split(","))
    results = benchmark.run(backends, threads, quick=args.quick, progress=True)
    print(benchmark.format_table(results))
    benchmark.write_json(results, args.json)
    print(f"\nresults written to {args.json}")
    if args.plot:
        benchmark.plot_speedups(results, args.plot)
        print(f"chart written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, backends, dtypes, threads").set_defaults(run=info)
    bench_parser = commands.add_parser("bench", help="time the kernels on every backend")
    bench_parser.add_argument("--backends", help="comma-separated names (default: all available)")
    bench_parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    bench_parser.add_argument("--quick", action="store_true", help="one small shape per kernel")
    bench_parser.add_argument("--json", default="fastnn-bench.json", help="results file")
    bench_parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the speedups")
    # --- the GEMM sweep (engineer gemm): --sweep, its options, and --plot as its heat map ---
    from . import bench_sweep
    bench_parser.add_argument("--sweep", action="store_true",
                              help="the GEMM sweep against NumPy (with --quick: a subset; "
                                   "with --plot: a heat map)")
    bench_sweep.add_arguments(bench_parser)
    # --- end of the GEMM sweep's options ---
    bench_parser.set_defaults(run=bench)
    train.add_parser(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)
