"""fastnn train: train an MLP on the UCI handwritten digits (or --dataset) and report
test accuracy.

The default run (64-128-10 relu MLP, SGD with momentum, 20 epochs of batch 32)
reaches about 98-99% test accuracy in well under a second.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import List

import numpy as np

from . import arguments
from .callbacks import Callback

#: Learning rate of each optimizer when --lr is not given.
DEFAULT_LR = {"sgd": 0.1, "adam": 0.003}


def hidden_sizes(text: str) -> List[int]:
    """``"128,64"`` -> [128, 64] (argparse type of --hidden)."""
    try:
        sizes = [int(part) for part in text.split(",")]  # an empty entry is an error too
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes, got {text!r}")
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive layer sizes, "
                                         f"got {text!r}")
    return sizes


def check_model_fits(hidden: List[int], features: int, classes: int, dtype: str,
                     batch: int) -> None:
    """ValueError naming --hidden when the MLP's parameters, their gradients and the
    optimizer's state (three copies), with a step's activations and their gradients, need
    more bytes than this machine's physical memory: one line before any work, rather than
    NumPy's "Maximum allowed dimension exceeded" or an allocation of hundreds of GiB."""
    units = [features, *hidden, classes]
    weights = sum((inputs + 1) * outputs for inputs, outputs in zip(units, units[1:]))
    need = (3 * weights + 2 * batch * sum(units[1:])) * np.dtype(dtype).itemsize
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: nothing to compare with
        return
    if need > memory:
        shape = "-".join(str(size) for size in units)
        raise ValueError(f"argument --hidden: a {shape} MLP needs {need / 2**30:,.1f} GiB "
                         f"({dtype} weights, gradients, optimizer state and activations), "
                         f"more than this machine's {memory / 2**30:,.1f} GiB of memory")


