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
from fastnn import SGD, Dense, Sequential

from conftest import THREADS

SAMPLES, FEATURES, CLASSES = 60000, 784, 10
HIDDEN = (256, 128)
TABULAR_SAMPLES, TABULAR_FEATURES, TABULAR_HIDDEN = 50000, 32, (64, 64)
LR = 0.01
XOR_STEPS = 1024
#: Timed epochs per row, after one warm-up epoch: single epochs vary by about 10% on a shared
#: 2-core machine, so the median is taken over 5.
EPOCH_ROUNDS = 5
IMPLEMENTATIONS = fastnn.available_backends() + ["plain-numpy", "torch"]


@pytest.fixture(scope="module")
def mnist_shaped():
    """Synthetic MNIST-shaped data with learnable labels (a random linear teacher)."""
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, FEATURES), dtype=np.float32)
    teacher = rng.standard_normal((FEATURES, CLASSES)).astype(np.float32)
    y = ((x - 0.5) @ teacher).argmax(axis=1).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def tabular():
    """Synthetic tabular data: 32 standard normal features, 2 classes from a noisy rule."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((TABULAR_SAMPLES, TABULAR_FEATURES), dtype=np.float32)
    y = (x[:, :4].sum(axis=1) + 0.5 * rng.standard_normal(TABULAR_SAMPLES) > 0)
    return x, y.astype(np.int64)


def xor_tiled():
    x, y = fastnn.datasets.xor()
    return np.tile(x, (XOR_STEPS, 1)), np.tile(y, XOR_STEPS)


# -- the three implementations of one epoch ---------------------------------------

def fastnn_epoch(backend, x, y, batch, hidden=HIDDEN, activation="relu"):
    model = Sequential([Dense(units, activation) for units in hidden]
                       + [Dense(int(y.max()) + 1, "softmax")], seed=0)
    model.compile(SGD(LR), "sparse_categorical_crossentropy")

    def epoch():
        with fastnn.use_backend(backend):
            return model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=0)["loss"][0]
    return epoch


def plain_numpy_epoch(x, y, batch, hidden=HIDDEN, activation="relu"):
    """The same MLP, loss and SGD written plainly in NumPy (float32 throughout)."""
    rng = np.random.default_rng(0)
    sizes = [x.shape[1], *hidden, int(y.max()) + 1]
    weights = [(rng.uniform(-1, 1, (k, m)) * np.sqrt(6 / (k + m))).astype(np.float32)
               for k, m in zip(sizes[:-1], sizes[1:])]
    biases = [np.zeros(m, np.float32) for m in sizes[1:]]
    act, act_grad = {
        "relu": (lambda z: np.maximum(z, 0), lambda h: h > 0),
        "tanh": (np.tanh, lambda h: 1 - h * h),
    }[activation]

    def epoch():
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            rows = order[start:start + batch]
            inputs, labels = x[rows], y[rows]
            activations = [inputs]
            for w, b in zip(weights[:-1], biases[:-1]):
                activations.append(act(activations[-1] @ w + b))
            logits = activations[-1] @ weights[-1] + biases[-1]
            logits -= logits.max(axis=1, keepdims=True)
            probabilities = np.exp(logits)
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            picked = np.arange(len(labels))
            total += -np.log(probabilities[picked, labels]).sum()
            grad = probabilities
            grad[picked, labels] -= 1
            grad /= len(labels)
            for layer in range(len(weights) - 1, -1, -1):
                grad_w, grad_b = activations[layer].T @ grad, grad.sum(axis=0)
                if layer:
                    grad = (grad @ weights[layer].T) * act_grad(activations[layer])
                weights[layer] -= LR * grad_w
                biases[layer] -= LR * grad_b
        return total / len(x)
    return epoch


def torch_epoch(x, y, batch, hidden=HIDDEN, activation="relu"):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    sizes = [x.shape[1], *hidden]
    layers = []
    for k, m in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(k, m), torch.nn.ReLU() if activation == "relu"
                   else torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], int(y.max()) + 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)

    def epoch():
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(inputs[rows]), labels[rows])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        return total / len(x)
    return epoch


def make_epoch(implementation, x, y, batch, **model):
    if implementation == "plain-numpy":
        return plain_numpy_epoch(x, y, batch, **model)
    if implementation == "torch":
        return torch_epoch(x, y, batch, **model)
    return fastnn_epoch(implementation, x, y, batch, **model)


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
    x, y = xor_tiled()
    epoch = make_epoch(implementation, x, y, 4, hidden=(8,), activation="tanh")
    run(benchmark, implementation, epoch, 10, len(x))
    stats = getattr(benchmark, "stats", None)
    if stats and stats.stats.median:
        benchmark.extra_info["us/step"] = stats.stats.median / XOR_STEPS * 1e6
