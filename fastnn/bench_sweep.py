"""The GEMM sweep: ``fastnn.ops.matmul`` against NumPy's ``@`` over a grid of shapes.

Issue 20's sweep (``fastnn bench --sweep``, or ``python -m fastnn.bench_sweep``): M (rows of
the output) in {1, 8, 32, 128, 256, 512, 1024, 4096}, K (inner) and N (columns of the output)
in {16, 256, 1024, 2048, 4096}, the transposes that training uses (``nn``: ``x @ w``, the
forward pass; ``tn``: ``x.T @ dz``, the weight gradient; ``nt``: ``dz @ w.T``, the input
gradient; and ``tt``), float32 and float64, each against NumPy (OpenBLAS here) in the same
run. It prints one row per shape with both times and the ratio NumPy time / fastnn time (above
1: fastnn is faster), then the worst ratio and the geometric mean; ``--plot`` draws a heat map
per dtype and transpose.

``--dtypes bfloat16`` sweeps fastnn's bfloat16 matmul precision (``ops.matmul(...,
precision="bfloat16", out=<a bfloat16 array>)``: float32 operands rounded to bfloat16 in every
call, float32 accumulation, the result rounded to bfloat16; see fastnn.precision) against what
a PyTorch user runs for the same work: ``torch.mm`` on the float32 tensors under
``torch.autocast("cpu", dtype=torch.bfloat16)``, which rounds both operands in every call too
and returns bfloat16. (Until the forty-first session fastnn's side returned its float32 sums,
twice the bytes of C to write.) ``bfloat16_operands`` gives fastnn bfloat16 arrays in and out
against ``torch.mm`` on bfloat16 tensors, so that both sides read and write the same bytes
(issue 20: at least 1.0x at every shape with M >= 32). Both need PyTorch and ml_dtypes (for
the ``ml_dtypes.bfloat16`` arrays). Each
bfloat16 result is checked against the float64 product of the rounded operands within 2e-5 *
sum_k |a||b| (as benchmarks/test_bf16.py), plus half an ulp for a bfloat16 result. PyTorch
shares the process's OpenMP runtime, which fastnn's short wait slows for it
(``torch_wait_note``): ``GOMP_SPINCOUNT=300000 fastnn bench --sweep --dtypes ...`` times both
under libgomp's default wait, as benchmarks/bf16_vs_torch.py does.

Timing: for each shape, blocks of calls of one library alternate with blocks of the other
(three each, every block at least ``block_seconds`` long); a short pause before each block
lets the other library's idle threads stop spinning (OpenBLAS's spin up to 0.1 s), so each
row runs alone. A shape's time is the median over its blocks of the time per call; the
ratio of the fastest blocks (``best``) is printed beside it, as a shared machine's load
slows some blocks and not others.

The full grid is 1600 products, the largest 137 GFLOP each: ``quick`` measures a subset,
and ``budget_seconds`` stops the sweep (with what it has measured) when time runs out.
Benchmark with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``: those variables (set on some
CI machines) slow OpenBLAS down.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import aligned, ops
from .backends import get_num_threads, set_num_threads, use_backend

M_VALUES = (1, 8, 32, 128, 256, 512, 1024, 4096)
KN_VALUES = (16, 256, 1024, 2048, 4096)
TRANSPOSES = ("nn", "tn", "nt", "tt")
DTYPES = ("float32", "float64")
#: The precisions ``--dtypes`` accepts: DTYPES against NumPy, the bfloat16 ones against
#: PyTorch (bfloat16: float32 operands in bfloat16 precision; bfloat16_operands: bfloat16
#: arrays).
BF16_DTYPES = ("bfloat16", "bfloat16_operands")
SWEEP_DTYPES = DTYPES + BF16_DTYPES
#: The rival of each bfloat16 precision (``measure``), and its name in the summary.
RIVALS = {"bfloat16": "autocast", "bfloat16_operands": "torch"}
RIVAL_NAMES = {"numpy": "NumPy", "autocast": "PyTorch autocast bfloat16",
               "torch": "PyTorch bfloat16"}

#: The quick subset: every path of the C GEMM and the cliffs of issue 20, in about a minute.
QUICK_M = (1, 8, 32, 128, 256, 1024)
QUICK_KN = (16, 256, 2048)
QUICK_TRANSPOSES = ("nn", "tn", "nt")
QUICK_DTYPES = ("float32",)

#: Pause before a block of OpenBLAS calls' rival and after it (seconds).
SETTLE_SECONDS = 0.1


def shapes(ms: Iterable[int], ks: Iterable[int], ns: Iterable[int],
           transposes: Iterable[str]) -> List[Tuple[int, int, int, str]]:
    """Every (M, K, N, transposes) of the grid, smallest products first."""
    grid = [(m, k, n, t) for t in transposes for m in ms for k in ks for n in ns]
    return sorted(grid, key=lambda s: (s[0] * s[1] * s[2], s))


def operands(m: int, k: int, n: int, transposes: str, dtype, seed: int = 0):
    """a, b stored as ``matmul`` reads them: a (M, K), or (K, M) when transposed; b alike."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if transposes[0] == "t" else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transposes[1] == "t" else (k, n)).astype(dtype)
    return a, b


