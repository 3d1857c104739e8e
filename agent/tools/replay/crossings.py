"""Offline replay: ``citynode detect crossings --input FILE.csv [--line-x M] [--zone-y MIN:MAX]``.

Replays HLK-LD2450 report frames through the counter the daemon's counting feature runs
(:func:`agent.features.counting.crossing_counter` over a ``[sensor.counting]`` table with
its defaults, positions converted by the same :func:`~agent.detectors.crossing.from_mm`),
so a capture counts here as it counted on the node (docs/counting.md).

The CSV has a header naming ``t``, ``target``, ``x_mm`` and ``y_mm`` (any order, any case;
other columns are ignored) and one row per target of a report frame:

* ``t``: seconds (Unix time, seconds since a start, or ISO 8601; one kind per file:
  :class:`~agent.tools.replay.common.Clock`); the rows of one frame share ``t``, and ``t``
  never goes back. A slot without a target has no row, so a frame without any target has
  none at all: the counter does not need empty frames (tracks live and die by time).
* ``target``: the radar's slot, 0, 1 or 2, at most once per frame.
* ``x_mm``: along the pavement, from -10000 to 10000; ``y_mm``: out from the radar, over 0
  and at most 10000. The LD2450 sees about 6 m (Hi-Link's instruction manual V1.00); the
  room beyond is for other mountings, and a value outside it is a unit error (metres,
  micrometres) or garbage. ``y <= 0`` is at or behind the antenna: no radar reports it (the
  driver refuses such frames too, the radar's codec).

Output: one JSON line per crossing, ``{"t": ..., "direction": "in"|"out"}`` (``in`` =
towards +x; ``t`` the time the line was crossed, to the millisecond), in time order, and
nothing else on standard output. The whole file is checked before anything is printed
(streamed twice, never held in memory: :func:`~agent.tools.replay.common.run_replay`).

Exit codes: 0 replayed; 64 usage (``--line-x`` outside -10 to 10 m, ``--zone-y`` not
``MIN:MAX`` with 0 <= MIN < MAX <= 10); 65 a bad row (``FILE:LINE: reason``); 66 the input
is missing or unreadable; 73 standard input cannot be copied to a temporary file.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple, TextIO

from agent.tools.replay.common import (
    EX_USAGE,
    Clock,
    ReplayError,
    csv_fields,
    run_replay,
)

__all__ = ["COLUMNS", "LINE_RANGE_M", "X_RANGE_MM", "Y_RANGE_MM", "ZONE_RANGE_M", "frames",
           "line_problem", "parse_zone", "read_rows", "run_cli", "zone_problem"]

COLUMNS = ("t", "target", "x_mm", "y_mm")
#: Plausible positions (mm): the radar's 6 m and 60 degrees either side, with room.
X_RANGE_MM = (-10_000.0, 10_000.0)
Y_RANGE_MM = (0.0, 10_000.0)          # y over 0
SLOTS = (0, 1, 2)
#: ``--line-x`` and ``[sensor.counting] line_x_m``; ``--zone-y`` and ``zone_y_m`` (m).
LINE_RANGE_M = (-10.0, 10.0)
ZONE_RANGE_M = (0.0, 10.0)


class Row(NamedTuple):
    line: int
    t: float
    slot: int
    x_mm: float
    y_mm: float


def _number(name: str, text: str, lo: float, hi: float, what: str, low_open: bool = False
            ) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{name} {text.strip()!r} is not a number ({what})") from None
    if not math.isfinite(v) or v > hi or (v <= lo if low_open else v < lo):
        low = f"over {lo:g}" if low_open else f"from {lo:g}"
        raise ValueError(f"{name} {text.strip()!r} is out of range: {low} to {hi:g} ({what})")
    return v


def read_rows(lines: Iterable[str]) -> Iterator[Row]:
    """Every row checked (:class:`ReplayError` names the line), as a stream."""
    clock = Clock()
    last_t: float | None = None
    slots: set[int] = set()
    for line, (t_text, slot_text, x_text, y_text) in csv_fields(lines, COLUMNS):
        try:
            t = clock.parse(t_text)
            s = slot_text.strip()
            if s not in ("0", "1", "2"):
                raise ValueError(f"target {s!r} is not a slot of the radar: 0, 1 or 2")
            slot = int(s)
            x = _number("x_mm", x_text, *X_RANGE_MM, "mm along the pavement; the radar "
                        "sees about 6 m either way")
            y = _number("y_mm", y_text, *Y_RANGE_MM, "mm out from the radar; 0 or less is "
                        "behind its antenna", low_open=True)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        if last_t is not None and t < last_t:
            raise ReplayError(line, f"t {t_text.strip()} is earlier than the previous row "
                                    "(rows must be in time order)")
        if t != last_t:
            slots = set()
        if slot in slots:
            raise ReplayError(line, f"target {slot} twice in the frame at t "
                                    f"{t_text.strip()} (the rows of one frame share t, one "
                                    "row per slot)")
        slots.add(slot)
        last_t = t
        yield Row(line, t, slot, x, y)


def frames(rows: Iterable[Row]) -> Iterator[tuple[float, list[Row]]]:
    """Rows grouped into report frames: consecutive rows with the same ``t``."""
    frame: list[Row] = []
    for row in rows:
        if frame and row.t != frame[0].t:
            yield frame[0].t, frame
            frame = []
        frame.append(row)
    if frame:
        yield frame[0].t, frame


def line_problem(value: float) -> str | None:
    """Why ``value`` cannot be the line's x in metres (None: it can)."""
    lo, hi = LINE_RANGE_M
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not lo <= value <= hi:
        return f"must be a number from {lo:g} to {hi:g} (metres), got {value!r}"
    return None


