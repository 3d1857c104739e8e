"""Offline replay: ``citynode detect occupancy --input FILE.csv [--baseline BAY=MM ...]``,
and what every ``citynode detect`` command shares.

The CSV has a header with the columns ``t`` (Unix seconds, or ISO 8601; an ISO
time without a zone is taken as UTC), ``bay`` and ``distance_mm`` (empty: no
echo); other columns are ignored; rows must be in time order per bay. Each bay
gets the same :class:`~agent.detectors.occupancy.OccupancyDetector` the daemon
runs. A bay without ``--baseline`` uses the median of its first minute (said on
stderr): right only if the bay was empty then. A ``--baseline`` bay that is not in the
file is a usage error.

Output: one JSON line per state change, ``{"t", "bay", "state", "previous",
"median_mm", "baseline_mm"}``, ``t`` in Unix seconds.

Every replay command reads its input the same way (:func:`run_replay`): as a stream,
twice -- once to check every row, once to replay -- so nothing is printed for a file
with a bad row and memory does not grow with the file (standard input and other
non-regular files are copied to a temporary file on the first pass). Times must be
Unix seconds from 2000-01-01 to 2100-01-01 or seconds since a start (0 to 10 years),
one kind per file (:class:`Clock`). Exit codes: 0 done, 64 usage (an option naming
a bay that is not in the file), 65 bad data (``FILE:LINE: reason``), 66 no input,
73 the temporary copy of standard input cannot be written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TextIO, TypeVar

from agent.core.inputs import STDIN, InputError, input_name, open_text_input
from agent.detectors.occupancy import OccupancyDetector

__all__ = [
    "EX_CANTCREAT",
    "EX_DATAERR",
    "EX_NOINPUT",
    "EX_USAGE",
    "MAX_LINE",
    "MAX_NAMES",
    "Clock",
    "ReplayError",
    "Row",
    "UsageError",
    "check_time",
    "csv_fields",
    "csv_records",
    "load_model",
    "model_file_problem",
    "parse_baseline_options",
    "parse_time",
    "read_rows",
    "replay_occupancy",
    "run_cli",
    "run_replay",
]

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CANTCREAT = 73
COLUMNS = ("t", "bay", "distance_mm")

UNIX_MIN = 946_684_800.0      # 2000-01-01T00:00:00Z
UNIX_MAX = 4_102_444_800.0    # 2100-01-01T00:00:00Z
SINCE_START_MAX = 10 * 365.25 * 86400.0   # a monotonic clock: 10 years since its start
UNIX = "Unix time"
SINCE_START = "seconds since a start"
MAX_LINE = 65_536        # characters in one line: no sensor log comes near it
MAX_RECORD = 1 << 20     # characters in one CSV record (a quoted field may span lines)
MAX_NAME = 100           # characters in a bay or plug name
MAX_NAMES = 1024         # bays or plugs in one file (each has a detector in memory)
MAX_DISTANCE_MM = 100_000.0  # 100 m: beyond any ranger (they reach 10 m)
MAX_AUTO_BUFFER = 100_000  # readings held while bays without --baseline learn theirs

T = TypeVar("T")


class ReplayError(ValueError):
    """A malformed input row; ``line`` is 1-based (the header is line 1)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class UsageError(ValueError):
    """An option that does not fit the input (exit 64); the message says why."""


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


def check_time(t: float, text: str) -> str:
    """The kind of clock ``t`` comes from (:data:`UNIX` or :data:`SINCE_START`).

    ValueError outside both ranges: a time beyond them is a unit error (milliseconds)
    or garbage, and a detector's clock would spend its work on the years in between.
    """
    if not math.isfinite(t):
        raise ValueError(f"t {text.strip()!r} is not a finite number")
    if UNIX_MIN <= t < UNIX_MAX:
        return UNIX
    if 0.0 <= t < SINCE_START_MAX:
        return SINCE_START
    raise ValueError(f"t {text.strip()} is out of range: expected Unix seconds from "
                     "2000-01-01 to 2100-01-01 or seconds since a start (0 to 10 years)")


class Clock:
    """Parses and checks every row's time: in range, and one kind of clock per file."""

    def __init__(self) -> None:
        self.kind: str | None = None
        self.first = ""

    def parse(self, text: str) -> float:
        try:
            t = float(text)
        except ValueError:
            t = parse_time(text)
        else:   # the common case first: a number in this file's range
            if self.kind is UNIX and UNIX_MIN <= t < UNIX_MAX:
                return t
            if self.kind is SINCE_START and 0.0 <= t < SINCE_START_MAX:
                return t
        kind = check_time(t, text)
        if self.kind is None:
            self.kind, self.first = kind, text.strip()
        elif kind != self.kind:
            raise ValueError(f"t {text.strip()} is {kind} but the first row's t "
                             f"{self.first} is {self.kind}: one clock per file")
        return t


