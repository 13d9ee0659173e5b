#!/usr/bin/env bash
# Run the test suite against an AddressSanitizer + UndefinedBehaviorSanitizer build of the C
# kernels. The build happens in a temporary copy of the project (temp_copy.sh), so the
# installed or in-tree extension is left alone. Exits non-zero when a test fails or a
# sanitizer reports anything.
#
#   bash kernels/sanitize.sh [extra pytest arguments, e.g. -k softmax]
#
# Needs gcc (with libasan and libubsan) and the test dependencies (pytest, hypothesis).
set -euo pipefail

# The suite below runs the best copy of the kernels; where that is the AVX-512 one (as the
# project's own build reports), the AVX2 copy (a third of the build, the same templates, tested
# by vector_paths.sh) is left out: FASTNN_NO_AVX2_COPY.
leave_out=""
if python -c "import sys, fastnn.backends.c_backend as c; sys.exit(bool(c.isa_unavailable('avx512')))" \
        2>/dev/null; then
    leave_out="-DFASTNN_NO_AVX2_COPY"
fi

source "$(dirname "${BASH_SOURCE[0]}")/temp_copy.sh"
temp_copy work
cd "$work"

# -O1 -g: exact line numbers in reports; recover=none: the first UB report stops the test.
export FASTNN_EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined \
-fno-omit-frame-pointer -O1 -g $leave_out"
python kernels/build_ffi.py > build.log 2>&1 || { cat build.log; exit 1; }
# the C call entry of matmul (kernels/fastcall) too, so that the tests run it instrumented
# (with FASTNN_REQUIRE_BACKENDS=c, tests/test_matmul_entry.py fails if it did not load)
python kernels/build_fastcall.py >> build.log 2>&1 || { cat build.log; exit 1; }

libasan=$(gcc -print-file-name=libasan.so)
# libstdc++ right after it: ASan intercepts C++'s __cxa_throw, and finds the real one only if
# libstdc++ is loaded when ASan starts (else the first C++ exception of an extension module,
# e.g. matplotlib's ft2font, stops the process with "CHECK failed: real___cxa_throw")
libstdcxx=$(gcc -print-file-name=libstdc++.so)
log="$work/sanitize.log"
status=0
# ASan must be the first library loaded, before the Python binary's own allocator calls.
# --capture=sys: pytest captures Python's output only, so a sanitizer report written to
# file descriptor 2 just before the process exits is not swallowed with the capture.
# Leak checking is off: the interpreter itself keeps memory alive at exit by design.
# Backend "c" alone (FASTNN_TEST_BACKENDS): only the C kernels are instrumented, so the tests
# of the numba and numpy backends would run slower here and check nothing more.
LD_PRELOAD="$libasan $libstdcxx" \
ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
FASTNN_BACKEND=c FASTNN_TEST_BACKENDS=c FASTNN_REQUIRE_BACKENDS=c \
    python -m pytest tests -q -x --capture=sys -p no:cacheprovider -p no:warnings "$@" 2>&1 | tee "$log" \
    || status=$?

if grep -qE "ERROR: AddressSanitizer|runtime error:" "$log"; then
    echo "sanitizer report in the test output"
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "tests failed under the sanitizers (exit $status)"
    exit "$status"
fi
echo "sanitize.sh: the suite passed under ASan+UBSan with no reports"
