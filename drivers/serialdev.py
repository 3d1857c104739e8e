"""What every UART sensor driver shares: pyserial at 9600 8N1 around a sans-I/O protocol.

A driver (:class:`drivers.pms5003.PMS5003`, :class:`drivers.sds011.SDS011`)
subclasses :class:`SerialDevice`, builds its protocol state machine and says how
a good frame becomes a :class:`~drivers.base.Reading`. This class does the I/O:
open and close the port, write what the protocol wants sent, read what has
arrived, give up on a partial frame when the line goes quiet, and report a
sensor that has sent no valid frame for too long.
"""

from __future__ import annotations

import termios
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

import serial

from .base import DeviceError, DeviceGone, Reading

#: Silence after which a partially received frame is given up (a frame takes 10-40 ms).
LINE_IDLE_S = 0.5

SerialFactory = Callable[..., serial.Serial]


class SerialProtocol(Protocol):
    """The host-side state machine a :class:`SerialDevice` drives (no I/O of its own)."""

    mode: str
    asleep: bool
    decoder: Any  # has ``buffered`` and ``counters``

    def start(self, now: float) -> None: ...
    def wake(self, now: float) -> None: ...
    def warming_up(self, now: float) -> bool: ...
    def request_read(self) -> None: ...
    def data_to_send(self) -> bytes: ...
    def receive(self, data: bytes, now: float) -> list[Any]: ...
    def line_idle(self, now: float) -> list[Any]: ...


def check_quantities(device: str, quantities: Iterable[str], known: Iterable[str]) -> None:
    """Raise ValueError naming any quantity the device does not measure."""
    unknown = set(quantities) - set(known)
    if unknown:
        raise ValueError(f"unknown {device} quantities: {sorted(unknown)}")


class SerialDevice:
    """Host driver for one sensor on a UART: the pyserial side of the conversation.

    Subclasses set :attr:`query_mode` (the protocol mode in which the host asks
    for every frame), :attr:`sample_type` and :attr:`discarded_type` (the
    protocol's events for a good frame kept or thrown away), and may override
    the hooks :meth:`_before_request`, :meth:`_on_events` and :meth:`_fault`.
    """

    query_mode: ClassVar[str]
    sample_type: ClassVar[type]
    discarded_type: ClassVar[type]
    line_idle_s: ClassVar[float] = LINE_IDLE_S

    def __init__(
        self,
        port: str,
        protocol: SerialProtocol,
        *,
        quantities: tuple[str, ...],
        read_interval_s: float,
        no_data_timeout_s: float,
        serial_factory: SerialFactory,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.port = port
        self.quantities = tuple(quantities)
        self.read_interval_s = read_interval_s
        self.no_data_timeout_s = no_data_timeout_s
        self.protocol = protocol
        self.serial_factory = serial_factory  # public: tools that tap the bytes wrap it
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
            # exclusive: an flock, so a second opener (citynode doctor, a second daemon)
            # fails cleanly instead of stealing bytes from the one reading the sensor
            self._ser = self.serial_factory(
                self.port, baudrate=9600, bytesize=8, parity="N", stopbits=1, timeout=0.2,
                exclusive=True,
            )
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError, termios.error, ValueError) as exc:
            # termios.error: the line settings were refused (a pty or adapter that takes
            # no parity); ValueError: pyserial's word for settings it cannot express
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
    def wake(self) -> None:
        now = self._clock()
        self.protocol.wake(now)
        self._last_frame = now
        self._flush_out()

    @property
    def warming_up(self) -> bool:
        return self.protocol.warming_up(self._clock())

    # -- sampling ------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Ask for a frame when one is due, read for up to ~0.2 s, decode."""
        if self._ser is None:
            raise DeviceGone(f"{self.port} is not open")
        now = self._clock()
        self._before_request(now)
        if self.protocol.mode == self.query_mode and now >= self._next_read:
            self.protocol.request_read()
            self._next_read = now + self.read_interval_s
        self._flush_out()
        data = self._read()
        now = self._clock()
        if data:
            self._last_rx = now
            events = self.protocol.receive(data, now)
        elif self.protocol.decoder.buffered and now - self._last_rx > self.line_idle_s:
            events = self.protocol.line_idle(now)
        else:
            events = []
        self._on_events(events)
        readings: list[Reading] = []
        for ev in events:
            if isinstance(ev, (self.sample_type, self.discarded_type)):
                self._last_frame = now
            if isinstance(ev, self.sample_type):
                f = ev.frame
                values = {q: float(getattr(f, q)) for q in self.quantities}
                readings.append(Reading(values, now, self._wall(), fault=self._fault(f)))
        self._flush_out()
        if not self.protocol.asleep and now - self._last_frame > self.no_data_timeout_s:
            self._last_frame = now  # report once per timeout, then keep trying
            raise DeviceError(f"{self.port}: no valid frame for {self.no_data_timeout_s:g} s")
        return readings

    # -- counters --------------------------------------------------------------
    def _frame_stats(self, **more: int) -> dict[str, int]:
        """The decoder's frame counters (``frames``; ``bad_frames``, which the agent watches;
        ``discarded_bytes``) followed by the driver's own ``more``: a driver's ``stats()``."""
        c = self.protocol.decoder.counters
        return {"frames": c.frames, "bad_frames": c.bad_frames,
                "discarded_bytes": c.discarded_bytes, **more}

    # -- hooks -----------------------------------------------------------------
    def _before_request(self, now: float) -> None:
        """Called at the start of every poll, before a read is requested."""

    def _on_events(self, events: list[Any]) -> None:
        """Called with every poll's protocol events, before they become readings."""

    def _fault(self, frame: Any) -> bool:
        """Whether the sensor itself flags this frame as faulty."""
        return False

    # -- I/O -------------------------------------------------------------------
    def _read(self) -> bytes:
        """What has arrived (waits up to the port timeout for the first byte)."""
        assert self._ser is not None
        try:
            data = self._ser.read(max(1, self._ser.in_waiting or 1))
            if data and self._ser.in_waiting:
                data += self._ser.read(self._ser.in_waiting)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise DeviceGone(f"{self.port}: {exc}") from exc
        return data

    def _flush_out(self) -> None:
        out = self.protocol.data_to_send()
        if not out or self._ser is None:
            return
        try:
            self._ser.write(out)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise DeviceGone(f"{self.port}: write failed: {exc}") from exc
