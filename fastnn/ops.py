"""Public kernel functions: validate once, then run the current backend.

Each function checks its arguments (rank, shape, dtype, labels, names),
copies non-contiguous views, allocates the outputs it is not given, and calls
the kernel of the same name on :func:`fastnn.get_backend`. Shapes and
semantics are those of :mod:`fastnn.backends.contract`.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import aligned
from .backends import get_backend
from .backends.contract import ACTIVATION_CODES, FLOAT_DTYPES, LABEL_DTYPE
from .precision import (ALIASES, PRECISIONS, get_matmul_precision, is_bfloat16,
                        is_bfloat16_dtype, precision_name)
from .precision import resolve as _precision
from .validation import (activation_name, bfloat16_array, finite_number, float_array,
                         label_array, non_empty_batch, output_array, positive_number,
                         same_shape, within, writable_array)

REDUCTIONS = ("mean", "sum", "none")

# -- the fast path of the GEMM kernels ----------------------------------------------------
# matmul, linear_forward and linear_backward are called on tiny arrays too (one sample, a
# small layer), where Python's time is most of the call. Arrays that the checks below would
# pass unchanged (numpy arrays of one float dtype, C-contiguous, aligned, of the stated ranks
# and matching shapes, no zero dimension) are recognised with a few attribute reads
# (``flags.carray``: C-contiguous, aligned and writable; a read-only input just takes the
# general path) and go straight to the backend. Anything else takes the general path, which
# raises the error that names the argument. The fast path changes no result.
_ndarray = np.ndarray
_F32, _F64 = FLOAT_DTYPES
#: The precision names ops.matmul's call entry may be given (the others raise in Python).
_PRECISION_NAMES = frozenset(PRECISIONS) | frozenset(ALIASES)
_INF = float("inf")
_may_share_memory = np.may_share_memory


def _gemm_precision(precision, dtype) -> str:
    """:func:`fastnn.precision.resolve` for valid arrays, without its checks when None."""
    if precision is None:
        return get_matmul_precision() if dtype is _F32 else "float32"
    return _precision(precision, dtype)


def _ready(out, shape: Tuple[int, ...], dtype) -> bool:
    """Whether the caller's output buffer ``out`` can be written by the kernel as it is."""
    return (type(out) is _ndarray and out.dtype is dtype and out.shape == shape
            and out.flags.carray)


def _reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(REDUCTIONS)}, got {reduction!r}")
    return reduction


