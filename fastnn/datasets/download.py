"""Files of public datasets: found in the per-user data folder, or downloaded there once.

A :class:`RemoteDataset` names its files, each with its published size and
SHA-256, and the mirrors that serve them (tried in order). :func:`fetch` returns
the local path of each file: a file already in the folder is checked against
its SHA-256 and used; a missing one is downloaded from the first mirror that
serves it correctly, checked (size, then SHA-256) while it streams into a
temporary file, and only then renamed into place (:func:`fastnn.files.atomic_write`),
so the folder never holds a partial or unverified file. When no mirror works
(offline, a proxy, a mirror gone), :class:`DatasetUnavailableError` names every
URL tried, why each failed, and the folder where the files may be put by hand.

The folder: ``FASTNN_DATA/<dataset>`` when the environment variable
``FASTNN_DATA`` is set, else ``cache_dir()/datasets/<dataset>``
(:func:`fastnn.cache.cache_dir`: the per-user cache, ``~/.cache/fastnn`` on Linux,
or ``FASTNN_CACHE_DIR``).

Python's urllib is used rather than a download library such as pooch: pooch
writes through ``tempfile``, which makes every file mode 0600.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

from ..files import atomic_write

DATA_ENV_VAR = "FASTNN_DATA"
#: Seconds a mirror may take to answer (or between two reads) before it is given up.
TIMEOUT = 30.0
_CHUNK = 1 << 20


class DatasetUnavailableError(OSError):
    """A dataset file could not be found locally nor downloaded; the message says where to
    put it by hand."""


class ChecksumError(ValueError):
    """A file's size or SHA-256 is not the published one."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name, size in bytes and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset's folder name, its files and the mirrors (base URLs ending in "/")."""

    name: str
    files: Tuple[RemoteFile, ...]
    mirrors: Tuple[str, ...]


def data_dir() -> Path:
    """The folder datasets live in: ``FASTNN_DATA``, else ``cache_dir()/"datasets"``.
    ValueError when ``FASTNN_DATA`` names something that is not a folder."""
    value = os.environ.get(DATA_ENV_VAR, "").strip()
    if value:
        path = Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{DATA_ENV_VAR}: expected a folder, got {value!r}, which is not "
                             "a folder")
        return path
    from ..cache import cache_dir
    return cache_dir() / "datasets"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, remote: RemoteFile, path: Path) -> None:
    """Stream ``url`` into ``path`` atomically, checking size and SHA-256 before the rename.
    Raises OSError (network, HTTP status) or ChecksumError; ``path`` is untouched then."""
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, atomic_write(path) as file:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except http.client.IncompleteRead as exc:
                received += len(exc.partial)
                raise ChecksumError(f"truncated: the connection closed after {received} of "
                                    f"{remote.size} bytes") from None
            if not chunk:
                break
            received += len(chunk)
            if received > remote.size:
                raise ChecksumError(f"larger than the published {remote.size} bytes")
            digest.update(chunk)
            file.write(chunk)
        if received != remote.size:
            raise ChecksumError(f"truncated: {received} of the published {remote.size} bytes")
        if digest.hexdigest() != remote.sha256:
            raise ChecksumError(f"SHA-256 {digest.hexdigest()} is not the published "
                                f"{remote.sha256}")


def fetch(dataset: RemoteDataset, mirrors: Sequence[str] = None) -> Dict[str, Path]:
    """The local path of each of ``dataset``'s files (by name), downloading the missing ones.

    mirrors: base URLs to try instead of the dataset's own. Raises
    DatasetUnavailableError (no mirror served a file correctly), ChecksumError (a file
    in the folder is not the published one: delete it to download it again), ValueError
    (a bad ``FASTNN_DATA``), OSError (the folder cannot be created or written).
    """
    mirrors = tuple(dataset.mirrors if mirrors is None else mirrors)
    folder = data_dir() / dataset.name
    paths = {}
    for remote in dataset.files:
        path = folder / remote.name
        if path.exists():
            found = _sha256(path)
            if found != remote.sha256:
                raise ChecksumError(f"{path}: SHA-256 {found} is not the published "
                                    f"{remote.sha256} of {dataset.name}'s {remote.name}; delete "
                                    "the file to download it again")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            failures = []
            for mirror in mirrors:
                url = mirror + remote.name
                try:
                    _download(url, remote, path)
                    break
                except (OSError, ChecksumError, http.client.HTTPException) as exc:
                    if isinstance(exc, urllib.error.HTTPError):
                        reason = f"HTTP {exc.code} {exc.reason}"
                    elif isinstance(exc, urllib.error.URLError):
                        reason = f"{type(exc.reason).__name__}: {exc.reason}"
                    else:
                        reason = f"{type(exc).__name__}: {exc}"
                    failures.append(f"  {url}: {reason}")
            else:
                raise DatasetUnavailableError(
                    f"{dataset.name}: could not download {remote.name}; tried\n"
                    + "\n".join(failures or ["  (no mirrors)"])
                    + f"\nDownload the files by hand from one of the mirrors "
                      f"({', '.join(mirrors)}): {', '.join(f.name for f in dataset.files)}, and "
                      f"put them, named so, in the folder {folder} (or set {DATA_ENV_VAR} to a "
                      f"folder that holds a {dataset.name}/ folder with them).")
        paths[remote.name] = path
    return paths
