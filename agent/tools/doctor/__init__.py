"""``citynode doctor``: what the configuration expects against what is actually there.

Field installers run it on site after wiring a node (and it runs against the
emulators too). It never changes the configuration and never switches a load: it
parses the configuration, scans the I2C buses and identifies the chips, listens
to every serial sensor through the daemon's own drivers and codecs, claims the
GPIO pins the way the daemon would, connects to the broker, and looks at the
clock, the disk and the journal. The result is one table, one row per finding,
with a fix for every WARN and FAIL (docs/doctor.md lists them all).

Every check runs on its own thread with its own time limit: a hung port or an
unreachable broker costs its own row, never the run. An unexpected exception in
a check becomes a FAIL row carrying the exception text.

Exit codes: 0 nothing failed, 1 a check failed, 78 (EX_CONFIG) the configuration
itself is invalid (the daemon would refuse to start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import hints
from .base import CHECKS, DEFAULT_LISTEN_S, FAIL, OK, WARN, Check, Task, run_tasks
from .broker import CONNECT_TIMEOUT_S, check_broker
from .clock import check_clock
from .config import check_config
from .disk import check_disk, spool_path
from .gpio import check_gpio
from .i2c import check_i2c, check_i2c_bus
from .journal import check_journal
from .serial import check_serial_sensor

if TYPE_CHECKING:
    from agent.core.config import Config

__all__ = [
    "CHECKS", "DEFAULT_LISTEN_S", "FAIL", "OK", "WARN", "Check", "Task", "build_tasks",
    "check_broker", "check_clock", "check_config", "check_disk", "check_gpio", "check_i2c",
    "check_i2c_bus", "check_journal", "check_serial_sensor", "cmd_doctor", "hints",
    "register", "render_json", "render_table", "run", "run_tasks",
]


# -- the run -----------------------------------------------------------------------------------
def build_tasks(cfg: Config | None, *, listen_s: float = DEFAULT_LISTEN_S,
                only: Iterable[str] = CHECKS) -> list[Task]:
    """The checks to run for ``cfg`` (None: only those that need no configuration)."""
    want = set(only)
    tasks: list[Task] = []
    if cfg is not None:
        from drivers.catalogue import spec_of

        if "i2c" in want and any(spec_of(s).bus == "i2c" for s in cfg.sensor):
            tasks.append(Task("i2c", "I2C buses", lambda: check_i2c(cfg), 30.0))
        if "serial" in want:
            for s in cfg.sensor:
                if spec_of(s).bus == "uart":
                    tasks.append(Task("serial", f"{s.name} {s.port}",
                                      lambda s=s: check_serial_sensor(s, listen_s=listen_s),
                                      listen_s + 10.0))
        if "gpio" in want:
            tasks.append(Task("gpio", "GPIO", lambda: check_gpio(cfg), 15.0))
        if "broker" in want:
            target = f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.host else "mqtt.host"
            tasks.append(Task("broker", target, lambda: check_broker(cfg),
                              4 * CONNECT_TIMEOUT_S + 2))
    if "clock" in want:
        tasks.append(Task("clock", "NTP", check_clock, 8.0))
    if cfg is not None and "disk" in want:
        tasks.append(Task("disk", spool_path(cfg), lambda: check_disk(cfg), 5.0))
    if "journal" in want:
        tasks.append(Task("journal", "journald", lambda: check_journal(cfg), 3.0))
    return tasks


def run(config_path: str, *, listen_s: float = DEFAULT_LISTEN_S,
        only: Iterable[str] = CHECKS) -> tuple[list[Check], int]:
    """Every check's rows, and the exit code (0, 1, or 78 for an invalid configuration)."""
    cfg, row, invalid = check_config(config_path)
    rows = [row, *run_tasks(build_tasks(cfg, listen_s=listen_s, only=only))]
    if invalid:
        from agent.core.config import EX_CONFIG

        return rows, EX_CONFIG
    return rows, 1 if any(r.status == FAIL for r in rows) else 0


# -- output ------------------------------------------------------------------------------------
_COLOURS = {OK: "\033[32m", WARN: "\033[33m", FAIL: "\033[31m"}


def render_table(rows: Sequence[Check], *, colour: bool = False) -> str:
    """Aligned columns; each WARN/FAIL row is followed by its fix under DETAIL."""
    head = ("CHECK", "TARGET", "RESULT", "DETAIL")
    widths = [max(len(head[0]), *(len(r.name) for r in rows)),
              max(len(head[1]), *(len(r.target) for r in rows)),
              max(len(head[2]), 4)]
    indent = sum(widths) + 2 * 3

    def line(cells: Sequence[str], status: str = "") -> str:
        a, b, c, d = cells
        res = c.ljust(widths[2])
        if colour and status in _COLOURS:
            res = f"{_COLOURS[status]}{res}\033[0m"
        return f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {res}  {d}".rstrip()

    out = [line(head)]
    for r in rows:
        out.append(line((r.name, r.target, r.status, r.detail), r.status))
        if r.hint and r.status != OK:
            out.append(" " * indent + f"fix: {r.hint}")
    counts = {s: sum(r.status == s for r in rows) for s in (OK, WARN, FAIL)}
    out.append(f"\n{len(rows)} results: {counts[OK]} OK, {counts[WARN]} WARN, "
               f"{counts[FAIL]} FAIL")
    return "\n".join(out)


def render_json(rows: Sequence[Check]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=1, ensure_ascii=False)


# -- command line ------------------------------------------------------------------------------
def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown check(s) {bad}; known: {', '.join(CHECKS)}")
    return names


def _listen(text: str) -> float:
    value = float(text)
    if not 0.2 <= value <= 120:
        raise argparse.ArgumentTypeError("must be between 0.2 and 120 seconds")
    return value


def cmd_doctor(args: argparse.Namespace) -> int:
    # Drivers log what they see (e.g. "did not answer"); the table says it, once.
    quiet = logging.NullHandler()
    loggers = [logging.getLogger(n) for n in ("drivers", "agent", "citynode")]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(quiet)
        lg.propagate = False
    try:
        rows, code = run(args.config, listen_s=args.listen_s, only=args.only or CHECKS)
    finally:
        for lg, propagate in saved:
            lg.removeHandler(quiet)
            lg.propagate = propagate
    if args.json:
        print(render_json(rows))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(render_table(rows, colour=colour))
    return code


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:
    """Add ``citynode doctor`` to the command line (called by agent.tools.cli)."""
    d = sub.add_parser("doctor", help="check on site what the configuration expects against "
                       "what is there: I2C chips, serial sensors, GPIO, broker, clock, disk")
    d.add_argument("--config", "-c", default=default_cfg,
                   help=f"TOML file (default {default_cfg})")
    d.add_argument("--json", action="store_true", help="machine-readable output: a JSON list")
    d.add_argument("--listen-s", type=_listen, default=DEFAULT_LISTEN_S, metavar="SECONDS",
                   help=f"how long to listen on each serial port (default {DEFAULT_LISTEN_S:g})")
    d.add_argument("--only", type=_only, metavar="CHECKS",
                   help=f"comma-separated subset of: {', '.join(CHECKS)} (config always runs)")
    d.set_defaults(func=cmd_doctor)
