"""Power sources for the power-meter emulators (CSE7766, PZEM-004T): watts over time.

:func:`tracebase_source` replays one day of a tracebase appliance trace
(``dd/mm/yyyy HH:MM:SS;P_1s_W;P_8s_W``, gzipped, one file per day under
``complete/<Appliance>/``). The data set is looked for in ``$CITYNODE_TRACEBASE``,
then ``../shared/data/tracebase`` next to the repository; without it a built-in
kettle-like profile is used.
"""

from __future__ import annotations

import bisect
import gzip
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

__all__ = ["builtin_kettle", "find_tracebase", "load_trace", "tracebase_source"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY_S = 86400.0

WattSource = Callable[[float], float]


def find_tracebase() -> Path | None:
    """The tracebase directory, or None."""
    env = os.environ.get("CITYNODE_TRACEBASE")
    for cand in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared/data/tracebase"]:
        if cand.is_dir():
            return cand
    return None


def load_trace(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """(seconds since midnight, P_1s in W) of a tracebase day file (.csv or .csv.gz)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    times: list[float] = []
    watts: list[float] = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.strip().split(";")
            if len(parts) < 2:
                continue
            try:
                t = datetime.strptime(parts[0].strip(), "%d/%m/%Y %H:%M:%S")
                w = float(parts[1])
            except ValueError:
                continue
            s = float(t.hour * 3600 + t.minute * 60 + t.second)
            if times and s < times[-1]:
                continue  # out of order: keep the trace monotonic
            times.append(s)
            watts.append(max(w, 0.0))
    return times, watts


def builtin_kettle(period_s: float = 600.0) -> WattSource:
    """A kettle-like profile: 2 kW for 90 s (sagging a little), then 0.8 W standby."""

    def source(now: float) -> float:
        t = now % period_s
        if t < 90.0:
            return 2000.0 - t  # 2000 W falling to 1910 W as the element heats
        return 0.8

    source.description = "built-in kettle profile"  # type: ignore[attr-defined]
    return source


def _resolve(path_or_appliance: str | os.PathLike[str]) -> Path | None:
    p = Path(path_or_appliance)
    if p.is_file():
        return p
    base = find_tracebase()
    if base is None:
        return None
    for d in (base / "complete" / str(path_or_appliance), base / str(path_or_appliance)):
        if d.is_dir():
            files = sorted(d.glob("*.csv.gz")) or sorted(d.glob("*.csv"))
            if files:
                return files[0]
    return None


def tracebase_source(
    path_or_appliance: str | os.PathLike[str] = "WaterKettle", speed: float = 1.0
) -> WattSource:
    """Watts from a tracebase day, replayed ``speed`` times real time from the first activity.

    ``path_or_appliance``: a trace file, or an appliance directory name
    (``WaterKettle``, ``Toaster``...; its first day is used). Time starts one
    minute before the first non-zero sample and the day repeats. Falls back to
    :func:`builtin_kettle` when the data set or file is missing.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    path = _resolve(path_or_appliance)
    times: list[float] = []
    watts: list[float] = []
    if path is not None:
        times, watts = load_trace(path)
    if not times:
        inner = builtin_kettle()
        t0k: list[float] = []

        def fallback(now: float) -> float:
            if not t0k:
                t0k.append(now)
            return inner((now - t0k[0]) * speed)

        fallback.description = "built-in kettle profile"  # type: ignore[attr-defined]
        return fallback
    first = next((t for t, w in zip(times, watts, strict=True) if w > 0), times[0])
    offset = max(first - 60.0, 0.0)
    t0: list[float] = []

    def source(now: float) -> float:
        if not t0:
            t0.append(now)
        tod = (offset + (now - t0[0]) * speed) % DAY_S
        i = bisect.bisect_right(times, tod) - 1
        return watts[i] if i >= 0 else watts[0]

    source.description = f"tracebase {path}"  # type: ignore[attr-defined]
    return source
