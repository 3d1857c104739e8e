"""drivers.emulation.npy: the numpy-free .npy/.npz reader, checked against numpy's writer."""

from __future__ import annotations

import io
import struct
import zipfile
from array import array

import pytest

from drivers.emulation.npy import (
    NpyFormatError,
    load_npy,
    load_npz_member,
    npz_names,
    read_header,
    read_npy,
    typecode_for,
)

try:
    import numpy as np
except ImportError:  # the reader exists for numpy-free processes; only the cross-checks need it
    np = None

needs_numpy = pytest.mark.skipif(np is None, reason="numpy not installed (writes the references)")

DTYPES = ["<i1", "|u1", "<i2", ">i2", "<u2", "<i4", ">i4", "<u4", "<i8", "<u8", "<f4", ">f4",
          "<f8", ">f8"]


def npy_bytes(a, **kw) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, **kw)
    return buf.getvalue()


def same(got, want) -> None:
    """The reader's result holds numpy's array: shape, element type and every value."""
    assert got.shape == want.shape
    assert got.data.itemsize == want.dtype.itemsize
    assert got.data.tolist() == want.ravel(order="C").tolist()


def sample(dtype: str, shape: tuple[int, ...]):
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dt)
    info, native = np.iinfo(dt), dt.newbyteorder("=")
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=native).astype(dt)


@needs_numpy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 3), (5,), (2, 3, 4), (), (0, 3)])
def test_reads_what_numpy_writes_in_c_order(dtype, shape):
    a = sample(dtype, shape)
    same(read_npy(io.BytesIO(npy_bytes(a))), a)


@needs_numpy
@pytest.mark.parametrize("dtype", ["<i2", "<f8", ">f4"])
@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (2, 3, 4), (4, 1, 2, 3)])
def test_fortran_order_comes_back_in_c_order(dtype, shape):
    a = np.asfortranarray(sample(dtype, shape))
    raw = npy_bytes(a)
    assert read_header(io.BytesIO(raw))[1] is True  # really written column-major
    same(read_npy(io.BytesIO(raw)), a)


@needs_numpy
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_format_versions(version):
    a = sample("<f4", (4, 3))
    got = read_npy(io.BytesIO(npy_bytes(a, version=version)))
    same(got, a)
    assert got.typecode == "f" and got.descr == "<f4"


@needs_numpy
def test_npz_reads_one_member_of_a_compressed_archive(tmp_path, monkeypatch):
    path = tmp_path / "s.npz"
    arrays = {"D01_R01": sample("<i2", (400, 3)), "F05_R01": sample("<i2", (300, 3)),
              "X": sample("<f8", (3,))}
    np.savez_compressed(path, **arrays)
    assert npz_names(path) == list(arrays)
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *a, **kw):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *a, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    got = load_npz_member(path, "F05_R01")
    assert opened == ["F05_R01.npy"]  # the other trials are not decompressed
    same(got, arrays["F05_R01"])
    assert got.typecode == "h"
    with pytest.raises(KeyError, match="no array 'F99_R01'"):
        load_npz_member(path, "F99_R01")


@needs_numpy
def test_load_npy_file(tmp_path):
    a = sample("<i4", (6, 2))
    np.save(tmp_path / "a.npy", a)
    same(load_npy(tmp_path / "a.npy"), a)


@needs_numpy
@pytest.mark.parametrize("dtype", ["<c16", "|b1", "<U3", "|O", "<f2", "<M8[s]"])
def test_other_dtypes_are_refused_clearly(dtype):
    a = np.zeros(3, dtype=dtype)
    raw = npy_bytes(a, allow_pickle=True) if dtype == "|O" else npy_bytes(a)
    with pytest.raises(NpyFormatError, match="unsupported dtype"):
        read_npy(io.BytesIO(raw))


@needs_numpy
def test_structured_dtype_is_refused():
    a = np.zeros(2, dtype=[("x", "<i2"), ("y", "<f4")])
    with pytest.raises(NpyFormatError, match="unsupported dtype"):
        read_npy(io.BytesIO(npy_bytes(a)))


def header(text: str, version: bytes = b"\x01\x00") -> bytes:
    body = text.encode("latin-1")
    return b"\x93NUMPY" + version + struct.pack("<H", len(body)) + body


@pytest.mark.parametrize(("raw", "message"), [
    (b"PK\x03\x04 not an npy", "not an .npy file"),
    (b"\x93NUMPY\x04\x00\x00\x00", "unsupported .npy version 4.0"),
    (header("{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }"), "truncated"),
    (header("{'descr': '<i2', 'shape': (2,), }"), "bad .npy header"),
    (header("{'descr': '<i2', 'fortran_order': False, 'shape': (-1,), }"), "bad .npy header"),
    (header("{'descr': '<i2', 'fortran_order': 0, 'shape': (2,), }"), "bad .npy header"),
    (header("__import__('os')"), "bad .npy header"),
    (b"\x93NU", "truncated"),
])
def test_damaged_files_raise_npy_format_error(raw, message):
    with pytest.raises(NpyFormatError, match=message):
        read_npy(io.BytesIO(raw))


def test_typecodes_match_item_sizes():
    for descr, size in (("<i2", 2), ("<i4", 4), ("<u8", 8), ("<f4", 4), ("<f8", 8), ("|i1", 1)):
        assert array(typecode_for(descr)).itemsize == size
    with pytest.raises(NpyFormatError, match="no byte order"):
        typecode_for("|i4")


@needs_numpy
def test_reads_the_sisfall_layout():
    """What the data set holds (int16 (n, 3), C order, compressed npz), without the data set."""
    a = np.arange(-300, 300, dtype="<i2").reshape(-1, 3)
    buf = io.BytesIO()
    np.savez_compressed(buf, F01_R01=a)
    buf.seek(0)
    with zipfile.ZipFile(buf) as z, z.open("F01_R01.npy") as f:
        got = read_npy(f)
    assert got.shape == (200, 3) and got.typecode == "h" and got.data.tolist() == a.ravel().tolist()


def test_hand_made_files():
    """The layouts spelled out byte by byte (runs without numpy)."""
    data = struct.pack("<6h", 1, 2, 3, -4, -5, -6)
    got = read_npy(io.BytesIO(
        header("{'descr': '<i2', 'fortran_order': False, 'shape': (2, 3), }") + data))
    assert got.shape == (2, 3) and got.data == array("h", [1, 2, 3, -4, -5, -6])
    got = read_npy(io.BytesIO(
        header("{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3), }") + data))
    assert got.data == array("h", [1, 3, -5, 2, -4, -6])  # columns (1, 2), (3, -4), (-5, -6)
    got = read_npy(io.BytesIO(
        header("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }")
        + struct.pack(">2d", 1.5, -2.25)))
    assert got.typecode == "d" and got.data.tolist() == [1.5, -2.25]
    body = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"
    got = read_npy(io.BytesIO(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(body)) + body
                              + struct.pack("<f", 0.5)))
    assert got.data.tolist() == [0.5]
