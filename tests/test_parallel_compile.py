"""kernels/parallel_compile.py: the C sources of an extension compiled side by side."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

setuptools = pytest.importorskip("setuptools")

HELPER = Path(__file__).resolve().parent.parent / "kernels" / "parallel_compile.py"


@pytest.fixture
def parallel_compile(monkeypatch):
    monkeypatch.delenv("FASTNN_BUILD_JOBS", raising=False)
    spec = importlib.util.spec_from_file_location("parallel_compile", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def new_compiler():
    from distutils import ccompiler  # setuptools' copy: setuptools is imported above
    return ccompiler.new_compiler()


def test_sources_compile_at_once_into_the_objects_of_the_sequential_build(
        parallel_compile, tmp_path, monkeypatch):
    """Two sources, two jobs: both compiler calls run at the same time (each waits for the
    other at a barrier, which fails after 30 s if they ran one after the other), and
    compile returns every object, in the order of the sources."""
    monkeypatch.setenv("FASTNN_BUILD_JOBS", "2")
    compiler = new_compiler()
    sources = []
    for name in ("one", "two"):
        source = tmp_path / f"{name}.c"
        source.write_text(f"int {name}(void) {{ return 1; }}\n")
        sources.append(str(source))
    barrier = threading.Barrier(2, timeout=30)
    compile_source = compiler._compile

    def meeting(obj, src, ext, cc_args, extra_postargs, pp_opts):
        barrier.wait()
        compile_source(obj, src, ext, cc_args, extra_postargs, pp_opts)

    compiler._compile = meeting
    parallel_compile.install(compiler)
    objects = compiler.compile(sources, output_dir=str(tmp_path / "build"))
    assert [Path(obj).stem for obj in objects] == ["one", "two"]
    assert all(Path(obj).is_file() for obj in objects), objects


def test_a_failing_source_raises_the_compile_error(parallel_compile, tmp_path):
    from distutils.errors import CompileError
    compiler = new_compiler()
    parallel_compile.install(compiler)
    good, bad = tmp_path / "good.c", tmp_path / "bad.c"
    good.write_text("int good(void) { return 1; }\n")
    bad.write_text("int bad(void) { return }\n")
    with pytest.raises(CompileError):
        compiler.compile([str(good), str(bad)], output_dir=str(tmp_path / "build"))


def test_a_compiler_with_its_own_compile_is_left_alone(parallel_compile):
    compiler = new_compiler()
    # compiler_type None: setuptools' distutils finds a compiler class among the live
    # subclasses of its Compiler (get_compilers), and this one, until it is garbage collected,
    # would otherwise be every later test's "unix" compiler
    own = type("OwnCompile", (type(compiler),),
               {"compile": lambda self, *args, **kw: [], "compiler_type": None})()
    parallel_compile.install(own)
    assert "compile" not in vars(own)
    parallel_compile.install(compiler)
    assert "compile" in vars(compiler)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_build_jobs_value_names_the_variable(parallel_compile, monkeypatch, value):
    monkeypatch.setenv("FASTNN_BUILD_JOBS", value)
    with pytest.raises(ValueError, match="FASTNN_BUILD_JOBS: expected a whole number >= 1, got"):
        parallel_compile.build_jobs()


def test_build_jobs_defaults_to_the_usable_cores(parallel_compile, monkeypatch):
    assert parallel_compile.build_jobs() >= 1
    monkeypatch.setenv("FASTNN_BUILD_JOBS", "3")
    assert parallel_compile.build_jobs() == 3


def counting(compiler):
    """The compiler, and the list of sources its ``_compile`` ran on."""
    compiled = []
    compile_source = compiler._compile

    def run(obj, src, ext, cc_args, extra_postargs, pp_opts):
        compiled.append(Path(src).name)
        compile_source(obj, src, ext, cc_args, extra_postargs, pp_opts)

    compiler._compile = run
    return compiled


def cached_build(parallel_compile, cache, source, *flags):
    """source compiled (its folder on the include path) by a new compiler with the object
    cache at cache and flags: the sources the compiler ran on, and the object's bytes."""
    compiler = new_compiler()
    compiled = counting(compiler)
    parallel_compile.install(compiler, cache)
    (obj,) = compiler.compile([str(source)], output_dir=str(source.parent / "build"),
                              include_dirs=[str(source.parent)], extra_postargs=list(flags))
    return compiled, Path(obj).read_bytes()


