"""``citynode run --once``: read every configured sensor once and print the pack that would
be sent (as ``telegraf --test`` does), to check a site's wiring and configuration.

The sensors are opened and read by the daemon's own drivers and sampling loops
(:func:`agent.core.sensors.build_device`, :class:`agent.core.sampling.SensorLoop`), their
first window is closed by the daemon's aggregator and turned into the daemon's telemetry
pack (:meth:`agent.core.daemon.Node.report`), which is printed as readable JSON. Nothing
else of the daemon runs: no broker, no spool, no status file, no systemd notification, no
state written (an SGP30's baseline stays in memory), and no features (relays keep their
state; occupancy, alarms and the like are not computed).

Exit 0 when every sensor gave at least one reading within the wait, 1 otherwise (also
when no sensor is configured): each sensor that gave none is named with its reason.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TextIO

from agent.core.aggregate import Aggregator
from agent.core.config import Config
from agent.core.daemon import Node
from agent.core.sampling import Health, SensorLoop
from agent.core.sensors import build_device, latest_values, valid_range
from agent.core.systemd import Notifier
from agent.wire import formats
from agent.wire.model import to_readable
from agent.wire.uplink import Message

EX_OK = 0
EX_NO_READING = 1
#: Beyond the longest warm-up: time for a few reads at the slowest read interval.
MARGIN_S = 10.0
MAX_WAIT_S = 3600.0


def default_wait_s(cfg: Config) -> float:
    """Long enough for every sensor's warm-up and a few of its reads."""
    longest = 0.0
    for s in cfg.sensor:
        warm = float(getattr(s, "warmup_s", 0.0) or 0.0)
        read = float(getattr(s, "read_interval_s", 1.0) or 1.0)
        longest = max(longest, warm + 3 * read)
    return min(MAX_WAIT_S, longest + MARGIN_S)


def _why(health: Health, detail: str) -> str:
    """Why a sensor gave no reading, from its sampling loop's last health."""
    if health is Health.OK:
        return "the port opened but nothing came (wiring, baud rate, power?)"
    if health is Health.WARMING_UP:
        return "still warming up (a longer --wait?)"
    return health.value + (f" ({detail})" if detail else "")


class _OnceNode(Node):
    """The daemon's report logic with its messages kept instead of sent."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg, notifier=Notifier(None))
        self.sent: list[Message] = []

    def send(self, msg: Message) -> None:
        self.sent.append(msg)


def run_once(cfg: Config, *, wait_s: float | None = None, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    """Read each sensor until it gives a reading (at most ``wait_s``), print the pack."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not cfg.sensor:
        print("citynode run --once: no [[sensor]] configured: nothing to read", file=err)
        return EX_NO_READING
    wait = default_wait_s(cfg) if wait_s is None else wait_s
    node = _OnceNode(cfg)
    lock = threading.Lock()

    def on_health(sensor: str, old: Health, new: Health, detail: str) -> None:
        if new is not Health.STOPPED:
            with lock:
                print(f"# {sensor}: {new.value}" + (f" ({detail})" if detail else ""),
                      file=err, flush=True)

    failed: dict[str, str] = {}
    loops: list[SensorLoop] = []
    latest = latest_values(lambda: loops)
    for s in cfg.sensor:
        agg = Aggregator(s.name, s.prefix, valid_range(s), how=cfg.report.aggregate)
        try:
            device = build_device(s, state_dir=None, latest=latest)
        except Exception as exc:  # a driver that cannot even be built: say which and why
            failed[s.name] = f"cannot set up the driver: {exc}"
            continue
        loops.append(SensorLoop(s.name, device, agg, stale_after_s=s.stale_after_s,
                                on_health=on_health))
    print(f"# reading {len(cfg.sensor)} sensor(s) once, waiting at most {wait:g} s",
          file=err, flush=True)
    for lp in loops:
        lp.start()
    deadline = time.monotonic() + wait
    try:
        while any(lp.readings == 0 for lp in loops) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        seen = {lp.sensor: (lp.health, lp.detail) for lp in loops}  # before "stopped"
        for lp in loops:
            lp.stop()
    for lp in loops:
        if lp.readings == 0:
            failed[lp.sensor] = f"no reading within {wait:g} s: " + _why(*seen[lp.sensor])
    node.loops = loops
    node.report()
    for msg in node.sent:
        try:
            doc = to_readable(node.format.decode(msg.payload))
        except formats.PayloadError:
            doc = {"payload": msg.payload.hex()}
        out.write(json.dumps({"topic": msg.topic, **doc}, indent=2) + "\n")
    for name, why in failed.items():
        print(f"citynode run --once: {name}: {why}", file=err)
    ok = len(cfg.sensor) - len(failed)
    print(f"# {ok} of {len(cfg.sensor)} sensor(s) gave a reading", file=err)
    return EX_OK if not failed else EX_NO_READING