def _transpose_flag(name: str, value) -> bool:
    """A transpose flag: a bool or an int (as the compiled entry takes them, and as BLAS's
    0 / 1); TypeError naming ``name`` for anything else (a string was true)."""
    if not isinstance(value, (bool, int, np.bool_, np.integer)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def matmul(a, b, trans_a: bool = False, trans_b: bool = False, out=None,
           precision: Optional[str] = None) -> np.ndarray:
    """``op(a) @ op(b)``; a (N, K) or (K, N) if trans_a, b (K, M) or (M, K) if trans_b.

    precision: "float32", "bfloat16" (alias "mixed_bfloat16": operands rounded to bfloat16,
    float32 accumulation) or None for :func:`fastnn.get_matmul_precision`; see
    :mod:`fastnn.precision`. ValueError for an unknown name or bfloat16 with float64;
    TypeError for a transpose flag that is not a bool (or an int).
    a and b may both be bfloat16 arrays (``ml_dtypes.bfloat16``): they multiply as bfloat16
    precision multiplies rounded float32 operands (exact products, float32 sums), whatever
    ``precision`` names (rounding a bfloat16 number changes nothing), and the result is
    bfloat16 (the sums rounded to nearest even, as ``torch.mm`` and ``jax.numpy.dot`` return
    for bfloat16 operands), or float32 sums into a float32 ``out``. TypeError when only one
    of them is bfloat16 or ``out`` is neither.
    Float32 operands in bfloat16 precision may also write a bfloat16 ``out``: the float32
    result rounded to bfloat16 (nearest even), what ``torch.mm`` returns for float32 tensors
    under ``torch.autocast("cpu", dtype=torch.bfloat16)``, and the bits of the same numbers
    given as bfloat16 operands; half the bytes of a float32 result to write. TypeError for a
    bfloat16 ``out`` in float32 precision or of float64 operands.
    ``out`` may overlap ``a`` or ``b`` (the product is then computed aside and copied in).
    A transposed view (a Fortran-ordered array such as ``w.T``) is read in place through the
    other transpose flag, as BLAS reads it; other non-contiguous views are copied.
    """
    backend = get_backend()
    entry = backend.matmul_entry
    if entry is not None:
        # the backend's compiled entry: the plain case checked and run in C, else None (a bad
        # precision name never reaches it: the Python path below raises its error)
        name = get_matmul_precision() if precision is None else precision
        if type(name) is str and name in _PRECISION_NAMES:
            product = entry(a, b, trans_a, trans_b, out, name != "float32")
            if product is not None:
                return product
    trans_a, trans_b = _transpose_flag("trans_a", trans_a), _transpose_flag("trans_b", trans_b)
    if type(a) is _ndarray and type(b) is _ndarray:
        dtype = a.dtype
        if not a.flags.carray:
            a, trans_a = _untransposed(a, trans_a)
        if not b.flags.carray:
            b, trans_b = _untransposed(b, trans_b)
        bfloat16 = is_bfloat16_dtype(dtype)
        if ((dtype is _F32 or dtype is _F64 or bfloat16) and b.dtype is dtype
                and a.ndim == 2 and b.ndim == 2 and a.flags.carray and b.flags.carray):
            if trans_a:
                k, n = a.shape
            else:
                n, k = a.shape
            if trans_b:
                m, k_b = b.shape
            else:
                k_b, m = b.shape
            # bfloat16 operands: a bfloat16 out, or float32 for the sums
            if k == k_b and n and k and m and (out is None or (
                    (_ready(out, (n, m), dtype) or bfloat16 and _ready(out, (n, m), _F32))
                    and not _overlaps(out, a, b))):
                if bfloat16:
                    if precision is not None:
                        precision_name(precision)  # a bad name is still an error
                    precision = "bfloat16"
                else:
                    precision = _gemm_precision(precision, dtype)
                if out is None:
                    out = aligned.output((n, m), dtype)
                backend.matmul(a, b, True if trans_a else False, True if trans_b else False,
                               out, precision)
                return out
    # a transposed view (Fortran-ordered, as ``w.T`` of a C-ordered w) is read through the
    # other transpose flag, as BLAS reads it, rather than copied (a 2048 x 2048 copy took 100
    # times the product's time)
    a, trans_a = _untransposed(a, trans_a)
    b, trans_b = _untransposed(b, trans_b)
    if is_bfloat16(a) or is_bfloat16(b):
        a = bfloat16_array("a", a, 2, like=None if is_bfloat16(a) else "b")
        b = bfloat16_array("b", b, 2, like="a")
        if precision is not None:
            precision_name(precision)  # a bad name is still an error
        precision = "bfloat16"
        # a bfloat16 result unless out asks for the float32 sums
        dtype = a.dtype
        if isinstance(out, np.ndarray) and not is_bfloat16(out):
            if out.dtype != np.float32:
                raise TypeError(f"out: expected dtype bfloat16 or float32 for bfloat16 "
                                f"operands, got {out.dtype}")
            dtype = out.dtype
    else:
        a = float_array("a", a, ndim=2)
        b = float_array("b", b, ndim=2, dtype=a.dtype)
        precision, dtype = _precision(precision, a.dtype), a.dtype
        if isinstance(out, np.ndarray) and is_bfloat16(out):
            # float32 operands in bfloat16 precision: the sums rounded, as autocast returns
            if precision != "bfloat16":
                raise TypeError(f"out: a bfloat16 out needs float32 operands in bfloat16 "
                                f"precision, got {a.dtype} operands in {precision} precision")
            dtype = out.dtype
    n, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    k_b, m = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != k_b:
        raise ValueError(f"b: inner dimension {k_b} of op(b) {(k_b, m)} does not match "
                         f"{k} of op(a) {(n, k)}")
    out = output_array("out", out, (n, m), dtype)
    if out.size and k == 0:
        out[...] = 0  # an empty sum; the kernels never see a zero dimension
    elif out.size and _overlaps(out, a, b):
        # the kernels' outputs never alias their inputs (contract.py): compute aside
        out[...] = matmul(a, b, trans_a, trans_b, np.empty_like(out), precision)
    elif out.size:
        backend.matmul(a, b, bool(trans_a), bool(trans_b), out, precision)
    return out


def _untransposed(x, trans: bool):
    """(x.T, not trans) when x is a 2-D array stored in Fortran order but not C order (a
    transposed view), else (x, trans): op(x) is the same matrix either way."""
    if (type(x) is _ndarray and x.ndim == 2 and x.flags.f_contiguous
            and not x.flags.c_contiguous):
        return x.T, not trans
    return x, trans


def _overlaps(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the memory of ``out`` may overlap that of a or b (bounds only: 0.2 us each)."""
    return _may_share_memory(out, a) or _may_share_memory(out, b)


def _linear_operands(x, w):
    x = float_array("x", x, ndim=2)
    w = float_array("w", w, ndim=2, dtype=x.dtype)
    if w.shape[0] != x.shape[1]:
        raise ValueError(f"w: expected {x.shape[1]} rows to match x's {x.shape[1]} features, "
                         f"got shape {w.shape}")
    if w.size == 0:
        raise ValueError(f"w: expected a non-empty weight matrix, got shape {w.shape}")
    return x, w


def linear_forward(x, w, b, activation: Optional[str] = "identity", alpha: float = 0.01,
                   out=None, precision: Optional[str] = None) -> np.ndarray:
    """``act(x @ w + b)``: x (N, K), w (K, M), b (M,) -> (N, M).

    precision: of the GEMM, as for :func:`matmul`; bias and activation stay in x's dtype.
    """
    if type(x) is _ndarray and type(w) is _ndarray and type(b) is _ndarray:
        dtype = x.dtype
        if ((dtype is _F32 or dtype is _F64) and w.dtype is dtype and b.dtype is dtype
                and x.ndim == 2 and w.ndim == 2 and b.ndim == 1 and x.flags.carray
                and w.flags.carray and b.flags.carray):
            n, k = x.shape
            k_w, m = w.shape
            if (k == k_w and n and k and m and b.shape[0] == m and type(activation) is str
                    and activation in ACTIVATION_CODES and type(alpha) is float
                    and -_INF < alpha < _INF
                    and (out is None or _ready(out, (n, m), dtype))):
                precision = _gemm_precision(precision, dtype)
                if out is None:
                    out = aligned.output((n, m), dtype)
                get_backend().linear_forward(x, w, b, activation, alpha, out, precision)
                return out
    x, w = _linear_operands(x, w)
    precision = _precision(precision, x.dtype)
    b = float_array("b", b, ndim=1, dtype=x.dtype)
    same_shape("b", b, (w.shape[1],))
    activation = activation_name(activation)
    alpha = finite_number("alpha", alpha)
    out = output_array("out", out, (x.shape[0], w.shape[1]), x.dtype)
    if x.shape[0]:
        get_backend().linear_forward(x, w, b, activation, alpha, out, precision)
    return out


def linear_backward(x, w, y, dy, activation: Optional[str] = "identity", alpha: float = 0.01,
                    need_dx: bool = True, dx=None, dw=None, db=None,
                    precision: Optional[str] = None
                    ) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Gradients ``(dx, dw, db)`` of ``y = act(x @ w + b)`` given ``dy``.

    x (N, K), w (K, M), y and dy (N, M) -> dx (N, K) or None when not
    ``need_dx``, dw (K, M), db (M,). precision: of the two GEMMs (dw, dx), as for
    :func:`matmul`; dz = dy * act'(y) and db stay in x's dtype.
    """
    if type(x) is _ndarray and type(w) is _ndarray and type(y) is _ndarray \
            and type(dy) is _ndarray:
        dtype = x.dtype
        if ((dtype is _F32 or dtype is _F64) and w.dtype is dtype and y.dtype is dtype
                and dy.dtype is dtype and x.ndim == 2 and w.ndim == 2 and x.flags.carray
                and w.flags.carray and y.flags.carray and dy.flags.carray):
            n, k = x.shape
            k_w, m = w.shape
            if (k == k_w and n and k and m and y.shape == (n, m) and dy.shape == (n, m)
                    and type(activation) is str and activation in ACTIVATION_CODES
                    and type(alpha) is float and -_INF < alpha < _INF
                    and (dx is None or not need_dx or _ready(dx, (n, k), dtype))
                    and (dw is None or _ready(dw, (k, m), dtype))
                    and (db is None or _ready(db, (m,), dtype))):
                precision = _gemm_precision(precision, dtype)
                dx = (aligned.output((n, k), dtype) if dx is None else dx) if need_dx else None
                if dw is None:
                    dw = aligned.output((k, m), dtype)
                if db is None:
                    db = np.empty(m, dtype)
                get_backend().linear_backward(x, w, y, dy, activation, alpha, dx, dw, db,
                                              precision)
                return dx, dw, db
    x, w = _linear_operands(x, w)
    precision = _precision(precision, x.dtype)
    y = float_array("y", y, ndim=2, dtype=x.dtype)
    dy = float_array("dy", dy, ndim=2, dtype=x.dtype)
    same_shape("y", y, (x.shape[0], w.shape[1]))
    same_shape("dy", dy, y.shape)
    non_empty_batch("x", x)
    activation = activation_name(activation)
    alpha = finite_number("alpha", alpha)
    dx = output_array("dx", dx, x.shape, x.dtype) if need_dx else None
    dw = output_array("dw", dw, w.shape, x.dtype)
    db = output_array("db", db, (w.shape[1],), x.dtype)
    get_backend().linear_backward(x, w, y, dy, activation, alpha, dx, dw, db, precision)
    return dx, dw, db


def round_bfloat16(x, out=None) -> np.ndarray:
    """x (float32, any shape) rounded to the nearest bfloat16, as float32 numbers.

    Round to nearest, ties to even, on the bits (PyTorch's ``c10::BFloat16``, ml_dtypes'
    ``bfloat16``): infinities stay infinite, finite values past the largest bfloat16 round
    to infinity, subnormals round like any number, NaN stays a (quiet) NaN. The rounding of
    bfloat16 matmul precision (:mod:`fastnn.precision`). ``out`` may be ``x``.
    """
    x = float_array("x", x, dtype=np.float32)
    out = output_array("out", out, x.shape, np.float32)
    if x.size:
        get_backend().round_bfloat16(x, out)
    return out


def softmax(x, out=None) -> np.ndarray:
    """Row-wise softmax of x (N, C)."""
    x = float_array("x", x, ndim=2)
    out = output_array("out", out, x.shape, x.dtype)
    if x.size:
        get_backend().softmax(x, out)
    return out


def log_softmax(x, out=None) -> np.ndarray:
    """Row-wise log-softmax of x (N, C)."""
    x = float_array("x", x, ndim=2)
    out = output_array("out", out, x.shape, x.dtype)
    if x.size:
        get_backend().log_softmax(x, out)
    return out


def _reduce(row_loss: np.ndarray, reduction: str, count: int) -> Union[float, np.ndarray]:
    if reduction == "none":
        return row_loss
    total = float(np.sum(row_loss, dtype=np.float64))
    if reduction == "sum":
        return total
    return total / count if count else 0.0


def _label_smoothing(value) -> float:
    value = positive_number("label_smoothing", value, allow_zero=True)
    if value > 1:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {value}")
    return value


def _sample_weight(sample_weight, n: int, dtype: np.dtype) -> Optional[np.ndarray]:
    """Per-row weights (N,) of the call's dtype: finite and >= 0; None stays None."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight: expected numbers, got dtype {weights.dtype}")
    if weights.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},), one weight per row, got "
                         f"{weights.shape}")
    weights = np.ascontiguousarray(weights, dtype=dtype)
    if not np.isfinite(weights).all():
        raise ValueError("sample_weight: contains NaN or infinity")
    if (weights < 0).any():
        raise ValueError(f"sample_weight: weights must be >= 0, got {weights.min():g}")
    return weights


def _ignore_index(ignore_index) -> Optional[int]:
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) \
            or not -2 ** 63 <= ignore_index < 2 ** 63:
        raise TypeError(f"ignore_index: expected None or an int64 class index, got "
                        f"{ignore_index!r}")
    return int(ignore_index)


def _cross_entropy_labels(target: np.ndarray, c: int, n: int,
                          ignore_index: Optional[int]) -> np.ndarray:
    """int64 labels (N,), each in [0, C) or equal to ignore_index."""
    if ignore_index is None:
        return label_array("target", target, c, n)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target: expected integer class labels, got dtype {target.dtype}")
    if target.shape != (n,):
        raise ValueError(f"target: expected shape ({n},) to match the batch, got {target.shape}")
    counted = target[target != ignore_index]
    if counted.size:
        within("target", counted, c, f"labels other than ignore_index={ignore_index}")
    return np.ascontiguousarray(target, dtype=LABEL_DTYPE)


def softmax_cross_entropy(logits, target, reduction: str = "mean", compute_grad: bool = True,
                          grad=None, label_smoothing: float = 0.0,
                          ignore_index: Optional[int] = None, sample_weight=None
                          ) -> Tuple[Union[float, np.ndarray], Optional[np.ndarray]]:
    """Cross-entropy of softmax(logits) and its gradient with respect to logits.

    logits: float (N, C). target: integer labels (N,) in [0, C), or float
    probability rows (N, C) of the logits' dtype. Returns ``(loss, grad)``:
    loss is a float (mean or sum over rows) or the (N,) per-row losses for
    ``reduction="none"``; grad (N, C) is d(loss)/d(logits), or None when
    ``compute_grad`` is False. ``grad`` may be passed as a buffer to fill,
    including ``logits`` itself.

    The options have PyTorch's meanings (``torch.nn.functional.cross_entropy``):

    * ``label_smoothing`` eps in [0, 1] mixes each target row with the uniform
      distribution: ``(1 - eps) * t + eps / C``.
    * ``ignore_index`` (integer labels only): rows with this label add neither loss
      nor gradient, and "mean" divides by the number of rows that count. When every
      row is ignored, the loss is 0 and the gradient 0 (PyTorch gives NaN; a batch of
      padding alone should not stop training). Labels other than it must lie in [0, C).
    * ``sample_weight``: float (N,) per-row weights >= 0 (Keras' convention): each row's
      loss and gradient are multiplied by its weight, and "mean" is
      ``sum(w * loss) / N`` over the N counted rows, Keras' "sum_over_batch_size" (not
      PyTorch's division by the sum of the weights).

    Targets of weight 0 add nothing, also against a logit of -inf (0 * log 0 = 0), so a
    masked class or logits whose spread overflows float32 give the finite loss.
    Raises TypeError/ValueError naming the argument for a bad shape, dtype, label,
    weight, option or reduction.
    """
    logits = float_array("logits", logits, ndim=2)
    reduction = _reduction(reduction)
    non_empty_batch("logits", logits)
    label_smoothing = _label_smoothing(label_smoothing)
    ignore_index = _ignore_index(ignore_index)
    n, c = logits.shape
    target_array = np.asarray(target)
    if target_array.ndim == 1:
        target = _cross_entropy_labels(target_array, c, n, ignore_index)
        counted = n if ignore_index is None else int(np.count_nonzero(target != ignore_index))
    else:
        if ignore_index is not None:
            raise ValueError("ignore_index: applies to integer class labels only, and target "
                             f"holds probability rows of shape {target_array.shape}")
        if target_array.dtype.kind in "iub" and target_array.ndim == 2:
            raise TypeError(f"target: expected integer class labels of shape (N,) = ({n},) or "
                            f"probability rows (N, C) of {logits.dtype}, got {target_array.dtype}"
                            f" of shape {target_array.shape} (labels in a column: ravel them)")
        target = float_array("target", target_array, ndim=2, dtype=logits.dtype)
        same_shape("target", target, logits.shape)
        counted = n
    sample_weight = _sample_weight(sample_weight, n, logits.dtype)
    grad = output_array("grad", grad, logits.shape, logits.dtype) if compute_grad else None
    row_loss = np.empty(n, dtype=logits.dtype)
    grad_scale = (1.0 / counted if counted else 0.0) if reduction == "mean" else 1.0
    get_backend().softmax_cross_entropy(logits, target, grad_scale, row_loss, grad,
                                        label_smoothing, ignore_index, sample_weight)
    return _reduce(row_loss, reduction, counted), grad


def sigmoid_cross_entropy(logits, target, reduction: str = "mean", compute_grad: bool = True,
                          grad=None, label_smoothing: float = 0.0, sample_weight=None
                          ) -> Tuple[Union[float, np.ndarray], Optional[np.ndarray]]:
    """Binary cross-entropy of sigmoid(logits) against targets in [0, 1], and its gradient.

    logits, target: float (N, M) of one dtype. Elementwise
    ``max(z, 0) - z t + log(1 + exp(-|z|))``, PyTorch's
    ``binary_cross_entropy_with_logits``, finite for every finite logit.
    label_smoothing eps in [0, 1]: targets become ``(1 - eps) t + eps / 2`` (Keras).
    sample_weight: float (N,) per-row weights >= 0, or None.
    Returns ``(loss, grad)``: "mean" is ``sum_ij w_i l_ij / (N M)`` (Keras'
    sum_over_batch_size of the per-sample means; PyTorch's mean with weight
    ``w[:, None]``), "sum" the weighted sum, "none" the (N,) per-row
    ``w_i * mean_j l_ij``; grad (N, M) is d(loss)/d(logits) (of the sum for "none").
    """
    logits = float_array("logits", logits, ndim=2)
    target = float_array("target", target, ndim=2, dtype=logits.dtype)
    same_shape("target", target, logits.shape)
    reduction = _reduction(reduction)
    non_empty_batch("logits", logits)
    label_smoothing = _label_smoothing(label_smoothing)
    n, m = logits.shape
    sample_weight = _sample_weight(sample_weight, n, logits.dtype)
    grad = output_array("grad", grad, logits.shape, logits.dtype) if compute_grad else None
    row_loss = np.empty(n, dtype=logits.dtype)
    grad_scale = 1.0 / logits.size if reduction == "mean" else 1.0
    get_backend().sigmoid_cross_entropy(logits, target, grad_scale, row_loss, grad,
                                        label_smoothing, sample_weight)
    if reduction == "none":
        return row_loss / row_loss.dtype.type(m), grad
    total = float(np.sum(row_loss, dtype=np.float64))
    return (total / logits.size if reduction == "mean" else total), grad


def mse(pred, target, reduction: str = "mean", compute_grad: bool = True, grad=None,
        sample_weight=None) -> Tuple[float, Optional[np.ndarray]]:
    """Mean (or summed) squared error of pred and target (N, M), and its gradient.

    sample_weight: float (N,) per-row weights >= 0, or None; "mean" is then
    ``sum_ij w_i (pred - target)**2 / (N M)`` (Keras' sum_over_batch_size of the
    per-sample means).
    """
    pred = float_array("pred", pred, ndim=2)
    target = float_array("target", target, ndim=2, dtype=pred.dtype)
    same_shape("target", target, pred.shape)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum' for mse, got {reduction!r}")
    non_empty_batch("pred", pred)
    sample_weight = _sample_weight(sample_weight, pred.shape[0], pred.dtype)
    grad = output_array("grad", grad, pred.shape, pred.dtype) if compute_grad else None
    grad_scale = 1.0 / pred.size if reduction == "mean" else 1.0
    total = get_backend().mse(pred, target, grad_scale, grad, sample_weight)
    return total * grad_scale, grad


def _batchnorm_vector(name: str, value, x: np.ndarray) -> np.ndarray:
    value = float_array(name, value, ndim=1, dtype=x.dtype)
    same_shape(name, value, (x.shape[1],))
    return value


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, momentum: float = 0.99,
                      epsilon: float = 1e-3, training: bool = True,
                      activation: Optional[str] = "identity", alpha: float = 0.01, out=None,
                      mean=None, inv_std=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization of x (N, M) over its rows, then an activation; Keras' semantics.

    gamma, beta, moving_mean, moving_var: float (M,) of x's dtype. In training, each
    column is normalized with the batch's mean and biased variance (divided by N) and
    the moving statistics are updated in place: ``moving = momentum * moving +
    (1 - momentum) * batch`` (so they must be writable; PyTorch's ``momentum`` is
    ``1 - momentum`` here, and its running variance uses the unbiased batch variance).
    Outside training the moving statistics are used and nothing is updated.
    ``out = act(gamma * (x - mean) / sqrt(var + epsilon) + beta)``.
    Returns ``(out (N, M), mean (M,), inv_std (M,))``: the statistics used, which
    :func:`batchnorm_backward` takes. A batch of one row (or a constant column) has
    variance 0 and gives ``act(beta)`` in training, without NaN.
    momentum in [0, 1]; epsilon > 0.
    """
    x = float_array("x", x, ndim=2)
    non_empty_batch("x", x)
    gamma = _batchnorm_vector("gamma", gamma, x)
    beta = _batchnorm_vector("beta", beta, x)
    if training:  # updated in place
        writable_array("moving_mean", moving_mean, (x.shape[1],), x.dtype)
        writable_array("moving_var", moving_var, (x.shape[1],), x.dtype)
    else:
        moving_mean = _batchnorm_vector("moving_mean", moving_mean, x)
        moving_var = _batchnorm_vector("moving_var", moving_var, x)
    momentum = positive_number("momentum", momentum, allow_zero=True)
    if momentum > 1:
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum}")
    epsilon = positive_number("epsilon", epsilon)
    activation = activation_name(activation)
    alpha = finite_number("alpha", alpha)
    out = output_array("out", out, x.shape, x.dtype)
    mean = output_array("mean", mean, (x.shape[1],), x.dtype)
    inv_std = output_array("inv_std", inv_std, (x.shape[1],), x.dtype)
    get_backend().batchnorm_forward(x, gamma, beta, moving_mean, moving_var, momentum,
                                    epsilon, bool(training), activation, alpha, out, mean,
                                    inv_std)
    return out, mean, inv_std


def batchnorm_backward(x, y, dy, gamma, mean, inv_std, batch_statistics: bool = True,
                       activation: Optional[str] = "identity", alpha: float = 0.01,
                       need_dx: bool = True, dx=None, dgamma=None, dbeta=None
                       ) -> Tuple[Optional[np.ndarray], np.ndarray, np.ndarray]:
    """Gradients ``(dx, dgamma, dbeta)`` of :func:`batchnorm_forward` given ``dy``.

    x, y (the forward's output), dy: float (N, M); gamma, mean, inv_std: float (M,)
    (mean and inv_std as the forward returned them). batch_statistics: the forward ran
    in training (the statistics depend on x); else they are constants. dx is None when
    not ``need_dx``.
    """
    x = float_array("x", x, ndim=2)
    non_empty_batch("x", x)
    y = float_array("y", y, ndim=2, dtype=x.dtype)
    dy = float_array("dy", dy, ndim=2, dtype=x.dtype)
    same_shape("y", y, x.shape)
    same_shape("dy", dy, x.shape)
    gamma = _batchnorm_vector("gamma", gamma, x)
    mean = _batchnorm_vector("mean", mean, x)
    inv_std = _batchnorm_vector("inv_std", inv_std, x)
    activation = activation_name(activation)
    alpha = finite_number("alpha", alpha)
    dx = output_array("dx", dx, x.shape, x.dtype) if need_dx else None
    dgamma = output_array("dgamma", dgamma, (x.shape[1],), x.dtype)
    dbeta = output_array("dbeta", dbeta, (x.shape[1],), x.dtype)
    get_backend().batchnorm_backward(x, y, dy, gamma, mean, inv_std, bool(batch_statistics),
                                     activation, alpha, dx, dgamma, dbeta)
    return dx, dgamma, dbeta


def activation_forward(x, activation: Optional[str], alpha: float = 0.01,
                       out=None) -> np.ndarray:
    """``act(x)`` elementwise, x float of any shape (the activations of the linear kernels)."""
    x = float_array("x", x)
    activation = activation_name(activation)
    alpha = finite_number("alpha", alpha)
    out = output_array("out", out, x.shape, x.dtype)
    if x.size:
        get_backend().activation_forward(x, activation, alpha, out)
    return out


def activation_backward(y, dy, activation: Optional[str], alpha: float = 0.01,
                        dx=None) -> np.ndarray:
    """``dy * act'(x)``, written with the output ``y = act(x)``; y, dy float, one shape."""
    y = float_array("y", y)
    dy = float_array("dy", dy, dtype=y.dtype)
    same_shape("dy", dy, y.shape)
    activation = activation_name(activation)
    alpha = finite_number("alpha", alpha)
    dx = output_array("dx", dx, y.shape, y.dtype)
    if y.size:
        get_backend().activation_backward(y, dy, activation, alpha, dx)
    return dx


def one_hot(labels, num_classes: int, dtype=np.float32, out=None) -> np.ndarray:
    """Integer labels (N,) -> float rows (N, num_classes) of zeros with a one per row."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    dtype = np.dtype(dtype)
    labels = label_array("labels", labels, int(num_classes), len(np.asarray(labels).reshape(-1)))
    out = output_array("out", out, (labels.shape[0], int(num_classes)), dtype)
    if out.dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {out.dtype}")
    if labels.size:
        get_backend().one_hot(labels, out)
    return out


def accuracy(scores, target) -> float:
    """Fraction of rows whose highest score is the target class.

    scores: float (N, C); target: integer labels (N,) or one-hot rows (N, C).
    """
    scores = float_array("scores", scores, ndim=2)
    non_empty_batch("scores", scores)
    target_array = np.asarray(target)
    if target_array.ndim == 2:
        same_shape("target", target_array, scores.shape)
        target_array = target_array.argmax(axis=1)
    labels = label_array("target", target_array, scores.shape[1], scores.shape[0])
    return get_backend().count_correct(scores, labels) / scores.shape[0]


def all_finite(x) -> bool:
    """Whether no element of the float array x (any shape, not empty) is NaN or infinite."""
    x = float_array("x", x)
    non_empty_batch("x", x)
    return get_backend().all_finite(x)


def take_rows(source, index, out=None) -> np.ndarray:
    """``source[index]``: the rows ``index`` (integers, (N,), each in [0, R)) of source (R, ...),
    of any numeric dtype, into out (N, ...) of source's dtype."""
    if not isinstance(source, np.ndarray):
        source = np.asarray(source)
    if source.ndim == 0 or source.dtype.kind not in "biuf":
        raise TypeError(f"source: expected a numeric array of rows, got dtype {source.dtype} "
                        f"and shape {source.shape}")
    source = np.require(source, requirements=["C", "A"])
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"index: expected integer row numbers, got dtype {index.dtype}")
    if index.ndim != 1:
        raise ValueError(f"index: expected a 1-D array of row numbers, got shape {index.shape}")
    non_empty_batch("index", index)
    within("index", index, source.shape[0], "row numbers")
    index = np.ascontiguousarray(index, dtype=np.int64)
    out = output_array("out", out, (len(index),) + source.shape[1:], source.dtype)
    if out.size:
        get_backend().take_rows(source, index, out)
    return out


def _parameter(param) -> np.ndarray:
    """A parameter updated in place: a writable, C-contiguous float array."""
    if not isinstance(param, np.ndarray) or param.dtype not in FLOAT_DTYPES:
        raise TypeError(f"param: expected a float32 or float64 numpy array, got "
                        f"{getattr(param, 'dtype', type(param).__name__)}")
    writable_array("param", param, param.shape, param.dtype)
    return param


def _state(name: str, value, param: np.ndarray) -> np.ndarray:
    """Optimizer state updated in place beside ``param``: same shape and dtype."""
    writable_array(name, value, param.shape, param.dtype)
    return value


def sgd_step(param, grad, velocity=None, lr: float = 0.01, momentum: float = 0.0,
             nesterov: bool = False, weight_decay: float = 0.0) -> None:
    """One in-place SGD step of ``param`` (and ``velocity`` with momentum)."""
    param = _parameter(param)
    grad = float_array("grad", grad, dtype=param.dtype)
    same_shape("grad", grad, param.shape)
    lr = positive_number("lr", lr)
    momentum = positive_number("momentum", momentum, allow_zero=True)
    weight_decay = positive_number("weight_decay", weight_decay, allow_zero=True)
    if nesterov and momentum == 0:
        raise ValueError("nesterov: Nesterov momentum requires momentum > 0")
    if momentum:
        if velocity is None:
            raise ValueError("velocity: a velocity buffer is required when momentum > 0")
        velocity = _state("velocity", velocity, param)
    else:
        velocity = None
    if param.size:
        get_backend().sgd_step(param, grad, velocity, lr, momentum, bool(nesterov), weight_decay)


def adam_step(param, grad, m, v, step: int, lr: float = 1e-3, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """One in-place Adam step of ``param`` and its moments ``m`` and ``v``; step >= 1."""
    param = _parameter(param)
    grad = float_array("grad", grad, dtype=param.dtype)
    same_shape("grad", grad, param.shape)
    m = _state("m", m, param)
    v = _state("v", v, param)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (the step number), got {step!r}")
    lr = positive_number("lr", lr)
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= positive_number(name, beta, allow_zero=True) < 1:
            raise ValueError(f"{name}: expected a number in [0, 1), got {beta}")
    eps = positive_number("eps", eps)
    weight_decay = positive_number("weight_decay", weight_decay, allow_zero=True)
    if param.size:
        get_backend().adam_step(param, grad, m, v, lr, float(beta1), float(beta2), eps,
                                weight_decay, int(step))
