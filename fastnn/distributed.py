"""Data-parallel training over MPI: the same ``fit``, on as many processes as the user starts.

Run a script under ``mpiexec -n 2 python -m mpi4py script.py`` (or ``mpiexec -n 2 fastnn
train``) and every ``Sequential.fit`` in it trains synchronously data-parallel, with the
semantics of PyTorch's DistributedDataParallel and Horovod:

* rank 0's weights and optimizer state are broadcast to every rank when ``fit`` starts;
* every epoch, all ranks draw one permutation of the rows from a shared seed (rank 0's seed is
  broadcast when ``fit(seed=None)``), and rank ``r`` takes rows ``perm[r::size]``, cut to the
  same length on every rank: the last ``N % size`` rows of the permutation are left out of
  that epoch (as ``DistributedSampler(drop_last=True)``; another permutation leaves out other
  rows next epoch), so every rank runs the same number of steps and none waits forever;
* each step's gradients, a mean over the rank's batch, are summed by one in-place
  ``Allreduce`` of the model's flat gradient buffer and divided by ``size``: with equal
  batches on every rank that is the mean over the global batch, so ``size`` ranks at batch
  ``B`` train like one process at batch ``size * B`` (tests/test_distributed.py checks it).
  With the compiled training loop (fastnn.plan) a step is one backend call for forward and
  backward (MODE_GRADIENTS), the Allreduce, and one call for the update (MODE_APPLY): the
  weights are those of the per-layer path bit for bit. A non-finite loss on any rank travels
  in that same Allreduce (as a NaN gradient) and stops every rank at the same step;
* every rank must call ``fit`` with the same data, model and arguments: before anything
  else is exchanged, two tiny Allreduces compare rows, columns, validation rows, epochs,
  batch size, shuffle, matmul precision, the weights and the architecture
  (:meth:`DataParallel.check_agreement`; fastnn.sklearn adds the estimator's parameters and
  classes), and every rank raises the same ValueError naming what differs and each rank's
  value, instead of a truncated message deep in MPI or a rank waiting forever;
* a callback that sets ``model.stop_training`` on one rank (an EarlyStopping, scikit-learn's
  ``tol``) stops every rank at the same step (:meth:`DataParallel.any_rank`);
* dropout: each rank draws its own masks (the shared seed with its rank mixed in,
  :meth:`DataParallel.dropout_seed`), as each GPU of DistributedDataParallel does;
* the loss and metrics of each epoch, and the validation data (split ``r::size`` across
  ranks, no row twice), are summed across ranks exactly, so History, callbacks and the
  progress line see the global figures on every rank; only rank 0 prints and only rank 0
  writes model files (:meth:`Sequential.save` is a no-op on the other ranks).

Failure: :func:`init` makes an exception that reaches the top of any rank print that rank's
traceback and call ``MPI_Abort``, so the whole job ends with a non-zero exit within seconds
instead of hanging in the next collective (as ``python -m mpi4py`` does). A rank that never
calls ``fit`` would leave the others waiting in its first collective: ``fit`` first meets
every rank (:meth:`DataParallel.meet`) and raises TimeoutError after ``FASTNN_MPI_TIMEOUT``
seconds (default 1800, torch.distributed's 30 minutes), which ends the job so.

Threads: each rank uses ``max(1, cores // ranks on this host)`` threads by default, in
fastnn's backends (C and Numba) and in OpenBLAS (through threadpoolctl). ``FASTNN_NUM_THREADS``
overrides the count. 2 ranks of 2 threads on 2 cores run several times slower than 2 ranks of 1.

Other collective libraries could be plugged in by implementing :class:`Communicator` and
passing it to :func:`init`. mpi4py (and an MPI, e.g. the ``mpich`` wheel) come with the
``mpi`` extra: ``pip install ".[mpi]"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from typing import Optional

import numpy as np

from fastnn import counter_rng
from fastnn.precision import get_matmul_precision

#: Environment variables that MPI launchers set in every process they start, with the size.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                            "PMIX_SIZE", "SLURM_NTASKS")

INSTALL_HINT = ('fastnn.distributed needs mpi4py and an MPI library: pip install ".[mpi]" '
                'from the fastnn source tree (or pip install mpi4py mpich)')


class Communicator:
    """What data-parallel training needs from a collective library.

    Buffers are C-contiguous NumPy arrays, reduced or broadcast in place.
    """

    rank: int = 0
    size: int = 1
    local_size: int = 1

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        """Replace ``buffer`` by the element-wise sum of every rank's ``buffer``."""
        raise NotImplementedError

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        """Replace ``buffer`` on every rank by rank ``root``'s."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every process of the job at once with exit status ``code``."""
        raise NotImplementedError

    def barrier(self, timeout: float) -> bool:
        """Wait until every rank has called ``barrier``: True, or False once ``timeout``
        seconds have passed without that. This default waits without a limit (a blocking
        Allreduce of one number); MPICommunicator's keeps to ``timeout``."""
        self.allreduce_sum(np.zeros(1, np.float64))
        return True


