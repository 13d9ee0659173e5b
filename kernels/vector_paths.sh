#!/usr/bin/env bash
# Test every instruction set's copy of the C kernels that this machine can run: the one
# extension holds a copy per set (kernels/isa.h), the best one runs by default, and
# FASTNN_ISA=<name> forces a lower one. The suite runs on backend "c" alone once per set
# below the best (the default run of the suite covers the best). A set this CPU or OS does
# not allow is reported with the reason and skipped.
#
#   bash kernels/vector_paths.sh [extra pytest arguments, e.g. -k gemm]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# (temp_copy.sh: FASTNN_SKIP_INSTALL_TESTS, as the install paths do not depend on the
# instruction set, and NOT_KERNEL_TESTS, the files of the Python around the kernels)
source kernels/temp_copy.sh

best=$(python -c "import fastnn.backends.c_backend as c; print(c.ISA)")
for isa in portable avx2 avx512 amx; do
    reason=$(python -c "import fastnn.backends.c_backend as c; print(c.isa_unavailable('$isa'))")
    if [ -n "$reason" ]; then
        echo "== $isa: not tested here ($reason)"
        continue
    fi
    if [ "$isa" = "$best" ]; then
        echo "== $isa: the default, tested by the main run of the suite"
        continue
    fi
    echo "== the $isa kernels (FASTNN_ISA=$isa)"
    got=$(FASTNN_ISA=$isa python -c "import fastnn.backends.c_backend as c; print(c.ISA)")
    if [ "$got" != "$isa" ]; then
        echo "FASTNN_ISA=$isa ran '$got'"
        exit 1
    fi
    FASTNN_ISA=$isa FASTNN_TEST_BACKENDS=c FASTNN_REQUIRE_BACKENDS=c \
        python -m pytest tests -q -p no:cacheprovider "${NOT_KERNEL_TESTS[@]}" "$@"
done
# Without AMX here, the AMX GEMM's packing, padding, blocking and epilogue still run: in a
# build whose tile instructions are emulated in scalar code (-DFASTNN_AMX_EMULATE).
# That build runs the AVX-512 float kernels: a CPU without AVX-512 cannot run it.
no_avx512=$(python -c "import fastnn.backends.c_backend as c; print(c.isa_unavailable('avx512'))")
if [ -n "$no_avx512" ]; then
    echo "== the AMX kernels, tile instructions emulated: not tested here (they run beside the" \
         "AVX-512 float kernels; $no_avx512)"
elif [ -n "$(python -c "import fastnn.backends.c_backend as c; print(c.isa_unavailable('amx'))")" ]; then
    temp_copy work
    echo "== the AMX kernels, tile instructions emulated (no AMX here)"
    (
        cd "$work"
        # (the AMX copy runs the AVX-512 float kernels: the AVX2 copy, tested above, is left
        # out of this build, ~20 s of compiling)
        FASTNN_EXTRA_CFLAGS="-DFASTNN_AMX_EMULATE -DFASTNN_NO_AVX2_COPY" \
            python kernels/build_ffi.py > build.log 2>&1 \
            || { cat build.log; exit 1; }
        # test_registry's check fails if backend c did not load (a build that cannot be
        # loaded, e.g. by its thread-local storage, would otherwise skip every c test)
        FASTNN_ISA=amx FASTNN_TEST_BACKENDS=c FASTNN_REQUIRE_BACKENDS=c \
            python -m pytest tests/test_bf16.py tests/test_bf16_operands.py \
            tests/test_registry.py::test_backends_required_here_are_available \
            -q -p no:cacheprovider "$@"
    )
fi
echo "vector_paths.sh: the suite passed on every instruction set this machine runs"
