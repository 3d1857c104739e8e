"""drivers.files.write_atomic: the one way the node replaces a file."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest
from file_kinds import KINDS, WRITABLE, check_outcome, make, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.files import NotRegularFile, write_atomic


def mode_of(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_replaces_with_open_modes_by_default(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    old = os.umask(0o027)
    try:
        write_atomic(target, "new ü")
    finally:
        os.umask(old)
    assert target.read_bytes() == "new ü".encode()
    assert mode_of(target) == 0o640  # what open() gives a new file under that umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_exact_mode_whatever_the_umask_and_no_fsync(tmp_path):
    target = tmp_path / "status.json"
    old = os.umask(0o077)
    try:
        write_atomic(target, b"{}\n", mode=0o644, fsync=False)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"{}\n" and mode_of(target) == 0o644


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "baselines.json"
    target.write_text("old")

    def no_space(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baselines.json"]


def test_missing_folder_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "nowhere" / "f", "x")


# -- only ever a regular file; symlinks written through ------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_write_atomic_by_kind(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "f"
    make(target, kind)
    before = snapshot(tmp_path)
    if kind in WRITABLE:
        assert write_atomic(target, b"new", mode=0o600) == Path(os.path.realpath(target))
        assert mode_of(target) == 0o600
    else:
        with pytest.raises(OSError) as err:
            write_atomic(target, b"new")
        assert isinstance(err.value, NotRegularFile) or err.value.errno == errno.ELOOP
        assert str(target) in str(err.value)
    check_outcome(tmp_path, "f", kind, before, kind in WRITABLE, b"new")


def test_refusal_names_the_kind(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    (tmp_path / "l").symlink_to("p")
    with pytest.raises(NotRegularFile, match=r"is a FIFO \(named pipe\), not a regular file"):
        write_atomic(tmp_path / "l", "x")
    with pytest.raises(NotADirectoryError):  # a FIFO is no folder either
        write_atomic(tmp_path / "p" / "x", "x")


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(KINDS), data=st.binary(max_size=64),
       mode=st.sampled_from([None, 0o600, 0o644]))
def test_write_atomic_never_replaces_what_is_not_a_regular_file(kind: str, data: bytes,
                                                                 mode: int | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        make(folder / "f", kind)
        before = snapshot(folder)
        try:
            write_atomic(folder / "f", data, mode=mode, fsync=False)
            wrote = True
        except OSError:
            wrote = False
        assert wrote == (kind in WRITABLE)
        check_outcome(folder, "f", kind, before, wrote, data)
