"""A Sensirion SPS30 on I2C: the codec plus an smbus2-like bus.

    >>> from drivers.sps30 import SPS30
    >>> pm = SPS30(1)                 # /dev/i2c-1, opened on open()
    >>> pm.open()                     # identify, float output, start measurement
    >>> readings = pm.poll()          # one short step of I/O
    >>> pm.close()

Every command is a write transfer (with a STOP) and, if it returns data, a
*separate* read transfer after the command's execution time: two ``i2c_rdwr``
calls, never one, because the SPS30 does not take a repeated start. Reads use
``i2c_msg.read`` so that the 60-byte measurement is read in one go (SMBus block
reads stop at 32 bytes).
"""

from __future__ import annotations

import errno
import logging
import math
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, Unpack

from smbus2 import i2c_msg

from ..base import DeviceError, DeviceGone, Reading
from ..i2cdev import BusIO, I2CDevice
from ..sensirion import CRCError
from . import codec as c
from .codec import QUANTITIES, Measurement

log = logging.getLogger(__name__)

DEFAULT_QUANTITIES = ("pm1", "pm25", "pm10")
MEASUREMENT_INTERVAL_S = 1.0  # the chip makes a new measurement every second
READY_POLL_S = 0.1  # how soon to ask again when the data-ready flag is still 0
RETRY_DELAY_S = 0.01  # pause before retrying a NACKed command
#: errno values a NACK (or a glitch on the bus) shows up as: EREMOTEIO (121) on the Pi's
#: i2c-bcm2835, ENXIO or EIO on other adapters. Anything else means the bus itself is gone.
NACK_ERRNOS = frozenset({errno.EREMOTEIO, errno.ENXIO, errno.EIO})

T = TypeVar("T")


class SMBusLike(Protocol):
    def i2c_rdwr(self, *msgs: i2c_msg) -> None: ...
    def close(self) -> None: ...


class _Nacked(Exception):
    pass


