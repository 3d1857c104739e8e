"""The node daemon: sensors, aggregation, messages, uplink, and systemd's protocols.

Data flows one way: device -> sampling loop -> aggregator -> SenML pack ->
spool -> uplink. The main thread schedules reports and health messages, runs
downlink commands (so a configuration change never races a report), keeps the
one-line STATUS current and handles signals; every sensor samples on its own
thread.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from agent import __version__
from agent.core.aggregate import Aggregator, Quality
from agent.core.config import Config, SensorConfig
from agent.core.health import HealthReporter
from agent.core.sampling import DutyCycle, Health, SensorLoop
from agent.core.sensors import build_device, humidity_reader, type_name, valid_range
from agent.core.systemd import Notifier, Watchdog
from agent.features.airquality import band_record
from agent.features.household import Household
from agent.features.parking import Parking
from agent.features.safety import Safety
from agent.wire import payload
from agent.wire.payload import Pack, Record
from agent.wire.spool import Spool, SpoolError
from agent.wire.topics import Topics
from agent.wire.uplink import Message, Uplink

log = logging.getLogger("citynode.daemon")

HUMID_RH = 70.0
PM_QUANTITIES = ("pm1", "pm25", "pm10", "pm4")

EX_OK = 0
EX_CANTCREAT = 73
EX_TEMPFAIL = 75  # e.g. another citynode holds the spool: systemd retries later


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
                 clock: Callable[[], float] = time.monotonic,
                 config_path: str | os.PathLike[str] = "", config_text: str = "") -> None:
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self._config_text = config_text
        self.spool: Spool | None = None
        self._processor = None
        self._commands: queue.Queue[tuple[bytes, bytes | None, str | None]] = queue.Queue(64)
        self._watchdog: Watchdog | None = None
        self._health: HealthReporter | None = None
        self.parking: Parking | None = None
        self.household: Household | None = None
        self.safety: Safety | None = None
        self._next_report = clock() + cfg.report.interval_s
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
        # -- citynode status (agent/tools/status.py) --
        self.models: dict[str, str] = {}  # model name -> version, filled as models load
        self._status_file = None

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
        sensors = ",".join(f"{s.name}:{type_name(s)}" for s in self.cfg.sensor)
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
            if self.parking is not None and lp.sensor in self.parking.watched:
                summary.stats = {}  # a bay or bin reports its state, not its distances
            records += lp.aggregator.records(summary, self.cfg.report.stats)
            if pm and self.cfg.report.kr_band:
                aq = band_record(lp.sensor, summary.stats)
                if aq is not None:
                    records.append(aq)
        if self.parking is not None:
            records += self.parking.summary_records()
        if records:
            self.send(self.message(self.topics.telemetry, records, kind="telemetry"))

    # -- lifecycle ---------------------------------------------------------------
    def request_stop(self, *_: object) -> None:
        self._stop.set()

    # -- sensors (re)configuration ---------------------------------------------
    def _start_sensors(self, cfg: Config, watchdog: Watchdog) -> None:
        self.loops = []
        self.parking = Parking(cfg, cfg.node.resolved_state_dir(), publish=lambda recs: self.send(
            self.message(self.topics.event, recs, kind="event")))
        self.household = Household(cfg, cfg.node.resolved_state_dir(), publish=lambda recs: (
            self.send(self.message(self.topics.event, recs, kind="alarm"))))
        self.household.open()
        self.safety = Safety(cfg, publish=lambda recs: self.send(
            self.message(self.topics.event, recs, kind="alarm")),
            on_model_health=self._model_health)
        self.models = self.safety.models
        for s in cfg.sensor:
            agg = Aggregator(s.name, s.prefix, valid_range(s), how=cfg.report.aggregate)
            duty = None
            if getattr(s, "duty_cycle", False):
                duty = DutyCycle(s.warmup_s + s.sample_s, lambda: self._next_report,
                                 lambda: self.cfg.report.interval_s)
            device = build_device(s, **self._device_kwargs(cfg, s))
            self.safety.attach(s, device)
            loop = SensorLoop(s.name, device, agg, stale_after_s=s.stale_after_s,
                              beat=watchdog.register(s.name), on_health=self.on_health,
                              duty=duty, on_reading=self._reading_handler(s))
            self.loops.append(loop)
        for lp in self.loops:
            lp.start()
        for lp in self.loops:
            lp.opened.wait(10)

    def _device_kwargs(self, cfg: Config, s: SensorConfig) -> dict:
        """What some drivers need from the node: the SGP30 its baseline directory and the
        climate sensor it takes humidity from (looked up live, in any order)."""
        if type_name(s) != "sgp30":
            return {}
        kw: dict = {"state_dir": cfg.node.resolved_state_dir()}
        if s.humidity_from:
            kw["humidity_source"] = humidity_reader(lambda: self.loops, s.humidity_from)
        return kw

    def _reading_handler(self, s):
        handlers = []
        if self.parking.watches(s):
            handlers.append(self.parking.handler(s.name))
        if self.household.watches(s):
            handlers.append(self.household.handler(s.name))
        if self.safety is not None and self.safety.watches(s):
            handlers.append(self.safety.handler(s.name))
        handlers = [h for h in handlers if h is not None]
        if len(handlers) <= 1:
            return handlers[0] if handlers else None

        def all_of(reading) -> None:
            for h in handlers:
                h(reading)
        return all_of

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
        if self.household is not None:
            self.household.close()  # relays back to their safe state
        if self.safety is not None:
            self.safety.close()

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
        result = self.household.command(sensor, action, value) if self.household else None
        if result is None:
            return False, f"sensor {sensor!r} has no device actions"
        return result

    def on_command(self, topic: str, data: bytes, correlation: bytes | None,
                   response_topic: str | None) -> None:
        """From the uplink thread: queue for the main thread, which owns the sensors."""
        try:
            self._commands.put_nowait((data, correlation, response_topic))
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
            msg = self.message(topic, result.records(), kind="result")
            msg.correlation = result.correlation
            self.send(msg)

    def _make_processor(self):
        from agent.core.commands import CommandProcessor, load_hmac_key

        c = self.cfg.commands
        key = load_hmac_key(c.hmac_key_file) if c.hmac_key_file else None
        return CommandProcessor(self, c, key=key)

    def _configure_client(self, client) -> None:
        m = self.cfg.mqtt
        if m.tls or m.credentials_file:
            from agent.wire import security

            security.apply(client, m)

    def validate_security(self) -> None:
        """Refuse to start on unsafe or unusable secrets (raises SecurityError)."""
        if not self.cfg.local_mode:
            from agent.wire import security

            security.validate_security(self.cfg.mqtt)
        c = self.cfg.commands
        if c.enabled and c.hmac_key_file:
            from agent.core.commands import load_hmac_key

            load_hmac_key(c.hmac_key_file)

    def health_report(self) -> None:
        self.send(self.message(self.topics.health, self._health.records(
            sensors={lp.sensor: lp.health.value for lp in self.loops},
            spool=self.spool.stats() if self.spool else None,
            uplink={"reconnects": self.uplink.reconnects, "historical": self.uplink.historical}
            if self.uplink else None,
            commands=self._processor.stats() if self._processor else None,
        ), kind="health"))

    def run(self) -> int:
        state_dir = self.cfg.node.resolved_state_dir()
        try:
            self.session = next_boot_session(state_dir)
        except StateDirError as exc:
            log.error("%s", exc, extra={"EVENT": "state_dir_error"})
            return EX_CANTCREAT
        self._health = HealthReporter(state_dir)
        from agent.tools.status import StatusWriter  # citynode status: status.json (never raises)

        self._status_file = StatusWriter(self, state_dir)
        self._status_file.tick("starting")
        log.info("citynode %s starting: node %s, boot session %d, %d sensor(s), %s",
                 __version__, self.cfg.node.id, self.session, len(self.cfg.sensor),
                 "local mode" if self.cfg.local_mode else
                 f"broker {self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                 extra={"EVENT": "start", "BOOT_SESSION": self.session})
        watchdog = self._watchdog = Watchdog(self.notifier)
        main_beat = watchdog.register("report")
        if not self.cfg.local_mode:
            m = self.cfg.mqtt
            sp = self.cfg.spool
            try:
                self.spool = Spool(sp.path or state_dir / "spool.db", max_bytes=sp.max_bytes,
                                   batch_s=sp.batch_s, send_uncommitted=sp.send_uncommitted)
            except (SpoolError, OSError) as exc:
                log.error("cannot open the spool: %s", exc, extra={"EVENT": "spool_error"})
                return EX_TEMPFAIL
            if self.spool.quarantined:
                self.send(self.message(self.topics.event, [
                    Record("spool", text="quarantined")], kind="event"))
            if self.cfg.commands.enabled:
                self._processor = self._make_processor()
            client_id = m.client_id or f"{m.prefix.replace('/', '-')}-{self.cfg.node.id}"
            self.uplink = Uplink(m, client_id, self.spool, drain_rate=sp.drain_rate,
                                 will=lambda: self.offline("lost", will=True),
                                 on_connect=lambda: [self.birth()],
                                 subscribe=self.topics.command if self._processor else None,
                                 on_message=self.on_command,
                                 configure_client=self._configure_client)
            self.uplink.start()
        else:
            self.send(self.birth())
        self._start_sensors(self.cfg, watchdog)
        self.notifier.ready(self.status_line())
        watchdog.start()
        log.info("ready: %s", self.status_line(), extra={"EVENT": "ready"})

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
            if self.parking is not None:
                self.parking.tick()
            if self.household is not None:
                self.household.tick()
            if self.safety is not None:
                self.safety.tick()
            self._update_status()
            self._status_file.tick()
            self._stop.wait(min(0.2, max(0.0, next_report - self.clock())))

        return self.shutdown(watchdog)

    def shutdown(self, watchdog: Watchdog) -> int:
        self.notifier.stopping()
        if self._status_file is not None:
            self._status_file.tick("stopping")
        log.info("stopping: flushing the last window", extra={"EVENT": "stopping"})
        self._run_commands()
        for lp in self.loops:
            lp.stop()
        if self.household is not None:
            self.household.close()  # relays to their safe state; the routine saved
        if self.safety is not None:
            self.safety.tick()  # a cancel window that ran out while stopping
            self.safety.close()
        self.report()
        if self.uplink is not None:
            self.uplink.stop(goodbye=self.offline("shutdown"), timeout=5.0)
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
    tmp = path.with_name(f".{path.name}.new")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def install_signal_handlers(node: Node) -> None:
    signal.signal(signal.SIGTERM, node.request_stop)
    signal.signal(signal.SIGINT, node.request_stop)
