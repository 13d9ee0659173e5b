#!/usr/bin/env bash
# Build the C kernels with clang instead of GCC and run the suite on backend c against that
# build. README's table of build variables says `CC=clang` works (with OpenMP); a clang build
# holds only the portable copy (the other copies need GCC's target pragmas, kernels/README.md),
# whose vector code takes simd.h's clang branches (splat, horizontal sums, transpose through
# memory): nothing else compiles those. The build happens in a temporary copy (temp_copy.sh),
# so the installed or in-tree extension is left alone. Exits non-zero when the build or a test
# fails, or when the build holds another copy than the portable one, or runs another.
#
#   bash kernels/clang_build.sh [extra pytest arguments, e.g. -k gemm]
#
# Needs clang and its OpenMP runtime (Debian: clang, libomp-dev); with CI set and clang
# missing, it installs them with apt-get (.ci/run: CI installs what it needs itself).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v clang > /dev/null; then
    if [ -n "${CI:-}" ] && command -v apt-get > /dev/null; then
        echo "== installing clang and libomp-dev (apt-get)"
        apt-get install -y -q clang libomp-dev > /dev/null \
            || { apt-get update -q > /dev/null && apt-get install -y -q clang libomp-dev > /dev/null; }
    else
        echo "clang_build.sh: clang not found (Debian: apt-get install clang libomp-dev)"
        exit 1
    fi
fi

# (temp_copy.sh also sets NOT_KERNEL_TESTS: the files of the Python around the kernels)
source kernels/temp_copy.sh
temp_copy work
cd "$work"
echo "== the C kernels built by $(clang --version | head -1)"
export CC=clang LDSHARED="clang -shared"
python kernels/build_ffi.py > build.log 2>&1 || { cat build.log; exit 1; }
python kernels/build_fastcall.py >> build.log 2>&1 || { cat build.log; exit 1; }
grep -E "warning:" build.log || true  # shown, not fatal: clang's -Wall differs from GCC's
report=$(python -c "import fastnn.backends.c_backend as c; print(c.ISA); print(*c.isa_report(), sep='\n')")
echo "$report"
if [ "$(echo "$report" | head -1)" != "portable" ] ||
        ! echo "$report" | grep -q "; built for portable$"; then
    echo "clang_build.sh: expected a build of the portable copy alone, running it"
    exit 1
fi
# test_registry's check fails if backend c did not load (a build that cannot be loaded would
# otherwise skip every c test); tests/test_matmul_entry.py fails if the call entry did not.
FASTNN_TEST_BACKENDS=c FASTNN_REQUIRE_BACKENDS=c \
    python -m pytest tests -q -p no:cacheprovider "${NOT_KERNEL_TESTS[@]}" \
    tests/test_registry.py::test_backends_required_here_are_available "$@"
echo "clang_build.sh: the suite passed on the kernels built by clang"
