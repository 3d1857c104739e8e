"""Fall and fire detection in the daemon: readings in, alarms out (docs/fall.md, docs/fire.md).

*Falls*: every accelerometer (ADXL345, MPU-6050) hands each FIFO batch to its own
:class:`~agent.detectors.fall.FallDetector` on its sampling thread, so a fall is judged
on every sample, not on the once-a-second readings. A detected fall starts the local
cancel window (buzzer, LED, "I'm OK" button through gpiozero, ``[fall] cancel_s``); when
it expires the ``alarm`` goes upstream at once, from whichever thread noticed, with the
score, the model version and the evidence. With ``cancel_s = 0`` (no button on the
node) the alarm leaves on the sampling thread that confirmed the fall.

*Fire*: the readings of the climate, particulate and gas sensors (``[fire] sensors``,
default all of them) feed one :class:`~agent.detectors.fire.FireDetector`; each change of
state (``fire``/``clear``) is an alarm message.

A model that cannot be loaded or run is reported as the health of a pseudo-sensor
``fall_model``/``fire_model`` (``errors``, with the reason) and the detectors go on with
their physical rules; nothing here can stop the daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.config import Config, SensorConfig
from agent.features.household import event_records
from agent.wire.payload import Record

log = logging.getLogger("citynode.safety")

ACCELEROMETERS = ("adxl345", "mpu6050")
# Reading quantity -> the fire detector's input name. PMS5003 particle counts (per 0.1 L)
# are not the SPS30's number concentrations (per cm3): only the latter are passed on.
FIRE_INPUTS = {
    "temp": "temperature_c", "rh": "humidity_pct", "pressure": "pressure_hpa",
    "eco2": "eco2_ppm", "tvoc": "tvoc_ppb",
    "pm1": "pm1_0", "pm25": "pm2_5", "pm10": "pm10",
    "nc0_5": "nc0_5", "nc1_0": "nc1_0", "nc2_5": "nc2_5",
}
FALL_FIFO_READ_S = 0.04  # at 100 Hz: 4 samples a read, 25 short I2C reads a second
FIRE_SENSORS = ("sht3x", "bme280", "sgp30", "pms5003", "sps30", "sds011")


def _type(s: SensorConfig) -> str:
    return type(s).__name__.removesuffix("Config").lower()


def _model_arg(setting: str, default: Any) -> Any:
    if setting == "":
        return default
    if setting.lower() == "none":
        return None
    return Path(setting)


class Safety:
    """The node's fall and fire alarms; ``publish(records)`` sends one alarm message."""

    def __init__(self, cfg: Config, publish: Callable[[list[Record]], None], *,
                 on_model_health: Callable[[str, bool, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, pin_factory: Any = None) -> None:
        self._publish = publish
        self._on_model_health = on_model_health
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self.models: dict[str, str] = {}
        self.falls: dict[str, Any] = {}
        self.alarm: Any = None
        self.fire: Any = None
        self._fire_sensors: set[str] = set()
        self.counts = {"falls": 0, "alarms": 0, "cancelled": 0, "fire": 0}
        accels = [s for s in cfg.sensor if _type(s) in ACCELEROMETERS]
        if cfg.fall.enabled and accels:
            self._open_falls(cfg, accels, pin_factory)
        feeders = [s for s in cfg.sensor if (s.name in cfg.fire.sensors if cfg.fire.sensors
                                             else _type(s) in FIRE_SENSORS)]
        if cfg.fire.enabled and feeders:
            from agent.detectors.fire import FireDetector

            self.fire = FireDetector(_model_arg(cfg.fire.model, True))
            self._fire_sensors = {s.name for s in feeders}
            self._fire_ok = self.fire.healthy
            self._report_model("fire", self.fire.healthy, self.fire.health.get("error") or "",
                               getattr(self.fire.model, "meta", None))

    # -- set-up ------------------------------------------------------------------------
    def _open_falls(self, cfg: Config, accels: list[SensorConfig], pin_factory: Any) -> None:
        from agent.detectors.fall import DEFAULT_MODEL, FallAlarm, FallDetector
        from agent.models.runtime import Model, ModelError, model_path

        arg = _model_arg(cfg.fall.model, DEFAULT_MODEL)
        shared: Any = arg
        if arg is not None:  # load once, share between accelerometers
            try:
                shared = Model.load(model_path("fall") if arg == DEFAULT_MODEL else arg,
                                    expect_task="fall")
            except ModelError:
                shared = arg  # each detector records the same fault (logged once below)
        for s in accels:
            self.falls[s.name] = FallDetector(shared)
        h = next(iter(self.falls.values())).health
        self._report_model("fall", h.ok, h.message or "",
                           getattr(next(iter(self.falls.values())).model, "meta", None))
        f = cfg.fall
        if f.button_pin is not None:
            factory = pin_factory
            if factory is None and f.pins == "emulator":
                from gpiozero.pins.mock import MockFactory

                factory = MockFactory()
            try:
                from agent.features.fall_alarm import FallAlarmGPIO

                self.alarm = FallAlarmGPIO(button_pin=f.button_pin, buzzer_pin=f.buzzer_pin,
                                           led_pin=f.led_pin, cancel_s=f.cancel_s,
                                           pin_factory=factory, clock=self._clock)
            except Exception as exc:  # no GPIO, pin busy: the alarm still goes upstream
                log.error("fall cancel button unavailable (%s): alarms go upstream after "
                          "%g s without a local cancel", exc, f.cancel_s,
                          extra={"EVENT": "relay_error", "SENSOR": "fall_button"})
        if self.alarm is None:
            cancel = f.cancel_s if f.button_pin is not None else 0.0
            self.alarm = _Unwired(FallAlarm(cancel), self._clock)

    def _report_model(self, task: str, ok: bool, message: str, meta: Any) -> None:
        if meta is not None:
            self.models[task] = f"{meta.name} {meta.version}"
        if not ok:
            log.error("%s model: %s", task, message,
                      extra={"EVENT": "model_error", "SENSOR": f"{task}_model"})
        if self._on_model_health is not None:
            self._on_model_health(task, ok, message)

    # -- readings ----------------------------------------------------------------------
    def watches(self, sensor: SensorConfig) -> bool:
        return sensor.name in self.falls or sensor.name in self._fire_sensors

    def attach(self, sensor: SensorConfig, device: Any) -> None:
        """Give an accelerometer's driver the per-batch hook (before it is opened)."""
        if sensor.name in self.falls and hasattr(device, "on_samples"):
            device.on_samples = self._samples_handler(sensor.name)
            # A sample waits in the chip's FIFO until the next read: read often enough
            # that a confirmed fall leaves within the alarm latency budget (100 ms).
            if hasattr(device, "fifo_interval_s"):
                device.fifo_interval_s = min(device.fifo_interval_s, FALL_FIFO_READ_S)

    def handler(self, sensor: str) -> Callable[[Any], None] | None:
        """The per-reading hook for a fire-feeding sensor (sampling thread)."""
        if sensor not in self._fire_sensors:
            return None

        def on_reading(reading: Any) -> None:
            values = {FIRE_INPUTS[q]: v for q, v in reading.values.items()
                      if q in FIRE_INPUTS}
            if values:
                self.fire_values(values)
        return on_reading

    def fire_values(self, values: dict[str, float], t: float | None = None) -> None:
        if self.fire is None:
            return
        with self._lock:
            try:
                events = self.fire.update(self._clock() if t is None else t, values)
            except ValueError as exc:
                log.warning("fire detector refused a reading: %s", exc,
                            extra={"EVENT": "detector_exception"})
                return
            if self._fire_ok != self.fire.healthy:  # the model failed while running
                self._fire_ok = self.fire.healthy
                self._report_model("fire", self.fire.healthy,
                                   self.fire.health.get("error") or "", None)
        for ev in events:
            d = ev.to_dict()
            self.counts["fire"] += d.get("state") == "fire"
            log.warning("fire detector: %s (score %s)", d.get("state"), d.get("score"),
                        extra={"EVENT": "fire", "SENSOR": "fire"})
            d["event"] = d.pop("state", "fire")
            self._send("fire", d)

    def _samples_handler(self, sensor: str) -> Callable[[list[Any]], None]:
        det = self.falls[sensor]

        def on_samples(batch: list[Any]) -> None:
            for s in batch:
                for ev in det.update(s.t, s.ax, s.ay, s.az):
                    self._fall(sensor, ev, s.t)
        return on_samples

    def _fall(self, sensor: str, ev: Any, confirm_t: float) -> None:
        d = ev.to_dict()
        # the node's monotonic time of the sample that completed the confirmation:
        # alarm latency is measured from it (bench/models.py)
        d["confirm_t"] = confirm_t
        self.counts["falls"] += 1
        log.warning("fall detected on %s (score %s)", sensor, d.get("score"),
                    extra={"EVENT": "fall", "SENSOR": sensor})
        with self._lock:
            out = self.alarm.fall(d)
        self._emit(out)

    def tick(self) -> None:
        """From the main loop: the cancel window's timeout and button presses."""
        if self.alarm is not None:
            with self._lock:
                out = self.alarm.tick()
            self._emit(out)

    def _emit(self, events: list[Any]) -> None:
        for ev in events:
            d = ev.to_dict()
            kind = d.get("event")
            if kind == "alarm":
                self.counts["alarms"] += 1
            elif kind == "cancelled":
                self.counts["cancelled"] += 1
            self._send("fall", d)

    def _send(self, subject: str, d: dict[str, Any]) -> None:
        confirm_t = d.pop("confirm_t", None)
        recs = event_records(subject, d)
        if confirm_t is not None:  # as text: a compact number would round it by seconds
            recs.append(Record(f"{subject}:confirm_t", text=f"{confirm_t:.4f}"))
        for key in ("model", "version"):
            if isinstance(d.get(key), str):
                recs.append(Record(f"{subject}:{key}", text=d[key]))
        try:
            self._publish(recs)
        except Exception:  # the spool reports its own errors; never lose the thread
            log.exception("could not queue the %s alarm", subject,
                          extra={"EVENT": "spool_error"})

    def close(self) -> None:
        if self.alarm is not None and hasattr(self.alarm, "close"):
            self.alarm.close()


class _Unwired:
    """The cancel window without GPIO (no button configured): same interface."""

    def __init__(self, alarm: Any, clock: Callable[[], float]) -> None:
        self.alarm = alarm
        self._clock = clock

    @property
    def pending(self) -> bool:
        return self.alarm.pending

    def fall(self, event: dict[str, Any]) -> list[Any]:
        return self.alarm.fall(event, self._clock())

    def tick(self) -> list[Any]:
        return self.alarm.tick(self._clock())
