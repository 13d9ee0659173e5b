"""The cffi builder of the C backend: API mode, the cdef read from kernels/fastnn.h.

setup.py names ``kernels/build_ffi.py:ffibuilder`` in ``cffi_modules``, so ``pip install .``
and ``pip install -e .`` compile the extension ``fastnn._c._kernels`` from kernels/*.c.

The build targets the architecture's baseline (x86-64: SSE2), never ``-march=native``, so
the extension runs on any CPU of the architecture: each hot kernel is compiled once more for
AVX2+FMA, AVX-512 and AMX-BF16 inside the same extension (isa_*.c and amx_gemm.c, each under
its own ``#pragma GCC target``), and the best copy this CPU and OS allow is chosen when the
extension loads (kernels/cpu.c; ``FASTNN_ISA`` forces a lower one at run time).

Environment variables read at build time:

* ``FASTNN_EXTRA_CFLAGS``: more compiler and linker flags, e.g. sanitizers (sanitize.sh).
* ``CC``: the compiler, as for any setuptools extension.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from cffi import FFI

KERNELS_DIR = Path(__file__).resolve().parent
HEADER = KERNELS_DIR / "fastnn.h"
MODULE_NAME = "fastnn._c._kernels"


def compile_flags() -> list:
    """-O3 and OpenMP for the architecture's baseline; the ISA copies pick their own targets.

    ``-g0`` drops the debug info that Python's own CFLAGS (``-g``) would put in a release
    build (13 MB instead of about 0.6 MB); FASTNN_EXTRA_CFLAGS comes last, so ``-g`` there wins.
    """
    flags = ["-O3", "-g0", "-std=gnu11", "-fopenmp", "-fno-math-errno", "-Wall",
             "-Wno-unused-function"]
    return flags + shlex.split(os.environ.get("FASTNN_EXTRA_CFLAGS", ""))


def link_flags() -> list:
    return ["-fopenmp"] + shlex.split(os.environ.get("FASTNN_EXTRA_CFLAGS", ""))


def cdef_source() -> str:
    """fastnn.h without its preprocessor lines, which cffi's parser does not take."""
    lines = HEADER.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _source_path(path: Path) -> str:
    """Relative to the working directory when possible: setuptools prefers relative sources."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


ffibuilder = FFI()
ffibuilder.cdef(cdef_source())
ffibuilder.set_source(
    MODULE_NAME,
    '#include "fastnn.h"',
    sources=[_source_path(p) for p in sorted(KERNELS_DIR.glob("*.c"))],
    include_dirs=[_source_path(KERNELS_DIR)],
    depends=[_source_path(p) for p in sorted(KERNELS_DIR.glob("*.h"))],
    extra_compile_args=compile_flags(),
    extra_link_args=link_flags(),
)

if __name__ == "__main__":  # a build in place, for development: python kernels/build_ffi.py
    from parallel_compile import every_compiler, object_cache  # kernels/, this script's folder

    # the sources side by side, objects of an unchanged source reused (kernels/parallel_compile.py)
    with every_compiler(object_cache(KERNELS_DIR.parent)):
        ffibuilder.compile(tmpdir=str(KERNELS_DIR.parent), verbose=True)
