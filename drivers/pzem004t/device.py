"""A PZEM-004T v3.0 on a serial port (9600 8N1, Modbus RTU request/response).

    >>> from drivers.pzem004t import PZEM004T
    >>> meter = PZEM004T("/dev/ttyUSB0", address=0x01)
    >>> meter.open()
    >>> readings = meter.poll()       # w, v, a, kwh, hz, pf
    >>> meter.reset_energy()
    >>> meter.close()

One driver instance talks to one meter address on one port. Several meters on
one bus would need one port shared by several instances; that is not supported
(use one adapter per meter, or give each meter its own port). ``address=0xF8``
(the general address) works with a single meter whatever its address.

:meth:`PZEM004T.reset_energy` and :meth:`PZEM004T.set_address` are blocking
transactions (up to ``reply_timeout_s``) that raise
:class:`~drivers.pzem004t.codec.ModbusException` when the meter refuses and
:class:`~drivers.base.DeviceError` when it does not answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from ..base import DeviceError
from ..serialdev import SerialDevice, SerialFactory, check_quantities
from . import codec
from .codec import Echo, ExceptionResponse, Measurement, ModbusException

__all__ = ["DEFAULT_QUANTITIES", "PZEM004T", "QUANTITIES", "PZEMProtocol"]

log = logging.getLogger(__name__)

QUANTITIES = ("w", "v", "a", "kwh", "hz", "pf")
DEFAULT_QUANTITIES = QUANTITIES


@dataclass(frozen=True, slots=True)
class Sample:
    frame: Measurement


@dataclass(frozen=True, slots=True)
class Discarded:
    frame: Any


@dataclass(frozen=True, slots=True)
class Done:
    """A write/reset request answered: ``result`` is the echo or the exception."""

    request: bytes
    result: Echo | ExceptionResponse


@dataclass(frozen=True, slots=True)
class NoReply:
    request: bytes


class PZEMProtocol:
    """Host side, no I/O: one request in flight, answered or timed out."""

    mode = "query"
    asleep = False

    def __init__(self, address: int = 0x01, reply_timeout_s: float = 0.5) -> None:
        codec._check_address(address)
        self.address = address
        self.reply_timeout_s = reply_timeout_s
        self.decoder = codec.FrameDecoder()
        self._out = bytearray()
        self.inflight: bytes | None = None
        self._deadline = 0.0
        self._now = 0.0
        self.no_replies = 0
        self.exceptions = 0
        self.unexpected = 0

    def start(self, now: float) -> None:
        self.decoder.reset()
        self.inflight = None
        self._now = now

    def wake(self, now: float) -> None:
        pass

    def warming_up(self, now: float) -> bool:
        return False

    def send(self, request: bytes, now: float) -> None:
        """Put ``request`` in flight (replacing any unanswered one)."""
        self.inflight = request
        self._deadline = now + self.reply_timeout_s
        self._out += request
        self.decoder.sent(request)

    def request_read(self) -> None:
        if self.inflight is None:
            self.send(codec.read_input_registers(self.address), self._now)

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def tick(self, now: float) -> list[Any]:
        self._now = now
        if self.inflight is not None and now > self._deadline:
            req, self.inflight = self.inflight, None
            self.no_replies += 1
            return [NoReply(req)]
        return []

    def receive(self, data: bytes, now: float) -> list[Any]:
        self._now = now
        return self._events(self.decoder.feed(data))

    def line_idle(self, now: float) -> list[Any]:
        self._now = now
        return self._events(self.decoder.expire())

    def _events(self, decoded: list[Any]) -> list[Any]:
        out: list[Any] = []
        for ev in decoded:
            req = self.inflight
            if isinstance(ev, codec.Request):
                continue  # our own request echoed by a half-duplex adapter
            if req is None or isinstance(ev, codec.Rejected):
                if not isinstance(ev, codec.Rejected):
                    self.unexpected += 1
                out.append(ev)
                continue
            try:
                result = codec.parse_response(req, ev.raw)
            except ModbusException as exc:
                self.exceptions += 1
                self.inflight = None
                log.warning("PZEM-004T: %s", exc)
                out.append(Done(req, exc.response))
                continue
            except codec.ModbusError as exc:
                self.unexpected += 1
                log.warning("PZEM-004T: %s", exc)
                out.append(ev)
                continue
            self.inflight = None
            if isinstance(result, Measurement):
                out.append(Sample(result))
            elif isinstance(result, Echo):
                if result.function == codec.WRITE_SINGLE and result.register == codec.REG_ADDRESS:
                    self.address = result.value or self.address
                out.append(Done(req, result))
            else:
                out.append(Discarded(result))
        return out


class PZEM004T(SerialDevice):
    """Host driver for one Peacefair PZEM-004T v3.0 (one Modbus address on one port)."""

    query_mode = "query"
    sample_type = Sample
    discarded_type = Discarded
    protocol: PZEMProtocol

    def __init__(
        self,
        port: str,
        *,
        address: int = 0x01,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = DEFAULT_QUANTITIES,
        reply_timeout_s: float = 0.5,
        no_data_timeout_s: float | None = None,
        serial_factory: SerialFactory = serial.Serial,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_quantities("PZEM-004T", quantities, QUANTITIES)
        if read_interval_s <= 0:
            raise ValueError("read_interval_s must be positive")
        if no_data_timeout_s is None:
            no_data_timeout_s = max(10.0, 5 * read_interval_s)
        super().__init__(
            port, PZEMProtocol(address, reply_timeout_s), quantities=quantities,
            read_interval_s=read_interval_s, no_data_timeout_s=no_data_timeout_s,
            serial_factory=serial_factory, clock=clock, wall_clock=wall_clock,
        )

    @property
    def address(self) -> int:
        return self.protocol.address

    def _before_request(self, now: float) -> None:
        for ev in self.protocol.tick(now):
            log.warning("%s: PZEM-004T %#04x did not answer %s", self.port,
                        self.protocol.address, ev.request.hex(" "))

    def reset_energy(self) -> None:
        """Zero the meter's energy counter (blocking)."""
        self._transact(codec.reset_energy(self.protocol.address))

    def set_address(self, new: int) -> None:
        """Give the meter the slave address ``new`` (0x01..0xF7); the driver follows it."""
        self._transact(codec.set_address(new, self.protocol.address))

    def _transact(self, request: bytes) -> Echo:
        if self._ser is None:
            raise DeviceError(f"{self.port} is not open")
        p = self.protocol
        p.send(request, self._clock())
        self._flush_out()
        while True:
            now = self._clock()
            if p.tick(now):
                raise DeviceError(f"{self.port}: PZEM-004T did not answer {request.hex(' ')}")
            data = self._read()
            for ev in p.receive(data, self._clock()) if data else []:
                if isinstance(ev, Done) and ev.request == request:
                    if isinstance(ev.result, ExceptionResponse):
                        raise ModbusException(ev.result)
                    return ev.result

    def stats(self) -> dict[str, int]:
        c = self.protocol.decoder.counters
        p = self.protocol
        return {
            "responses": c.responses, "bad_frames": c.bad_frames, "crc_errors": c.crc_errors,
            "discarded_bytes": c.discarded_bytes, "exceptions": p.exceptions,
            "no_reply": p.no_replies, "unexpected": p.unexpected,
        }
