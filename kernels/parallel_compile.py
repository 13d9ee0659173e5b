"""Compile the C sources of an extension side by side, one compiler process per core.

distutils (setuptools' copy) compiles the sources of one extension one after the other; the
C backend's three instruction-set copies (isa_portable.c, isa_avx2.c, isa_avx512.c) take
about 19 s each here at -O3, three quarters of a 74 s build on one core. ``setup.py`` and
the in-place build ``python kernels/build_ffi.py`` run them on every available core instead
(two here: ~40 s); ``kernels/build_fastcall.py`` has one source and does not need it. The
objects and the link are those of the sequential build, in the same order.

It replaces ``CCompiler.compile`` by the same steps with the per-source loop on a thread pool
(each source is one compiler process, so the threads only wait). It uses the three helpers
that ``CCompiler.compile`` itself calls (``_setup_compile``, ``_get_cc_args``, ``_compile``)
and leaves a compiler alone when it lacks one of them or overrides ``compile`` itself (MSVC):
such a compiler builds sequentially as before. ``FASTNN_BUILD_JOBS`` sets the number of
compiler processes (1: sequential).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

_HELPERS = ("_setup_compile", "_get_cc_args", "_compile")


def build_jobs() -> int:
    """FASTNN_BUILD_JOBS if set (a whole number >= 1), else the cores this process may use."""
    text = os.environ.get("FASTNN_BUILD_JOBS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"environment variable FASTNN_BUILD_JOBS: expected a whole "
                             f"number >= 1, got {text!r}")
        return int(text)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _parallel_compile(compiler, sources, output_dir=None, macros=None, include_dirs=None,
                      debug=0, extra_preargs=None, extra_postargs=None, depends=None):
    """CCompiler.compile with its loop over the sources on build_jobs() threads."""
    macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
    todo = [obj for obj in objects if obj in build]

    def compile_one(obj):
        source, extension = build[obj]
        compiler._compile(obj, source, extension, cc_args, extra_postargs, pp_opts)

    jobs = min(build_jobs(), len(todo))
    if jobs < 2:
        for obj in todo:
            compile_one(obj)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(compile_one, todo))  # the first failure is raised here
    return objects  # all of them, as CCompiler.compile returns


def _compiles_in_parallel(compiler_class) -> bool:
    from distutils import ccompiler  # setuptools' copy once setuptools is imported
    return (compiler_class.compile is ccompiler.CCompiler.compile
            and all(hasattr(compiler_class, name) for name in _HELPERS))


def install(compiler) -> None:
    """Make this compiler object (a distutils CCompiler) compile its sources in parallel."""
    if _compiles_in_parallel(type(compiler)):
        compiler.compile = _parallel_compile.__get__(compiler)


@contextlib.contextmanager
def every_compiler():
    """Within the block, every distutils compiler compiles in parallel (the in-place builds,
    whose compiler cffi or setuptools make out of reach)."""
    import setuptools  # noqa: F401 - makes ``distutils`` setuptools' copy
    from distutils import ccompiler
    original = ccompiler.CCompiler.compile
    ccompiler.CCompiler.compile = _parallel_compile
    try:
        yield
    finally:
        ccompiler.CCompiler.compile = original
