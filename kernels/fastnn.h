/* fastnn.h - the C API of the fastnn kernels; the cffi cdef is read from this file.
 *
 * Conventions (see fastnn/backends/contract.py for the semantics of each kernel):
 *  - every array is C-contiguous (row-major) and is passed as a pointer to its first element;
 *  - the _f32 / _f64 suffix names the float type of every floating array of the call;
 *  - N is the batch, K the input size, M the output size, C the number of classes;
 *  - outputs come first among the arrays and are overwritten, never accumulated into;
 *  - activation is an index into contract.ACTIVATIONS:
 *    0 identity, 1 relu, 2 leaky_relu (slope alpha), 3 sigmoid, 4 tanh;
 *  - the caller (fastnn.ops) has validated shapes, dtypes and labels; no dimension is 0;
 *  - the kernels that need scratch memory (matmul, linear_forward, linear_backward,
 *    batchnorm_forward, batchnorm_backward) return
 *    FASTNN_OK, or FASTNN_OUT_OF_MEMORY when it could not be allocated; their outputs are then
 *    partly written, and nothing else is touched.
 * Only declarations and plain types below: cffi parses everything but the '#' lines.
 */
#ifndef FASTNN_H
#define FASTNN_H

#include <stdint.h>

enum { FASTNN_OK = 0, FASTNN_OUT_OF_MEMORY = 1 };

/* Threads used by later kernel calls from any Python thread (n >= 1). Starts at
 * OMP_NUM_THREADS, else the number of CPUs. */
void fastnn_set_num_threads(int n);
int fastnn_get_num_threads(void);
/* 1 (the default): every kernel runs with flush-to-zero and denormals-are-zero on each of its
 * threads, restored afterwards; 0: the caller's mode (IEEE subnormals). See contract.py. */
void fastnn_set_flush_denormal(int on);
int fastnn_get_flush_denormal(void);
/* 1 in a process made by fork() after this library was loaded: kernels then run on one thread
 * (GNU OpenMP's thread pool does not survive a fork). */
int fastnn_forked_child(void);
/* The busy machine's rule (internal.h, fastnn_contended): the length in ns of a spell on one
 * thread after a held-up parallel region, given the last spell's length (0: none yet) and the
 * time since that spell's end. For tests. */
int64_t fastnn_contended_spell(int64_t last_spell_ns, int64_t since_its_end_ns);
/* The same rule: 1 when a parallel region counts as held up, given how long its calling thread
 * waited for the others at its end and how long that thread worked (ns); and the end of the
 * spell it then starts, given the region's end, the spell's length and how long the region
 * started after the last one ended (after an idle gap: its end, no time on one thread).
 * For tests. */
int fastnn_held_up(int64_t waited_ns, int64_t worked_ns);
int64_t fastnn_spell_end(int64_t end_ns, int64_t spell_ns, int64_t idle_ns);
/* The vector code the kernels run now: "avx512", "avx2" or "portable" (the AMX instruction
 * set runs the AVX-512 float kernels). */
const char *fastnn_simd_name(void);

/* Instruction sets (cpu.c, isa.h): every hot kernel is compiled for each of them into this
 * one library, and the best this CPU and OS allow is chosen when it loads. */
enum { FASTNN_ISA_PORTABLE = 0, FASTNN_ISA_AVX2 = 1, FASTNN_ISA_AVX512 = 2, FASTNN_ISA_AMX = 3,
       FASTNN_ISA_COUNT = 4 };
/* "portable", "avx2", "avx512" or "amx"; NULL for another number. */
const char *fastnn_isa_name(int isa);
/* 1 when this build holds the set's copy of the kernels (whatever this CPU runs), else 0. */
int fastnn_isa_compiled(int isa);
/* "" when this CPU, the OS and the build allow the set; else why not, in a sentence. */
const char *fastnn_isa_unavailable(int isa);
/* The highest set allowed here. */
int fastnn_isa_best(void);
/* The set the kernels run now. */
int fastnn_isa_current(void);
/* Run the kernels of `isa` from now on: 0, or -1 (nothing changed) when it is not allowed.
 * Not to be called while kernels run. */
