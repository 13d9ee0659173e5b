"""The kernel contract: what every fastnn backend implements, written once.

A backend is a module whose functions satisfy :class:`Backend`. The public
functions in :mod:`fastnn.ops` validate every argument before a backend sees
it, so a backend may rely on all of the following and check none of it:

* every array is a C-contiguous, aligned ``numpy.ndarray``;
* every floating array of one call has the same dtype, ``float32`` or
  ``float64`` (called ``float`` below); integer labels are ``int64``;
* shapes agree exactly as stated in each docstring, and no dimension is 0;
* output arrays (``out``, ``dx``, ``dw``, ``db``, ``grad``, ``row_loss``) are
  freshly allocated or caller-owned, writable, and never alias an input unless
  the docstring says so;
* ``activation`` is one of :data:`ACTIVATIONS`; scalars are Python floats/ints.

Kernels write into the output arrays they are given and allocate nothing the
caller can see. Accumulations into a float32 result may use float32
arithmetic; losses are returned as Python floats.

Subnormal numbers (magnitudes below ``np.finfo(dtype).tiny``: 1.2e-38 in
float32, 2.2e-308 in float64). By default (``fastnn.set_flush_denormal(True)``,
see :mod:`fastnn.backends.runtime`) the ``c`` backend's kernels, and the ``numba``
backend's ``matmul``, ``linear_forward`` and ``linear_backward``, run with
flush-to-zero and denormals-are-zero: a subnormal input element counts as a zero
of its sign, and an arithmetic result that would be subnormal is written as zero.
So results differ from the IEEE reference (the ``numpy`` backend) only where an
input, an intermediate or a result is subnormal, by at most ``tiny`` in absolute
value per element and operation: a product of subnormal inputs is 0; a softmax
probability, an ``exp`` or a sigmoid below ``tiny`` is 0; an optimizer's moment
that decays below ``tiny`` becomes 0. Normal results keep their accuracy. With
``fastnn.set_flush_denormal(False)`` every kernel keeps IEEE subnormals (and
runs tens of times slower on them).
"""

from __future__ import annotations

from typing import Optional, Protocol

import numpy as np

#: Activation names accepted by the linear kernels. Each derivative is a
#: function of the activation's output ``y`` alone, so a layer keeps one array:
#: identity: 1; relu: y > 0; leaky_relu: 1 if y > 0 else alpha;
#: sigmoid: y * (1 - y); tanh: 1 - y**2.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh")

#: Integer code of each activation, for backends (C, Numba) that switch on ints.
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
LABEL_DTYPE = np.dtype(np.int64)


