"""Offline replay: ``citynode detect inactivity --input FILE.csv``.

The CSV has a header with the columns ``t`` (Unix seconds, or ISO 8601; no
zone = UTC), ``plug`` and ``watts``; other columns are ignored; rows must be in
time order (all plugs together: the household is one detector). The rows go
through exactly the :class:`~agent.detectors.activity.ActivityDetector` the
daemon runs, with ``tick()`` every ``tick_s`` seconds of the data's clock in
between, so alarms are raised when they are due, not when the next sample comes.

Output: one JSON line per event, ``{"t": ..., "event": ..., ...}``. The whole
file is checked before anything is printed; a malformed row is reported as
``FILE:LINE: reason`` with exit code 65 (EX_DATAERR); a missing file exits 66.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TextIO

from agent.detectors.activity import ActivityDetector
from agent.tools.replay.common import EX_DATAERR, ReplayError, csv_fields, parse_time, read_input

__all__ = ["PlugRow", "read_plug_rows", "replay_inactivity", "run_cli"]

COLUMNS = ("t", "plug", "watts")


class PlugRow(NamedTuple):
    line: int
    t: float
    plug: str
    watts: float


def read_plug_rows(lines: Iterable[str]) -> Iterator[PlugRow]:
    """Parse CSV lines (header first); :class:`ReplayError` names the bad line."""
    last_t: float | None = None
    for line, (t_text, plug_text, w_text) in csv_fields(lines, COLUMNS):
        try:
            t = parse_time(t_text)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        try:
            w = float(w_text)
        except ValueError:
            raise ReplayError(line, f"watts {w_text!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise ReplayError(line, f"watts {w_text!r} must be a finite number >= 0")
        plug = plug_text.strip()
        if not plug:
            raise ReplayError(line, "empty plug")
        if last_t is not None and t < last_t:
            raise ReplayError(line, f"t {t_text.strip()} is earlier than the previous "
                                    "row (rows must be in time order)")
        last_t = t
        yield PlugRow(line, t, plug, w)


def replay_inactivity(rows: Iterable[PlugRow], *, tick_s: float = 60.0,
                      detector: ActivityDetector | None = None,
                      **detector_kwargs: Any) -> Iterator[dict[str, Any]]:
    """Feed ``rows`` to one detector (all plugs), ticking every ``tick_s``; yield event dicts."""
    rows = list(rows)
    det = detector or ActivityDetector(sorted({r.plug for r in rows}), **detector_kwargs)
    next_tick: float | None = None
    for r in rows:
        if next_tick is None:
            next_tick = math.floor(r.t / tick_s) * tick_s + tick_s
        while next_tick < r.t:
            for ev in det.tick(next_tick):
                yield ev.to_dict()
            next_tick += tick_s
        try:
            events = det.update(r.t, r.plug, r.watts)
        except ValueError as e:
            raise ReplayError(r.line, str(e)) from None
        for ev in events:
            yield ev.to_dict()


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None, **kw: Any) -> int:
    """``citynode detect inactivity``: returns the exit code (0, 65 bad row, 66 no file)."""
    err = sys.stderr if err is None else err
    name, text, code = read_input(input_path, err)
    if text is None:
        return code
    try:
        rows = list(read_plug_rows(io.StringIO(text, newline="")))  # all checked first
        for ev in replay_inactivity(rows, **kw):
            out.write(json.dumps(ev) + "\n")
    except ReplayError as e:
        print(f"error: {name}:{e.line}: {e.message}", file=err)
        return EX_DATAERR
    return 0
