/* train_impl.h - training steps over a plan (fastnn.h, fastnn/plan.py), for T (template: see
 * instantiate.h). Each step makes the kernel calls of the per-layer path (Sequential's
 * Workspace) with the same arguments, as C calls: the weights come out bit for bit the same. */

/* A Dense layer's kernels, with its matmul precision (LI_PRECISION, FASTNN_PRECISION_*): the
 * one table entry that fastnn_linear_forward_f32/_f64 and fastnn_linear_forward_bf16 (bf16.c)
 * call, as the per-layer path does; so each layer's bits are that path's. The plan gives
 * float64 layers float32 precision only (fastnn.precision). */
#define DENSE_KERNELS (fastnn_active_kernels()->TNAME)

/* Mean binary cross-entropy of sigmoid(logits) against targets over `size` values, and its
 * gradient (losses.BinaryCrossentropy: max(z, 0) - z t + log(1 + exp(-|z|)), gradient
 * (sigmoid(z) - t) * scale). */
static double FN(bce)(T *grad, const T *logits, const T *targets, int64_t size, double scale) {
    double total = 0;
    T scale_t = (T)scale;
    for (int64_t i = 0; i < size; i++) {
        T z = logits[i], t = targets[i];
        T e = FASTNN_EXP(-(z < 0 ? -z : z));
        total += (double)FASTNN_LOG1P(e) + (double)(z > 0 ? z : 0) - (double)(z * t);
        grad[i] = ((z >= 0 ? (T)1 : e) / ((T)1 + e) - t) * scale_t;
    }
    return total * scale;
}

/* Sum of ||W||^2 over the weight matrices of the plan's Dense layers (not the biases), layer by
 * layer in order (the update sums the same terms in the same order: the same bits):
 * scikit-learn's L2 term (hyper[H_L2]). Each matrix's by fastnn_sum_squares, the vector kernel
 * of the instruction set in use (misc_impl.h; ~14 us a step for the 235k weights of
 * 784-256-128-10 in the baseline build's SSE loop it replaced). */
static double FN(weight_squares)(const T *params, const int64_t *ints, int64_t layers) {
    double total = 0;
    for (int64_t l = 0; l < layers; l++) {
        const int64_t *li = ints + l * FASTNN_LAYER_INTS;
        if (li[FASTNN_LI_KIND] != FASTNN_LAYER_DENSE) continue;
        total += FN(fastnn_sum_squares)(params + li[FASTNN_LI_WEIGHT],
                                        li[FASTNN_LI_INPUTS] * li[FASTNN_LI_UNITS]);
    }
    return total;
}

#ifndef FASTNN_TRAIN_ADAM_EPS
#define FASTNN_TRAIN_ADAM_EPS
/* Adam's eps at step adam_step: scikit-learn's eps on sqrt(v) is eps / sqrt(1 - beta2^t) on
 * sqrt(v_hat). */
static double adam_eps(const fastnn_train_plan *p, int64_t adam_step) {
    double eps = p->hyper[FASTNN_H_EPS];
    if (p->config[FASTNN_C_EPS_UNCORRECTED])
        eps /= sqrt(1.0 - pow(p->hyper[FASTNN_H_BETA2], (double)adam_step));
    return eps;
}
#endif

/* The optimizer's step over params[begin..end) (parallel to its state) with weight decay
 * `decay`; adam_step: Adam's step count (already advanced). */
static void FN(optimizer_range)(const fastnn_train_plan *p, int64_t begin, int64_t end,
                                double decay, int64_t adam_step) {
    const int64_t *config = p->config;
    const double *hyper = p->hyper;
    T *params = (T *)p->params + begin, *grads = (T *)p->grads + begin;
    T *state1 = p->state1 ? (T *)p->state1 + begin : NULL;
    if (config[FASTNN_C_OPTIMIZER] == FASTNN_OPTIMIZER_SGD) {
        FN(fastnn_sgd_step)(params, state1, grads, end - begin, hyper[FASTNN_H_LR],
                            hyper[FASTNN_H_MOMENTUM], (int)config[FASTNN_C_NESTEROV], decay);
    } else {
        FN(fastnn_adam_step)(params, state1, (T *)p->state2 + begin, grads, end - begin,
                             hyper[FASTNN_H_LR], hyper[FASTNN_H_BETA1], hyper[FASTNN_H_BETA2],
                             adam_eps(p, adam_step), decay, adam_step);
    }
}

