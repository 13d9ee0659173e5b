# Sourced by the scripts that test other builds of the C kernels (sanitize.sh,
# vector_paths.sh, clang_build.sh): copies the project into a fresh temporary directory,
# without git, build products or the built extension, so the installed or in-tree extension
# is left alone.
#
#   temp_copy VARIABLE   sets VARIABLE to the copy's path; the copy is removed at exit.
temp_copy() {
    local repo copy
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    copy=$(mktemp -d "${TMPDIR:-/tmp}/fastnn-build.XXXXXX")
    # The whole work tree: tests read examples/ and data files.
    tar -C "$repo" --exclude=./.git --exclude=./build --exclude='*.egg-info' \
        --exclude=__pycache__ --exclude=.pytest_cache --exclude=.benchmarks -cf - . \
        | tar -C "$copy" -xf -
    rm -f "$copy"/fastnn/_c/_kernels.* "$copy"/fastnn/_c/_fastcall.* "$copy"/fastnn/_c/*BUILD_ERROR.txt \
        "$copy"/kernels/*.o
    TEMP_COPIES+=("$copy")
    trap 'rm -rf "${TEMP_COPIES[@]}"' EXIT
    printf -v "$1" '%s' "$copy"
}
TEMP_COPIES=()
# A copy tests another build of the C kernels; the install paths (tests/test_install.py, a few
# minutes of venvs and builds) are tested once by the normal run, not again under each build.
export FASTNN_SKIP_INSTALL_TESTS=1

# The test files of the Python around the kernels (command line, caches, dataset files, the
# backend registry, input validation, callbacks, MPI plumbing, the benchmarks' plumbing,
# Numba's team), as pytest arguments that leave them out: the default run of the suite tests
# them once, and every kernel they reach is tested under each other build (instruction set,
# compiler) by the contract, GEMM, training-loop and bfloat16 files.
NOT_KERNEL_TESTS=()
for file in test_cli.py test_cli_trial.py test_cache.py test_datasets_download.py \
            test_datasets_examples.py test_registry.py test_validation.py test_callbacks.py \
            test_distributed.py test_bench_sweep.py test_bench_training.py test_numba_team.py; do
    NOT_KERNEL_TESTS+=(--ignore "tests/$file")
done
