"""Compile the C sources of an extension side by side, one compiler process per core, and
reuse the object of a source compiled before with the same compiler, flags and text.

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

The object cache (``build/object-cache`` of the project, as ccache does it in its
preprocessor mode): an object is kept under the SHA-256 of the compiler's version line, its
command, the current folder, the source as the preprocessor outputs it (every header it
includes, the macros of the flags, the file paths in the line markers) and the whole text of
each file those line markers name. (The preprocessor's output alone missed edits inside a
branch that only the compile takes: ``#pragma GCC target`` defines ``__AVX512F__`` for the
compile, not for ``-E``, so simd.h's AVX-512 branch and the code under
``FASTNN_SIMD_FUSED_FMA`` were not in it, and an edit there that kept the line count linked
the object of the text before it.) So a source is compiled again whenever anything that can
change its object changed, and a build with the same inputs (a reinstall,
an install after an editable one) links the objects of the last one instead of compiling
them for ~40 s. ``setup.py`` forces distutils to compile every source (its timestamps do not
see a flag change); this cache is what keeps that cheap. The preprocessor pass costs ~0.15 s
a source. Only a Unix compiler (``compiler_so``) is cached; the newest
``CACHED_OBJECTS`` objects are kept; ``rm -rf build`` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

#: Objects the cache keeps (the newest by use): a build makes 13 (11 sources of kernels/, the
#: cffi module, kernels/fastcall).
CACHED_OBJECTS = 64

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


def _named_files(preprocessed: bytes) -> list:
    """The files that the line markers of a preprocessor's output name (``# 12 "path" ...``,
    GCC's and clang's), each once, in order of their first marker."""
    seen = {}
    for line in preprocessed.splitlines():
        if line.startswith(b"# ") and b'"' in line:
            start = line.index(b'"') + 1
            end = line.find(b'"', start)
            if end > start:
                seen.setdefault(line[start:end].decode(errors="surrogateescape"), None)
    return list(seen)


class ObjectCache:
    """Objects by the SHA-256 of what makes them (see the module docstring), in ``folder``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._versions = {}

    def _version(self, program: str) -> Optional[str]:
        """The compiler's ``--version`` output, None when it does not answer (CC=false)."""
        if program not in self._versions:
            try:
                done = subprocess.run([program, "--version"], capture_output=True, timeout=60)
                self._versions[program] = done.stdout.decode(errors="replace") \
                    if done.returncode == 0 and done.stdout else None
            except (OSError, subprocess.SubprocessError):
                self._versions[program] = None
        return self._versions[program]

    def key(self, compiler, source: str, cc_args, extra_postargs) -> Optional[str]:
        """The key of source's object, None when it cannot be had (no Unix compiler, no
        version, a preprocessor error: the compile then runs and reports it)."""
        command = list(getattr(compiler, "compiler_so", None) or [])
        version = self._version(command[0]) if command else None
        if version is None:
            return None
        flags = [arg for arg in cc_args if arg != "-c"]
        try:
            done = subprocess.run(command + flags + ["-E", source] + list(extra_postargs),
                                  capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError):
            return None
        if done.returncode != 0:
            return None
        digest = hashlib.sha256()
        # the folder too: with -g, an object records the folder it was compiled in
        for part in (version, "\0".join(command + list(cc_args) + list(extra_postargs)),
                     os.getcwd()):
            digest.update(part.encode())
            digest.update(b"\0")
        digest.update(done.stdout)
        for path in _named_files(done.stdout):
            try:
                text = Path(path).read_bytes()
            except OSError:  # "<built-in>", "<command-line>"
                continue
            digest.update(path.encode(errors="surrogateescape") + b"\0")
            digest.update(hashlib.sha256(text).digest())
        return digest.hexdigest()

    def fetch(self, key: str, obj: str) -> bool:
        """Copy the object kept under key to obj; False when none is kept."""
        kept = self.folder / f"{key}.o"
        try:
            shutil.copyfile(kept, obj)
            os.utime(kept)  # the newest by use
        except OSError:
            return False
        return True

    def keep(self, key: str, obj: str) -> None:
        """Keep obj under key (whole or not at all: written aside, then renamed), and drop
        the oldest objects past CACHED_OBJECTS. A cache that cannot be written is skipped."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, aside = tempfile.mkstemp(dir=self.folder, suffix=".part")
            os.close(handle)
            try:
                shutil.copyfile(obj, aside)
                os.replace(aside, self.folder / f"{key}.o")
            finally:
                Path(aside).unlink(missing_ok=True)  # left only when the copy failed
            kept = sorted(self.folder.glob("*.o"), key=lambda path: path.stat().st_mtime)
            for old in kept[:-CACHED_OBJECTS]:
                old.unlink(missing_ok=True)
        except OSError:
            pass


def _parallel_compile(compiler, sources, output_dir=None, macros=None, include_dirs=None,
                      debug=0, extra_preargs=None, extra_postargs=None, depends=None,
                      cache: Optional[ObjectCache] = None):
    """CCompiler.compile with its loop over the sources on build_jobs() threads, each object
    taken from ``cache`` when it holds it."""
    macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
    todo = [obj for obj in objects if obj in build]

    def compile_one(obj):
        source, extension = build[obj]
        key = cache.key(compiler, source, cc_args, extra_postargs) if cache else None
        if key is not None and cache.fetch(key, obj):
            return
        compiler._compile(obj, source, extension, cc_args, extra_postargs, pp_opts)
        if key is not None:
            cache.keep(key, obj)

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


def object_cache(project) -> Path:
    """The object cache's folder of the project whose root is ``project``."""
    return Path(project) / "build" / "object-cache"


def _compile_with(cache_folder):
    """CCompiler.compile in parallel, with the objects kept in ``cache_folder`` (None: no
    cache)."""
    cache = ObjectCache(cache_folder) if cache_folder is not None else None

    def compile(compiler, sources, *args, **kwargs):
        return _parallel_compile(compiler, sources, *args, cache=cache, **kwargs)
    return compile


def install(compiler, cache_folder=None) -> None:
    """Make this compiler object (a distutils CCompiler) compile its sources in parallel,
    reusing the objects kept in ``cache_folder`` (None: no cache)."""
    if _compiles_in_parallel(type(compiler)):
        compiler.compile = _compile_with(cache_folder).__get__(compiler)


@contextlib.contextmanager
def every_compiler(cache_folder=None):
    """Within the block, every distutils compiler compiles in parallel (the in-place builds,
    whose compiler cffi or setuptools make out of reach), reusing the objects kept in
    ``cache_folder`` (None: no cache)."""
    import setuptools  # noqa: F401 - makes ``distutils`` setuptools' copy
    from distutils import ccompiler
    original = ccompiler.CCompiler.compile
    ccompiler.CCompiler.compile = _compile_with(cache_folder)
    try:
        yield
    finally:
        ccompiler.CCompiler.compile = original
