"""Smart plugs in the daemon: power readings in; relays, cut-offs and care alarms out.

Each power meter (``cse7766``, ``pzem004t``) may drive a relay on a GPIO pin
(``[sensor.plug] relay_pin``), held at its configured safe state from the
moment the daemon starts and again when it stops, with an optional protective
cut-off; and each plug whose ``activity`` is true feeds the household's
:class:`~agent.detectors.activity.ActivityDetector` - the same class
``citynode detect inactivity`` replays. What the detector learned about the
household's routine is kept in ``<state_dir>/activity.json`` across restarts.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core.config import METERS, ActivityConfig, Config, SensorConfig
from agent.wire.payload import Record
from drivers.base import Reading

log = logging.getLogger("citynode.household")
SAVE_EVERY_S = 600.0


def activity_kwargs(cfg: ActivityConfig | None = None,
                    utc_offset_s: float | None = None) -> dict[str, Any]:
    """The :class:`~agent.detectors.activity.ActivityDetector` arguments for an
    ``[activity]`` table, shared by the daemon, the replay CLI and the evaluation
    so that all three run the same detector. Hours of the week are counted in
    ``utc_offset_s`` (else the table's ``utc_offset_h``, else the node's local time)."""
    from agent.detectors.activity import Routine

    cfg = cfg if cfg is not None else ActivityConfig()
    if utc_offset_s is None:
        utc_offset_s = (cfg.utc_offset_h * 3600.0 if cfg.utc_offset_h is not None
                        else float(time.localtime().tm_gmtoff))
    return {"min_inactivity_s": cfg.min_inactivity_s, "margin": cfg.margin,
            "max_wait_s": cfg.max_wait_s, "routine": Routine(utc_offset_s=utc_offset_s)}


def event_records(subject: str, event: dict[str, Any]) -> list[Record]:
    """A detector's event as SenML records: ``<subject>:event`` and its numeric fields."""
    recs = [Record(f"{subject}:event", text=str(event.get("event", "event")))]
    for key, value in event.items():
        if key in ("t", "event", "plug", "bay", "bin") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            recs.append(Record(f"{subject}:{key}", value=float(value)))
    return recs


class Household:
    """The node's plugs: relays, cut-offs and the inactivity detector."""

    def __init__(self, cfg: Config, state_dir: Path,
                 publish: Callable[[list[Record]], None]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self.relays: dict[str, Any] = {}
        self.activity = None
        self._watched: set[str] = set()
        self._state_path = state_dir / "activity.json"
        self._last_save = time.monotonic()
        meters = [s for s in cfg.sensor if isinstance(s, METERS)]
        for s in meters:
            self._watched.add(s.name)
            if s.plug.relay_pin is not None:
                from agent.detectors.protection import OverPowerCutoff
                from agent.features.relays import RelayController
                from drivers.relay import Relay

                cutoff = (OverPowerCutoff(s.name, limit_w=s.plug.cutoff_w,
                                          hold_s=s.plug.cutoff_s)
                          if s.plug.cutoff_w else None)
                self.relays[s.name] = RelayController(
                    s.name, Relay(s.plug.relay_pin, active_high=s.plug.relay_active_high,
                                  safe_state=s.plug.relay_safe_state), cutoff=cutoff)
        users = [s.name for s in meters if s.plug.activity]
        if users and cfg.activity.enabled:
            from agent.detectors.activity import ActivityDetector

            kw = activity_kwargs(cfg.activity)
            try:
                self.activity = ActivityDetector(users, state_path=self._state_path, **kw)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # A damaged routine must not stop the node: keep it aside, learn afresh.
                aside = self._state_path.with_name(f"activity.json.corrupt-{int(time.time())}")
                try:
                    self._state_path.replace(aside)
                except OSError:
                    pass
                log.error("household routine %s unreadable (%s): moved to %s, learning anew",
                          self._state_path, exc, aside, extra={"EVENT": "activity_state_bad"})
                self.activity = ActivityDetector(users, state_path=self._state_path, **kw)

    @property
    def watched(self) -> set[str]:
        return self._watched

    def watches(self, sensor: SensorConfig) -> bool:
        return sensor.name in self._watched

    def open(self) -> None:
        """Relays to their safe state before anything else happens."""
        for name, ctl in self.relays.items():
            try:
                ctl.open()
            except Exception as exc:  # no GPIO, pin in use: the plug still meters
                log.error("relay of %s unavailable: %s", name, exc,
                          extra={"SENSOR": name, "EVENT": "relay_error"})

    def close(self) -> None:
        for ctl in self.relays.values():
            ctl.close()
        self.save()

    def save(self) -> None:
        if self.activity is not None:
            try:
                self.activity.save()
            except OSError as exc:
                log.warning("cannot save the household routine: %s", exc,
                            extra={"EVENT": "activity_save_error"})
        self._last_save = time.monotonic()

    def handler(self, name: str) -> Callable[[Reading], None]:
        def on_reading(r: Reading) -> None:
            watts = r.values.get("w")
            if watts is None:
                return
            events: list[tuple[str, dict[str, Any]]] = []
            ctl = self.relays.get(name)
            if ctl is not None:
                events += [(name, e) for e in ctl.on_power(r.t_wall, watts)]
            if self.activity is not None and name in self.activity.plugs:
                with self._lock:
                    events += [(e.get("plug") or "home", e) for e in
                               (x.to_dict() for x in self.activity.update(r.t_wall, name, watts))]
            for subject, e in events:
                self._emit(subject, e)
        return on_reading

    def tick(self, now_wall: float | None = None) -> None:
        """The inactivity alarm is raised by the clock, not by a reading."""
        if self.activity is None:
            return
        now = time.time() if now_wall is None else now_wall
        with self._lock:
            events = [x.to_dict() for x in self.activity.tick(now)]
        for e in events:
            self._emit(e.get("plug") or "home", e)
        if time.monotonic() - self._last_save > SAVE_EVERY_S:
            self.save()

    def _emit(self, subject: str, e: dict[str, Any]) -> None:
        level = logging.WARNING if e.get("event") in ("inactivity_alarm", "cutoff",
                                                       "unusual_use") else logging.INFO
        log.log(level, "%s: %s", subject, e.get("event"), extra={"SENSOR": subject,
                                                                 "EVENT": str(e.get("event"))})
        self._publish(event_records(subject, e))

    def command(self, sensor: str, action: str, value: object) -> tuple[bool, str] | None:
        """A downlink ``device`` command for a plug's relay; None if not a relay."""
        ctl = self.relays.get(sensor)
        if ctl is None:
            return None
        return ctl.command(action, value)
