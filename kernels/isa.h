/* isa.h - the instruction sets the kernels are compiled for, and the table of one set's copy
 * of the hot kernels that the exported functions (dispatch.c) call through.
 *
 * Each hot kernel (the *_impl.h templates) is compiled once per instruction set, into
 * isa_portable.c, isa_avx2.c and isa_avx512.c, each under its own `#pragma GCC target` and
 * with its own name suffix (FASTNN_ISA_SUFFIX: fastnn_gemm_f32_avx2, ...); the bfloat16 tile
 * GEMM is amx_gemm.c. cpu.c chooses one set when the library loads (the best this CPU and
 * OS allow, or a lower one on request: fastnn_isa_select) and dispatch.c calls its kernels.
 * The AMX set runs the AVX-512 float kernels and the AMX bfloat16 GEMM.
 */
#ifndef FASTNN_ISA_H
#define FASTNN_ISA_H

#include "internal.h"

/* The hot kernels of one float type, as one instruction set's copy implements them
 * (fastnn.h gives the semantics; the linear kernels take the GEMM precision last,
 * FASTNN_PRECISION_*, which only the float32 ones read). */
#define FASTNN_DECLARE_KERNELS(S, T)                                                           \
    typedef struct {                                                                            \
        int (*gemm)(int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int trans_a,     \
                    const T *b, int64_t ldb, int trans_b, T *c, int64_t ldc,                    \
                    const fastnn_epilogue *epilogue);                                           \
        int (*linear_forward)(T *out, const T *x, const T *w, const T *b, int64_t n,           \
                              int64_t k, int64_t m, int activation, double alpha,              \
                              int precision);                                                   \
        int (*linear_backward)(T *dx, T *dw, T *db, const T *x, const T *w, const T *y,        \
                               const T *dy, int64_t n, int64_t k, int64_t m, int activation,   \
                               double alpha, int precision);                                    \
        /* linear_impl.h: linear_backward fused with the optimizer's step of w (the       \
         * compiled training loop's), and the scratch it needs (0: not for this layer and    \
         * batch) */                                                                           \
        int64_t (*linear_update_scratch)(int64_t n, int64_t k, int64_t m, int precision);     \
        int (*linear_backward_update)(T *dx, T *db, const T *x, T *w, const T *y,             \
                                      const T *dy, int64_t n, int64_t k, int64_t m,            \
                                      int activation, double alpha,                            \
                                      const fastnn_weight_update *update, void *scratch,       \
                                      int64_t scratch_bytes);                                  \
        void (*softmax)(T *out, const T *x, int64_t n, int64_t c);                              \
        void (*log_softmax)(T *out, const T *x, int64_t n, int64_t c);                          \
        void (*xent_labels)(T *row_loss, T *grad, const T *logits, const int64_t *labels,      \
                            const T *weight, int64_t n, int64_t c, double grad_scale,           \
                            double label_smoothing, int64_t ignore_index);                      \
        void (*xent_probs)(T *row_loss, T *grad, const T *logits, const T *probs,              \
                           const T *weight, int64_t n, int64_t c, double grad_scale,            \
                           double label_smoothing);                                             \
        void (*sigmoid_xent)(T *row_loss, T *grad, const T *logits, const T *target,           \
                             const T *weight, int64_t n, int64_t m, double grad_scale,          \
                             double label_smoothing);                                           \
        double (*mse)(T *grad, const T *pred, const T *target, const T *weight, int64_t n,     \
                      int64_t m, double grad_scale);                                            \
        int (*batchnorm_forward)(T *out, T *mean, T *inv_std, T *moving_mean, T *moving_var,   \
                                 const T *x, const T *gamma, const T *beta, int64_t n,          \
                                 int64_t m, double momentum, double epsilon, int training,      \
                                 int activation, double alpha);                                 \
        int (*batchnorm_backward)(T *dx, T *dgamma, T *dbeta, const T *x, const T *y,          \
                                  const T *dy, const T *gamma, const T *mean,                   \
                                  const T *inv_std, int64_t n, int64_t m,                       \
                                  int batch_statistics, int activation, double alpha);          \
        void (*activation_forward)(T *out, const T *x, int64_t size, int activation,           \
                                   double alpha);                                               \
        void (*activation_backward)(T *dx, const T *y, const T *dy, int64_t size,              \
                                    int activation, double alpha);                              \
        void (*one_hot)(T *out, const int64_t *labels, int64_t n, int64_t c);                  \
        int64_t (*count_correct)(const T *scores, const int64_t *labels, int64_t n,            \
                                 int64_t c);                                                    \
        int (*all_finite)(const T *x, int64_t size);                                            \
        double (*sum_squares)(const T *x, int64_t size);                                        \
        void (*sgd_step)(T *param, T *velocity, const T *grad, int64_t size, double lr,        \
                         double momentum, int nesterov, double weight_decay);                   \
        void (*adam_step)(T *param, T *m, T *v, const T *grad, int64_t size, double lr,        \
                          double beta1, double beta2, double eps, double weight_decay,         \
                          int64_t step);                                                        \
        int (*gemm_plan)(int64_t m, int64_t n, int64_t k, int trans_a, int trans_b,            \
                         int *threads, int *row_threads, int *col_threads);                     \
    } fastnn_kernels_##S;
