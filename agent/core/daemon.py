"""The node daemon: sensors, aggregation, messages, uplink, and systemd's protocols.

Data flows one way: device -> sampling loop -> aggregator -> pack -> format ->
spool -> uplink. The main thread schedules reports and health messages, runs
downlink commands (so a configuration change never races a report), keeps the
one-line STATUS current and handles signals; every sensor samples on its own
thread.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from agent import __version__
from agent.core.aggregate import Aggregator, Quality
from agent.core.config import EX_CONFIG, MAIN_UPLINK, Config, ConfigError, notices
from agent.core.health import HealthReporter
from agent.core.sampling import DutyCycle, Health, SensorLoop
from agent.core.sensors import build_device, latest_values, type_name, valid_range
from agent.core.status_file import StatusWriter
from agent.core.systemd import Notifier, Watchdog
from agent.features.base import Feature, FeatureContext, attach_samples, reading_handler
from agent.features.registry import start_features
from agent.wire import formats
from agent.wire.model import Kind, NodeInfo, Pack, Record, to_readable
from agent.wire.mqtt import node_client_id
from agent.wire.session import Command, Context, SensorInfo
from agent.wire.spool import Spool, SpoolError, SpoolLocationError
from agent.wire.topics import Topics
from agent.wire.uplink import Message, Uplink, Uplinks
from drivers.files import write_atomic

log = logging.getLogger("citynode.daemon")

HUMID_RH = 70.0
PM_QUANTITIES = ("pm1", "pm25", "pm10", "pm4")

EX_OK = 0
EX_SOFTWARE = 70  # an unexpected error (a bug): systemd retries, within its start limit
EX_CANTCREAT = 73
EX_TEMPFAIL = 75  # e.g. another citynode holds the spool: systemd retries later
# EX_CONFIG (78): a path, file or permission the configuration names cannot be used;
# the unit does not restart on it (RestartPreventExitStatus=78), since a restart cannot help.

#: OSError numbers that mean a configured path cannot be used as it is (EX_CONFIG).
_PATH_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS,
    errno.ELOOP, errno.ENAMETOOLONG, errno.EEXIST, errno.ENXIO, errno.ENODEV, errno.ETXTBSY})


def exit_for(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line for an error that ends the daemon.

    78 when the configuration names something unusable (a restart cannot fix it), 75 when
    it may pass (another daemon holds the spool, the disk is full), 70 for anything else:
    a bug, whose line says where it happened instead of a traceback on the console.
    """
    if isinstance(exc, (SpoolLocationError, ConfigError)):
        return EX_CONFIG, str(exc)
    if isinstance(exc, SpoolError):
        return EX_TEMPFAIL, str(exc)
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return EX_CONFIG, f"{where}{exc.strerror}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f"{exc.filename}: " if exc.filename else ""
        return EX_TEMPFAIL, f"{where}{exc.strerror}"
    frames = traceback.extract_tb(exc.__traceback__)
    at = ""
    if frames:
        f = frames[-1]
        at = f" at {'/'.join(Path(f.filename).parts[-3:])}:{f.lineno} in {f.name}"
    text = " ".join(str(exc).split())[:300]
    return EX_SOFTWARE, (f"internal error{at}: {type(exc).__name__}"
                         + (f": {text}" if text else "") + " (a bug: please report this line)")


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
        write_atomic(path, f"{session}\n")
        return session
    except OSError as exc:
        raise StateDirError(f"state directory {state_dir}: {exc}") from exc