int fastnn_isa_select(int isa);

/* Precision of the GEMMs of matmul / linear_forward / linear_backward on float32 arrays:
 * bfloat16 rounds both operands of each product to bfloat16 (as fastnn_round_bf16) and
 * accumulates in float32; bias, activation, dz, db and every output stay float32. */
enum { FASTNN_PRECISION_FLOAT32 = 0, FASTNN_PRECISION_BFLOAT16 = 1 };

/* out[i] = x[i] rounded to the nearest bfloat16, ties to even, returned as a float32 (the
 * bfloat16 bits followed by 16 zero bits): infinities stay, values past the largest
 * bfloat16 round to infinity, subnormals round like any number, NaN stays NaN (quiet,
 * sign and top payload bits kept). out may be x. */
void fastnn_round_bf16(float *out, const float *x, int64_t size);
/* How bfloat16 precision multiplies now: "amx" (tiles), "avx512_bf16" (AVX-512 without
 * AMX but with VDPBF16PS dot products; the AMX kernel's packing) or "float32" (the float32
 * kernels on rounded copies). */
const char *fastnn_bf16_gemm_name(void);

/* out (N, M) = op(a) @ op(b); a (N, K), or (K, N) if trans_a; b (K, M), or (M, K) if trans_b. */
int fastnn_matmul_f32(float *out, const float *a, const float *b,
                      int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);
int fastnn_matmul_f64(double *out, const double *a, const double *b,
                      int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);

/* fastnn_matmul_f32 in bfloat16 precision (FASTNN_PRECISION_BFLOAT16). */
int fastnn_matmul_bf16(float *out, const float *a, const float *b,
                       int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);
/* out (N, M) = op(a) @ op(b) of bfloat16 operands (their uint16_t bits: the high half of the
 * float32 bits), summed in float32 as fastnn_matmul_bf16 sums the rounded operands: the same
 * bits as fastnn_matmul_bf16 of those numbers widened to float32, into float32 out, or, when
 * out_bf16, those results rounded to bfloat16 (as fastnn_round_bf16) into bfloat16 out. */
int fastnn_matmul_bf16_operands(void *out, int out_bf16, const uint16_t *a, const uint16_t *b,
                                int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);
/* fastnn_matmul_bf16 into a bfloat16 out (uint16_t bits): its float32 sums rounded to
 * bfloat16 (as fastnn_round_bf16), what torch.mm returns for float32 tensors under
 * torch.autocast("cpu", dtype=torch.bfloat16). The same bits as fastnn_matmul_bf16_operands
 * of the operands rounded to bfloat16. */
int fastnn_matmul_bf16_rounded(uint16_t *out, const float *a, const float *b,
                               int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);
/* The path that matmul (and the linear kernels) would take for out (N, M) = op(a) @ op(b)
 * now, as gemm_plan.h chooses it: 0 SMALL, 1 IN_PLACE, 2 SPLIT_K, 3 PACKED; its threads, and
 * for PACKED the grid of row_threads x col_threads. For tests and tuning. */
int fastnn_gemm_plan_f32(int64_t n, int64_t m, int64_t k, int trans_a, int trans_b,
                         int *threads, int *row_threads, int *col_threads);
int fastnn_gemm_plan_f64(int64_t n, int64_t m, int64_t k, int trans_a, int trans_b,
                         int *threads, int *row_threads, int *col_threads);
/* Bytes of L2 per core that the plan assumes (gemm_plan.h: FASTNN_L2_BYTES if set at build
 * time, else what the C library reports, else 1 MB). For tests and tuning. */
int64_t fastnn_l2_bytes(void);

/* out (N, M) = act(x (N, K) @ w (K, M) + b (M,)), bias and activation in the GEMM epilogue. */
int fastnn_linear_forward_f32(float *out, const float *x, const float *w, const float *b,
                              int64_t n, int64_t k, int64_t m, int activation, double alpha);
