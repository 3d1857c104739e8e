"""``python -m bench.eval_parking`` (``make eval``): the parking and bin detectors on
emulated scenes with known truth.

Parking: 8 bays x 24 simulated hours of :func:`drivers.emulation.scenes.random_day`
(pedestrians and trolleys, rain/snow outliers, a background glitch rate,
cross-talk from the neighbouring bay, a snow-cover episode on one bay and a
no-echo episode on another), sampled at 1 Hz through the daemon's
:class:`~agent.detectors.occupancy.OccupancyDetector` with its defaults. Checks:

* every arrival and departure reported within ``debounce_s + 2`` s of the truth;
* no false transition (a change the truth does not have, e.g. from a pedestrian);
* every fault episode reported as its fault state while it lasts, and no fault
  reported outside one; after a fault the state returns to the truth.

Bins: 4 bins x 48 h of :func:`~drivers.emulation.scenes.random_bin` at one
reading per 5 s: ``needs_collection`` once the fill is past ``full_pct`` (+1 %
for sensor noise), never before it reached ``full_pct - 1``; ``collected`` after
each emptying; nothing else (lid openings, disposals).

Prints a table and exits 1 on any FAIL.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from agent.detectors.fill import COLLECTED, NEEDS_COLLECTION, FillLevelDetector
from agent.detectors.occupancy import FAULT_STATES, BayGroup, Event, OccupancyDetector
from drivers.emulation.scenes import Day, random_bin, random_day

BAYS = 8
HOURS = 24
SAMPLE_S = 1.0
SEED = 20240601
SNOW_BAY = 2
NO_ECHO_BAY = 5
MANEUVER_TOLERANCE_S = 5.0  # a detection may come from the manoeuvre before the truth instant


@dataclass
class BayResult:
    bay: str
    baseline_mm: float
    arrivals: int = 0
    departures: int = 0
    delays: list[float] = field(default_factory=list)
    missed: int = 0
    false: list[str] = field(default_factory=list)
    passes: int = 0
    outliers: int = 0
    faults_expected: int = 0
    faults_reported: int = 0
    fault_delays: list[float] = field(default_factory=list)
    recoveries_ok: int = 0


def simulate_days(seed: int = SEED, bays: int = BAYS, hours: float = HOURS) -> list[Day]:
    days: list[Day] = []
    prev = None
    for i in range(bays):
        day = random_day(seed, f"P{i + 1:02d}", duration_s=hours * 3600.0,
                         crosstalk_from=prev, snow_cover=(i == SNOW_BAY),
                         no_echo=(i == NO_ECHO_BAY), rain_episodes=2 if i % 2 else None)
        days.append(day)
        prev = day.scene
    return days


def score_bay(day: Day, events: list[Event], debounce_s: float, outliers: int) -> BayResult:
    res = BayResult(bay=day.bay, baseline_mm=day.baseline_mm, passes=len(day.passes),
                    outliers=outliers, faults_expected=len(day.faults))
    truth = day.transitions[1:]
    matched = [False] * len(truth)
    fault_seen = [False] * len(day.faults)
    for ev in events:
        if ev.state in FAULT_STATES:
            for k, (f0, f1, kind) in enumerate(day.faults):
                if kind == ev.state and f0 <= ev.t <= f1 and not fault_seen[k]:
                    fault_seen[k] = True
                    res.fault_delays.append(ev.t - f0)
                    break
            else:
                res.false.append(f"{ev.t:.0f}s {ev.previous}->{ev.state} outside a fault episode")
            continue
        want = ev.state == "occupied"
        if ev.previous is None or ev.previous in FAULT_STATES:
            if day.occupied_at(ev.t) != want:
                res.false.append(f"{ev.t:.0f}s {ev.previous}->{ev.state}: truth differs")
            elif ev.previous is not None:
                res.recoveries_ok += 1
            continue
        for k in range(len(truth) - 1, -1, -1):
            tk, occ = truth[k]
            if tk <= ev.t + MANEUVER_TOLERANCE_S:
                if occ == want and not matched[k] and ev.t - tk < 600:
                    matched[k] = True
                    res.delays.append(ev.t - tk)
                else:
                    res.false.append(f"{ev.t:.0f}s {ev.previous}->{ev.state}: no such change")
                break
        else:
            res.false.append(f"{ev.t:.0f}s {ev.previous}->{ev.state}: before any change")
    for (_tk, occ), m in zip(truth, matched, strict=True):
        res.arrivals += occ
        res.departures += not occ
        res.missed += not m
    res.faults_reported = sum(fault_seen)
    return res


def run_parking(seed: int = SEED, *, out=print) -> bool:
    days = simulate_days(seed)
    dets = [OccupancyDetector(d.bay, baseline_mm=d.baseline_mm) for d in days]
    group = BayGroup(dets)
    debounce = dets[0].debounce_s
    per_bay: dict[str, list[Event]] = {d.bay: [] for d in days}
    outliers = {d.bay: 0 for d in days}
    n = int(HOURS * 3600 / SAMPLE_S)
    summaries = 0
    for k in range(n):
        t0 = k * SAMPLE_S
        for i, day in enumerate(days):
            t = t0 + i * 0.1  # the sensors fire one after the other
            d = day.scene(t)
            if (d is None or abs(d - day.scene.true_distance(t)) > 300) and not any(
                    f0 <= t < f1 for f0, f1, _k in day.faults):
                outliers[day.bay] += 1
            per_bay[day.bay] += group.update(day.bay, t, d)
        if k % 60 == 59:
            group.summary()  # what the daemon sends each minute
            summaries += 1
    results = [score_bay(d, per_bay[d.bay], debounce, outliers[d.bay]) for d in days]

    limit = debounce + 2.0
    out(f"parking: {BAYS} bays x {HOURS} h at {1 / SAMPLE_S:g} Hz, debounce {debounce:g} s "
        f"(limit {limit:g} s), seed {seed}")
    out(f"{'bay':<5}{'base mm':>8}{'arr':>5}{'dep':>5}{'max s':>7}{'mean s':>8}{'missed':>7}"
        f"{'false':>6}{'passes':>7}{'outliers':>9}{'faults':>8}{'fault s':>9}")
    ok = True
    all_delays: list[float] = []
    for r in results:
        all_delays += r.delays
        mx = max(r.delays, default=0.0)
        mean = sum(r.delays) / len(r.delays) if r.delays else 0.0
        fs = ",".join(f"{x:.0f}" for x in r.fault_delays) or "-"
        out(f"{r.bay:<5}{r.baseline_mm:>8.0f}{r.arrivals:>5}{r.departures:>5}{mx:>7.1f}"
            f"{mean:>8.1f}{r.missed:>7}{len(r.false):>6}{r.passes:>7}{r.outliers:>9}"
            f"{r.faults_reported:>4}/{r.faults_expected:<3}{fs:>9}")
        for f in r.false[:5]:
            out(f"     false: {f}")
    transitions = sum(r.arrivals + r.departures for r in results)
    max_delay = max(all_delays, default=0.0)
    missed = sum(r.missed for r in results)
    false = sum(len(r.false) for r in results)
    f_exp = sum(r.faults_expected for r in results)
    f_rep = sum(r.faults_reported for r in results)
    checks = [
        (f"{transitions} arrivals/departures detected within {limit:g} s "
         f"(max {max_delay:.1f} s, {missed} missed)", missed == 0 and max_delay <= limit),
        (f"false transitions: {false} ({sum(r.passes for r in results)} pedestrians/trolleys, "
         f"{sum(r.outliers for r in results)} outlier samples)", false == 0),
        (f"fault episodes reported within the episode: {f_rep}/{f_exp}; "
         f"back to the truth after: {sum(r.recoveries_ok for r in results)}", f_rep == f_exp),
    ]
    for text, passed in checks:
        out(f"{'PASS' if passed else 'FAIL'}  {text}")
        ok &= passed
    s = group.summary()
    out(f"      summary at the end: occupied=0x{s.occupied:02x} faults=0x{s.faults:02x} "
        f"({summaries} summaries sent)")
    return ok


def run_bins(seed: int = SEED, *, bins: int = 4, hours: float = 48.0, period_s: float = 5.0,
             out=print) -> bool:
    found = need = col_found = col_need = early = false = 0
    delays: list[float] = []
    col_delays: list[float] = []
    lids = 0
    debounce = 0.0
    for b in range(bins):
        scene, truth = random_bin(seed + b, duration_s=hours * 3600.0)
        det = FillLevelDetector(f"bin{b + 1}", depth_mm=truth.depth_mm)
        debounce = det.debounce_s
        lids += len(truth.lid_open)
        events = []
        t = 0.0
        while t < hours * 3600.0:
            events += det.update(t, scene(t))
            t += period_s
        # truth, per fill cycle: when it reached full - 1 % (from then on an alarm is
        # not early), when it passed full + 1 % (the alarm is due), when it was emptied
        cycles: list[list] = []  # [reached, passed, emptied, matched]
        for ts, pct in truth.steps:
            cur = cycles[-1] if cycles and cycles[-1][2] is None else None
            if cur is None and pct >= det.full_pct - 1:
                cur = [ts, None, None, False]
                cycles.append(cur)
            if cur is not None and cur[1] is None and pct >= det.full_pct + 1:
                cur[1] = ts
            if cur is not None and pct <= det.full_pct - det.hysteresis_pct - 1:
                cur[2] = ts
        need += sum(c[1] is not None for c in cycles)
        col_need += len(truth.collections)
        for ev in events:
            if ev.event == NEEDS_COLLECTION:
                cyc = [c for c in cycles if c[0] <= ev.t and (c[2] is None or ev.t < c[2])]
                if not cyc:
                    early += 1
                elif cyc[0][3]:
                    false += 1
                else:
                    cyc[0][3] = True
                    found += cyc[0][1] is not None
                    delays.append(max(ev.t - (cyc[0][1] or ev.t), 0.0))
            elif ev.event == COLLECTED:
                prior = [c for c in truth.collections if c <= ev.t]
                if prior and ev.t - prior[-1] < 600:
                    col_found += 1
                    col_delays.append(ev.t - prior[-1])
                else:
                    false += 1
    limit = debounce + 6 * period_s
    mx = max(delays + col_delays, default=0.0)
    ok = (found == need and col_found == col_need and early == 0 and false == 0
          and mx <= limit)
    out(f"{'PASS' if ok else 'FAIL'}  bins: {bins} x {hours:g} h at 1/{period_s:g} s, "
        f"{lids} lid openings: needs_collection {found}/{need}, collected {col_found}/{col_need},"
        f" max delay {mx:.0f} s (limit {limit:g} s), early {early}, false {false}")
    return ok


def main() -> int:
    start = time.monotonic()
    ok = run_parking()
    ok &= run_bins()
    print(f"      ({time.monotonic() - start:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