def check_name(kind: str, text: str, names: set[str]) -> str:
    """A bay or plug name, stripped; ValueError if empty, too long or one too many."""
    name = text.strip()
    if not name:
        raise ValueError(f"empty {kind}")
    if name not in names:
        if len(name) > MAX_NAME:
            raise ValueError(f"{kind} name longer than {MAX_NAME} characters")
        if len(names) >= MAX_NAMES:
            raise ValueError(f"more than {MAX_NAMES} {kind}s in one file")
        names.add(name)
    return name


def model_file_problem(path: str) -> str | None:
    """Why ``--model PATH`` cannot be a model file (None: it is a regular file)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return e.strerror or str(e)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def load_model(path: str, task: str, err: TextIO) -> Any:
    """``--model PATH`` loaded as the detector runs it, or the exit code after one line on
    ``err``: 66 no such file (naming the .tflite), 65 not a usable ``task`` model."""
    from agent.models.runtime import Model, ModelError

    problem = model_file_problem(path)
    if problem is not None:
        print(f"error: --model {path}: {problem}", file=err)
        return EX_NOINPUT
    try:
        return Model.load(path, expect_task=task)
    except ModelError as e:
        print(f"error: --model {path}: {e}", file=err)
        return EX_DATAERR


def listing(names: Iterable[str], limit: int = 20) -> str:
    """``a, b, c`` (sorted), cut after ``limit`` names: for error messages."""
    s = sorted(names)
    more = f" and {len(s) - limit} more" if len(s) > limit else ""
    return (", ".join(s[:limit]) + more) or "none"


# -- reading CSV as a stream -----------------------------------------------------------------

class _Lines:
    """Physical lines of a text stream or an iterable of lines, each bounded in length.

    ``record`` counts the characters of the CSV record being read (reset by the reader
    after each one), so a quoted field spanning lines cannot grow without bound either.
    ``copy`` receives every line read (the spool of a non-regular input).
    """

    def __init__(self, lines: Iterable[str], copy: TextIO | None = None) -> None:
        readline = getattr(lines, "readline", None)
        self._readline: Callable[[int], str] | None = readline
        self._it = None if readline is not None else iter(lines)
        self.copy = copy
        self.n = 0
        self.record = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._readline is not None:
            try:
                line = self._readline(MAX_LINE + 1)
            except UnicodeDecodeError as e:
                raise ReplayError(self.n + 1, f"not UTF-8 text ({e.reason})") from None
            if not line:
                raise StopIteration
        else:
            assert self._it is not None
            line = next(self._it)
        self.n += 1
        if len(line) > MAX_LINE:
            raise ReplayError(self.n, f"line longer than {MAX_LINE} characters: not a "
                                      "sensor log")
        self.record += len(line)
        if self.record > MAX_RECORD:
            raise ReplayError(self.n, f"CSV record longer than {MAX_RECORD} characters "
                                      "(an unclosed quote?)")
        if self.copy is not None:
            try:
                self.copy.write(line)
            except OSError as e:
                raise _SpoolError(e) from None
        return line


def csv_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Every CSV record's last line number and fields, the header first, as a stream.

    Lines and records are bounded (:data:`MAX_LINE`); CSV errors raise
    :class:`ReplayError` with the line.
    """
    src = lines if isinstance(lines, _Lines) else _Lines(lines)
    reader = csv.reader(src)
    while True:
        src.record = 0
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ReplayError(max(reader.line_num, 1), f"CSV: {e}") from None
        yield reader.line_num, fields


