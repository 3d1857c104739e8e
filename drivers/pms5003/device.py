"""A PMS5003 on a serial port: the protocol state machine plus pyserial.

    >>> from drivers.pms5003 import PMS5003
    >>> pm = PMS5003("/dev/ttyAMA0", mode="passive", read_interval_s=5)
    >>> pm.open()
    >>> readings = pm.poll()          # one short step of I/O
    >>> pm.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable

import serial

from ..serialdev import LINE_IDLE_S, SerialDevice, SerialFactory, check_quantities
from .codec import Frame
from .protocol import Discarded, PMS5003Protocol, Sample

__all__ = ["DEFAULT_QUANTITIES", "LINE_IDLE_S", "PMS5003", "QUANTITIES", "SerialFactory"]

#: The values a PMS5003 reading carries, named as in docs/payload.md.
#: Concentrations are the "atmospheric environment" words (Data4-6), which
#: is what outdoor monitors report; CF=1 values and particle counts are
#: available under their own names.
QUANTITIES = (
    "pm1", "pm25", "pm10",
    "pm1_cf1", "pm25_cf1", "pm10_cf1",
    "n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10",
)
DEFAULT_QUANTITIES = ("pm1", "pm25", "pm10")


class PMS5003(SerialDevice):
    """Host driver for one Plantower PMS5003/PMS7003 on a UART."""

    query_mode = "passive"
    sample_type = Sample
    discarded_type = Discarded
    protocol: PMS5003Protocol

    def __init__(
        self,
        port: str,
        *,
        mode: str = "passive",
        warmup_s: float = 30.0,
        read_interval_s: float = 2.0,
        quantities: tuple[str, ...] = DEFAULT_QUANTITIES,
        no_data_timeout_s: float = 10.0,
        serial_factory: SerialFactory = serial.Serial,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_quantities("PMS5003", quantities, QUANTITIES)
        super().__init__(
            port, PMS5003Protocol(mode, warmup_s), quantities=quantities,
            read_interval_s=read_interval_s, no_data_timeout_s=no_data_timeout_s,
            serial_factory=serial_factory, clock=clock, wall_clock=wall_clock,
        )

    # -- power ---------------------------------------------------------------
    def sleep(self) -> None:
        self.protocol.sleep()
        self._flush_out()

    # -- sampling ------------------------------------------------------------
    def _fault(self, frame: Frame) -> bool:
        # Byte 29 is the sensor's own error code: non-zero is a fault it reports.
        return frame.error != 0

    def stats(self) -> dict[str, int]:
        p = self.protocol
        return self._frame_stats(acks=p.decoder.counters.acks,
                                 warmup_discarded=p.discarded_warmup, mode_reasserts=p.reasserts)