def add_parser(commands) -> None:
    """Register the ``train`` subcommand on the ``fastnn`` parser's subparsers."""
    parser = commands.add_parser("train", help="train an MLP on the UCI digits",
                                 description=__doc__)
    parser.add_argument("--backend", type=arguments.backend,
                        help="c, numba or numpy (default: the fastest available)")
    parser.add_argument("--epochs", type=arguments.positive_int, default=20,
                        help="passes over the data (20)")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=32,
                        help="rows per step (32)")
    parser.add_argument("--hidden", type=hidden_sizes, default=[128],
                        help="hidden layer sizes, comma-separated (128)")
    parser.add_argument("--optimizer", choices=sorted(DEFAULT_LR), default="sgd",
                        help="sgd (with momentum 0.9) or adam (sgd)")
    parser.add_argument("--lr", type=arguments.positive_float,
                        help="learning rate (sgd 0.1, adam 0.003)")
    parser.add_argument("--seed", type=arguments.non_negative_int, default=0,
                        help="seeds weights, order, split (0)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=arguments.threads_for_training,
                        help="threads of the kernels, at most the CPUs this process may use "
                             "(default: every one, or OMP_NUM_THREADS / NUMBA_NUM_THREADS)")
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                        help="0 silent, 1 a progress bar per epoch on a terminal (one line "
                             "per epoch otherwise), 2 one line per epoch (1)")
    parser.add_argument("--quiet", dest="verbose", action="store_const", const=0,
                        help="no progress output: the same as --verbose 0")
    parser.add_argument("--dataset", default="digits",
                        help="digits (bundled, the default), mnist, fashion_mnist (downloaded "
                             "once), or a .csv/.npz/.npy file")
    parser.add_argument("--target", help="the label column of a CSV or .npy file: a number "
                                         "(from 0; -1 the last, the default) or a CSV name")
    parser.add_argument("--plot", metavar="FILE.png", type=arguments.chart_file,
                        help="draw the training curves into this image (needs matplotlib, "
                             "the plot extra)")
    parser.add_argument("--matmul-precision", choices=["float32", "bfloat16"],
                        default="float32", help="precision of the layers' GEMMs (float32); "
                        "bfloat16: operands rounded to bfloat16, float32 sums")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import fastnn
    from fastnn import distributed
    from fastnn.datasets import for_training

    if args.matmul_precision == "bfloat16" and args.dtype != "float32":
        raise ValueError(f"argument --matmul-precision: bfloat16 needs --dtype float32, got "
                         f"--dtype {args.dtype}")
    # under mpiexec every rank trains its shard (fastnn.distributed); rank 0 alone reports
    say = print if distributed.is_main() else (lambda *_, **__: None)

    if args.backend:
        fastnn.set_backend(args.backend)
    if args.threads:
        fastnn.set_num_threads(args.threads)
    try:
        data = for_training(args.dataset, args.target, seed=args.seed)
    except (OSError, ValueError) as exc:  # no such file, bad file, offline, bad --target
        option, message = "--dataset", str(exc)
        if message.startswith("target: "):
            option, message = "--target", message[len("target: "):]
        elif args.target is not None and "column" in message:
            option = "--target"
        raise ValueError(f"argument {option}: {message}") from exc
    x_train, x_test, y_train, y_test = data.x_train, data.x_test, data.y_train, data.y_test
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    check_model_fits(args.hidden, x_train.shape[1], data.classes, args.dtype, args.batch_size)

    def make_model():
        layers = [fastnn.Dense(size, "relu") for size in args.hidden]
        model = fastnn.Sequential(layers + [fastnn.Dense(data.classes, "softmax")],
                                  dtype=args.dtype, seed=args.seed,
                                  matmul_precision=args.matmul_precision)
        optimizer = (fastnn.SGD(lr, momentum=0.9) if args.optimizer == "sgd"
                     else fastnn.Adam(lr))
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model, optimizer

    model, optimizer = make_model()
    threads = fastnn.get_backend().get_num_threads()
    shape = "-".join(str(size) for size in [x_train.shape[1], *args.hidden, data.classes])
    ranks = distributed.size()
    say(f"fastnn train: {shape} MLP (relu) on {data.description}; backend "
        f"{fastnn.get_backend_name()}, {optimizer}, batch {args.batch_size}"
        + (f" per rank ({args.batch_size * ranks} in all)" if ranks > 1 else "")
        + f", {args.dtype}"
        + (f", {args.matmul_precision} matmuls" if args.matmul_precision != "float32" else "")
        + f", {threads} thread{'s' * (threads != 1)}"
        + (f" per rank, {ranks} MPI ranks (data-parallel)" if ranks > 1 else ""))
    timer = EpochTimer()
    # A diverging run ends in NonFiniteLossError, which the command reports in one line;
    # NumPy's overflow warnings on the way (numpy backend) would only repeat it.
    with np.errstate(over="ignore", invalid="ignore"):
        warm_up(make_model()[0], x_train, y_train, args.batch_size, ranks)
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                            verbose=args.verbose, seed=args.seed, callbacks=[timer])
        loss, accuracy = model.evaluate(x_test, y_test)
    correct = int(round(accuracy * len(x_test)))
    say(f"test accuracy: {accuracy:.2%} ({correct}/{len(x_test)}), test loss {loss:.4f}; "
          f"{np.median(timer.seconds) * 1e3:.1f} ms per epoch (median of {args.epochs})")
    if args.plot and distributed.is_main():
        history.plot(args.plot, title=f"fastnn train: {data.description}")
        say(f"training curves written to {args.plot}")
    return 0


def warm_up(model, x, y, batch_size: int, ranks: int) -> None:
    """One training step of a throwaway copy of the model, before the timed fit: the
    backend's training kernels are then loaded or compiled (the numba backend compiles them
    on a machine's first run, two to three minutes, and says so), so that "ms per epoch" times
    training alone (it included the compile: 67 s for a first numba epoch of 45 ms). Under
    MPI every rank takes part (fit is collective), one batch each."""
    rows = min(len(x), batch_size * ranks)
    model.fit(x[:rows], y[:rows], epochs=1, batch_size=batch_size, verbose=0, shuffle=False)


class EpochTimer(Callback):
    """A fit callback that records the seconds each epoch took."""

    def __init__(self):
        self.seconds: List[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
