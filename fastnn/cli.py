"""The ``fastnn`` command line: ``fastnn info`` and the commands added beside it."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import List, Optional

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, backends, dtypes, threads").set_defaults(run=info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)
