/* fastcall.c - the C backend's call entry for a plain matmul: the CPython extension
 * fastnn._c._fastcall.
 *
 * fastnn.ops.matmul on small arrays costs more in its Python call path (type, dtype and flag
 * checks, np.empty, three cffi from_buffer and the cffi call: about 0.7 us in float32, 4.3 us
 * for bfloat16 operands) than in the GEMM. matmul() below does the same work in C for the
 * obviously valid cases, then calls the SAME exported GEMM the cffi wrapper calls
 * (fastnn_matmul_f32 / _f64 / _bf16 / _bf16_operands of kernels/fastnn.h, which dispatch to
 * the instruction set chosen at load). Their addresses come from the cffi extension at import
 * (bind()), so this module links against no kernel and holds no copy of one.
 *
 * matmul(a, b, trans_a, trans_b, out, bfloat16) -> out, or None when the call is not plain:
 *   a, b   exactly numpy.ndarray (no subclass), 2-D, one dtype: the native float32 or float64
 *          (the dtype objects np.dtype(np.float32) / np.dtype(np.float64) themselves) or
 *          ml_dtypes' bfloat16 (a 2-byte dtype named "bfloat16", as
 *          fastnn.precision.is_bfloat16_dtype tells it; ml_dtypes is not imported),
 *          aligned (read-only is fine), C-contiguous, or Fortran-contiguous: a transposed view
 *          such as w.T, read as the C-ordered array it views with its transpose flag flipped,
 *          as BLAS reads it and as ops.matmul's Python path does (_untransposed), so the same
 *          kernel call and the same bits; a (N, K), or (K, N) if trans_a; b (K, M), or (M, K)
 *          if trans_b; N, K, M >= 1;
 *   trans_a, trans_b  True, False or an exact int;
 *   out    None (a new (N, M) array of the operands' dtype is returned), or exactly
 *          numpy.ndarray (N, M) of that dtype (or float32, for bfloat16 operands: their
 *          float32 sums; or bfloat16, for float32 operands in bfloat16 precision: their
 *          result rounded, fastnn_matmul_bf16_rounded), C-contiguous, aligned, writeable and
 *          sharing no byte with a or b;
 *   bfloat16  True: float32 operands multiply in bfloat16 matmul precision
 *          (fastnn_matmul_bf16), and float64 ones are not plain (the caller decides: an
 *          error for an explicit precision, float64 for the context's); False: float32
 *          precision. Bfloat16 operands multiply as they are either way.
 * Anything else returns None before any work, and the caller (fastnn.ops.matmul) takes its
 * Python path, whose checks raise the errors that name the argument: no message lives here.
 * None is also returned when the kernel could not allocate its scratch memory (outputs not
 * valid), so that the Python path runs it again and reports the failure in its words.
 * The precision's name and the current backend are the caller's to check.
 *
 * The GIL is released while the kernel runs, as cffi releases it around the same call.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <stdint.h>

#include "fastnn.h"

/* The exported GEMMs, bound at import: the prototypes are those of fastnn.h. */
static __typeof__(&fastnn_matmul_f32) matmul_f32 = NULL;
static __typeof__(&fastnn_matmul_f64) matmul_f64 = NULL;
static __typeof__(&fastnn_matmul_bf16) matmul_bf16 = NULL;
static __typeof__(&fastnn_matmul_bf16_operands) matmul_bf16_operands = NULL;
static __typeof__(&fastnn_matmul_bf16_rounded) matmul_bf16_rounded = NULL;

/* The native float dtypes: a call is plain when its arrays have exactly these, or the
 * bfloat16 dtype below. */
static PyArray_Descr *float32_descr = NULL;
static PyArray_Descr *float64_descr = NULL;
/* ml_dtypes' bfloat16 dtype (one object for every array of it), the first time one is seen;
 * a reference is held. */
static PyArray_Descr *bfloat16_descr = NULL;

/* Whether descr, the dtype of an array of 2-byte items, is bfloat16: named "bfloat16", as
 * fastnn.precision.is_bfloat16_dtype says, which is asked of the first such dtype only. */
static int is_bfloat16(PyArray_Descr *descr) {
    if (descr == bfloat16_descr) {
        return 1;
    }
    if (bfloat16_descr != NULL) {
        return 0;  /* another 2-byte dtype (float16, or a second "bfloat16": the Python path) */
    }
    PyObject *name = PyObject_GetAttrString((PyObject *)descr, "name");
    int found = name != NULL && PyUnicode_Check(name)
                && PyUnicode_CompareWithASCIIString(name, "bfloat16") == 0;
    Py_XDECREF(name);
    PyErr_Clear();  /* a failed lookup is not plain, not an error */
    if (found) {
        Py_INCREF(descr);
        bfloat16_descr = descr;
    }
    return found;
}

