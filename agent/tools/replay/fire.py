"""Offline replay: ``citynode detect fire --input FILE.csv [--threshold-scale X]``.

The CSV has a header with ``t`` (Unix seconds, or seconds since a start, or ISO 8601;
no zone = UTC) and any of :data:`~agent.detectors.fire.QUANTITIES` (at least one); an
empty cell means "not measured at this time" (sensors report at different rates). Each
value must lie in its quantity's plausible range (:data:`RANGES`: what a sensor can
report, with room; beyond it is a unit error or garbage), and a quantity may have at
most :data:`MAX_PER_SECOND` readings in one second (the detector keeps ten minutes of
them). Rows must be in time order. The rows go through exactly the
:class:`~agent.detectors.fire.FireDetector` the daemon runs: rules only, at the shipped
thresholds times ``threshold_scale`` (as ``[fire] threshold_scale``, from
:data:`THRESHOLD_SCALE_RANGE`).

Output: one JSON line per change of state, ``{"t", "state": "fire"|"clear", "score",
...evidence}``. The whole file is checked before anything is printed; an unknown column
or a malformed row is reported as ``FILE:LINE: reason`` with exit code 65 (EX_DATAERR);
a missing file exits 66; a scale out of its range is a usage error (64). The fire
detector has had no model since 2026.12: ``--model`` is refused by the CLI (64).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from agent.detectors.fire import QUANTITIES, FireConfig, FireDetector
from agent.tools.replay.common import (
    EX_USAGE,
    Clock,
    ReplayError,
    csv_records,
    run_replay,
)

__all__ = ["MAX_PER_SECOND", "RANGES", "THRESHOLD_SCALE_RANGE", "read_fire_rows",
           "replay_fire", "run_cli", "scale_problem"]

Row = tuple[int, float, dict[str, float]]

#: Plausible range of each column, in its unit: the widest sensor's, with room.
RANGES: dict[str, tuple[float, float]] = {
    "temperature_c": (-60.0, 150.0),     # sensors: -40..125 °C
    "humidity_pct": (0.0, 100.0),
    "eco2_ppm": (0.0, 100_000.0),        # SGP30 400..60000, NDIR up to 10 %
    "tvoc_ppb": (0.0, 100_000.0),        # SGP30 0..60000
    "pressure_hpa": (300.0, 1100.0),     # BME280's range: Everest to below sea level
    "pm1_0": (0.0, 10_000.0),            # optical counters stop at 1000 ug/m3
    "pm2_5": (0.0, 10_000.0),
    "pm10": (0.0, 10_000.0),
    "nc0_5": (0.0, 100_000.0),           # SPS30: 0..3000 /cm3
    "nc1_0": (0.0, 100_000.0),
    "nc2_5": (0.0, 100_000.0),
}
MAX_PER_SECOND = 10   # sensors report about once a second
#: ``--threshold-scale`` and ``[fire] threshold_scale`` (agent/core/config.py): from a
#: quarter to four times the shipped thresholds (tests/test_fire.py checks they agree).
THRESHOLD_SCALE_RANGE = (0.25, 4.0)


def read_fire_rows(lines: Iterable[str]) -> Iterator[Row]:
    """(line, t, values) per data row; :class:`ReplayError` names the bad line."""
    records = csv_records(lines)
    try:
        _line, raw = next(records)
    except StopIteration:
        raise ReplayError(1, "empty input: expected a header with t and any of "
                             f"{', '.join(QUANTITIES)}") from None
    header = [h.strip().lower() for h in raw]
    if header:
        header[0] = header[0].lstrip("\ufeff")   # a byte order mark
    shown = ",".join(header)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    if "t" not in header:
        raise ReplayError(1, f"header lacks column t (got {shown})")
    unknown = [h for h in header if h != "t" and h not in QUANTITIES]
    if unknown:
        names = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise ReplayError(1, f"unknown column(s) {names}; accepted: t, "
                             f"{', '.join(QUANTITIES)}")
    cols = [(i, h) for i, h in enumerate(header) if h in QUANTITIES]
    if not cols:
        raise ReplayError(1, f"no quantity column: need at least one of {', '.join(QUANTITIES)}")
    if len(set(header)) != len(header):
        raise ReplayError(1, "a column is named twice")
    ti = header.index("t")
    last_t: float | None = None
    clock = Clock()
    second: dict[str, tuple[int, int]] = {}   # quantity: (second, readings in it)
    for line, fields in records:
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise ReplayError(line, f"{len(fields)} field(s), expected {len(header)}")
        try:
            t = clock.parse(fields[ti])
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        if last_t is not None and t < last_t:
            raise ReplayError(line, f"t {fields[ti].strip()} is earlier than the previous row "
                                    "(rows must be in time order)")
        last_t = t
        values: dict[str, float] = {}
        for i, q in cols:
            text = fields[i].strip()
            if not text:
                continue
            try:
                v = float(text)
            except ValueError:
                raise ReplayError(line, f"{q} {text!r} is not a number (empty means not "
                                        "measured)") from None
            lo, hi = RANGES[q]
            if not math.isfinite(v) or not lo <= v <= hi:
                raise ReplayError(line, f"{q} {text!r} is out of its plausible range "
                                        f"{lo:g} to {hi:g} (a unit error?)")
            s = math.floor(t)
            sec, count = second.get(q, (s, 0))
            count = count + 1 if sec == s else 1
            if count > MAX_PER_SECOND:
                raise ReplayError(line, f"more than {MAX_PER_SECOND} {q} readings within one "
                                        "second: the detector expects about one a second")
            second[q] = (s, count)
            values[q] = v
        yield line, t, values


def replay_fire(rows: Iterable[Row], detector: FireDetector) -> Iterator[dict[str, Any]]:
    """Feed ``rows`` to ``detector``; yield each event's dict."""
    for line, t, values in rows:
        try:
            events = detector.update(t, values)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        for ev in events:
            yield ev.to_dict()


def _check(lines: Iterable[str]) -> None:
    for _row in read_fire_rows(lines):
        pass


def scale_problem(value: float) -> str | None:
    """Why ``value`` cannot be a threshold scale (None: it can)."""
    lo, hi = THRESHOLD_SCALE_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not lo <= value <= hi:
        return f"must be a number from {lo:g} to {hi:g}, got {value!r}"
    return None


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None,
            threshold_scale: float = 1.0) -> int:
    """``citynode detect fire``: the exit code (0; 64 a scale out of range; 65 bad data;
    66 no input; 73 stdin cannot be copied)."""
    err = sys.stderr if err is None else err
    why = scale_problem(threshold_scale)
    if why is not None:
        print(f"error: detect fire: --threshold-scale: {why}", file=err)
        return EX_USAGE
    det = FireDetector(FireConfig().scaled(threshold_scale))

    def replay(lines: Iterable[str], _info: None) -> int:
        for ev in replay_fire(read_fire_rows(lines), det):
            out.write(json.dumps(ev) + "\n")
        return 0

    return run_replay(input_path, err, _check, replay)
