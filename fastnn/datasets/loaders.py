"""Loaders for the user's own data: IDX (as MNIST ships), CSV, and NumPy's .npz / .npy.

Each checks the file's form and raises ValueError naming the file (and the line
or field) when it does not fit; none uses pickle.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zipfile
from typing import Optional, Tuple, Union

import numpy as np

#: IDX type codes (the third byte of the magic number) and their big-endian dtypes.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first; an empty archive
_NPY_MAGIC = b"\x93NUMPY"
#: What np.load(allow_pickle=False) raises for an object array (its message talks of
#: allow_pickle, which is no advice here: fastnn never loads pickles).
_OBJECTS = "holds object arrays (Python objects, stored with pickle), which fastnn does not load"


def _numpy_kind(name: str) -> str:
    """"npz", "npy" or "other", from the first bytes of the file ``name``."""
    with open(name, "rb") as file:
        start = file.read(len(_NPY_MAGIC))
    if start.startswith(_ZIP_MAGICS):
        return "npz"
    return "npy" if start == _NPY_MAGIC else "other"


class _Missing(Exception):
    """load_npz: an array is not in the archive (raised inside its with block)."""


def _holds_objects(exc: Exception) -> bool:
    return isinstance(exc, ValueError) and "allow_pickle" in str(exc)


def load_idx(path) -> np.ndarray:
    """The array in an IDX file (Y. LeCun's format of MNIST), gzip-compressed or not.

    Format (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code
    (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the
    number of dimensions, each dimension as a big-endian uint32, then the values in C
    order, big-endian. Returns them in native byte order with that shape. ValueError
    (naming the file) for a bad magic number, a truncated header, an unknown type, or a
    data part shorter or longer than the dimensions say.
    """
    name = os.fspath(path)
    with open(name, "rb") as file:
        compressed = file.read(2) == _GZIP_MAGIC
    try:
        if compressed:
            with gzip.open(name, "rb") as file:
                content = file.read()
        else:
            with open(name, "rb") as file:
                content = file.read()
    except (OSError, EOFError) as exc:  # a damaged or truncated gzip stream
        raise ValueError(f"{name}: not a readable gzip file: {exc}") from exc
    if any(content[:2]):
        raise ValueError(f"{name}: not an IDX file (its magic number does not start with two "
                         "zero bytes)")
    if len(content) < 4:
        raise ValueError(f"{name}: truncated IDX header: expected 4 bytes of magic number, got "
                         f"{len(content)}")
    code, rank = content[2], content[3]
    if code not in IDX_TYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}; expected one of "
                         f"{', '.join(f'0x{c:02x}' for c in IDX_TYPES)}")
    header = 4 + 4 * rank
    if len(content) < header:
        raise ValueError(f"{name}: truncated IDX header: expected {header} bytes for "
                         f"{rank} dimensions, got {len(content)}")
    shape = tuple(int(d) for d in np.frombuffer(content, ">u4", rank, 4))
    dtype = np.dtype(IDX_TYPES[code])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: 65536^4 overflows int64
    found = len(content) - header
    if found != expected:
        problem = "truncated" if found < expected else "longer than its header says"
        raise ValueError(f"{name}: {problem}: the dimensions {shape} need {expected} bytes of "
                         f"data, found {found}")
    array = np.frombuffer(content, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_csv(path, target: Union[int, str] = -1, header: Union[bool, str] = "auto",
             delimiter: str = ",") -> Tuple[np.ndarray, np.ndarray, Optional[Tuple[str, ...]]]:
    """Features and targets from a CSV file: ``(x, y, classes)``.

    target: the target column, by number (from 0; negative counts from the end,
    -1 the last) or by name (needs a header). header: True, False, or "auto" (the
    first line is a header when a field of it is not a number while the line after
    has a number there, or when no field of it is a number, or when ``target`` is a
    name and a field of it is not a number; a first line of numbers only is data). Every other column is
    a feature: x float32 (N, columns - 1). y: int64 (N,) when the targets are integers
    or strings (class labels: strings are mapped to 0..K-1 in sorted order, and
    ``classes`` lists them, ``classes[i]`` being the label of class i), else float32
    (N,) (regression); ``classes`` is None unless the labels were strings.
    ValueError names the file, line and column of a field that is missing or not a
    number, an unknown target, or rows of different lengths.
    """
    name = os.fspath(path)
    with open(name, newline="", encoding="utf-8") as file:
        rows = [(number, row) for number, row in enumerate(csv.reader(file, delimiter=delimiter),
                                                           start=1)
                if row and any(field.strip() for field in row)]
    if not rows:
        raise ValueError(f"{name}: empty: no rows")
    detected = header == "auto"
    if detected:
        first = rows[0][1]
        second = rows[1][1] if len(rows) > 1 else None
        # a line of numbers only is data, also when the target is a name: the file then
        # has no header, which the target's error below says
        header = (not all(_is_number(f) for f in first)) and (
                  isinstance(target, str) or not any(_is_number(f) for f in first)
                  or (second is not None and len(second) == len(first) and any(
                      not _is_number(a) and _is_number(b) for a, b in zip(first, second))))
    elif not isinstance(header, bool):
        raise ValueError(f"header: expected True, False or 'auto', got {header!r}")
    names = [field.strip() for field in rows[0][1]] if header else None
    data = rows[1:] if header else rows
    if not data:
        raise ValueError(f"{name}: no data rows after the header")
    width = len(rows[0][1])
    for number, row in data:
        if len(row) != width:
            raise ValueError(f"{name}: line {number} has {len(row)} fields, expected {width}")
    if width < 2:
        raise ValueError(f"{name}: needs a target column and at least one feature column, "
                         f"found {width} column")
    if isinstance(target, str):
        if names is None:
            why = " (its first line holds only numbers)" if detected else ""
            raise ValueError(f"target: expected a column number, got the name {target!r}: "
                             f"{name} has no header{why}; its {width} columns are numbered "
                             f"0 to {width - 1} (-1 the last)")
        if target not in names:
            raise ValueError(f"target: expected one of the columns of {name} "
                             f"({', '.join(names)}), got {target!r}")
        column = names.index(target)
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not -width <= target < width:
            raise ValueError(f"target: expected a column number from {-width} to {width - 1} "
                             f"({name} has {width} columns), got {target}")
        column = int(target) % width
    else:
        raise TypeError(f"target: expected a column number or name, got {target!r}")
    cells = np.array([row for _, row in data], dtype=str)
    labels = np.char.strip(cells[:, column])
    features = np.delete(cells, column, axis=1)
    try:
        x = features.astype(np.float64)
    except ValueError:  # find the field (a slow path only when there is one)
        x = np.array([[float(row[c]) if _is_number(row[c]) else np.nan
                       for c in range(width) if c != column] for _, row in data])
    if not np.isfinite(x).all():
        line, position = np.argwhere(~np.isfinite(x))[0]
        c = [c for c in range(width) if c != column][position]
        number, row = data[line]
        label = repr(names[c]) if names else str(c)
        raise ValueError(f"{name}: line {number}, column {label}: expected a finite number, "
                         f"got {row[c]!r}")
    classes = None
    if all(_is_number(value) for value in labels):
        values = labels.astype(np.float64)
        if np.isfinite(values).all() and (values == np.round(values)).all():
            y = values.astype(np.int64)
        else:
            y = values.astype(np.float32)
    else:
        if (labels == "").any():
            number = data[int(np.flatnonzero(labels == "")[0])][0]
            raise ValueError(f"{name}: line {number}: the target field is empty")
        unique, y = np.unique(labels, return_inverse=True)
        classes, y = tuple(str(value) for value in unique), y.astype(np.int64)
    return x.astype(np.float32), y, classes


def load_npz(path, x: str = "x", y: str = "y") -> Tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the arrays named ``x`` and ``y`` in a NumPy .npz archive (no pickle).
    ValueError naming the file when it is not an .npz (zip) archive, is a damaged one, lacks
    one of the arrays (listing those it holds) or holds them as object arrays."""
    name = os.fspath(path)
    kind = _numpy_kind(name)
    if kind == "npy":
        raise ValueError(f"{name}: a single .npy array, not an .npz archive; use load_npy")
    if kind != "npz":
        raise ValueError(f"{name}: not an .npz archive (an .npz file is a zip archive of .npy "
                         f"arrays, as numpy.savez writes; this file is not a zip archive)")
    try:
        with np.load(name, allow_pickle=False) as archive:
            missing = [key for key in (x, y) if key not in archive.files]
            if missing:
                raise _Missing(f"{name}: has no array named {missing[0]!r}; it holds "
                                  f"{sorted(archive.files)}")
            return archive[x], archive[y]
    except _Missing as exc:
        raise ValueError(str(exc)) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if _holds_objects(exc):
            raise ValueError(f"{name}: {_OBJECTS}; save numeric arrays") from exc
        raise ValueError(f"{name}: not a readable .npz archive (damaged?): "
                         f"{type(exc).__name__}: {exc}") from exc


def load_npy(path) -> np.ndarray:
    """The array in a NumPy .npy file (no pickle). ValueError naming the file when it is not
    an .npy file, is a damaged one or holds an object array."""
    name = os.fspath(path)
    kind = _numpy_kind(name)
    if kind == "npz":
        raise ValueError(f"{name}: an .npz archive, not a single .npy array; use load_npz")
    if kind != "npy":
        raise ValueError(f"{name}: not an .npy file (no .npy header; numpy.save writes one)")
    try:
        return np.load(name, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if _holds_objects(exc):
            raise ValueError(f"{name}: {_OBJECTS}; save a numeric array") from exc
        raise ValueError(f"{name}: not a readable .npy array (damaged?): "
                         f"{type(exc).__name__}: {exc}") from exc