/* 0 or 1 for True, False and exact ints; -1 for anything else (the Python path decides). */
static int flag_value(PyObject *flag) {
    if (flag == Py_False) {
        return 0;
    }
    if (flag == Py_True) {
        return 1;
    }
    if (PyLong_CheckExact(flag)) {
        return PyObject_IsTrue(flag);  /* an int's truth value cannot fail */
    }
    return -1;
}

/* a as a plain operand: an exact 2-D ndarray of dtype descr, aligned, and C-contiguous
 * (*flipped = 0) or else Fortran-contiguous (*flipped = 1: a transposed view, whose data is
 * the C-ordered array of its transpose). */
static PyArrayObject *plain_operand(PyObject *object, PyArray_Descr *descr, int *flipped) {
    if (!Py_IS_TYPE(object, &PyArray_Type)) {
        return NULL;
    }
    PyArrayObject *array = (PyArrayObject *)object;
    if (PyArray_NDIM(array) != 2 || PyArray_DESCR(array) != descr
        || !PyArray_CHKFLAGS(array, NPY_ARRAY_ALIGNED)) {
        return NULL;
    }
    if (PyArray_CHKFLAGS(array, NPY_ARRAY_C_CONTIGUOUS)) {
        *flipped = 0;
    } else if (PyArray_CHKFLAGS(array, NPY_ARRAY_F_CONTIGUOUS)) {
        *flipped = 1;
    } else {
        return NULL;
    }
    return array;
}

/* Whether the bytes of two contiguous arrays overlap. */
static int overlap(PyArrayObject *x, PyArrayObject *y) {
    const char *x_start = PyArray_BYTES(x), *y_start = PyArray_BYTES(y);
    const char *x_end = x_start + PyArray_NBYTES(x), *y_end = y_start + PyArray_NBYTES(y);
    return x_start < y_end && y_start < x_end;
}

static PyObject *fastcall_matmul(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "matmul() takes 6 arguments (a, b, trans_a, trans_b, "
                     "out, bfloat16), got %zd", nargs);
        return NULL;
    }
    if (matmul_f32 == NULL || !Py_IS_TYPE(args[0], &PyArray_Type)) {
        Py_RETURN_NONE;
    }
    PyArray_Descr *descr = PyArray_DESCR((PyArrayObject *)args[0]);
    int bf16_precision = flag_value(args[5]);
    int bf16_operands = descr != float32_descr && descr != float64_descr
                        && PyArray_ITEMSIZE((PyArrayObject *)args[0]) == 2 && is_bfloat16(descr);
    if (!(descr == float32_descr || bf16_operands || (descr == float64_descr && !bf16_precision))
        || bf16_precision < 0) {
        Py_RETURN_NONE;
    }
    int a_flipped = 0, b_flipped = 0;
    PyArrayObject *a = plain_operand(args[0], descr, &a_flipped);
    PyArrayObject *b = plain_operand(args[1], descr, &b_flipped);
    int trans_a = flag_value(args[2]), trans_b = flag_value(args[3]);
    if (a == NULL || b == NULL || trans_a < 0 || trans_b < 0) {
        Py_RETURN_NONE;
    }
    /* out (N, M) = op(a) (N, K) @ op(b) (K, M); a flipped operand is the C-ordered array of
     * its transpose, so its shape is reversed and its transpose flag flipped (op(a) is the
     * same matrix) */
    npy_intp *a_shape = PyArray_DIMS(a), *b_shape = PyArray_DIMS(b);
    npy_intp a_dims[2] = {a_shape[a_flipped], a_shape[1 - a_flipped]};
    npy_intp b_dims[2] = {b_shape[b_flipped], b_shape[1 - b_flipped]};
    trans_a ^= a_flipped;
    trans_b ^= b_flipped;
    npy_intp n = a_dims[trans_a ? 1 : 0], k = a_dims[trans_a ? 0 : 1];
    npy_intp k_b = b_dims[trans_b ? 1 : 0], m = b_dims[trans_b ? 0 : 1];
    if (k != k_b || n == 0 || k == 0 || m == 0) {
        Py_RETURN_NONE;
    }

    PyObject *out_arg = args[4];
    PyArrayObject *out;
    int rounded = 0; /* float32 operands, a bfloat16 out */
    if (out_arg == Py_None) {
        npy_intp out_dims[2] = {n, m};
        Py_INCREF(descr);  /* PyArray_NewFromDescr steals a reference */
        out = (PyArrayObject *)PyArray_NewFromDescr(&PyArray_Type, descr, 2, out_dims, NULL,
                                                    NULL, 0, NULL);
        if (out == NULL) {
            return NULL;  /* MemoryError, as np.empty would raise */
        }
    } else {
        if (!Py_IS_TYPE(out_arg, &PyArray_Type)) {
            Py_RETURN_NONE;
        }
        out = (PyArrayObject *)out_arg;
        PyArray_Descr *out_descr = PyArray_DESCR(out);
        /* a float32 out of bfloat16 operands, a bfloat16 one of float32 operands in bfloat16
         * precision, or the operands' dtype */
        rounded = descr == float32_descr && bf16_precision && out_descr != descr
                  && PyArray_ITEMSIZE(out) == 2 && is_bfloat16(out_descr);
        if (PyArray_NDIM(out) != 2 || PyArray_DIM(out, 0) != n || PyArray_DIM(out, 1) != m
            || (out_descr != descr && !(bf16_operands && out_descr == float32_descr)
                && !rounded)
            || !PyArray_CHKFLAGS(out, NPY_ARRAY_CARRAY) || overlap(out, a) || overlap(out, b)) {
            Py_RETURN_NONE;
        }
        Py_INCREF(out);
    }

    int status;
    if (bf16_operands) {
        /* the sums rounded to bfloat16 into a bfloat16 out, or float32 into a float32 one */
        void *c = PyArray_DATA(out);
        int out_bf16 = PyArray_DESCR(out) == descr;
        const uint16_t *x = PyArray_DATA(a), *y = PyArray_DATA(b);
        Py_BEGIN_ALLOW_THREADS
        status = matmul_bf16_operands(c, out_bf16, x, y, n, k, m, trans_a, trans_b);
        Py_END_ALLOW_THREADS
    } else if (rounded) {
        uint16_t *c = PyArray_DATA(out);
        const float *x = PyArray_DATA(a), *y = PyArray_DATA(b);
        Py_BEGIN_ALLOW_THREADS
        status = matmul_bf16_rounded(c, x, y, n, k, m, trans_a, trans_b);
        Py_END_ALLOW_THREADS
    } else if (descr == float32_descr) {
        float *c = PyArray_DATA(out);
        const float *x = PyArray_DATA(a), *y = PyArray_DATA(b);
        __typeof__(matmul_f32) gemm = bf16_precision ? matmul_bf16 : matmul_f32;
        Py_BEGIN_ALLOW_THREADS
        status = gemm(c, x, y, n, k, m, trans_a, trans_b);
        Py_END_ALLOW_THREADS
    } else {
        double *c = PyArray_DATA(out);
        const double *x = PyArray_DATA(a), *y = PyArray_DATA(b);
        Py_BEGIN_ALLOW_THREADS
        status = matmul_f64(c, x, y, n, k, m, trans_a, trans_b);
        Py_END_ALLOW_THREADS
    }
    if (status != FASTNN_OK) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return (PyObject *)out;
}

