"""The update state file, ``<state_dir>/update/state.json``: one writer at a time.

The daemon (user citynode) writes it while it downloads and when it confirms the gate;
root (the installer, the guard) while it installs, switches and rolls back. Writes are
atomic and fsync'd; a missing or torn file reads as ``idle``. The primitives live in
:mod:`agent.update.guard`, which must stay one stdlib-only file; this module is the
interface the rest of citynode uses.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.update.guard import (
    BUSY,
    OUTCOMES,
    PHASES,
    Paths,
    new_state,
    read_state,
    write_state,
)

__all__ = [
    "BUSY",
    "OUTCOMES",
    "PHASES",
    "Paths",
    "busy",
    "gate_pending",
    "new_state",
    "read_state",
    "record_result",
    "set_phase",
    "summary",
    "write_state",
]


def gate_pending(env: Mapping[str, str] = os.environ) -> bool:
    """A health gate is open and unconfirmed (the state under systemd's STATE_DIRECTORY,
    else /var/lib/citynode): a start that fails must be one systemd restarts."""
    base = (env.get("STATE_DIRECTORY") or "/var/lib/citynode").split(":")[0]
    s = read_state(Path(base) / "update" / "state.json")
    return s["phase"] == "gate" and not (s.get("gate") or {}).get("ok")


def busy(state: dict[str, Any]) -> bool:
    """An update is under way (downloading .. gate): a new one is refused."""
    return state.get("phase") in BUSY


def set_phase(path: Path, state: dict[str, Any], phase: str,
              clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Move to ``phase`` and write the state."""
    if phase not in PHASES:
        raise ValueError(f"unknown update phase {phase!r}")
    state["phase"] = phase
    write_state(path, state, clock)
    return state


def record_result(path: Path, state: dict[str, Any], outcome: str, reason: str,
                  clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """End an update with ``outcome`` (the phase follows: refused -> failed)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown update outcome {outcome!r}")
    version = (state.get("target") or {}).get("version")
    state["result"] = {"version": version, "outcome": outcome, "reason": reason[:200],
                       "at": round(clock(), 3), "reported": False}
    state["phase"] = {"refused": "failed"}.get(outcome, outcome)
    write_state(path, state, clock)
    return state


def summary(state: dict[str, Any]) -> str:
    """One word or two for birth, health and status: ``confirmed 0.2.0``, ``gate 0.2.0``,
    ``rolled_back 0.2.0``; empty for a node that never updated."""
    phase = state.get("phase") or "idle"
    target = (state.get("target") or {}).get("version") or ""
    if phase == "idle":
        return ""
    if phase in ("confirmed", "rolled_back", "failed"):
        result = state.get("result") or {}
        return f"{result.get('outcome') or phase} {result.get('version') or target}".strip()
    return f"{phase} {target}".strip()
