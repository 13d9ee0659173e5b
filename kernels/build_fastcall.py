"""The build of ``fastnn._c._fastcall``, the C backend's call entry for a plain matmul.

kernels/fastcall/fastcall.c is a small CPython extension (NumPy's C API, METH_FASTCALL) that
checks a matmul call and calls the cffi extension's own GEMM through its address (see the
file's header). setup.py builds it as a second optional extension next to the cffi one
(``pip install .`` and ``pip install -e .``): when it does not build (no NumPy headers, say),
fastnn works as before, through cffi, and the reason is written to
fastnn/_c/FASTCALL_BUILD_ERROR.txt (``fastnn info`` shows it).

It lives in its own folder because build_ffi.py compiles every ``kernels/*.c`` into the cffi
extension, which has no NumPy headers and needs none.

Environment variables read at build time, as for build_ffi.py:

* ``FASTNN_EXTRA_CFLAGS``: more compiler and linker flags, e.g. sanitizers (sanitize.sh).
* ``CC``: the compiler.

``python kernels/build_fastcall.py`` builds it in place (fastnn/_c/), for development and for
the sanitizer build (sanitize.sh); it exits non-zero when the build fails.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from setuptools import Extension

ROOT = Path(__file__).resolve().parent.parent
KERNELS_DIR = ROOT / "kernels"
MODULE_NAME = "fastnn._c._fastcall"
#: Relative to the project root, as setuptools wants sources.
SOURCE = "kernels/fastcall/fastcall.c"


def extension() -> Extension:
    """The extension, without NumPy's include folder yet (:func:`add_numpy_include`)."""
    extra = shlex.split(os.environ.get("FASTNN_EXTRA_CFLAGS", ""))
    return Extension(
        MODULE_NAME,
        sources=[SOURCE],
        include_dirs=["kernels"],  # fastnn.h, for the GEMMs' prototypes
        depends=["kernels/fastnn.h"],
        # gnu11: __typeof__ gives the pointers fastnn.h's prototypes
        extra_compile_args=["-O2", "-g0", "-std=gnu11", "-Wall"] + extra,
        extra_link_args=extra,
    )


def add_numpy_include(ext: Extension) -> None:
    """Add NumPy's C headers to ``ext``; called when it is built, so that a missing NumPy
    fails this optional extension alone (ImportError), not the whole installation."""
    import numpy

    ext.include_dirs.append(numpy.get_include())


def build_in_place() -> None:
    """Compile the extension into fastnn/_c/ of this source tree; raise when it fails."""
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    os.chdir(ROOT)
    ext = extension()
    add_numpy_include(ext)
    command = build_ext(Distribution({"ext_modules": [ext]}))
    command.inplace = True
    command.force = True
    command.ensure_finalized()
    command.run()


if __name__ == "__main__":
    build_in_place()
    sys.exit(0)