/* bind(f32, f64, bf16, bf16_operands, bf16_rounded): the addresses of the kernels matmul()
 * calls, fastnn_matmul_f32, _f64, _bf16, _bf16_operands and _bf16_rounded, as integers (the
 * cffi extension's ffi.cast("uintptr_t", ffi.addressof(lib, name))). */
static PyObject *fastcall_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "bind() takes 5 arguments, got %zd", nargs);
        return NULL;
    }
    void *address[5];
    for (int i = 0; i < 5; i++) {
        address[i] = PyLong_AsVoidPtr(args[i]);
        if (address[i] == NULL && PyErr_Occurred()) {
            return NULL;
        }
        if (address[i] == NULL) {
            PyErr_SetString(PyExc_ValueError, "bind(): a kernel address is 0");
            return NULL;
        }
    }
    /* a data pointer to a function pointer: what dlsym() users do, defined on every ABI we
     * build for; matmul_f32 last, as matmul() tests it for all five */
    matmul_f64 = (__typeof__(matmul_f64))address[1];
    matmul_bf16 = (__typeof__(matmul_bf16))address[2];
    matmul_bf16_operands = (__typeof__(matmul_bf16_operands))address[3];
    matmul_bf16_rounded = (__typeof__(matmul_bf16_rounded))address[4];
    matmul_f32 = (__typeof__(matmul_f32))address[0];
    Py_RETURN_NONE;
}

static PyMethodDef fastcall_methods[] = {
    {"matmul", (PyCFunction)(void (*)(void))fastcall_matmul, METH_FASTCALL,
     "matmul(a, b, trans_a, trans_b, out, bfloat16) -> out, or None for the Python path "
     "(fastcall.c)"},
    {"bind", (PyCFunction)(void (*)(void))fastcall_bind, METH_FASTCALL,
     "bind(f32, f64, bf16, bf16_operands, bf16_rounded): the addresses of the kernels "
     "matmul() calls"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastcall_module = {
    PyModuleDef_HEAD_INIT, "_fastcall",
    "The C backend's call entry for a plain matmul (kernels/fastcall/fastcall.c).", -1,
    fastcall_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    import_array();  /* returns NULL with the error set when NumPy's C API cannot load */
    float32_descr = PyArray_DescrFromType(NPY_FLOAT32);
    float64_descr = PyArray_DescrFromType(NPY_FLOAT64);
    if (float32_descr == NULL || float64_descr == NULL) {
        return NULL;
    }
    return PyModule_Create(&fastcall_module);
}
