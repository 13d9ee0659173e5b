"""The Numba kernels' parallel loops (fastnn/backends/numba_kernels/team.py, fp_mode.py): the
fallback to one thread on a busy machine, and the floating-point mode of every thread.

Behaviour only: what the fallback gains on a busy machine is measured by benchmarks/engine.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, BatchNormalization, Dense, Dropout, Sequential

from conftest import BACKENDS
from test_engine import run_python

pytest.importorskip("numba")
if "numba" not in BACKENDS:  # not under test (FASTNN_TEST_BACKENDS), or does not load here
    pytest.skip("the numba backend is not under test", allow_module_level=True)

import numba  # noqa: E402
from numba import njit, prange  # noqa: E402

from fastnn.backends.numba_kernels import fp_mode, team  # noqa: E402

two_threads = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                 reason="needs two Numba threads")


@njit(parallel=True)
def record_threads(numbers, worker_wait_ns):
    """One task per element, bracketed as the kernels' loops; a task on a thread other than
    the calling one first spins for worker_wait_ns (a worker whose core was taken)."""
    region = team.region_enter()
    for task in prange(numbers.size):
        mode = team.task_enter()
        numbers[task] = team.thread_number()
        if numbers[task] != 0:
            end = team.now_ns() + worker_wait_ns
            while team.now_ns() < end:
                pass
        team.task_leave(mode)
    team.region_leave(region)


@pytest.fixture
def two_numba_threads():
    numba.set_num_threads(2)
    numba.set_parallel_chunksize(1)
    team.assume_contended(False)
    yield
    team.assume_contended(False)
    numba.set_parallel_chunksize(0)


@two_threads
def test_a_contended_loop_runs_on_the_calling_thread(two_numba_threads):
    numbers = np.full(8, -1, np.int64)
    team.assume_contended(True)
    record_threads(numbers, 0)
    assert numbers.tolist() == [0] * 8
    assert numba.get_num_threads() == 2  # put back after the loop
    assert team.contended()


@two_threads
def test_a_long_wait_for_the_other_thread_makes_the_machine_contended(two_numba_threads):
    numbers = np.full(2, -1, np.int64)
    # compiled; a quiet loop leaves the machine quiet. A loaded machine may hold up even that
    # one (CI on a host with no idle time held up ten tries in a row): measure it again, for
    # up to 5 s, with a pause between tries that lets other processes' threads run first.
    # Quiet means no held-up loop counted at all: one held up after an idle gap starts a spell
    # of no time on one thread (not contended) that still counts, and the next would be longer
    deadline = time.monotonic() + 5
    while True:
        team.assume_contended(False)
        record_threads(numbers, 0)
        if team._state[team.PAUSE] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not team.contended()
    assert team._state[team.PAUSE] == 0
    for _ in range(10):  # a shared machine may also hold up the calling thread: try again
        team.assume_contended(False)  # a try held up after an idle gap counted a spell
        record_threads(numbers, 20 * team.CONTENDED_WAIT_NS)
        if team.contended():
            break
    assert 1 in numbers.tolist()  # the other thread ran a task and spun
    assert team.contended()
    assert team._state[team.PAUSE] == team.CONTENDED_PAUSE_MIN_NS  # a first spell: the shortest
    for _ in range(10):  # the next loops run on the calling thread (if still in the 2 ms spell)
        numbers[:] = -1
        started = time.monotonic_ns()
        record_threads(numbers, 0)
        if started < team._state[team.UNTIL]:
            break
        record_threads(numbers, 20 * team.CONTENDED_WAIT_NS)  # a new spell (the test's clock
    assert started < team._state[team.UNTIL]  # was held up past the last one's end)
    assert numbers.tolist() == [0, 0]


@two_threads
def test_a_loop_held_up_again_soon_after_a_spell_makes_the_next_longer(two_numba_threads):
    numbers = np.full(2, -1, np.int64)
    record_threads(numbers, 0)  # compiled
    for _ in range(10):  # a shared machine may hold up the calling thread too: try again
        team.assume_contended(False)
        record_threads(numbers, 20 * team.CONTENDED_WAIT_NS)
        first = team._state[team.PAUSE]
        while time.monotonic_ns() < team._state[team.UNTIL]:  # the spell's end
            pass
        record_threads(numbers, 20 * team.CONTENDED_WAIT_NS)
        if first == team.CONTENDED_PAUSE_MIN_NS and (
                team._state[team.PAUSE] == 8 * team.CONTENDED_PAUSE_MIN_NS):
            break
    assert first == team.CONTENDED_PAUSE_MIN_NS
    assert team._state[team.PAUSE] == 8 * team.CONTENDED_PAUSE_MIN_NS


def fit_weights(layers, optimizer, x, y, batch):
    with fastnn.use_backend("numba"):
        fastnn.set_num_threads(2)
        model = Sequential(layers, seed=0)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=2, batch_size=batch, verbose=0, seed=0)
    return model.get_weights() + [np.array(history["loss"])]


@two_threads
@pytest.mark.parametrize("case", ["mnist-shaped sgd", "batchnorm dropout adam"])
def test_the_compiled_loop_on_one_thread_gives_the_same_bits(case, two_numba_threads):
    """Contended, the compiled loop's parallel kernels (GEMMs of 128 x 784 x 256, the bias
    gradients' partial sums, batch norm) keep their split of the work: the same weights."""
    rng = np.random.default_rng(0)
    x = rng.random((600, 784), dtype=np.float32)
    y = rng.integers(0, 10, 600)
    if case == "mnist-shaped sgd":
        def run():
            return fit_weights([Dense(256, "relu"), Dense(128, "relu"), Dense(10, "softmax")],
                               SGD(0.01, momentum=0.9), x, y, 128)
    else:
        def run():
            return fit_weights([Dense(256, "relu"), BatchNormalization(), Dropout(0.2),
                                Dense(10, "softmax")], Adam(0.001), x, y, 300)
    quiet = run()
    team.assume_contended(True)
    busy = run()
    for a, b in zip(quiet, busy):
        np.testing.assert_array_equal(a, b)