FASTNN_DECLARE_KERNELS(f32, float)
FASTNN_DECLARE_KERNELS(f64, double)
#undef FASTNN_DECLARE_KERNELS

/* One instruction set's copy of every hot kernel. */
typedef struct {
    const fastnn_kernels_f32 *f32;
    const fastnn_kernels_f64 *f64;
} fastnn_isa_kernels;

/* Defined by isa_<name>.c when the compiler could build that copy (weak: absent otherwise). */
extern const fastnn_isa_kernels fastnn_isa_portable;
extern const fastnn_isa_kernels fastnn_isa_avx2 __attribute__((weak));
extern const fastnn_isa_kernels fastnn_isa_avx512 __attribute__((weak));

/* The copy the exported kernels run now (cpu.c; never NULL). */
const fastnn_isa_kernels *fastnn_active_kernels(void);

/* C = op(A) @ op(B) (+ epilogue) with bfloat16 products on AMX tiles (amx_gemm.c), the
 * arguments of fastnn_gemm_f32, a and b float32 numbers (rounded to bfloat16 by the packing)
 * or, when bf16_operands, bfloat16 numbers (uint16_t bits, read as they are), and C float32
 * or, when bf16_c, bfloat16 (the float32 results rounded as fastnn_round_bf16); weak: absent
 * when the compiler could not build it. Only called when cpu.c has found AMX usable and has
 * the OS's permission. */
int fastnn_amx_gemm(int64_t m, int64_t n, int64_t k, const void *a, int64_t lda, int trans_a,
                    const void *b, int64_t ldb, int trans_b, void *c, int64_t ldc,
                    const fastnn_epilogue *epilogue, int bf16_operands,
                    int bf16_c) __attribute__((weak));

/* The same GEMM with AVX512-BF16 dot products (VDPBF16PS) in place of tiles, for AVX-512
 * CPUs that have them but no AMX (amx_gemm.c; weak as above); cpu.c says when. */
int fastnn_dot_bf16_gemm(int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                         int trans_a, const void *b, int64_t ldb, int trans_b, void *c,
                         int64_t ldc, const fastnn_epilogue *epilogue, int bf16_operands,
                         int bf16_c) __attribute__((weak));
/* Whether this CPU has AVX512-BF16 (CPUID leaf 7 subleaf 1 EAX bit 5) and the kernel is built. */
int fastnn_cpu_has_dot_bf16(void);

/* The tile palette the AMX kernels load in each thread before their first tile instruction
 * (8 tiles of 16 rows x 64 bytes), and the bytes of one tile. */
#define FASTNN_AMX_TILE_BYTES 1024

#endif
