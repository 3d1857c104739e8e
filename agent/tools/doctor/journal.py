"""Check 8: where the logs go."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .base import OK, WARN, Check
from .hints import HINT_JOURNAL

if TYPE_CHECKING:
    from agent.core.config import Config


# -- 8. journal --------------------------------------------------------------------------------
def check_journal(cfg: Config | None) -> Iterator[Check]:
    from agent.core.journal import DEFAULT_SOCKET, SOCKET_ENV

    path = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    target = cfg.log.target if cfg is not None else "auto"
    if is_socket:
        yield Check("journal", path, OK, f"journald socket present (log.target = {target})")
    elif target == "stderr":
        yield Check("journal", path, OK, "no journald socket; log.target = stderr anyway")
    else:
        yield Check("journal", path, WARN, f"no journald socket: logs go to stderr "
                    f"(log.target = {target})", HINT_JOURNAL)
