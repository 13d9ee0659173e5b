/* dispatch_impl.h - the exported kernels of fastnn.h for T (template: instantiate.h, with no
 * instruction-set suffix): each calls the copy of the instruction set chosen at load
 * (isa.h, cpu.c). One indirect call each; the table pointer is read once per call. */

#define KERNELS (fastnn_active_kernels()->TNAME)

int FN(fastnn_gemm)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int trans_a,
                    const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,
                    const fastnn_epilogue *epilogue) {
    return KERNELS->gemm(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, ldc, epilogue);
}

int FN(fastnn_gemm_plan)(int64_t n, int64_t m, int64_t k, int trans_a, int trans_b,
                         int *threads, int *row_threads, int *col_threads) {
    return KERNELS->gemm_plan(n, m, k, trans_a, trans_b, threads, row_threads, col_threads);
}

int FN(fastnn_matmul)(T *out, const T *a, const T *b, int64_t n, int64_t k, int64_t m,
                      int trans_a, int trans_b) {
    return KERNELS->gemm(n, m, k, a, trans_a ? n : k, trans_a, b, trans_b ? k : m, trans_b, out,
                         m, NULL);
}

int FN(fastnn_linear_forward)(T *out, const T *x, const T *w, const T *b, int64_t n, int64_t k,
                              int64_t m, int activation, double alpha) {
    return KERNELS->linear_forward(out, x, w, b, n, k, m, activation, alpha,
                                   FASTNN_PRECISION_FLOAT32);
}

int FN(fastnn_linear_backward)(T *dx, T *dw, T *db, const T *x, const T *w, const T *y,
                               const T *dy, int64_t n, int64_t k, int64_t m, int activation,
                               double alpha) {
    return KERNELS->linear_backward(dx, dw, db, x, w, y, dy, n, k, m, activation, alpha,
                                    FASTNN_PRECISION_FLOAT32);
}

void FN(fastnn_softmax)(T *out, const T *x, int64_t n, int64_t c) {
    KERNELS->softmax(out, x, n, c);
}

void FN(fastnn_log_softmax)(T *out, const T *x, int64_t n, int64_t c) {
    KERNELS->log_softmax(out, x, n, c);
}

void FN(fastnn_xent_labels)(T *row_loss, T *grad, const T *logits, const int64_t *labels,
                            const T *weight, int64_t n, int64_t c, double grad_scale,
                            double label_smoothing, int64_t ignore_index) {
    KERNELS->xent_labels(row_loss, grad, logits, labels, weight, n, c, grad_scale,
                         label_smoothing, ignore_index);
}

void FN(fastnn_xent_probs)(T *row_loss, T *grad, const T *logits, const T *probs,
                           const T *weight, int64_t n, int64_t c, double grad_scale,
                           double label_smoothing) {
    KERNELS->xent_probs(row_loss, grad, logits, probs, weight, n, c, grad_scale,
                        label_smoothing);
}

void FN(fastnn_sigmoid_xent)(T *row_loss, T *grad, const T *logits, const T *target,
                             const T *weight, int64_t n, int64_t m, double grad_scale,
                             double label_smoothing) {
    KERNELS->sigmoid_xent(row_loss, grad, logits, target, weight, n, m, grad_scale,
                          label_smoothing);
}

double FN(fastnn_mse)(T *grad, const T *pred, const T *target, const T *weight, int64_t n,
                      int64_t m, double grad_scale) {
    return KERNELS->mse(grad, pred, target, weight, n, m, grad_scale);
}

int FN(fastnn_batchnorm_forward)(T *out, T *mean, T *inv_std, T *moving_mean, T *moving_var,
                                 const T *x, const T *gamma, const T *beta, int64_t n,
                                 int64_t m, double momentum, double epsilon, int training,
                                 int activation, double alpha) {
    return KERNELS->batchnorm_forward(out, mean, inv_std, moving_mean, moving_var, x, gamma,
                                      beta, n, m, momentum, epsilon, training, activation,
                                      alpha);
}

int FN(fastnn_batchnorm_backward)(T *dx, T *dgamma, T *dbeta, const T *x, const T *y,
                                  const T *dy, const T *gamma, const T *mean,
                                  const T *inv_std, int64_t n, int64_t m, int batch_statistics,
                                  int activation, double alpha) {
    return KERNELS->batchnorm_backward(dx, dgamma, dbeta, x, y, dy, gamma, mean, inv_std, n, m,
                                       batch_statistics, activation, alpha);
}

void FN(fastnn_activation_forward)(T *out, const T *x, int64_t size, int activation,
                                   double alpha) {
    KERNELS->activation_forward(out, x, size, activation, alpha);
}

void FN(fastnn_activation_backward)(T *dx, const T *y, const T *dy, int64_t size,
                                    int activation, double alpha) {
    KERNELS->activation_backward(dx, y, dy, size, activation, alpha);
}

void FN(fastnn_one_hot)(T *out, const int64_t *labels, int64_t n, int64_t c) {
    KERNELS->one_hot(out, labels, n, c);
}

int64_t FN(fastnn_count_correct)(const T *scores, const int64_t *labels, int64_t n, int64_t c) {
    return KERNELS->count_correct(scores, labels, n, c);
}

int FN(fastnn_all_finite)(const T *x, int64_t size) { return KERNELS->all_finite(x, size); }

void FN(fastnn_sgd_step)(T *param, T *velocity, const T *grad, int64_t size, double lr,
                         double momentum, int nesterov, double weight_decay) {
    KERNELS->sgd_step(param, velocity, grad, size, lr, momentum, nesterov, weight_decay);
}

void FN(fastnn_adam_step)(T *param, T *m, T *v, const T *grad, int64_t size, double lr,
                          double beta1, double beta2, double eps, double weight_decay,
                          int64_t step) {
    KERNELS->adam_step(param, m, v, grad, size, lr, beta1, beta2, eps, weight_decay, step);
}

#undef KERNELS
