"""An A02YYUW on a serial port: the distance protocol plus pyserial.

    >>> from drivers.a02yyuw import A02YYUW
    >>> sonar = A02YYUW("/dev/ttyAMA0")
    >>> sonar.open()
    >>> readings = sonar.poll()        # one short step of I/O; values {"d": metres}
    >>> sonar.close()
"""

from __future__ import annotations

import logging
from typing import Any, Unpack

import serial

from ..families.ranger import QUANTITIES
from ..families.ranger_device import DistanceDevice, RangerOptions
from ..families.ranger_protocol import DistanceProtocol, range_classifier
from .codec import FrameDecoder

__all__ = ["A02YYUW", "OUTPUTS", "QUANTITIES"]

log = logging.getLogger(__name__)

#: Sensor RX high or floating: "processed" (steadier, 100-300 ms); RX low: "real-time" (100 ms).
OUTPUTS = ("processed", "real-time")


class A02YYUW(DistanceDevice):
    """Host driver for one DFRobot A02YYUW (SEN0311) ultrasonic sensor on a UART.

    The sensor streams a frame about every 100 ms. ``output`` says which of its
    two outputs is wired (its RX pin high/open: "processed"; low: "real-time");
    for "real-time" the driver also holds the port's TX line low (a UART break),
    which works when the sensor's RX is wired to the Pi's TX. ``mode="triggered"``
    is for the UART-controlled variants (SEN0627: a falling edge on RX starts a
    measurement): the driver writes ``trigger`` every ``read_interval_s``.
    Distances at or inside ``blind_mm`` (no echo) or beyond ``max_mm`` are not
    readings; they are counted (``no_echo``, ``out_of_range``).
    """

    def __init__(
        self,
        port: str,
        *,
        output: str = "processed",
        mode: str = "auto",
        read_interval_s: float = 0.5,
        blind_mm: int = 30,
        max_mm: int = 4500,
        unit_mm: int = 1,
        **options: Unpack[RangerOptions],
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        if unit_mm not in (1, 10):
            raise ValueError("unit_mm must be 1 (mm) or 10 (cm models such as the SEN0627)")
        self.output = output
        protocol = DistanceProtocol(FrameDecoder(scale_mm=unit_mm),
                                    range_classifier(blind_mm, max_mm), mode=mode)
        super().__init__(port, protocol, name="A02YYUW", read_interval_s=read_interval_s,
                         **options)

    def open(self) -> None:
        super().open()
        if self.output == "real-time" and self.protocol.mode == "auto":
            self._hold_tx_low()

    def _hold_tx_low(self) -> None:
        ser: Any = self._ser
        try:
            ser.break_condition = True
        except (serial.SerialException, OSError, AttributeError) as exc:
            log.warning("%s: cannot hold TX low for the real-time output (%s); "
                        "wire the sensor's RX to GND instead", self.port, exc)
