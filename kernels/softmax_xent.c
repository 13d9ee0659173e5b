/* softmax_xent.c - softmax, log-softmax and cross-entropy (softmax_xent_impl.h). */
#include <math.h>

#include "internal.h"

/* log of a row's sum of exponentials, once per row: libm in the row's own type. */
#define FASTNN_LOG(s) _Generic((s), float: logf, double: log)(s)

#define FASTNN_TEMPLATE "softmax_xent_impl.h"
#include "instantiate.h"
