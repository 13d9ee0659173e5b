"""The ``fastnn`` command line: train, bench, info and cache.

A bad option value or environment variable ends the command with one line,
``fastnn <command>: error: <what> ...``, naming the option or variable, what
it expects and what it got, and exit status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import warnings
from typing import List, NoReturn, Optional

from . import __version__, arguments, environment, train
from .backends import BackendUnavailableError
from .backends.contract import FLOAT_DTYPES

#: The errors a command reports as one line: what fastnn raises for bad input (ValueError,
#: ModelFileError is one), a backend that cannot load here, a file that cannot be read or
#: written. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, BackendUnavailableError, OSError)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """argparse, with an error as one line instead of the usage text and the error."""

    def error(self, message: str) -> NoReturn:
        self.usage_error(f"{one_line(message)} (see {self.prog} --help)")

    def usage_error(self, message: str, prog: Optional[str] = None) -> NoReturn:
        """Exit 2 with a one-line error about the command line or the environment. Under an
        MPI launcher rank 0 alone writes it: every rank reads the same command line and
        environment, so it would be one line a rank. (Errors while a command runs, such as
        a file one rank cannot read, are written by every rank that meets them.)"""
        from .distributed import launcher_rank
        self.exit(2, f"{prog or self.prog}: error: {message}\n" if launcher_rank() == 0
                  else None)


def info(_args: argparse.Namespace) -> int:
    """Print the version, every backend with why it is unavailable, dtypes, threads, cache."""
    import numpy as np

    from . import cache
    from .backends import backend_status, get_backend_name, get_num_threads

    print(f"fastnn {__version__} (Python {platform.python_version()}, "
          f"NumPy {np.__version__}, {platform.machine()}, {os.cpu_count()} CPUs)")
    status = backend_status()
    print("backends:")
    for name, reason in status.items():
        print(f"  {name:<6} {'available' if reason is None else 'unavailable: ' + reason}")
    requested = environment.backend()
    print(f"default backend: {get_backend_name()}"
          + (f" (FASTNN_BACKEND={requested})" if requested else ""))
    print(f"dtypes: {', '.join(str(d) for d in FLOAT_DTYPES)}")
    if status.get("c") is None:  # the C kernels' instruction set, and why not a higher one
        from .backends import c_backend
        print("c backend " + "\n".join(c_backend.isa_report()))
    from . import distributed
    comm = distributed.current()  # under mpiexec: joins the job and sets threads per rank
    threads = ", ".join(f"{name}={count}" for name, count in get_num_threads().items())
    print(f"threads: {threads}" + (f" (MPI rank {comm.rank} of {comm.size}, "
                                   f"{comm.local_size} on this host)" if comm else ""))
    print(f"cache: {cache.cache_dir()} (clear it with: fastnn cache clear)")
    return 0


#: The options of ``fastnn bench --sweep`` alone, and of the kernel table alone.
SWEEP_OPTIONS = ("--sweep-backend", "--sweep-threads", "--budget", "--dtypes", "--transposes",
                 "--ms", "--ks", "--ns")
KERNEL_OPTIONS = ("--backends", "--threads", "--json")


def bench(args: argparse.Namespace) -> int:
    """Time every kernel on every backend at each thread count; table, and JSON or a chart
    when asked."""
    from . import bench as benchmark

    # an option of the other mode would be ignored: refused, as argparse refuses a bad value
    other = SWEEP_OPTIONS if not args.sweep else KERNEL_OPTIONS
    given = [option for option in other if getattr(args, option[2:].replace("-", "_"))
             is not None]
    if given:
        raise ValueError(f"argument {given[0]}: "
                         + ("only with --sweep" if not args.sweep else "not with --sweep"))
    if args.sweep:  # the GEMM sweep (fastnn/bench_sweep.py)
        from . import bench_sweep
        bench_sweep.run_from_args(args)
        return 0
    threads = {} if args.threads is None else {"threads": tuple(args.threads)}  # else run's
    results = benchmark.run(args.backends, quick=args.quick, progress=True, **threads)
    print(benchmark.format_table(results))
    if args.json:
        benchmark.write_json(results, args.json)
        print(f"\nresults written to {args.json}")
    if args.plot:
        benchmark.plot_speedups(results, args.plot)
        print(f"chart written to {args.plot}")
    return 0


def cache_dir(_args: argparse.Namespace) -> int:
    """Print the folder of fastnn's caches."""
    from . import cache

    print(cache.cache_dir())
    return 0


def _bytes(count: int) -> str:
    """``count`` bytes for people: "0 bytes", "1 byte", "512 bytes", "49.9 MB (49874347 bytes)"
    (decimal units)."""
    if count < 1000:
        return f"{count} byte{'s' * (count != 1)}"
    size, unit = float(count), "bytes"
    for unit in ("kB", "MB", "GB", "TB"):
        size /= 1000
        if size < 999.95:
            break
    return f"{size:.1f} {unit} ({count} bytes)"


