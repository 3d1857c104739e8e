"""An HLK-LD2450 radar on a serial port (256000 8N1): the protocol state machine plus pyserial.

    >>> from drivers.ld2450 import LD2450
    >>> radar = LD2450("/dev/ttyAMA0")
    >>> radar.on_samples = print         # every report frame, as RadarSample(t, targets)
    >>> radar.open()                     # configures multi-target tracking, Bluetooth off
    >>> readings = radar.poll()          # one short step of I/O; {"targets": n} once a second
    >>> radar.close()

The radar streams ten report frames a second (HLK-LD2450 Serial Communication Protocol
V1.03, section 2.3). Every frame goes to the sample stream (:attr:`LD2450.on_samples`, else a
bounded buffer :meth:`LD2450.drain_samples` empties) as a :class:`RadarSample`; once per
``read_interval_s`` a :class:`~drivers.base.Reading` carries ``targets``, the number of
targets tracked in the latest frame. Positions never go into a reading: they are for the
counting feature on the node only (docs/counting.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import serial

from ..base import DeviceError, DeviceGone, Reading
from ..serialdev import SerialDevice, SerialFactory, check_quantities
from .codec import Ack, Firmware
from .protocol import LD2450Protocol, Problem, RadarSample, Settings

__all__ = ["BAUDRATE", "LD2450", "QUANTITIES", "RadarSample", "Settings"]

log = logging.getLogger(__name__)

QUANTITIES = ("targets",)
BAUDRATE = 256000  # the factory setting (section 2.2.7, table 6)
#: Samples kept for :meth:`LD2450.drain_samples` when nobody listens (30 s of frames).
BUFFER_FRAMES = 300
#: Longest wait for bytes in one poll: the sample stream's latency.
READ_TIMEOUT_S = 0.2


def _at_baudrate(factory: SerialFactory) -> SerialFactory:
    def open_fast(port: str, **kw: Any) -> serial.Serial:
        kw.update(baudrate=BAUDRATE, bytesize=8, parity=serial.PARITY_NONE, stopbits=1)
        return factory(port, **kw)

    return open_fast


class LD2450(SerialDevice):
    """Host driver for one Hi-Link HLK-LD2450 (implements :class:`drivers.base.Device`, with a
    sample stream).

    ``settings``: what :meth:`open` makes sure the radar is set to (tracking mode, Bluetooth,
    zone filter); ``configure=False`` only listens (the radar's RX is not wired). A command
    the radar refuses, mis-answers or does not answer is logged and raised once as a
    :class:`~drivers.base.DeviceError` from the next :meth:`poll` (the sensor's health shows
    it); the radar keeps reporting in whatever mode it was in.
    """

    query_mode = "never"  # the radar streams
    sample_type = RadarSample
    discarded_type = RadarSample
    protocol: LD2450Protocol

    def __init__(
        self,
        port: str,
        *,
        settings: Settings | None = None,
        configure: bool = True,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = QUANTITIES,
        no_data_timeout_s: float = 5.0,
        reply_timeout_s: float = 1.0,
        serial_factory: SerialFactory = serial.Serial,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        check_quantities("LD2450", quantities, QUANTITIES)
        if read_interval_s <= 0:
            raise ValueError("read_interval_s must be positive")
        protocol = LD2450Protocol(settings, configure=configure, reply_timeout_s=reply_timeout_s)
        super().__init__(
            port, protocol, quantities=quantities, read_interval_s=read_interval_s,
            no_data_timeout_s=no_data_timeout_s, serial_factory=_at_baudrate(serial_factory),
            clock=clock, wall_clock=wall_clock,
        )
        #: Called with every batch of new samples, on the sampling thread; set before open.
        self.on_samples: Callable[[list[RadarSample]], None] | None = None
        self._buffer: deque[RadarSample] = deque(maxlen=BUFFER_FRAMES)
        self._buffer_lock = threading.Lock()
        self._read_timeout_s = READ_TIMEOUT_S
        self._latest: RadarSample | None = None
        self._problem: str | None = None
        self.readings = 0
        self.config_errors = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self) -> None:
        self._latest, self._problem = None, None
        super().open()
        if self._ser is not None:
            self._ser.timeout = self._read_timeout_s

    # -- what the radar told us --------------------------------------------------------------------
    @property
    def firmware(self) -> Firmware | None:
        """The firmware version the radar reported while being configured."""
        return self.protocol.firmware

    @property
    def configured(self) -> bool:
        """The radar confirmed every setting of the last open."""
        return self.protocol.configured

    # -- the sample stream -------------------------------------------------------------------------
    def read_samples_within(self, seconds: float) -> None:
        """Hand each frame over at most ``seconds`` after it arrived (at most
        :data:`READ_TIMEOUT_S`, the longest one poll waits for bytes)."""
        self._read_timeout_s = max(0.01, min(READ_TIMEOUT_S, seconds))
        if self._ser is not None:
            self._ser.timeout = self._read_timeout_s

    def drain_samples(self) -> list[RadarSample]:
        """Every sample since the previous call (thread-safe; the oldest beyond
        :data:`BUFFER_FRAMES` are dropped). Empty while :attr:`on_samples` is set."""
        with self._buffer_lock:
            out = list(self._buffer)
            self._buffer.clear()
        return out

    # -- sampling ----------------------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Read what arrived (up to ~0.2 s), hand frames to the sample stream, and return a
        reading of the target count once per ``read_interval_s``."""
        if self._ser is None:
            raise DeviceGone(f"{self.port} is not open")
        if self._problem is not None:
            problem, self._problem = self._problem, None
            raise DeviceError(f"{self.port}: LD2450 {problem}")
        now = self._clock()
        events: list[Any] = self.protocol.tick(now)
        self._flush_out()
        data = self._read()
        now = self._clock()
        if data:
            self._last_rx = now
            events += self.protocol.receive(data, now)
        elif self.protocol.decoder.buffered and now - self._last_rx > self.line_idle_s:
            events += self.protocol.line_idle(now)
        self._flush_out()
        batch = [ev for ev in events if isinstance(ev, RadarSample)]
        self._note_problems(events)
        if batch or any(isinstance(ev, Ack) for ev in events):
            self._last_frame = now  # a radar answering commands is there too
        if batch:
            self._deliver(batch)
        readings: list[Reading] = []
        if self._latest is not None and now >= self._next_read:
            self._next_read = max(self._next_read + self.read_interval_s, now)
            self.readings += 1
            readings.append(Reading({"targets": float(len(self._latest.targets))}, now,
                                    self._wall()))
        if not self.protocol.warming_up(now) and now - self._last_frame > self.no_data_timeout_s:
            self._last_frame = now  # report once per timeout, then keep trying
            raise DeviceError(f"{self.port}: no report frame for {self.no_data_timeout_s:g} s "
                              "(the LD2450 streams 10 a second)")
        return readings

    def _deliver(self, batch: list[RadarSample]) -> None:
        self._latest = batch[-1]
        if self.on_samples is not None:  # handed over, not kept
            self.on_samples(batch)
            return
        with self._buffer_lock:
            self._buffer.extend(batch)

    def _note_problems(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Problem):
                self.config_errors += 1
                log.warning("%s: LD2450 %s", self.port, ev.reason)
                self._problem = ev.reason

    def stats(self) -> dict[str, int]:
        p = self.protocol
        c = p.decoder.counters
        return self._frame_stats(acks=c.acks, samples=p.samples, dropped=p.dropped,
                                 readings=self.readings, config_errors=self.config_errors,
                                 resends=p.resends, restarts=p.restarts)

