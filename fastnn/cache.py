"""Where fastnn keeps files it makes at run time (compiled kernels), and clearing them.

PLACEHOLDER for the cli branch: the packaging work (issue 13, items 1-2) provides
the real module with these three functions; it replaces this file at merge.
The folder is FASTNN_CACHE_DIR when set, else $XDG_CACHE_HOME/fastnn (by
default ~/.cache/fastnn).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def cache_dir() -> Path:
    """The folder of fastnn's caches (it need not exist yet)."""
    override = os.environ.get("FASTNN_CACHE_DIR", "").strip()
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache")
    return Path(base).expanduser() / "fastnn"


def numba_cache_dir() -> Path:
    """The folder of Numba's compiled kernels, inside :func:`cache_dir`."""
    return cache_dir() / "numba"


def clear() -> int:
    """Delete the cache folder; the number of files deleted."""
    folder = cache_dir()
    if not folder.is_dir():
        return 0
    count = sum(1 for path in folder.rglob("*") if not path.is_dir())
    shutil.rmtree(folder)
    return count