int fastnn_linear_forward_f64(double *out, const double *x, const double *w, const double *b,
                              int64_t n, int64_t k, int64_t m, int activation, double alpha);
/* fastnn_linear_forward_f32 with its GEMM in bfloat16 precision. */
int fastnn_linear_forward_bf16(float *out, const float *x, const float *w, const float *b,
                               int64_t n, int64_t k, int64_t m, int activation, double alpha);

/* Gradients of y = act(x @ w + b): dz = dy * act'(y) (from y), db (M,) = sum_rows dz,
 * dw (K, M) = x^T @ dz, dx (N, K) = dz @ w^T (skipped when dx is NULL).
 * x (N, K), w (K, M), y and dy (N, M). */
int fastnn_linear_backward_f32(float *dx, float *dw, float *db,
                               const float *x, const float *w, const float *y, const float *dy,
                               int64_t n, int64_t k, int64_t m, int activation, double alpha);
int fastnn_linear_backward_f64(double *dx, double *dw, double *db,
                               const double *x, const double *w, const double *y,
                               const double *dy,
                               int64_t n, int64_t k, int64_t m, int activation, double alpha);
/* fastnn_linear_backward_f32 with its two GEMMs (dw, dx) in bfloat16 precision; dz and db in
 * float32. */
int fastnn_linear_backward_bf16(float *dx, float *dw, float *db,
                                const float *x, const float *w, const float *y, const float *dy,
                                int64_t n, int64_t k, int64_t m, int activation, double alpha);

/* Row-wise softmax / log-softmax of x (N, C) into out (N, C); out may be x. */
void fastnn_softmax_f32(float *out, const float *x, int64_t n, int64_t c);
void fastnn_softmax_f64(double *out, const double *x, int64_t n, int64_t c);
void fastnn_log_softmax_f32(float *out, const float *x, int64_t n, int64_t c);
void fastnn_log_softmax_f64(double *out, const double *x, int64_t n, int64_t c);

/* Softmax cross-entropy of logits (N, C): row_loss (N,) = w_i * -sum_c t'_c log_softmax_c, with
 * the smoothed target t' = (1 - label_smoothing) t + label_smoothing / C and 0 log 0 = 0;
 * grad (N, C) = grad_scale * w_i * (softmax - t'), or NULL for the loss only; grad may be
 * logits. weight: float (N,) per-row weights w, or NULL (all 1). labels: int64 (N,) class
 * indices in [0, C), or equal to ignore_index: such rows get loss 0 and gradient 0 (pass a
 * negative ignore_index for none: no label is negative then); probs: float (N, C) rows. */
void fastnn_xent_labels_f32(float *row_loss, float *grad, const float *logits,
                            const int64_t *labels, const float *weight, int64_t n, int64_t c,
                            double grad_scale, double label_smoothing, int64_t ignore_index);
void fastnn_xent_labels_f64(double *row_loss, double *grad, const double *logits,
                            const int64_t *labels, const double *weight, int64_t n, int64_t c,
                            double grad_scale, double label_smoothing, int64_t ignore_index);
void fastnn_xent_probs_f32(float *row_loss, float *grad, const float *logits,
                           const float *probs, const float *weight, int64_t n, int64_t c,
                           double grad_scale, double label_smoothing);
void fastnn_xent_probs_f64(double *row_loss, double *grad, const double *logits,
                           const double *probs, const double *weight, int64_t n, int64_t c,
                           double grad_scale, double label_smoothing);

/* Binary cross-entropy of sigmoid(logits) (N, M) against target (N, M): row_loss (N,) =
 * w_i * sum_j (max(z, 0) - z t' + log(1 + exp(-|z|))), t' = (1 - label_smoothing) t +
 * label_smoothing / 2; grad (N, M) = grad_scale * w_i * (sigmoid(z) - t'), or NULL. weight:
 * float (N,) or NULL. */
void fastnn_sigmoid_xent_f32(float *row_loss, float *grad, const float *logits,
                             const float *target, const float *weight, int64_t n, int64_t m,
                             double grad_scale, double label_smoothing);
