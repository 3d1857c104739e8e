"""Climate sources for the emulated climate sensors (SHT3x, BME280): the air at the chip.

A source is called with the model's clock and returns a :class:`Climate` (°C,
%RH, hPa). :class:`DiurnalClimate` makes up a plausible day of outdoor air;
:func:`constant_climate` never changes (for tests); :func:`as_climate_source`
also accepts a plain function or a list of tuples.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

__all__ = [
    "Climate",
    "ClimateLike",
    "ClimateSource",
    "DiurnalClimate",
    "as_climate_source",
    "constant_climate",
    "rh_at",
    "saturation_hpa",
]


class Climate(NamedTuple):
    """Air at the sensor: °C, %RH, hPa."""

    temp: float
    rh: float
    pressure: float = 1013.25


#: A source is called with the model's clock and returns the air's state.
ClimateSource = Callable[[float], Climate]
ClimateLike = ClimateSource | Callable[[float], tuple[float, ...]] | Iterable[tuple[float, ...]]


def saturation_hpa(temp_c: float) -> float:
    """Saturation vapour pressure over water (Magnus, WMO coefficients), hPa."""
    return 6.112 * math.exp(17.62 * temp_c / (243.12 + temp_c))


def rh_at(rh: float, temp_c: float, new_temp_c: float) -> float:
    """Relative humidity of the same air warmed (or cooled) from temp_c to new_temp_c."""
    return min(100.0, rh * saturation_hpa(temp_c) / saturation_hpa(new_temp_c))


def _ou(x: float, dt: float, tau: float, sigma: float, rng: random.Random) -> float:
    """One exact step of an Ornstein-Uhlenbeck process (mean 0, stationary sd ``sigma``)."""
    if dt <= 0:
        return x
    a = math.exp(-dt / tau)
    return x * a + sigma * math.sqrt(1 - a * a) * rng.gauss(0.0, 1.0)


class DiurnalClimate:
    """Made-up but plausible outdoor air: a daily cycle, weather drift and noise.

    Temperature follows a skewed daily curve (coldest near 5 am, warmest near
    3 pm, ``swing_c`` apart) around ``mean_c``, plus weather drift over hours
    and sensor-scale noise over a minute. The dew point drifts slowly a few
    degrees below the mean, so relative humidity runs opposite to temperature
    (high at dawn, low in the afternoon), as it does outside. Pressure drifts
    with the weather around ``pressure_hpa`` and carries the semidiurnal
    atmospheric tide (about ±0.6 hPa, peaks near 10 am and 10 pm). Seeded, so
    a run can be repeated; ``speed`` makes simulated time run faster.
    """

    def __init__(
        self,
        seed: int | None = 0,
        *,
        mean_c: float = 12.0,
        swing_c: float = 8.0,
        dew_point_depression_c: float = 4.0,
        pressure_hpa: float = 1013.25,
        noise_c: float = 0.05,
        noise_rh: float = 0.3,
        start_hour: float | None = None,
        speed: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.seed = seed
        self.rng = random.Random(seed)
        self.mean_c = mean_c
        self.swing_c = swing_c
        self.dew_point_depression_c = dew_point_depression_c
        self.pressure_hpa = pressure_hpa
        self.noise_c = noise_c
        self.noise_rh = noise_rh
        self.speed = speed
        if start_hour is None:
            lt = time.localtime()
            start_hour = lt.tm_hour + lt.tm_min / 60 + lt.tm_sec / 3600
        self.start_hour = start_hour % 24
        self._t0: float | None = None
        self._last = 0.0
        self._weather_t = 0.0  # °C, hours
        self._weather_td = 0.0  # °C, hours
        self._weather_p = 0.0  # hPa, days
        self._noise_t = 0.0  # °C, a minute
        self._noise_rh = 0.0  # %RH, a minute

    @property
    def description(self) -> str:
        return (f"built-in diurnal climate (seed {self.seed}, {self.mean_c:g} ± "
                f"{self.swing_c / 2:g} °C, speed x{self.speed:g})")

    def cycle(self, hour: float) -> float:
        """Daily temperature shape, -1 (about 5 am) ... +1 (about 3 pm)."""
        x = 2 * math.pi * (hour - 15.0) / 24.0
        # Fundamental plus a second harmonic: a quick morning rise, a slow evening fall.
        return (math.cos(x) + 0.25 * math.cos(2 * x + 0.9)) / 1.13

    def __call__(self, now: float) -> Climate:
        if self._t0 is None:
            self._t0 = self._last = now
        dt = max(0.0, now - self._last) * self.speed
        self._last = now
        rng = self.rng
        self._weather_t = _ou(self._weather_t, dt, 8 * 3600.0, 1.5, rng)
        self._weather_td = _ou(self._weather_td, dt, 6 * 3600.0, 1.2, rng)
        self._weather_p = _ou(self._weather_p, dt, 36 * 3600.0, 6.0, rng)
        self._noise_t = _ou(self._noise_t, dt, 60.0, self.noise_c, rng)
        self._noise_rh = _ou(self._noise_rh, dt, 60.0, self.noise_rh, rng)
        hour = (self.start_hour + (now - self._t0) * self.speed / 3600.0) % 24
        temp = self.mean_c + self.swing_c / 2 * self.cycle(hour) + self._weather_t + self._noise_t
        dew = self.mean_c - self.dew_point_depression_c + self._weather_td
        dew = min(dew, temp)
        rh = 100.0 * saturation_hpa(dew) / saturation_hpa(temp) + self._noise_rh
        tide = 0.6 * math.cos(4 * math.pi * (hour - 10.0) / 24.0)
        pressure = self.pressure_hpa + self._weather_p + tide
        return Climate(temp, max(0.0, min(100.0, rh)), pressure)


def constant_climate(temp: float = 20.0, rh: float = 50.0,
                     pressure: float = 1013.25) -> ClimateSource:
    """A source that never changes (for tests)."""
    value = Climate(temp, rh, pressure)
    return lambda now: value


def _climate(v: Climate | tuple[float, ...]) -> Climate:
    if isinstance(v, Climate):
        return v
    if len(v) not in (2, 3):
        raise ValueError(f"a climate value is (temp, rh[, pressure]), got {v!r}")
    return Climate(*(float(x) for x in v))


def as_climate_source(src: ClimateLike | None, seed: int | None = 0) -> ClimateSource:
    """Accept a source, a function returning (temp, rh[, pressure]), or an iterable of
    such tuples (the last value repeats when it runs out); None: :class:`DiurnalClimate`."""
    if src is None:
        return DiurnalClimate(seed)
    if callable(src):
        fn = src
        return lambda now: _climate(fn(now))
    it: Iterator[tuple[float, ...]] = iter(src)
    last: list[Climate] = []

    def source(now: float) -> Climate:
        try:
            last[:] = [_climate(next(it))]
        except StopIteration:
            if not last:
                raise ValueError("climate source is empty") from None
        return last[0]

    return source
