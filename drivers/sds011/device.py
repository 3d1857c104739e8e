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

from ..base import DeviceError, DeviceGone, Reading
from .codec import ANY_ID
from .protocol import Discarded, NoReply, ProtocolEvent, ReplyMismatch, Sample, SDS011Protocol

log = logging.getLogger(__name__)

#: The values an SDS011 reading carries, named as in docs/payload.md (µg/m³, 0.1 resolution).
QUANTITIES = ("pm25", "pm10")
DEFAULT_QUANTITIES = QUANTITIES

#: Silence after which a partially received frame is given up (a frame takes 10 ms).
LINE_IDLE_S = 0.5

SerialFactory = Callable[..., serial.Serial]


class SDS011:
    """Host driver for one Nova Fitness SDS011 on a UART (or its USB adapter)."""

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
        unknown = set(quantities) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"unknown SDS011 quantities: {sorted(unknown)}")
        if read_interval_s <= 0:
            raise ValueError("read_interval_s must be positive")
        self.port = port
        self.quantities = tuple(quantities)
        self.read_interval_s = read_interval_s
        if no_data_timeout_s is None:
            # Active mode with a working period reports once per period.
            no_data_timeout_s = max(10.0, 3 * read_interval_s, 2 * 60.0 * period_min)
        self.no_data_timeout_s = no_data_timeout_s
        self.protocol = SDS011Protocol(mode, warmup_s, device_id=device_id,
                                       period_min=period_min, reply_timeout_s=reply_timeout_s)
        self._serial_factory = serial_factory
        self._clock = clock
        self._wall = wall_clock
        self._ser: serial.Serial | None = None
        self._next_read = 0.0
        self._last_frame = 0.0
        self._last_rx = 0.0

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> None:
        self.close()
        try:
            self._ser = self._serial_factory(
                self.port, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=0.2
            )
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            self._ser = None
            raise DeviceGone(f"cannot open {self.port}: {exc}") from exc
        now = self._clock()
        self.protocol.start(now)
        self._next_read = now
        self._last_frame = now
        self._flush_out()

    def close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass

    # -- power ---------------------------------------------------------------
    def sleep(self) -> None:
        self.protocol.sleep(self._clock())
        self._flush_out()

    def wake(self) -> None:
        now = self._clock()
        self.protocol.wake(now)
        self._last_frame = now
        self._flush_out()

    @property
    def warming_up(self) -> bool:
        return self.protocol.warming_up(self._clock())

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
    def poll(self) -> list[Reading]:
        """Ask for a frame when one is due, read for up to ~0.2 s, decode."""
        if self._ser is None:
            raise DeviceGone(f"{self.port} is not open")
        now = self._clock()
        self._log_problems(self.protocol.tick(now))
        if self.protocol.mode == "query" and now >= self._next_read:
            self.protocol.request_read()
            self._next_read = now + self.read_interval_s
        self._flush_out()
        try:
            data = self._ser.read(max(1, self._ser.in_waiting or 1))
            if data and self._ser.in_waiting:
                data += self._ser.read(self._ser.in_waiting)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise DeviceGone(f"{self.port}: {exc}") from exc
        now = self._clock()
        if data:
            self._last_rx = now
            events = self.protocol.receive(data, now)
        elif self.protocol.decoder.buffered and now - self._last_rx > LINE_IDLE_S:
            events = self.protocol.line_idle(now)
        else:
            events = []
        self._log_problems(events)
        readings: list[Reading] = []
        for ev in events:
            if isinstance(ev, (Sample, Discarded)):
                self._last_frame = now
            if isinstance(ev, Sample):
                f = ev.frame
                values = {q: float(getattr(f, q)) for q in self.quantities}
                readings.append(Reading(values, now, self._wall()))
        self._flush_out()
        if not self.protocol.asleep and now - self._last_frame > self.no_data_timeout_s:
            self._last_frame = now  # report once per timeout, then keep trying
            raise DeviceError(f"{self.port}: no valid frame for {self.no_data_timeout_s:g} s")
        return readings

    def stats(self) -> dict[str, int]:
        c = self.protocol.decoder.counters
        p = self.protocol
        return {
            "frames": c.frames,
            "bad_frames": c.bad_frames,
            "discarded_bytes": c.discarded_bytes,
            "replies": c.replies,
            "replies_confirmed": p.confirmed,
            "reply_mismatches": p.mismatches,
            "no_reply": p.no_replies,
            "resends": p.resends,
            "warmup_discarded": p.discarded_warmup,
            "zero_discarded": p.discarded_zero,
            "mode_reasserts": p.reasserts,
        }

    def _log_problems(self, events: list[ProtocolEvent]) -> None:
        for ev in events:
            if isinstance(ev, ReplyMismatch):
                log.warning("%s: SDS011 reply mismatch: %s", self.port, ev.reason)
            elif isinstance(ev, NoReply):
                log.warning("%s: SDS011 did not answer %r after %d tries", self.port,
                            ev.request.description, ev.attempts)

    def _flush_out(self) -> None:
        out = self.protocol.data_to_send()
        if not out or self._ser is None:
            return
        try:
            self._ser.write(out)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise DeviceGone(f"{self.port}: write failed: {exc}") from exc