void fastnn_sigmoid_xent_f64(double *row_loss, double *grad, const double *logits,
                             const double *target, const double *weight, int64_t n, int64_t m,
                             double grad_scale, double label_smoothing);

/* Returns sum_i w_i sum_j (pred - target)^2 over pred, target (N, M); grad (N, M) = 2 *
 * grad_scale * w_i * (pred - target), or NULL. weight: float (N,) or NULL (all 1). */
double fastnn_mse_f32(float *grad, const float *pred, const float *target, const float *weight,
                      int64_t n, int64_t m, double grad_scale);
double fastnn_mse_f64(double *grad, const double *pred, const double *target,
                      const double *weight, int64_t n, int64_t m, double grad_scale);

/* Batch normalization of x (N, M) then an activation: out (N, M) = act(gamma * (x - mean) *
 * inv_std + beta), per column. training: mean and inv_std = 1 / sqrt(var + epsilon) from the
 * batch (biased variance), moving_mean and moving_var updated in place to momentum * moving +
 * (1 - momentum) * batch; else from the moving statistics (not written). mean, inv_std (M,)
 * are written in both modes. gamma, beta (M,). Returns FASTNN_OK or FASTNN_OUT_OF_MEMORY. */
int fastnn_batchnorm_forward_f32(float *out, float *mean, float *inv_std, float *moving_mean,
                                 float *moving_var, const float *x, const float *gamma,
                                 const float *beta, int64_t n, int64_t m, double momentum,
                                 double epsilon, int training, int activation, double alpha);
int fastnn_batchnorm_forward_f64(double *out, double *mean, double *inv_std,
                                 double *moving_mean, double *moving_var, const double *x,
                                 const double *gamma, const double *beta, int64_t n, int64_t m,
                                 double momentum, double epsilon, int training, int activation,
                                 double alpha);

/* Gradients of batchnorm_forward: dz = dy * act'(y), xhat = (x - mean) * inv_std; dbeta (M,)
 * = sum_rows dz, dgamma (M,) = sum_rows dz * xhat; dx (N, M) = gamma * inv_std * (dz -
 * dbeta/N - xhat * dgamma/N) when batch_statistics, else gamma * inv_std * dz; dx may be
 * NULL. x, y, dy (N, M); gamma, mean, inv_std (M,). Returns FASTNN_OK or
 * FASTNN_OUT_OF_MEMORY. */
int fastnn_batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *x,
                                  const float *y, const float *dy, const float *gamma,
                                  const float *mean, const float *inv_std, int64_t n, int64_t m,
                                  int batch_statistics, int activation, double alpha);
int fastnn_batchnorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *x,
                                  const double *y, const double *dy, const double *gamma,
                                  const double *mean, const double *inv_std, int64_t n,
                                  int64_t m, int batch_statistics, int activation,
                                  double alpha);

/* out = act(x) and dx = dy * act'(y) elementwise over `size` numbers. */
void fastnn_activation_forward_f32(float *out, const float *x, int64_t size, int activation,
                                   double alpha);
void fastnn_activation_forward_f64(double *out, const double *x, int64_t size, int activation,
                                   double alpha);
void fastnn_activation_backward_f32(float *dx, const float *y, const float *dy, int64_t size,
                                    int activation, double alpha);
void fastnn_activation_backward_f64(double *dx, const double *y, const double *dy,
                                    int64_t size, int activation, double alpha);

/* out (N, C) = one-hot rows of labels (N,) in [0, C). */
void fastnn_one_hot_f32(float *out, const int64_t *labels, int64_t n, int64_t c);
void fastnn_one_hot_f64(double *out, const int64_t *labels, int64_t n, int64_t c);

/* Number of rows i of scores (N, C) whose first maximum is at labels[i]. */
int64_t fastnn_count_correct_f32(const float *scores, const int64_t *labels, int64_t n,
                                 int64_t c);
int64_t fastnn_count_correct_f64(const double *scores, const int64_t *labels, int64_t n,
                                 int64_t c);

