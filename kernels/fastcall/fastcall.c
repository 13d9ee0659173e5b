/* fastcall.c - the C backend's call entry for a plain matmul: the CPython extension
 * fastnn._c._fastcall.
 *
 * fastnn.ops.matmul on small arrays costs more in its Python call path (type, dtype and flag
 * checks, np.empty, three cffi from_buffer and the cffi call: about 0.7 us) than in the GEMM.
 * matmul() below does the same work in C for the one obviously valid case, then calls the
 * SAME exported GEMM the cffi wrapper calls (fastnn_matmul_f32 / _f64 of kernels/fastnn.h,
 * which dispatch to the instruction set chosen at load). Their addresses come from the cffi
 * extension at import (bind()), so this module links against no kernel and holds no copy of
 * one.
 *
 * matmul(a, b, trans_a, trans_b, out) -> out, or None when the call is not the plain case:
 *   a, b   exactly numpy.ndarray (no subclass), 2-D, one dtype: the native float32 or float64
 *          (the dtype objects np.dtype(np.float32) / np.dtype(np.float64) themselves),
 *          aligned (read-only is fine), C-contiguous, or Fortran-contiguous: a transposed view
 *          such as w.T, read as the C-ordered array it views with its transpose flag flipped,
 *          as BLAS reads it and as ops.matmul's Python path does (_untransposed), so the same
 *          kernel call and the same bits; a (N, K), or (K, N) if trans_a; b (K, M), or (M, K)
 *          if trans_b; N, K, M >= 1;
 *   trans_a, trans_b  True, False or an exact int;
 *   out    None (a new (N, M) array is returned), or exactly numpy.ndarray (N, M) of that
 *          dtype, C-contiguous, aligned, writeable and sharing no byte with a or b.
 * Anything else returns None before any work, and the caller (fastnn.ops.matmul) takes its
 * Python path, whose checks raise the errors that name the argument: no message lives here.
 * None is also returned when the kernel could not allocate its scratch memory (outputs not
 * valid), so that the Python path runs it again and reports the failure in its words.
 * The precision (float32 only) and the current backend are the caller's to check.
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

/* The native float dtypes: a call is plain when its arrays have exactly these. */
static PyArray_Descr *float32_descr = NULL;
static PyArray_Descr *float64_descr = NULL;

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
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "matmul() takes 5 arguments (a, b, trans_a, trans_b, "
                     "out), got %zd", nargs);
        return NULL;
    }
    if (matmul_f32 == NULL || !Py_IS_TYPE(args[0], &PyArray_Type)) {
        Py_RETURN_NONE;
    }
    PyArray_Descr *descr = PyArray_DESCR((PyArrayObject *)args[0]);
    if (descr != float32_descr && descr != float64_descr) {
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
        if (PyArray_NDIM(out) != 2 || PyArray_DIM(out, 0) != n || PyArray_DIM(out, 1) != m
            || PyArray_DESCR(out) != descr || !PyArray_CHKFLAGS(out, NPY_ARRAY_CARRAY)
            || overlap(out, a) || overlap(out, b)) {
            Py_RETURN_NONE;
        }
        Py_INCREF(out);
    }

    int status;
    if (descr == float32_descr) {
        float *c = PyArray_DATA(out);
        const float *x = PyArray_DATA(a), *y = PyArray_DATA(b);
        Py_BEGIN_ALLOW_THREADS
        status = matmul_f32(c, x, y, n, k, m, trans_a, trans_b);
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

/* bind(matmul_f32_address, matmul_f64_address): the kernels matmul() calls, as integers
 * (the cffi extension's ffi.cast("uintptr_t", ffi.addressof(lib, name))). */
static PyObject *fastcall_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "bind() takes 2 arguments, got %zd", nargs);
        return NULL;
    }
    void *f32 = PyLong_AsVoidPtr(args[0]);
    if (f32 == NULL && PyErr_Occurred()) {
        return NULL;
    }
    void *f64 = PyLong_AsVoidPtr(args[1]);
    if (f64 == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (f32 == NULL || f64 == NULL) {
        PyErr_SetString(PyExc_ValueError, "bind(): a kernel address is 0");
        return NULL;
    }
    /* a data pointer to a function pointer: what dlsym() users do, defined on every ABI we
     * build for */
    matmul_f64 = (__typeof__(matmul_f64))f64;
    matmul_f32 = (__typeof__(matmul_f32))f32;
    Py_RETURN_NONE;
}

static PyMethodDef fastcall_methods[] = {
    {"matmul", (PyCFunction)(void (*)(void))fastcall_matmul, METH_FASTCALL,
     "matmul(a, b, trans_a, trans_b, out) -> out, or None for the Python path (fastcall.c)"},
    {"bind", (PyCFunction)(void (*)(void))fastcall_bind, METH_FASTCALL,
     "bind(matmul_f32_address, matmul_f64_address): the kernels matmul() calls"},
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
