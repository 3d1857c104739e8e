"""A CSE7766 on a serial port (4800 8E1, receive only): the chip talks, the driver listens.

    >>> from drivers.cse7766 import CSE7766
    >>> meter = CSE7766("/dev/ttyAMA0", read_interval_s=1.0)
    >>> meter.open()
    >>> readings = meter.poll()       # w, v, a, kwh
    >>> meter.close()

The chip sends ~20 frames a second; one reading per ``read_interval_s`` carries
the latest frame's V/I/P. ``kwh`` is the energy counted from the CF pulse
counter since the driver opened the port (the chip has no non-volatile total).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from ..serialdev import SerialDevice, SerialFactory, check_quantities
from .codec import EnergyCounter, Frame, FrameDecoder

__all__ = ["CSE7766", "DEFAULT_QUANTITIES", "QUANTITIES", "CSE7766Protocol", "Measurement"]

QUANTITIES = ("w", "v", "a", "kwh")
DEFAULT_QUANTITIES = QUANTITIES
BAUDRATE = 4800


@dataclass(frozen=True, slots=True)
class Measurement:
    w: float
    v: float
    a: float
    kwh: float
    fault: bool
    frame: Frame


@dataclass(frozen=True, slots=True)
class Sample:
    frame: Measurement


@dataclass(frozen=True, slots=True)
class Discarded:
    """A good frame not turned into a reading (between read intervals)."""

    frame: Measurement


class CSE7766Protocol:
    """Host side, no I/O: decode, count energy, pick one frame per interval."""

    mode = "active"
    asleep = False

    def __init__(self, read_interval_s: float = 1.0) -> None:
        self.read_interval_s = read_interval_s
        self.decoder = FrameDecoder()
        self.energy = EnergyCounter()
        self._next = 0.0

    def start(self, now: float) -> None:
        self.decoder.reset()
        self._next = now

    def wake(self, now: float) -> None:
        pass

    def warming_up(self, now: float) -> bool:
        return False

    def request_read(self) -> None:
        pass

    def data_to_send(self) -> bytes:
        return b""

    def receive(self, data: bytes, now: float) -> list[Any]:
        return self._events(self.decoder.feed(data), now)

    def line_idle(self, now: float) -> list[Any]:
        return self._events(self.decoder.expire(), now)

    def _events(self, decoded: list[Any], now: float) -> list[Any]:
        out: list[Any] = []
        for ev in decoded:
            if not isinstance(ev, Frame):
                out.append(ev)
                continue
            kwh = self.energy.update(ev.cf, ev.coefficients[2], now) / 1000.0
            m = Measurement(ev.w, ev.v, ev.a, kwh, ev.fault, ev)
            if now >= self._next:
                self._next = max(self._next + self.read_interval_s, now)
                out.append(Sample(m))
            else:
                out.append(Discarded(m))
        return out


def _with_8e1(factory: SerialFactory) -> SerialFactory:
    def open_8e1(port: str, **kw: Any) -> serial.Serial:
        kw.update(baudrate=BAUDRATE, bytesize=8, parity=serial.PARITY_EVEN, stopbits=1)
        return factory(port, **kw)

    return open_8e1


class CSE7766(SerialDevice):
    """Host driver for one CSE7766 (Sonoff POW R2/R3, S31) on a UART RX pin."""

    query_mode = "query"  # never: the chip streams
    sample_type = Sample
    discarded_type = Discarded
    protocol: CSE7766Protocol

    def __init__(
        self,
        port: str,
        *,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = DEFAULT_QUANTITIES,
        no_data_timeout_s: float = 5.0,
        serial_factory: SerialFactory = serial.Serial,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_quantities("CSE7766", quantities, QUANTITIES)
        if read_interval_s <= 0:
            raise ValueError("read_interval_s must be positive")
        super().__init__(
            port, CSE7766Protocol(read_interval_s), quantities=quantities,
            read_interval_s=read_interval_s, no_data_timeout_s=no_data_timeout_s,
            serial_factory=_with_8e1(serial_factory), clock=clock, wall_clock=wall_clock,
        )

    def _fault(self, frame: Any) -> bool:
        return bool(frame.fault)

    def stats(self) -> dict[str, int]:
        p = self.protocol
        return self._frame_stats(implausible=p.decoder.counters.implausible,
                                 cf_pulses=p.energy.pulses, energy_rejected=p.energy.rejected)
