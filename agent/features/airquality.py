"""Korean air-quality bands (Ministry of Environment), carried in one small record.

The public display in Korea bands PM2.5 and PM10 as good, moderate, bad and
very bad. A report carries both bands of a PM sensor in one integer record
``<sensor>:aq`` = 10 x PM2.5 band + PM10 band, bands 1 (good) to 4 (very bad)
and 0 where that size is not measured: ``23`` reads "PM2.5 moderate, PM10 bad".
The bands are applied to the report window's central value rounded to whole
µg/m³, as the Ministry's thresholds are; the official index uses 24-hour means,
so a platform should treat a window's band as an early indication.

The feature (:class:`AirQuality`) is on while ``[report] kr_band`` is true (the default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.features.base import Feature, FeatureContext, Stats
from agent.wire.model import Record

if TYPE_CHECKING:
    from agent.core.config import Config

GOOD, MODERATE, BAD, VERY_BAD = 1, 2, 3, 4
NAMES = {GOOD: "good", MODERATE: "moderate", BAD: "bad", VERY_BAD: "very bad"}
#: Upper bounds (inclusive, µg/m³) of good, moderate and bad; above is very bad.
THRESHOLDS = {"pm25": (15, 35, 75), "pm10": (30, 80, 150)}


def band(quantity: str, value: float) -> int:
    """The band (1-4) of a PM2.5 or PM10 concentration in µg/m³."""
    limits = THRESHOLDS[quantity]
    v = int(value + 0.5)  # the thresholds are whole µg/m³
    for level, top in enumerate(limits, start=1):
        if v <= top:
            return level
    return VERY_BAD


def band_record(sensor: str, stats: Stats) -> Record | None:
    """``<sensor>:aq`` for a window with PM2.5 and/or PM10, else None."""
    b25 = band("pm25", stats["pm25"][0]) if "pm25" in stats else 0
    b10 = band("pm10", stats["pm10"][0]) if "pm10" in stats else 0
    if not (b25 or b10):
        return None
    return Record(f"{sensor}:aq", value=10 * b25 + b10)


def describe(value: int) -> dict[str, str]:
    """A readable view of an ``:aq`` value, for tools and docs."""
    b25, b10 = divmod(int(value), 10)
    return {"pm25": NAMES.get(b25, "not measured"), "pm10": NAMES.get(b10, "not measured")}


class AirQuality(Feature):
    """Adds ``<sensor>:aq`` after the records of every window with PM2.5 or PM10."""

    name = "airquality"

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return cfg.report.kr_band

    def __init__(self, cfg: Config, ctx: FeatureContext) -> None:
        """Nothing to set up: the bands come from each window's values."""

    def report_records(self, sensor: str, stats: Stats) -> list[Record]:
        aq = band_record(sensor, stats)
        return [] if aq is None else [aq]
