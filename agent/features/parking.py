"""Parking bays and bins in the daemon: distance readings in, state changes out.

Each distance sensor configured with ``[sensor.use] role = "bay"`` gets an
:class:`~agent.detectors.occupancy.OccupancyDetector`, each ``role = "bin"`` a
:class:`~agent.detectors.fill.FillLevelDetector` - the same classes
``citynode detect occupancy`` replays, so what a platform sees from a node is
what the replay shows. Changes go out at once on the event lane; every report
carries a compact summary of all bays (bitmasks) and every bin's fill level.
Baselines measured by ``citynode calibrate`` live in ``<state_dir>/baselines.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

from agent.core.config import Config, ConfigError, SensorConfig, load
from agent.detectors.fill import FillLevelDetector
from agent.detectors.occupancy import BayGroup, CalibrationError, OccupancyDetector, calibrate
from agent.features.base import Feature, FeatureContext, ReadingHandler, Stats
from agent.wire.model import Record
from drivers.base import Reading
from drivers.families.ranger import Ranger
from drivers.files import write_atomic

log = logging.getLogger("citynode.parking")
BASELINES = "baselines.json"


def load_baselines(state_dir: Path) -> dict[str, float]:
    try:
        data = json.loads((state_dir / BASELINES).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", state_dir / BASELINES, exc,
                    extra={"EVENT": "baselines_unreadable"})
        return {}
    return {str(k): float(v) for k, v in data.items()
            if isinstance(v, int | float) and 0 < v < 20000}


def save_baseline(state_dir: Path, bay: str, mm: float) -> Path:
    """Store one bay's baseline atomically beside the others."""
    state_dir.mkdir(parents=True, exist_ok=True)
    data = load_baselines(state_dir)
    data[bay] = round(mm, 1)
    path = state_dir / BASELINES
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    return path


def watched_rangers(cfg: Config) -> list[SensorConfig]:
    """The distance sensors that watch a bay or a bin (not plain distances)."""
    return [s for s in cfg.sensor if isinstance(s, Ranger) and s.use.role in ("bay", "bin")]


class Parking(Feature):
    """The node's bays and bins; readings arrive on the sensors' threads; state changes
    are sent with kind ``event``."""

    name = "parking"

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return bool(watched_rangers(cfg))

    def __init__(self, cfg: Config, ctx: FeatureContext) -> None:
        self._publish = ctx.publish
        self._wall = ctx.wall
        self._lock = threading.Lock()
        self.bays = BayGroup([])
        self.bins: dict[str, FillLevelDetector] = {}
        self._last: dict[str, float] = {}
        self._interval: dict[str, float] = {}
        stored = load_baselines(ctx.state_dir)
        for s in watched_rangers(cfg):
            use = s.use
            if use.role == "bay":
                self.bays.add(OccupancyDetector(
                    s.name, baseline_mm=use.baseline_mm or stored.get(s.name),
                    debounce_s=use.debounce_s))
            else:
                self.bins[s.name] = FillLevelDetector(s.name, depth_mm=use.depth_mm,
                                                      full_pct=use.full_pct)
            self._interval[s.name] = s.read_interval_s

    def watches(self, sensor: SensorConfig) -> bool:
        return sensor.name in self._interval

    def report_stats(self, sensor: str, stats: Stats) -> Stats:
        """A bay or bin reports its state, not its distances."""
        return {} if sensor in self._interval else stats

    def handler(self, sensor: str) -> ReadingHandler:
        def on_reading(r: Reading) -> None:
            d = r.values.get("d")
            self._update(sensor, r.t_wall, None if d is None else d * 1000.0)
        return on_reading

    def tick(self, now_wall: float | None = None) -> None:
        """No reading for a while is information too (no echo): tell the detectors."""
        now = self._wall() if now_wall is None else now_wall
        for name, every in self._interval.items():
            if now - self._last.get(name, now) > max(2.0, 3 * every):
                self._update(name, now, None)

    def _update(self, name: str, t: float, mm: float | None) -> None:
        with self._lock:
            if mm is not None:
                self._last[name] = t
            if name in self.bins:
                events = [e.to_dict() for e in self.bins[name].update(t, mm)]
            else:
                events = [e.to_dict() for e in self.bays.update(name, t, mm)]
        for e in events:
            subject = e.get("bay") or e.get("bin")
            state = e.get("state") or e.get("event")
            log.info("%s: %s", subject, state, extra={"SENSOR": subject, "EVENT": "parking"})
            recs = [Record(f"{subject}:state", text=str(state))]
            if e.get("fill_pct") is not None:
                recs.append(Record(f"{subject}:fill", value=float(e["fill_pct"])))
            self._publish("event", recs)

    def summary_records(self) -> list[Record]:
        """Bitmasks of the bays (bit i = i-th configured bay) and bin fill levels."""
        with self._lock:
            out: list[Record] = []
            if len(self.bays):
                s = self.bays.summary()
                out += [Record("bays:occ", value=s.occupied), Record("bays:fault", value=s.faults)]
            for name, det in self.bins.items():
                if det.fill_pct is not None:
                    out.append(Record(f"{name}:fill", value=float(det.fill_pct)))
            return out

    def status(self) -> dict[str, object]:
        """Each bay's state and each bin's fill level (None: not known yet)."""
        with self._lock:
            out: dict[str, object] = {}
            if len(self.bays):
                out["bays"] = {d.bay: d.state for d in self.bays}
            if self.bins:
                out["bins"] = {name: det.fill_pct for name, det in self.bins.items()}
            return out


def calibrate_bay(config_path: str, bay: str, *, seconds: float = 30.0) -> int:
    """``citynode calibrate BAY``: read the empty bay, check the readings, store the baseline."""
    from agent.core.config import EX_CONFIG
    from agent.core.sensors import build_device

    try:
        cfg = load(config_path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    sensor = next((s for s in cfg.sensor if s.name == bay), None)
    if sensor is None or not isinstance(sensor, Ranger) or sensor.use.role != "bay":
        bays = [s.name for s in cfg.sensor if isinstance(s, Ranger) and s.use.role == "bay"]
        print(f"error: no parking bay named {bay!r} in {config_path} "
              f"(bays: {', '.join(bays) or 'none'})", file=sys.stderr)
        return 64
    dev = build_device(sensor)
    samples: list[float | None] = []
    print(f"measuring bay {bay} for {seconds:g} s: keep the bay empty...", file=sys.stderr)
    try:
        dev.open()
        deadline = time.monotonic() + seconds
        last = time.monotonic()
        while time.monotonic() < deadline:
            got = dev.poll()
            for r in got:
                samples.append(r.values["d"] * 1000.0)
                last = time.monotonic()
            if not got and time.monotonic() - last > 3 * sensor.read_interval_s:
                samples.append(None)  # no echo
                last = time.monotonic()
    except Exception as exc:  # the device: not there, not answering
        print(f"error: cannot read {bay}: {exc}", file=sys.stderr)
        return 69
    finally:
        dev.close()
    try:
        baseline = calibrate(samples)
    except CalibrationError as exc:
        print(f"error: {bay}: {exc}; nothing stored", file=sys.stderr)
        return 65
    path = save_baseline(cfg.node.resolved_state_dir(), bay, baseline)
    print(json.dumps({"bay": bay, "baseline_mm": round(baseline, 1), "samples": len(samples),
                      "stored": str(path)}))
    print(f"stored in {path}; restart citynode to use it, or set [sensor.use] baseline_mm = "
          f"{baseline:.0f} for {bay}", file=sys.stderr)
    return 0
