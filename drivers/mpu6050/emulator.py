"""The MPU-6050 itself, emulated: its register file and FIFO over I2C, with no I/O.

Attach :class:`MPU6050Model` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> from drivers.emulation.motion import RestSource
    >>> bus = FakeBus({0x68: MPU6050Model(RestSource())})

Behaviour (MPU-6000/6050 register map rev 4.2, product specification rev 3.4):

* power-up: PWR_MGMT_1 0x40 (**asleep**), WHO_AM_I 0x68 (also at address 0x69),
  everything else 0; asleep, nothing is sampled and the data registers read zeros;
  DEVICE_RESET (PWR_MGMT_1 bit 7) restores this state;
* a write's first byte is the register address, the rest go to consecutive
  registers; reads auto-increment, except FIFO_R_W (0x74), which pops a FIFO byte
  per byte read (an empty FIFO repeats the last byte read);
* awake, a sample is taken every (1 + SMPLRT_DIV) / gyro rate s (gyro rate 8 kHz
  with DLPF_CFG 0 or 7, else 1 kHz); the accelerometer updates at most at 1 kHz,
  so faster sample rates repeat its values; the motion source gives the value
  (its rows at min(rate, 1 kHz), looping; a new rate starts it again; quantized
  and saturated for ACCEL_CONFIG); the gyroscope reads zero (at rest) and the
  temperature register a constant 25 °C;
* with USER_CTRL FIFO_EN set, each sample appends the FIFO_EN-selected registers
  (accelerometer 6 bytes, temperature 2, gyroscope 2 per axis, in register order)
  to the 1024-byte FIFO; when it is full the oldest *bytes* are overwritten (the
  frames lose alignment) and INT_STATUS FIFO_OFLOW_INT (bit 4) is set - an
  assumption: set whether or not INT_ENABLE enables it; reading INT_STATUS clears
  it; USER_CTRL FIFO_RESET written with FIFO_EN clear empties the FIFO;
* :meth:`MPU6050Model.power_cycle` (a brown-out) restores the power-up state.

The DMP, I2C master, motion detection and self-test are not modelled.
``produced`` keeps the truth of every sample (time, source row, g).
No numpy (nor anything importing it): the daemon runs this model in simulations and
in the memory benchmark.
"""

from __future__ import annotations

import math
import struct

from ..emulation.accel import AccelerometerModel
from ..emulation.motion import MotionSource
from .codec import (
    FIFO_BYTES,
    FIFO_EN_ACCEL,
    FIFO_EN_TEMP,
    FIFO_EN_XG,
    FIFO_EN_YG,
    FIFO_EN_ZG,
    INT_DATA_RDY,
    INT_FIFO_OFLOW,
    PWR_DEVICE_RESET,
    PWR_SLEEP,
    READ_ONLY,
    REG_ACCEL_CONFIG,
    REG_ACCEL_XOUT_H,
    REG_CONFIG,
    REG_FIFO_COUNTH,
    REG_FIFO_COUNTL,
    REG_FIFO_EN,
    REG_FIFO_R_W,
    REG_INT_STATUS,
    REG_PWR_MGMT_1,
    REG_SMPLRT_DIV,
    REG_USER_CTRL,
    REG_WHO_AM_I,
    RESET_VALUES,
    USER_FIFO_EN,
    USER_FIFO_RESET,
    WHO_AM_I,
    counts_for,
    encode_xyz,
    sample_rate_hz,
)

TEMP_25C = round((25.0 - 36.53) * 340)  # temperature register: T = raw / 340 + 36.53 °C
RATE_AFFECTING = (REG_SMPLRT_DIV, REG_CONFIG, REG_PWR_MGMT_1)