def _block_time(call, count: int) -> float:
    begin = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - begin) / count


def time_pair(ours, theirs, block_seconds: float = 0.02,
              rounds: int = 3) -> Tuple[List[float], List[float]]:
    """Seconds per call of ``ours`` and ``theirs`` in each of their alternating blocks."""
    ours()
    theirs()  # warm-up: scratch buffers, page faults, thread pools
    single = max(1e-7, min(_block_time(ours, 1), _block_time(theirs, 1)))
    count = max(1, min(1000, int(block_seconds / single)))
    ours_times, theirs_times = [], []
    for _ in range(rounds):
        time.sleep(SETTLE_SECONDS)
        theirs_times.append(_block_time(theirs, count))
        time.sleep(SETTLE_SECONDS)
        ours_times.append(_block_time(ours, count))
    return ours_times, theirs_times


def _import_torch():
    """``import torch`` without fastnn's ``GOMP_SPINCOUNT`` in the environment (fastnn sets it
    when it is imported, fastnn.backends.runtime). A process has one GNU OpenMP runtime
    (``libgomp.so.1``), loaded by the first library that needs it and then shared: when torch
    loads it first (no fastnn kernel has run yet, as in benchmarks/bf16_vs_torch.py), both
    libraries run under libgomp's default wait; when fastnn's C library was loaded first (the
    ``fastnn bench`` command loads it while checking its arguments), torch runs under fastnn's
    short spin and this changes nothing. (Measured under fastnn's spin in one sweep: torch.mm
    32 x 1024 x 1024 in bfloat16 0.39-0.43 ms against 0.08-0.09 ms; README, "The engine on a
    shared machine", on what the short spin does on a VM.)"""
    from .backends import runtime
    saved = os.environ.pop("GOMP_SPINCOUNT", None) if runtime.WAIT_POLICY_SET_BY_FASTNN else None
    try:
        import torch
    finally:
        if saved is not None:
            os.environ["GOMP_SPINCOUNT"] = saved
    return torch


def _torch_tensor(torch, x: np.ndarray, dtype=None):
    """``x`` as a tensor in its own layout, converted to ``dtype`` (if given) in that layout: a
    transposed view of a stored array (``a.T``) stays a transposed view of the stored tensor,
    as autograd hands ``torch.mm`` ``x.t()`` for the weight gradient; not a contiguous copy made
    outside the timing, which would leave PyTorch the untransposed product."""
    if not x.flags.c_contiguous and x.T.flags.c_contiguous:
        stored = torch.from_numpy(x.T)
        return (stored if dtype is None else stored.to(dtype)).t()
    tensor = torch.from_numpy(np.ascontiguousarray(x))
    return tensor if dtype is None else tensor.to(dtype)


