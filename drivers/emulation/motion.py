"""What the emulated accelerometers (ADXL345, MPU-6050) measure: motion sources.

A source gives the acceleration, in g, the chip would see at each of its samples:
``source.samples(rate_hz)`` is an ``(n, 3)`` array at that sample rate, which the
chip models play in a loop (sample ``k`` is row ``k % n``). Two kinds:

* :class:`RestSource`: the node lying still - gravity on one axis plus a little
  seeded noise - the default, and what is used when the data sets are absent;
* :class:`SisFallSource`: one SisFall trial (a waist-worn ADXL345 at 200 Hz, ±16 g
  13-bit, ``g = count * 32 / 8192``), resampled to the chip's rate: a moving
  average over one output period (the chip's own low-pass does as much) and linear
  interpolation, so a fall or a walk replays through the whole driver.

:func:`source_from_spec` reads the config's ``emulator_source`` (``"rest"`` or
``"sisfall:SA01/F01_R01"``).
"""

from __future__ import annotations

import logging
import os
import re
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger("citynode.emulation")

SISFALL_RATE_HZ = 200.0
SISFALL_G_PER_COUNT = 32 / 8192  # ±16 g over 13 bits
#: Where the SisFall npz files are: $CITYNODE_SISFALL_DIR, else ../shared/data/sisfall
#: beside the source tree (the development workspace).
SISFALL_DIR = Path(os.environ.get("CITYNODE_SISFALL_DIR")
                   or Path(__file__).resolve().parents[3] / "shared" / "data" / "sisfall")
SPEC = re.compile(r"^sisfall:((?:SA|SE)\d\d)/([DF]\d\d_R\d\d)\Z")


class MotionSource(Protocol):
    """Acceleration in g at a given sample rate, played in a loop by the chip models."""

    def samples(self, rate_hz: float) -> np.ndarray: ...


class RestSource:
    """Lying still: ``gravity`` (g, in chip axes) plus Gaussian noise of ``noise_g``
    (seeded, so a run can be repeated), ``seconds`` long before it repeats."""

    def __init__(self, gravity: tuple[float, float, float] = (0.0, 0.0, 1.0), *,
                 noise_g: float = 0.01, seed: int = 0, seconds: float = 20.0) -> None:
        self.gravity = np.asarray(gravity, dtype=float)
        self.noise_g = noise_g
        self.seed = seed
        self.seconds = seconds

    def samples(self, rate_hz: float) -> np.ndarray:
        n = max(1, round(self.seconds * rate_hz))
        rng = np.random.default_rng(self.seed)
        return self.gravity + rng.normal(0.0, self.noise_g, (n, 3)) if self.noise_g else (
            np.tile(self.gravity, (n, 1)))

    def __repr__(self) -> str:
        return f"RestSource(gravity={tuple(self.gravity)}, noise_g={self.noise_g})"


def resample(g: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """``(n, 3)`` samples at ``from_hz`` -> at ``to_hz``: a moving average over one output
    period when slowing down (against aliasing), then linear interpolation."""
    g = np.asarray(g, dtype=float)
    if to_hz == from_hz:
        return g.copy()
    width = round(from_hz / to_hz)
    if width > 1:
        kernel = np.ones(width) / width
        pad = np.pad(g, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
        g = np.stack([np.convolve(pad[:, k], kernel, mode="valid") for k in range(3)], axis=1)
    t_in = np.arange(len(g)) / from_hz
    n_out = max(1, int(np.floor(t_in[-1] * to_hz)) + 1)
    t_out = np.arange(n_out) / to_hz
    return np.stack([np.interp(t_out, t_in, g[:, k]) for k in range(3)], axis=1)


class SisFallSource:
    """One SisFall trial (``subject`` like ``SA01``, ``trial`` like ``F01_R01``) in g."""

    def __init__(self, subject: str, trial: str, *, directory: Path | str | None = None) -> None:
        self.subject, self.trial = subject, trial
        self.path = Path(directory or SISFALL_DIR) / f"{subject}.npz"
        with np.load(self.path) as data:
            if trial not in data.files:
                raise KeyError(f"{self.path} has no trial {trial!r}")
            self.counts = np.asarray(data[trial], dtype=np.int16)
        self.g = self.counts.astype(float) * SISFALL_G_PER_COUNT
        self._cache: dict[float, np.ndarray] = {}

    def samples(self, rate_hz: float) -> np.ndarray:
        if rate_hz not in self._cache:
            self._cache[rate_hz] = resample(self.g, SISFALL_RATE_HZ, rate_hz)
        return self._cache[rate_hz]

    @property
    def duration_s(self) -> float:
        return len(self.g) / SISFALL_RATE_HZ

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
