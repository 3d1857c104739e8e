"""The node daemon: sensors, aggregation, messages, uplink, and systemd's protocols.

Data flows one way: device -> sampling loop -> aggregator -> SenML pack ->
uplink. The main thread only schedules reports, keeps the one-line STATUS
current and handles signals; every sensor samples on its own thread.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__, payload
from .aggregate import Aggregator
from .config import Config
from .payload import Pack, Record
from .sampling import Health, SensorLoop
from .sensors import build_device, valid_range
from .systemd import Notifier, Watchdog
from .topics import Topics
from .uplink import Message, Uplink

log = logging.getLogger("citynode.daemon")

EX_OK = 0
EX_CANTCREAT = 73


class StateDirError(Exception):
    """The state directory cannot be used (permissions, read-only, full)."""


def next_boot_session(state_dir: Path) -> int:
    """Increment and persist the boot session counter (atomic, fsync'd)."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / "boot_session"
        try:
            current = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            current = 0
        except ValueError:
            log.warning("boot session file %s is corrupt; starting a new count above it", path,
                        extra={"EVENT": "boot_session_corrupt"})
            current = int(path.stat().st_mtime)  # monotonic enough to never repeat a session
        session = (current + 1) % 2**32 or 1
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{session}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(state_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return session
    except OSError as exc:
        raise StateDirError(f"state directory {state_dir}: {exc}") from exc


class Node:
    """One node's daemon; :meth:`run` returns the process exit code."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.notifier = notifier or Notifier.from_env()
        self.clock = clock
        self.topics = Topics(cfg.mqtt.prefix, cfg.node.id)
        self.fmt = cfg.report.format
        self.content_type = payload.CONTENT_TYPES[self.fmt]
        self.session = 0
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stop = threading.Event()
        self.loops: list[SensorLoop] = []
        self.uplink: Uplink | None = None
        self.started_wall = time.time()
        self.messages = 0
        self._status = ""

    # -- messages ----------------------------------------------------------------
    def next_seq(self) -> int:
        with self._seq_lock:
            seq = self._seq
            self._seq += 1
            return seq

    def message(self, topic: str, records: list[Record], *, kind: str, retain: bool = False,
                t: float | None = None, numbered: bool = True) -> Message:
        """Build a pack; only events keep milliseconds (whole seconds save 4 bytes)."""
        t = time.time() if t is None else t
        pack = Pack(time=t if kind == "event" else float(round(t)), session=self.session,
                    seq=self.next_seq() if numbered else None, records=records)
        return Message(topic, payload.encode(pack, self.fmt), retain=retain,
                       content_type=self.content_type, kind=kind)

    def send(self, msg: Message) -> None:
        self.messages += 1
        if self.uplink is not None:
            self.uplink.publish(msg)
        else:
            readable = payload.to_readable(payload.decode(msg.payload))
            log.info("%s %s", msg.topic, json.dumps(readable, separators=(",", ":")),
                     extra={"EVENT": "local_message"})

    def birth(self) -> Message:
        sensors = ",".join(f"{s.name}:{type(s).__name__.removesuffix('Config').lower()}"
                           for s in self.cfg.sensor)
        return self.message(self.topics.state, [
            Record("status", text="online"),
            Record("version", text=__version__),
            Record("boot", value=round(self.started_wall)),
            Record("interval", value=self.cfg.report.interval_s),
            Record("sensors", text=sensors),
        ], kind="state", retain=True)

    def offline(self, reason: str, *, will: bool = False) -> Message:
        """The goodbye, or (``will``) the last will: unnumbered, since the broker
        publishes it only if this connection dies, and a number would leave a gap."""
        return self.message(self.topics.state, [
            Record("status", text="offline"), Record("reason", text=reason),
        ], kind="state", retain=True, numbered=not will)

    # -- health and status -------------------------------------------------------
    def on_health(self, sensor: str, old: Health, new: Health, detail: str) -> None:
        level = logging.INFO if new in (Health.OK, Health.WARMING_UP, Health.STOPPED) \
            else logging.WARNING
        log.log(level, "sensor %s: %s -> %s%s", sensor, old.value, new.value,
                f" ({detail})" if detail else "",
                extra={"SENSOR": sensor, "EVENT": "health", "HEALTH": new.value})
        if new is not Health.STOPPED:
            self.send(self.message(self.topics.event, [
                Record(f"{sensor}:health", text=new.value)], kind="event"))

    def status_line(self) -> str:
        parts = []
        for lp in self.loops:
            vals = " ".join(f"{k}={v:g}" for k, v in list(lp.last_values.items())[:3])
            parts.append(f"{lp.sensor} {lp.health.value}" + (f" {vals}" if vals else ""))
        if self.uplink is None:
            up = "local mode"
        else:
            up = f"mqtt {'up' if self.uplink.connected else 'down'}, {self.uplink.pending()} queued"
        return f"{'; '.join(parts) or 'no sensors'} | {up} | {self.messages} msgs"

    def _update_status(self) -> None:
        line = self.status_line()
        if line != self._status:
            self._status = line
            self.notifier.status(line)

    # -- reports -----------------------------------------------------------------
    def report(self) -> None:
        records: list[Record] = []
        for lp in self.loops:
            summary = lp.aggregator.close_window(carry=lp.carry_flags())
            records += lp.aggregator.records(summary, self.cfg.report.stats)
        if records:
            self.send(self.message(self.topics.telemetry, records, kind="telemetry"))

    # -- lifecycle ---------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        try:
            self.session = next_boot_session(self.cfg.node.resolved_state_dir())
        except StateDirError as exc:
            log.error("%s", exc, extra={"EVENT": "state_dir_error"})
            return EX_CANTCREAT
        log.info("citynode %s starting: node %s, boot session %d, %d sensor(s), %s",
                 __version__, self.cfg.node.id, self.session, len(self.cfg.sensor),
                 "local mode" if self.cfg.local_mode else
                 f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                 extra={"EVENT": "start", "BOOT_SESSION": self.session})
        watchdog = Watchdog(self.notifier)
        for s in self.cfg.sensor:
            agg = Aggregator(s.name, s.prefix, valid_range(s))
            loop = SensorLoop(s.name, build_device(s), agg, stale_after_s=s.stale_after_s,
                              beat=watchdog.register(s.name), on_health=self.on_health)
            self.loops.append(loop)
        main_beat = watchdog.register("report")
        if not self.cfg.local_mode:
            m = self.cfg.mqtt
            client_id = m.client_id or f"{m.prefix.replace('/', '-')}-{self.cfg.node.id}"
            self.uplink = Uplink(m, client_id,
                                 will=lambda: self.offline("lost", will=True),
                                 on_connect=lambda: [self.birth()])
            self.uplink.start()
        else:
            self.send(self.birth())
        for lp in self.loops:
            lp.start()
        for lp in self.loops:
            lp.opened.wait(10)
        self.notifier.ready(self.status_line())
        watchdog.start()
        log.info("ready: %s", self.status_line(), extra={"EVENT": "ready"})

        interval = self.cfg.report.interval_s
        next_report = self.clock() + interval
        while not self._stop.is_set():
            main_beat()
            now = self.clock()
            if now >= next_report:
                self.report()
                # Monotonic schedule: no drift, and no burst after a stall.
                next_report += interval * max(1, int((now - next_report) // interval) + 1)
            self._update_status()
            self._stop.wait(min(1.0, max(0.0, next_report - self.clock())))

        return self.shutdown(watchdog)

    def shutdown(self, watchdog: Watchdog) -> int:
        self.notifier.stopping()
        log.info("stopping: flushing the last window", extra={"EVENT": "stopping"})
        for lp in self.loops:
            lp.stop()
        self.report()
        if self.uplink is not None:
            self.uplink.stop(goodbye=self.offline("shutdown"), timeout=5.0)
            left = self.uplink.pending()
            if left:
                log.warning("%d message(s) not acknowledged at shutdown", left,
                            extra={"EVENT": "unsent_at_shutdown"})
        else:
            self.send(self.offline("shutdown"))
        watchdog.stop()
        log.info("stopped", extra={"EVENT": "stopped"})
        return EX_OK


def install_signal_handlers(node: Node) -> None:
    signal.signal(signal.SIGTERM, node.request_stop)
    signal.signal(signal.SIGINT, node.request_stop)