static int64_t FN(count_flags)(const T *outputs, const uint8_t *flags, int64_t size, T threshold) {
    int64_t correct = 0;
    for (int64_t i = 0; i < size; i++) correct += (outputs[i] > threshold) == (flags[i] != 0);
    return correct;
}

/* A batch norm layer's forward (fastnn_batchnorm_forward): its state in masks at LI_STATE is
 * moving mean, moving variance (updated when training), batch mean, 1 / std (M each). */
static int FN(batchnorm_layer_forward)(T *out, const T *input, const T *params, T *masks,
                                       const int64_t *li, const double *lr, int64_t n,
                                       int training) {
    int64_t m = li[FASTNN_LI_UNITS];
    T *state = masks + li[FASTNN_LI_STATE];
    return FN(fastnn_batchnorm_forward)(out, state + 2 * m, state + 3 * m, state, state + m,
                                        input, params + li[FASTNN_LI_GAMMA],
                                        params + li[FASTNN_LI_BETA], n, m,
                                        lr[FASTNN_LR_MOMENTUM], lr[FASTNN_LR_EPSILON], training,
                                        (int)li[FASTNN_LI_ACTIVATION], lr[FASTNN_LR_ALPHA]);
}

/* The rows of the next step (n of them) asked for ahead of its gather (fastnn_prefetch_rows):
 * the features, and the labels or targets, each row a miss of its own in a shuffled order. */
static void FN(prefetch_step)(const fastnn_train_plan *p, const int64_t *rows, int64_t n) {
    const int64_t *config = p->config;
    fastnn_prefetch_rows(p->x, rows, n, config[FASTNN_C_FEATURES] * (int64_t)sizeof(T));
    if (p->labels) fastnn_prefetch_rows(p->labels, rows, n, sizeof(int64_t));
    if (p->targets)
        fastnn_prefetch_rows(p->targets, rows, n, config[FASTNN_C_OUTPUTS] * (int64_t)sizeof(T));
}

/* Which Dense layers' weights take the optimizer's step fused with their gradient
 * (linear_impl.h's fastnn_linear_backward_update: the gradient is not written out, nor read
 * back for the update), for steps of n rows: bit l of `layers` for layer l (the first 64
 * layers), and the scratch they need. Only training steps (not MPI's split of gradients and
 * update): the same bits as the gradient and then the update. */
typedef struct {
    uint64_t layers;
    int64_t bytes;
} FN(update_fusion);

static FN(update_fusion) FN(plan_update_fusion)(const fastnn_train_plan *p, int64_t n) {
    FN(update_fusion) fusion = {0, 0};
    const int64_t *config = p->config, *ints = p->layer_ints;
    if (config[FASTNN_C_MODE] != FASTNN_MODE_TRAIN) return fusion;
    for (int64_t l = 0; l < config[FASTNN_C_LAYERS] && l < 64; l++) {
        const int64_t *li = ints + l * FASTNN_LAYER_INTS;
        if (li[FASTNN_LI_KIND] != FASTNN_LAYER_DENSE) continue;
        int64_t bytes = DENSE_KERNELS->linear_update_scratch(n, li[FASTNN_LI_INPUTS],
                                                             li[FASTNN_LI_UNITS],
                                                             (int)li[FASTNN_LI_PRECISION]);
        if (bytes > 0) {
            fusion.layers |= (uint64_t)1 << l;
            fusion.bytes = fastnn_max(fusion.bytes, bytes);
        }
    }
    return fusion;
}

/* The fused step of the weight matrix at params[weight..): the optimizer's hyper-parameters
 * as optimizer_range passes them (weight decay `decay`, scikit-learn's L2 term included),
 * its state there, and Adam's count for this step, adam_step. */
