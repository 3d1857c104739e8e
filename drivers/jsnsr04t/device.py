"""A JSN-SR04T (V3.x, UART mode) on a serial port.

    >>> from drivers.jsnsr04t import JSNSR04T
    >>> sonar = JSNSR04T("/dev/ttyAMA0", mode="triggered", read_interval_s=0.2)
    >>> sonar.open()
    >>> readings = sonar.poll()        # values {"d": metres}
    >>> sonar.close()
"""

from __future__ import annotations

from typing import Unpack

from ..families.ranger import QUANTITIES
from ..families.ranger_device import DistanceDevice, RangerOptions
from ..families.ranger_protocol import DistanceProtocol, range_classifier
from .codec import TRIGGER, FrameDecoder

__all__ = ["JSNSR04T", "QUANTITIES", "VARIANTS"]

#: "jsn-sr04t": SUM = 0xFF + H + L; "aj-sr04m": SUM = H + L (header excluded).
VARIANTS = ("jsn-sr04t", "aj-sr04m")


class JSNSR04T(DistanceDevice):
    """Host driver for one JSN-SR04T V3.x (or AJ-SR04M) in a UART mode.

    ``mode="triggered"`` (mode 3, R27 = 120 kΩ) writes ``0x55`` every
    ``read_interval_s`` and reads the answer; it also works with a sensor
    streaming on its own. ``mode="auto"`` (mode 2, 47 kΩ) only listens to the
    frame the sensor sends every 100 ms. Distances at or inside ``blind_mm``
    (≈ 250 mm blind zone; ESPHome rejects ≤ 250 mm) or beyond ``max_mm`` are not
    readings; they are counted (``no_echo``, ``out_of_range``).
    """

    def __init__(
        self,
        port: str,
        *,
        mode: str = "triggered",
        read_interval_s: float = 0.2,
        blind_mm: int = 250,
        max_mm: int = 6000,
        variant: str = "jsn-sr04t",
        **options: Unpack[RangerOptions],
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        decoder = FrameDecoder(sum_header=variant == "jsn-sr04t")
        protocol = DistanceProtocol(decoder, range_classifier(blind_mm, max_mm), mode=mode,
                                    trigger=TRIGGER)
        super().__init__(port, protocol, name="JSN-SR04T", read_interval_s=read_interval_s,
                         **options)
