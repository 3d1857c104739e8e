"""Check 7: room for the spool."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .base import FAIL, OK, WARN, Check
from .hints import HINT_DISK_FULL

if TYPE_CHECKING:
    from agent.core.config import Config


# -- 7. disk -----------------------------------------------------------------------------------
def spool_path(cfg: Config) -> str:
    return cfg.spool.path or os.path.join(cfg.node.resolved_state_dir(), "spool.db")


def _mib(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.1f} MiB"


def check_disk(cfg: Config) -> Iterator[Check]:
    """Free space where the spool lives against spool.max_bytes."""
    path = spool_path(cfg)
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
