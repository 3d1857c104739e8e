"""Light sources for the emulated light sensors (BH1750, LTR390): the light at the chip.

A source is called with the model's clock and returns a :class:`Light` (illuminance in lx
and UV index). :class:`Daylight` makes up a plausible day at a street sensor; a number or a
``(lux, uvi)`` pair is a constant source (for tests); a function of the clock returning
either is a source too (:func:`as_light_source`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import NamedTuple

from .climate import _ou

__all__ = [
    "Daylight",
    "Light",
    "LightLike",
    "LightSource",
    "as_light_source",
    "clear_sky_lux",
    "clear_sky_uvi",
    "constant_light",
    "sun_elevation_deg",
]


class Light(NamedTuple):
    """Light at the sensor: illuminance in lx, UV index."""

    lux: float
    uvi: float = 0.0


#: A source is called with the model's clock and returns the light's state.
LightSource = Callable[[float], Light]
LightLike = (LightSource | Callable[[float], "float | tuple[float, float]"] | float
             | tuple[float, float])


def sun_elevation_deg(latitude_deg: float, day_of_year: float, solar_hour: float) -> float:
    """The sun's elevation above the horizon (degrees) at a solar time of day.

    Declination from the day of the year (Cooper's approximation), hour angle 15° per hour
    from solar noon; good to about a degree, plenty for made-up light."""
    decl = math.radians(-23.44 * math.cos(2 * math.pi * (day_of_year + 10) / 365.0))
    lat = math.radians(latitude_deg)
    hour_angle = math.radians(15.0 * (solar_hour - 12.0))
    s = (math.sin(lat) * math.sin(decl)
         + math.cos(lat) * math.cos(decl) * math.cos(hour_angle))
    return math.degrees(math.asin(max(-1.0, min(1.0, s))))


def clear_sky_lux(elevation_deg: float) -> float:
    """Global horizontal illuminance under a clear sky (lx): direct sunlight through the
    air mass of that elevation plus diffuse skylight, and civil twilight below the horizon
    (about 400 lx at sunset, 3 lx when the sun is 6° down)."""
    twilight = 400.0 * 10 ** (0.353 * min(elevation_deg, 0.0))
    s = math.sin(math.radians(elevation_deg))
    if s <= 0:
        return twilight
    return 129_000.0 * s * math.exp(-0.21 / s) + 14_000.0 * s ** 0.8 + twilight


def clear_sky_uvi(elevation_deg: float) -> float:
    """UV index under a clear sky: 12.5 × cos(zenith)^2.42 (Madronich's fit for about
    300 DU of ozone); 11 with the sun 75° high, 2 at 30°, 0 below the horizon."""
    s = math.sin(math.radians(elevation_deg))
    return 12.5 * s ** 2.42 if s > 0 else 0.0


class Daylight:
    """Made-up but plausible light at a pole-mounted street sensor.

    The sun follows its path for ``latitude_deg`` (Seoul's by default) on ``day_of_year``
    (today by default) from ``start_hour`` (solar time; the local clock by default); clear
    skies give :func:`clear_sky_lux` and :func:`clear_sky_uvi`. Clouds drift over tens of
    minutes (``cloudiness`` 0 clear ... 1 overcast) and dim visible light more than UV, as
    real clouds do; a little sensor-scale noise is added. After dusk the street lights add
    ``street_lux``. Seeded, so a run can be repeated; ``speed`` runs time faster.
    """

    def __init__(
        self,
        seed: int | None = 0,
        *,
        latitude_deg: float = 37.57,
        day_of_year: float | None = None,
        start_hour: float | None = None,
        cloudiness: float = 0.3,
        street_lux: float = 15.0,
        noise: float = 0.01,
        speed: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if not 0 <= cloudiness <= 1:
            raise ValueError("cloudiness is 0 (clear) ... 1 (overcast)")
        lt = time.localtime()
        self.seed = seed
        self.rng = random.Random(seed)
        self.latitude_deg = latitude_deg
        self.day_of_year = lt.tm_yday if day_of_year is None else day_of_year
        if start_hour is None:
            start_hour = lt.tm_hour + lt.tm_min / 60 + lt.tm_sec / 3600
        self.start_hour = start_hour % 24
        self.cloudiness = cloudiness
        self.street_lux = street_lux
        self.noise = noise
        self.speed = speed
        self._t0: float | None = None
        self._last = 0.0
        # Cloud cover is a logistic of a slow random walk whose mean sets the cloudiness.
        self._cloud_mean = math.log((cloudiness + 0.02) / (1.02 - cloudiness))
        self._cloud = self.rng.gauss(0.0, 1.5)  # the weather at the start, seeded
        self._noise = 0.0

    @property
    def description(self) -> str:
        return (f"built-in daylight (seed {self.seed}, latitude {self.latitude_deg:g}°, "
                f"day {self.day_of_year:g}, cloudiness {self.cloudiness:g}, "
                f"speed x{self.speed:g})")

    def elevation(self, now: float) -> float:
        """The sun's elevation (degrees) at clock time ``now``."""
        t0 = now if self._t0 is None else self._t0
        hours = self.start_hour + (now - t0) * self.speed / 3600.0
        return sun_elevation_deg(self.latitude_deg, self.day_of_year + hours // 24, hours % 24)

    def __call__(self, now: float) -> Light:
        if self._t0 is None:
            self._t0 = self._last = now
        dt = max(0.0, now - self._last) * self.speed
        self._last = now
        self._cloud = _ou(self._cloud, dt, 1200.0, 1.5, self.rng)
        self._noise = _ou(self._noise, dt, 5.0, self.noise, self.rng)
        cover = 1.0 / (1.0 + math.exp(-(self._cloud_mean + self._cloud)))
        elev = self.elevation(now)
        lux = clear_sky_lux(elev) * (1.0 - 0.8 * cover)
        uvi = clear_sky_uvi(elev) * (1.0 - 0.5 * cover)
        if elev < -1.0:
            lux += self.street_lux
        gain = max(0.0, 1.0 + self._noise)
        return Light(lux * gain, uvi * gain)


def constant_light(lux: float = 300.0, uvi: float = 0.0) -> LightSource:
    """A source that never changes (for tests)."""
    value = Light(float(lux), float(uvi))
    return lambda now: value


def _light(v: Light | float | tuple[float, ...]) -> Light:
    if isinstance(v, Light):
        return v
    if isinstance(v, int | float):
        return Light(float(v))
    if len(v) not in (1, 2):
        raise ValueError(f"a light value is lux or (lux, uvi), got {v!r}")
    return Light(*(float(x) for x in v))


def as_light_source(src: LightLike | None, seed: int | None = 0) -> LightSource:
    """Accept a source, a function returning lux or (lux, uvi), or a constant lux or
    (lux, uvi); None: :class:`Daylight` with ``seed``."""
    if src is None:
        return Daylight(seed)
    if callable(src):
        fn = src
        return lambda now: _light(fn(now))
    value = _light(src)
    return lambda now: value
