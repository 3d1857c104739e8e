"""Fall and fire detection in the daemon: readings in, alarms out (docs/fall.md, docs/fire.md).

*Falls*: every sensor that delivers sample batches (its spec says ``samples=True``: the
accelerometers) hands each FIFO batch to its own :class:`~agent.detectors.fall.FallDetector`
on its sampling thread, so a fall is judged on every sample, not on the once-a-second
readings. A detected fall starts the :class:`~agent.features.fall_alarm.CancelWindow`
(``[fall] cancel_s``, only when a button is configured; the fall button feature in
:mod:`agent.features.fall_alarm` shows it on the buzzer and LED and cancels it with the
"I'm OK" button); when it expires the ``alarm`` goes upstream at once, from whichever
thread noticed, with the score, the model version and the evidence. Without a button the
alarm leaves on the sampling thread that confirmed the fall.

*Fire*: the readings of the climate, particulate and gas sensors (``[fire] sensors``,
default all of them, chosen by their spec's kind) feed one
:class:`~agent.detectors.fire.FireDetector`, rules only (no model since 2026.12), at the
shipped thresholds times ``[fire] threshold_scale``; each change of state
(``fire``/``clear``) is an alarm message.

A fall model that cannot be loaded or run is reported as the health of a pseudo-sensor
``fall_model`` (``errors``, with the reason) and the fall detector goes on with its
physical rules; nothing here can stop the daemon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.config import Config, SensorConfig
from agent.features.base import (
    Feature,
    FeatureContext,
    ReadingHandler,
    SampleStream,
    event_records,
)
from agent.features.fall_alarm import CancelWindow
from agent.wire.model import Record
from drivers.catalogue import spec_of

__all__ = ["Safety", "fall_sensors", "fire_sensors"]

log = logging.getLogger("citynode.safety")

#: Device kinds whose readings feed fire detection by default.
FIRE_KINDS = ("climate", "particulate", "gas")
# Reading quantity -> the fire detector's input name. PMS5003 particle counts (per 0.1 L)
# are not the SPS30's number concentrations (per cm3): only the latter are passed on.
FIRE_INPUTS = {
    "temp": "temperature_c", "rh": "humidity_pct", "pressure": "pressure_hpa",
    "eco2": "eco2_ppm", "tvoc": "tvoc_ppb",
    "pm1": "pm1_0", "pm25": "pm2_5", "pm10": "pm10",
    "nc0_5": "nc0_5", "nc1_0": "nc1_0", "nc2_5": "nc2_5",
}
FALL_FIFO_READ_S = 0.04  # at 100 Hz: 4 samples a read, 25 short I2C reads a second


def fall_sensors(cfg: Config) -> list[SensorConfig]:
    """The sensors fall detection runs on: the motion sensors that deliver sample batches
    (a radar's sample stream is people's positions, not accelerations)."""
    if not cfg.fall.enabled:
        return []
    return [s for s in cfg.sensor if spec_of(s).samples and spec_of(s).kind == "motion"]


def fire_sensors(cfg: Config) -> list[SensorConfig]:
    """The sensors that feed fire detection: ``[fire] sensors``, else every sensor of a
    climate, particulate or gas kind."""
    if not cfg.fire.enabled:
        return []
    if cfg.fire.sensors:
        return [s for s in cfg.sensor if s.name in cfg.fire.sensors]
    return [s for s in cfg.sensor if spec_of(s).kind in FIRE_KINDS]


def _model_arg(setting: str, default: Any) -> Any:
    if setting == "":
        return default
    if setting.lower() == "none":
        return None
    return Path(setting)


class Safety(Feature):
    """The node's fall and fire alarms, sent with kind ``alarm``."""

    name = "safety"

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return bool(fall_sensors(cfg) or fire_sensors(cfg))

    def __init__(self, cfg: Config, ctx: FeatureContext) -> None:
        self._publish = ctx.publish
        self._on_model_health = ctx.on_model_health
        self._clock = ctx.clock
        self._lock = threading.Lock()
        self.models: dict[str, str] = {}
        self.falls: dict[str, Any] = {}
        self.alarm: CancelWindow | None = None
        self.fire: Any = None
        self._fire_sensors: set[str] = set()
        self.counts = {"falls": 0, "alarms": 0, "cancelled": 0, "fire": 0}
        accels = fall_sensors(cfg)
        if accels:
            self._open_falls(cfg, accels)
            ctx.offer(self.alarm)
        feeders = fire_sensors(cfg)
        if feeders:
            from agent.detectors.fire import FireConfig, FireDetector

            # [fire] model is unused (the daemon warns at start): rules only
            self.fire = FireDetector(FireConfig().scaled(cfg.fire.threshold_scale))
            self._fire_sensors = {s.name for s in feeders}

    # -- set-up ------------------------------------------------------------------------
    def _open_falls(self, cfg: Config, accels: list[SensorConfig]) -> None:
        from agent.detectors.fall import DEFAULT_MODEL, FallDetector
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
        first = next(iter(self.falls.values()))
        self._report_model("fall", first.health.ok, first.health.message or "",
                           getattr(first.model, "meta", None))
        # Without a button nobody can cancel: no window, the alarm leaves at once.
        f = cfg.fall
        self.alarm = CancelWindow(f.cancel_s if f.button_pin is not None else 0.0,
                                  self._clock)

    def _report_model(self, task: str, ok: bool, message: str, meta: Any) -> None:
        if meta is not None:
            self.models[task] = f"{meta.name} {meta.version}"
        if not ok:
            log.error("%s model: %s", task, message,
                      extra={"EVENT": "model_error", "SENSOR": f"{task}_model"})
        if self._on_model_health is not None:
            self._on_model_health(task, ok, message)

    # -- readings and samples ----------------------------------------------------------
    def watches(self, sensor: SensorConfig) -> bool:
        return sensor.name in self.falls or sensor.name in self._fire_sensors

    def samples(self, sensor: str) -> SampleStream | None:
        """An accelerometer's batches to its fall detector. A sample waits in the chip's
        FIFO until the next read: read often enough that a confirmed fall leaves within
        the alarm latency budget (100 ms)."""
        if sensor not in self.falls:
            return None
        return SampleStream(self._samples_handler(sensor), FALL_FIFO_READ_S)

    def handler(self, sensor: str) -> ReadingHandler | None:
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
        for ev in events:
            d = ev.to_dict()
            self.counts["fire"] += d.get("state") == "fire"
            reasons = ",".join(d.pop("reasons", []))
            log.warning("fire detector: %s (score %s, reasons %s)", d.get("state"),
                        d.get("score"), reasons or "none",
                        extra={"EVENT": "fire", "SENSOR": "fire"})
            d["event"] = d.pop("state", "fire")
            # why, in records a platform can read: each signal's level and learned baseline
            for sig in d.pop("signals", []):
                d[sig["quantity"]] = sig["level"]
                d[f"{sig['quantity']}_baseline"] = sig["baseline"]
            self._send("fire", d, text={"reasons": reasons} if reasons else None)

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
        if self.alarm is not None:  # always, with the detectors
            self._emit(self.alarm.fall(d))

    def tick(self) -> None:
        """From the main loop: the cancel window's timeout and cancels."""
        if self.alarm is not None:
            self._emit(self.alarm.tick())

    def _emit(self, events: list[Any]) -> None:
        for ev in events:
            d = ev.to_dict()
            kind = d.get("event")
            if kind == "alarm":
                self.counts["alarms"] += 1
            elif kind == "cancelled":
                self.counts["cancelled"] += 1
            self._send("fall", d)

    def _send(self, subject: str, d: dict[str, Any], text: dict[str, str] | None = None
              ) -> None:
        confirm_t = d.pop("confirm_t", None)
        recs = event_records(subject, d)
        recs += [Record(f"{subject}:{k}", text=v) for k, v in (text or {}).items()]
        if confirm_t is not None:  # as text: a compact number would round it by seconds
            recs.append(Record(f"{subject}:confirm_t", text=f"{confirm_t:.4f}"))
        for key in ("model", "version"):
            if isinstance(d.get(key), str):
                recs.append(Record(f"{subject}:{key}", text=d[key]))
        try:
            self._publish("alarm", recs)
        except Exception:  # the spool reports its own errors; never lose the thread
            log.exception("could not queue the %s alarm", subject,
                          extra={"EVENT": "spool_error"})

    # -- the operator --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Falls detected, alarms sent and cancelled, one pending; fire alarms; the fall
        model (fire detection has none)."""
        out: dict[str, Any] = {"models": dict(self.models)}
        if self.falls:
            out.update(falls=self.counts["falls"], fall_alarms=self.counts["alarms"],
                       fall_cancelled=self.counts["cancelled"],
                       fall_pending=bool(self.alarm is not None and self.alarm.pending))
        if self.fire is not None:
            out.update(fire_alarms=self.counts["fire"])
        return out

    def close(self) -> None:
        """A cancel window that ran out while the sensors stopped still goes upstream."""
        self.tick()
