"""Where fastnn keeps what it compiles at run time: a per-user cache folder, never the install.

fastnn never writes into its installed package folder: files written there are unknown to
``pip uninstall``, and a leftover ``site-packages/fastnn/`` without ``__init__.py`` shadows a
later install (issue 13). Compiled caches live under :func:`cache_dir` instead, one subfolder
per kind of cache (the names in :data:`PARTS`), each keyed so that stale code is never reused.

* :func:`cache_dir`: the per-user cache folder of the platform (``~/.cache/fastnn`` on Linux,
  after ``XDG_CACHE_HOME``; platformdirs' ``user_cache_dir("fastnn")``), or ``FASTNN_CACHE_DIR``.
* :func:`numba_cache_dir`: where Numba caches fastnn's kernels, one folder per fastnn version,
  kernel sources, CPU, Numba and Python version.
* :func:`clear`: delete fastnn's caches (``python -c "import fastnn.cache as c; c.clear()"``).

Nothing here creates a folder but :func:`writable_folder`, which the code that writes a cache
calls: it copes with a folder it cannot write (a temporary one for this process, and one
warning line).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import List

ENV_VAR = "FASTNN_CACHE_DIR"

#: The subfolders of :func:`cache_dir` that fastnn writes, and that :func:`clear` deletes.
#: A new kind of cache gets its own subfolder and its name here: ``clear`` deletes nothing else,
#: so a ``FASTNN_CACHE_DIR`` pointing at a folder that holds other files is safe.
PARTS = ("numba",)

#: The temporary folders :func:`writable_folder` handed out in this process (removed at exit).
_temporary: List[Path] = []

_KERNEL_SOURCES = Path(__file__).resolve().parent / "backends" / "numba_kernels"


def cache_dir() -> Path:
    """The folder fastnn keeps its compiled caches in (not created here).

    ``FASTNN_CACHE_DIR`` when set to a non-empty value (``~`` is expanded), else platformdirs'
    ``user_cache_dir("fastnn")``: ``$XDG_CACHE_HOME/fastnn`` or ``~/.cache/fastnn`` on Linux,
    ``~/Library/Caches/fastnn`` on macOS, ``%LOCALAPPDATA%\\fastnn\\Cache`` on Windows.
    An empty ``FASTNN_CACHE_DIR`` counts as unset, as an empty ``FASTNN_BACKEND`` does.

    Raises:
        ValueError: ``FASTNN_CACHE_DIR`` is a relative path, or names something that is not a
            folder. (A folder that cannot be written is not an error: fastnn then keeps no
            cache, and says so once.)
    """
    from .environment import folder

    chosen = folder(ENV_VAR)
    if chosen is None:
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("fastnn", appauthor=False))
    return chosen


def numba_cache_dir() -> Path:
    """The folder Numba caches fastnn's kernels in (not created here).

    ``cache_dir()/numba/<fastnn version>-py<X.Y>-numba<version>-<CPU name>-<digest>``; when the
    user chose Numba's cache folder (``NUMBA_CACHE_DIR``, i.e. ``numba.config.CACHE_DIR``), the
    same key in its subfolder ``fastnn``, so that choice is kept. The digest covers the source
    of every module of the Numba kernels (Numba itself checks a cached kernel against its own
    file only, while the kernels inline helpers from sibling modules) and the CPU's feature
    flags. So another fastnn, an edited kernel, another CPU (a shared home
    folder on a cluster), Numba or Python never reuses a stale compiled kernel.

    Raises:
        ValueError: as :func:`cache_dir`.
    """
    import numba

    from . import __version__

    cpu_name, cpu_features = _cpu_identity()
    digest = hashlib.sha256(_kernel_sources_digest() + cpu_features.encode()).hexdigest()[:16]
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    key = f"{__version__}-py{python}-numba{numba.__version__}-{cpu_name}-{digest}"
    return _numba_root() / key


def _numba_root() -> Path:
    """Where every folder of :func:`numba_cache_dir` lives, whatever its key."""
    try:
        import numba
    except ImportError:  # clear() must work without a working Numba too
        chosen = os.environ.get("NUMBA_CACHE_DIR", "")
    else:
        chosen = numba.config.CACHE_DIR
    return Path(chosen).expanduser() / "fastnn" if chosen else cache_dir() / "numba"


def clear() -> int:
    """Delete fastnn's caches: the :data:`PARTS` subfolders of :func:`cache_dir`, and the
    ``fastnn`` subfolder of ``NUMBA_CACHE_DIR`` when that is set (see :func:`numba_cache_dir`).

    Returns the number of bytes freed (0 when there was nothing to delete). Other files in the
    folder are left alone. Safe while no fastnn process runs; a running one keeps the kernels it
    has loaded and compiles the others again.

    Raises:
        ValueError: as :func:`cache_dir`.
        OSError: a file could not be deleted (e.g. no permission); what was deleted stays deleted.
    """
    freed = 0
    for folder in {cache_dir() / part for part in PARTS} | {_numba_root()}:
        if not folder.is_dir():
            continue
        freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder)
    return freed


def writable_folder(folder: Path, what: str = "compiled Numba kernels") -> Path:
    """``folder``, created, when it can be written; else a new temporary folder, removed when
    the process exits, after one warning line (a RuntimeWarning) naming the folder, the reason
    and FASTNN_CACHE_DIR.

    A cache folder that cannot be written (a read-only home, a FASTNN_CACHE_DIR without
    permission) is no error: ``what`` is made as usual and kept for this process only.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return folder
    except OSError as exc:
        temporary = Path(tempfile.mkdtemp(prefix="fastnn-cache-"))
        atexit.register(shutil.rmtree, temporary, ignore_errors=True)
        _temporary.append(temporary)
        reason = exc.strerror or type(exc).__name__
        warnings.warn(f"fastnn: cannot write the cache folder {folder} ({reason}): {what} "
                      f"are kept for this process only; set {ENV_VAR} to a writable folder to "
                      f"keep them", RuntimeWarning, stacklevel=2)
        return temporary


def is_temporary(path) -> bool:
    """Whether ``path`` is in a temporary folder of :func:`writable_folder` (so what is cached
    there is lost at exit)."""
    path = Path(path)
    return any(path == folder or folder in path.parents for folder in _temporary)


@functools.lru_cache(maxsize=None)
def _kernel_sources_digest() -> bytes:
    """SHA-256 over the names and contents of the Numba kernels' Python files."""
    digest = hashlib.sha256()
    for path in sorted(_KERNEL_SOURCES.rglob("*.py")):
        digest.update(str(path.relative_to(_KERNEL_SOURCES)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.digest()


@functools.lru_cache(maxsize=None)
def _cpu_identity() -> tuple:
    """LLVM's name of this CPU (e.g. ``sapphirerapids``) and its feature string."""
    try:
        from llvmlite import binding

        name = binding.get_host_cpu_name()
        features = binding.get_host_cpu_features().flatten()
    except Exception:  # noqa: BLE001 - an llvmlite without these: the machine's name will do
        name, features = platform.machine() or "cpu", platform.processor()
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in name) or "cpu"
    return safe, features