class Node:
    """One node's daemon; :meth:`run` returns the process exit code."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 config_path: str | os.PathLike[str] = "", config_text: str = "") -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self._config_text = config_text
        self.spool: Spool | None = None
        self._processor = None
        self._commands: queue.Queue[tuple[bytes, bytes | None, str | None]] = queue.Queue(64)
        self._watchdog: Watchdog | None = None
        self._main_beat: Callable[[], None] = lambda: None  # the main loop's, at start-up
        self._health: HealthReporter | None = None
        self.features: list[Feature] = []  # built with the sensors, from the configuration
        self._next_report = clock() + cfg.report.interval_s
        self.notifier = notifier or Notifier.from_env()
        self.clock = clock
        self.topics = Topics(cfg.mqtt.prefix, cfg.node.id)
        self.fmt = cfg.report.format
        self.format = formats.get(self.fmt)
        self.content_type = self.format.content_type
        self.session = 0
        self._seq = 0
        # Held while a message is numbered and handed to the uplink (which holds it while
        # a connection's birth is made): acceptance order is q order (docs/spool.md).
        self._seq_lock = threading.RLock()
        self._stop = threading.Event()
        self.loops: list[SensorLoop] = []
        self.uplink: Uplinks | None = None
        self.started_wall = time.time()
        self.messages = 0
        self._status = ""
        self._status_file: StatusWriter | None = None  # citynode status: status.json
        self.updater: Any = None  # agent.update.updater.Updater, made at start-up
        self._exit_code = EX_OK  # non-zero: a failed health gate (the guard rolls back)

    # -- messages ----------------------------------------------------------------
    def next_seq(self) -> int:
        with self._seq_lock:
            seq = self._seq
            self._seq += 1
            return seq

    def pack(self, records: list[Record], *, kind: Kind, t: float | None = None,
             numbered: bool = True) -> Pack:
        """A pack; only events keep milliseconds (whole seconds save 4 bytes)."""
        t = time.time() if t is None else t
        return Pack(time=t if kind == "event" else float(round(t)), session=self.session,
                    seq=self.next_seq() if numbered else None, records=records, kind=kind)

    def message(self, topic: str, records: list[Record], *, kind: Kind, retain: bool = False,
                t: float | None = None, numbered: bool = True) -> Message:
        """A pack in the spool's format ([report] format), as the uplinks take it."""
        enc = self.format.encode(self.pack(records, kind=kind, t=t, numbered=numbered))
        return Message(topic, enc.payload, retain=retain, content_type=self.content_type,
                       kind=kind, mark=enc.mark)

    def send(self, msg: Message) -> None:
        self.messages += 1
        if self.uplink is not None:
            self.uplink.publish(msg)
        else:
            try:
                readable = to_readable(self.format.decode(msg.payload))
            except formats.PayloadError:  # a format that cannot be read back
                readable = {"payload": msg.payload.hex()}
            log.info("%s %s", msg.topic, json.dumps(readable, separators=(",", ":")),
                     extra={"EVENT": "local_message"})

    def emit(self, topic: str, records: list[Record], *, kind: Kind,
             correlation: bytes | None = None) -> None:
        """Number, encode and hand over in one step: no message numbered later can be
        accepted (and delivered) before this one, so a crash leaves no gap in ``q``."""
        with self._seq_lock:
            msg = self.message(topic, records, kind=kind)
            msg.correlation = correlation
            self.send(msg)

    def birth(self) -> Message:
        sensors = ",".join(f"{s.name}:{type_name(s)}" for s in self.cfg.sensor)
        return self.message(self.topics.state, [
            Record("status", text="online"),
            Record("version", text=__version__),
            Record("boot", value=round(self.started_wall)),
            Record("interval", value=self.cfg.report.interval_s),
            Record("sensors", text=sensors),
            *(self.updater.records() if self.updater is not None else ()),
        ], kind="state", retain=True)

    def on_connect(self) -> list[Message]:
        """The birth, then whatever the format announces (none for SenML); a platform's
        own announcements come from its uplink's session."""
        node = NodeInfo(self.topics, self.session,
                        tuple((s.name, type_name(s)) for s in self.cfg.sensor))
        return [self.birth()] + [
            Message(p.topic, p.payload, retain=p.retain, content_type=p.content_type,
                    kind="state", per_connection=True) for p in self.format.on_connect(node)]

    def offline_pack(self, reason: str) -> Pack:
        """The last will's pack (unnumbered), for each uplink's session to put in its terms."""
        return self.pack([Record("status", text="offline"), Record("reason", text=reason)],
                         kind="state", numbered=False)

    def offline(self, reason: str, *, will: bool = False) -> Message:
        """The goodbye, or (``will``) the last will: unnumbered, since the broker
        publishes it only if this connection dies, and a number would leave a gap.
        The goodbye is built by the uplink when it is about to go, after everything
        else: the last number of the session."""
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
            self.emit(self.topics.event, [Record(f"{sensor}:health", text=new.value)],
                      kind="event")

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

    # -- NodeView: what citynode status shows (agent/core/status_file.py) --------
    @property
    def last_seq(self) -> int | None:
        with self._seq_lock:
            return self._seq - 1 if self._seq else None

    def feature_status(self) -> dict[str, dict]:
        return {f.name: st for f in list(self.features) if (st := f.status())}

    # -- reports -----------------------------------------------------------------
    def report(self) -> None:
        summaries = [(lp, lp.aggregator.close_window(carry=lp.carry_flags()))
                     for lp in self.loops]
        # PM readings above 70 % relative humidity are unreliable: flag, do not correct.
        rh = [s.stats["rh"][0] for _, s in summaries if "rh" in s.stats]
        humid = bool(rh) and max(rh) > HUMID_RH
        records: list[Record] = []
        for lp, summary in summaries:
            pm = any(q in summary.stats for q in PM_QUANTITIES)
            if humid and pm:
                summary.flags |= Quality.HUMID
            for f in self.features:
                summary.stats = f.report_stats(lp.sensor, summary.stats)
            records += lp.aggregator.records(summary, self.cfg.report.stats)
            for f in self.features:
                records += f.report_records(lp.sensor, summary.stats)
        for f in self.features:
            records += f.summary_records()
        if records:
            self.emit(self.topics.telemetry, records, kind="telemetry")

    # -- lifecycle ---------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop.set()

    # -- sensors (re)configuration ---------------------------------------------
    def _start_sensors(self, cfg: Config, watchdog: Watchdog) -> None:
        self.loops = []
        self.features = start_features(cfg, FeatureContext(
            cfg.node.resolved_state_dir(), publish=self._publish_event,
            on_model_health=self._model_health))
        for s in cfg.sensor:
            agg = Aggregator(s.name, s.prefix, valid_range(s), how=cfg.report.aggregate)
            duty = None
            if getattr(s, "duty_cycle", False):
                duty = DutyCycle(s.warmup_s + s.sample_s, lambda: self._next_report,
                                 lambda: self.cfg.report.interval_s)
            device = build_device(s, **self._device_kwargs(cfg))
            attach_samples(self.features, s, device)
            loop = SensorLoop(s.name, device, agg, stale_after_s=s.stale_after_s,
                              beat=watchdog.register(s.name), on_health=self.on_health,
                              duty=duty, on_reading=reading_handler(self.features, s))
            self.loops.append(loop)
        for lp in self.loops:
            lp.start()
        for lp in self.loops:
            lp.opened.wait(10)

    def _device_kwargs(self, cfg: Config) -> dict:
        """What drivers may need from the node: the state directory (the SGP30 keeps its
        baseline there) and other sensors' latest values (looked up live, in any order:
        the SGP30 takes humidity from a climate sensor)."""
        return {"state_dir": cfg.node.resolved_state_dir(),
                "latest": latest_values(lambda: self.loops)}

    def _update_event(self, records: list[Record]) -> None:
        self.emit(self.topics.event, records, kind="event")

    def _publish_event(self, kind: Kind, records: list[Record]) -> None:
        """A feature's event or alarm (any thread)."""
        self.emit(self.topics.event, records, kind=kind)

    def _model_health(self, task: str, ok: bool, message: str) -> None:
        """A model that cannot load or run is the health of a pseudo-sensor."""
        new = Health.OK if ok else Health.ERRORS
        old = Health.ERRORS if ok else Health.OK
        if ok and not message:
            return  # loaded fine at start: nothing to report
        self.on_health(f"{task}_model", old, new, message)

    def _stop_sensors(self, watchdog: Watchdog) -> None:
        for lp in self.loops:
            lp.stop()
            watchdog.unregister(lp.sensor)
        self.loops = []
        self._close_features()
        self.features = []

    def _close_features(self) -> None:
        """Relays back to their safe state, state saved, alarms that ran out sent (their
        report hooks still serve the last report)."""
        for f in self.features:
            f.close()

    # -- NodeControl: what downlink commands may do ------------------------------
    def uptime_s(self) -> float:
        return time.time() - self.started_wall

    def config_text(self) -> str:
        return self._config_text

    def set_config(self, text: str) -> tuple[bool, str]:
        """Validate, apply atomically, and roll back if the new sensors cannot be opened."""
        from agent.core.config import ConfigError, parse

        try:
            new = parse(text, "<set-config>")
        except ConfigError as exc:
            return False, str(exc)
        fixed = ("node", "mqtt", "spool", "commands")
        changed = [k for k in fixed if msgspec.to_builtins(getattr(new, k))
                   != msgspec.to_builtins(getattr(self.cfg, k))]
        if changed:
            return False, (f"[{'], ['.join(changed)}] cannot be changed remotely "
                           "(a mistake there could cut the node off): change it on site")
        old_cfg, watchdog = self.cfg, self._watchdog
        self.report()  # close the window under the old configuration
        self._stop_sensors(watchdog)
        self.cfg = new
        self._start_sensors(new, watchdog)
        bad = [lp for lp in self.loops if lp.health is Health.DISCONNECTED]
        if not bad:
            try:
                _atomic_write(self.config_path, text)
            except OSError as exc:
                bad_msg = f"cannot write {self.config_path}: {exc}"
            else:
                self._config_text = text
                log.info("configuration replaced by command", extra={"EVENT": "config_applied"})
                return True, f"applied: {len(new.sensor)} sensor(s)"
        else:
            bad_msg = "; ".join(f"{lp.sensor}: {lp.detail}" for lp in bad)
        self._stop_sensors(watchdog)
        self.cfg = old_cfg
        self._start_sensors(old_cfg, watchdog)
        log.warning("new configuration rolled back: %s", bad_msg,
                    extra={"EVENT": "config_rolled_back"})
        return False, f"rolled back: {bad_msg}"

    def resend_state(self) -> str:
        with self._seq_lock:
            self.send(self.birth())
        return "birth sent"

    def sample_now(self, sensor: str | None = None) -> tuple[bool, str]:
        names = [lp.sensor for lp in self.loops]
        if sensor is not None and sensor not in names:
            return False, f"no sensor named {sensor!r} (have: {', '.join(names) or 'none'})"
        self.report()
        return True, "current window reported"

    def device_command(self, sensor: str, action: str, value: object) -> tuple[bool, str]:
        if sensor not in [lp.sensor for lp in self.loops]:
            return False, f"no sensor named {sensor!r}"
        for f in self.features:
            result = f.command(sensor, action, value)
            if result is not None:
                return result
        return False, f"sensor {sensor!r} has no device actions"

    def use_broker(self, uplink: str | None, index: int) -> tuple[bool, str]:
        """The ``broker`` command: one uplink, or every uplink with failover brokers, to
        broker ``index`` of its list (0: the primary)."""
        members = list(self.uplink.members) if self.uplink is not None else []
        if uplink is not None:
            chosen = [u for u in members if u.name == uplink]
            if not chosen:
                names = ", ".join(u.name for u in members) or "none"
                return False, f"no uplink named {uplink!r} (have: {names})"
        else:
            chosen = [u for u in members if len(u.brokers) > 1]
            if not chosen:
                return False, "no uplink has failover brokers ([mqtt] failover)"
        short = [u for u in chosen if index >= len(u.brokers)]
        if short:  # all or none move
            return False, "; ".join(f"uplink {u.name} has brokers 0 to {len(u.brokers) - 1}"
                                    for u in short)
        return True, "; ".join(u.use_broker(index) for u in chosen)

    def on_command(self, command: Command) -> None:
        """From an uplink's thread: queue for the main thread, which owns the sensors."""
        try:
            self._commands.put_nowait((command.data, command.correlation,
                                       command.response_topic))
        except queue.Full:
            log.warning("command queue full: dropped a command", extra={"EVENT": "command_drop"})

    def _run_commands(self) -> None:
        while self._processor is not None:
            try:
                data, correlation, response_topic = self._commands.get_nowait()
            except queue.Empty:
                return
            result = self._processor.handle(data, correlation=correlation,
                                            response_topic=response_topic)
            topic = result.response_topic or self.topics.result
            self.emit(topic, result.records(), kind="result", correlation=result.correlation)

    def _make_processor(self):
        from agent.core.commands import CommandProcessor, load_hmac_key

        c = self.cfg.commands
        key = load_hmac_key(c.hmac_key_file) if c.hmac_key_file else None
        return CommandProcessor(self, c, key=key)

    @staticmethod
    def _configure(m: Any) -> Callable[[Any], None]:
        """TLS and credentials for one uplink's client."""
        def configure(client) -> None:
            if m.tls or m.credentials_file:
                from agent.wire import security

                security.apply(client, m)
        return configure

    def validate_security(self) -> None:
        """Refuse to start on unsafe or unusable secrets (raises SecurityError)."""
        for m in self.cfg.uplinks():
            from agent.wire import security

            security.validate_security(m, config_path=self.config_path or "",
                                       config_text=self._config_text or None)
        c = self.cfg.commands
        if c.enabled and c.hmac_key_file:
            from agent.core.commands import load_hmac_key

            load_hmac_key(c.hmac_key_file)

    def health_report(self) -> None:
        self.emit(self.topics.health, self._health.records(
            sensors={lp.sensor: lp.health.value for lp in self.loops},
            spool=self.spool.stats() if self.spool else None,
            uplink={"reconnects": self.uplink.reconnects, "historical": self.uplink.historical,
                    "uplinks": self.uplink.status() if len(self.uplink.members) > 1 else []}
            if self.uplink else None,
            commands=self._processor.stats() if self._processor else None,
        ) + (self.updater.records() if self.updater is not None else []), kind="health")

    def run(self) -> int:
        try:
            code = self._start_up()
        except Exception as exc:  # whatever it is: one line and a code, never a traceback
            code, line = exit_for(exc)
            # ...unless asked for one, for a bug report (as every citynode command does)
            asked = os.environ.get("CITYNODE_TRACEBACK", "") not in ("", "0")
            log.error("cannot start: %s", line, exc_info=exc if asked else None,
                      extra={"EVENT": "startup_error"})
            self._abort_start_up()
        if code is not None:
            return code
        watchdog, main_beat = self._watchdog, self._main_beat
        interval = self.cfg.report.interval_s
        next_report = self._next_report = self.clock() + interval
        next_health = self.clock() + min(60.0, self.cfg.health.interval_s)
        while not self._stop.is_set():
            main_beat()
            now = self.clock()
            if now >= next_report:
                self.report()
                # Monotonic schedule: no drift, and no burst after a stall.
                interval = self.cfg.report.interval_s
                next_report += interval * max(1, int((now - next_report) // interval) + 1)
                self._next_report = next_report
            if now >= next_health:
                self.health_report()
                next_health = now + self.cfg.health.interval_s
            self._run_commands()
            self._update_gate()
            for f in self.features:
                f.tick()
            self._update_status()
            self._status_file.tick()
            self._stop.wait(min(0.2, max(0.0, next_report - self.clock())))

        code = self.shutdown(watchdog)
        return self._exit_code or code

    def _update_gate(self) -> None:
        """The health gate of a new release (agent/update/updater.py): confirm, or exit."""
        if self.updater is None:
            return
        wd = self._watchdog
        published = sum(u.published for u in self.uplink.members) if self.uplink else 0
        code = self.updater.gate_tick(ready=True, published=published,
                                      watchdog_ok=wd is None or wd.kept())
        if code is not None:
            log.error("update health gate failed: exiting so the guard rolls back",
                      extra={"EVENT": "update_gate_failed"})
            self._exit_code = code
            self._stop.set()

    def update(self, url: str, sha256: str, size: int | None, version: str,
               command_id: str | None = None) -> tuple[bool, str]:
        """The ``update`` command (docs/updates.md): download, verify, ask root to install."""
        if self.updater is None:
            return False, "updates are not available before the daemon is ready"
        return self.updater.request(url, sha256, size, version, command_id)

    def _abort_start_up(self) -> None:
        """Undo what a failed start-up had started, as far as it goes, without raising."""
        steps = [*(lp.stop for lp in self.loops), self._close_features]
        if self._watchdog is not None:
            steps.append(self._watchdog.stop)
        if self.uplink is not None:  # a retained "online" birth must not outlive us
            steps.append(lambda: self.uplink.stop(goodbye=lambda: self.offline("shutdown"),
                                                  timeout=1.0))
        if self.spool is not None:
            steps.append(self.spool.close)
        if self._status_file is not None:
            steps.append(self._status_file.close)
        for step in steps:
            try:
                step()
            except Exception:  # already failing: the first error is the one reported
                pass

    def _start_up(self) -> int | None:
        """State, spool, uplink and sensors; None when running, else the exit code."""
        state_dir = self.cfg.node.resolved_state_dir()
        try:
            self.session = next_boot_session(state_dir)
        except StateDirError as exc:
            log.error("%s", exc, extra={"EVENT": "state_dir_error"})
            return EX_CANTCREAT
        self._health = HealthReporter(state_dir)
        from agent.update.updater import Updater

        self.updater = Updater(self.cfg, emit=self._update_event, state_dir=state_dir,
                               version=__version__)
        self._status_file = StatusWriter(self, state_dir)  # never raises
        self._status_file.tick("starting")
        log.info("citynode %s starting: node %s, boot session %d, %d sensor(s), %s",
                 __version__, self.cfg.node.id, self.session, len(self.cfg.sensor),
                 "local mode" if self.cfg.local_mode else ", ".join(
                     f"uplink {u.name} {u.format} to {u.host}:{u.port}"
                     for u in self.cfg.uplinks()),
                 extra={"EVENT": "start", "BOOT_SESSION": self.session})
        for key, why in notices(self.cfg):  # accepted, unused: said once, at start
            log.warning("%s", why, extra={"EVENT": "config_warning", "KEY": key})
        watchdog = self._watchdog = Watchdog(self.notifier)
        self._main_beat = watchdog.register("report")
        if not self.cfg.local_mode:
            sp = self.cfg.spool
            links = self.cfg.uplinks()
            try:
                self.spool = Spool(sp.path or state_dir / "spool.db", max_bytes=sp.max_bytes,
                                   batch_s=sp.batch_s, send_uncommitted=sp.send_uncommitted,
                                   readers=tuple(u.name for u in links))
            except SpoolError as exc:  # its place (78), or in use, or a full disk (75)
                code, line = exit_for(exc)
                log.error("cannot open the spool: %s", line, extra={"EVENT": "spool_error"})
                return code
            if self.cfg.commands.enabled:
                self._processor = self._make_processor()
            self.uplink = Uplinks([self._uplink(k, u, state_dir)
                                   for k, u in enumerate(links)])
            if self.spool.quarantined:  # spooled like any event (a number, and sent)
                self.emit(self.topics.event, [Record("spool", text="quarantined")],
                          kind="event")
            self.uplink.start()
        else:
            self.send(self.birth())
        self._start_sensors(self.cfg, watchdog)
        self.notifier.ready(self.status_line())
        watchdog.start()
        log.info("ready: %s", self.status_line(), extra={"EVENT": "ready"})
        self.updater.start()
        return None

    def _uplink(self, reader: int, u: Any, state_dir: Path) -> Uplink:
        """One configured uplink: its session, client id, TLS, and its spool position."""
        sensors = tuple((s.name, type_name(s)) for s in self.cfg.sensor)
        table = u.format.replace("-", "_")
        ctx = Context(node=self.cfg.node.id, topics=Topics(u.prefix, self.cfg.node.id),
                      home=self.topics, boot=self.session, version=__version__,
                      sensors=sensors, state_dir=state_dir / "uplinks" / u.name,
                      uplink=u.name, host=u.host, port=u.port,
                      options=getattr(u, table, None), interval_s=self.cfg.report.interval_s,
                      commands=self._processor is not None,
                      sensor_info=tuple(SensorInfo(s.name, type_name(s), s.prefix,
                                                   tuple(s.reported())) for s in self.cfg.sensor))
        client_id = node_client_id(u, self.cfg.node.id)
        if u.name != MAIN_UPLINK and not u.client_id:
            client_id = f"{client_id[:63 - len(u.name)]}-{u.name}"
        drain = self.cfg.spool.drain_rate if u.drain_rate is None else u.drain_rate
        return Uplink(u, client_id, self.spool, session=formats.get(u.format).session(ctx),
                      name=u.name, reader=reader, drain_rate=drain,
                      will=lambda: self.offline_pack("lost"), on_connect=self.on_connect,
                      on_command=self.on_command, configure_client=self._configure(u),
                      accept_lock=self._seq_lock)

    def shutdown(self, watchdog: Watchdog) -> int:
        self.notifier.stopping()
        if self._status_file is not None:
            self._status_file.tick("stopping")
        log.info("stopping: flushing the last window", extra={"EVENT": "stopping"})
        self._run_commands()
        if self.updater is not None:  # a download goes on from its .part at the next start
            self.updater.stop()
        for lp in self.loops:
            lp.stop()
        self._close_features()  # relays safe, routine saved, a cancel window run out: sent
        self.report()
        if self.uplink is not None:
            # The goodbye after the last window's telemetry: numbered when it goes.
            self.uplink.stop(goodbye=lambda: self.offline("shutdown"), timeout=5.0)
            left = self.uplink.pending()
            if left:
                log.info("%d message(s) kept in the spool for the next start", left,
                         extra={"EVENT": "spooled_at_shutdown"})
            if self.spool is not None:
                self.spool.close()
        else:
            self.send(self.offline("shutdown"))
        watchdog.stop()
        if self._status_file is not None:
            self._status_file.close()  # a last snapshot: "stopped"
        log.info("stopped", extra={"EVENT": "stopped"})
        return EX_OK


def _atomic_write(path: Path | None, text: str) -> None:
    """Replace a file so that a crash leaves either the old or the new one, never half."""
    if path is None:
        raise OSError("no configuration file to write (daemon started without one)")
    write_atomic(path, text)


def install_signal_handlers(node: Node) -> None:
    signal.signal(signal.SIGTERM, node.request_stop)
    signal.signal(signal.SIGINT, node.request_stop)
