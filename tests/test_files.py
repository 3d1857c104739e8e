"""drivers.files.write_atomic: the one way the node replaces a file."""

from __future__ import annotations

import os
import stat

import pytest

from drivers.files import write_atomic


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
