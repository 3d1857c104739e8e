"""Check 1: the configuration parses, validates and its secrets are safe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import FAIL, OK, WARN, Check
from .hints import HINT_CONFIG, HINT_CONFIG_FILE

if TYPE_CHECKING:
    from agent.core.config import Config


# -- 1. configuration -----------------------------------------------------------------------
def _security_text(exc: Any) -> str:
    """A SecurityError without its fix (which goes in the hint column)."""
    where = f"{exc.what} {exc.path}" if exc.path else exc.what
    at = getattr(exc, "where", "")  # CONFIG:LINE of the setting
    return (f"{at}: " if at else "") + f"{where}: {exc.problem}"


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
        # a missing or unreadable file has no key to fix (ConfigError.code 66)
        hint = getattr(exc, "hint", "") or (
            HINT_CONFIG_FILE if getattr(exc, "code", 78) != 78 else HINT_CONFIG)
        return None, Check("config", path, FAIL, str(exc), hint), True
    if not cfg.local_mode:
        from agent.wire.security import SecurityError, validate_security

        try:
            validate_security(cfg.mqtt, config_path=path)
        except SecurityError as exc:
            return cfg, Check("config", path, FAIL, _security_text(exc),
                              exc.fix or HINT_CONFIG), True
    from agent.core.sensors import type_name
    from agent.update.bundle import update_keys_problem

    keys = update_keys_problem(cfg.update.enabled, cfg.update.keys_dir)
    if keys is not None:  # the node runs, but no update could ever verify
        return cfg, Check("config", path, WARN, keys, "citynode provision --fleet-key "
                          "FILE.pub (docs/updates.md), or [update] enabled = false"), False
    types = sorted({type_name(s) for s in cfg.sensor})
    mode = "local mode" if cfg.local_mode else f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    return cfg, Check("config", path, OK, f"node {cfg.node.id}, {len(cfg.sensor)} sensor(s)"
                      + (f" ({', '.join(types)})" if types else "") + f", {mode}"), False