static fastnn_weight_update FN(weight_update_of)(const fastnn_train_plan *p, int64_t weight,
                                                 double decay, int64_t adam_step) {
    const int64_t *config = p->config;
    const double *hyper = p->hyper;
    fastnn_weight_update u;
    u.adam = config[FASTNN_C_OPTIMIZER] != FASTNN_OPTIMIZER_SGD;
    u.nesterov = (int)config[FASTNN_C_NESTEROV];
    u.lr = hyper[FASTNN_H_LR];
    u.weight_decay = decay;
    u.momentum = hyper[FASTNN_H_MOMENTUM];
    u.beta1 = hyper[FASTNN_H_BETA1];
    u.beta2 = hyper[FASTNN_H_BETA2];
    u.eps = u.adam ? adam_eps(p, adam_step) : 0;
    u.step = adam_step;
    u.state1 = p->state1 ? (T *)p->state1 + weight : NULL;
    u.state2 = p->state2 ? (T *)p->state2 + weight : NULL;
    return u;
}

/* One step on rows `rows` (n of them; NULL: the data in place), the next step's rows
 * `next_rows` (next_n of them; NULL: none) prefetched once this step's are gathered. Returns
 * 1 when done, 0 when
 * the loss was not finite (nothing updated), -1 when memory ran out.
 * squares: the L2 term's ||W||^2 folded into the update of the step before. In: that of the
 * weights as they are, or -1 when unknown (the first step of a call: computed here). Out,
 * when `fold`: that of the weights after this step's update, summed over each weight matrix
 * just after its update (in cache) in the order of weight_squares, so the same bits. */