def _torch_bfloat16(a_op: np.ndarray, b_op: np.ndarray, threads: int, autocast: bool = False):
    """PyTorch's bfloat16 product of the same operands, in the same layouts (a transposed
    operand as a transposed view: _torch_tensor), on ``threads`` threads: ``torch.mm`` on
    bfloat16 tensors (converted once, outside the timing), or (``autocast``) on the float32
    tensors under ``torch.autocast("cpu", dtype=torch.bfloat16)``, which converts them in every
    call; ImportError with the install hint when PyTorch is missing."""
    try:
        torch = _import_torch()
    except ImportError as exc:
        raise ImportError("the bfloat16 sweep compares against PyTorch's bfloat16 matmul: "
                          "pip install torch") from exc
    torch.set_num_threads(threads)
    dtype = None if autocast else torch.bfloat16
    ta, tb = (_torch_tensor(torch, x, dtype) for x in (a_op, b_op))
    if autocast:
        def product():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return torch.mm(ta, tb)
        return product
    return lambda: torch.mm(ta, tb)


def _bfloat16_arrays(*arrays: np.ndarray):
    """The arrays as ``ml_dtypes.bfloat16`` arrays (rounded to nearest even, as torch's
    ``.to(torch.bfloat16)``), each starting on a 64-byte line as torch's tensors do (NumPy
    promises 16 bytes; the AMX kernel reads an A on lines in place); ImportError with the
    install hint when ml_dtypes is missing."""
    try:
        import ml_dtypes
    except ImportError as exc:
        raise ImportError("the bfloat16 sweeps give fastnn bfloat16 arrays: "
                          "pip install ml_dtypes") from exc
    placed = []
    for array in arrays:
        view = aligned.empty(array.shape, ml_dtypes.bfloat16)
        view[...] = array  # ml_dtypes' float32 -> bfloat16: round to nearest even
        placed.append(view)
    return tuple(placed)


def _check(out: np.ndarray, expected: Optional[np.ndarray], a_op: np.ndarray,
           b_op: np.ndarray, dtype: str, label: str):
    """The float dtypes against NumPy's product ``expected``; bfloat16 against the float64
    product of the operands rounded to bfloat16, within 2e-5 * sum_k |a_ik| |b_kj| (float32
    accumulation)."""
    if dtype in BF16_DTYPES:
        ra = ops.round_bfloat16(np.ascontiguousarray(a_op)).astype(np.float64)
        rb = ops.round_bfloat16(np.ascontiguousarray(b_op)).astype(np.float64)
        exact = ra @ rb
        bound = 2e-5 * (np.abs(ra) @ np.abs(rb)) + 1e-30
        if out.dtype != np.float32:  # a bfloat16 result: its rounding too (half an ulp)
            out, bound = out.astype(np.float32), bound + 2.0 ** -8 * np.abs(exact)
        ok = bool(np.all(np.abs(out - exact) <= bound))
    else:
        scale = math.sqrt(a_op.shape[1]) * (1e-4 if dtype == "float32" else 1e-12)
        ok = np.allclose(out, expected, rtol=scale, atol=scale)
    if not ok:
        raise AssertionError(f"matmul {label} {dtype}: wrong result")