def test_the_flag_follows_set_flush_denormal():
    assert fp_mode.flush()
    fastnn.set_flush_denormal(False)
    try:
        assert not fp_mode.flush()
    finally:
        fastnn.set_flush_denormal(True)
    assert fp_mode.flush()


WORKERS_AFTER_THE_LOOP = """
    import numpy as np, numba, fastnn
    from numba import njit, prange
    from fastnn import Dense, SGD, Sequential
    fastnn.set_backend("numba")
    fastnn.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.random((32, 784), dtype=np.float32)  # small enough for serial input checks
    y = rng.integers(0, 10, 32)
    # The first parallel loops of the process start inside the compiled loop (its GEMMs of
    # 32 x 784 x 256), whose thread flushes subnormals: the pool's new threads start in its mode.
    model = Sequential([Dense(256, "relu"), Dense(10, "softmax")], seed=0)
    model.compile(SGD(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)

    @njit(parallel=True)
    def products(out, ids):
        for task in prange(out.size):
            ids[task] = numba.get_thread_id()
            out[task] = np.float32(1e-20) * np.float32(ids[task] + 1) * np.float32(1e-19)

    numba.set_num_threads(2)
    out, ids = np.zeros(64, np.float32), np.zeros(64, np.int64)
    products(out, ids)
    print(sorted(set(ids.tolist())), bool(out.all()))
"""


@two_threads
@pytest.mark.skipif(not fp_mode.SUPPORTED, reason="no floating-point mode set on this CPU")
def test_threads_started_inside_a_kernel_leave_it_with_ieee_subnormals():
    """User code on Numba's threads after fastnn's kernels still makes subnormals."""
    result = run_python(WORKERS_AFTER_THE_LOOP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "True", result.stdout