static int FN(train_step)(const fastnn_train_plan *p, const int64_t *rows, int64_t n,
                          const int64_t *next_rows, int64_t next_n, int64_t step, double *stat,
                          double *squares, int fold, const FN(update_fusion) *fusion) {
    const int64_t *config = p->config, *ints = p->layer_ints;
    const double *reals = p->layer_reals, *hyper = p->hyper;
    int64_t layers = config[FASTNN_C_LAYERS], outputs = config[FASTNN_C_OUTPUTS];
    int64_t features = config[FASTNN_C_FEATURES], epoch = config[FASTNN_C_EPOCH];
    int loss_kind = (int)config[FASTNN_C_LOSS], metric = (int)config[FASTNN_C_METRIC];
    int predicting = config[FASTNN_C_MODE] == FASTNN_MODE_PREDICT;
    int evaluating = config[FASTNN_C_MODE] == FASTNN_MODE_EVALUATE || predicting;
    T *params = p->params, *grads = p->grads, *acts = p->acts, *dacts = p->dacts;
    T *masks = p->masks;
    const T *x = p->x, *targets = p->targets;
    const int64_t *labels = p->labels, *classes = p->classes;
    const uint8_t *flags = p->flags;
    if (rows) {
        fastnn_take_rows(p->x_batch, x, rows, n, features * (int64_t)sizeof(T));
        x = p->x_batch;
        if (labels) {
            fastnn_take_rows(p->labels_batch, labels, rows, n, sizeof(int64_t));
            labels = p->labels_batch;
        }
        if (targets) {
            fastnn_take_rows(p->targets_batch, targets, rows, n, outputs * (int64_t)sizeof(T));
            targets = p->targets_batch;
        }
        if (classes && classes != p->labels) {
            fastnn_take_rows(p->classes_batch, classes, rows, n, sizeof(int64_t));
            classes = p->classes_batch;
        } else if (classes) {
            classes = labels;
        }
        if (flags) {
            fastnn_take_rows(p->flags_batch, flags, rows, n, outputs);
            flags = p->flags_batch;
        }
        if (next_rows) FN(prefetch_step)(p, next_rows, next_n);
    }
    /* forward */
    int status = FASTNN_OK;
    const T *input = x;
    int64_t params_size = p->params_size;
    /* This step's Adam count (the update pass advances the plan's to it; a fused step in the
     * backward pass takes it first) and weight decay, the weight matrices' with scikit-learn's
     * l2 / n on top: one value each for the fused steps and the update pass, so the same bits */
    int64_t adam_step = config[FASTNN_C_OPTIMIZER] == FASTNN_OPTIMIZER_SGD
                            ? 0 : config[FASTNN_C_ADAM_STEP] + 1;
    double decay = hyper[FASTNN_H_WEIGHT_DECAY];
    double matrix_decay = decay + hyper[FASTNN_H_L2] / (double)n;
    if (config[FASTNN_C_MODE] == FASTNN_MODE_APPLY) goto update;  /* the update alone, from grads */
    for (int64_t l = 0; l < layers; l++) {
        const int64_t *li = ints + l * FASTNN_LAYER_INTS;
        const double *lr = reals + l * FASTNN_LAYER_REALS;
        int64_t k = li[FASTNN_LI_INPUTS], m = li[FASTNN_LI_UNITS];
        T *out = acts + li[FASTNN_LI_OUTPUT];
        if (li[FASTNN_LI_KIND] == FASTNN_LAYER_DENSE) {
            const T *bias = li[FASTNN_LI_BIAS] < 0 ? masks + li[FASTNN_LI_STATE]  /* zeros */
                                                   : params + li[FASTNN_LI_BIAS];
            status = DENSE_KERNELS->linear_forward(out, input, params + li[FASTNN_LI_WEIGHT],
                                                  bias, n, k, m, (int)li[FASTNN_LI_ACTIVATION],
                                                  lr[FASTNN_LR_ALPHA],
                                                  (int)li[FASTNN_LI_PRECISION]);
            if (status != FASTNN_OK) return -1;
        } else if (li[FASTNN_LI_KIND] == FASTNN_LAYER_BATCHNORM) {
            status = FN(batchnorm_layer_forward)(out, input, params, masks, li, lr, n, !evaluating);
            if (status != FASTNN_OK) return -1;
        } else if (li[FASTNN_LI_KIND] == FASTNN_LAYER_ACTIVATION) {
            if (out != input)  /* else fused into the batch norm before (same buffer) */
                FN(fastnn_activation_forward)(out, input, n * m, (int)li[FASTNN_LI_ACTIVATION],
                                              lr[FASTNN_LR_ALPHA]);
        } else if (li[FASTNN_LI_THRESHOLD] == 0 || evaluating) {
            memcpy(out, input, (size_t)(n * m) * sizeof(T));
        } else {
            T *mask = masks + li[FASTNN_LI_MASK];
            uint64_t key = dropout_step_key((uint64_t)li[FASTNN_LI_KEY], epoch, step);
            uint64_t threshold = (uint64_t)li[FASTNN_LI_THRESHOLD];
            T scale = (T)lr[FASTNN_LR_SCALE];
            for (int64_t e = 0; e < n * m; e++) {
                T factor = dropout_keep(key, e, threshold) ? scale : (T)0;
                mask[e] = factor;
                out[e] = input[e] * factor;
            }
        }
        input = out;
    }
    const int64_t *last = ints + (layers - 1) * FASTNN_LAYER_INTS;
    T *logits = acts + last[FASTNN_LI_OUTPUT], *grad = dacts + last[FASTNN_LI_OUTPUT];
    if (predicting) {  /* the step's outputs, in its place in the output rows */
        memcpy((T *)p->outputs + step * config[FASTNN_C_BATCH] * outputs, logits,
               (size_t)(n * outputs) * sizeof(T));
        return 1;
    }
    /* loss and its gradient */
    T *row_loss = p->row_loss;
    double loss = 0;
    /* the loss's own factors on its value and its gradient (1, 1 but for fastnn.sklearn's) */
    double loss_scale = hyper[FASTNN_H_LOSS_SCALE], grad_scale = hyper[FASTNN_H_GRAD_SCALE];
    if (loss_kind == FASTNN_LOSS_XENT_LABELS || loss_kind == FASTNN_LOSS_XENT_PROBS) {
        if (loss_kind == FASTNN_LOSS_XENT_LABELS)
            FN(fastnn_xent_labels)(row_loss, grad, logits, labels, NULL, n, outputs,
                                   grad_scale / (double)n, 0.0, -1);
        else
            FN(fastnn_xent_probs)(row_loss, grad, logits, targets, NULL, n, outputs,
                                  grad_scale / (double)n, 0.0);
        for (int64_t i = 0; i < n; i++) loss += row_loss[i];
        loss /= (double)n;
    } else if (loss_kind == FASTNN_LOSS_MSE) {
        double scale = 1.0 / (double)(n * outputs);
        loss = FN(fastnn_mse)(grad, logits, targets, NULL, n, outputs,
                              grad_scale / (double)(n * outputs)) * scale;
    } else {
        loss = FN(bce)(grad, logits, targets, n * outputs, grad_scale / (double)(n * outputs))
               / grad_scale;
    }
    loss *= loss_scale;
    if (hyper[FASTNN_H_L2] != 0 && !evaluating)  /* scikit-learn's L2 term (see the update) */
        loss += hyper[FASTNN_H_L2] / (2.0 * (double)n)
                * (*squares >= 0 ? *squares : FN(weight_squares)(params, ints, layers));
    *squares = -1;  /* until the update below gives that of its new weights */
    stat[0] = loss;
    stat[1] = 0;
    if (!isfinite(loss) && !evaluating) return 0;
    if (metric == FASTNN_METRIC_CLASSES)
        stat[1] = (double)FN(fastnn_count_correct)(logits, classes, n, outputs);
    else if (metric == FASTNN_METRIC_FLAGS)
        stat[1] = (double)FN(count_flags)(logits, flags, n * outputs, (T)hyper[FASTNN_H_THRESHOLD]);
    if (evaluating) return 1;
    /* backward; the scratch of the fused steps taken before any weight changes */
    void *fused_scratch = NULL;
    if (fusion->layers) {
        fused_scratch = fastnn_scratch(SCRATCH_WEIGHT_UPDATE, (size_t)fusion->bytes);
        if (!fused_scratch) return -1;
    }
    for (int64_t l = layers - 1; l >= 0; l--) {
        const int64_t *li = ints + l * FASTNN_LAYER_INTS;
        int64_t k = li[FASTNN_LI_INPUTS], m = li[FASTNN_LI_UNITS];
        const T *in = l ? acts + li[FASTNN_LI_OUTPUT - FASTNN_LAYER_INTS] : x;
        T *din = l ? dacts + li[FASTNN_LI_OUTPUT - FASTNN_LAYER_INTS] : NULL;
        T *out = acts + li[FASTNN_LI_OUTPUT], *dout = dacts + li[FASTNN_LI_OUTPUT];
        if (li[FASTNN_LI_KIND] == FASTNN_LAYER_DENSE) {
            T *dbias = li[FASTNN_LI_BIAS] < 0 ? masks + li[FASTNN_LI_STATE] + m  /* unread */
                                              : grads + li[FASTNN_LI_BIAS];
            double alpha = reals[l * FASTNN_LAYER_REALS + FASTNN_LR_ALPHA];
            if (l < 64 && (fusion->layers >> l & 1)) { /* the optimizer's step of W fused in */
                fastnn_weight_update update = FN(weight_update_of)(p, li[FASTNN_LI_WEIGHT],
                                                                   matrix_decay, adam_step);
                status = DENSE_KERNELS->linear_backward_update(
                    din, dbias, in, params + li[FASTNN_LI_WEIGHT], out, dout, n, k, m,
                    (int)li[FASTNN_LI_ACTIVATION], alpha, &update, fused_scratch,
                    fusion->bytes);
            } else
                status = DENSE_KERNELS->linear_backward(
                    din, grads + li[FASTNN_LI_WEIGHT], dbias, in, params + li[FASTNN_LI_WEIGHT],
                    out, dout, n, k, m, (int)li[FASTNN_LI_ACTIVATION], alpha,
                    (int)li[FASTNN_LI_PRECISION]);
            if (status != FASTNN_OK) return -1;
        } else if (li[FASTNN_LI_KIND] == FASTNN_LAYER_BATCHNORM) {
            const T *state = masks + li[FASTNN_LI_STATE];
            status = FN(fastnn_batchnorm_backward)(din, grads + li[FASTNN_LI_GAMMA],
                                                   grads + li[FASTNN_LI_BETA], in, out, dout,
                                                   params + li[FASTNN_LI_GAMMA], state + 2 * m,
                                                   state + 3 * m, n, m, 1,
                                                   (int)li[FASTNN_LI_ACTIVATION],
                                                   reals[l * FASTNN_LAYER_REALS + FASTNN_LR_ALPHA]);
            if (status != FASTNN_OK) return -1;
        } else if (li[FASTNN_LI_KIND] == FASTNN_LAYER_ACTIVATION) {
            if (din && din != dout)  /* else fused into the batch norm before */
                FN(fastnn_activation_backward)(din, out, dout, n * m,
                                               (int)li[FASTNN_LI_ACTIVATION],
                                               reals[l * FASTNN_LAYER_REALS + FASTNN_LR_ALPHA]);
        } else if (din && li[FASTNN_LI_THRESHOLD] == 0) {
            memcpy(din, dout, (size_t)(n * m) * sizeof(T));
        } else if (din) {
            const T *mask = masks + li[FASTNN_LI_MASK];
            for (int64_t e = 0; e < n * m; e++) din[e] = dout[e] * mask[e];
        }
    }
    if (config[FASTNN_C_MODE] == FASTNN_MODE_GRADIENTS) return 1;  /* grads left for the caller */
update:  /* the optimizer, over all parameters at once (its steps are element-wise) */
    {
        if (adam_step) p->config[FASTNN_C_ADAM_STEP] = adam_step;
        if (hyper[FASTNN_H_L2] == 0 && !config[FASTNN_C_EPS_UNCORRECTED] && !fusion->layers) {
            FN(optimizer_range)(p, 0, params_size, decay, adam_step);
            return 1;
        }
        /* scikit-learn's forms: l2 / n more weight decay on the weight matrices alone, Adam's
         * eps on sqrt(v) (optimizer_range); or weight matrices already stepped in the backward
         * pass (fusion), skipped but for the L2 term's sum of squares. One call per weight
         * matrix and one per run of other parameters (biases, and those of any other layer
         * kind) */
        double next_squares = 0;
        fold = fold && hyper[FASTNN_H_L2] != 0;
        int64_t done = 0;  /* the parameters before it are updated (weights come in order) */
        for (int64_t l = 0; l < layers; l++) {
            const int64_t *li = ints + l * FASTNN_LAYER_INTS;
            int64_t weight = li[FASTNN_LI_WEIGHT];
            if (li[FASTNN_LI_KIND] != FASTNN_LAYER_DENSE) continue;
            if (weight > done) FN(optimizer_range)(p, done, weight, decay, adam_step);
            done = weight + li[FASTNN_LI_INPUTS] * li[FASTNN_LI_UNITS];
            if (!(l < 64 && (fusion->layers >> l & 1)))
                FN(optimizer_range)(p, weight, done, matrix_decay, adam_step);
            if (fold) next_squares += FN(fastnn_sum_squares)(params + weight, done - weight);
        }
        if (params_size > done) FN(optimizer_range)(p, done, params_size, decay, adam_step);
        if (fold) *squares = next_squares;
    }
    return 1;
}

