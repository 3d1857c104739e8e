"""The register file most I2C sensors are, emulated once: how a transfer reaches registers.

A chip model (:class:`drivers.adxl345.emulator.ADXL345Model`,
:class:`drivers.mpu6050.emulator.MPU6050Model`, :class:`drivers.bme280.emulator.BME280Model`)
derives from :class:`RegisterFile` and says only what its registers do; the walk over a
transaction's parts is here:

* before anything else, the model catches up with the time of the transfer
  (:meth:`RegisterFile._update`: samples taken, conversions finished);
* a write's first byte sets the register pointer and the following bytes go to
  consecutive registers (:meth:`RegisterFile._write_part`; the BME280 takes
  (register, value) pairs instead, and a FIFO data register keeps the pointer);
* a read returns consecutive registers from the pointer on and leaves the pointer after
  them, no further than :attr:`RegisterFile.LAST_REGISTER`
  (:meth:`RegisterFile._read_part`; a FIFO data register pops bytes instead).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class RegisterFile(ABC):
    """Device side of a register-file I2C chip (implements
    :class:`drivers.emulation.i2c.I2CModel`).

    Subclasses set :attr:`pointer` and :attr:`stats` (with a ``transfers`` counter) in
    their constructor, implement :meth:`_update`, :meth:`_read` and :meth:`_write` (one
    register each) and may override the part hooks.
    """

    #: The highest value the register pointer takes by auto-increment.
    LAST_REGISTER: ClassVar[int] = 0xFF
    #: How long the chip stretched the clock during the last transfer (these do not).
    stretch_s: float = 0.0

    pointer: int
    stats: dict[str, int]

    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        self.stats["transfers"] += 1
        self._update(now)
        out: list[bytes] = []
        for kind, val in parts:
            if kind == "w":
                self._write_part(bytes(val), now)  # type: ignore[arg-type]
            else:
                out.append(self._read_part(int(val), now))  # type: ignore[arg-type]
        return out

    @abstractmethod
    def _update(self, now: float) -> None:
        """Catch up with ``now`` before a transfer: what the chip did meanwhile."""

    def _write_part(self, data: bytes, now: float) -> None:
        """The write part of a transfer: the register address, then data for consecutive
        registers (an empty write, an address probe, changes nothing)."""
        if not data:
            return
        self.pointer = data[0]
        for k, byte in enumerate(data[1:]):
            self._write(self._register_at(data[0], k), byte, now)

    def _register_at(self, first: int, k: int) -> int:
        """The register the ``k``-th data byte of a write starting at ``first`` goes to."""
        return first + k

    def _read_part(self, n: int, now: float) -> bytes:
        """A read part of ``n`` bytes: registers from the pointer on."""
        start = self.pointer
        block = bytes(self._read(start + k, now) for k in range(n))
        self.pointer = min(start + n, self.LAST_REGISTER)
        return block

    @abstractmethod
    def _read(self, reg: int, now: float) -> int:
        """The value of one register as a read sees it (reads may have side effects)."""

    @abstractmethod
    def _write(self, reg: int, val: int, now: float) -> None:
        """Write one register (read-only ones ignore it)."""
