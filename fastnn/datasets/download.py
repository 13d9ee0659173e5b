"""Files of public datasets: found in the per-user data folder, or downloaded there once.

A :class:`RemoteDataset` names its files, each with its published size and
SHA-256, and the mirrors that serve them (tried in order). :func:`fetch` returns
the local path of each file: a file already in the folder is checked against
its SHA-256 and used; a missing one is downloaded from the first mirror that
serves it correctly, checked (size, then SHA-256) while it streams into a
temporary file, and only then renamed into place (:func:`fastnn.files.atomic_write`),
so the folder never holds a partial or unverified file. When no mirror works
(offline, a proxy, a mirror gone), :class:`DatasetUnavailableError` says in one line
which hosts were tried and why they failed, and the folder where the files may be put
by hand (its ``failures`` holds every URL and reason); the folders made for the download
are removed again.

The folder: ``FASTNN_DATA/<dataset>`` when the environment variable
``FASTNN_DATA`` is set (an absolute path; ``~`` is expanded), else ``cache_dir()/datasets/<dataset>``
(:func:`fastnn.cache.cache_dir`: the per-user cache, ``~/.cache/fastnn`` on Linux,
or ``FASTNN_CACHE_DIR``).

Python's urllib is used rather than a download library such as pooch: pooch
writes through ``tempfile``, which makes every file mode 0600.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..files import atomic_write

DATA_ENV_VAR = "FASTNN_DATA"
#: Seconds a mirror may take to answer (or between two reads) before it is given up.
TIMEOUT = 30.0
_CHUNK = 1 << 20


class DatasetUnavailableError(OSError):
    """A dataset file could not be found locally nor downloaded; the message (one line) says
    which hosts failed and where to put the files by hand. ``failures``: every (URL, reason)
    tried."""

    def __init__(self, message: str, failures: Sequence[Tuple[str, str]] = ()):
        super().__init__(message)
        self.failures = tuple(failures)


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
    ValueError naming ``FASTNN_DATA`` when it is a relative path (it would name another folder
    from each working folder) or names something that is not a folder."""
    from ..environment import folder

    chosen = folder(DATA_ENV_VAR)
    if chosen is not None:
        return chosen
    from ..cache import cache_dir
    return cache_dir() / "datasets"


def _make_folders(folder: Path) -> List[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = [folder, *folder.parents]
    missing = missing[:next(i for i, path in enumerate(missing) if path.exists())]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # e.g. no permission half-way: remove what was made
        _remove_if_empty(missing)
        raise
    return missing


def _remove_if_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty: a failed download leaves
    no folder behind that it made."""
    for path in folders:
        try:
            path.rmdir()
        except OSError:  # not empty (a file put there meanwhile), or gone: leave it
            return


def _reason(exc: BaseException) -> str:
    """Why a download failed, briefly: ``HTTP 404 Not Found``, ``Name or service not known``."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
        return getattr(exc, "strerror", None) or str(getattr(exc, "reason", exc))
    return getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"


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
    if isinstance(mirrors, (str, bytes)):  # tuple() would make one "mirror" a character
        raise TypeError(f"mirrors: expected a sequence of base URLs (a list), got the "
                        f"{type(mirrors).__name__} {mirrors!r}")
    mirrors = tuple(dataset.mirrors if mirrors is None else mirrors)
    folder = data_dir() / dataset.name
    paths, made = {}, []
    try:
        for remote in dataset.files:
            path = folder / remote.name
            if path.exists():
                found = _sha256(path)
                if found != remote.sha256:
                    raise ChecksumError(f"{path}: SHA-256 {found} is not the published "
                                        f"{remote.sha256} of {dataset.name}'s {remote.name}; "
                                        "delete the file to download it again")
            else:
                made += _make_folders(folder)
                failures = []
                for mirror in mirrors:
                    url = mirror + remote.name
                    try:
                        _download(url, remote, path)
                        break
                    except (OSError, ChecksumError, http.client.HTTPException,
                            ValueError) as exc:  # (ValueError: not a URL urllib can open)
                        failures.append((url, _reason(exc)))
                else:
                    raise DatasetUnavailableError(
                        _unavailable(dataset, remote, failures, folder), failures)
            paths[remote.name] = path
    except BaseException:  # offline, a bad file, Ctrl-C: no empty folder is left behind
        _remove_if_empty(made)
        raise
    return paths


def _unavailable(dataset: RemoteDataset, remote: RemoteFile,
                 failures: Sequence[Tuple[str, str]], folder: Path) -> str:
    """One short line: the file that failed, the first host tried and why, and how to get the
    files by hand: ``mnist: could not download train-images-idx3-ubyte.gz from a.org and 2
    other mirrors (Name or service not known); download its 4 files by hand from
    https://a.org/mnist/ into FOLDER, or set FASTNN_DATA to a folder holding mnist/``.
    Every URL and its reason is in the error's ``failures``."""
    if failures:
        host = urllib.parse.urlsplit(failures[0][0]).netloc or failures[0][0]  # not a URL
        others = len(failures) - 1
        reasons = list(dict.fromkeys(reason for _, reason in failures))
        tried = (f" from {host}" + (f" and {others} other mirror{'s' * (others > 1)}"
                                    if others else "")
                 + f" ({reasons[0]}" + ("; others failed otherwise)" if len(reasons) > 1
                                        else ")"))
    else:
        tried = " (no mirrors)"
    source = f" from {dataset.mirrors[0]}" if dataset.mirrors else ""
    count = len(dataset.files)
    return (f"{dataset.name}: could not download {remote.name}{tried}; download its {count} "
            f"file{'s' * (count > 1)} by hand{source} into {folder}, or set {DATA_ENV_VAR} to "
            f"a folder holding {dataset.name}/")
