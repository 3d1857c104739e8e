"""Offline replay: ``citynode detect occupancy --input FILE.csv [--baseline BAY=MM ...]``.

The CSV has a header with the columns ``t`` (Unix seconds, or ISO 8601; an ISO
time without a zone is taken as UTC), ``bay`` and ``distance_mm`` (empty: no
echo); other columns are ignored; rows must be in time order per bay. Each bay
gets the same :class:`~agent.detectors.occupancy.OccupancyDetector` the daemon
runs. A bay without ``--baseline`` uses the median of its first minute (said on
stderr): right only if the bay was empty then.

Output: one JSON line per state change, ``{"t", "bay", "state", "previous",
"median_mm", "baseline_mm"}``, ``t`` in Unix seconds. The whole file is checked
before anything is printed; a malformed row is reported as ``FILE:LINE: reason``
with exit code 65 (EX_DATAERR); a missing file exits 66 (EX_NOINPUT).
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO

from agent.detectors.occupancy import OccupancyDetector

__all__ = [
    "EX_DATAERR",
    "EX_NOINPUT",
    "EX_USAGE",
    "ReplayError",
    "Row",
    "parse_baseline_options",
    "parse_time",
    "read_rows",
    "replay_occupancy",
    "run_cli",
]

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
COLUMNS = ("t", "bay", "distance_mm")


class ReplayError(ValueError):
    """A malformed input row; ``line`` is 1-based (the header is line 1)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class Row(NamedTuple):
    line: int
    t: float
    bay: str
    distance_mm: float | None


def parse_time(text: str) -> float:
    """Unix seconds or ISO 8601 (``Z`` or an offset; none = UTC) to Unix seconds."""
    s = text.strip()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise ValueError(f"t {text!r} is not a finite number")
        return v
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"t {text!r} is neither Unix seconds nor ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _parse_distance(text: str) -> float | None:
    s = text.strip()
    if s == "":
        return None
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"distance_mm {text!r} is not a number (empty means no echo)") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"distance_mm {text!r} must be a finite number >= 0")
    return v


