"""Eight Python threads calling kernels at once get the results of serial calls."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import fastnn
from fastnn import ops

from conftest import BACKENDS

THREADS = 8
ROUNDS = 5


def workload(seed):
    """A forward, backward, loss and optimizer step on data of its own; returns every result."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((96, 80)).astype(np.float32)
    w = rng.standard_normal((80, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    labels = rng.integers(0, 40, 96)
    y = ops.linear_forward(x, w, b, "tanh")
    loss, grad = ops.softmax_cross_entropy(y, labels)
    dx, dw, db = ops.linear_backward(x, w, y, grad, "tanh")
    ops.sgd_step(w, dw, np.zeros_like(w), lr=0.1, momentum=0.9)
    return [y, np.float64(loss), grad, dx, dw, db, w, ops.matmul(x, w, trans_a=False),
            ops.matmul(x, x, trans_a=True)]


@pytest.mark.parametrize("name", BACKENDS)
def test_threads_match_serial_results(name):
    with fastnn.use_backend(name):
        serial = [workload(seed) for seed in range(THREADS)]
    results = [None] * THREADS
    errors = []
    start = threading.Barrier(THREADS)

    def run(seed):
        try:
            with fastnn.use_backend(name):
                start.wait()
                for _ in range(ROUNDS):
                    results[seed] = workload(seed)
        except Exception as exc:  # reported below, with the thread's seed
            errors.append((seed, exc))

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for seed in range(THREADS):
        for got, expected in zip(results[seed], serial[seed]):
            np.testing.assert_array_equal(got, expected, err_msg=f"thread {seed}")


def test_threads_keep_their_own_backend():
    names = fastnn.available_backends()
    seen = {}
    start = threading.Barrier(len(names))

    def run(name):
        with fastnn.use_backend(name):
            start.wait()
            ops.matmul(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))
            seen[name] = fastnn.get_backend_name()

    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {name: name for name in names}


def resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: kernels/sanitize.sh preloads ASan, which keeps freed memory in quarantine (up to 256 MB), so
#: the resident size there says nothing about what was freed; the plain test run checks it.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


@pytest.mark.skipif("c" not in fastnn.available_backends() or not os.path.exists("/proc/self"),
                    reason="the C backend's per-thread buffers; Linux /proc to read memory")
@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine holds freed memory resident")
def test_finished_threads_give_back_their_kernel_buffers():
    """Each thread running a GEMM gets packing buffers of its own (~2 MB here); they must be
    freed when the thread ends, or a thread-per-task program grows without bound."""
    a = np.ones((512, 512), np.float32)

    def run_in_new_threads(count):
        for _ in range(count):
            thread = threading.Thread(target=lambda: ops.matmul(a, a))
            thread.start()
            thread.join()

    with fastnn.use_backend("c"):
        run_in_new_threads(10)  # the allocator's arenas reach their steady size
        before = resident_bytes()
        run_in_new_threads(60)
        growth = resident_bytes() - before
    assert growth < 16 * 2 ** 20, f"memory grew by {growth / 2 ** 20:.1f} MB over 60 threads"