def test_an_unchanged_source_is_linked_from_the_cache_and_any_change_compiles_again(
        parallel_compile, tmp_path):
    """Same text, headers and flags: the kept object (the same bytes), no compiler run; a
    changed header, a changed macro flag or a changed source: compiled again."""
    (tmp_path / "value.h").write_text("#define VALUE 1\n")
    source = tmp_path / "one.c"
    source.write_text('#include "value.h"\nint one(void) { return VALUE; }\n')
    cache = tmp_path / "cache"

    def build(*flags):
        return cached_build(parallel_compile, cache, source, *flags)

    first, first_object = build()
    assert first == ["one.c"] and len(list(cache.glob("*.o"))) == 1
    again, again_object = build()
    assert again == [] and again_object == first_object
    (tmp_path / "value.h").write_text("#define VALUE 2\n")
    assert build()[0] == ["one.c"]
    assert build("-DEXTRA=1")[0] == ["one.c"]
    assert build("-DEXTRA=1")[0] == []
    source.write_text('#include "value.h"\nint one(void) { return VALUE + 1; }\n')
    assert build()[0] == ["one.c"]
    assert len(list(cache.glob("*.o"))) == 4


def test_an_edit_in_a_branch_only_the_compile_takes_compiles_again(parallel_compile, tmp_path):
    """``#pragma GCC target("avx512f")`` defines __AVX512F__ for the compile but not for the
    preprocessor's ``-E`` pass of the key: an edit inside ``#if defined(__AVX512F__)`` (simd.h's
    AVX-512 branch; the kernels under FASTNN_SIMD_FUSED_FMA) that keeps the line count leaves
    the preprocessed text as it was, and must still compile again, into the object the new
    text makes."""
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("GCC's avx512f target pragma is x86-64's")
    header = tmp_path / "branch.h"
    source = tmp_path / "two.c"
    source.write_text('#pragma GCC target("avx512f")\n#include "branch.h"\n'
                      'int two(void) { return VALUE; }\n')
    cache = tmp_path / "cache"
    branch = "#if defined(__AVX512F__)\n#define VALUE {}\n#else\n#define VALUE 0\n#endif\n"
    header.write_text(branch.format(11))
    first, first_object = cached_build(parallel_compile, cache, source)
    assert first == ["two.c"]
    header.write_text(branch.format(12))
    second, second_object = cached_build(parallel_compile, cache, source)
    assert second == ["two.c"] and second_object != first_object
    assert cached_build(parallel_compile, cache, source)[0] == []  # unchanged: from the cache


def test_the_cache_keeps_the_newest_objects(parallel_compile, tmp_path, monkeypatch):
    monkeypatch.setattr(parallel_compile, "CACHED_OBJECTS", 2)
    cache = tmp_path / "cache"
    compiler = new_compiler()
    parallel_compile.install(compiler, cache)
    for value in range(4):
        source = tmp_path / f"s{value}.c"
        source.write_text(f"int s{value}(void) {{ return {value}; }}\n")
        compiler.compile([str(source)], output_dir=str(tmp_path / "build"))
    assert len(list(cache.glob("*.o"))) == 2


def test_a_compiler_that_does_not_answer_is_run_and_its_error_raised(parallel_compile,
                                                                      tmp_path):
    """CC=false (no compiler): no key can be had, so the compile runs and fails as
    without a cache, and nothing is kept."""
    from distutils.errors import CompileError
    compiler = new_compiler()
    compiler.set_executables(compiler_so=["false"])
    parallel_compile.install(compiler, tmp_path / "cache")
    source = tmp_path / "one.c"
    source.write_text("int one(void) { return 1; }\n")
    with pytest.raises(CompileError):
        compiler.compile([str(source)], output_dir=str(tmp_path / "build"))
    assert not list((tmp_path / "cache").glob("*.o"))
