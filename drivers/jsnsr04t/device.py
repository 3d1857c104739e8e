"""A JSN-SR04T (V3.x, UART mode) on a serial port.

    >>> from drivers.jsnsr04t import JSNSR04T
    >>> sonar = JSNSR04T("/dev/ttyAMA0", mode="triggered", read_interval_s=0.2)
    >>> sonar.open()
    >>> readings = sonar.poll()        # values {"d": metres}
    >>> sonar.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable

import serial

from ..a02yyuw.device import QUANTITIES, DistanceDevice
from ..a02yyuw.protocol import DistanceProtocol, range_classifier
from ..serialdev import SerialFactory
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
        quantities: tuple[str, ...] = QUANTITIES,
        no_data_timeout_s: float = 5.0,
        serial_factory: SerialFactory = serial.Serial,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        decoder = FrameDecoder(sum_header=variant == "jsn-sr04t")
        protocol = DistanceProtocol(decoder, range_classifier(blind_mm, max_mm), mode=mode,
                                    trigger=TRIGGER)
        super().__init__(
            port, protocol, name="JSN-SR04T", quantities=quantities,
            read_interval_s=read_interval_s, no_data_timeout_s=no_data_timeout_s,
            serial_factory=serial_factory, clock=clock, wall_clock=wall_clock,
        )