def measure(m: int, k: int, n: int, transposes: str, dtype: str, backend: str = "c",
            block_seconds: float = 0.02, threads: Optional[int] = None) -> Dict:
    """One row of the sweep: both times, the ratio (rival's time / fastnn's) and fastnn's
    GFLOP/s; checks the result. The rival is NumPy's ``@`` for float32 and float64; PyTorch's
    ``torch.mm`` (on ``threads`` threads) under autocast on float32 tensors for bfloat16 (rival
    "autocast"), on bfloat16 tensors for bfloat16_operands (rival "torch")."""
    bf16 = dtype in BF16_DTYPES
    a, b = operands(m, k, n, transposes, "float32" if bf16 else dtype)
    trans_a, trans_b = transposes[0] == "t", transposes[1] == "t"
    a_op, b_op = (a.T if trans_a else a), (b.T if trans_b else b)
    # bfloat16: fastnn's C where ops.matmul would allocate it (on a 64-byte line from 2 MB on,
    # fastnn.aligned), as torch.mm places its own; float32 and float64: both from np.empty
    out = aligned.output((m, n), a.dtype) if bf16 else np.empty((m, n), a.dtype)
    expected = None
    if bf16:
        theirs = _torch_bfloat16(a_op, b_op, threads or get_num_threads().get(backend, 1),
                                 autocast=dtype == "bfloat16")
    else:
        expected = np.empty((m, n), a.dtype)
        theirs = lambda: np.matmul(a_op, b_op, out=expected)  # noqa: E731
    if dtype == "bfloat16_operands":  # bfloat16 in and out, as torch.mm on bfloat16 tensors
        ours_a, ours_b, out = _bfloat16_arrays(a, b, np.zeros_like(out))
    elif dtype == "bfloat16":  # float32 in, bfloat16 out, as torch.mm under autocast
        ours_a, ours_b, (out,) = a, b, _bfloat16_arrays(np.zeros_like(out))
    else:
        ours_a, ours_b = a, b
    with use_backend(backend):
        precision = "bfloat16" if bf16 else None
        ours = lambda: ops.matmul(ours_a, ours_b, trans_a, trans_b, out=out,  # noqa: E731
                                  precision=precision)
        ours_times, theirs_times = time_pair(ours, theirs, block_seconds)
    fastnn_s, rival_s = float(np.median(ours_times)), float(np.median(theirs_times))
    _check(out, expected, a_op, b_op, dtype, f"{m}x{k}x{n} {transposes}")
    return {"m": m, "k": k, "n": n, "transposes": transposes, "dtype": dtype,
            "rival": RIVALS[dtype] if bf16 else "numpy", "result_dtype": out.dtype.name,
            "fastnn_s": fastnn_s, "rival_s": rival_s, "ratio": rival_s / fastnn_s,
            "ratio_best": min(theirs_times) / min(ours_times),
            "GFLOP/s": 2.0 * m * k * n / fastnn_s / 1e9}


def run(ms: Sequence[int] = M_VALUES, ks: Sequence[int] = KN_VALUES,
        ns: Sequence[int] = KN_VALUES, transposes: Sequence[str] = TRANSPOSES,
        dtypes: Sequence[str] = DTYPES, backend: str = "c", threads: int = 2,
        budget_seconds: Optional[float] = None, progress=print) -> List[Dict]:
    """Measure the grid (smallest products first) until done or out of budget."""
    saved = get_num_threads().get(backend)
    set_num_threads(threads)
    started = time.perf_counter()
    rows: List[Dict] = []
    try:
        for dtype in dtypes:
            for m, k, n, t in shapes(ms, ks, ns, transposes):
                if budget_seconds is not None and time.perf_counter() - started > budget_seconds:
                    if progress:
                        progress(f"time budget of {budget_seconds:.0f} s spent: stopping")
                    return rows
                row = measure(m, k, n, t, dtype, backend, threads=threads)
                rows.append(row)
                if progress:
                    progress(format_row(row))
    finally:
        if saved:
            set_num_threads(saved)
    return rows


def run_quick(**kwargs) -> List[Dict]:
    """The quick subset (QUICK_*)."""
    return run(QUICK_M, QUICK_KN, QUICK_KN, QUICK_TRANSPOSES, QUICK_DTYPES, **kwargs)


