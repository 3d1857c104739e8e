"""A MaxBotix MaxSonar with TTL serial output on a serial port.

    >>> from drivers.maxbotix import MaxBotix
    >>> sonar = MaxBotix("/dev/ttyAMA0")            # R####\\r (mm) or R###\\r (cm), detected
    >>> sonar.open()
    >>> readings = sonar.poll()        # values {"d": metres}
    >>> sonar.close()
"""

from __future__ import annotations

from typing import Any, Unpack

from ..families.ranger import QUANTITIES
from ..families.ranger_device import DistanceDevice, RangerOptions
from ..families.ranger_protocol import Classifier, DistanceProtocol
from .codec import UNITS, FrameDecoder

__all__ = ["LIMITS", "QUANTITIES", "MaxBotix", "classifier"]

#: units -> (closest value reported, the value that means "no target"), in those units:
#: HRXL (mm) 300..5000, XL-EZ (cm) 20..765, LV-EZ (in) 6..255.
LIMITS = {"mm": (300, 5000), "cm": (20, 765), "in": (6, 255)}


def classifier(max_value: int | None = None) -> Classifier:
    """A frame at the model's maximum (or ``max_value`` for 10 m parts: 9999) is "no target".

    A frame at the minimum is a reading: the target is at that distance or closer.
    """

    def classify(frame: Any) -> tuple[str, str] | None:
        top = LIMITS[frame.units][1] if max_value is None else max_value
        if frame.value >= top:
            return "no_echo", f"no target ({frame.value} {frame.units} is the maximum range)"
        return None

    return classify


class MaxBotix(DistanceDevice):
    """Host driver for one MaxBotix MaxSonar (TTL serial output, e.g. MB7389, MB1xx0 XL).

    ``units="auto"`` takes ``R####`` as mm and ``R###`` as cm; set ``"in"`` for an
    LV-MaxSonar (3 digits in inches). The sensor free-runs (pin 4 open or high),
    so the driver only listens. A frame at the maximum range (5000 mm, 765 cm,
    255 in; ``max_value`` for other parts, e.g. 9999 for 10 m HRXL models) means
    no target: no reading, counted as ``no_echo``. An RS-232-format part (MB7369...)
    needs an inverter: straight on the Pi's UART it gives only rejected bytes.
    """

    def __init__(
        self,
        port: str,
        *,
        units: str = "auto",
        max_value: int | None = None,
        read_interval_s: float = 1.0,
        **options: Unpack[RangerOptions],
    ) -> None:
        if units != "auto" and units not in UNITS:
            raise ValueError(f"units must be 'auto' or one of {sorted(UNITS)}, not {units!r}")
        protocol = DistanceProtocol(FrameDecoder(units), classifier(max_value), mode="auto")
        self._units_seen: str | None = None
        super().__init__(port, protocol, name="MaxBotix", read_interval_s=read_interval_s,
                         **options)

    @property
    def units(self) -> str | None:
        """The units of the last frame (what auto-detection found), None before any."""
        return self._units_seen

    def _on_events(self, events: list[Any]) -> None:
        for ev in events:
            frame = getattr(ev, "frame", None)
            if frame is not None:
                self._units_seen = frame.units
