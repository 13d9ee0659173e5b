"""The per-user cache folder (placeholder: engineer "pkg" owns this module; at merge take theirs,
which has the same :func:`cache_dir`, and add "datasets" to its ``PARTS``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FASTNN_CACHE_DIR"


def cache_dir() -> Path:
    """``FASTNN_CACHE_DIR`` when set (absolute), else platformdirs' ``user_cache_dir("fastnn")``
    (``~/.cache/fastnn`` on Linux). Not created here. ValueError for a relative path or a
    non-folder."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        try:
            from platformdirs import user_cache_dir
        except ImportError:  # platformdirs not installed: its Linux answer
            base = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
            return Path(base).expanduser() / "fastnn"
        return Path(user_cache_dir("fastnn", appauthor=False))
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(f"{ENV_VAR}: expected an absolute path to a folder, got {value!r}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{ENV_VAR}: expected a folder, got {value!r}, which is not a folder")
    return path
