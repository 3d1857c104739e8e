"""A MaxBotix MaxSonar with serial output, emulated: the device side, with no I/O.

Free-running (pin 4 open): a frame every ``interval_s`` (HRXL-WR: ≈ 148 ms per
cycle unfiltered; 0.75 s filtered), ``R####\\r`` in mm (``units="mm"``) or
``R###\\r`` in cm / inches. The true distance comes from a source
``source(now) -> float | None`` (mm; None: no echo). Closer than the minimum
reports the minimum; no echo, or beyond the maximum, reports the maximum.
Host bytes are ignored (the serial input pin only starts a reading on a pulse).
"""

from __future__ import annotations

from ..emulation import uart
from ..emulation.ranger import RangerModel, Source, constant
from .codec import UNITS, encode_frame
from .device import LIMITS

__all__ = ["MaxBotixModel", "Source", "constant"]


class MaxBotixModel(RangerModel):
    """Device side of a free-running MaxSonar (a :class:`drivers.emulation.DeviceModel`)."""

    def __init__(self, source: Source | None = None, *, units: str = "mm",
                 interval_s: float = 0.148, noise_mm: float = 0.0,
                 max_value: int | None = None, seed: int | None = 0,
                 keep_sent: int = 1000) -> None:
        if units not in UNITS:
            raise ValueError(f"units must be one of {sorted(UNITS)}, not {units!r}")
        super().__init__(source, interval_s=interval_s, noise_mm=noise_mm, seed=seed,
                         keep_sent=keep_sent,
                         stats={"frames": 0, "no_echo": 0, "ignored_bytes": 0, "resets": 0})
        self.units = units
        self.min_value, self.max_value = LIMITS[units]
        if max_value is not None:
            self.max_value = max_value

    def receive(self, data: bytes, now: float) -> list[bytes]:
        self.stats["ignored_bytes"] += len(data)
        return []

    def measure(self, now: float) -> int:
        """What the sensor reports for the distance now, in its units."""
        mm = self.source(now)
        if mm is None:
            return self.max_value
        if self.noise_mm:
            mm += self.rng.gauss(0.0, self.noise_mm)
        value = round(mm / UNITS[self.units][1])
        return max(self.min_value, min(self.max_value, value))

    def _frame(self, now: float, solicited: bool = False) -> bytes:
        value = self.measure(now)
        if value >= self.max_value:
            self.stats["no_echo"] += 1
        raw = encode_frame(value, self.units)
        self.sent.append(uart.SentFrame(now, value, raw, False, solicited))
        self.stats["frames"] += 1
        return raw
