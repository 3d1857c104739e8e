"""Smart plugs in the daemon: power readings in; relays, cut-offs and care alarms out.

Each power meter (the sensors of the meter family, :mod:`drivers.families.meter`) may
drive a relay on a GPIO pin (``[sensor.plug] relay_pin``), held at its configured safe
state from the moment the daemon starts and again when it stops, with an optional
protective cut-off; and each plug whose ``activity`` is true feeds the household's
:class:`~agent.detectors.activity.ActivityDetector` - the same class
``citynode detect inactivity`` replays. What the detector learned about the household's
routine is kept here, in ``<state_dir>/activity.json``, across restarts (the detector
itself does no file I/O: its state goes out with ``to_dict`` and back with ``state=``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.config import ActivityConfig, Config, SensorConfig
from agent.features.base import Feature, FeatureContext, ReadingHandler, event_records
from drivers.base import Reading
from drivers.families.meter import Meter
from drivers.files import write_atomic

if TYPE_CHECKING:
    from agent.detectors.activity import ActivityDetector

__all__ = ["Household", "activity_kwargs", "load_routine", "meters", "save_routine"]

log = logging.getLogger("citynode.household")
SAVE_EVERY_S = 600.0
ROUTINE = "activity.json"


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


def load_routine(path: Path) -> dict[str, Any] | None:
    """What :func:`save_routine` wrote (None: nothing yet); OSError or ValueError if the
    file cannot be read or is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def save_routine(path: Path, state: dict[str, Any]) -> None:
    """Keep what the detector learned (its ``to_dict()``), atomically: a power cut leaves
    the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state))


def meters(cfg: Config) -> list[SensorConfig]:
    """The configured power meters (smart plugs)."""
    return [s for s in cfg.sensor if isinstance(s, Meter)]


class Household(Feature):
    """The node's plugs: relays, cut-offs and the inactivity detector; its events and
    alarms are sent with kind ``alarm``."""

    name = "household"

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return bool(meters(cfg))

    def __init__(self, cfg: Config, ctx: FeatureContext) -> None:
        self._publish = ctx.publish
        self._wall = ctx.wall
        self._clock = ctx.clock
        self._lock = threading.Lock()
        self.relays: dict[str, Any] = {}
        self.activity: ActivityDetector | None = None
        self._watched: set[str] = set()
        self._state_path = ctx.state_dir / ROUTINE
        self._last_save = self._clock()
        plugs = meters(cfg)
        for s in plugs:
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
                                  safe_state=s.plug.relay_safe_state,
                                  pin_factory=ctx.pin_factory), cutoff=cutoff)
        users = [s.name for s in plugs if s.plug.activity]
        if users and cfg.activity.enabled:
            self.activity = self._open_activity(users, activity_kwargs(cfg.activity))

    def _open_activity(self, users: list[str], kw: dict[str, Any]) -> ActivityDetector:
        from agent.detectors.activity import ActivityDetector

        path = self._state_path
        try:
            return ActivityDetector(users, state=load_routine(path), **kw)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged routine must not stop the node: keep it aside, learn afresh.
            aside = path.with_name(f"{ROUTINE}.corrupt-{int(self._wall())}")
            try:
                path.replace(aside)
            except OSError:
                pass
            log.error("household routine %s unreadable (%s): moved to %s, learning anew",
                      path, exc, aside, extra={"EVENT": "activity_state_bad"})
            return ActivityDetector(users, **kw)

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
            with self._lock:
                state = self.activity.to_dict()
            try:
                save_routine(self._state_path, state)
            except OSError as exc:
                log.warning("cannot save the household routine: %s", exc,
                            extra={"EVENT": "activity_save_error"})
        self._last_save = self._clock()

    def handler(self, sensor: str) -> ReadingHandler:
        def on_reading(r: Reading) -> None:
            watts = r.values.get("w")
            if watts is None:
                return
            events: list[tuple[str, dict[str, Any]]] = []
            ctl = self.relays.get(sensor)
            if ctl is not None:
                events += [(sensor, e) for e in ctl.on_power(r.t_wall, watts)]
            if self.activity is not None and sensor in self.activity.plugs:
                with self._lock:
                    events += [(e.get("plug") or "home", e) for e in
                               (x.to_dict() for x in
                                self.activity.update(r.t_wall, sensor, watts))]
            for subject, e in events:
                self._emit(subject, e)
        return on_reading

    def tick(self, now_wall: float | None = None) -> None:
        """The inactivity alarm is raised by the clock, not by a reading."""
        if self.activity is None:
            return
        now = self._wall() if now_wall is None else now_wall
        with self._lock:
            events = [x.to_dict() for x in self.activity.tick(now)]
        for e in events:
            self._emit(e.get("plug") or "home", e)
        if self._clock() - self._last_save > SAVE_EVERY_S:
            self.save()

    def _emit(self, subject: str, e: dict[str, Any]) -> None:
        level = logging.WARNING if e.get("event") in ("inactivity_alarm", "cutoff",
                                                       "unusual_use") else logging.INFO
        log.log(level, "%s: %s", subject, e.get("event"), extra={"SENSOR": subject,
                                                                 "EVENT": str(e.get("event"))})
        self._publish("alarm", event_records(subject, e))

    def command(self, sensor: str, action: str, value: object) -> tuple[bool, str] | None:
        """A downlink ``device`` command for a plug's relay; None if not a relay."""
        ctl = self.relays.get(sensor)
        if ctl is None:
            return None
        return ctl.command(action, value)

    def status(self) -> dict[str, Any]:
        """Each relay's state; the last activity (Unix time) and whether an alarm is on."""
        out: dict[str, Any] = {}
        if self.relays:
            out["relays"] = {name: ctl.relay.state + (" latched" if ctl.latched else "")
                             for name, ctl in self.relays.items()}
        if self.activity is not None:
            with self._lock:
                out["last_activity"] = self.activity.last_activity
                out["inactivity_alarm"] = self.activity.alarm_since is not None
        return out