def zone_problem(zone: tuple[float, float] | None) -> str | None:
    """Why ``zone`` cannot be the counting zone's (min, max) y in metres (None: it can)."""
    if zone is None:
        return None
    lo, hi = ZONE_RANGE_M
    try:
        a, b = (float(v) for v in zone)
    except (TypeError, ValueError):
        return f"expected MIN:MAX, got {zone!r}"
    if not (math.isfinite(a) and math.isfinite(b) and lo <= a < b <= hi):
        return f"expected MIN:MAX in metres with {lo:g} <= MIN < MAX <= {hi:g}, got {a:g}:{b:g}"
    return None


def parse_zone(text: str) -> tuple[float, float]:
    """``"0.5:4"`` -> ``(0.5, 4.0)``; ValueError says what is expected."""
    a, sep, b = text.partition(":")
    try:
        zone = (float(a), float(b)) if sep else None
    except ValueError:
        zone = None
    if zone is None:
        raise ValueError(f"expected MIN:MAX in metres (e.g. 0.5:4), got {text!r}")
    why = zone_problem(zone)
    if why is not None:
        raise ValueError(why)
    return zone


def _check(lines: Iterable[str]) -> None:
    for _row in read_rows(lines):
        pass


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None, *, line_x_m: float = 0.0,
            zone_y_m: tuple[float, float] | None = None) -> int:
    """``citynode detect crossings``: the exit code (0; 64 a bad line or zone; 65 bad row;
    66 no input; 73 stdin cannot be copied)."""
    err = sys.stderr if err is None else err
    for option, why in (("--line-x", line_problem(line_x_m)), ("--zone-y", zone_problem(zone_y_m))):
        if why is not None:
            print(f"error: detect crossings: {option}: {why}", file=err)
            return EX_USAGE
    from agent.detectors.crossing import from_mm
    from agent.features.counting import crossing_counter
    from drivers.families.counting import CountingLine

    table = CountingLine(line_x_m=float(line_x_m),
                         zone_y_m=None if zone_y_m is None else [float(v) for v in zone_y_m])

    def replay(lines: Iterable[str], _info: None) -> int:
        counter = crossing_counter(table)
        for t, rows in frames(read_rows(lines)):
            for c in counter.update(t, from_mm((r.slot, r.x_mm, r.y_mm) for r in rows)):
                out.write(json.dumps({"t": round(c.t, 3), "direction": c.direction}) + "\n")
        return 0

    return run_replay(input_path, err, _check, replay)