def csv_fields(lines: Iterable[str], columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank data row's line number and its ``columns`` fields, in that order.

    The header must name every column (any order, any case, extra columns
    ignored); CSV errors and short rows raise :class:`ReplayError` with the line.
    Shared by every replay command so they read input alike.
    """
    expected = ",".join(columns)
    records = csv_records(lines)
    try:
        _line, header = next(records)
    except StopIteration:
        raise ReplayError(1, f"empty input: expected a header {expected}") from None
    names = [h.strip().lower() for h in header]
    if names:
        names[0] = names[0].lstrip("\ufeff")   # a byte order mark (spreadsheets write one)
    missing = [c for c in columns if c not in names]
    if missing:
        got = ",".join(header)
        if len(got) > 200:
            got = got[:200] + "..."
        raise ReplayError(1, f"header lacks column(s) {', '.join(missing)} "
                             f"(expected {expected}; got {got})")
    index = [names.index(c) for c in columns]
    width = max(index) + 1
    for line, fields in records:
        if not fields or (not fields[0].strip() and all(not f.strip() for f in fields)):
            continue
        if len(fields) < width:
            raise ReplayError(line, f"{len(fields)} field(s), expected at least {width}")
        yield line, [fields[i] for i in index]


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class _SpoolError(Exception):
    """The temporary copy of a non-regular input could not be written."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc))


def run_replay(input_path: str, err: TextIO, check: Callable[[Iterable[str]], T],
               replay: Callable[[Iterable[str], T], int | None]) -> int:
    """Run a replay command over ``input_path`` (``-``: standard input); its exit code.

    ``check(lines)`` reads every row and raises :class:`ReplayError` at the first bad
    one (or :class:`UsageError` when an option does not fit the data); what it returns
    goes to ``replay(lines, info)``, which reads the same lines again and prints. The
    input is never held in memory: a regular file is read twice, anything else (stdin,
    a pipe) is copied to a temporary file while it is checked (exit 73 if that fails).
    Opening and reading follow :mod:`agent.core.inputs` (66: missing, a directory).
    """
    name = input_name(input_path)
    try:
        if input_path != STDIN and _is_regular(input_path):
            with open_text_input(input_path) as f:
                info = check(_Lines(f))
            with open_text_input(input_path) as f:
                return replay(_Lines(f), info) or 0
        with open_text_input(input_path) as f:
            try:
                copy = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
            except OSError as e:
                raise _SpoolError(e) from None
            with copy:
                info = check(_Lines(f, copy))
                copy.seek(0)
                return replay(_Lines(copy), info) or 0
    except ReplayError as e:
        print(f"error: {name}:{e.line}: {e.message}", file=err)
        return EX_DATAERR
    except UsageError as e:
        print(f"error: {e}", file=err)
        return EX_USAGE
    except InputError as e:
        print(f"error: {e}", file=err)
        return e.code
    except _SpoolError as e:
        print(f"error: cannot copy {name} to a temporary file ({e}): set TMPDIR, or give "
              "a regular file", file=err)
        return EX_CANTCREAT


# -- occupancy -------------------------------------------------------------------------------

def _parse_distance(text: str) -> float | None:
    s = text.strip()
    if s == "":
        return None
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"distance_mm {text!r} is not a number (empty means no echo)") from None
    if not math.isfinite(v) or not 0 <= v <= MAX_DISTANCE_MM:
        raise ValueError(f"distance_mm {text!r} must be a finite number >= 0 and <= "
                         f"{MAX_DISTANCE_MM:.0f} (in mm)")
    return v


def read_rows(lines: Iterable[str]) -> Iterator[Row]:
    """Parse CSV lines (header first) into :class:`Row`; :class:`ReplayError` on bad input."""
    last_t: dict[str, float] = {}
    clock = Clock()
    names: set[str] = set()
    for line, (t_text, bay_text, dist_text) in csv_fields(lines, COLUMNS):
        try:
            t = clock.parse(t_text)
            dist = _parse_distance(dist_text)
            bay = check_name("bay", bay_text, names)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
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


def _check_occupancy(lines: Iterable[str], baselines: Mapping[str, float],
                     auto_s: float) -> None:
    """Every row, the bays named by ``--baseline``, and what bays without one buffer."""
    bays: set[str] = set()
    first: dict[str, float] = {}
    buffered = 0
    for row in read_rows(lines):
        bays.add(row.bay)
        if row.bay in baselines:
            continue
        t0 = first.setdefault(row.bay, row.t)
        if row.t - t0 < auto_s:
            buffered += 1
            if buffered > MAX_AUTO_BUFFER:
                raise ReplayError(row.line, f"more than {MAX_AUTO_BUFFER} readings in the "
                                            "first minute of bays without --baseline (each "
                                            "is held until its baseline is known): give "
                                            "--baseline BAY=MM")
    unknown = sorted(set(baselines) - bays)
    if unknown:
        raise UsageError(f"--baseline {', '.join(unknown)}: no such bay in the input "
                         f"(its bays: {listing(bays)})")


def run_cli(input_path: str, baselines: Mapping[str, float], out: TextIO,
            err: TextIO | None = None, **detector_kwargs: Any) -> int:
    """``citynode detect occupancy``: the exit code (0; 64 a --baseline bay not in the
    input; 65 bad row; 66 no input)."""
    err = sys.stderr if err is None else err
    auto_s = float(detector_kwargs.get("auto_baseline_s", 60.0))

    def replay(lines: Iterable[str], _info: None) -> int:
        for ev in replay_occupancy(read_rows(lines), baselines,
                                   note=lambda m: print(f"note: {m}", file=err),
                                   **detector_kwargs):
            out.write(json.dumps(ev) + "\n")
        return 0

    return run_replay(input_path, err,
                      lambda lines: _check_occupancy(lines, baselines, auto_s), replay)
