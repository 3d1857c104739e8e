"""Check 1: the configuration parses, validates and its secrets are safe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import FAIL, OK, Check
from .hints import HINT_CONFIG

if TYPE_CHECKING:
    from agent.core.config import Config


# -- 1. configuration -----------------------------------------------------------------------
def _security_text(exc: Any) -> str:
    """A SecurityError without its fix (which goes in the hint column)."""
    where = f"{exc.what} {exc.path}" if exc.path else exc.what
    return f"{where}: {exc.problem}"


def check_config(path: str) -> tuple[Config | None, Check, bool]:
    """Parse the file (device paths are the other checks' business) and the security files.

    Returns the configuration (None if it does not parse), the row, and whether the
    daemon would refuse it (exit 78): a security file it cannot use counts, as in
    ``citynode config check``, but the other checks can still run.
    """
    from agent.core.config import ConfigError, load

    try:
        cfg = load(path, check_devices=False)
    except ConfigError as exc:
        return None, Check("config", path, FAIL, str(exc), HINT_CONFIG), True
    if not cfg.local_mode:
        from agent.wire.security import SecurityError, validate_security

        try:
            validate_security(cfg.mqtt)
        except SecurityError as exc:
            return cfg, Check("config", path, FAIL, _security_text(exc),
                              exc.fix or HINT_CONFIG), True
    from agent.core.sensors import type_name

    types = sorted({type_name(s) for s in cfg.sensor})
    mode = "local mode" if cfg.local_mode else f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    return cfg, Check("config", path, OK, f"node {cfg.node.id}, {len(cfg.sensor)} sensor(s)"
                      + (f" ({', '.join(types)})" if types else "") + f", {mode}"), False
