/* softmax_xent.c - softmax, log-softmax and cross-entropy (softmax_xent_impl.h). */
#include <math.h>
#include <string.h>

#include "internal.h"

/* log of a row's sum of exponentials, once per row: libm in the row's own type. */
#define FASTNN_LOG(s) _Generic((s), float: logf, double: log)(s)
#define FASTNN_LOG1P(s) _Generic((s), float: log1pf, double: log1p)(s)
#define FASTNN_EXP(s) _Generic((s), float: expf, double: exp)(s)
#define FASTNN_ABS(s) _Generic((s), float: fabsf, double: fabs)(s)

#define FASTNN_TEMPLATE "softmax_xent_impl.h"
#include "instantiate.h"
