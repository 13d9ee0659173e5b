"""Training workloads of ``fastnn bench`` and of ``benchmarks/test_training.py``: whole epochs
through ``Sequential.fit``, and the same training written plainly in NumPy and in PyTorch.

Each ``*_epoch`` function builds a model once and returns a call that runs one epoch (shuffled
batches, softmax cross-entropy, SGD with lr :data:`LR`) and returns its mean loss; the three
versions train the same MLP (Glorot-uniform weights, zero biases), so their times compare.

* :func:`fastnn_epoch`: ``Sequential.fit`` on a backend (its compiled loop, ``train_steps``);
* :func:`plain_numpy_epoch`: the forward and backward passes written directly in NumPy
  (float32), what a user writes without a library;
* :func:`torch_epoch`: PyTorch eager on the CPU (``torch.nn``, ``torch.optim.SGD``), when
  installed.

:func:`cases` gives ``fastnn bench`` its training rows: the tabular MLP at batch 32 and XOR's
per-step time, each with a ``plain-numpy`` and a ``torch`` row measured in the same run.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Dict, List, Sequence

import numpy as np

LR = 0.01
#: The tabular workload: 50000 rows x 32 standard normal features, 2 classes, MLP 32-64-64-2.
TABULAR_SAMPLES, TABULAR_FEATURES, TABULAR_HIDDEN = 50000, 32, (64, 64)
#: The XOR workload: the 4-row XOR table tiled XOR_STEPS times, batch 4, a 2-8-2 tanh MLP.
XOR_STEPS = 1024
#: The MNIST-shaped workload: 60000 x 784 uniform float32 features, 10 classes from a random
#: linear teacher, MLP 784-256-128-10 relu.
MNIST_SAMPLES, MNIST_FEATURES, MNIST_CLASSES, MNIST_HIDDEN = 60000, 784, 10, (256, 128)

Epoch = Callable[[], float]


def tabular(samples: int = TABULAR_SAMPLES):
    """Synthetic tabular data: (x float32 (samples, 32), y int64 (samples,) in {0, 1})."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, TABULAR_FEATURES), dtype=np.float32)
    y = (x[:, :4].sum(axis=1) + 0.5 * rng.standard_normal(samples) > 0)
    return x, y.astype(np.int64)


def mnist_shaped(samples: int = MNIST_SAMPLES):
    """Synthetic MNIST-shaped data with learnable labels: (x float32 (samples, 784) uniform in
    [0, 1), y int64 (samples,), the argmax of a random linear teacher over 10 classes)."""
    rng = np.random.default_rng(0)
    x = rng.random((samples, MNIST_FEATURES), dtype=np.float32)
    teacher = rng.standard_normal((MNIST_FEATURES, MNIST_CLASSES)).astype(np.float32)
    return x, ((x - 0.5) @ teacher).argmax(axis=1).astype(np.int64)


def xor_tiled(steps: int = XOR_STEPS):
    """The XOR table tiled ``steps`` times: x float32 (4 * steps, 2), y int64 (4 * steps,)."""
    from . import datasets
    x, y = datasets.xor()
    return np.tile(x, (steps, 1)), np.tile(y, steps)


def fastnn_epoch(backend: str, x, y, batch: int, hidden: Sequence[int],
                 activation: str = "relu") -> Epoch:
    """One epoch of ``Sequential.fit`` on ``backend``."""
    import fastnn
    from fastnn import SGD, Dense, Sequential
    model = Sequential([Dense(units, activation) for units in hidden]
                       + [Dense(int(y.max()) + 1, "softmax")], seed=0)
    model.compile(SGD(LR), "sparse_categorical_crossentropy")

    def epoch() -> float:
        with fastnn.use_backend(backend):
            return model.fit(x, y, epochs=1, batch_size=batch, verbose=0, seed=0)["loss"][0]
    return epoch


def plain_numpy_epoch(x, y, batch: int, hidden: Sequence[int],
                      activation: str = "relu") -> Epoch:
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

    def epoch() -> float:
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


def torch_epoch(x, y, batch: int, hidden: Sequence[int], activation: str = "relu",
                threads: int = 2) -> Epoch:
    """The same training in PyTorch eager on ``threads`` threads (ImportError without torch)."""
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sizes = [x.shape[1], *hidden]
    layers: List[object] = []
    for k, m in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(k, m), torch.nn.ReLU() if activation == "relu"
                   else torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], int(y.max()) + 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)

    def epoch() -> float:
        torch.set_num_threads(threads)
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


def epoch_of(implementation: str, x, y, batch: int, hidden: Sequence[int],
             activation: str = "relu", threads: int = 2) -> Epoch:
    """The epoch of ``implementation``: "plain-numpy", "torch" (ImportError without torch, on
    ``threads`` threads) or a fastnn backend's name."""
    if implementation == "plain-numpy":
        return plain_numpy_epoch(x, y, batch, hidden, activation)
    if implementation == "torch":
        return torch_epoch(x, y, batch, hidden, activation, threads)
    return fastnn_epoch(implementation, x, y, batch, hidden, activation)


def _training_flops(x, y, hidden: Sequence[int]) -> float:
    """Floating-point operations of one epoch: forward, dW and dX GEMMs (2 each per
    multiply-add), the elementwise work left out."""
    sizes = [x.shape[1], *hidden, int(y.max()) + 1]
    return 6.0 * len(x) * sum(k * m for k, m in zip(sizes[:-1], sizes[1:]))


def _case(kernel: str, shape: str, data, batch: int, hidden, activation: str):
    from .bench import Case
    x, y = data

    others: Dict[str, Callable[[int], Epoch]] = {
        "plain-numpy": lambda threads: plain_numpy_epoch(x, y, batch, hidden, activation)}
    if importlib.util.find_spec("torch") is not None:
        others["torch"] = lambda threads: torch_epoch(x, y, batch, hidden, activation, threads)
    return Case(kernel, shape,
                lambda: fastnn_epoch(_current_backend(), x, y, batch, hidden, activation),
                flops=_training_flops(x, y, hidden), others=others)


def _current_backend() -> str:
    from .backends import get_backend_name
    return get_backend_name()


def cases(quick: bool = False) -> list:
    """The training rows of ``fastnn bench``: one epoch of the tabular MLP at batch 32 (10000
    rows when ``quick``), and XOR's 1024 steps of batch 4 (per step: the median / 1024)."""
    samples = 10000 if quick else TABULAR_SAMPLES
    hidden = "-".join(map(str, TABULAR_HIDDEN))
    return [_case("train epoch", f"tabular {samples}x{TABULAR_FEATURES} "
                  f"{TABULAR_FEATURES}-{hidden}-2 batch 32", tabular(samples), 32,
                  TABULAR_HIDDEN, "relu"),
            _case("train epoch", f"XOR 2-8-2 batch 4 ({XOR_STEPS} steps)", xor_tiled(), 4,
                  (8,), "tanh")]
