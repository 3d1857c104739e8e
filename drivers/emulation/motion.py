"""What the emulated accelerometers (ADXL345, MPU-6050) measure: motion sources.

A source gives the acceleration, in g, the chip would see at each of its samples:
``source.samples(rate_hz)`` is a table of ``n`` rows ``(x, y, z)`` at that sample rate
(a :class:`Rows`), which the chip models play in a loop (sample ``k`` is row ``k % n``).
Two kinds:

* :class:`RestSource`: the node lying still - gravity on one axis plus a little
  seeded noise - the default, and what is used when the data sets are absent;
* :class:`SisFallSource`: one SisFall trial (a waist-worn ADXL345 at 200 Hz, ±16 g
  13-bit, ``g = count * 32 / 8192``), resampled to the chip's rate: a moving
  average over one output period (the chip's own low-pass does as much) and linear
  interpolation, so a fall or a walk replays through the whole driver.

:func:`source_from_spec` reads the config's ``emulator_source`` (``"rest"`` or
``"sisfall:SA01/F01_R01"``).

No numpy here: the emulators run inside the daemon (``bus = "emulator"``, the memory
benchmark), whose memory target numpy alone would eat a third of. Tables are flat
:class:`array.array` (8 bytes a value, 2 for SisFall's counts).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
from array import array
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Protocol, overload

from .npy import NpyFormatError, load_npz_member

log = logging.getLogger("citynode.emulation")

SISFALL_RATE_HZ = 200.0
SISFALL_G_PER_COUNT = 32 / 8192  # ±16 g over 13 bits
#: Where the SisFall npz files are: $CITYNODE_SISFALL_DIR, else ../shared/data/sisfall
#: beside the source tree (the development workspace).
SISFALL_DIR = Path(os.environ.get("CITYNODE_SISFALL_DIR")
                   or Path(__file__).resolve().parents[3] / "shared" / "data" / "sisfall")
SPEC = re.compile(r"^sisfall:((?:SA|SE)\d\d)/([DF]\d\d_R\d\d)\Z")


class Rows(Sequence[tuple[float, float, float]]):
    """An ``(n, 3)`` table, row ``k`` being ``(x, y, z)``, stored flat in one
    :class:`array.array` (``data``, row-major) so a long trial stays compact."""

    __slots__ = ("data",)

    def __init__(self, data: array) -> None:
        if len(data) % 3:
            raise ValueError(f"{len(data)} values do not make rows of 3")
        self.data = data

    @classmethod
    def of(cls, rows: Sequence[Sequence[float]], typecode: str = "d") -> Rows:
        """A table from any sequence of 3-value rows."""
        if isinstance(rows, Rows) and rows.data.typecode == typecode:
            return rows
        out = array(typecode)
        for row in rows:
            if len(row) != 3:
                raise ValueError(f"rows of 3 values expected, got {row!r}")
            out.extend(row)
        return cls(out)

    def __len__(self) -> int:
        return len(self.data) // 3

    @overload
    def __getitem__(self, k: int) -> tuple[float, float, float]: ...
    @overload
    def __getitem__(self, k: slice) -> Rows: ...

    def __getitem__(self, k: int | slice) -> tuple[float, float, float] | Rows:
        if isinstance(k, slice):
            start, stop, step = k.indices(len(self))
            if step == 1:
                return Rows(self.data[3 * start:3 * max(start, stop)])
            return Rows.of([self[i] for i in range(start, stop, step)], self.data.typecode)
        n = len(self)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(f"row {k} of {n}")
        d, i = self.data, 3 * k
        return (d[i], d[i + 1], d[i + 2])

    def __iter__(self) -> Iterator[tuple[float, float, float]]:
        d = self.data
        return zip(d[0::3], d[1::3], d[2::3], strict=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rows) and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def column(self, axis: int) -> array:
        """The ``axis`` (0, 1, 2) values, a copy."""
        return self.data[axis::3]

    def __repr__(self) -> str:
        return f"Rows({len(self)} x 3, {self.data.typecode!r})"


class MotionSource(Protocol):
    """Acceleration in g at a given sample rate, played in a loop by the chip models."""

    def samples(self, rate_hz: float) -> Sequence[Sequence[float]]: ...


class RestSource:
    """Lying still: ``gravity`` (g, in chip axes) plus Gaussian noise of ``noise_g``
    (seeded, so a run can be repeated), ``seconds`` long before it repeats."""

    def __init__(self, gravity: tuple[float, float, float] = (0.0, 0.0, 1.0), *,
                 noise_g: float = 0.01, seed: int = 0, seconds: float = 20.0) -> None:
        gx, gy, gz = (float(v) for v in gravity)
        self.gravity = (gx, gy, gz)
        self.noise_g = noise_g
        self.seed = seed
        self.seconds = seconds

    def samples(self, rate_hz: float) -> Rows:
        n = max(1, round(self.seconds * rate_hz))
        if not self.noise_g:
            return Rows(array("d", self.gravity) * n)
        gauss, sd = random.Random(self.seed).gauss, self.noise_g
        return Rows(array("d", (g + gauss(0.0, sd) for _ in range(n) for g in self.gravity)))

    def __repr__(self) -> str:
        return f"RestSource(gravity={self.gravity}, noise_g={self.noise_g})"


def resample(rows: Sequence[Sequence[float]], from_hz: float, to_hz: float, *,
             scale: float = 1.0) -> Rows:
    """Rows at ``from_hz`` (times ``scale``) -> at ``to_hz``: a moving average over one output
    period when slowing down (against aliasing; edge rows repeated at both ends), then linear
    interpolation onto ``k / to_hz``.

    The arithmetic is that of numpy's ``convolve`` + ``interp`` (what this replaced), operation
    for operation, so replays did not change; only where numpy gave a window of 12 or more (not
    a power of two) to its BLAS dot product, which sums in its own CPU-dependent order, may the
    last bit differ. Averages are only computed where the interpolation needs them.
    """
    src = Rows.of(rows, rows.data.typecode if isinstance(rows, Rows) else "d")
    n = len(src)
    if n == 0:
        raise ValueError("nothing to resample")
    if to_hz == from_hz:
        return Rows(array("d", (v * scale for v in src.data)))
    cols = [src.column(k) for k in range(3)]
    width = round(from_hz / to_hz)
    half, weight, last = width // 2, 1 / max(width, 1), n - 1

    def value(col: array, i: int) -> float:
        if width <= 1:
            return col[i] * scale
        total = 0.0
        for m in range(i - half, i - half + width):
            total += col[0 if m < 0 else last if m > last else m] * scale * weight
        return total

    t_last = last / from_hz
    n_out = max(1, math.floor(t_last * to_hz) + 1)
    out = array("d")
    i, here, after = -2, [0.0] * 3, [0.0] * 3  # values at rows i and i + 1, per axis
    for j in range(n_out):
        x = j / to_hz
        if x >= t_last:
            out.extend(value(col, last) for col in cols)
            continue
        k = min(math.floor(x * from_hz), last - 1)
        while k > 0 and k / from_hz > x:
            k -= 1
        while (k + 1) / from_hz <= x:
            k += 1
        t_k = k / from_hz
        if k != i:
            if k == i + 1:
                here = after
            else:
                here = [value(col, k) for col in cols]
            after = [value(col, k + 1) for col in cols]
            i = k
        if x == t_k:
            out.extend(here)
            continue
        dt = (k + 1) / from_hz - t_k
        for a, b in zip(here, after, strict=True):
            out.append((b - a) / dt * (x - t_k) + a)
    return Rows(out)


class SisFallSource:
    """One SisFall trial (``subject`` like ``SA01``, ``trial`` like ``F01_R01``) in g; only
    that trial is read from the subject's ``.npz``."""

    def __init__(self, subject: str, trial: str, *, directory: Path | str | None = None) -> None:
        self.subject, self.trial = subject, trial
        self.path = Path(directory or SISFALL_DIR) / f"{subject}.npz"
        try:
            arr = load_npz_member(self.path, trial)
        except KeyError:
            raise KeyError(f"{self.path} has no trial {trial!r}") from None
        if len(arr.shape) != 2 or arr.shape[1] != 3 or arr.typecode not in "bBhHiIlLqQ":
            raise NpyFormatError(f"{self.path} {trial}: expected (n, 3) integer counts, got "
                                 f"{arr.descr} {arr.shape}")
        #: The trial's raw ADXL345 counts (int16), row per 200 Hz sample.
        self.counts = Rows(arr.data if arr.typecode == "h" else array("h", arr.data))
        self._cache: dict[float, Rows] = {}

    def samples(self, rate_hz: float) -> Rows:
        if rate_hz not in self._cache:
            self._cache[rate_hz] = resample(self.counts, SISFALL_RATE_HZ, rate_hz,
                                            scale=SISFALL_G_PER_COUNT)
        return self._cache[rate_hz]

    @property
    def g(self) -> Rows:
        """The trial in g at its own 200 Hz."""
        return self.samples(SISFALL_RATE_HZ)

    @property
    def duration_s(self) -> float:
        return len(self.counts) / SISFALL_RATE_HZ

    def __repr__(self) -> str:
        return f"SisFallSource({self.subject}/{self.trial})"


