"""Training benchmarks: whole epochs and single steps, fastnn against plain NumPy and PyTorch.

Groups (compare the rows within each):

* ``train epoch MNIST-shaped batch 128`` and ``... batch 32``: one epoch of
  SGD (lr 0.01, shuffled) on synthetic MNIST-shaped data (60000 x 784 float32,
  10 classes), MLP 784-256-128-10 with relu, softmax cross-entropy. Rows: every
  fastnn backend through ``Sequential.fit``; ``plain-numpy``, the same training
  written plainly in NumPy below; ``torch``, PyTorch CPU eager (when installed).
* ``train epoch tabular 50000x32 batch 32`` and ``... batch 256``: one epoch of SGD
  on a tabular-shaped set (50000 x 32 float32, 2 classes), MLP 32-64-64-2 relu: the
  small networks where each step's Python and call overhead used to dominate, and
  where the backends' compiled training loop (``train_steps``) pays off most.
* ``train steps XOR 2-8-2 batch 4``: 1024 steps of a 2-8-2 tanh/softmax net
  (the XOR table tiled to 4096 rows, batch 4): per-step time = median / 1024.

Run (2 threads; the OpenBLAS tuning variables of the test environment unset):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m pytest benchmarks/test_training.py --benchmark-group-by=group
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import bench_training

from conftest import THREADS

HIDDEN = bench_training.MNIST_HIDDEN
TABULAR_HIDDEN = bench_training.TABULAR_HIDDEN
XOR_STEPS = bench_training.XOR_STEPS
#: Timed epochs per row, after one warm-up epoch: single epochs vary by about 10% on a shared
#: 2-core machine, so the median is taken over 5.
EPOCH_ROUNDS = 5
IMPLEMENTATIONS = fastnn.available_backends() + ["plain-numpy", "torch"]


#: Rows of the MNIST-shaped data in an untimed run (--benchmark-disable: CI's check that no
#: benchmark rots): the same code paths as the 60000 of a timed run, in a tenth of the time.
UNTIMED_SAMPLES = 6000


@pytest.fixture(scope="module")
def mnist_shaped(request):
    """Synthetic MNIST-shaped data with learnable labels (a random linear teacher)."""
    timed = not request.config.getoption("benchmark_disable", False)
    return bench_training.mnist_shaped(bench_training.MNIST_SAMPLES if timed
                                       else UNTIMED_SAMPLES)


@pytest.fixture(scope="module")
def tabular():
    """Synthetic tabular data: 32 standard normal features, 2 classes from a noisy rule."""
    return bench_training.tabular()


# -- the three implementations of one epoch (fastnn/bench_training.py) ---------------

def make_epoch(implementation, x, y, batch, hidden=HIDDEN, activation="relu"):
    if implementation == "torch":
        pytest.importorskip("torch")
    return bench_training.epoch_of(implementation, x, y, batch, hidden, activation, THREADS)


def run(benchmark, implementation, epoch, rounds, samples):
    benchmark.extra_info["implementation"] = implementation
    loss = benchmark.pedantic(epoch, rounds=rounds, iterations=1, warmup_rounds=1)
    assert np.isfinite(loss)
    stats = getattr(benchmark, "stats", None)
    if stats and stats.stats.median:
        benchmark.extra_info["samples/s"] = samples / stats.stats.median


# -- benchmarks ---------------------------------------------------------------------

@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("batch", [128, 32])
def test_mnist_shaped_epoch(benchmark, mnist_shaped, implementation, batch):
    benchmark.group = f"train epoch MNIST-shaped batch {batch}"
    x, y = mnist_shaped
    run(benchmark, implementation, make_epoch(implementation, x, y, batch), EPOCH_ROUNDS, len(x))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("batch", [256, 32])
def test_tabular_epoch(benchmark, tabular, implementation, batch):
    benchmark.group = f"train epoch tabular 50000x32 batch {batch}"
    x, y = tabular
    run(benchmark, implementation, make_epoch(implementation, x, y, batch, hidden=TABULAR_HIDDEN),
        EPOCH_ROUNDS, len(x))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_xor_steps(benchmark, implementation):
    benchmark.group = f"train steps XOR 2-8-2 batch 4 (x{XOR_STEPS})"
    x, y = bench_training.xor_tiled()
    epoch = make_epoch(implementation, x, y, 4, hidden=(8,), activation="tanh")
    run(benchmark, implementation, epoch, 10, len(x))
    stats = getattr(benchmark, "stats", None)
    if stats and stats.stats.median:
        benchmark.extra_info["us/step"] = stats.stats.median / XOR_STEPS * 1e6
