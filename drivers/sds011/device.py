"""An SDS011 on a serial port: the protocol state machine plus pyserial.

    >>> from drivers.sds011 import SDS011
    >>> pm = SDS011("/dev/ttyUSB0", mode="query", read_interval_s=2)
    >>> pm.open()
    >>> readings = pm.poll()          # one short step of I/O
    >>> pm.close()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import serial

from ..serialdev import LINE_IDLE_S, SerialDevice, SerialFactory, check_quantities
from .codec import ANY_ID
from .protocol import Discarded, NoReply, ProtocolEvent, ReplyMismatch, Sample, SDS011Protocol

__all__ = ["DEFAULT_QUANTITIES", "LINE_IDLE_S", "QUANTITIES", "SDS011", "SerialFactory"]

log = logging.getLogger(__name__)

#: The values an SDS011 reading carries, named as in docs/payload.md (µg/m³, 0.1 resolution).
QUANTITIES = ("pm25", "pm10")
DEFAULT_QUANTITIES = QUANTITIES


class SDS011(SerialDevice):
    """Host driver for one Nova Fitness SDS011 on a UART (or its USB adapter)."""

    query_mode = "query"
    sample_type = Sample
    discarded_type = Discarded
    protocol: SDS011Protocol

    def __init__(
        self,
        port: str,
        *,
        mode: str = "query",
        warmup_s: float = 15.0,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = DEFAULT_QUANTITIES,
        period_min: int = 0,
        device_id: int = ANY_ID,
        no_data_timeout_s: float | None = None,
        reply_timeout_s: float = 1.0,
        serial_factory: SerialFactory = serial.Serial,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_quantities("SDS011", quantities, QUANTITIES)
        if read_interval_s <= 0:
            raise ValueError("read_interval_s must be positive")
        if no_data_timeout_s is None:
            # Active mode with a working period reports once per period.
            no_data_timeout_s = max(10.0, 3 * read_interval_s, 2 * 60.0 * period_min)
        protocol = SDS011Protocol(mode, warmup_s, device_id=device_id,
                                  period_min=period_min, reply_timeout_s=reply_timeout_s)
        super().__init__(
            port, protocol, quantities=quantities,
            read_interval_s=read_interval_s, no_data_timeout_s=no_data_timeout_s,
            serial_factory=serial_factory, clock=clock, wall_clock=wall_clock,
        )

    # -- power ---------------------------------------------------------------
    def sleep(self) -> None:
        self.protocol.sleep(self._clock())
        self._flush_out()

    # -- what the sensor told us -------------------------------------------------
    @property
    def firmware(self) -> str | None:
        """Firmware date as the sensor reports it (``15-07-10``), once it has answered."""
        fw = self.protocol.firmware
        return None if fw is None else "{:02d}-{:02d}-{:02d}".format(*fw)

    @property
    def sensor_id(self) -> int | None:
        """The device id in the sensor's latest frame or reply."""
        return self.protocol.sensor_id

    # -- sampling ------------------------------------------------------------
    def _before_request(self, now: float) -> None:
        self._log_problems(self.protocol.tick(now))

    def _on_events(self, events: list[ProtocolEvent]) -> None:
        self._log_problems(events)

    def stats(self) -> dict[str, int]:
        p = self.protocol
        return self._frame_stats(replies=p.decoder.counters.replies, replies_confirmed=p.confirmed,
                                 reply_mismatches=p.mismatches, no_reply=p.no_replies,
                                 resends=p.resends, warmup_discarded=p.discarded_warmup,
                                 zero_discarded=p.discarded_zero, mode_reasserts=p.reasserts)

    def _log_problems(self, events: list[ProtocolEvent]) -> None:
        for ev in events:
            if isinstance(ev, ReplyMismatch):
                log.warning("%s: SDS011 reply mismatch: %s", self.port, ev.reason)
            elif isinstance(ev, NoReply):
                log.warning("%s: SDS011 did not answer %r after %d tries", self.port,
                            ev.request.description, ev.attempts)