def sisfall_available(directory: Path | str | None = None) -> bool:
    return (Path(directory or SISFALL_DIR) / "SA01.npz").exists()


def check_spec(spec: str) -> None:
    """ValueError unless ``spec`` is ``"rest"`` or ``"sisfall:SUBJECT/ACTIVITY_TRIAL"``."""
    if spec != "rest" and not SPEC.match(spec):
        raise ValueError(f'{spec!r}: expected "rest" or "sisfall:SUBJECT/TRIAL" such as '
                         '"sisfall:SA01/F01_R01" (the data set has SA01-SA18 and SE01-SE10)')


@cache
def _sisfall(subject: str, trial: str, directory: str) -> SisFallSource:
    return SisFallSource(subject, trial, directory=directory)


def source_from_spec(spec: str, *, directory: Path | str | None = None,
                     seed: int = 0) -> MotionSource:
    """The source a config's ``emulator_source`` names. A SisFall trial whose file is not
    there (a node without the data sets) falls back to :class:`RestSource`, with a warning."""
    check_spec(spec)
    m = SPEC.match(spec)
    if m is None:
        return RestSource(seed=seed)
    where = str(directory or SISFALL_DIR)
    try:
        return _sisfall(m.group(1), m.group(2), where)
    except (OSError, KeyError) as exc:
        log.warning("emulator source %s unavailable (%s): replaying a node at rest instead",
                    spec, exc)
        return RestSource(seed=seed)