def cache_clear(_args: argparse.Namespace) -> int:
    """Delete fastnn's caches (compiled kernels are rebuilt on next use); print the bytes
    freed and the folder."""
    from . import cache

    folder = cache.cache_dir()
    freed = cache.clear()  # bytes, not files
    print(f"removed {_bytes(freed)} from {folder}")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="fastnn", description="Compiled CPU kernels for training MLPs fast: "
                    "train on the bundled digits, time the kernels, show the set-up. A bad "
                    "option value or FASTNN_* variable ends a command with one line and exit "
                    "status 2.")
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info_parser = commands.add_parser("info", help="version, backends, dtypes, threads, cache")
    info_parser.set_defaults(run=info)

    bench_parser = commands.add_parser(
        "bench", help="time the kernels on every backend",
        description="Time every kernel at a few shapes on every backend and thread count: a "
                    "table of the median time, its interquartile range (marked ! past 20% of "
                    "the median: the machine was busy), the rate and the speedup over numpy. "
                    "No file is written unless --json or --plot asks.")
    bench_parser.add_argument("--backends", type=arguments.backends,
                              help="comma-separated names (default: all available)")
    bench_parser.add_argument("--threads", type=arguments.cpu_thread_counts,
                              help="comma-separated thread counts, each at most the CPUs this "
                                   "process may use (default 1,2)")
    bench_parser.add_argument("--quick", action="store_true", help="one small shape per kernel")
    bench_parser.add_argument("--json", metavar="PATH", type=arguments.output_file,
                              help="write the results as JSON to PATH (default: no file)")
    bench_parser.add_argument("--plot", metavar="FILE.png", type=arguments.chart_file,
                              help="bar chart of the speedups (needs matplotlib)")
    # the GEMM sweep: --sweep, its options, and --plot as its heat map
    from . import bench_sweep
    bench_parser.add_argument("--sweep", action="store_true",
                              help="the GEMM sweep against NumPy (with --quick: a subset; "
                                   "with --plot: a heat map)")
    bench_sweep.add_arguments(bench_parser)
    bench_parser.set_defaults(run=bench)

    train.add_parser(commands)

    cache_parser = commands.add_parser(
        "cache", help="where compiled kernels are cached; clear them",
        description="fastnn caches compiled kernels (Numba's) in one folder: FASTNN_CACHE_DIR, "
                    "or the per-user cache folder. Clearing it is always safe: kernels are "
                    "compiled again on next use.")
    actions = cache_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("dir", help="print the cache folder").set_defaults(run=cache_dir)
    actions.add_parser("clear", help="delete the cached files (rebuilt on next use)"
                       ).set_defaults(run=cache_clear)
    return parser


def one_line_warning(prog: str):
    """A ``warnings.showwarning`` that prints a warning as one line, ``fastnn train: warning:
    <message>``, without the file, line and source Python shows (a command's user did not
    write that code)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = one_line(message)
        if text.startswith("fastnn: "):  # fastnn's own: the prog already says fastnn
            text = text[len("fastnn: "):]
        elif category is not UserWarning:
            text = f"{category.__name__}: {text}"
        stream = sys.stderr if file is None else file
        try:
            stream.write(f"{prog}: warning: {text}\n")
        except (OSError, ValueError):  # no stderr to write to: the warning is lost, as Python's
            pass
    return show


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    prog = f"fastnn {command}" if command in _subparsers(parser) else "fastnn"
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warning(prog)
        # A bad environment variable fails before the options are read: reading them loads
        # backends (--backend), which read the variables, and would blame the option.
        if not {"-h", "--help", "--version"} & set(argv):
            try:
                environment.check()
            except ValueError as exc:
                parser.usage_error(one_line(exc), prog)
        args = parser.parse_args(argv)
        return _run(parser, f"fastnn {args.command}", args)


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    return next((action.choices for action in parser._actions
                 if isinstance(action, argparse._SubParsersAction)), {})


def _run(parser: Parser, prog: str, args: argparse.Namespace) -> int:
    """Run the command; a user's error ends it with one line (see :data:`USER_ERRORS`)."""
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader went away (fastnn info | head -1): end quietly,
        # as other command-line tools do; the rest of the output has no reader
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as exc:
        parser.exit(2, f"{prog}: error: {one_line(exc)}\n")
    except FloatingPointError as exc:  # NonFiniteLossError: the training diverged
        parser.exit(1, f"{prog}: error: {one_line(exc)}\n")
    except MemoryError as exc:  # a model too large for this machine, say
        limit = environment.scratch_limit()
        note = (f" (environment variable FASTNN_SCRATCH_LIMIT={limit} bytes limits the C "
                f"kernels' scratch memory)" if limit is not None else "")
        parser.exit(1, f"{prog}: error: out of memory: {one_line(exc)}{note}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{prog}: interrupted\n")
