"""Offline replay: ``citynode detect inactivity --input FILE.csv``.

The CSV has a header with the columns ``t`` (Unix seconds, or ISO 8601; no
zone = UTC), ``plug`` and ``watts``; other columns are ignored; rows must be in
time order (all plugs together: the household is one detector). The rows go
through exactly the :class:`~agent.detectors.activity.ActivityDetector` the
daemon runs, with ``tick()`` every ``tick_s`` seconds of the data's clock in
between, so alarms are raised when they are due, not when the next sample comes.
Ticks that cannot raise anything (:meth:`ActivityDetector.quiet_until`) are
folded into one, so a gap of months costs no more than a minute.

Output: one JSON line per event, ``{"t": ..., "event": ..., ...}``. The whole
file is checked before anything is printed (see :func:`~agent.tools.replay.common.run_replay`);
a malformed row is reported as ``FILE:LINE: reason`` with exit code 65 (EX_DATAERR);
an ``--unattended`` plug that is not in the file is a usage error (64); a missing
file exits 66.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TextIO

from agent.detectors.activity import ActivityDetector
from agent.tools.replay.common import (
    Clock,
    ReplayError,
    UsageError,
    check_name,
    csv_fields,
    listing,
    run_replay,
)

__all__ = ["PlugRow", "read_plug_rows", "replay_inactivity", "run_cli"]

COLUMNS = ("t", "plug", "watts")
MAX_WATTS = 100_000.0   # no plug carries more (a 3-phase 63 A supply is 43 kW)


class PlugRow(NamedTuple):
    line: int
    t: float
    plug: str
    watts: float


def read_plug_rows(lines: Iterable[str]) -> Iterator[PlugRow]:
    """Parse CSV lines (header first); :class:`ReplayError` names the bad line."""
    last_t: float | None = None
    clock = Clock()
    plugs: set[str] = set()
    for line, (t_text, plug_text, w_text) in csv_fields(lines, COLUMNS):
        try:
            t = clock.parse(t_text)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        try:
            w = float(w_text)
        except ValueError:
            raise ReplayError(line, f"watts {w_text!r} is not a number") from None
        if not math.isfinite(w) or not 0 <= w <= MAX_WATTS:
            raise ReplayError(line, f"watts {w_text!r} must be a finite number from 0 to "
                                    f"{MAX_WATTS:.0f}")
        try:
            plug = check_name("plug", plug_text, plugs)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        if last_t is not None and t < last_t:
            raise ReplayError(line, f"t {t_text.strip()} is earlier than the previous "
                                    "row (rows must be in time order)")
        last_t = t
        yield PlugRow(line, t, plug, w)


def _grid_before(start: float, step: float, limit: float) -> float:
    """The last ``start + k * step`` (k >= 0) below ``limit`` (``start`` if none is)."""
    k = max(0, math.floor((limit - start) / step))
    while k > 0 and start + k * step >= limit:
        k -= 1
    return start + k * step


def replay_inactivity(rows: Iterable[PlugRow], *, tick_s: float = 60.0,
                      detector: ActivityDetector | None = None,
                      plugs: Iterable[str] | None = None,
                      **detector_kwargs: Any) -> Iterator[dict[str, Any]]:
    """Feed ``rows`` to one detector (all plugs), ticking every ``tick_s``; yield event dicts.

    ``plugs``: the plugs' names, if known (else ``rows`` are read into a list first to
    find them). Work is proportional to the rows, not to the time they span.
    """
    if detector is None:
        if plugs is None:
            rows = list(rows)
            plugs = {r.plug for r in rows}
        detector = ActivityDetector(sorted(plugs), **detector_kwargs)
    det = detector
    next_tick: float | None = None
    for r in rows:
        if next_tick is None:
            next_tick = math.floor(r.t / tick_s) * tick_s + tick_s
        while next_tick < r.t:
            # The ticks before min(r.t, quiet_until - tick_s) raise nothing: the last of
            # them stands for all (the detector closes the hours between at once).
            stop = min(r.t, det.quiet_until() - tick_s)
            if next_tick + tick_s < stop:
                next_tick = _grid_before(next_tick, tick_s, stop)
            for ev in det.tick(next_tick):
                yield ev.to_dict()
            next_tick += tick_s
        try:
            events = det.update(r.t, r.plug, r.watts)
        except ValueError as e:
            raise ReplayError(r.line, str(e)) from None
        for ev in events:
            yield ev.to_dict()


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None,
            unattended: Iterable[str] = (), **kw: Any) -> int:
    """``citynode detect inactivity``: the exit code (0; 64 an ``unattended`` plug not in
    the input; 65 bad row; 66 no input)."""
    err = sys.stderr if err is None else err
    unattended = list(unattended)

    def check(lines: Iterable[str]) -> set[str]:
        plugs = {r.plug for r in read_plug_rows(lines)}
        unknown = sorted(set(unattended) - plugs)
        if unknown:
            raise UsageError(f"--unattended {', '.join(unknown)}: no such plug in the input "
                             f"(its plugs: {listing(plugs)})")
        return plugs

    def replay(lines: Iterable[str], plugs: set[str]) -> int:
        for ev in replay_inactivity(read_plug_rows(lines), plugs=plugs,
                                    unattended=unattended, **kw):
            out.write(json.dumps(ev) + "\n")
        return 0

    return run_replay(input_path, err, check, replay)
