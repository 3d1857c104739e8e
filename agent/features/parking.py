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
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.core.config import RANGERS, Config, ConfigError, SensorConfig, load
from agent.detectors.fill import FillLevelDetector
from agent.detectors.occupancy import BayGroup, CalibrationError, OccupancyDetector, calibrate
from agent.wire.payload import Record
from drivers.base import Reading

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
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class Parking:
    """The node's bays and bins; readings arrive on the sensors' threads."""

    def __init__(self, cfg: Config, state_dir: Path,
                 publish: Callable[[list[Record]], None]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self.bays = BayGroup([])
        self.bins: dict[str, FillLevelDetector] = {}
        self._last: dict[str, float] = {}
        self._interval: dict[str, float] = {}
        stored = load_baselines(state_dir)
        for s in cfg.sensor:
            if not isinstance(s, RANGERS):
                continue
            use = s.use
            if use.role == "bay":
                self.bays.add(OccupancyDetector(
                    s.name, baseline_mm=use.baseline_mm or stored.get(s.name),
                    debounce_s=use.debounce_s))
            elif use.role == "bin":
                self.bins[s.name] = FillLevelDetector(s.name, depth_mm=use.depth_mm,
                                                      full_pct=use.full_pct)
            else:
                continue
            self._interval[s.name] = s.read_interval_s

    @property
    def watched(self) -> set[str]:
        return set(self._interval)

    def watches(self, sensor: SensorConfig) -> bool:
        return sensor.name in self._interval

    def handler(self, name: str) -> Callable[[Reading], None]:
        def on_reading(r: Reading) -> None:
            d = r.values.get("d")
            self._update(name, r.t_wall, None if d is None else d * 1000.0)
        return on_reading

    def tick(self, now_wall: float | None = None) -> None:
        """No reading for a while is information too (no echo): tell the detectors."""
        now = time.time() if now_wall is None else now_wall
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
            self._publish(recs)

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
    if sensor is None or not isinstance(sensor, RANGERS) or sensor.use.role != "bay":
        bays = [s.name for s in cfg.sensor if isinstance(s, RANGERS) and s.use.role == "bay"]
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
