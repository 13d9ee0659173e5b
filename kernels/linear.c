/* linear.c - dense layer kernels (linear_impl.h) in float32 and float64. */
#include "internal.h"

#define FASTNN_TEMPLATE "linear_impl.h"
#include "instantiate.h"
