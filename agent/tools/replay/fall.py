"""Offline replay: ``citynode detect fall --input FILE.csv [--model PATH]``.

The CSV has a header with the columns ``t`` (seconds: Unix or from any origin, or ISO
8601), ``ax``, ``ay``, ``az`` (g); other columns are ignored; rows must be in strictly
increasing time order, at 50 Hz or faster (the median interval decides: an accelerometer
sampled slower misses the impact itself). The rows go through exactly the
:class:`~agent.detectors.fall.FallDetector` the daemon runs, with the shipped model
(agent/models/fall.tflite) unless ``--model`` names another.

Output: one JSON line per detected fall, ``{"t": <impact time>, "score": <0..1>, "event":
"fall", ...evidence}``, printed at once (the node's cancel window is not replayed). The
whole file is checked before anything is printed; a malformed row is reported as
``FILE:LINE: reason`` with exit code 65 (EX_DATAERR), as is a rate below 50 Hz; a
missing file exits 66. If the shipped model cannot be used the replay says so on stderr
and goes on with the rules alone, like the daemon; a ``--model`` that cannot be loaded
is an error (65, or 66 when the file is missing).
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import numpy as np

from agent.detectors.fall import FallDetector
from agent.models.runtime import Model, ModelError
from agent.tools.replay.common import (
    EX_DATAERR,
    EX_NOINPUT,
    ReplayError,
    csv_fields,
    parse_time,
    read_input,
)

__all__ = ["MIN_RATE_HZ", "read_samples", "replay_fall", "run_cli"]

COLUMNS = ("t", "ax", "ay", "az")
MIN_RATE_HZ = 50.0
MAX_G = 64.0  # beyond any accelerometer a wearer carries: a unit error (m/s^2, counts)


def read_samples(lines: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check every row: ``(t, acc)``; :class:`ReplayError` names the bad line."""
    ts: list[float] = []
    acc: list[tuple[float, float, float]] = []
    last: float | None = None
    for line, (t_text, *a_text) in csv_fields(lines, COLUMNS):
        try:
            t = parse_time(t_text)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        vals = []
        for name, text in zip(COLUMNS[1:], a_text, strict=True):
            try:
                v = float(text)
            except ValueError:
                raise ReplayError(line, f"{name} {text!r} is not a number") from None
            if not math.isfinite(v) or abs(v) > MAX_G:
                raise ReplayError(line, f"{name} {text!r} must be a finite number of g "
                                        f"within +-{MAX_G:g} (m/s^2 or raw counts?)")
            vals.append(v)
        if last is not None and t <= last:
            raise ReplayError(line, f"t {t_text.strip()} is not after the previous row "
                                    "(rows must be in strictly increasing time order)")
        last = t
        ts.append(t)
        acc.append((vals[0], vals[1], vals[2]))
    if len(ts) < 2:
        raise ReplayError(2 + len(ts), "fewer than two samples: nothing to replay")
    t_arr = np.asarray(ts)
    rate = 1.0 / float(np.median(np.diff(t_arr)))
    if rate < MIN_RATE_HZ * 0.98:
        raise ReplayError(2, f"sample rate {rate:.1f} Hz (median interval) is below the "
                             f"{MIN_RATE_HZ:g} Hz the fall detector needs")
    return t_arr, np.asarray(acc)


def replay_fall(t: np.ndarray, acc: np.ndarray, detector: FallDetector) -> list[dict]:
    """Feed everything to ``detector``; the falls as dicts."""
    events = detector.update_many(t, acc) + detector.flush()
    return [e.to_dict() for e in events]


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None,
            model: str | None = None) -> int:
    """``citynode detect fall``: returns the exit code (0, 65 bad data, 66 no file)."""
    err = sys.stderr if err is None else err
    name, text, code = read_input(input_path, err)
    if text is None:
        return code
    try:
        t, acc = read_samples(io.StringIO(text, newline=""))
    except ReplayError as e:
        print(f"error: {name}:{e.line}: {e.message}", file=err)
        return EX_DATAERR
    if model is not None:
        try:
            det = FallDetector(Model.load(model, expect_task="fall"))
        except ModelError as e:
            print(f"error: {e}", file=err)
            return EX_NOINPUT if not Path(model).is_file() else EX_DATAERR
        if not det.health.ok:
            print(f"error: {det.health.message}", file=err)
            return EX_DATAERR
    else:
        det = FallDetector()
    if not det.health.ok:
        print(f"warning: {det.health.message}", file=err)
    before = det.health
    for ev in replay_fall(t, acc, det):
        out.write(json.dumps(ev) + "\n")
    if det.health != before:  # the model failed during the replay
        print(f"warning: {det.health.message}", file=err)
    return 0