def csv_fields(lines: Iterable[str], columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank data row's line number and its ``columns`` fields, in that order.

    The header must name every column (any order, any case, extra columns
    ignored); CSV errors and short rows raise :class:`ReplayError` with the line.
    Shared by every replay command so they read input alike.
    """
    expected = ",".join(columns)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise ReplayError(1, f"empty input: expected a header {expected}") from None
    except csv.Error as e:
        raise ReplayError(1, f"CSV: {e}") from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in columns if c not in names]
    if missing:
        raise ReplayError(1, f"header lacks column(s) {', '.join(missing)} "
                             f"(expected {expected}; got {','.join(header)})")
    index = [names.index(c) for c in columns]
    width = max(index) + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ReplayError(reader.line_num, f"CSV: {e}") from None
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) < width:
            raise ReplayError(reader.line_num,
                              f"{len(fields)} field(s), expected at least {width}")
        yield reader.line_num, [fields[i] for i in index]


def read_rows(lines: Iterable[str]) -> Iterator[Row]:
    """Parse CSV lines (header first) into :class:`Row`; :class:`ReplayError` on bad input."""
    last_t: dict[str, float] = {}
    for line, (t_text, bay_text, dist_text) in csv_fields(lines, COLUMNS):
        try:
            t = parse_time(t_text)
            dist = _parse_distance(dist_text)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        bay = bay_text.strip()
        if not bay:
            raise ReplayError(line, "empty bay")
        prev = last_t.get(bay)
        if prev is not None and t < prev:
            raise ReplayError(line, f"t {t_text.strip()} is earlier than the previous "
                                    f"row of bay {bay} (rows must be in time order)")
        last_t[bay] = t
        yield Row(line, t, bay, dist)


def _coerce(row: Row | Mapping[str, Any] | tuple, n: int) -> Row:
    if isinstance(row, Row):
        return row
    if isinstance(row, Mapping):
        t, bay, d = row["t"], row["bay"], row.get("distance_mm")
    else:
        t, bay, d = row
    tt = parse_time(t) if isinstance(t, str) else float(t)
    dd = _parse_distance(d) if isinstance(d, str) else (None if d is None else float(d))
    return Row(n, tt, str(bay), dd)


def replay_occupancy(rows: Iterable[Row | Mapping[str, Any] | tuple],
                     baselines: Mapping[str, float] | None = None, *,
                     note: Any = None, **detector_kwargs: Any) -> Iterator[dict[str, Any]]:
    """Run one :class:`OccupancyDetector` per bay over ``rows``; yield each event's dict.

    ``rows``: :class:`Row` objects, mappings with ``t``, ``bay``, ``distance_mm``
    or ``(t, bay, distance_mm)`` tuples. Bays missing from ``baselines`` use their
    first minute's median; ``note(message)`` (if given) is told so.
    """
    baselines = dict(baselines or {})
    dets: dict[str, OccupancyDetector] = {}
    noted: set[str] = set()
    for n, raw in enumerate(rows, start=2):
        row = _coerce(raw, n)
        det = dets.get(row.bay)
        if det is None:
            det = OccupancyDetector(row.bay, baseline_mm=baselines.get(row.bay),
                                    **detector_kwargs)
            dets[row.bay] = det
        try:
            events = det.update(row.t, row.distance_mm)
        except ValueError as e:
            raise ReplayError(row.line, str(e)) from None
        had = det.baseline_mm
        for ev in events:
            yield ev.to_dict()
        if det.baseline_source == "auto" and had is not None and row.bay not in noted:
            noted.add(row.bay)
            if note is not None:
                note(f"bay {row.bay}: no --baseline given, using the median of its first "
                     f"minute, {det.baseline_mm:.0f} mm (right only if the bay was empty)")
    for det in dets.values():
        pending = det.baseline_source == "auto" and det.bay not in noted
        for ev in det.flush():
            yield ev.to_dict()
        if pending and note is not None:
            if det.baseline_mm is None:
                note(f"bay {det.bay}: too few readings for a baseline; no occupancy decided")
            else:
                note(f"bay {det.bay}: less than a minute of data, baseline "
                     f"{det.baseline_mm:.0f} mm from all of it")


def parse_baseline_options(values: Iterable[str]) -> dict[str, float]:
    """``["A1=2500", "A2=2480.5"]`` to ``{"A1": 2500.0, ...}``; ValueError names the bad one."""
    out: dict[str, float] = {}
    for v in values:
        bay, sep, mm = v.partition("=")
        try:
            val = float(mm)
        except ValueError:
            val = math.nan
        if not sep or not bay.strip() or not math.isfinite(val) or val <= 0:
            raise ValueError(f"--baseline {v!r}: expected BAY=MM with MM a positive number")
        out[bay.strip()] = val
    return out


def read_input(input_path: str, err: TextIO) -> tuple[str, str | None, int]:
    """A replay's input, a file or ``-`` (stdin), as text: ``(name, text, 0)``, or
    ``(name, None, exit code)`` once the reason is printed (66 missing, 65 not UTF-8)."""
    name = "<stdin>" if input_path == "-" else input_path
    try:
        if input_path == "-":
            return name, sys.stdin.read(), 0
        with open(input_path, encoding="utf-8", newline="") as f:
            return name, f.read(), 0
    except OSError as e:
        print(f"error: {name}: {e.strerror or e}", file=err)
        return name, None, EX_NOINPUT
    except UnicodeDecodeError as e:
        print(f"error: {name}: not UTF-8 text ({e.reason})", file=err)
        return name, None, EX_DATAERR


def run_cli(input_path: str, baselines: Mapping[str, float], out: TextIO,
            err: TextIO | None = None, **detector_kwargs: Any) -> int:
    """``citynode detect occupancy``: returns the exit code (0, 65 bad row, 66 no file)."""
    err = sys.stderr if err is None else err
    name, text, code = read_input(input_path, err)
    if text is None:
        return code
    try:
        # Validate every row before printing anything: a half-printed replay misleads.
        collections.deque(read_rows(io.StringIO(text, newline="")), maxlen=0)
        rows = read_rows(io.StringIO(text, newline=""))
        for ev in replay_occupancy(rows, baselines,
                                   note=lambda m: print(f"note: {m}", file=err),
                                   **detector_kwargs):
            out.write(json.dumps(ev) + "\n")
    except ReplayError as e:
        print(f"error: {name}:{e.line}: {e.message}", file=err)
        return EX_DATAERR
    return 0