def format_row(row: Dict) -> str:
    return (f"{row['dtype']:<8} {row['transposes']:<3} {row['m']:>5} x{row['k']:>5} x{row['n']:>5}"
            f"  fastnn {row['fastnn_s'] * 1e3:10.4f} ms  {row['rival']:<8} "
            f"{row['rival_s'] * 1e3:10.4f} ms"
            f"  x{row['ratio']:5.2f} (best x{row['ratio_best']:5.2f})"
            f"  {row['GFLOP/s']:7.1f} GFLOP/s")


def summary(rows: Sequence[Dict]) -> Dict:
    """Worst ratio (and its shape), geometric mean, and the count below 0.9x."""
    if not rows:
        return {"shapes": 0}
    worst = min(rows, key=lambda r: r["ratio"])
    return {"shapes": len(rows), "worst": worst["ratio"],
            "worst_shape": f"{worst['dtype']} {worst['transposes']} "
                           f"{worst['m']}x{worst['k']}x{worst['n']}",
            "geomean": math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows)),
            "below_0.9": sum(r["ratio"] < 0.9 for r in rows),
            "worst_best": min(r["ratio_best"] for r in rows),
            "geomean_best": math.exp(sum(math.log(r["ratio_best"]) for r in rows) / len(rows))}


def format_summary(rows: Sequence[Dict]) -> str:
    s = summary(rows)
    if not s["shapes"]:
        return "no shape measured"
    rival = " or ".join(sorted({RIVAL_NAMES[r["rival"]] for r in rows}))
    return (f"{s['shapes']} shapes: worst x{s['worst']:.2f} ({s['worst_shape']}), "
            f"geometric mean x{s['geomean']:.2f}, {s['below_0.9']} below x0.90 "
            f"({rival} time / fastnn time, medians of the blocks); fastest blocks: worst "
            f"x{s['worst_best']:.2f}, geometric mean x{s['geomean_best']:.2f}")


def plot_heatmap(rows: Sequence[Dict], path: str) -> None:
    """One heat map per (dtype, transposes): rows M, columns (K, N), colour the ratio."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install matplotlib, or '.[plot]' "
                         f"from the fastnn source tree ({exc})")
    panels = sorted({(r["dtype"], r["transposes"]) for r in rows})
    figure, axes = plt.subplots(len(panels), 1, figsize=(14, 3 + 2.5 * len(panels)),
                                squeeze=False)
    for axis, (dtype, t) in zip(axes[:, 0], panels):
        mine = [r for r in rows if (r["dtype"], r["transposes"]) == (dtype, t)]
        ms = sorted({r["m"] for r in mine})
        kns = sorted({(r["k"], r["n"]) for r in mine})
        grid = np.full((len(ms), len(kns)), np.nan)
        for r in mine:
            grid[ms.index(r["m"]), kns.index((r["k"], r["n"]))] = r["ratio"]
        image = axis.imshow(np.log2(grid), cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
        axis.set_yticks(range(len(ms)), [str(m) for m in ms])
        axis.set_xticks(range(len(kns)), [f"{k}x{n}" for k, n in kns], rotation=90)
        axis.set_ylabel("M")
        rival = RIVAL_NAMES[mine[0]["rival"]]
        axis.set_title(f"{dtype} {t}: {rival} time / fastnn time (K x N)")
        for i in range(len(ms)):
            for j in range(len(kns)):
                if not np.isnan(grid[i, j]):
                    axis.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=6)
        figure.colorbar(image, ax=axis, label="log2 ratio")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _names_of(allowed):
    """argparse type: comma-separated names from ``allowed``, each once -> a tuple."""
    def parse(text: str):
        names = [name.strip() for name in text.split(",")]
        if not names or any(name not in allowed for name in names) \
                or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"expected comma-separated names from "
                                             f"{','.join(allowed)}, each once, got {text!r}")
        return tuple(names)
    return parse


def _sizes(text: str):
    """argparse type: comma-separated positive ints, each once -> a tuple (a slice of the grid)."""
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, each once, "
                                         f"got {text!r}")
    return tuple(sizes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's options (shared by ``fastnn bench --sweep`` and ``python -m``), each
    checked by argparse before the sweep starts."""
    from . import arguments
    parser.add_argument("--sweep-backend", type=arguments.backend,
                        help="fastnn backend to sweep (c)")
    parser.add_argument("--sweep-threads", type=arguments.threads_for_training,
                        help="threads, at most the CPUs this process may use (2)")
    parser.add_argument("--budget", type=arguments.positive_float, default=None,
                        help="stop the sweep after this many seconds")
    parser.add_argument("--dtypes", type=_names_of(SWEEP_DTYPES), default=None,
                        help="comma-separated of float32,float64 (against NumPy), "
                             "bfloat16 (float32 arrays in bfloat16 precision, a bfloat16 "
                             "result) and bfloat16_operands (bfloat16 arrays), both "
                             "against PyTorch's bfloat16 matmul (need ml_dtypes)")
    parser.add_argument("--transposes", type=_names_of(TRANSPOSES), default=None,
                        help="comma-separated of nn,tn,nt,tt")
    for name, what in (("ms", "M (rows of the output)"), ("ks", "K (inner)"),
                       ("ns", "N (columns of the output)")):
        parser.add_argument(f"--{name}", type=_sizes, default=None,
                            help=f"a slice of the grid: the values of {what}, e.g. 1,8,32")