class MPICommunicator(Communicator):
    """:class:`Communicator` over an mpi4py communicator (``MPI.COMM_WORLD`` by default)."""

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise ImportError(f"{INSTALL_HINT} ({exc})") from None
        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        self.comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        self.comm.Bcast(buffer, root=root)

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)

    def barrier(self, timeout: float) -> bool:
        # MPI_Ibarrier, tested until it completes: at once the first millisecond (ranks that
        # call together meet within it), then every millisecond, so a rank waiting for
        # another's data loading does not spin a core. A request left pending by a timeout
        # is left to the abort that ends the job (an uncaught exception, init's hook).
        request = self.comm.Ibarrier()
        started = time.monotonic()
        while not request.Test():
            waited = time.monotonic() - started
            if waited >= timeout:
                return False
            if waited > 1e-3:
                time.sleep(1e-3)
        return True


_current: Optional[Communicator] = None

#: Seconds :meth:`DataParallel.meet` waits when FASTNN_MPI_TIMEOUT is unset (as
#: torch.distributed's default process-group timeout, 30 minutes).
DEFAULT_TIMEOUT_SECONDS = 1800.0

#: Seconds a failing rank waits between writing its traceback and MPI_Abort, so that the
#: launcher forwards the traceback before the abort ends the job.
ABORT_PAUSE_SECONDS = 0.5


def launched_by_mpi() -> bool:
    """True when an MPI launcher (mpiexec, srun) started this process among several."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


#: Environment variables that MPI launchers set to the rank of each process they start.
_LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as its MPI launcher set it (0 when none did), without joining the
    job: for what only rank 0 should say before ``fit`` joins (the numba compile notice)."""
    for name in _LAUNCHER_RANK_VARIABLES:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            continue
    return 0


def init(communicator: Optional[Communicator] = None) -> Communicator:
    """Join the job's data-parallel group (once; later calls return the same communicator).

    communicator: None for MPI's COMM_WORLD through mpi4py, or any :class:`Communicator`.
    Sets the thread counts per rank and makes an uncaught exception abort the whole job.
    Raises ImportError naming the install command when mpi4py is missing.
    """
    global _current
    if _current is not None:
        return _current
    _current = MPICommunicator() if communicator is None else communicator
    if _current.size > 1:
        _set_threads(_current)
        _abort_on_uncaught_exception(_current)
    return _current


def current() -> Optional[Communicator]:
    """The communicator ``fit`` reduces over, or None when this is a single process.

    Under an MPI launcher with more than one process, the first call runs :func:`init`.
    """
    if _current is None and launched_by_mpi():
        init()
    return _current if _current is not None and _current.size > 1 else None


def rank() -> int:
    """This process's rank (0 in a single process)."""
    comm = current()
    return comm.rank if comm is not None else 0


def size() -> int:
    """How many processes train together (1 in a single process)."""
    comm = current()
    return comm.size if comm is not None else 1


def is_main() -> bool:
    """True on rank 0, the rank that prints and writes files."""
    return rank() == 0


