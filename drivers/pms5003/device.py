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

from ..base import DeviceError, DeviceGone, Reading
from .protocol import Discarded, PMS5003Protocol, Sample

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

#: Silence after which a partially received frame is given up (a frame takes 33 ms).
LINE_IDLE_S = 0.5

SerialFactory = Callable[..., serial.Serial]


class PMS5003:
    """Host driver for one Plantower PMS5003/PMS7003 on a UART."""

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
        unknown = set(quantities) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"unknown PMS5003 quantities: {sorted(unknown)}")
        self.port = port
        self.quantities = tuple(quantities)
        self.read_interval_s = read_interval_s
        self.no_data_timeout_s = no_data_timeout_s
        self.protocol = PMS5003Protocol(mode, warmup_s)
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
        self.protocol.sleep()
        self._flush_out()

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
        if self.protocol.mode == "passive" and now >= self._next_read:
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
        readings: list[Reading] = []
        for ev in events:
            if isinstance(ev, (Sample, Discarded)):
                self._last_frame = now
            if isinstance(ev, Sample):
                f = ev.frame
                values = {q: float(getattr(f, q)) for q in self.quantities}
                # Byte 29 is the sensor's own error code: non-zero is a fault it reports.
                readings.append(Reading(values, now, self._wall(), fault=f.error != 0))
        self._flush_out()
        if not self.protocol.asleep and now - self._last_frame > self.no_data_timeout_s:
            self._last_frame = now  # report once per timeout, then keep trying
            raise DeviceError(f"{self.port}: no valid frame for {self.no_data_timeout_s:g} s")
        return readings

    def stats(self) -> dict[str, int]:
        c = self.protocol.decoder.counters
        return {
            "frames": c.frames,
            "bad_frames": c.bad_frames,
            "discarded_bytes": c.discarded_bytes,
            "acks": c.acks,
            "warmup_discarded": self.protocol.discarded_warmup,
            "mode_reasserts": self.protocol.reasserts,
        }

    def _flush_out(self) -> None:
        out = self.protocol.data_to_send()
        if not out or self._ser is None:
            return
        try:
            self._ser.write(out)
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise DeviceGone(f"{self.port}: write failed: {exc}") from exc
