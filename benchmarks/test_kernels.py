"""Kernel benchmarks: one group per kernel and shape, every backend (and torch) a row.

Every benchmark first checks its result against the float64 NumPy oracle, then
times the call, and records its rate (GFLOP/s or GB/s) in ``extra_info``.

    pytest benchmarks/ --benchmark-group-by=group
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn
from fastnn import ops
from fastnn.backends import numpy_backend
from fastnn.bench import MLP_LINEAR_SHAPES as LINEAR_SHAPES
from fastnn.bench import OPTIMIZER_SIZES, SQUARE_GEMMS, XENT_SHAPES

ACTIVATIONS = ["relu", "identity", "leaky_relu", "sigmoid", "tanh"]
MLP_GEMMS = [  # (name, N, K, M, trans_a, trans_b): the matmuls of a 784-256-128 MLP step
    ("x@w", 128, 784, 256, False, False), ("x@w", 1024, 784, 256, False, False),
    ("x@w", 128, 256, 128, False, False),
    ("x.T@dz", 784, 128, 256, True, False), ("x.T@dz", 784, 1024, 256, True, False),
    ("x.T@dz", 256, 128, 128, True, False),
    ("dz@w.T", 128, 256, 784, False, True), ("dz@w.T", 1024, 256, 784, False, True),
    ("dz@w.T", 128, 128, 256, False, True),
]
F32 = np.float32


def random(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(F32)


def measure(benchmark, implementation, call, flops=0.0, bytes_moved=0.0):
    """Time ``call``, tag the row with its implementation and its rate at the median."""
    result = benchmark(call)
    benchmark.extra_info["implementation"] = implementation
    stats = getattr(benchmark, "stats", None)  # None when timing is disabled
    median = stats.stats.median if stats else None
    if median:
        if flops:
            benchmark.extra_info["GFLOP/s"] = flops / median / 1e9
        if bytes_moved:
            benchmark.extra_info["GB/s"] = bytes_moved / median / 1e9
    return result


def torch_tensors(*arrays):
    import torch
    return [torch.from_numpy(a) for a in arrays]


# -- GEMM ---------------------------------------------------------------------

def gemm_case(benchmark, implementation, n, k, m, trans_a, trans_b):
    a = random((k, n) if trans_a else (n, k), 1)
    b = random((m, k) if trans_b else (k, m), 2)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    if implementation == "torch":
        ta, tb = torch_tensors(a, b)
        ta, tb = (ta.T if trans_a else ta), (tb.T if trans_b else tb)
        out = torch_tensors(np.empty((n, m), F32))[0]
        import torch
        call = lambda: torch.mm(ta, tb, out=out).numpy()  # noqa: E731
    else:
        out = np.empty((n, m), F32)
        call = lambda: ops.matmul(a, b, trans_a, trans_b, out=out)  # noqa: E731
    np.testing.assert_allclose(call(), expected, rtol=1e-3, atol=1e-3 * np.sqrt(k))
    measure(benchmark, implementation, call, flops=2.0 * n * k * m)


@pytest.mark.parametrize("size", SQUARE_GEMMS)
def test_gemm_square(benchmark, implementation, size):
    benchmark.group = f"gemm {size}x{size}x{size}"
    gemm_case(benchmark, implementation, size, size, size, False, False)


@pytest.mark.parametrize("name,n,k,m,trans_a,trans_b", MLP_GEMMS,
                         ids=[f"{c[0]}-{c[1]}x{c[2]}x{c[3]}" for c in MLP_GEMMS])
def test_gemm_mlp(benchmark, implementation, name, n, k, m, trans_a, trans_b):
    benchmark.group = f"gemm {name} ({n}x{k})@({k}x{m})"
    gemm_case(benchmark, implementation, n, k, m, trans_a, trans_b)


# -- fused linear layer -----------------------------------------------------------

def linear_operands(n, k, m):
    return random((n, k), 3), random((k, m), 4, scale=k ** -0.5), random(m, 5)


def torch_activation(activation):
    import torch
    return {"relu": torch.relu, "identity": lambda z: z, "sigmoid": torch.sigmoid,
            "tanh": torch.tanh,
            "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01)}[activation]


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "{}x{}->{}".format(*s))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_forward(benchmark, implementation, shape, activation):
    n, k, m = shape
    benchmark.group = f"linear_forward {activation} {n}x{k}->{m}"
    x, w, b = linear_operands(n, k, m)
    out = np.empty((n, m), F32)
    expected = np.empty((n, m))
    numpy_backend.linear_forward(x.astype(np.float64), w.astype(np.float64),
                                 b.astype(np.float64), activation, 0.01, expected)
    if implementation == "torch":
        import torch
        tx, tw, tb = torch_tensors(x, w, b)
        act = torch_activation(activation)
        call = lambda: act(torch.addmm(tb, tx, tw)).numpy()  # noqa: E731
    else:
        call = lambda: ops.linear_forward(x, w, b, activation, 0.01, out=out)  # noqa: E731
    np.testing.assert_allclose(call(), expected, rtol=1e-3, atol=1e-3)
    measure(benchmark, implementation, call, flops=2.0 * n * k * m)


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "{}x{}->{}".format(*s))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward(benchmark, implementation, shape, activation):
    n, k, m = shape
    benchmark.group = f"linear_backward {activation} {n}x{k}->{m}"
    x, w, b = linear_operands(n, k, m)
    y = ops.linear_forward(x, w, b, activation)
    dy = random((n, m), 6)
    dx, dw, db = np.empty((n, k), F32), np.empty((k, m), F32), np.empty(m, F32)
    expected = [np.empty(s) for s in ((n, k), (k, m), (m,))]
    numpy_backend.linear_backward(x.astype(np.float64), w.astype(np.float64),
                                  y.astype(np.float64), dy.astype(np.float64), activation, 0.01,
                                  *expected)
    if implementation == "torch":
        import torch
        tx, tw, ty, tdy = torch_tensors(x, w, y, dy)
        derivative = {"relu": lambda: (ty > 0).float(), "identity": lambda: 1.0,
                      "leaky_relu": lambda: torch.where(ty > 0, 1.0, 0.01),
                      "sigmoid": lambda: ty * (1 - ty), "tanh": lambda: 1 - ty * ty}[activation]

        def call():
            dz = tdy * derivative()
            return (dz @ tw.T).numpy(), (tx.T @ dz).numpy(), dz.sum(0).numpy()
    else:
        call = lambda: ops.linear_backward(x, w, y, dy, activation, 0.01,  # noqa: E731
                                           dx=dx, dw=dw, db=db)
    for got, want in zip(call(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.sqrt(n))
    measure(benchmark, implementation, call, flops=4.0 * n * k * m)


# -- softmax-cross-entropy --------------------------------------------------------

@pytest.mark.parametrize("shape", XENT_SHAPES, ids=lambda s: "{}x{}".format(*s))
def test_softmax_cross_entropy(benchmark, implementation, shape):
    n, c = shape
    benchmark.group = f"softmax_cross_entropy {n}x{c}"
    logits = random(shape, 7, scale=3.0)
    labels = np.random.default_rng(8).integers(0, c, n)
    grad = np.empty(shape, F32)
    row_loss, expected_grad = np.empty(n), np.empty(shape)
    numpy_backend.softmax_cross_entropy(logits.astype(np.float64), labels, 1.0 / n, row_loss,
                                        expected_grad)
    if implementation == "torch":
        import torch
        tlogits, tlabels = torch_tensors(logits, labels)

        def call():
            leaf = tlogits.detach().requires_grad_()
            loss = torch.nn.functional.cross_entropy(leaf, tlabels)
            loss.backward()
            return loss.item(), leaf.grad.numpy()
    else:
        call = lambda: ops.softmax_cross_entropy(logits, labels, grad=grad)  # noqa: E731
    loss, got_grad = call()
    np.testing.assert_allclose(loss, row_loss.mean(), rtol=1e-4)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-3, atol=1e-6)
    # One read of the logits and one write of the gradient is the memory-bound minimum.
    measure(benchmark, implementation, call, bytes_moved=2.0 * logits.nbytes)


# -- optimizer steps ------------------------------------------------------------------

def torch_optimizer_step(name, param, grad, **settings):
    """A step of torch.optim's optimizer ``name`` on a tensor sharing ``param``'s memory."""
    import torch
    tensor = torch.from_numpy(param).requires_grad_()
    tensor.grad = torch.from_numpy(grad)
    optimizer = getattr(torch.optim, name)([tensor], **settings)
    return lambda: optimizer.step()


@pytest.mark.parametrize("size", OPTIMIZER_SIZES)
def test_sgd_momentum_step(benchmark, implementation, size):
    benchmark.group = f"sgd_step momentum {size}"
    param, grad, velocity = random(size, 9), random(size, 10), np.zeros(size, F32)
    expected = param.astype(np.float64) - 0.01 * grad
    if implementation == "torch":
        import torch
        with torch.no_grad():
            torch_optimizer_step("SGD", param, grad, lr=0.01, momentum=0.9)()
        call = torch_optimizer_step("SGD", param, grad, lr=1e-9, momentum=0.9)
    else:
        ops.sgd_step(param, grad, velocity, lr=0.01, momentum=0.9)
        call = lambda: ops.sgd_step(param, grad, velocity, lr=1e-9, momentum=0.9)  # noqa: E731
    np.testing.assert_allclose(param, expected, rtol=1e-5, atol=1e-6)
    # Reads param, grad and velocity; writes param and velocity.
    measure(benchmark, implementation, call, bytes_moved=5.0 * param.nbytes)


@pytest.mark.parametrize("size", OPTIMIZER_SIZES)
def test_adam_step(benchmark, implementation, size):
    benchmark.group = f"adam_step {size}"
    param, grad = random(size, 11), random(size, 12)
    m, v = np.zeros(size, F32), np.zeros(size, F32)
    g = grad.astype(np.float64)
    expected = param - 1e-3 * g / (np.abs(g) + 1e-8)  # Adam's first step, bias-corrected
    if implementation == "torch":
        import torch
        with torch.no_grad():
            torch_optimizer_step("Adam", param, grad, lr=1e-3)()
        call = torch_optimizer_step("Adam", param, grad, lr=1e-9)
    else:
        ops.adam_step(param, grad, m, v, 1, lr=1e-3)
        steps = iter(range(2, 10 ** 9))
        call = lambda: ops.adam_step(param, grad, m, v, next(steps), lr=1e-9)  # noqa: E731
    np.testing.assert_allclose(param, expected, rtol=1e-4, atol=1e-5)
    # Reads param, grad, m and v; writes param, m and v.
    measure(benchmark, implementation, call, bytes_moved=7.0 * param.nbytes)


# -- batch normalization ------------------------------------------------------------------

BATCHNORM_SHAPES = [(1024, 256), (128, 784)]


@pytest.mark.parametrize("shape", BATCHNORM_SHAPES, ids=lambda s: "{}x{}".format(*s))
def test_batchnorm_forward_backward(benchmark, implementation, shape):
    """A training step of a batch norm followed by relu: forward (statistics, normalize,
    scale, shift, relu, moving statistics) and backward (dgamma, dbeta, dx). The numpy row is
    the plain NumPy version (the reference backend); torch is eager BatchNorm1d + relu with
    autograd, momentum converted."""
    n, m = shape
    benchmark.group = f"batchnorm forward+backward {n}x{m}"
    rng = np.random.default_rng(13)
    x = (rng.standard_normal(shape) * 2 + 1).astype(F32)
    gamma, beta = (rng.standard_normal(m).astype(F32) for _ in range(2))
    dy = rng.standard_normal(shape).astype(F32)
    expected = [np.empty(shape), np.empty(m), np.empty(m), np.empty(shape), np.empty(m),
                np.empty(m)]
    x64, gamma64 = x.astype(np.float64), gamma.astype(np.float64)
    numpy_backend.batchnorm_forward(x64, gamma64, beta.astype(np.float64), np.zeros(m),
                                    np.ones(m), 0.99, 1e-3, True, "relu", 0.0, expected[0],
                                    expected[1], expected[2])
    numpy_backend.batchnorm_backward(x64, expected[0], dy.astype(np.float64), gamma64,
                                     expected[1], expected[2], True, "relu", 0.0, expected[3],
                                     expected[4], expected[5])
    if implementation == "torch":
        import torch
        layer = torch.nn.BatchNorm1d(m, eps=1e-3, momentum=0.01)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(gamma))
            layer.bias.copy_(torch.from_numpy(beta))
        tx, tdy = torch_tensors(x, dy)

        def call():
            leaf = tx.detach().requires_grad_()
            layer.weight.grad = layer.bias.grad = None
            out = torch.relu(layer(leaf))
            out.backward(tdy)
            return (out.detach().numpy(), leaf.grad.numpy(), layer.weight.grad.numpy(),
                    layer.bias.grad.numpy())
    else:
        out, mean, inv_std, dx = (np.empty(shape, F32), np.empty(m, F32), np.empty(m, F32),
                                  np.empty(shape, F32))
        dgamma, dbeta = np.empty(m, F32), np.empty(m, F32)
        moving_mean, moving_var = np.zeros(m, F32), np.ones(m, F32)

        def call():
            ops.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, 0.99, 1e-3, True,
                                  "relu", out=out, mean=mean, inv_std=inv_std)
            ops.batchnorm_backward(x, out, dy, gamma, mean, inv_std, True, "relu", dx=dx,
                                   dgamma=dgamma, dbeta=dbeta)
            return out, dx, dgamma, dbeta
    got = call()
    for value, want in zip(got, (expected[0], expected[3], expected[4], expected[5])):
        np.testing.assert_allclose(value, want, rtol=1e-3, atol=1e-3 * np.sqrt(n))
    # Reads x twice and dy, writes out and dx (the second reads of x come from cache).
    measure(benchmark, implementation, call, bytes_moved=4.0 * x.nbytes)


# -- softmax-cross-entropy with its options ---------------------------------------------------

@pytest.mark.parametrize("shape", XENT_SHAPES[:2], ids=lambda s: "{}x{}".format(*s))
@pytest.mark.parametrize("options", ["plain", "smoothing+ignore"])
def test_softmax_cross_entropy_options(benchmark, implementation, shape, options):
    """The fused kernel with label_smoothing=0.1 and ignore_index against itself without them,
    in one group: rows "<backend>" and "<backend> smoothing+ignore" (torch's F.cross_entropy
    alike)."""
    n, c = shape
    benchmark.group = f"softmax_cross_entropy options {n}x{c}"
    logits = random(shape, 7, scale=3.0)
    labels = np.random.default_rng(8).integers(0, c, n)
    settings = {}
    if options != "plain":
        labels[::10] = -100  # a tenth of the rows ignored
        settings = dict(label_smoothing=0.1, ignore_index=-100)
    grad = np.empty(shape, F32)
    expected_loss, expected_grad = numpy_reference_cross_entropy(logits, labels, settings)
    if implementation == "torch":
        import torch
        tlogits, tlabels = torch_tensors(logits, labels)

        def call():
            leaf = tlogits.detach().requires_grad_()
            loss = torch.nn.functional.cross_entropy(leaf, tlabels, **settings)
            loss.backward()
            return loss.item(), leaf.grad.numpy()
    else:
        call = lambda: ops.softmax_cross_entropy(logits, labels, grad=grad,  # noqa: E731
                                                 **settings)
    loss, got_grad = call()
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-4)
    np.testing.assert_allclose(got_grad, expected_grad, rtol=1e-3, atol=1e-6)
    measure(benchmark, implementation if options == "plain" else f"{implementation} {options}",
            call, bytes_moved=2.0 * logits.nbytes)


def numpy_reference_cross_entropy(logits, labels, settings):
    with fastnn.use_backend("numpy"):
        return ops.softmax_cross_entropy(logits.astype(np.float64), labels, **settings)