def threads_per_rank(comm: Communicator) -> int:
    """``FASTNN_NUM_THREADS`` if set, else this host's cores shared among its ranks."""
    from .environment import num_threads, usable_cpus
    count = num_threads()
    if count is not None:
        return count
    return max(1, usable_cpus() // max(1, comm.local_size))


def _warn_if_oversubscribed(comm: Communicator, cpus: int) -> None:
    """On rank 0: a RuntimeWarning when this host runs more ranks than it has CPUs (each
    rank then waits for a CPU at every collective; -n at most the CPUs)."""
    if comm.rank == 0 and comm.local_size > cpus:
        import warnings
        warnings.warn(f"{comm.local_size} MPI ranks on a host with {cpus} CPUs: ranks share "
                      f"CPUs and every step waits for the slowest; start at most {cpus} "
                      f"(mpiexec -n {cpus})", RuntimeWarning, stacklevel=3)


def _set_threads(comm: Communicator) -> None:
    from .backends import set_num_threads
    from .environment import usable_cpus
    _warn_if_oversubscribed(comm, usable_cpus())
    count = threads_per_rank(comm)
    set_num_threads(count)
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(count)
    except ImportError:  # pragma: no cover - a dependency of fastnn
        pass


def _abort_on_uncaught_exception(comm: Communicator) -> None:
    previous = sys.excepthook

    def hook(kind, value, trace):
        # One write, then a pause before MPI_Abort: the launcher forwards a rank's standard
        # error through a pipe, and the abort ends its forwarding process too, so what was
        # still in the pipe was lost (a sanitizer run's CI once showed the first line alone).
        sys.stderr.write(f"fastnn: rank {comm.rank} of {comm.size} failed; ending the job\n"
                         + "".join(traceback.format_exception(kind, value, trace)))
        sys.stderr.flush()
        time.sleep(ABORT_PAUSE_SECONDS)
        try:
            comm.abort(1)
        except BaseException:  # no abort: the previous hook (e.g. mpi4py's) is the fallback
            previous(kind, value, trace)
            return
        os._exit(1)  # MPI_Abort returned before ending us: the traceback is written once

    sys.excepthook = hook


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _figure(value) -> int:
    """A number as its float64 bits (shown again by :func:`_shown`); anything else as a
    56-bit digest of its JSON form."""
    if _is_number(value):
        return int(np.array(value, np.float64).view(np.int64))
    text = json.dumps(value, sort_keys=True, default=repr).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=7).digest(), "little")


def _shown(bits: np.int64) -> str:
    value = float(np.array(bits, np.int64).view(np.float64))
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)


#: Ranks whose differing figure a message lists before "and N more".
_LISTED_RANKS = 3