def torch_wait_note() -> Optional[str]:
    """The note the bfloat16 sweep prints when fastnn set this process's OpenMP wait (its
    short ``GOMP_SPINCOUNT``, fastnn.backends.runtime), which PyTorch shares (one libgomp per
    process, loaded here by fastnn's C library first): ``torch.mm``'s threads then sleep
    between calls and each call waits for their wake-up (32 x 1024 x 1024: 0.39-0.43 ms
    against 0.08-0.09 ms under libgomp's default), which flatters fastnn's ratios. None when
    the user set the wait (``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``): both libraries then run
    under it."""
    from .backends import runtime
    if not runtime.WAIT_POLICY_SET_BY_FASTNN:
        return None
    return (f"note: PyTorch shares this process's OpenMP runtime, which fastnn set to a short "
            f"wait (GOMP_SPINCOUNT={runtime.SPIN_COUNT}): its threads sleep between calls, "
            f"which slows torch.mm; GOMP_SPINCOUNT=300000 (libgomp's default) before the "
            f"command times both libraries under libgomp's default wait")


def run_from_args(args: argparse.Namespace) -> List[Dict]:
    """Run the sweep as the parsed options say, print the summary, plot if asked."""
    kwargs = dict(budget_seconds=args.budget)  # backend and threads: run's defaults unless given
    if args.sweep_backend is not None:
        kwargs["backend"] = args.sweep_backend
    if args.sweep_threads is not None:
        kwargs["threads"] = args.sweep_threads
    quick = getattr(args, "quick", False)
    grid = dict(ms=QUICK_M if quick else M_VALUES, ks=QUICK_KN if quick else KN_VALUES,
                ns=QUICK_KN if quick else KN_VALUES,
                transposes=QUICK_TRANSPOSES if quick else TRANSPOSES,
                dtypes=QUICK_DTYPES if quick else DTYPES)
    for name in ("dtypes", "transposes", "ms", "ks", "ns"):
        if getattr(args, name, None):
            grid[name] = getattr(args, name)
    if any(dtype in BF16_DTYPES for dtype in grid["dtypes"]):
        note = torch_wait_note()
        if note:
            print(note)
    rows = run(**grid, **kwargs)
    print(format_summary(rows))
    if getattr(args, "plot", None):
        plot_heatmap(rows, args.plot)
        print(f"heat map written to {args.plot}")
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastnn.bench_sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick subset")
    parser.add_argument("--plot", metavar="FILE.png", help="heat map of the ratios")
    add_arguments(parser)
    run_from_args(parser.parse_args(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