class MPU6050Model(AccelerometerModel):
    """Device side of an MPU-6050 (implements :class:`drivers.emulation.i2c.I2CModel`).

    ``who_am_i`` can be set to play a relative (0x70: MPU-6500...). State
    (:attr:`regs`, :attr:`fifo`, :attr:`produced`, :attr:`stats`) is public.
    """

    LAST_REGISTER = 0x7F

    def __init__(self, source: MotionSource | None = None, *, who_am_i: int = WHO_AM_I,
                 keep: int = 20000) -> None:
        super().__init__(source, keep=keep, registers=128,
                         stats={"transfers": 0, "samples": 0, "overflows": 0, "resets": 0,
                                "fifo_resets": 0, "ignored_writes": 0})
        self.who_am_i = who_am_i
        self.fifo = bytearray()
        self._last_fifo_byte = 0
        self._data = bytes(14)  # 0x3B..0x48: accel, temp, gyro
        self._oflow = False
        self._data_rdy = False
        self._pos = 0.0  # source row of the next sample (continues across runs)
        self._defaults()

    # -- RegisterFile ----------------------------------------------------------------------
    def _register_at(self, first: int, k: int) -> int:
        return first if first == REG_FIFO_R_W else first + k  # FIFO_R_W does not increment

    def _read_part(self, n: int, now: float) -> bytes:
        if self.pointer == REG_FIFO_R_W:
            return self._pop(n)  # a byte per byte read; the pointer stays
        return super()._read_part(n, now)

    # -- power -----------------------------------------------------------------------------
    def power_cycle(self, now: float) -> None:
        """Supply cut and restored: asleep, registers at their power-up values."""
        self._defaults()
        self.stats["resets"] += 1

    @property
    def asleep(self) -> bool:
        return bool(self.regs[REG_PWR_MGMT_1] & PWR_SLEEP)

    @property
    def rate_hz(self) -> float:
        return sample_rate_hz(self.regs[REG_SMPLRT_DIV], self.regs[REG_CONFIG])

    # -- internals -------------------------------------------------------------------------
    def _defaults(self) -> None:
        self._power_up(RESET_VALUES, REG_WHO_AM_I, self.who_am_i)
        self.fifo.clear()
        self._data = bytes(14)
        self._oflow = self._data_rdy = False

    def _read(self, reg: int, now: float) -> int:
        if reg >= len(self.regs):
            return 0x00
        if REG_ACCEL_XOUT_H <= reg < REG_ACCEL_XOUT_H + 14:
            return 0x00 if self.asleep else self._data[reg - REG_ACCEL_XOUT_H]
        if reg == REG_INT_STATUS:
            v = (INT_FIFO_OFLOW if self._oflow else 0) | (INT_DATA_RDY if self._data_rdy else 0)
            self._oflow = self._data_rdy = False  # cleared by reading (INT_RD_CLEAR = 0)
            return v
        if reg == REG_FIFO_COUNTH:
            return len(self.fifo) >> 8
        if reg == REG_FIFO_COUNTL:
            return len(self.fifo) & 0xFF
        return self.regs[reg]

    def _pop(self, n: int) -> bytes:
        k = min(n, len(self.fifo))
        out = bytes(self.fifo[:k])
        del self.fifo[:k]
        if k:
            self._last_fifo_byte = out[-1]
        return out + bytes([self._last_fifo_byte]) * (n - k)

    def _write(self, reg: int, val: int, now: float) -> None:
        if reg >= len(self.regs) or reg in READ_ONLY:
            self.stats["ignored_writes"] += 1
            return
        if reg == REG_PWR_MGMT_1 and val & PWR_DEVICE_RESET:
            self.power_cycle(now)
            return
        if reg == REG_USER_CTRL:
            if val & USER_FIFO_RESET and not val & USER_FIFO_EN:
                self.fifo.clear()
                self.stats["fifo_resets"] += 1
            self.regs[reg] = val & ~USER_FIFO_RESET & 0xFF  # the reset bits clear themselves
            return
        before = (self.asleep, self.rate_hz)
        self.regs[reg] = val
        if reg in RATE_AFFECTING and (self.asleep, self.rate_hz) != before:
            self._t0 = None if self.asleep else now
            self._taken = 0
            if self.rate_hz != before[1]:
                self._pos = 0.0  # a new rate replays the source from its start

    def _room(self) -> int:
        return FIFO_BYTES // max(1, self._frame_len()) + 2

    def _skip(self, n: int, rate: float) -> None:
        if self._fifo_on():
            self._oflow = True
            self.stats["overflows"] += 1
        self._pos += n * min(1.0, 1000.0 / rate)

    def _fifo_on(self) -> bool:
        return bool(self.regs[REG_USER_CTRL] & USER_FIFO_EN) and self._frame_len() > 0

    def _frame_len(self) -> int:
        en = self.regs[REG_FIFO_EN]
        return ((6 if en & FIFO_EN_ACCEL else 0) + (2 if en & FIFO_EN_TEMP else 0)
                + 2 * sum(1 for b in (FIFO_EN_XG, FIFO_EN_YG, FIFO_EN_ZG) if en & b))

    def _take(self, t: float, rate: float) -> None:
        g = self._motion(t, math.floor(self._pos + 1e-9), min(rate, 1000.0))
        self._pos += min(1.0, 1000.0 / rate)  # the accelerometer updates at most at 1 kHz
        self.stats["samples"] += 1
        cfg = self.regs[REG_ACCEL_CONFIG]
        accel = encode_xyz(tuple(counts_for(v, cfg) for v in g))  # type: ignore[arg-type]
        self._data = accel + struct.pack(">h", TEMP_25C) + bytes(6)
        self._data_rdy = True
        if not self._fifo_on():
            return
        en = self.regs[REG_FIFO_EN]
        frame = b""
        if en & FIFO_EN_ACCEL:
            frame += accel
        if en & FIFO_EN_TEMP:
            frame += self._data[6:8]
        for k, bit in enumerate((FIFO_EN_XG, FIFO_EN_YG, FIFO_EN_ZG)):
            if en & bit:
                frame += self._data[8 + 2 * k:10 + 2 * k]
        self.fifo += frame
        if len(self.fifo) > FIFO_BYTES:
            del self.fifo[:len(self.fifo) - FIFO_BYTES]  # the oldest bytes are lost
            self._oflow = True
            self.stats["overflows"] += 1
