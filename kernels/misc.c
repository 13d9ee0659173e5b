/* misc.c - mse, one_hot, count_correct and all_finite (misc_impl.h) in float32 and float64. */
#include <string.h>

#include "internal.h"

#define FASTNN_TEMPLATE "misc_impl.h"
#include "instantiate.h"