class SPS30(I2CDevice):
    """Host driver for one Sensirion SPS30 particulate sensor (I2C, address 0x69).

    ``bus`` is a bus number (opened with ``bus_factory`` on :meth:`open`, closed
    on :meth:`close`) or an smbus2-like object that the caller owns.
    """

    chip = "SPS30"
    NACK_ERRNOS = NACK_ERRNOS
    GONE_ERRNOS = None  # any other bus error: gone
    BAD_FRAMES = ("crc_errors", "bad_replies")

    def __init__(
        self,
        bus: int | SMBusLike = 1,
        *,
        address: int = c.ADDRESS,
        warmup_s: float = 15.0,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = DEFAULT_QUANTITIES,
        no_data_timeout_s: float = 10.0,
        max_nacks: int = 6,
        **io: Unpack[BusIO],
    ) -> None:
        unknown = set(quantities) - set(QUANTITIES)
        if unknown:
            raise ValueError(f"unknown SPS30 quantities: {sorted(unknown)}")
        if read_interval_s <= 0 or warmup_s < 0 or max_nacks < 1:
            raise ValueError("read_interval_s must be positive, warmup_s >= 0, max_nacks >= 1")
        super().__init__(bus, address=address, gone_after=max_nacks,
                         counters=("frames", "crc_errors", "bad_replies", "nacks", "not_ready",
                                   "warmup_discarded", "opens"), **io)
        self.warmup_s = warmup_s
        self.read_interval_s = read_interval_s
        self.quantities = tuple(quantities)
        self.no_data_timeout_s = no_data_timeout_s
        self._lock = threading.RLock()
        self.product_type = ""
        self.serial_number = ""
        self.firmware: tuple[int, int] = (0, 0)
        self._measuring = False
        self._asleep = False
        self._started = 0.0
        self._next_check = 0.0
        self._last_data = 0.0

    @property
    def max_nacks(self) -> int:
        """NACKed transfers in a row that mean the chip is gone (``gone_after``)."""
        return self.gone_after

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Identify the chip, select float output and start measuring."""
        with self._lock:
            self._open_bus()
            self._measuring = self._asleep = False
            # Asleep (a previous run put it to sleep)? Then it NACKs until woken.
            product = self._query(c.CMD_READ_PRODUCT_TYPE, c.decode_string, crc_retries=2,
                                  tolerate_nack=True)
            if product is None:
                self._wake_up()
                product = self._query(c.CMD_READ_PRODUCT_TYPE, c.decode_string, crc_retries=2)
            self.product_type = product
            if not product.startswith("0008"):
                log.warning("SPS30 at 0x%02x reports product type %r, expected 00080000",
                            self.address, product)
            self.serial_number = self._query(c.CMD_READ_SERIAL_NUMBER, c.decode_string,
                                             crc_retries=2)
            self.firmware = self._query(c.CMD_READ_FIRMWARE_VERSION, c.decode_firmware_version,
                                        crc_retries=2)
            # It may still be measuring from before (we were re-opened, it was not powered off).
            self._xfer(c.stop_measurement(), c.exec_time(c.CMD_STOP_MEASUREMENT),
                       tolerate_nack=True)
            self._start_measurement()
            self.counters["opens"] += 1

    def close(self) -> None:
        """Release the bus if we opened it; the chip keeps its state. Safe to call twice."""
        with self._lock:
            self._close_bus()
            self._measuring = False

    @property
    def info(self) -> dict[str, str]:
        """What the chip said about itself on open()."""
        return {"product": self.product_type, "serial": self.serial_number,
                "firmware": f"{self.firmware[0]}.{self.firmware[1]}"}

    @property
    def supports_sleep(self) -> bool:
        """Sleep/wake-up commands exist from firmware 2.0 on."""
        return self.firmware >= (2, 0)

    # -- power ---------------------------------------------------------------------------
    def sleep(self) -> None:
        """Duty cycling: stop measuring (fan and laser off), then sleep if the firmware can."""
        with self._lock:
            self._require_open()
            if self._asleep:
                return
            self._command(c.CMD_STOP_MEASUREMENT)
            self._measuring = False
            if self.supports_sleep:
                self._command(c.CMD_SLEEP)
            self._asleep = True

    def wake(self) -> None:
        """Wake up (if it slept) and measure again; readings are discarded for ``warmup_s``."""
        with self._lock:
            self._require_open()
            if not self._asleep:
                return
            if self.supports_sleep:
                self._wake_up()
            self._asleep = False
            self._start_measurement()

    @property
    def asleep(self) -> bool:
        return self._asleep

    @property
    def warming_up(self) -> bool:
        return self._measuring and self._clock() - self._started < self.warmup_s

    # -- maintenance -------------------------------------------------------------------------
    def get_auto_cleaning_interval(self) -> int:
        """The fan auto-cleaning interval in seconds, as the chip reports it.

        After :meth:`set_auto_cleaning_interval` the chip uses the new value at
        once but reports the old one until it is reset (see :meth:`reset`).
        """
        with self._lock:
            self._require_awake()
            return self._query(c.CMD_AUTO_CLEANING_INTERVAL, c.decode_u32, crc_retries=2)

    def set_auto_cleaning_interval(self, seconds: int) -> None:
        """Set the interval (seconds; 0 disables); stored in the chip's non-volatile memory."""
        data = c.write_auto_cleaning_interval(int(seconds))  # validates the range
        with self._lock:
            self._require_awake()
            self._xfer(data, c.exec_time(c.CMD_AUTO_CLEANING_INTERVAL, 2))

    def start_fan_cleaning(self) -> None:
        """Run the fan at full speed for about 10 s (only while measuring)."""
        with self._lock:
            self._require_awake()
            if not self._measuring:
                raise DeviceError("fan cleaning needs measurement mode")
            self._command(c.CMD_START_FAN_CLEANING)

    def read_device_status(self) -> int:
        """The device status register (bit 21 fan speed, bit 5 laser, bit 4 fan)."""
        with self._lock:
            self._require_awake()
            return self._query(c.CMD_READ_DEVICE_STATUS, c.decode_u32, crc_retries=2)

    def reset(self) -> None:
        """Soft reset (as a power cycle), then measure again if it was measuring."""
        with self._lock:
            self._require_open()
            if self._asleep:
                self.wake()
            was_measuring = self._measuring
            self._command(c.CMD_DEVICE_RESET)
            self._measuring = False
            if was_measuring:
                self._start_measurement()

    # -- sampling --------------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Wait (at most ~1 s) until a check is due; read the values if the chip has new ones."""
        self._require_open()
        if not self._measuring:
            self._sleep(min(self.read_interval_s, 1.0))
            return []
        now = self._clock()
        if now < self._next_check:
            self._sleep(min(self._next_check - now, 1.0))
            if self._clock() < self._next_check:
                return []
        with self._lock:
            self._require_open()
            if not self._measuring:
                return []
            now = self._clock()
            self._next_check = now + READY_POLL_S
            if not self._query(c.CMD_READ_DATA_READY, c.decode_data_ready):
                self.counters["not_ready"] += 1
                if now - self._last_data > self.no_data_timeout_s:
                    self._last_data = now  # report once per timeout, then keep trying
                    raise DeviceError(f"SPS30: no new measurement for {self.no_data_timeout_s:g} s")
                return []
            m = self._query(c.CMD_READ_MEASURED_VALUES, c.decode_measurement)
            now = self._clock()
            self._last_data = now
            self._next_check = now + self.read_interval_s
            bad = [k for k, v in m.as_dict().items() if not math.isfinite(v) or v < 0]
            if bad:
                self.counters["bad_replies"] += 1
                raise DeviceError(f"SPS30: implausible values for {', '.join(bad)}")
            self.counters["frames"] += 1
            if now - self._started < self.warmup_s:
                self.counters["warmup_discarded"] += 1
                return []
            values = {q: getattr(m, q) + 0.0 for q in self.quantities}  # -0.0 -> 0.0
            return [Reading(values, now, self._wall())]

    def read_measurement(self) -> Measurement:
        """Read the latest values now, whatever the data-ready flag (for tools and tests)."""
        with self._lock:
            self._require_awake()
            return self._query(c.CMD_READ_MEASURED_VALUES, c.decode_measurement)

    # -- internals ---------------------------------------------------------------------------
    def _require_open(self) -> None:
        self._need_bus()

    def _require_awake(self) -> None:
        self._require_open()
        if self._asleep:
            raise DeviceError("SPS30 is asleep: wake() it first")

    def _start_measurement(self) -> None:
        self._command(c.CMD_START_MEASUREMENT, c.FORMAT_FLOAT)
        now = self._clock()
        self._measuring = True
        self._started = self._last_data = now
        self._next_check = now + MEASUREMENT_INTERVAL_S

    def _wake_up(self) -> None:
        """The first wake-up only switches the interface on (and is NACKed); the second wakes.

        Either one being acknowledged means the chip is awake.
        """
        delay = c.exec_time(c.CMD_WAKE_UP)
        for _ in range(3):
            first = self._xfer(c.wake_up(), delay, tolerate_nack=True)
            second = self._xfer(c.wake_up(), delay, tolerate_nack=True)
            if first is not None or second is not None:
                return
        raise DeviceGone(f"{self.name} does not wake up")

    def _command(self, code: int, *args: int) -> None:
        self._xfer(c.command(code, *args), c.exec_time(code, len(args)))

    def _query(self, code: int, decode: Callable[[bytes], T], *, crc_retries: int = 0,
               tolerate_nack: bool = False) -> Any:
        info = c.COMMANDS[code]
        last: ValueError | None = None
        for _ in range(crc_retries + 1):
            raw = self._xfer(c.command(code), info.delay_s, info.reply,
                             tolerate_nack=tolerate_nack)
            if raw is None:
                return None
            try:
                return self._decode(decode, raw)  # counts CRC errors
            except CRCError as exc:
                last = exc
            except ValueError as exc:
                self.counters["bad_replies"] += 1
                last = exc
        raise DeviceError(f"SPS30 {info.name}: {last}") from last

    def _xfer(self, data: bytes, delay_s: float, read_len: int = 0, *,
              tolerate_nack: bool = False) -> bytes | None:
        """Write ``data`` (STOP), wait ``delay_s``, then read ``read_len`` bytes separately.

        A NACKed command is tried again from its write, up to ``2 * max_nacks`` times
        (then :class:`DeviceError`); ``max_nacks`` NACKed transfers in a row, across
        commands, mean the chip is gone (:class:`DeviceGone`). With
        ``tolerate_nack`` one attempt is made and a NACK returns None.
        """
        for _ in range(2 * self.max_nacks):
            try:
                return self._write_read(data, delay_s, read_len)
            except _Nacked as exc:
                if tolerate_nack:
                    return None
                self._escalate(self.max_nacks,
                               f"{self.name}: {self.max_nacks} NACKs in a row ({exc})", None)
                self._sleep(RETRY_DELAY_S)
        name = c.COMMANDS.get(int.from_bytes(data[:2], "big"))
        raise DeviceError(f"SPS30 {name.name if name else data.hex()}: NACKed "
                          f"{2 * self.max_nacks} times")

    def _rdwr(self, msg: i2c_msg) -> None:
        """One I2C transfer; counts NACKs and the current run of them (``_no_answer``)."""
        try:
            super()._rdwr(msg)
        except OSError as exc:
            if not self._is_nack(exc):
                raise DeviceGone(f"{self.name}: {exc}") from exc
            self.counters["nacks"] += 1
            self._no_answer += 1
            raise _Nacked(str(exc)) from exc
        self._no_answer = 0
