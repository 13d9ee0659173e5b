"""Data-parallel training over MPI (fastnn.distributed), in real ``mpiexec -n 2`` jobs.

Each job runs as a subprocess with a hard timeout (and MPIEXEC_TIMEOUT), so a deadlock fails
the test instead of hanging the suite. The reference runs in this process, single.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import distributed

sys.path.insert(0, str(Path(__file__).parent / "mpi"))
from job import make_data, make_model  # noqa: E402

WORKER = Path(__file__).parent / "mpi" / "worker.py"
TIMEOUT = 120


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def run_job(tmp_path, *args, module=True, ranks=2):
    out = tmp_path / "result.npz"
    launcher = [sys.executable, "-m", "mpi4py"] if module else [sys.executable]
    env = dict(os.environ, MPIEXEC_TIMEOUT=str(TIMEOUT - 10))
    env.pop("FASTNN_NUM_THREADS", None)
    started = time.monotonic()
    done = subprocess.run([mpiexec(), "-n", str(ranks), *launcher, str(WORKER), str(out),
                           *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT,
                          env=env, cwd=tmp_path)
    return done, out, time.monotonic() - started


@pytest.mark.parametrize("backend", ["c", "numba"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("rows", [256, 200])  # 200: a short last batch (100 rows a rank)
def test_two_ranks_at_batch_b_train_like_one_process_at_2b(tmp_path, backend, optimizer,
                                                           rows):
    if backend not in fastnn.available_backends():
        pytest.fail(f"backend {backend} is not available here")
    batch, epochs = 16, 3
    done, out, _ = run_job(tmp_path, backend, optimizer, rows, batch, epochs)
    assert done.returncode == 0, done.stderr
    result = np.load(out)
    assert int(result["size"]) == 2
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
