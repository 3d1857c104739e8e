"""Check 7: a place and room for the spool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .base import FAIL, OK, WARN, Check
from .hints import HINT_DISK_FULL

if TYPE_CHECKING:
    from agent.core.config import Config

HINT_SPOOL_PLACE = ("point spool.path (or node.state_dir) at a file in a directory the "
                    "citynode user can write; under the systemd unit that is /var/lib/citynode, "
                    "anywhere else needs ReadWritePaths= in a drop-in (docs/ops.md)")

# -- 7. disk -----------------------------------------------------------------------------------
def spool_path(cfg: Config) -> str:
    return cfg.spool.path or os.path.join(cfg.node.resolved_state_dir(), "spool.db")


def spool_place_problem(cfg: Config) -> str | None:
    """Why the service's user could not create or write the spool (None: it could), as
    ``citynode config check`` asks it: the unit's state directory may be missing, since
    systemd creates it (StateDirectory=)."""
    from agent.core import hostcheck

    state = cfg.node.resolved_state_dir()
    if not cfg.spool.path and not cfg.node.state_dir and not state.exists():
        return None
    path = spool_path(cfg)
    user = hostcheck.service_user()
    return (hostcheck.dir_problem(os.path.dirname(os.path.abspath(path)), user)
            or hostcheck.writable_file_problem(path, user))


def _mib(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.1f} MiB"


def check_disk(cfg: Config) -> Iterator[Check]:
    """The daemon can create and write its spool there (else it exits 78 at start), and
    the free space where it lives against spool.max_bytes."""
    path = spool_path(cfg)
    problem = spool_place_problem(cfg)
    if problem:
        key = "spool.path" if cfg.spool.path else "node.state_dir"
        yield Check("disk", path, FAIL, f"{key}: {problem}", HINT_SPOOL_PLACE)
        return
    probe = os.path.dirname(os.path.abspath(path))
    missing = ""
    if not os.path.exists(probe):
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        missing = f" ({os.path.dirname(path)} does not exist yet; measured on {probe})"
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    want = cfg.spool.max_bytes
    detail = f"{_mib(free)} free, spool.max_bytes {_mib(want)}{missing}"
    if free < want:
        yield Check("disk", path, FAIL, detail, HINT_DISK_FULL)
    elif free < 2 * want:
        yield Check("disk", path, WARN, f"{detail}: less than twice the bound", HINT_DISK_FULL)
    else:
        yield Check("disk", path, OK, detail)
