"""Offline replay: ``citynode detect fire --input FILE.csv [--model PATH]``.

The CSV has a header with ``t`` (Unix seconds, or ISO 8601; no zone = UTC) and any of
:data:`~agent.detectors.fire.QUANTITIES` (at least one); an empty cell means "not
measured at this time" (sensors report at different rates). Rows must be in time order.
The rows go through exactly the :class:`~agent.detectors.fire.FireDetector` the daemon
runs, with the shipped model unless ``--model`` names another.

Output: one JSON line per change of state, ``{"t", "state": "fire"|"clear", "score",
...evidence}``. The whole file is checked before anything is printed; an unknown column
or a malformed row is reported as ``FILE:LINE: reason`` with exit code 65 (EX_DATAERR);
a missing file exits 66. A model that cannot be loaded is said on stderr and the replay
runs on the rules (as the daemon would).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from agent.detectors.fire import QUANTITIES, FireDetector
from agent.tools.replay.common import EX_DATAERR, ReplayError, parse_time, read_input

__all__ = ["read_fire_rows", "replay_fire", "run_cli"]

Row = tuple[int, float, dict[str, float]]


def read_fire_rows(lines: Iterable[str]) -> Iterator[Row]:
    """(line, t, values) per data row; :class:`ReplayError` names the bad line."""
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ReplayError(1, "empty input: expected a header with t and any of "
                             f"{', '.join(QUANTITIES)}") from None
    except csv.Error as e:
        raise ReplayError(1, f"CSV: {e}") from None
    if "t" not in header:
        raise ReplayError(1, f"header lacks column t (got {','.join(header)})")
    unknown = [h for h in header if h != "t" and h not in QUANTITIES]
    if unknown:
        raise ReplayError(1, f"unknown column(s) {', '.join(unknown)}; accepted: t, "
                             f"{', '.join(QUANTITIES)}")
    cols = [(i, h) for i, h in enumerate(header) if h in QUANTITIES]
    if not cols:
        raise ReplayError(1, f"no quantity column: need at least one of {', '.join(QUANTITIES)}")
    if len(set(header)) != len(header):
        raise ReplayError(1, "a column is named twice")
    ti = header.index("t")
    last_t: float | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ReplayError(reader.line_num, f"CSV: {e}") from None
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise ReplayError(line, f"{len(fields)} field(s), expected {len(header)}")
        try:
            t = parse_time(fields[ti])
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
            if not math.isfinite(v):
                raise ReplayError(line, f"{q} {text!r} is not a finite number")
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


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None,
            model: str | None = None) -> int:
    """``citynode detect fire``: returns the exit code (0, 65 bad row, 66 no file)."""
    err = sys.stderr if err is None else err
    name, text, code = read_input(input_path, err)
    if text is None:
        return code
    try:
        rows = list(read_fire_rows(io.StringIO(text, newline="")))  # all checked first
    except ReplayError as e:
        print(f"error: {name}:{e.line}: {e.message}", file=err)
        return EX_DATAERR
    det = FireDetector(True if model is None else model)
    if not det.healthy:
        print(f"warning: model not running, rules only: {det.health['error']}", file=err)
    try:
        for ev in replay_fire(rows, det):
            out.write(json.dumps(ev) + "\n")
    except ReplayError as e:
        print(f"error: {name}:{e.line}: {e.message}", file=err)
        return EX_DATAERR
    if not det.healthy and det.health["error"]:
        print(f"warning: model fault during the replay: {det.health['error']}", file=err)
    return 0
