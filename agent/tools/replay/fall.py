"""Offline replay: ``citynode detect fall --input FILE.csv [--model PATH]``.

The CSV has a header with the columns ``t`` (seconds: Unix, or since any start within
10 years, or ISO 8601), ``ax``, ``ay``, ``az`` (g, each within +-64); other columns are
ignored; rows must be in strictly increasing time order, at 50 Hz or faster (the median
interval decides: an accelerometer sampled slower misses the impact itself). The rows go
through exactly the :class:`~agent.detectors.fall.FallDetector` the daemon runs, with
the shipped model (agent/models/fall.tflite) unless ``--model`` names another.

Output: one JSON line per detected fall, ``{"t": <impact time>, "score": <0..1>, "event":
"fall", ...evidence}``, printed at once (the node's cancel window is not replayed). The
whole file is checked before anything is printed, in blocks: memory does not grow with
the file. A malformed row is reported as ``FILE:LINE: reason`` with exit code 65
(EX_DATAERR), as is a rate below 50 Hz; a missing file exits 66. If the shipped model
cannot be used the replay says so on stderr and goes on with the rules alone, like the
daemon; a ``--model`` that cannot be loaded is an error: 66 when the file is missing,
65 otherwise, one line naming it.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from collections.abc import Iterable, Iterator
from typing import TextIO

from agent.detectors.fall import FallDetector
from agent.tools.replay.common import (
    EX_DATAERR,
    Clock,
    ReplayError,
    csv_fields,
    load_model,
    run_replay,
)

__all__ = ["MIN_RATE_HZ", "check_samples", "read_samples", "replay_fall", "run_cli"]

COLUMNS = ("t", "ax", "ay", "az")
MIN_RATE_HZ = 50.0
MAX_G = 64.0  # beyond any accelerometer a wearer carries: a unit error (m/s^2, counts)
CHUNK = 4096  # samples per call of the detector: its speed, with bounded memory

Sample = tuple[int, float, float, float, float]   # line, t, ax, ay, az


def read_samples(lines: Iterable[str]) -> Iterator[Sample]:
    """Every row, checked, as ``(line, t, ax, ay, az)``; :class:`ReplayError` names the bad
    line."""
    last: float | None = None
    clock = Clock()
    for line, (t_text, x_text, y_text, z_text) in csv_fields(lines, COLUMNS):
        try:
            t = clock.parse(t_text)
        except ValueError as e:
            raise ReplayError(line, str(e)) from None
        try:
            ax, ay, az = float(x_text), float(y_text), float(z_text)
        except ValueError:
            ax = ay = az = math.nan
        if not (-MAX_G <= ax <= MAX_G and -MAX_G <= ay <= MAX_G and -MAX_G <= az <= MAX_G):
            _bad_acceleration(line, (x_text, y_text, z_text))   # NaN fails the test too
        if last is not None and t <= last:
            raise ReplayError(line, f"t {t_text.strip()} is not after the previous row "
                                    "(rows must be in strictly increasing time order)")
        last = t
        yield line, t, ax, ay, az


def _bad_acceleration(line: int, texts: tuple[str, str, str]) -> None:
    """Raise the :class:`ReplayError` that says which of ``texts`` is wrong."""
    for name, text in zip(COLUMNS[1:], texts, strict=True):
        try:
            v = float(text)
        except ValueError:
            raise ReplayError(line, f"{name} {text!r} is not a number") from None
        if not math.isfinite(v) or abs(v) > MAX_G:
            raise ReplayError(line, f"{name} {text!r} must be a finite number of g "
                                    f"within +-{MAX_G:g} (m/s^2 or raw counts?)")


class _MedianInterval:
    """Whether the median interval is longer than ``limit_s``, in constant memory.

    Exact, as ``numpy.median`` would decide: the count of longer intervals settles it,
    except when it is exactly half, where the median is the mean of the longest interval
    not above the limit and the shortest above it. The median's value, for the message,
    comes from a histogram with 0.1 % wide bins.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit = limit_s
        self.n = 0
        self.above = 0
        self.max_below = -math.inf
        self.min_above = math.inf
        self.bins: dict[int, int] = {}

    def add(self, d: float) -> None:
        self.n += 1
        if d > self.limit:
            self.above += 1
            self.min_above = min(self.min_above, d)
        else:
            self.max_below = max(self.max_below, d)
        b = math.floor(math.log(min(max(d, 1e-6), 1e9)) * 1000.0)
        self.bins[b] = self.bins.get(b, 0) + 1

    def too_long(self, rate_of: float) -> bool:
        """Is 1 / median below ``rate_of``?"""
        n, above = self.n, self.above
        if n == 0:
            return False
        if n % 2:
            return above >= (n + 1) // 2
        if above != n // 2:
            return above > n // 2
        return 1.0 / ((self.max_below + self.min_above) / 2) < rate_of

    def median(self) -> float:
        """The median interval, within 0.1 %."""
        seen, half = 0, self.n / 2
        for b in sorted(self.bins):
            seen += self.bins[b]
            if seen >= half:
                return math.exp((b + 0.5) / 1000.0)
        return math.nan


def check_samples(lines: Iterable[str]) -> int:
    """Check every row and the sample rate; the number of samples."""
    floor_hz = MIN_RATE_HZ * 0.98
    med = _MedianInterval(1.0 / floor_hz)
    n = 0
    last = 0.0
    for _line, t, _ax, _ay, _az in read_samples(lines):
        if n:
            med.add(t - last)
        last = t
        n += 1
    if n < 2:
        raise ReplayError(2 + n, "fewer than two samples: nothing to replay")
    if med.too_long(floor_hz):
        raise ReplayError(2, f"sample rate {1.0 / med.median():.1f} Hz (median interval) is "
                             f"below the {MIN_RATE_HZ:g} Hz the fall detector needs")
    return n


def replay_fall(samples: Iterable[Sample], detector: FallDetector,
                chunk: int = CHUNK) -> Iterator[dict]:
    """Feed ``samples`` to ``detector`` in blocks of ``chunk``; the falls as dicts."""
    ts: list[float] = []
    acc = array("d")
    for _line, t, ax, ay, az in samples:
        ts.append(t)
        acc.extend((ax, ay, az))
        if len(ts) >= chunk:
            for e in detector.update_many(ts, acc):
                yield e.to_dict()
            ts, acc = [], array("d")
    if ts:
        for e in detector.update_many(ts, acc):
            yield e.to_dict()
    for e in detector.flush():
        yield e.to_dict()


def run_cli(input_path: str, out: TextIO, err: TextIO | None = None,
            model: str | None = None) -> int:
    """``citynode detect fall``: the exit code (0; 65 bad data or an unusable ``model``;
    66 no input or no ``model`` file)."""
    err = sys.stderr if err is None else err
    if model is not None:
        loaded = load_model(model, "fall", err)
        if isinstance(loaded, int):
            return loaded
        det = FallDetector(loaded)
        if not det.health.ok:
            print(f"error: --model {model}: {det.health.message}", file=err)
            return EX_DATAERR
    else:
        det = FallDetector()

    def replay(lines: Iterable[str], _n: int) -> int:
        if not det.health.ok:
            print(f"warning: {det.health.message}", file=err)
        before = det.health
        for ev in replay_fall(read_samples(lines), det):
            out.write(json.dumps(ev) + "\n")
        if det.health != before:  # the model failed during the replay
            print(f"warning: {det.health.message}", file=err)
        return 0

    return run_replay(input_path, err, check_samples, replay)
