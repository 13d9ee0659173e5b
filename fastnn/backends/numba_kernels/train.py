"""The compiled training loop of the Numba backend: many training steps in one jitted call.

:func:`train_steps` walks the plan of :mod:`fastnn.plan` (its arrays are the arguments)
and makes, for each step, the kernel calls the numba backend's per-layer path makes,
picking serial or parallel variants by the same thresholds (numba_backend passes them
in), so the weights come out bit for bit the same. Every buffer, the GEMMs' scratch
included, is allocated once per plan (:func:`scratch_sizes`), so a step allocates
nothing. Dropout masks: fastnn.counter_rng, the same bits as the other backends.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .batchnorm import (activation_backward_parallel, activation_backward_range,
                        activation_forward_parallel, activation_forward_range,
                        batchnorm_backward_parallel, batchnorm_backward_serial,
                        batchnorm_forward_parallel, batchnorm_forward_serial)
from .bf16 import round_parallel, round_range
from .gemm import (blocked_scratch_sizes, direct_scratch_size, gemm_blocked_into, gemm_rows,
                   gemm_tiles, tiled)
from .linear import (backward_scratch_sizes, direct_backward_scratch_size,
                     dz_and_bias_grad_parallel, dz_and_bias_grad_rows,
                     linear_backward_blocked_into, linear_backward_direct_into)
from .fp_mode import fp_enter, fp_leave
from .optim import adam_parallel, adam_range, sgd_parallel, sgd_range
from .partition import chunk_bounds
from .pointwise import (count_correct_parallel, count_correct_rows, mse_parallel, mse_rows,
                        take_rows_parallel, take_rows_range)
from .scalar_math import IDENTITY
from .softmax_xent import softmax_xent_rows
from .team import region_enter, region_leave, task_enter, task_leave
from .views import first_items, first_rows, rows_of, span_of

# The plan's constants (fastnn/plan.py; a test checks they agree).
LAYER_DENSE, LAYER_DROPOUT, LAYER_BATCHNORM, LAYER_ACTIVATION = range(4)
(KIND, INPUTS, UNITS, ACTIVATION, WEIGHT, BIAS, OUTPUT, MASK, KEY, THRESHOLD, GAMMA, BETA,
 STATE, PRECISION) = range(14)
ALPHA, SCALE, MOMENTUM, EPSILON = range(4)
PRECISION_FLOAT32, PRECISION_BFLOAT16 = range(2)
LOSS_XENT_LABELS, LOSS_XENT_PROBS, LOSS_BCE, LOSS_MSE = range(4)
OPTIMIZER_SGD = 0
METRIC_CLASSES, METRIC_FLAGS = 1, 2
(C_LAYERS, C_LOSS, C_OPTIMIZER, C_NESTEROV, C_METRIC, C_BATCH, C_SAMPLES, C_FEATURES,
 C_OUTPUTS, C_GATHER, C_EPOCH, C_ADAM_STEP, C_MODE, C_EPS_UNCORRECTED) = range(14)
MODE_TRAIN, MODE_EVALUATE, MODE_GRADIENTS, MODE_APPLY, MODE_PREDICT = range(5)
(H_LR, H_MOMENTUM, H_WEIGHT_DECAY, H_BETA1, H_BETA2, H_EPS, H_THRESHOLD, H_L2, H_LOSS_SCALE,
 H_GRAD_SCALE) = range(10)

#: Indices of the limits argument: numba_backend's thresholds.
DIRECT_MAX, PARALLEL_MIN_MULTIPLY_ADDS, PARALLEL_MIN_ELEMENTS = range(3)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)


#: gemm_blocked_into compiled without parallel=True: the blocked product on the calling thread
#: (the per-layer path runs it on a pool of one thread), never waking the pool, whose threads
#: a busy machine may have descheduled. Its arithmetic is gemm_blocked_into's, bit for bit.
gemm_blocked_serial = njit(cache=True, error_model="numpy")(gemm_blocked_into.py_func)


@njit(cache=True, error_model="numpy")
def linear_backward_serial(x, w, y, dy, code, alpha, dx, dw, db, dz, partial_db, a_scratch,
                           tile_scratch, b_scratch):
    """linear_backward_blocked_into on one thread, on the calling thread."""
    sums = partial_db[0, :y.shape[1]]
    dz_and_bias_grad_rows(y, dy, code, alpha, dz, sums, 0, y.shape[0])
    db[:] = sums
    gemm_blocked_serial(x, dz, True, False, dw, None, IDENTITY, 0.0, 1, a_scratch, tile_scratch,
                        b_scratch)
    if dx is not None:
        gemm_blocked_serial(dz, w, False, True, dx, None, IDENTITY, 0.0, 1, a_scratch,
                            tile_scratch, b_scratch)


@njit(cache=True, error_model="numpy", inline="always")
def product(a, b, trans_a, trans_b, out, bias, code, alpha, threads, limits, a_scratch,
            tile_scratch, b_scratch):
    """numba_backend's product of op(a) and op(b) into out (with bias and activation): the
    direct kernels below DIRECT_MAX multiply-adds, else the blocked ones on gemm_threads
    threads, with the plan's scratch; the bits of the per-layer path's GEMM."""
    rows, cols = out.shape
    inner = a.shape[0] if trans_a else a.shape[1]
    gemm = gemm_threads(rows, inner, cols, threads, limits)
    if gemm == 0:
        if tiled(rows, cols, inner):  # gemm_direct, one call layer less (gemm.tiled)
            gemm_tiles(a, b, trans_a, trans_b, out, bias, code, alpha, b_scratch)
        else:
            gemm_rows(a, b, trans_a, trans_b, out, bias, code, alpha, 0, rows)
    elif gemm == 1:
        gemm_blocked_serial(a, b, trans_a, trans_b, out, bias, code, alpha, 1, a_scratch,
                            tile_scratch, b_scratch)
    else:
        gemm_blocked_into(a, b, trans_a, trans_b, out, bias, code, alpha, gemm, a_scratch,
                          tile_scratch, b_scratch)


@njit(cache=True, error_model="numpy")
def rounded(source, buffer, threads, limits):
    """source (R, C) rounded to bfloat16 (float32 in, float32 out: bf16.round_range's bits)
    into the first R * C elements of buffer; returns that (R, C) view."""
    rows, cols = source.shape
    out = rows_of(buffer, 0, rows, cols)
    bits, out_bits = source.reshape(-1).view(np.uint32), out.reshape(-1).view(np.uint32)
    if threads > 1 and bits.size >= limits[PARALLEL_MIN_ELEMENTS]:
        round_parallel(bits, out_bits, threads)
    else:
        round_range(bits, out_bits, 0, bits.size)
    return out


@njit(cache=True, error_model="numpy")
def linear_backward_bfloat16(x, w, y, dy, code, alpha, dx, dw, db, dz, partial_db, threads,
                             limits, a_scratch, tile_scratch, b_scratch, round_a, round_w,
                             round_dz):
    """numba_backend.linear_backward in bfloat16 matmul precision: dz and db from the float32
    dz, then dw = op(x)^T dz and dx = dz w^T on the operands rounded to bfloat16 (dx None:
    the first layer's)."""
    n, m = dy.shape
    if threads > 1 and n * m >= limits[PARALLEL_MIN_ELEMENTS]:
        dz_and_bias_grad_parallel(y, dy, code, alpha, dz, db, threads,
                                  partial_db[:threads, :m])
    else:
        dz_and_bias_grad_rows(y, dy, code, alpha, dz, db, 0, n)
    x16 = rounded(x, round_a, threads, limits)
    dz16 = rounded(dz, round_dz, threads, limits)
    product(x16, dz16, True, False, dw, None, IDENTITY, 0.0, threads, limits, a_scratch,
            tile_scratch, b_scratch)
    if dx is not None:
        w16 = rounded(w, round_w, threads, limits)
        product(dz16, w16, False, True, dx, None, IDENTITY, 0.0, threads, limits, a_scratch,
                tile_scratch, b_scratch)


@njit(cache=True, error_model="numpy")
def mix64(z):
    """SplitMix64's finalizer (counter_rng.mix); z: uint64."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, error_model="numpy")
def dropout_forward(x, out, mask, key, threshold, scale):
    """out = x * mask with the mask of counter_rng under step key ``key``; x, out, mask:
    float (N, U); key, threshold: uint64."""
    factor = out.dtype.type(scale)
    zero = out.dtype.type(0)
    units = x.shape[1]
    for i in range(x.shape[0]):
        for j in range(units):
            e = np.uint64(i * units + j + 1)
            kept = (mix64(key + e * _GOLDEN) >> _S40) >= threshold
            value = factor if kept else zero
            mask[i, j] = value
            out[i, j] = x[i, j] * value


@njit(cache=True, error_model="numpy")
def bce(logits, targets, scale, grad):
    """Mean binary cross-entropy on logits and its gradient (losses.BinaryCrossentropy)."""
    total = 0.0
    one = logits.dtype.type(1)
    scale_t = logits.dtype.type(scale)
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            z, t = logits[i, j], targets[i, j]
            e = np.exp(-abs(z))
            total += float(np.log1p(e)) + float(max(z, 0)) - float(z * t)
            grad[i, j] = ((one if z >= 0 else e) / (one + e) - t) * scale_t
    return total * scale


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def squares(w):
    """||w||^2 of a flat weight matrix, float64: scikit-learn's L2 term (hyper[H_L2]);
    reassociated so that the sum vectorizes."""
    total = 0.0
    for i in range(w.size):
        total += float(w[i]) * float(w[i])
    return total


@njit(cache=True, error_model="numpy")
def weight_squares(params, layer_ints):
    """Sum of ||W||^2 over the plan's Dense weight matrices (not the biases), layer by layer
    in order (update's fold sums the same terms in the same order: the same bits)."""
    total = 0.0
    for layer in range(layer_ints.shape[0]):
        if layer_ints[layer, KIND] != LAYER_DENSE:
            continue
        start = layer_ints[layer, WEIGHT]
        total += squares(span_of(params, start, layer_ints[layer, INPUTS]
                                 * layer_ints[layer, UNITS]))
    return total


@njit(cache=True, error_model="numpy")
def optimizer_range(config, hyper, params, grads, state1, state2, begin, end, decay, adam_step,
                    threads, limits):
    """The optimizer's step over params[begin:end] (and its state there) with weight decay
    ``decay``, Adam's eps on sqrt(v) when config[C_EPS_UNCORRECTED] (scikit-learn's form)."""
    param, grad = span_of(params, begin, end - begin), span_of(grads, begin, end - begin)
    parallel = threads > 1 and end - begin >= limits[PARALLEL_MIN_ELEMENTS]
    lr = hyper[H_LR]
    if config[C_OPTIMIZER] == OPTIMIZER_SGD:
        momentum, nesterov = hyper[H_MOMENTUM], config[C_NESTEROV] != 0
        if state1.size == 0:
            if parallel:
                sgd_parallel(param, grad, None, lr, momentum, nesterov, decay, threads)
            else:
                sgd_range(param, grad, None, lr, momentum, nesterov, decay, 0, end - begin)
        elif parallel:
            sgd_parallel(param, grad, span_of(state1, begin, end - begin), lr, momentum,
                         nesterov, decay, threads)
        else:
            sgd_range(param, grad, span_of(state1, begin, end - begin), lr, momentum, nesterov,
                      decay, 0,
                      end - begin)
    else:
        beta1, beta2, eps = hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS]
        if config[C_EPS_UNCORRECTED]:
            eps /= math.sqrt(1.0 - beta2 ** float(adam_step))  # eps on sqrt(v): on sqrt(v_hat)
        m, v = span_of(state1, begin, end - begin), span_of(state2, begin, end - begin)
        if parallel:
            adam_parallel(param, grad, m, v, lr, beta1, beta2, eps, decay, adam_step, threads)
        else:
            adam_range(param, grad, m, v, lr, beta1, beta2, eps, decay, adam_step, 0,
                       end - begin)


@njit(cache=True, error_model="numpy", parallel=True)
def xent_parallel(logits, target, grad_scale, row_loss, grad, threads, scratch):
    """softmax_xent_parallel with its (unused: grad is given) scratch from the caller."""
    region = region_enter()
    for task in prange(threads):
        mode = task_enter()
        start, stop = chunk_bounds(logits.shape[0], threads, task)
        softmax_xent_rows(logits, target, grad_scale, row_loss, grad, start, stop, scratch)
        task_leave(mode)
    region_leave(region)


@njit(cache=True, error_model="numpy")
def gather(source, index, out, threads, limits):
    """take_rows of the numba backend: source (R, W), out (n, W)."""
    if threads > 1 and out.size >= limits[PARALLEL_MIN_ELEMENTS]:
        take_rows_parallel(source, index, out, threads)
    else:
        take_rows_range(source, index, out, 0, out.shape[0])


@njit(cache=True, error_model="numpy")
def gemm_threads(n, k, m, threads, limits):
    """0 for the direct product, else the threads of the blocked one (numba_backend)."""
    work = n * k * m
    if work < limits[DIRECT_MAX]:
        return 0
    return threads if work >= limits[PARALLEL_MIN_MULTIPLY_ADDS] else 1


@njit(cache=True, error_model="numpy")
def scratch_sizes(layer_ints, batch, last_batch, threads, limits, like):
    """Elements of the GEMM scratch (packed a, tiles, packed b) and of dz that the steps of
    a plan need, for its full and its last batch."""
    a_size = tile_size = b_size = dz_size = 1
    for rows in (batch, last_batch):
        for layer in range(layer_ints.shape[0]):
            if layer_ints[layer, KIND] != LAYER_DENSE:
                continue
            k, m = layer_ints[layer, INPUTS], layer_ints[layer, UNITS]
            dz_size = max(dz_size, rows * m)
            gemm = gemm_threads(rows, k, m, threads, limits)
            if gemm == 0:  # gemm_direct's scratch: b_scratch
                b_size = max(b_size, direct_scratch_size(rows, m, k, like),
                             direct_backward_scratch_size(rows, k, m, like))
                continue
            forward = blocked_scratch_sizes(rows, m, k, gemm, like)
            backward = backward_scratch_sizes(rows, k, m, gemm, like)
            a_size = max(a_size, forward[0], backward[0])
            tile_size = max(tile_size, forward[1], backward[1])
            b_size = max(b_size, forward[2], backward[2])
    return a_size, tile_size, b_size, dz_size


@njit(cache=True, error_model="numpy")
def rounded_sizes(layer_ints, batch):
    """Elements of the bfloat16 copies (round_a, round_w, round_dz) that the plan's Dense
    layers in bfloat16 matmul precision need at ``batch`` rows (0 each when none is: no
    copies, see train_steps)."""
    a_size = w_size = dz_size = 0
    for layer in range(layer_ints.shape[0]):
        if layer_ints[layer, KIND] != LAYER_DENSE \
                or layer_ints[layer, PRECISION] != PRECISION_BFLOAT16:
            continue
        k, m = layer_ints[layer, INPUTS], layer_ints[layer, UNITS]
        a_size, w_size = max(a_size, batch * k), max(w_size, k * m)
        dz_size = max(dz_size, batch * m)
    return a_size, w_size, dz_size


@njit(cache=True, error_model="numpy")
def update(layer_ints, config, hyper, params, grads, state1, state2, n, threads, limits, fold):
    """The optimizer's step over all parameters at once (its steps are element-wise), from
    grads, for a batch of n rows; advances Adam's step count in config. Returns, when
    ``fold`` and there is an L2 term, the ||W||^2 of the new weights that the next step's
    loss needs (weight_squares', each matrix summed just after its update, in cache), else -1."""
    params_size = params.size
    decay, adam_step = hyper[H_WEIGHT_DECAY], 0
    if config[C_OPTIMIZER] != OPTIMIZER_SGD:
        config[C_ADAM_STEP] += 1
        adam_step = config[C_ADAM_STEP]
    if hyper[H_L2] == 0.0 and not config[C_EPS_UNCORRECTED]:
        optimizer_range(config, hyper, params, grads, state1, state2, 0, params_size, decay,
                        adam_step, threads, limits)
        return -1.0
    # scikit-learn's forms: l2 / n more weight decay on the weight matrices alone, Adam's eps
    # on sqrt(v) (optimizer_range); one call per weight matrix and one per run of other
    # parameters (biases, and those of any other layer kind)
    l2 = hyper[H_L2] / n
    fold = fold and hyper[H_L2] != 0.0
    next_squares = 0.0
    done = 0  # the parameters before it are updated (the weights come in order)
    for layer in range(config[C_LAYERS]):
        if layer_ints[layer, KIND] != LAYER_DENSE:
            continue
        weight = layer_ints[layer, WEIGHT]
        if weight > done:
            optimizer_range(config, hyper, params, grads, state1, state2, done, weight, decay,
                            adam_step, threads, limits)
        done = weight + layer_ints[layer, INPUTS] * layer_ints[layer, UNITS]
        optimizer_range(config, hyper, params, grads, state1, state2, weight, done,
                        decay + l2, adam_step, threads, limits)
        if fold:
            next_squares += squares(span_of(params, weight, done - weight))
    if params_size > done:
        optimizer_range(config, hyper, params, grads, state1, state2, done, params_size, decay,
                        adam_step, threads, limits)
    return next_squares if fold else -1.0


@njit(cache=True, error_model="numpy")
def bias_of(flat, state, layer_ints, layer, gradient):
    """A Dense layer's bias (gradient) in flat params (grads), or for a Dense without bias its
    zeros (the gradient nobody reads) in state, the plan's masks."""
    m = layer_ints[layer, UNITS]
    if layer_ints[layer, BIAS] < 0:
        return span_of(state, layer_ints[layer, STATE] + (m if gradient else 0), m)
    return span_of(flat, layer_ints[layer, BIAS], m)


@njit(cache=True, error_model="numpy")
def batchnorm_layer_forward(layer_ints, layer_reals, layer, params, masks, inputs, out,
                            training, threads, limits):
    """A batch norm layer's forward as numba_backend.batchnorm_forward runs it; its state
    in masks: moving mean, moving variance (updated when training), batch mean, 1 / std.
    Unlike the GEMMs' scratch, its partial sums (threads, 2, M) are made per call, as on the
    per-layer path: a few KB, small beside the step's work."""
    n, m = inputs.shape
    gamma = params[layer_ints[layer, GAMMA]:layer_ints[layer, GAMMA] + m]
    beta = params[layer_ints[layer, BETA]:layer_ints[layer, BETA] + m]
    state = rows_of(masks, layer_ints[layer, STATE], 4, m)
    code, alpha = layer_ints[layer, ACTIVATION], layer_reals[layer, ALPHA]
    momentum, epsilon = layer_reals[layer, MOMENTUM], layer_reals[layer, EPSILON]
    if threads > 1 and n * m >= limits[PARALLEL_MIN_ELEMENTS] and n > 1:
        partial = np.zeros((min(threads, n), 2, m), inputs.dtype)
        batchnorm_forward_parallel(inputs, gamma, beta, state[0], state[1], momentum, epsilon,
                                   training, code, alpha, out, state[2], state[3], partial,
                                   np.empty(m, inputs.dtype))
    else:
        batchnorm_forward_serial(inputs, gamma, beta, state[0], state[1], momentum, epsilon,
                                 training, code, alpha, out, state[2], state[3])


@njit(cache=True, error_model="numpy")
def batchnorm_layer_backward(layer_ints, layer_reals, layer, params, grads, masks, inputs, out,
                             dout, dinputs, threads, limits):
    """A batch norm layer's backward as numba_backend.batchnorm_backward runs it (no input
    gradient when dinputs has no rows)."""
    n, m = out.shape
    gamma = params[layer_ints[layer, GAMMA]:layer_ints[layer, GAMMA] + m]
    dgamma = grads[layer_ints[layer, GAMMA]:layer_ints[layer, GAMMA] + m]
    dbeta = grads[layer_ints[layer, BETA]:layer_ints[layer, BETA] + m]
    state = rows_of(masks, layer_ints[layer, STATE], 4, m)
    code, alpha = layer_ints[layer, ACTIVATION], layer_reals[layer, ALPHA]
    if threads > 1 and n * m >= limits[PARALLEL_MIN_ELEMENTS] and n > 1:
        partial = np.zeros((min(threads, n), 2, m), out.dtype)
        coef = np.empty((3, m), out.dtype)
        if dinputs.shape[0]:
            batchnorm_backward_parallel(inputs, out, dout, gamma, state[2], state[3], True, code,
                                        alpha, dinputs, dgamma, dbeta, partial, coef)
        else:
            batchnorm_backward_parallel(inputs, out, dout, gamma, state[2], state[3], True, code,
                                        alpha, None, dgamma, dbeta, partial, coef)
    elif dinputs.shape[0]:
        batchnorm_backward_serial(inputs, out, dout, gamma, state[2], state[3], True, code,
                                  alpha, dinputs, dgamma, dbeta)
    else:
        batchnorm_backward_serial(inputs, out, dout, gamma, state[2], state[3], True, code,
                                  alpha, None, dgamma, dbeta)


@njit(cache=True, error_model="numpy")
def activation_layer_forward(code, alpha, inputs, out, threads, limits):
    """An Activation layer's forward as numba_backend.activation_forward runs it."""
    flat, flat_out = inputs.reshape(-1), out.reshape(-1)
    if threads > 1 and flat.size >= limits[PARALLEL_MIN_ELEMENTS]:
        activation_forward_parallel(flat, code, alpha, flat_out, threads)
    else:
        activation_forward_range(flat, code, alpha, flat_out, 0, flat.size)


@njit(cache=True, error_model="numpy")
def activation_layer_backward(code, alpha, out, dout, dinputs, threads, limits):
    """An Activation layer's backward as numba_backend.activation_backward runs it."""
    flat_y, flat_dy, flat_dx = out.reshape(-1), dout.reshape(-1), dinputs.reshape(-1)
    if threads > 1 and flat_y.size >= limits[PARALLEL_MIN_ELEMENTS]:
        activation_backward_parallel(flat_y, flat_dy, code, alpha, flat_dx, threads)
    else:
        activation_backward_range(flat_y, flat_dy, code, alpha, flat_dx, 0, flat_y.size)


@njit(cache=True, error_model="numpy")
def train_steps(layer_ints, layer_reals, config, hyper, params, grads, state1, state2,
                x_data, labels_data, targets_data, classes_data, flags_data, x_batch,
                labels_batch, targets_batch, classes_batch, flags_batch, acts, dacts, masks,
                row_loss, outputs_data, order, first_step, steps, stats, threads, limits,
                a_scratch, tile_scratch, b_scratch, dz_scratch, partial_db, xent_scratch,
                round_a, round_w, round_dz):
    """The contract's train_steps over the plan's arrays (fastnn/plan.py); returns the steps
    done. outputs_data: (samples, outputs), step s's last-layer outputs at rows s * batch..
    in MODE_PREDICT. limits: int64 (3,), numba_backend's thresholds; the GEMM scratch and
    dz: scratch_sizes; round_a, round_w, round_dz: 1-D, the bfloat16 copies of a layer's
    input, weights and dz (rounded_sizes), or None each when no layer is in bfloat16 matmul
    precision: Numba then prunes the branches that test ``round_a is not None`` before
    compiling, and a plan without bfloat16 compiles a loop without them (a tenth less of
    its first compile: the rounding and the products of transposed operands they alone
    reach). Runs in fastnn's floating-point mode (fp_mode)."""
    mode = fp_enter()
    done = steps
    layers, batch, samples = config[C_LAYERS], config[C_BATCH], config[C_SAMPLES]
    outputs, loss_kind, metric = config[C_OUTPUTS], config[C_LOSS], config[C_METRIC]
    epoch = config[C_EPOCH]
    predicting = config[C_MODE] == MODE_PREDICT
    evaluating = config[C_MODE] == MODE_EVALUATE or predicting
    sparse = labels_data.shape[0] > 0
    known_squares = -1.0  # the L2 term's ||W||^2, folded into the update of the step before
    for s in range(steps):
        step = first_step + s
        start = step * batch
        n = min(batch, samples - start)
        if config[C_MODE] == MODE_APPLY:  # the update alone, from grads
            update(layer_ints, config, hyper, params, grads, state1, state2, n, threads, limits,
                   False)
            continue
        # the batch's rows
        if config[C_GATHER]:
            index = span_of(order, start, n)
            x = first_rows(x_batch, n)
            gather(x_data, index, x, threads, limits)
            labels = first_items(labels_batch, n)
            if sparse:
                gather(rows_of(labels_data, 0, labels_data.shape[0], 1), index,
                       rows_of(labels_batch, 0, n, 1), threads, limits)
            targets = first_rows(targets_batch, n)
            if targets_data.shape[0]:
                gather(targets_data, index, targets, threads, limits)
            classes = first_items(classes_batch, n)
            if classes_data.shape[0]:
                gather(rows_of(classes_data, 0, classes_data.shape[0], 1), index,
                       rows_of(classes_batch, 0, n, 1), threads, limits)
            flags = first_rows(flags_batch, n)
            if flags_data.shape[0]:
                gather(flags_data, index, flags, threads, limits)
        else:
            x, labels, targets = x_data, labels_data, targets_data
            classes, flags = classes_data, flags_data
        # forward
        inputs = x
        for layer in range(layers):
            k, m = layer_ints[layer, INPUTS], layer_ints[layer, UNITS]
            out = rows_of(acts, layer_ints[layer, OUTPUT], n, m)
            if layer_ints[layer, KIND] == LAYER_DENSE:
                w = rows_of(params, layer_ints[layer, WEIGHT], k, m)
                b = bias_of(params, masks, layer_ints, layer, False)
                code, alpha = layer_ints[layer, ACTIVATION], layer_reals[layer, ALPHA]
                if round_a is not None \
                        and layer_ints[layer, PRECISION] == PRECISION_BFLOAT16:
                    product(rounded(inputs, round_a, threads, limits),
                            rounded(w, round_w, threads, limits), False, False, out, b, code,
                            alpha, threads, limits, a_scratch, tile_scratch, b_scratch)
                else:
                    product(inputs, w, False, False, out, b, code, alpha, threads, limits,
                            a_scratch, tile_scratch, b_scratch)
            elif layer_ints[layer, KIND] == LAYER_BATCHNORM:
                batchnorm_layer_forward(layer_ints, layer_reals, layer, params, masks, inputs,
                                        out, not evaluating, threads, limits)
            elif layer_ints[layer, KIND] == LAYER_ACTIVATION:
                if layer == 0 or layer_ints[layer, OUTPUT] != layer_ints[layer - 1, OUTPUT]:
                    activation_layer_forward(layer_ints[layer, ACTIVATION],
                                             layer_reals[layer, ALPHA], inputs, out, threads,
                                             limits)  # else fused into the batch norm before
            elif layer_ints[layer, THRESHOLD] == 0 or evaluating:
                out[:, :] = inputs
            else:
                key = mix64(mix64(np.uint64(layer_ints[layer, KEY]) + np.uint64(epoch))
                            + np.uint64(step))
                dropout_forward(inputs, out, rows_of(masks, layer_ints[layer, MASK], n, m),
                                key, np.uint64(layer_ints[layer, THRESHOLD]),
                                layer_reals[layer, SCALE])
            inputs = out
        last = layers - 1
        logits = rows_of(acts, layer_ints[last, OUTPUT], n, outputs)
        if predicting:  # the step's outputs, in its place in the output rows
            outputs_data[start:start + n, :] = logits
            continue
        # loss and its gradient
        grad = rows_of(dacts, layer_ints[last, OUTPUT], n, outputs)
        parallel = threads > 1 and n * outputs >= limits[PARALLEL_MIN_ELEMENTS]
        # the loss's own factors on its value and gradient (1, 1 but for fastnn.sklearn's)
        loss_scale, grad_scale = hyper[H_LOSS_SCALE], hyper[H_GRAD_SCALE]
        if loss_kind == LOSS_XENT_LABELS or loss_kind == LOSS_XENT_PROBS:
            losses = first_items(row_loss, n)
            if loss_kind == LOSS_XENT_LABELS:
                if parallel:
                    xent_parallel(logits, labels, grad_scale / n, losses, grad, threads,
                                  xent_scratch)
                else:
                    softmax_xent_rows(logits, labels, grad_scale / n, losses, grad, 0, n,
                                      xent_scratch)
            elif parallel:
                xent_parallel(logits, targets, grad_scale / n, losses, grad, threads,
                              xent_scratch)
            else:
                softmax_xent_rows(logits, targets, grad_scale / n, losses, grad, 0, n,
                                  xent_scratch)
            loss = 0.0
            for i in range(n):
                loss += float(losses[i])
            loss /= n
        elif loss_kind == LOSS_MSE:
            scale = 1.0 / (n * outputs)
            if parallel:
                loss = float(mse_parallel(logits, targets, grad_scale / (n * outputs), grad,
                                          threads)) * scale
            else:
                loss = float(mse_rows(logits, targets, grad_scale / (n * outputs), grad, 0,
                                      n)) * scale
        else:
            loss = bce(logits, targets, grad_scale / (n * outputs), grad) / grad_scale
        loss *= loss_scale
        if hyper[H_L2] != 0.0 and not evaluating:  # scikit-learn's L2 term (see the update)
            loss += hyper[H_L2] / (2.0 * n) * (known_squares if known_squares >= 0.0
                                               else weight_squares(params, layer_ints))
        stats[s, 0] = loss
        stats[s, 1] = 0.0
        if not math.isfinite(loss) and not evaluating:
            done = s
            break
        if metric == METRIC_CLASSES:
            if parallel:
                stats[s, 1] = count_correct_parallel(logits, classes, threads)
            else:
                stats[s, 1] = count_correct_rows(logits, classes, 0, n)
        elif metric == METRIC_FLAGS:
            threshold = logits.dtype.type(hyper[H_THRESHOLD])
            correct = 0
            for i in range(n):
                for j in range(outputs):
                    correct += (logits[i, j] > threshold) == (flags[i, j] != 0)
            stats[s, 1] = correct
        if evaluating:
            continue
        # backward
        for layer in range(layers - 1, -1, -1):
            k, m = layer_ints[layer, INPUTS], layer_ints[layer, UNITS]
            out = rows_of(acts, layer_ints[layer, OUTPUT], n, m)
            dout = rows_of(dacts, layer_ints[layer, OUTPUT], n, m)
            if layer > 0:
                below = layer_ints[layer - 1, OUTPUT]
                inputs, dinputs = rows_of(acts, below, n, k), rows_of(dacts, below, n, k)
            else:
                inputs, dinputs = x, rows_of(dacts, 0, 0, k)
            if layer_ints[layer, KIND] == LAYER_DENSE:
                w = rows_of(params, layer_ints[layer, WEIGHT], k, m)
                dw = rows_of(grads, layer_ints[layer, WEIGHT], k, m)
                db = bias_of(grads, masks, layer_ints, layer, True)
                code, alpha = layer_ints[layer, ACTIVATION], layer_reals[layer, ALPHA]
                dz = rows_of(dz_scratch, 0, n, m)
                gemm = gemm_threads(n, k, m, threads, limits)
                bfloat16 = layer_ints[layer, PRECISION] == PRECISION_BFLOAT16
                if round_a is not None and bfloat16 and layer > 0:
                    linear_backward_bfloat16(inputs, w, out, dout, code, alpha, dinputs, dw, db,
                                             dz, partial_db, threads, limits, a_scratch,
                                             tile_scratch, b_scratch, round_a, round_w,
                                             round_dz)
                elif round_a is not None and bfloat16:
                    linear_backward_bfloat16(inputs, w, out, dout, code, alpha, None, dw, db,
                                             dz, partial_db, threads, limits, a_scratch,
                                             tile_scratch, b_scratch, round_a, round_w,
                                             round_dz)
                elif gemm == 0:
                    if layer > 0:
                        linear_backward_direct_into(inputs, w, out, dout, code, alpha, dinputs,
                                                    dw, db, dz, b_scratch)
                    else:
                        linear_backward_direct_into(inputs, w, out, dout, code, alpha, None,
                                                    dw, db, dz, b_scratch)
                elif gemm == 1 and layer > 0:
                    linear_backward_serial(inputs, w, out, dout, code, alpha, dinputs, dw, db,
                                           dz, partial_db, a_scratch, tile_scratch, b_scratch)
                elif gemm == 1:
                    linear_backward_serial(inputs, w, out, dout, code, alpha, None, dw, db, dz,
                                           partial_db, a_scratch, tile_scratch, b_scratch)
                elif layer > 0:
                    linear_backward_blocked_into(inputs, w, out, dout, code, alpha, dinputs, dw,
                                                 db, gemm, dz, partial_db[:gemm, :m],
                                                 a_scratch, tile_scratch, b_scratch)
                else:
                    linear_backward_blocked_into(inputs, w, out, dout, code, alpha, None, dw,
                                                 db, gemm, dz, partial_db[:gemm, :m],
                                                 a_scratch, tile_scratch, b_scratch)
            elif layer_ints[layer, KIND] == LAYER_BATCHNORM:
                batchnorm_layer_backward(layer_ints, layer_reals, layer, params, grads, masks,
                                         inputs, out, dout, dinputs, threads, limits)
            elif layer_ints[layer, KIND] == LAYER_ACTIVATION:
                if layer > 0 and layer_ints[layer, OUTPUT] != layer_ints[layer - 1, OUTPUT]:
                    activation_layer_backward(layer_ints[layer, ACTIVATION],
                                              layer_reals[layer, ALPHA], out, dout, dinputs,
                                              threads, limits)  # else fused, or the first
            elif layer > 0 and layer_ints[layer, THRESHOLD] == 0:
                dinputs[:, :] = dout
            elif layer > 0:
                mask = rows_of(masks, layer_ints[layer, MASK], n, m)
                for i in range(n):
                    for j in range(m):
                        dinputs[i, j] = dout[i, j] * mask[i, j]
        if config[C_MODE] == MODE_GRADIENTS:
            continue  # the gradients stay in grads (data-parallel training reduces them)
        known_squares = update(layer_ints, config, hyper, params, grads, state1, state2, n,
                               threads, limits, s + 1 < steps)
    fp_leave(mode)
    return done
