"""Data-parallel training over MPI (fastnn.distributed), in real ``mpiexec -n 2`` jobs.

Each job runs as a subprocess with a hard timeout (and MPIEXEC_TIMEOUT), so a deadlock fails
the test instead of hanging the suite. The reference runs in this process, single.
"""

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Dense, Dropout, Sequential, counter_rng, distributed
from fastnn import plan as plan_module

from conftest import BACKENDS, DTYPES

sys.path.insert(0, str(Path(__file__).parent / "mpi"))
from job import make_data, make_model, sklearn_classifier  # noqa: E402

WORKER = Path(__file__).parent / "mpi" / "worker.py"
SKLEARN_WORKER = Path(__file__).parent / "mpi" / "sklearn_worker.py"
BATCHNORM_WORKER = Path(__file__).parent / "mpi" / "batchnorm_worker.py"
TIMEOUT = 120
#: The compiled backends under test (FASTNN_TEST_BACKENDS; FASTNN_REQUIRE_BACKENDS makes a
#: missing one an error, as in CI).
COMPILED = [name for name in ("c", "numba") if name in BACKENDS]


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def run_job(tmp_path, *args, module=True, ranks=2, worker=WORKER):
    out = tmp_path / "result.npz"
    launcher = [sys.executable, "-m", "mpi4py"] if module else [sys.executable]
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(TIMEOUT - 10))
    env.pop("FASTNN_NUM_THREADS", None)
    started = time.monotonic()
    done = subprocess.run([mpiexec(), "-n", str(ranks), *launcher, str(worker), str(out),
                           *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT,
                          env=env, cwd=tmp_path)
    return done, out, time.monotonic() - started


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("rows", [256, 200])  # 200: a short last batch (100 rows a rank)
def test_two_ranks_at_batch_b_train_like_one_process_at_2b(tmp_path, backend, optimizer,
                                                           rows):
    batch, epochs = 16, 3
    done, out, _ = run_job(tmp_path, backend, optimizer, rows, batch, epochs)
    assert done.returncode == 0, done.stderr
    result = np.load(out)
    assert int(result["size"]) == 2
    # the compiled loop trained: every step as gradients, Allreduce, update
    assert int(result["split_steps"]) == epochs * -(-rows // 2 // batch)
    x, y, x_val, y_val = make_data(rows)
    with fastnn.use_backend(backend):
        model = make_model(optimizer)
        history = model.fit(x, y, epochs=epochs, batch_size=2 * batch, seed=3, verbose=0,
                            validation_data=(x_val, y_val))
    # float32: a mean of two half-batch means against one mean over the whole batch differ
    # in rounding (a few ulps a step), which 3 epochs of training carry into the weights.
    for key, values in history.history.items():
        np.testing.assert_allclose(result[f"history_{key}"], values, rtol=2e-4, atol=1e-5,
                                   err_msg=key)
    for index, weight in enumerate(model.get_weights()):
        np.testing.assert_allclose(result[f"weight_{index}"], weight, rtol=1e-3, atol=1e-4)
    # rank 0 alone wrote the model file, and it holds the trained weights
    saved = fastnn.load_model(str(out) + ".model.npz")
    for index, weight in enumerate(saved.get_weights()):
        np.testing.assert_array_equal(weight, result[f"weight_{index}"])


@pytest.mark.parametrize("path", ["compiled", "per-layer"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_sklearn_fit_on_two_ranks_at_batch_b_is_one_process_at_2b_l2_term_included(
        tmp_path, solver, path):
    """scikit-learn's L2 term divides by the rows of the whole batch (both ranks'), and the
    loss curve holds it once: before, each rank divided alpha by its own rows (twice the
    weight decay) and the compiled loop's loss got the term twice."""
    backend = COMPILED[0] if COMPILED else "numpy"
    done, out, _ = run_job(tmp_path, backend, solver, path, worker=SKLEARN_WORKER)
    assert done.returncode == 0, done.stderr
    result = np.load(out)
    assert int(result["size"]) == 2
    from fastnn.sklearn import MLPClassifier
    x, y, _, _ = make_data(256)
    with pytest.warns(Warning):  # max_iter ends the fit (ConvergenceWarning)
        single = sklearn_classifier(MLPClassifier, backend, solver, batch=32).fit(x, y)
    # float32, two half-batch means against one mean (test above)
    np.testing.assert_allclose(result["loss_curve"], single.loss_curve_, rtol=2e-4)
    for index, weight in enumerate(single.coefs_ + single.intercepts_):
        np.testing.assert_allclose(result[f"weight_{index}"], weight, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("path", ["compiled", "per-layer"])
def test_every_rank_ends_each_epoch_with_rank_0s_batch_norm_statistics(tmp_path, path):
    """Each rank's batch norm sees its own share of each batch, so the ranks' moving statistics
    drift apart; as DistributedDataParallel's broadcast_buffers, every rank then takes rank
    0's: the same model on every rank for validation, evaluate, predict and the saved file
    (before, the two ranks' moving means differed in the second decimal)."""
    backend = COMPILED[0] if COMPILED else "numpy"
    done, out, _ = run_job(tmp_path, backend, path, worker=BATCHNORM_WORKER)
    assert done.returncode == 0, done.stderr
    ranks = [np.load(f"{out}.{rank}.npz") for rank in (0, 1)]
    assert int(ranks[0]["size"]) == 2
    for name in ("moving_mean", "moving_variance", "predictions", "val_loss"):
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    assert np.abs(ranks[0]["moving_mean"]).max() > 1e-3  # they moved
    assert ranks[0]["val_loss"][-1] < ranks[0]["val_loss"][0]  # it trained


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_ranks_train_the_same_with_the_compiled_loop_and_the_per_layer_path(
        tmp_path, backend, optimizer):
    """Both paths make the same kernel calls and one Allreduce of the same gradient buffer
    a step, so the weights and the accuracies agree bit for bit; the training loss to 1e-6
    (the compiled loop sums each batch's float32 row losses in float64, the per-layer path
    in float32; test_compiled_loop.py states the same)."""
    rows, batch, epochs = 200, 16, 3  # 100 rows a rank: a short last batch
    done, out, _ = run_job(tmp_path, backend, optimizer, rows, batch, epochs, "compare")
    assert done.returncode == 0, done.stderr
    result = np.load(out)
    assert int(result["split_steps"]) == epochs * 7
    assert int(result["per_layer_split_steps"]) == 0
    names = [name for name in result.files if name.startswith(("history_", "weight_"))]
    assert len(names) == 4 + 4  # loss, accuracy, val_loss, val_accuracy; 2 Dense layers
    for name in names:
        if name == "history_loss":
            np.testing.assert_allclose(result[name], result[f"per_layer_{name}"], rtol=1e-6)
        else:
            np.testing.assert_array_equal(result[name], result[f"per_layer_{name}"],
                                          err_msg=name)
    assert result["history_loss"][-1] < result["history_loss"][0]  # it trained


def test_rows_that_do_not_split_evenly_never_hang_and_metrics_count_exactly(tmp_path):
    # 201 rows on 2 ranks: 100 each per epoch (one row of each permutation left out);
    # 51 validation rows split 26 / 25 and summed exactly across the ranks.
    done, out, _ = run_job(tmp_path, "c", "sgd", 201, 32, 2)
    assert done.returncode == 0, done.stderr
    result = np.load(out)
    x, y, x_val, y_val = make_data(201)
    model = make_model("sgd")
    model.build(12)
    model.set_weights([result[f"weight_{i}"] for i in range(4)])
    loss, accuracy = model.evaluate(x_val, y_val)
    np.testing.assert_allclose(result["history_val_loss"][-1], loss, rtol=1e-5)
    assert result["history_val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-12)
    assert round(accuracy * 51) == pytest.approx(accuracy * 51, abs=1e-9)


def test_an_exception_on_one_rank_ends_the_job_nonzero_within_seconds(tmp_path):
    # plain python, not python -m mpi4py: fastnn.distributed's own hook aborts the job
    done, _, seconds = run_job(tmp_path, "c", "sgd", 256, 16, 5, "raise", module=False)
    assert done.returncode != 0
    assert seconds < 30
    assert "a callback failed on rank 1" in done.stderr


def test_ranks_with_different_data_all_raise_a_value_error_naming_it(tmp_path):
    # before: rank 0's Bcast of the permutation's rows truncated rank 1's, a raw MPI abort
    done, _, seconds = run_job(tmp_path, "c", "sgd", 256, 16, 2, "mismatch", module=False)
    assert done.returncode != 0
    assert seconds < 30
    # the same message on both ranks
    assert done.stderr.count("ValueError: fit under MPI: ranks disagree on x rows (rank 0: "
                             "256, rank 1: 264). Every rank") == 2, done.stderr
    assert "truncated" not in done.stderr


def test_a_rank_that_never_calls_fit_ends_the_job_after_the_timeout(tmp_path, monkeypatch):
    # before: rank 0 waited forever in fit's first collective
    monkeypatch.setenv("FASTNN_MPI_TIMEOUT", "3")
    done, _, seconds = run_job(tmp_path, "c", "sgd", 256, 16, 2, "absent", module=False)
    assert done.returncode != 0
    assert 3 <= seconds < 60
    assert ("TimeoutError: fit under MPI: rank 0 of 2 waited 3 s for every rank to call fit "
            "(FASTNN_MPI_TIMEOUT)") in done.stderr, done.stderr


@pytest.mark.parametrize("option", ["stop-epoch", "stop-batch"])
def test_a_callback_that_stops_one_rank_stops_every_rank_at_the_same_step(tmp_path, option):
    # before: rank 1 left fit, rank 0 waited in the next step's Allreduce (a hang)
    done, out, _ = run_job(tmp_path, "c", "sgd", 256, 16, 4, option)
    assert done.returncode == 0, done.stderr
    assert len(np.load(out)["history_loss"]) == 1


def test_sklearn_estimators_that_differ_between_ranks_all_raise_naming_the_parameter(
        tmp_path):
    # before: rank 1's tol=10 stopped it after a few epochs, and rank 0 waited forever
    backend = COMPILED[0] if COMPILED else "numpy"
    done, _, seconds = run_job(tmp_path, backend, "sgd", "tol", worker=SKLEARN_WORKER,
                               module=False)
    assert done.returncode != 0 and seconds < 60
    assert done.stderr.count("ValueError: fit under MPI: ranks disagree on tol (rank 0: "
                             "0.0001, rank 1: 10).") == 2, done.stderr


def test_each_rank_gets_its_share_of_the_cores(tmp_path):
    done, out, _ = run_job(tmp_path, "c", "sgd", 64, 16, 1)
    assert done.returncode == 0, done.stderr
    cores = len(os.sched_getaffinity(0))
    assert int(np.load(out)["threads"]) == max(1, cores // 2)


def test_mpiexec_fastnn_train_trains_data_parallel_and_rank_0_alone_reports(tmp_path):
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(TIMEOUT - 10))
    fastnn_command = Path(sys.executable).parent / "fastnn"
    done = subprocess.run([mpiexec(), "-n", "2", str(fastnn_command), "train", "--epochs", "3"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len([line for line in lines if line.startswith("fastnn train:")]) == 1
    assert "2 MPI ranks (data-parallel)" in lines[0]
    assert "batch 32 per rank (64 in all)" in lines[0]  # the global batch, as it trains
    assert len([line for line in lines if line.startswith("Epoch ")]) == 3
    assert len([line for line in lines if line.startswith("test accuracy")]) == 1


def test_without_mpi4py_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_current", None)
    with pytest.raises(ImportError, match=r"pip install \"\.\[mpi\]\""):
        distributed.init()


def test_a_single_process_is_not_distributed():
    assert distributed.current() is None
    assert (distributed.rank(), distributed.size(), distributed.is_main()) == (0, 1, True)


def test_bad_thread_count_variable_names_it(monkeypatch):
    monkeypatch.setenv("FASTNN_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="FASTNN_NUM_THREADS.*'zero'"):
        distributed.threads_per_rank(distributed.Communicator())
    # more threads than CPUs: bounded as NUMBA_NUM_THREADS and --threads are
    too_many = str(len(os.sched_getaffinity(0)) + 1)
    monkeypatch.setenv("FASTNN_NUM_THREADS", too_many)
    with pytest.raises(ValueError, match=f"FASTNN_NUM_THREADS: expected an integer from 1 to "
                                         f".*got '{too_many}'"):
        distributed.threads_per_rank(distributed.Communicator())
    monkeypatch.setenv("FASTNN_NUM_THREADS", "1")
    assert distributed.threads_per_rank(distributed.Communicator()) == 1


# -- the compiled loop's split step (MODE_GRADIENTS, then MODE_APPLY), in one process --------

SPLIT_OPTIMIZERS = {
    "sgd": lambda: SGD(0.05),
    "sgd-nesterov-decay": lambda: SGD(0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "adam": lambda: Adam(0.01, weight_decay=0.001),
}


def split_plan(optimizer, dtype, rows=53, batch=16):
    """A plan of a small dropout model on random data (53 rows: a short last batch)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 5))
    labels = (x[:, :3] + 0.3 * rng.standard_normal((rows, 3))).argmax(axis=1)
    model = Sequential([Dense(7, "tanh", input_dim=5), Dropout(0.25), Dense(6, "relu"),
                        Dense(3, "softmax")], dtype=dtype, seed=1)
    model.compile(SPLIT_OPTIMIZERS[optimizer](), "sparse_categorical_crossentropy",
                  ["accuracy"])
    clock = counter_rng.StepClock()
    for position, layer in enumerate(model.layers):
        layer.set_random(99, position, clock)
    model.build(5)
    plan = plan_module.build(model, model._prepare(x, labels), batch, 99, clock)
    return model, plan, rng.permutation(rows)


def run_steps(backend, plan, order, epochs, split):
    """Train ``epochs`` epochs a step per call, as one MODE_TRAIN call per step or as a
    MODE_GRADIENTS and a MODE_APPLY call per step (checking what each leaves alone); returns
    the stats and each step's gradients."""
    stats, grads = np.zeros((epochs, plan.steps, 2)), []
    with fastnn.use_backend(backend) as module:
        for epoch in range(epochs):
            for step in range(plan.steps):
                plan.refresh(epoch)
                row = stats[epoch, step:step + 1]
                if not split:
                    assert module.train_steps(plan, order, step, 1, row) == 1
                else:
                    before = [plan.params.copy(), plan.state1.copy(), plan.state2.copy(),
                              int(plan.config[plan_module.C_ADAM_STEP])]
                    plan.config[plan_module.C_MODE] = plan_module.MODE_GRADIENTS
                    assert module.train_steps(plan, order, step, 1, row) == 1
                    after = [plan.params, plan.state1, plan.state2,
                             int(plan.config[plan_module.C_ADAM_STEP])]
                    for old, new in zip(before, after):  # nothing updated
                        np.testing.assert_array_equal(old, new)
                    computed = plan.grads.copy()
                    plan.config[plan_module.C_MODE] = plan_module.MODE_APPLY
                    untouched = np.full((1, 2), -7.0)
                    assert module.train_steps(plan, order, step, 1, untouched) == 1
                    np.testing.assert_array_equal(untouched, -7.0)  # no stats written
                    np.testing.assert_array_equal(plan.grads, computed)  # grads only read
                    plan.config[plan_module.C_MODE] = plan_module.MODE_TRAIN
                plan.finish()
                grads.append(plan.grads.copy())
    return stats, grads


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(SPLIT_OPTIMIZERS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_then_apply_equal_train_steps_bit_for_bit(backend, optimizer, dtype):
    results = {}
    for split in (False, True):
        model, plan, order = split_plan(optimizer, dtype)
        stats, grads = run_steps(backend, plan, order, 2, split)
        results[split] = (stats, grads, model.get_weights(), plan.state1.copy(),
                          plan.state2.copy(), getattr(model.optimizer, "steps", None))
    (stats, grads, weights, m, v, count), split = results[False], results[True]
    np.testing.assert_array_equal(split[0], stats)
    for expected, got in zip(grads, split[1]):
        np.testing.assert_array_equal(got, expected)
    for expected, got in zip(weights, split[2]):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(split[3], m)
    np.testing.assert_array_equal(split[4], v)
    assert split[5] == count  # Adam's step count advanced by MODE_APPLY alone
    assert count in (None, 2 * 4)
    assert not np.array_equal(weights[0], split_plan(optimizer, dtype)[0].get_weights()[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_of_a_non_finite_loss_are_not_done_and_update_nothing(backend):
    model, plan, order = split_plan("adam", np.float32)
    plan.x[order[16:32]] = np.nan  # the second step's rows
    before = model.get_weights()
    stats = np.zeros((1, 2))
    plan.config[plan_module.C_MODE] = plan_module.MODE_GRADIENTS
    with fastnn.use_backend(backend) as module:
        assert module.train_steps(plan, order, 0, 1, stats) == 1
        assert np.isfinite(stats[0, 0])
        assert module.train_steps(plan, order, 1, 1, stats) == 0
    assert np.isnan(stats[0, 0])
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


class LoopbackCommunicator(distributed.Communicator):
    """Two ranks seen from rank 0: the other rank's buffers are given by ``peer``."""

    rank, size, local_size = 0, 2, 2

    def __init__(self, peer):
        self.peer, self.calls = peer, 0

    def allreduce_sum(self, buffer):
        self.calls += 1
        buffer += self.peer(buffer)


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_parallel_steps_are_gradients_allreduce_apply(backend):
    """With a peer rank that sends the same gradients, the mean is those gradients exactly
    (2g / 2), so DataParallel.train_steps gives the weights of train_steps bit for bit, with
    one Allreduce a step."""
    weights, stats = [], []
    comm = LoopbackCommunicator(lambda buffer: buffer.copy())
    for parallel in (None, distributed.DataParallel(comm)):
        model, plan, order = split_plan("adam", np.float32)
        plan.refresh(0)
        with fastnn.use_backend(backend) as module:
            if parallel is None:
                assert module.train_steps(plan, order, 0, plan.steps, plan.stats) == plan.steps
            else:
                assert parallel.train_steps(module, plan, order, 0, plan.steps,
                                            plan.stats) == plan.steps
                assert plan.config[plan_module.C_MODE] == plan_module.MODE_TRAIN
        plan.finish()
        weights.append(model.get_weights())
        stats.append(plan.stats.copy())
    assert comm.calls == 4 and weights[1][0].size
    np.testing.assert_array_equal(stats[1], stats[0])
    for expected, got in zip(*weights):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_finite_loss_on_another_rank_stops_this_one_at_the_same_step(backend):
    """The peer's loss is not finite at the third step: it sends NaN gradients, and this
    rank does two steps, its weights left as after them."""
    def peer(buffer):
        sent = buffer.copy()
        if comm.calls == 3:
            sent.flat[0] = np.nan
        return sent

    comm = LoopbackCommunicator(peer)
    model, plan, order = split_plan("sgd-nesterov-decay", np.float32)
    reference, reference_plan, _ = split_plan("sgd-nesterov-decay", np.float32)
    plan.refresh(0)
    reference_plan.refresh(0)
    with fastnn.use_backend(backend) as module:
        done = distributed.DataParallel(comm).train_steps(module, plan, order, 0, 4,
                                                          plan.stats)
        assert module.train_steps(reference_plan, order, 0, 2, reference_plan.stats) == 2
    assert done == 2
    assert np.isfinite(plan.stats[2, 0])  # this rank's own loss was finite
    for expected, got in zip(reference.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, expected)


class MirrorCommunicator(distributed.Communicator):
    """Rank ``rank`` of 2 whose peer holds the same data and sends back this rank's own
    gradients: the mean is this rank's gradient, so what a rank trains depends on its own
    dropout masks alone."""

    size, local_size = 2, 2

    def __init__(self, rank):
        self.rank = rank

    def allreduce_sum(self, buffer):
        if buffer.ndim == 2 and len(buffer) == self.size:  # check_agreement's gather
            buffer[...] = buffer[self.rank]  # the peer's figures: the same
        else:
            buffer += buffer.copy()

    def broadcast(self, buffer, root=0):
        pass


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "per-layer"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_rank_draws_its_own_dropout_masks(monkeypatch, backend, compiled):
    """With the shared seed alone, row i of every rank's batch got the same mask; each rank
    now mixes its rank into the dropout stream, on both paths, the same on every backend."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    weights, keys = {}, {}
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "current", lambda rank=rank: MirrorCommunicator(rank))
        model = Sequential([Dense(16, "relu", input_dim=6), Dropout(0.5), Dense(2, "softmax")],
                           seed=4)
        model.compile(SGD(0.1), "sparse_categorical_crossentropy")
        model.compiled_loop = compiled
        with fastnn.use_backend(backend):
            model.fit(x, y, epochs=1, batch_size=16, seed=9, verbose=0)
        weights[rank], keys[rank] = model.get_weights(), model.layers[1].key
    assert keys[0] != keys[1]
    assert not np.array_equal(weights[0][0], weights[1][0])  # other masks, other gradients
    # a rank's own stream: the single-process stream with the rank mixed into its seed
    parallel = distributed.DataParallel(MirrorCommunicator(1))
    assert parallel.dropout_seed(123) != distributed.DataParallel(
        MirrorCommunicator(0)).dropout_seed(123) != 123


class ThreadedPair(distributed.Communicator):
    """Rank ``rank`` of a 2-rank job whose ranks are two threads of this process."""

    size, local_size = 2, 2

    def __init__(self, rank, shared):
        self.rank, self.shared = rank, shared

    def broadcast(self, buffer, root=0):
        if self.rank == root:
            self.shared["sent"] = buffer.copy()
        self.shared["barrier"].wait()
        buffer[...] = self.shared["sent"]
        self.shared["barrier"].wait()

    def allreduce_sum(self, buffer):
        self.shared[self.rank] = buffer.copy()
        self.shared["barrier"].wait()
        buffer[...] = self.shared[0] + self.shared[1]
        self.shared["barrier"].wait()


def check_fit_on_two_ranks(calls):
    """Run DataParallel.check_fit(*calls[rank]) on ranks 0 and 1 (threads); each rank's
    ValueError message, or None."""
    shared, errors = {"barrier": threading.Barrier(2, timeout=10)}, [None, None]

    def rank_main(rank):
        model, data, validation, arguments = calls[rank]
        try:
            distributed.DataParallel(ThreadedPair(rank, shared)).check_fit(
                model, data, validation, **arguments)
        except ValueError as exc:
            errors[rank] = str(exc)

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return errors


def fit_call(rows=40, units=8, optimizer="sgd", epochs=2, batch_size=16, validation=None,
             precision=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 5))
    y = (x[:, 0] > 0).astype(np.int64)
    model = Sequential([Dense(units, "relu", input_dim=5), Dense(2, "softmax")], seed=1,
                       matmul_precision=precision)
    model.compile(SGD(0.1) if optimizer == "sgd" else Adam(0.01),
                  "sparse_categorical_crossentropy")
    data = model._prepare(x, y)
    return (model, data, validation and model._prepare(x[:validation], y[:validation]),
            {"epochs": epochs, "batch_size": batch_size, "shuffle": True})


@pytest.mark.parametrize("change, message", [
    ({"rows": 48}, "x rows (rank 0: 40, rank 1: 48)"),
    ({"epochs": 3}, "epochs (rank 0: 2, rank 1: 3)"),
    ({"batch_size": None}, "batch_size (rank 0: 16, rank 1: -1)"),
    ({"validation": 10}, "validation rows (rank 0: 0, rank 1: 10)"),
    ({"precision": "bfloat16"}, "matmul precision (rank 1 differs from rank 0)"),
    ({"units": 9}, "weights (rank 0: 66, rank 1: 74); model (dtype, layers, their "
     "configurations and weight shapes) (rank 1 differs from rank 0)"),
    ({"optimizer": "adam"}, "optimizer (rank 1 differs from rank 0)"),
])
def test_ranks_disagreeing_on_data_model_or_arguments_all_raise_naming_it(change, message):
    errors = check_fit_on_two_ranks([fit_call(), fit_call(**change)])
    expected = f"fit under MPI: ranks disagree on {message}. Every rank must call fit"
    assert errors[0] is not None and errors[0].startswith(expected), errors
    assert errors[1] == errors[0]  # the same message on every rank


def test_ranks_that_agree_pass_the_check():
    assert check_fit_on_two_ranks([fit_call(validation=10), fit_call(validation=10)]) == [
        None, None]


class HostOf(distributed.Communicator):
    def __init__(self, rank, local_size):
        self.rank, self.size, self.local_size = rank, local_size, local_size


def test_more_ranks_than_cpus_on_a_host_warns_once_on_rank_0():
    with pytest.warns(RuntimeWarning, match="3 MPI ranks on a host with 2 CPUs.*mpiexec -n 2"):
        distributed._warn_if_oversubscribed(HostOf(0, 3), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distributed._warn_if_oversubscribed(HostOf(1, 3), 2)  # rank 0 alone says it
        distributed._warn_if_oversubscribed(HostOf(0, 2), 2)
