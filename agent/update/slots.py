"""Release folders and the ``current``/``previous`` links under /opt/citynode.

Layout (docs/updates.md): ``releases/<version>/`` holds one release (``venv/``,
``MANIFEST.json``, ``share/``) and is never modified once its ``.complete`` marker is
written; ``current`` and ``previous`` are relative symbolic links to release folders,
switched atomically (a new link renamed over the old). The link primitives are shared
with the guard (:mod:`agent.update.guard`, one stdlib-only file).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from agent.update.guard import (
    COMPLETE,
    Paths,
    complete_releases,
    fsync_dir,
    is_complete,
    link_target,
    release_dir,
    repair_links,
    set_link,
)

__all__ = [
    "COMPLETE",
    "Paths",
    "complete_releases",
    "discard",
    "is_complete",
    "link_target",
    "prune",
    "release_dir",
    "repair_links",
    "running_slot",
    "set_link",
    "shared_venv_of",
    "switch",
]


def running_slot(prefix: str | None = None) -> str:
    """The release folder this interpreter runs from (``0.2.0``), or "" when citynode does
    not run from a release (a source checkout, the tests, an old /opt/citynode/venv)."""
    venv = Path(prefix if prefix is not None else sys.prefix)
    if venv.name == "venv" and venv.parent.parent.name == "releases":
        return venv.parent.name
    return ""


def switch(paths: Paths, version: str) -> str | None:
    """Make ``version`` current and the release that was current ``previous``; returns the
    release that was current. Idempotent: a rerun after a kill finishes the switch."""
    folder = release_dir(paths, version)
    if not is_complete(folder):
        raise FileNotFoundError(f"{folder} is not a complete release")
    was = link_target(paths.current)
    if was != version:
        if was and is_complete(release_dir(paths, was)):
            set_link(paths.previous, was)
        set_link(paths.current, version)
    return was


TRASH = ".remove-"  # a release being removed is first renamed to this prefix


def shared_venv_of(folder: Path) -> str | None:
    """The release whose venv a models-only release uses (its ``venv`` links to
    ``../<base>/venv``), or None."""
    venv = folder / "venv"
    if not venv.is_symlink():
        return None
    target = Path(os.readlink(venv))
    return target.parent.name if target.name == "venv" and target.parent.name else None


def discard(folder: Path) -> None:
    """Remove a release folder: renamed hidden first (atomic: never half a release under
    its name), then deleted; a kill in between leaves what the next prune deletes."""
    trash = folder.with_name(TRASH + folder.name)
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune(paths: Paths, keep: int, *, protect: Iterable[str] = (),
          failed: Iterable[str] = ()) -> list[str]:
    """Remove the release folders an SD card need not keep; the names removed.

    Kept: ``current``, ``previous``, the names in ``protect`` (a release being installed),
    then the newest complete releases until ``keep`` are kept in all, and every release
    whose venv a kept models release uses. Releases in ``failed`` (one that failed its gate) count
    only when a link names them. Everything else under ``releases/`` goes: older
    releases, incomplete ones, ``.tmp`` leftovers of a kill. Each is first renamed to a
    hidden name, then deleted, so a kill halfway never leaves a folder that looks like a
    release; leftovers of such a kill are deleted by the next prune.
    """
    protected = set(protect)
    linked = {v for v in (link_target(paths.current), link_target(paths.previous)) if v}
    kept = linked | protected
    skip = set(failed) - linked
    for version in complete_releases(paths):  # newest first
        if len(kept) >= keep:
            break
        if version not in skip:
            kept.add(version)
    todo = list(kept)
    while todo:  # what kept models releases share
        base = shared_venv_of(release_dir(paths, todo.pop()))
        if base and base not in kept:
            kept.add(base)
            todo.append(base)
    try:
        entries = sorted(paths.releases.iterdir())
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for entry in entries:
        name = entry.name
        if entry.is_symlink() or not entry.is_dir():
            continue  # not a folder we made
        if name.startswith(TRASH):
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if name.startswith(".") or name in kept:
            continue
        if name.endswith(".tmp") and name[:-4] in protected:
            continue
        discard(entry)
        removed.append(name)
    if removed:
        fsync_dir(paths.releases)
    return removed
