/* isa_kernels.h - one instruction set's copy of every hot kernel, and its table (isa.h).
 *
 * Included once by each isa_<name>.c, after its `#pragma GCC target` and with
 * FASTNN_ISA_SUFFIX defined (e.g. _avx2), so every function of the templates gets that suffix
 * (instantiate.h's FN) and is compiled for that instruction set (simd.h follows the target's
 * macros, e.g. __AVX512F__). FASTNN_ISA_TABLE names the table defined here.
 */
#include <string.h>

#include "isa.h"
#include "libm.h"

#define FASTNN_TEMPLATE "gemm_impl.h"
#include "instantiate.h"
#undef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE "linear_impl.h"
#include "instantiate.h"
#undef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE "softmax_xent_impl.h"
#include "instantiate.h"
#undef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE "misc_impl.h"
#include "instantiate.h"
#undef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE "batchnorm_impl.h"
#include "instantiate.h"
#undef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE "optim_impl.h"
#include "instantiate.h"
#undef FASTNN_TEMPLATE

/* fastnn_<name>_<S><suffix>, e.g. fastnn_gemm_f32_avx2 */
#define FASTNN_ISA_KERNEL(name, S) FASTNN_CAT(fastnn_##name##_##S, FASTNN_ISA_SUFFIX)
#define FASTNN_ISA_KERNELS(S)                                                                  \
    {                                                                                           \
        FASTNN_ISA_KERNEL(gemm, S), FASTNN_ISA_KERNEL(linear_forward, S),                      \
        FASTNN_ISA_KERNEL(linear_backward, S), FASTNN_ISA_KERNEL(linear_update_scratch, S),    \
        FASTNN_ISA_KERNEL(linear_backward_update, S), FASTNN_ISA_KERNEL(softmax, S),           \
        FASTNN_ISA_KERNEL(log_softmax, S), FASTNN_ISA_KERNEL(xent_labels, S),                  \
        FASTNN_ISA_KERNEL(xent_probs, S), FASTNN_ISA_KERNEL(sigmoid_xent, S),                  \
        FASTNN_ISA_KERNEL(mse, S), FASTNN_ISA_KERNEL(batchnorm_forward, S),                    \
        FASTNN_ISA_KERNEL(batchnorm_backward, S), FASTNN_ISA_KERNEL(activation_forward, S),    \
        FASTNN_ISA_KERNEL(activation_backward, S),                                              \
        FASTNN_ISA_KERNEL(one_hot, S), FASTNN_ISA_KERNEL(count_correct, S),                    \
        FASTNN_ISA_KERNEL(all_finite, S), FASTNN_ISA_KERNEL(sum_squares, S),                   \
        FASTNN_ISA_KERNEL(sgd_step, S),                                                         \
        FASTNN_ISA_KERNEL(adam_step, S), FASTNN_ISA_KERNEL(gemm_plan, S),                      \
    }

static const fastnn_kernels_f32 isa_kernels_f32 = FASTNN_ISA_KERNELS(f32);
static const fastnn_kernels_f64 isa_kernels_f64 = FASTNN_ISA_KERNELS(f64);
const fastnn_isa_kernels FASTNN_ISA_TABLE = {&isa_kernels_f32, &isa_kernels_f64};

#undef FASTNN_ISA_KERNEL
#undef FASTNN_ISA_KERNELS