class Backend(Protocol):
    """The functions every backend module provides.

    Shapes use N for the batch, K for the inner (input) size, M for the
    output size and C for the number of classes.
    """

    #: Registry name of the backend ("numpy", "numba", "c").
    NAME: str

    def set_num_threads(self, n: int) -> None:
        """Use ``n >= 1`` threads in later kernel calls of this backend."""

    def get_num_threads(self) -> int:
        """Number of threads this backend's kernels use now."""

    # -- dense algebra -------------------------------------------------------

    def matmul(self, a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool,
               out: np.ndarray) -> None:
        """``out = op(a) @ op(b)`` where ``op(t)`` is ``t.T`` when its flag is set.

        a: float (N, K), or (K, N) when ``trans_a``.
        b: float (K, M), or (M, K) when ``trans_b``.
        out: float (N, M), overwritten.
        The transposes are read in place; no transposed copy is required.
        """

    def linear_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray,
                       activation: str, alpha: float, out: np.ndarray) -> None:
        """``out = act(x @ w + b)`` in one pass over the output.

        x: float (N, K); w: float (K, M); b: float (M,); out: float (N, M).
        alpha: slope of leaky_relu for negative inputs (ignored otherwise).
        """

    def linear_backward(self, x: np.ndarray, w: np.ndarray, y: np.ndarray,
                        dy: np.ndarray, activation: str, alpha: float,
                        dx: Optional[np.ndarray], dw: np.ndarray,
                        db: np.ndarray) -> None:
        """Gradients of ``y = act(x @ w + b)`` given ``dy = dL/dy``.

        With ``dz = dy * act'(y)`` (derivative from the output y):
        ``dw = x.T @ dz``, ``db = dz.sum(axis=0)``, ``dx = dz @ w.T``.

        x: float (N, K); w: float (K, M); y, dy: float (N, M), read only.
        dx: float (N, K) or None (the first layer needs no input gradient,
        so the GEMM is skipped); dw: float (K, M); db: float (M,). All three
        are overwritten, never accumulated into.
        """

    # -- softmax and losses --------------------------------------------------

    def softmax(self, x: np.ndarray, out: np.ndarray) -> None:
        """Row-wise ``exp(x - max) / sum(exp(x - max))``. x, out: float (N, C).

        ``out`` may be ``x`` itself (in place).
        """

    def log_softmax(self, x: np.ndarray, out: np.ndarray) -> None:
        """Row-wise ``x - max - log(sum(exp(x - max)))``. x, out: float (N, C).

        ``out`` may be ``x`` itself (in place).
        """

    def softmax_cross_entropy(self, logits: np.ndarray, target: np.ndarray,
                              grad_scale: float, row_loss: np.ndarray,
                              grad: Optional[np.ndarray]) -> None:
        """Cross-entropy of ``softmax(logits)`` against ``target``, and its gradient.

        logits: float (N, C).
        target: int64 (N,) class labels in [0, C), or float (N, C) rows of
        probabilities (one-hot or soft; each row is expected to sum to 1).
        row_loss: float (N,), set to ``-sum_c target[c] * log_softmax(logits)[c]``.
        grad: float (N, C) or None (loss only); when given, set to
        ``grad_scale * (softmax(logits) - target)`` (the gradient of the loss
        reduced by a sum times ``grad_scale``; 1/N for a mean). ``grad`` may be
        ``logits`` itself, to save memory.
        Stable for |logits| up to at least 1e4 (max-subtracted).
        """

    def mse(self, pred: np.ndarray, target: np.ndarray, grad_scale: float,
            grad: Optional[np.ndarray]) -> float:
        """Sum of squared errors ``sum((pred - target)**2)``, returned.

        pred, target: float (N, M). grad: float (N, M) or None; when given,
        set to ``2 * grad_scale * (pred - target)``.
        """

    def one_hot(self, labels: np.ndarray, out: np.ndarray) -> None:
        """``out[i, c] = 1 if labels[i] == c else 0``.

        labels: int64 (N,) in [0, C); out: float (N, C), overwritten.
        """

    def count_correct(self, scores: np.ndarray, labels: np.ndarray) -> int:
        """Number of rows i with ``argmax(scores[i]) == labels[i]``.

        scores: float (N, C); labels: int64 (N,). Ties go to the first
        maximum, as ``numpy.argmax``.
        """

    # -- data ----------------------------------------------------------------

    def all_finite(self, x: np.ndarray) -> bool:
        """Whether no element of x (float, any shape, treated as flat; not empty) is NaN or
        infinite."""

    def take_rows(self, source: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
        """``out[i] = source[index[i]]``: gathers the rows of a batch.

        source: (R, ...) of any dtype (features, labels, target rows); index:
        int64 (N,), every entry in [0, R), repeats allowed; out: (N, ...) of
        source's dtype and row shape.
        """

    # -- optimizer steps (in place) -----------------------------------------

    def sgd_step(self, param: np.ndarray, grad: np.ndarray,
                 velocity: Optional[np.ndarray], lr: float, momentum: float,
                 nesterov: bool, weight_decay: float) -> None:
        """One SGD step in place, with PyTorch's semantics.

        param, grad, velocity: float, one shape, any rank (treated as flat).
        ``g = grad + weight_decay * param``; with momentum (velocity given,
        momentum > 0): ``velocity = momentum * velocity + g`` and then
        ``g = g + momentum * velocity`` (Nesterov) or ``g = velocity``;
        finally ``param -= lr * g``. ``grad`` is not modified.
        velocity is None exactly when momentum == 0.
        """

    def adam_step(self, param: np.ndarray, grad: np.ndarray, m: np.ndarray,
                  v: np.ndarray, lr: float, beta1: float, beta2: float,
                  eps: float, weight_decay: float, step: int) -> None:
        """One Adam step in place (Kingma & Ba, PyTorch's ``Adam``).

        param, grad, m, v: float, one shape (treated as flat); step >= 1 is
        the number of this step, for the bias corrections.
        ``g = grad + weight_decay * param``; ``m = beta1*m + (1-beta1)*g``;
        ``v = beta2*v + (1-beta2)*g*g``;
        ``param -= lr * (m / (1-beta1**step)) / (sqrt(v / (1-beta2**step)) + eps)``.
        """


#: Names every backend module must define, checked when it is registered.
KERNEL_NAMES = (
    "matmul", "linear_forward", "linear_backward", "softmax", "log_softmax",
    "softmax_cross_entropy", "mse", "one_hot", "count_correct", "all_finite", "take_rows",
    "sgd_step", "adam_step", "set_num_threads", "get_num_threads",
)
