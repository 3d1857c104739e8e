"""A MaxBotix I2CXL-MaxSonar-EZ on an I2C bus, through smbus2.

    >>> from drivers.maxbotix_i2c import I2CXL
    >>> sonar = I2CXL(1, address=0x70, read_interval_s=0.2)   # /dev/i2c-1
    >>> sonar.open()
    >>> readings = sonar.poll()        # [] or [Reading({"d": 1.23}, ...)], metres
    >>> sonar.close()

Each reading is one range command (0x51), a wait of ``RANGE_WAIT_S`` (100 ms: the
chip ignores the bus while ranging) and a separate 2-byte read (big-endian cm). A read
NACKed because the chip is still ranging is retried a few times. 0 cm and the top of the
range (765 cm by default) mean "no target": no reading, and the ``no_target`` counter
goes up. The Pi's I2C controller does not handle clock stretching well: run the bus at
<= 50 kHz with this chip, or rely on the wait as this driver does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Unpack

from ..base import Reading
from ..i2cdev import BusOptions, SingleShotDevice
from .codec import (
    MAX_CM,
    RANGE_WAIT_S,
    change_address_command,
    decode_range,
    is_no_target,
    range_command,
)

#: The value an I2CXL reading carries: distance in metres.
QUANTITIES = ("d",)


@dataclass(frozen=True, slots=True)
class Range:
    cm: int

    @property
    def d(self) -> float:
        return self.cm / 100.0


class _NoTarget(Exception):
    """A range that means nothing echoed (counted, no reading)."""


class I2CXL(SingleShotDevice):
    """Host driver for one MaxBotix I2CXL-MaxSonar-EZ (implements Device).

    ``bus`` is a bus number, a device path or an smbus2-like object the caller owns
    (such as a :class:`drivers.emulation.i2c.FakeBus`). ``max_cm`` is the reading that
    means "no target" (765 on the MB12x2). After ``gone_after`` measurements in a row
    that got no answer the driver raises :class:`DeviceGone`; one is a
    :class:`DeviceError`.
    """

    chip = "I2CXL-MaxSonar"
    QUANTITIES = QUANTITIES
    BAD_FRAMES = ()
    RETRY_WAIT_S = 0.01  # a NACKed read: still ranging (a far target, a slow chip)

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x70,
        read_interval_s: float = 0.2,
        max_cm: int = MAX_CM,
        **options: Unpack[BusOptions],
    ) -> None:
        if not 0 < address < 0x80:
            raise ValueError(f"I2C address must be 7-bit, not {address!r}")
        if read_interval_s < RANGE_WAIT_S:
            raise ValueError(f"read_interval_s must be at least {RANGE_WAIT_S} s "
                             "(the chip ranges for up to 100 ms)")
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=QUANTITIES,
                         counters=("readings", "no_target", "nacks", "bus_errors",
                                   "crc_errors"), **options)
        self.max_cm = max_cm
        self.last_cm: int | None = None

    # -- lifecycle ------------------------------------------------------------------
    def _setup(self) -> None:
        """On open: one range reading, to see the chip answers (nothing to configure)."""
        with self._errors("open", gone_on_nack=True):
            self._write(range_command())
            self._sleep(RANGE_WAIT_S)
            self.last_cm = decode_range(self._read_retrying(2))

    # -- sampling -------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        try:
            return super().poll()
        except _NoTarget:
            return []

    def measure(self) -> Range:
        """One range reading now (blocks about 100 ms); raises _NoTarget on no echo."""
        self._need_bus()
        with self._errors("range reading"):
            self._write(range_command())
            self._sleep(RANGE_WAIT_S)
            cm = decode_range(self._read_retrying(2))
        self.last_cm = cm
        if is_no_target(cm, self.max_cm):
            self.counters["no_target"] += 1
            raise _NoTarget()
        self.counters["readings"] += 1
        return Range(cm)

    def change_address(self, new_address: int) -> None:
        """Move the chip to 7-bit ``new_address`` (stored in its EEPROM); the driver follows."""
        self._need_bus()
        data = change_address_command(new_address)
        with self._errors("change address"):
            self._write(data)
        self.address = new_address
