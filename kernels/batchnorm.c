/* batchnorm.c - batch normalization and the activation kernels (batchnorm_impl.h) in float32
 * and float64. */
#include <math.h>

#include "internal.h"

#define FASTNN_SQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x)

#define FASTNN_TEMPLATE "batchnorm_impl.h"
#include "instantiate.h"
