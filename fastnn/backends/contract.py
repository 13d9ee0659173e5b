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
see :mod:`fastnn.backends.runtime`) the ``c`` and ``numba`` backends' kernels run
with flush-to-zero and denormals-are-zero (``numba``: on x86-64): a subnormal input
element counts as a zero of its sign, and an arithmetic result that would be subnormal
is written as zero.
So results differ from the IEEE reference (the ``numpy`` backend) only where an
input, an intermediate or a result is subnormal, by at most ``tiny`` in absolute
value per element and operation: a product of subnormal inputs is 0; a softmax
probability, an ``exp`` or a sigmoid below ``tiny`` is 0; an optimizer's moment
that decays below ``tiny`` becomes 0. Normal results keep their accuracy. With
``fastnn.set_flush_denormal(False)`` every kernel keeps IEEE subnormals (and
runs tens of times slower on them); the ``numpy`` backend always does. Kernels that
only move data or compute on integers (``take_rows``, ``one_hot``, ``round_bfloat16``,
``all_finite``) give the same results either way.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

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

    #: None, or a compiled entry that does all of :func:`fastnn.ops.matmul` for its plain
    #: case: ``matmul_entry(a, b, trans_a, trans_b, out, bfloat16)`` returns the product
    #: (``out``, or a new array when ``out`` is None) when a and b are exact ``numpy.ndarray``
    #: of one dtype (float32, float64 or bfloat16), 2-D, C-contiguous and aligned, with
    #: matching inner dimensions and no zero dimension, the flags are bools or ints, and
    #: ``out`` is None or an exact, writable, C-contiguous ndarray of the result's shape and
    #: dtype (or float32 for bfloat16 operands) that overlaps neither input; ``bfloat16`` (a
    #: bool) is the matmul precision, float32 operands then multiplying as :meth:`matmul` in
    #: "bfloat16" and float64 ones not being plain. Otherwise it returns None having done
    #: nothing, and ops.matmul takes its Python path (its checks and their errors). ops.matmul
    #: calls it only with a valid precision name. Its result must equal :meth:`matmul`'s bit
    #: for bit.
    matmul_entry: Optional[Callable[..., Optional[np.ndarray]]]

    def set_num_threads(self, n: int) -> None:
        """Use ``n >= 1`` threads in later kernel calls of this backend."""

    def get_num_threads(self) -> int:
        """Number of threads this backend's kernels use now."""

    # -- dense algebra -------------------------------------------------------

    def matmul(self, a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool,
               out: np.ndarray, precision: str = "float32") -> None:
        """``out = op(a) @ op(b)`` where ``op(t)`` is ``t.T`` when its flag is set.

        a: float (N, K), or (K, N) when ``trans_a``.
        b: float (K, M), or (M, K) when ``trans_b``.
        out: float (N, M), overwritten.
        The transposes are read in place; no transposed copy is required.
        precision: "float32", or "bfloat16" (float32 arrays only): the product of
        ``round_bfloat16(op(a))`` and ``round_bfloat16(op(b))``, accumulated in float32
        (the products of two bfloat16 numbers are exact in float32). The same holds for
        ``precision`` in ``linear_forward`` (its GEMM) and ``linear_backward`` (the GEMMs of
        ``dw`` and ``dx``; ``dz`` and ``db`` from the unrounded float32 ``dz``).
        With precision "bfloat16" (matmul only), a and b may both be bfloat16 arrays
        (``ml_dtypes.bfloat16``): the product of their numbers (fastnn.precision.
        widen_bfloat16), the bits the float32 arrays of those numbers give, into a float32
        out, or rounded as ``round_bfloat16`` rounds into a bfloat16 out. Float32 operands
        in "bfloat16" may write a bfloat16 out too: their float32 result so rounded (what
        ``torch.mm`` returns under ``torch.autocast("cpu", dtype=torch.bfloat16)``).
        """

    def linear_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray,
                       activation: str, alpha: float, out: np.ndarray,
                       precision: str = "float32") -> None:
        """``out = act(x @ w + b)`` in one pass over the output.

        x: float (N, K); w: float (K, M); b: float (M,); out: float (N, M).
        alpha: slope of leaky_relu for negative inputs (ignored otherwise).
        """

    def linear_backward(self, x: np.ndarray, w: np.ndarray, y: np.ndarray,
                        dy: np.ndarray, activation: str, alpha: float,
                        dx: Optional[np.ndarray], dw: np.ndarray,
                        db: np.ndarray, precision: str = "float32") -> None:
        """Gradients of ``y = act(x @ w + b)`` given ``dy = dL/dy``.

        With ``dz = dy * act'(y)`` (derivative from the output y):
        ``dw = x.T @ dz``, ``db = dz.sum(axis=0)``, ``dx = dz @ w.T``.

        x: float (N, K); w: float (K, M); y, dy: float (N, M), read only.
        dx: float (N, K) or None (the first layer needs no input gradient,
        so the GEMM is skipped); dw: float (K, M); db: float (M,). All three
        are overwritten, never accumulated into.
        """

    def round_bfloat16(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out = x`` rounded to bfloat16, as float32 numbers, bit for bit as the reference.

        x, out: float32, one shape (treated as flat); ``out`` may be ``x``. The reference
        (numpy backend): round to nearest, ties to even, on the float32 bits
        ``(u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000``; a NaN becomes
        ``(u | 0x00400000) & 0xFFFF0000`` (quiet, sign kept).
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
                              grad: Optional[np.ndarray], label_smoothing: float = 0.0,
                              ignore_index: Optional[int] = None,
                              sample_weight: Optional[np.ndarray] = None) -> None:
        """Cross-entropy of ``softmax(logits)`` against ``target``, and its gradient.

        logits: float (N, C).
        target: int64 (N,) class labels, each in [0, C) or equal to ``ignore_index``,
        or float (N, C) rows of probabilities (one-hot or soft; each row is expected
        to sum to 1; ``ignore_index`` is then None).
        label_smoothing: eps in [0, 1]; the target row t becomes
        ``t' = (1 - eps) * t + eps / C`` (PyTorch's and Keras' smoothing).
        sample_weight: float (N,) per-row weights w, or None (all 1).
        row_loss: float (N,), set to ``w * -sum_c t'[c] * log_softmax(logits)[c]``, with
        0 * log 0 taken as 0 (a class of target weight 0 adds nothing, also when its
        logit is -inf or far below the row's maximum); 0 for a row whose label is
        ``ignore_index``.
        grad: float (N, C) or None (loss only); when given, set to
        ``grad_scale * w * (softmax(logits) - t')`` (the gradient of the loss
        reduced by a sum times ``grad_scale``; 1/N for a mean), and 0 on ignored rows.
        ``grad`` may be ``logits`` itself, to save memory.
        Stable for |logits| up to at least 1e4 (max-subtracted). One read of the
        logits for the loss, one more to write the gradient: the options add no pass.
        """

    def sigmoid_cross_entropy(self, logits: np.ndarray, target: np.ndarray,
                              grad_scale: float, row_loss: np.ndarray,
                              grad: Optional[np.ndarray], label_smoothing: float = 0.0,
                              sample_weight: Optional[np.ndarray] = None) -> None:
        """Binary cross-entropy of ``sigmoid(logits)`` against ``target``, and its gradient.

        logits, target: float (N, M), targets in [0, 1]; label_smoothing eps makes
        them ``t' = (1 - eps) * t + eps / 2`` (Keras' smoothing); sample_weight: float
        (N,) or None. row_loss: float (N,), set to
        ``w * sum_j [max(z, 0) - z t' + log(1 + exp(-|z|))]`` (finite for any finite z).
        grad: float (N, M) or None; set to ``grad_scale * w * (sigmoid(z) - t')``.
        """

    def mse(self, pred: np.ndarray, target: np.ndarray, grad_scale: float,
            grad: Optional[np.ndarray],
            sample_weight: Optional[np.ndarray] = None) -> float:
        """Sum of squared errors ``sum_i w_i sum_j (pred - target)**2``, returned.

        pred, target: float (N, M); sample_weight: float (N,) per-row weights w,
        or None (all 1). grad: float (N, M) or None; when given, set to
        ``2 * grad_scale * w * (pred - target)``.
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

    # -- batch normalization and activations ---------------------------------

    def batchnorm_forward(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                          moving_mean: np.ndarray, moving_var: np.ndarray, momentum: float,
                          epsilon: float, training: bool, activation: str, alpha: float,
                          out: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> None:
        """``out = act(gamma * (x - mean) * inv_std + beta)``, column by column.

        x, out: float (N, M); gamma, beta, moving_mean, moving_var, mean, inv_std:
        float (M,). In training, ``mean`` and ``var`` are the batch's column mean
        and biased variance (divided by N, as Keras), ``inv_std = 1 / sqrt(var +
        epsilon)``, and the moving statistics are updated in place (Keras):
        ``moving = momentum * moving + (1 - momentum) * batch``, both with the
        biased variance. Outside training, ``mean = moving_mean`` and
        ``inv_std = 1 / sqrt(moving_var + epsilon)``, and nothing else is written.
        ``mean`` and ``inv_std`` are written in both modes, for the backward.
        A column of equal values (or N = 1) has variance 0: its output is
        ``act(beta)``. The statistics and the normalization read each column
        block of x twice while it is in cache: one pass over memory.
        """

    def batchnorm_backward(self, x: np.ndarray, y: np.ndarray, dy: np.ndarray,
                           gamma: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
                           batch_statistics: bool, activation: str, alpha: float,
                           dx: Optional[np.ndarray], dgamma: np.ndarray,
                           dbeta: np.ndarray) -> None:
        """Gradients of :meth:`batchnorm_forward` given ``dy = dL/dy``.

        x, y, dy: float (N, M) (y the forward's output, for act'(y)); gamma, mean,
        inv_std: float (M,) as the forward wrote them. With ``dz = dy * act'(y)`` and
        ``xhat = (x - mean) * inv_std``: ``dbeta = sum_rows dz``, ``dgamma =
        sum_rows dz * xhat``; with ``batch_statistics`` (a training forward)
        ``dx = gamma * inv_std * (dz - dbeta / N - xhat * dgamma / N)``, else
        (fixed statistics) ``dx = gamma * inv_std * dz``. dx: float (N, M) or None
        (not wanted); dgamma, dbeta: float (M,). All overwritten. At most two
        passes over the rows: the sums, then dx.
        """

    def activation_forward(self, x: np.ndarray, activation: str, alpha: float,
                           out: np.ndarray) -> None:
        """``out = act(x)`` elementwise; x, out: float, one shape (treated as flat)."""

    def activation_backward(self, y: np.ndarray, dy: np.ndarray, activation: str,
                            alpha: float, dx: np.ndarray) -> None:
        """``dx = dy * act'(y)`` from the output ``y = act(x)``; y, dy, dx: float, one
        shape (treated as flat)."""

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


    # -- the compiled training loop -----------------------------------------------

    def train_steps(self, plan, order: np.ndarray, first_step: int, steps: int,
                    stats: np.ndarray) -> int:
        """Run training steps ``first_step .. first_step + steps - 1`` of an epoch over
        ``plan`` (a :class:`fastnn.plan.TrainingPlan`: the model's layers, loss, optimizer,
        data and buffers, as arrays), with no Python between the steps.

        Step s trains on the rows ``order[s * B:(s + 1) * B]`` of the data (fewer for the
        last; the data in place when the plan's ``config[C_GATHER]`` is 0), B the plan's
        batch: forward, loss and its gradient, backward and the optimizer's update, with
        the dropout masks of :mod:`fastnn.counter_rng` for ``(config[C_EPOCH], s)``.
        order: int64 (samples,), a permutation; stats: float64 (steps, 2), set to each
        step's mean loss and correct count (0 without a metric).

        Returns the steps done. A step whose loss is not finite is counted out: its stats
        row holds the loss, and nothing is updated, so fewer than ``steps`` are done.
        With ``config[C_MODE]`` MODE_EVALUATE the steps evaluate only: forward (dropout
        off), loss and correct count, no update, every step done (``evaluate``'s path).
        Data-parallel training (:mod:`fastnn.distributed`) splits each step in two calls of
        ``steps=1``: MODE_GRADIENTS runs forward, loss and backward (stats written; 0 steps
        done when the loss is not finite) and leaves the gradients in ``plan.grads``, nothing
        updated; MODE_APPLY runs the optimizer's update alone from ``plan.grads`` (Adam's
        step count advanced), reading no data and writing no stats. The two in turn give
        the weights of MODE_TRAIN bit for bit. MODE_PREDICT runs the forward pass alone as
        MODE_EVALUATE does, no loss, nothing updated, stats not written: step s's last-layer
        outputs (before the softmax or sigmoid a loss fuses in) go to ``plan.outputs`` rows
        ``s * B:(s + 1) * B`` (``predict``'s path).
        The weights, gradients and optimizer state equal those of the same steps run with
        this backend's per-layer kernels (the numpy backend runs exactly those calls); the
        gradients are the last step's, which a backend must leave in full even where it fuses
        an update with a gradient (the C backend's plain SGD, README "The compiled training
        loop").
        Raises MemoryError when scratch memory cannot be had.
        """


#: Names every backend module must define, checked when it is registered.
KERNEL_NAMES = (
    "matmul", "linear_forward", "linear_backward", "round_bfloat16", "softmax", "log_softmax",
    "softmax_cross_entropy", "sigmoid_cross_entropy", "mse", "batchnorm_forward",
    "batchnorm_backward", "activation_forward", "activation_backward", "one_hot",
    "count_correct", "all_finite", "take_rows",
    "sgd_step", "adam_step", "train_steps", "set_num_threads", "get_num_threads",
    "matmul_entry",
)