/* 1 when no element of x (size elements) is NaN or infinite, else 0. */
int fastnn_all_finite_f32(const float *x, int64_t size);
int fastnn_all_finite_f64(const double *x, int64_t size);

/* out[i] = source[index[i]] for i < n: rows of row_bytes bytes (any element type); every
 * index in [0, rows of source). */
void fastnn_take_rows(void *out, const void *source, const int64_t *index, int64_t n,
                      int64_t row_bytes);

/* In-place optimizer steps over `size` elements (PyTorch semantics, see the contract).
 * velocity is NULL exactly when momentum == 0. */
void fastnn_sgd_step_f32(float *param, float *velocity, const float *grad, int64_t size,
                         double lr, double momentum, int nesterov, double weight_decay);
void fastnn_sgd_step_f64(double *param, double *velocity, const double *grad, int64_t size,
                         double lr, double momentum, int nesterov, double weight_decay);
void fastnn_adam_step_f32(float *param, float *m, float *v, const float *grad, int64_t size,
                          double lr, double beta1, double beta2, double eps,
                          double weight_decay, int64_t step);
void fastnn_adam_step_f64(double *param, double *m, double *v, const double *grad,
                          int64_t size, double lr, double beta1, double beta2, double eps,
                          double weight_decay, int64_t step);

/* ---- The compiled training loop (train.c): many training steps in one call ----
 * The plan is fastnn/plan.py's TrainingPlan; the column and entry numbers below are its
 * constants (checked when fastnn.backends.c_backend loads). Float arrays are of the call's
 * type (_f32 / _f64). */
enum {
    FASTNN_LAYER_DENSE = 0, FASTNN_LAYER_DROPOUT = 1, FASTNN_LAYER_BATCHNORM = 2,
    FASTNN_LAYER_ACTIVATION = 3,
    /* columns of layer_ints */
    FASTNN_LI_KIND = 0, FASTNN_LI_INPUTS = 1, FASTNN_LI_UNITS = 2, FASTNN_LI_ACTIVATION = 3,
    FASTNN_LI_WEIGHT = 4, FASTNN_LI_BIAS = 5, FASTNN_LI_OUTPUT = 6, FASTNN_LI_MASK = 7,
    FASTNN_LI_KEY = 8, FASTNN_LI_THRESHOLD = 9, FASTNN_LI_GAMMA = 10, FASTNN_LI_BETA = 11,
    FASTNN_LI_STATE = 12, FASTNN_LI_PRECISION = 13, FASTNN_LAYER_INTS = 14,
    /* columns of layer_reals */
    FASTNN_LR_ALPHA = 0, FASTNN_LR_SCALE = 1, FASTNN_LR_MOMENTUM = 2, FASTNN_LR_EPSILON = 3,
    FASTNN_LAYER_REALS = 4,
    /* codes */
    FASTNN_LOSS_XENT_LABELS = 0, FASTNN_LOSS_XENT_PROBS = 1, FASTNN_LOSS_BCE = 2,
    FASTNN_LOSS_MSE = 3, FASTNN_OPTIMIZER_SGD = 0, FASTNN_OPTIMIZER_ADAM = 1,
    FASTNN_METRIC_NONE = 0, FASTNN_METRIC_CLASSES = 1, FASTNN_METRIC_FLAGS = 2,
    /* entries of config */
    FASTNN_C_LAYERS = 0, FASTNN_C_LOSS = 1, FASTNN_C_OPTIMIZER = 2, FASTNN_C_NESTEROV = 3,
    FASTNN_C_METRIC = 4, FASTNN_C_BATCH = 5, FASTNN_C_SAMPLES = 6, FASTNN_C_FEATURES = 7,
    FASTNN_C_OUTPUTS = 8, FASTNN_C_GATHER = 9, FASTNN_C_EPOCH = 10, FASTNN_C_ADAM_STEP = 11,
    FASTNN_C_MODE = 12, FASTNN_C_EPS_UNCORRECTED = 13, FASTNN_CONFIG_SIZE = 14,
    /* modes: training steps; evaluation (forward, loss and metric only, dropout off);
     * gradients only, the update only (see fastnn_train_steps); forward only (predict) */
    FASTNN_MODE_TRAIN = 0, FASTNN_MODE_EVALUATE = 1, FASTNN_MODE_GRADIENTS = 2,
    FASTNN_MODE_APPLY = 3, FASTNN_MODE_PREDICT = 4,
    /* entries of hyper */
    FASTNN_H_LR = 0, FASTNN_H_MOMENTUM = 1, FASTNN_H_WEIGHT_DECAY = 2, FASTNN_H_BETA1 = 3,
    FASTNN_H_BETA2 = 4, FASTNN_H_EPS = 5, FASTNN_H_THRESHOLD = 6, FASTNN_H_L2 = 7,
    FASTNN_H_LOSS_SCALE = 8, FASTNN_H_GRAD_SCALE = 9, FASTNN_HYPER_SIZE = 10
};

