/* libm.h - libm's scalar functions in the type's own precision, for the templates (T is
 * float or double): included by isa_kernels.h and by vmath_impl.h (whose Adam step needs
 * FASTNN_SQRT and pow wherever it is instantiated, amx_gemm.c too). */
#ifndef FASTNN_LIBM_H
#define FASTNN_LIBM_H
#include <math.h>

/* log of a row's sum of exponentials (softmax_xent_impl.h) and the square root of Adam
 * (vmath_impl.h): libm in the type's own precision. */
#define FASTNN_LOG(s) _Generic((s), float: logf, double: log)(s)
#define FASTNN_SQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x)
/* the binary cross-entropy's scalar libm calls (softmax_xent_impl.h) */
#define FASTNN_LOG1P(s) _Generic((s), float: log1pf, double: log1p)(s)
#define FASTNN_EXP(s) _Generic((s), float: expf, double: exp)(s)
#define FASTNN_ABS(s) _Generic((s), float: fabsf, double: fabs)(s)
#endif
