"""Release folders and the ``current``/``previous`` links under /opt/citynode.

Layout (docs/updates.md): ``releases/<version>/`` holds one release (``venv/``,
``MANIFEST.json``, ``share/``) and is never modified once its ``.complete`` marker is
written; ``current`` and ``previous`` are relative symbolic links to release folders,
switched atomically (a new link renamed over the old). The link primitives are shared
with the guard (:mod:`agent.update.guard`, one stdlib-only file).
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.update.guard import (
    COMPLETE,
    Paths,
    complete_releases,
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
    "is_complete",
    "link_target",
    "release_dir",
    "repair_links",
    "running_slot",
    "set_link",
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