/* Pointers to the plan's arrays (see plan.py for shapes); an absent array is NULL. */
typedef struct {
    const int64_t *layer_ints;   /* (layers, FASTNN_LAYER_INTS) */
    const double *layer_reals;   /* (layers, FASTNN_LAYER_REALS) */
    int64_t *config;             /* FASTNN_CONFIG_SIZE; C_ADAM_STEP is advanced */
    const double *hyper;         /* FASTNN_HYPER_SIZE */
    void *params, *grads;        /* flat parameters and gradients */
    void *state1, *state2;       /* SGD: velocity (NULL without momentum); Adam: m, v */
    const void *x;               /* (samples, features) */
    const int64_t *labels;       /* (samples,) sparse labels, or NULL */
    const void *targets;         /* (samples, outputs) target rows, or NULL */
    const int64_t *classes;      /* (samples,) metric labels, or NULL */
    const uint8_t *flags;        /* (samples, outputs) 0/1 metric labels, or NULL */
    void *x_batch;               /* (batch, features) and the other batch buffers */
    int64_t *labels_batch;
    void *targets_batch;
    int64_t *classes_batch;
    uint8_t *flags_batch;
    void *acts, *dacts, *masks;  /* layer outputs, their gradients, dropout masks and the
                                  * layers' state (batch norm statistics, a missing bias) */
    void *row_loss;              /* (batch,) */
    int64_t params_size;         /* elements of params, grads (and the optimizer's state) */
    void *outputs;               /* (samples, outputs) the last layer's outputs in
                                  * FASTNN_MODE_PREDICT, else NULL */
} fastnn_train_plan;

/* Training steps first_step .. first_step + steps - 1 of the epoch config[C_EPOCH]: step s
 * trains on rows order[s * batch : (s + 1) * batch] (fewer for the last); stats (steps, 2)
 * gets each step's mean loss and correct count. Returns the steps done: fewer than `steps`
 * when a loss was not finite (that step's loss is in stats, its update not applied) or when
 * scratch memory ran out (*status = FASTNN_OUT_OF_MEMORY; the weights may be part-updated).
 * In FASTNN_MODE_EVALUATE the steps only evaluate (nothing is updated, every step is done).
 * Data-parallel training splits a step in two calls of one step each: FASTNN_MODE_GRADIENTS
 * (forward, loss and backward: gradients in grads, nothing updated; 0 when the loss was not
 * finite), then FASTNN_MODE_APPLY (the optimizer's update alone from grads, Adam's step
 * counted; no data read, stats not written). FASTNN_MODE_PREDICT runs the forward pass
 * alone as evaluation does (dropout off, batch norms on their moving statistics), no loss,
 * nothing updated, stats not written: step s's last-layer outputs (before a softmax or
 * sigmoid the loss fuses in) go to outputs rows s * batch .. (fewer for the last). */
int64_t fastnn_train_steps_f32(const fastnn_train_plan *plan, const int64_t *order,
                               int64_t first_step, int64_t steps, double *stats, int *status);
int64_t fastnn_train_steps_f64(const fastnn_train_plan *plan, const int64_t *order,
                               int64_t first_step, int64_t steps, double *stats, int *status);

#endif
