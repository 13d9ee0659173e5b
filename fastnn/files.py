"""Writing files: every file fastnn writes goes through :func:`atomic_write`.

A file is written to a temporary file beside its target, flushed to disk, and
renamed over the target (``os.replace``), so a reader sees either the old file
or the complete new one, never a half-written one, and an interrupted write
leaves no temporary behind.

Its mode is the one a plain ``open(path, "w")`` would give: a new file gets
``0o666`` less the process's umask (the temporary is created with
``os.open(..., 0o666)``, so the kernel applies the umask, and a directory's
default ACL, exactly as for ``open``); a file written over keeps the mode it
had. (``tempfile.mkstemp`` would make every file 0600, unreadable by another
user or a serving process.)
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import IO, Iterator

#: Permission bits a new file asks for before the umask (those of ``open``).
NEW_FILE_MODE = 0o666


@contextlib.contextmanager
def atomic_write(path, binary: bool = True, encoding: str = "utf-8",
                 what: str = "the file") -> Iterator[IO]:
    """Open a file object whose content replaces ``path`` when the block ends without error.

    path: str or os.PathLike; its directory must exist. binary: bytes (True) or
    text. what: how error messages name the content ("the model"). On an
    exception in the block, or in writing, the temporary file is removed,
    ``path`` is left as it was, and the exception propagates.
    Raises OSError (FileNotFoundError for a missing folder, IsADirectoryError,
    PermissionError, ...) whose message names ``path``, never the temporary file; a ``path``
    that exists but is not a regular file (a device such as /dev/null, a FIFO, a socket)
    raises OSError before anything is written: the rename would replace it with a file.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    cannot = f"{path}: cannot save {what} there"
    if os.path.isdir(path):
        raise IsADirectoryError(f"{cannot}: it is a directory, not a file to write")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{cannot}: the folder {directory} does not exist")
    base = os.path.basename(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        keep_mode = None
    else:
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{cannot}: it is not a regular file (a device, FIFO or socket), "
                          f"which the write would replace")
        keep_mode = stat.S_IMODE(status.st_mode)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for attempt in range(100):
        temporary = os.path.join(directory, f".{base}.{os.getpid()}.{attempt}.tmp")
        try:
            handle = os.open(temporary, flags, NEW_FILE_MODE)
            break
        except FileExistsError:
            continue
        except OSError as exc:  # its message would name the temporary file, not the user's
            raise type(exc)(exc.errno, f"{cannot}: {exc.strerror or exc}") from exc
    else:
        raise FileExistsError(f"{path}: could not create a temporary file beside it")
    try:
        if keep_mode is not None:
            os.chmod(temporary, keep_mode)
        mode = "wb" if binary else "w"
        with os.fdopen(handle, mode, **({} if binary else {"encoding": encoding,
                                                            "newline": ""})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_bytes(path, data: bytes) -> None:
    """``data`` as the whole content of ``path``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as file:
        file.write(data)


def write_text(path, text: str, encoding: str = "utf-8") -> None:
    """``text`` as the whole content of ``path``, atomically (see :func:`atomic_write`)."""
    with atomic_write(path, binary=False, encoding=encoding) as file:
        file.write(text)