class DataParallel:
    """What one ``fit`` does differently under a communicator of ``size`` > 1 ranks."""

    #: Seconds spent in :meth:`average_gradients` by this process (benchmarks read it).
    allreduce_seconds = 0.0

    def __init__(self, comm: Communicator):
        self.comm = comm
        self._scalar = np.zeros(1, np.float64)

    def meet(self, what: str = "fit") -> None:
        """Wait for every rank to reach ``what`` (a ``fit`` call), for at most
        FASTNN_MPI_TIMEOUT seconds (1800 by default, torch.distributed's default timeout):
        a rank that never calls it (a script whose ranks took different branches) would
        otherwise leave the others waiting forever in the first collective. Raises
        TimeoutError naming the wait; uncaught, it ends the whole job (:func:`init`'s hook).
        """
        from .environment import mpi_timeout
        timeout = mpi_timeout() or DEFAULT_TIMEOUT_SECONDS
        if not self.comm.barrier(timeout):
            raise TimeoutError(f"{what} under MPI: rank {self.comm.rank} of {self.comm.size} "
                               f"waited {timeout:g} s for every rank to call {what} "
                               f"(FASTNN_MPI_TIMEOUT); every rank must call {what} the "
                               f"same number of times")

    def shared_seed(self, seed: Optional[int]) -> int:
        """The same training seed on every rank: rank 0's draw when the user gave none."""
        buffer = np.array([-1 if seed is None else seed], np.int64)
        if self.comm.rank == 0 and seed is None:
            buffer[0] = np.random.SeedSequence().entropy % (1 << 62)
        self.comm.broadcast(buffer)
        return int(buffer[0])

    def dropout_seed(self, seed: int) -> int:
        """This rank's own dropout stream from the shared training seed.

        The masks of the counter-based generator are keyed by seed, layer, epoch, step and
        element (fastnn.counter_rng); with the shared seed alone, row ``i`` of every rank's
        batch would get the same mask at every step. Mixing in the rank (SplitMix64's
        finalizer) gives each rank masks independent of every other rank's, the same on every
        backend and path, and reproducible for a given seed and rank count.
        """
        return counter_rng.mix(counter_rng.mix(seed) ^ (self.comm.rank + 1))

    def check_agreement(self, figures: "dict[str, object]", what: str = "fit") -> None:
        """Raise the same ValueError on every rank unless every rank's ``figures`` equal.

        figures: {name: value}, the same names on every rank; numbers (ints, floats) are
        compared and shown as themselves, anything else (strings, lists, dicts: what
        ``json.dumps`` takes) by a 56-bit BLAKE2 digest, shown as which ranks differ. Two
        tiny Allreduces (the names' count and digest, then every rank's figures, gathered
        by summing rows that are zero but on their own rank), so every rank learns every
        rank's figures and all raise the same message, e.g. ``fit under MPI: ranks disagree
        on x rows (rank 0: 100, rank 1: 90)`` (the job then ends through :func:`init`'s
        hook). what: the call named in the message.
        """
        size, rank, names = self.comm.size, self.comm.rank, list(figures)
        keys = np.zeros((size, 2), np.int64)
        keys[rank] = len(names), _figure(names)
        self.comm.allreduce_sum(keys)
        if (keys != keys[0]).any():  # e.g. another estimator class: other parameters
            raise ValueError(f"{what} under MPI: ranks disagree on what they check (other "
                             f"arguments or another estimator class). Every rank must call "
                             f"{what} with the same data, model and arguments")
        values = np.zeros((size, len(names)), np.int64)
        values[rank] = [_figure(figures[name]) for name in names]
        self.comm.allreduce_sum(values)
        parts = []
        for index in np.flatnonzero((values != values[0]).any(axis=0)):
            name, column = names[index], values[:, index]
            others = [r for r in range(1, size) if column[r] != column[0]]
            listed = others[:_LISTED_RANKS]
            more = f", and {len(others) - len(listed)} more ranks" if len(others) > len(
                listed) else ""
            if _is_number(figures[name]):
                shown = ", ".join(f"rank {r}: {_shown(column[r])}" for r in [0] + listed)
                parts.append(f"{name} ({shown}{more})")
            else:
                ranks = ", ".join(map(str, listed))
                parts.append(f"{name} (rank{'s' * (len(others) > 1)} {ranks}{more} "
                             f"differ{'s' * (len(others) == 1)} from rank 0)")
        if parts:
            raise ValueError(f"{what} under MPI: ranks disagree on " + "; ".join(parts) +
                             f". Every rank must call {what} with the same data, model and "
                             "arguments (see fastnn.distributed)")

    def check_fit(self, model, data, validation, **arguments) -> None:
        """:meth:`check_agreement` on what one ``fit`` call must share across ranks: the
        training rows and columns (every rank holds all rows and draws its shard of a shared
        permutation), whether rows are weighted, the validation rows, the fit ``arguments``
        (epochs, batch_size, shuffle: the number of steps and so of collectives), the matmul
        precision (the model's, or fastnn.get_matmul_precision(); a float64 model's is float64
        whatever the setting), and the model: dtype,
        layers with their configurations and weight shapes, loss, optimizer with its state's
        shapes (what :meth:`broadcast_model` sends)."""
        x, targets, _, weights = data
        optimizer = model.optimizer
        figures = {
            "x rows": len(x), "x columns": int(np.prod(x.shape[1:], dtype=np.int64)),
            "y columns": int(np.prod(targets.shape[1:], dtype=np.int64)),
            "sample or class weights given": weights is not None,
            "validation rows": 0 if validation is None else len(validation[0]),
            **{name: -1 if value is None else value for name, value in arguments.items()},
            "matmul precision": ("float64" if np.dtype(model.dtype) == np.float64 else
                                 model.matmul_precision or get_matmul_precision()),
            "weights": model._parameter_storage.size,
            "model (dtype, layers, their configurations and weight shapes)": [
                str(np.dtype(model.dtype))] + [
                [type(layer).__name__, layer.get_config(),
                 [list(np.shape(value)) for value in layer.params]]
                for layer in model.layers],
            "loss": repr(model.loss),
            "optimizer": None if optimizer is None else [
                type(optimizer).__name__, optimizer.get_config(),
                {name: list(np.shape(value)) for name, value in optimizer.state().items()}],
        }
        self.check_agreement(figures)

    def broadcast_model(self, model) -> None:
        """Rank 0's weights, optimizer state and moving statistics everywhere."""
        self.comm.broadcast(model._parameter_storage)
        if model.optimizer is not None:
            state = model.optimizer.state()
            for value in state.values():
                self.comm.broadcast(value)
            model.optimizer._restore(state)
        self.broadcast_buffers(model)

    def broadcast_buffers(self, model) -> None:
        """Rank 0's moving statistics (BatchNormalization's moving mean and variance)
        everywhere, in place: at the start of fit and at each epoch's end, before the
        validation. Each rank's batch norms normalize its own share of each batch (as
        PyTorch's BatchNorm1d under DistributedDataParallel, not SyncBatchNorm), so their
        moving statistics drift apart; as DistributedDataParallel's ``broadcast_buffers``,
        rank 0's are the model's, on every rank: its validation, ``evaluate``, ``predict``
        and saved file all see the same model."""
        for layer in model.layers:
            for name in ("moving_mean", "moving_variance"):
                buffer = getattr(layer, name, None)
                if isinstance(buffer, np.ndarray):
                    self.comm.broadcast(buffer)

    def local_rows(self, samples: int) -> int:
        """Rows each rank trains on per epoch: the same count everywhere."""
        local = samples // self.comm.size
        if local == 0:
            raise ValueError(f"x: {samples} rows cannot give each of {self.comm.size} ranks "
                             f"a row; give at least {self.comm.size}")
        return local

    def shard(self, permutation: np.ndarray, out: np.ndarray) -> None:
        """This rank's rows of a permutation of all rows: ``permutation[rank::size]``, cut."""
        out[...] = permutation[self.comm.rank::self.comm.size][:len(out)]

    def loss_is_finite(self, loss: float) -> bool:
        """True on every rank when every rank's loss is finite (one tiny allreduce)."""
        self._scalar[0] = 0.0 if np.isfinite(loss) else 1.0
        self.comm.allreduce_sum(self._scalar)
        return self._scalar[0] == 0.0

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (one tiny Allreduce). ``fit``
        passes its ``stop_training`` through it after each epoch's hooks (and each batch's,
        when a callback has batch hooks), so a callback that stops training on one rank
        stops every rank at the same step, as one process would, instead of leaving the
        others waiting forever in the next step's Allreduce."""
        self._scalar[0] = 1.0 if flag else 0.0
        self.comm.allreduce_sum(self._scalar)
        return bool(self._scalar[0] > 0)

    def average_gradients(self, gradients: np.ndarray, finite: bool = True) -> bool:
        """Mean of every rank's gradient buffer, in place (one Allreduce).

        finite: False on a rank whose loss was not finite: it sends NaN as its first
        gradient, which the sum carries to every rank. Returns whether the first reduced
        gradient is finite: False on every rank when any rank's loss (or first gradient) was
        not, so that all ranks stop at the same step without a second collective.
        """
        started = time.perf_counter()
        if not finite:
            gradients.flat[0] = np.nan
        self.comm.allreduce_sum(gradients)
        gradients *= gradients.dtype.type(1.0 / self.comm.size)
        DataParallel.allreduce_seconds += time.perf_counter() - started
        return bool(np.isfinite(gradients.flat[0]))

    def train_steps(self, backend, plan, order: np.ndarray, first_step: int, steps: int,
                    stats: np.ndarray) -> int:
        """``backend.train_steps`` (the compiled loop; see the contract) with each step split
        around the gradients' mean across the ranks: a MODE_GRADIENTS call (forward, loss and
        backward of the step, gradients left in ``plan.grads``), :meth:`average_gradients`
        (one in-place Allreduce), then a MODE_APPLY call (the optimizer's update alone).

        Returns the steps done, the same on every rank: a step whose loss is not finite on
        any rank is done by none (its stats row holds this rank's loss). The plan's mode is
        restored on return.
        """
        from .plan import C_MODE, MODE_APPLY, MODE_GRADIENTS
        config = plan.config
        mode = int(config[C_MODE])
        unused_stats = np.zeros((1, 2), np.float64)  # MODE_APPLY writes none
        try:
            for s in range(steps):
                step = first_step + s
                config[C_MODE] = MODE_GRADIENTS
                done = backend.train_steps(plan, order, step, 1, stats[s:s + 1])
                if not self.average_gradients(plan.grads, finite=done == 1):
                    return s
                config[C_MODE] = MODE_APPLY
                backend.train_steps(plan, order, step, 1, unused_stats)
        finally:
            config[C_MODE] = mode
        return steps

    def sum_totals(self, values) -> np.ndarray:
        """Exact sums across ranks of a few float64 totals (loss * rows, rows, correct)."""
        buffer = np.array(values, np.float64)
        self.comm.allreduce_sum(buffer)
        return buffer

    def validation_rows(self, count: int) -> slice:
        """This rank's share of the validation rows: every ``size``-th, no row twice."""
        return slice(self.comm.rank, count, self.comm.size)