int64_t FN(fastnn_train_steps)(const fastnn_train_plan *plan, const int64_t *order,
                               int64_t first_step, int64_t steps, double *stats, int *status) {
    int64_t batch = plan->config[FASTNN_C_BATCH], samples = plan->config[FASTNN_C_SAMPLES];
    int gather = plan->config[FASTNN_C_GATHER] != 0;
    int64_t mode = plan->config[FASTNN_C_MODE];
    *status = FASTNN_OK;
    /* The floating-point mode once for all the steps: each kernel then finds it set and
     * leaves MXCSR alone (two MXCSR writes per kernel call were ~0.1 us of an XOR step). */
    unsigned fp_saved = fastnn_fp_enter();
    double squares = -1;  /* the L2 term's ||W||^2, carried from each update to the next step */
    /* the fused weight steps of a full batch, and of the short last one when it comes; the
     * call's last step is not fused, so that it leaves every gradient in grads, as the
     * per-layer path leaves them */
    FN(update_fusion) full = FN(plan_update_fusion)(plan, batch), last = full, none = {0, 0};
    int64_t last_n = batch;
    for (int64_t s = 0; s < steps; s++) {
        int64_t step = first_step + s, start = step * batch;
        int64_t n = fastnn_min(batch, samples - start);
        int64_t next_n = s + 1 < steps ? fastnn_min(batch, samples - start - batch) : 0;
        int gathers = gather && mode != FASTNN_MODE_APPLY;
        if (n != batch && n != last_n) {
            last = FN(plan_update_fusion)(plan, n);
            last_n = n;
        }
        int done = FN(train_step)(plan, gathers ? order + start : NULL, n,
                                  gathers && next_n > 0 ? order + start + batch : NULL, next_n,
                                  step, stats + 2 * s, &squares,
                                  mode == FASTNN_MODE_TRAIN && s + 1 < steps,
                                  s + 1 == steps ? &none : n == batch ? &full : &last);
        if (done < 0) *status = FASTNN_OUT_OF_MEMORY;
        if (done <= 0) {
            fastnn_fp_leave(fp_saved);
            return s;
        }
    }
    fastnn_fp_leave(fp_saved);
    return steps;
}
#undef DENSE_KERNELS
