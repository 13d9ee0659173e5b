"""bfloat16 matmul precision against float32 and PyTorch's bfloat16, in the same run.

    pytest benchmarks/test_bf16.py --benchmark-group-by=group

Each ``bf16 gemm`` group times one GEMM of the 784-256-128 MLP (and 1024^3) as fastnn
float32 (c), fastnn bfloat16 (c) and, when PyTorch is installed, ``torch.mm`` on bfloat16
tensors. Each result is first checked: bfloat16 against the float64 product of the rounded
operands within 2e-5 * sum_k |a_ik||b_kj|. Each ``bf16 train epoch`` group times one epoch
of the MNIST-shaped 784-256-128-10 MLP (test_training.py's data, model and SGD) in fastnn
float32, fastnn with bfloat16 matmuls and PyTorch under ``torch.autocast("cpu",
torch.bfloat16)``. The issue's targets (on an AMX CPU): bfloat16 GEMMs at least 3x fastnn's
float32 at the MLP shapes and 1.2x PyTorch's bfloat16 at 1024^3; epochs at batch 1024 at most
half of float32's time and 1.5x faster than autocast, at batch 128 1.6x float32 and 3x
autocast. Which bfloat16 GEMM runs (AMX tiles, AVX512-BF16 dot products or the float32
kernels on rounded operands): ``fastnn info``.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import ops

from conftest import THREADS
from test_kernels import MLP_GEMMS, measure, random
from fastnn.bench_training import LR, fastnn_epoch
from test_training import HIDDEN, EPOCH_ROUNDS, mnist_shaped, run  # noqa: F401

SHAPES = [(f"{name} {n}x{k}x{m}", n, k, m, ta, tb) for name, n, k, m, ta, tb in MLP_GEMMS] \
    + [("square 1024", 1024, 1024, 1024, False, False)]
IMPLEMENTATIONS = ["c float32", "c bfloat16", "torch bfloat16"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("label, n, k, m, trans_a, trans_b", SHAPES)
def test_gemm_bfloat16(benchmark, implementation, label, n, k, m, trans_a, trans_b):
    benchmark.group = f"bf16 gemm {label}"
    a = random((k, n) if trans_a else (n, k), 1)
    b = random((m, k) if trans_b else (k, m), 2)
    out = np.empty((n, m), np.float32)
    if implementation.startswith("torch"):
        torch = pytest.importorskip("torch")
        torch.set_num_threads(THREADS)
        ta = torch.from_numpy(a).to(torch.bfloat16)
        tb = torch.from_numpy(b).to(torch.bfloat16)
        ta, tb = (ta.T if trans_a else ta), (tb.T if trans_b else tb)
        call = lambda: torch.mm(ta, tb)  # noqa: E731
        measure(benchmark, implementation, call, flops=2.0 * n * k * m)
        return
    precision = implementation.split()[1]
    with fastnn.use_backend("c"):
        call = lambda: ops.matmul(a, b, trans_a, trans_b, out=out,  # noqa: E731
                                  precision=precision)
        got = call().astype(np.float64)
        op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
        r_a = ops.round_bfloat16(np.ascontiguousarray(op_a)).astype(np.float64)
        r_b = ops.round_bfloat16(np.ascontiguousarray(op_b)).astype(np.float64)
        if precision == "bfloat16":
            bound = 2e-5 * (np.abs(r_a) @ np.abs(r_b))
            assert (np.abs(got - r_a @ r_b) <= bound).all()
        measure(benchmark, implementation, call, flops=2.0 * n * k * m)


@pytest.mark.parametrize("implementation", ["c float32", "c bfloat16", "torch autocast bfloat16"])
@pytest.mark.parametrize("batch", [1024, 128])
def test_mnist_shaped_epoch_bfloat16(benchmark, mnist_shaped, implementation, batch):
    benchmark.group = f"bf16 train epoch MNIST-shaped batch {batch}"
    x, y = mnist_shaped
    if implementation.startswith("torch"):
        run(benchmark, implementation, torch_autocast_epoch(x, y, batch), EPOCH_ROUNDS, len(x))
        return
    with fastnn.matmul_precision(implementation.split()[1]):
        run(benchmark, implementation, fastnn_epoch("c", x, y, batch, HIDDEN), EPOCH_ROUNDS, len(x))


def torch_autocast_epoch(x, y, batch):
    """test_training's PyTorch epoch with the forward pass and loss under
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` (PyTorch's recipe: the backward pass
    outside it runs in the forward's dtypes; master weights and SGD in float32)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    widths = [x.shape[1], *HIDDEN, int(y.max()) + 1]
    linears = [torch.nn.Linear(k, m) for k, m in zip(widths[:-1], widths[1:])]
    parameters = [p for linear in linears for p in linear.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=LR)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)

    def forward(rows):
        h = inputs[rows]
        for linear in linears[:-1]:
            h = torch.relu(linear(h))
        return torch.nn.functional.cross_entropy(linears[-1](h), labels[rows])

    def epoch():
        total = 0.0
        for rows in torch.randperm(len(x)).split(batch):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = forward(rows)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        return total / len(x)
    return epoch
