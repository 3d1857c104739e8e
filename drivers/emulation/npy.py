"""Read ``.npy`` arrays and single members of ``.npz`` archives without numpy.

The emulators replay data sets stored by numpy (SisFall: one ``.npz`` per subject) inside
the daemon, whose memory budget cannot afford numpy (~15 MiB). The format is small: an
``.npz`` is a zip of ``.npy`` files; an ``.npy`` is the magic ``\\x93NUMPY``, a version
(1.0, 2.0 or 3.0), a little-endian header length (2 bytes in 1.0, 4 after), a Python dict
literal (``descr``, ``fortran_order``, ``shape``) and the raw elements.

Plain numeric dtypes only (signed/unsigned 1-8 byte integers, 4- and 8-byte floats, either
byte order): anything else raises :class:`NpyFormatError`. Data come back as an
:class:`array.array` in C order, so a table stays as compact as it was on disk.
"""

from __future__ import annotations

import ast
import itertools
import math
import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MAGIC = b"\x93NUMPY"



def _typecodes() -> dict[str, str]:
    """numpy kind + item size (``"i2"``) -> the array typecode of that size on this platform
    (C ``int``/``long`` sizes vary)."""
    out: dict[str, str] = {}
    for kind, codes in (("i", "bhilq"), ("u", "BHILQ"), ("f", "fd")):
        for code in codes:
            out.setdefault(f"{kind}{array(code).itemsize}", code)
    return out


_TYPECODES = _typecodes()


class NpyFormatError(ValueError):
    """Not an ``.npy`` file, or one with a layout or dtype this reader does not handle."""


@dataclass(frozen=True, slots=True)
class NpyArray:
    """An n-dimensional array as read: its ``shape`` and its elements in C (row-major) order."""

    shape: tuple[int, ...]
    data: array
    descr: str

    @property
    def typecode(self) -> str:
        return self.data.typecode


def typecode_for(descr: str) -> str:
    """The :mod:`array` typecode for a numpy ``descr`` such as ``'<i2'`` or ``'<f8'``."""
    if not isinstance(descr, str) or len(descr) < 3 or descr[0] not in "<>|=":
        raise NpyFormatError(f"unsupported dtype {descr!r}: expected a plain numeric dtype "
                             "such as '<i2', '<i4', '<f4' or '<f8'")
    code = _TYPECODES.get(descr[1:])
    if code is None:
        raise NpyFormatError(f"unsupported dtype {descr!r}: only signed/unsigned integers and "
                             "4- or 8-byte floats are read without numpy")
    if descr[0] == "|" and array(code).itemsize != 1:
        raise NpyFormatError(f"dtype {descr!r}: no byte order for a multi-byte type")
    return code


def _read_exactly(f: IO[bytes], n: int, what: str) -> bytes:
    chunks, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            raise NpyFormatError(f"truncated .npy: {what} needs {n} bytes, got {n - left}")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_header(f: IO[bytes]) -> tuple[str, bool, tuple[int, ...]]:
    """``(descr, fortran_order, shape)`` from the start of an ``.npy`` stream (left at the
    data)."""
    head = _read_exactly(f, 8, "the magic and version")
    if head[:6] != MAGIC:
        raise NpyFormatError(f"not an .npy file (starts with {head[:6]!r})")
    major, minor = head[6], head[7]
    if (major, minor) == (1, 0):
        (hlen,) = struct.unpack("<H", _read_exactly(f, 2, "the header length"))
    elif (major, minor) in ((2, 0), (3, 0)):
        (hlen,) = struct.unpack("<I", _read_exactly(f, 4, "the header length"))
    else:
        raise NpyFormatError(f"unsupported .npy version {major}.{minor}")
    text = _read_exactly(f, hlen, "the header").decode("utf-8" if major == 3 else "latin-1")
    try:
        header = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise NpyFormatError(f"bad .npy header {text.strip()!r}") from exc
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise NpyFormatError(f"bad .npy header {text.strip()!r}")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if (not isinstance(fortran, bool) or not isinstance(shape, tuple)
            or not all(isinstance(d, int) and d >= 0 for d in shape)):
        raise NpyFormatError(f"bad .npy header {text.strip()!r}")
    typecode_for(descr)  # an unsupported dtype fails before any data is read
    return descr, fortran, shape


def _fortran_to_c(data: array, shape: tuple[int, ...]) -> array:
    """Reorder column-major elements into row-major ones."""
    if len(shape) < 2 or len(data) == 0:
        return data
    if len(shape) == 2:
        rows, cols = shape
        out = array(data.typecode, bytes(len(data) * data.itemsize))
        for j in range(cols):
            out[j::cols] = data[j * rows:(j + 1) * rows]
        return out
    strides = [1]
    for dim in shape[:-1]:
        strides.append(strides[-1] * dim)
    return array(data.typecode, (
        data[sum(i * s for i, s in zip(index, strides, strict=True))]
        for index in itertools.product(*(range(d) for d in shape))))


def read_npy(f: IO[bytes]) -> NpyArray:
    """The array in an ``.npy`` stream (a file, or a member opened from a zip)."""
    descr, fortran, shape = read_header(f)
    data = array(typecode_for(descr))
    data.frombytes(_read_exactly(f, math.prod(shape) * data.itemsize, "the data"))
    native = "<" if sys.byteorder == "little" else ">"
    if descr[0] in "<>" and descr[0] != native and data.itemsize > 1:
        data.byteswap()
    if fortran:
        data = _fortran_to_c(data, shape)
    return NpyArray(shape, data, descr)


def load_npy(path: Path | str) -> NpyArray:
    with open(path, "rb") as f:
        return read_npy(f)


def npz_names(path: Path | str) -> list[str]:
    """The array names in an ``.npz`` (its members without ``.npy``)."""
    import zipfile  # only when a recording is replayed

    with zipfile.ZipFile(path) as z:
        return [n.removesuffix(".npy") for n in z.namelist()]


def load_npz_member(path: Path | str, name: str) -> NpyArray:
    """One array of an ``.npz``, reading (and decompressing) only that member: KeyError if
    the archive has no array ``name``."""
    import zipfile  # only when a recording is replayed

    with zipfile.ZipFile(path) as z:
        member = f"{name}.npy"
        try:
            info = z.getinfo(member)
        except KeyError:
            raise KeyError(f"{path} has no array {name!r}") from None
        with z.open(info) as f:
            return read_npy(f)
