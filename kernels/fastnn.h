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
 *  - the kernels that need scratch memory (matmul, linear_forward, linear_backward) return
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
/* Which vector code was compiled in: "avx512", "avx2" or "portable". */
const char *fastnn_simd_name(void);

/* out (N, M) = op(a) @ op(b); a (N, K), or (K, N) if trans_a; b (K, M), or (M, K) if trans_b. */
int fastnn_matmul_f32(float *out, const float *a, const float *b,
                      int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);
int fastnn_matmul_f64(double *out, const double *a, const double *b,
                      int64_t n, int64_t k, int64_t m, int trans_a, int trans_b);

/* The path that matmul (and the linear kernels) would take for out (N, M) = op(a) @ op(b)
 * now, as gemm_plan.h chooses it: 0 SMALL, 1 IN_PLACE, 2 SPLIT_K, 3 PACKED; its threads, and
 * for PACKED the grid of row_threads x col_threads. For tests and tuning. */
int fastnn_gemm_plan_f32(int64_t n, int64_t m, int64_t k, int trans_a, int trans_b,
                         int *threads, int *row_threads, int *col_threads);
int fastnn_gemm_plan_f64(int64_t n, int64_t m, int64_t k, int trans_a, int trans_b,
                         int *threads, int *row_threads, int *col_threads);

/* out (N, M) = act(x (N, K) @ w (K, M) + b (M,)), bias and activation in the GEMM epilogue. */
int fastnn_linear_forward_f32(float *out, const float *x, const float *w, const float *b,
                              int64_t n, int64_t k, int64_t m, int activation, double alpha);
int fastnn_linear_forward_f64(double *out, const double *x, const double *w, const double *b,
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

/* Row-wise softmax / log-softmax of x (N, C) into out (N, C); out may be x. */
void fastnn_softmax_f32(float *out, const float *x, int64_t n, int64_t c);
void fastnn_softmax_f64(double *out, const double *x, int64_t n, int64_t c);
void fastnn_log_softmax_f32(float *out, const float *x, int64_t n, int64_t c);
void fastnn_log_softmax_f64(double *out, const double *x, int64_t n, int64_t c);

/* Softmax cross-entropy of logits (N, C): row_loss (N,) = -sum_c target_c log_softmax_c;
 * grad (N, C) = grad_scale * (softmax - target), or NULL for the loss only; grad may be
 * logits. labels: int64 (N,) class indices; probs: float (N, C) target rows. */
void fastnn_xent_labels_f32(float *row_loss, float *grad, const float *logits,
                            const int64_t *labels, int64_t n, int64_t c, double grad_scale);
void fastnn_xent_labels_f64(double *row_loss, double *grad, const double *logits,
                            const int64_t *labels, int64_t n, int64_t c, double grad_scale);
void fastnn_xent_probs_f32(float *row_loss, float *grad, const float *logits,
                           const float *probs, int64_t n, int64_t c, double grad_scale);
void fastnn_xent_probs_f64(double *row_loss, double *grad, const double *logits,
                           const double *probs, int64_t n, int64_t c, double grad_scale);

/* Returns sum((pred - target)^2) over `size` elements; grad (size,) = 2 * grad_scale *
 * (pred - target), or NULL. */
double fastnn_mse_f32(float *grad, const float *pred, const float *target, int64_t size,
                      double grad_scale);
double fastnn_mse_f64(double *grad, const double *pred, const double *target, int64_t size,
                      double grad_scale);

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

#endif
