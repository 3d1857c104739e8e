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

A running daemon is never disturbed: when its status snapshot names a live citynode,
the checks that would open its serial ports, I2C buses and GPIO pins are not run; their
rows say to stop it first and show the daemon's own view of each sensor (daemon.py).

Exit codes: 0 nothing failed, 1 a check failed, 78 (EX_CONFIG) the configuration
itself is invalid (the daemon would refuse to start).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import hints
from .base import CHECKS, DEFAULT_LISTEN_S, FAIL, OK, WARN, Check, Task, run_tasks
from .broker import CONNECT_TIMEOUT_S, broker_targets, check_broker, check_one_broker
from .clock import check_clock
from .config import check_config
from .daemon import RunningDaemon, find_running_daemon, not_checked, sensor_views
from .disk import check_disk, spool_path
from .gpio import check_gpio
from .i2c import check_i2c, check_i2c_bus
from .journal import check_journal
from .serial import check_serial_sensor

if TYPE_CHECKING:
    from agent.core.config import Config

__all__ = [
    "CHECKS", "DEFAULT_LISTEN_S", "FAIL", "OK", "WARN", "Check", "RunningDaemon", "Task",
    "build_tasks", "check_broker", "check_clock", "check_config", "check_disk", "check_gpio",
    "check_i2c", "check_i2c_bus", "check_journal", "check_serial_sensor", "cmd_doctor",
    "find_running_daemon", "hints", "register", "render_json", "render_table", "run",
    "run_tasks",
]
#: ``run(daemon=AUTO)``: look for a running daemon (tests pass one, or None).
AUTO = "auto"
#: The checks that open what a running daemon holds.
HARDWARE = ("i2c", "serial", "gpio")


# -- the run -----------------------------------------------------------------------------------
def _daemon_tasks(cfg: Config, want: set[str], daemon: RunningDaemon) -> list[Task]:
    """While a daemon runs: no port, bus or pin is opened; a row per check says so, and
    each sensor's row is the daemon's own view of it (its status snapshot)."""
    from drivers.catalogue import spec_of

    tasks: list[Task] = []
    i2c = {s.name: (f"{'emulator' if s.bus == 'emulator' else f'/dev/i2c-{s.bus}'} "
                    f"0x{s.address:02x} ({s.name})")
           for s in cfg.sensor if spec_of(s).bus == "i2c"}
    uart = {s.name: f"{s.name} {s.port}" for s in cfg.sensor if spec_of(s).bus == "uart"}
    for name, targets, what in (("i2c", i2c, "the I2C buses"),
                                ("serial", uart, "the serial ports")):
        if name in want and targets:
            tasks.append(Task(name, daemon.label(), lambda n=name, t=targets, w=what: [
                not_checked(n, daemon, w), *sensor_views(n, cfg, daemon, t)], 5.0))
    if "gpio" in want:
        def gpio() -> list[Check]:
            from .gpio import gpio_uses

            rows = list(check_gpio(cfg, claim=False))  # the clashes: from the file alone
            if gpio_uses(cfg):
                rows.append(not_checked("gpio", daemon, "the GPIO pins"))
            return rows
        tasks.append(Task("gpio", "GPIO", gpio, 15.0))
    return tasks


def build_tasks(cfg: Config | None, *, listen_s: float = DEFAULT_LISTEN_S,
                only: Iterable[str] = CHECKS, daemon: RunningDaemon | None = None
                ) -> list[Task]:
    """The checks to run for ``cfg`` (None: only those that need no configuration);
    with ``daemon`` running, none that would open what it holds."""
    want = set(only)
    tasks: list[Task] = []
    if cfg is not None and daemon is not None:
        tasks += _daemon_tasks(cfg, want, daemon)
    elif cfg is not None:
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
    if cfg is not None and "broker" in want:
        if cfg.local_mode:
            tasks.append(Task("broker", "mqtt.host", lambda: check_broker(cfg), 5.0))
        for target, m, failover in broker_targets(cfg):  # one task each: side by side
            tasks.append(Task("broker", target,
                              lambda t=target, m=m, f=failover: check_one_broker(cfg, m, t, f),
                              4 * CONNECT_TIMEOUT_S + 2))
    if "clock" in want:
        tasks.append(Task("clock", "NTP", check_clock, 8.0))
    if cfg is not None and "disk" in want:
        tasks.append(Task("disk", spool_path(cfg), lambda: check_disk(cfg), 5.0))
    if "journal" in want:
        tasks.append(Task("journal", "journald", lambda: check_journal(cfg), 3.0))
    return tasks


def run(config_path: str, *, listen_s: float = DEFAULT_LISTEN_S,
        only: Iterable[str] = CHECKS,
        daemon: RunningDaemon | str | None = AUTO) -> tuple[list[Check], int]:
    """Every check's rows, and the exit code (0, 1, or 78 for an invalid configuration).
    ``daemon``: :data:`AUTO` looks for a running citynode (its status snapshot)."""
    cfg, row, invalid = check_config(config_path)
    only = tuple(only)
    running = daemon if isinstance(daemon, RunningDaemon) else None
    if daemon == AUTO and cfg is not None and set(only) & set(HARDWARE):
        running = find_running_daemon(cfg.node.resolved_state_dir())
    rows = [row, *run_tasks(build_tasks(cfg, listen_s=listen_s, only=only, daemon=running))]
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
    out.append(f"\n{summary(rows)}")
    return "\n".join(out)


def summary(rows: Sequence[Check]) -> str:
    """The table's last line: how many results, and of each verdict."""
    counts = {s: sum(r.status == s for r in rows) for s in (OK, WARN, FAIL)}
    return (f"{len(rows)} results: {counts[OK]} OK, {counts[WARN]} WARN, "
            f"{counts[FAIL]} FAIL")


def render_json(rows: Sequence[Check], exit_code: int, *, config: str = "") -> str:
    """The machine-readable output shared with status and config check
    (agent/tools/machine.py; docs/doctor.md "Machine-readable output")."""
    from agent.tools.machine import document, dumps

    return dumps(document("doctor", exit_code, summary(rows), config=config,
                          rows=[r.as_dict() for r in rows]))


# -- command line ------------------------------------------------------------------------------
def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown check(s) {bad}; known: {', '.join(CHECKS)}")
    return names


def _listen(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r} (between 0.2 "
                                         "and 120, e.g. --listen-s 5)") from None
    if not 0.2 <= value <= 120:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text} is out of range: between 0.2 and 120 "
                                         "seconds")
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
        sys.stdout.write(render_json(rows, code, config=args.config))
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
    d.add_argument("--json", action="store_true", help="machine-readable output: one JSON "
                   "object (command, ok, exit, summary, counts, rows; docs/doctor.md)")
    d.add_argument("--listen-s", type=_listen, default=DEFAULT_LISTEN_S, metavar="SECONDS",
                   help=f"how long to listen on each serial port (default {DEFAULT_LISTEN_S:g})")
    d.add_argument("--only", type=_only, metavar="CHECKS",
                   help=f"comma-separated subset of: {', '.join(CHECKS)} (config always runs)")
    d.set_defaults(func=cmd_doctor)
