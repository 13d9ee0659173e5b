#!/usr/bin/env bash
# Test the vector code paths this CPU does not take by default: simd.h has three (AVX-512,
# AVX2+FMA, portable) and a normal build compiles only the widest one the CPU has. Each path
# is built in a temporary copy of the project (temp_copy.sh) and the suite runs on backend
# "c" alone. A path this CPU cannot run (AVX2 on a CPU without it) is reported and skipped.
#
#   bash kernels/vector_paths.sh [extra pytest arguments, e.g. -k gemm]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/temp_copy.sh"

# Runs the suite against one build: $1 the path simd.h must report, then the build's
# environment (VAR=value ...).
test_path() {
    local expected=$1 work
    shift
    temp_copy work
    (
        cd "$work"
        env "$@" python kernels/build_ffi.py > build.log 2>&1 || { cat build.log; exit 1; }
        built=$(python -c "import fastnn.backends.c_backend as c; print(c.SIMD)")
        if [ "$built" != "$expected" ]; then
            echo "built the '$built' path, expected '$expected'"
            exit 1
        fi
        echo "== the $expected vector path"
        FASTNN_TEST_BACKENDS=c FASTNN_REQUIRE_BACKENDS=c \
            python -m pytest tests -q -p no:cacheprovider "${pytest_args[@]}"
    )
}

pytest_args=("$@")
if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo; then
    # -march=native with AVX-512 switched off: the AVX2+FMA path of this CPU.
    test_path avx2 FASTNN_EXTRA_CFLAGS="-mno-avx512f"
else
    echo "this CPU has no AVX2+FMA: that path is not tested here"
fi
test_path portable FASTNN_PORTABLE=1
echo "vector_paths.sh: the suite passed on every vector path"
