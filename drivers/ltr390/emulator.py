"""The LTR390 itself, emulated: the chip's register file over I2C, with no I/O.

Attach :class:`LTR390Model` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> bus = FakeBus({0x53: LTR390Model(Daylight(seed=1))})

Behaviour (Lite-On LTR-390UV-01 datasheet):

* power-up: the registers' default values (standby, 18 bits, 100 ms rate, gain 3,
  PART_ID 0xB2) and MAIN_STATUS with its power-on bit set;
* register reads auto-increment; a write's first byte sets the register pointer and the
  following bytes go to consecutive registers; read-only and unknown registers ignore
  writes, reserved bits read 0;
* enabled (MAIN_CTRL bit 1), the chip measures in the mode of bit 3 (ALS or UVS) with the
  gain and resolution written before: the first measurement ends one integration time
  after the enabling write, the next ones every max(rate, integration time). Each one
  updates that mode's data registers and sets MAIN_STATUS bit 3 (new data); until then
  the data registers keep the old values. A write to MAIN_CTRL, the rate or the gain
  while enabled starts over with the new settings (an assumption: the datasheet does not
  say what happens to a measurement under way);
* reading MAIN_STATUS clears its new-data and power-on bits (an assumption in line with
  the "new data, not yet read" wording of the datasheet); a write to MAIN_CTRL clears the
  new-data bit;
* software reset (MAIN_CTRL bit 4) and :meth:`LTR390Model.power_cycle` restore the
  power-up state;
* counts: ALS = lux × gain × int / 0.6, UVS = UVI × 2300 × gain / 18 × int / 400 ms,
  rounded and clamped to the resolution's full scale (the codec's conversions inverted).

Light and UV come from a light source (:mod:`drivers.emulation.light`): :class:`Daylight`
by default (a made-up day at a Seoul street sensor, seeded), or a constant.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..emulation.light import Daylight, Light, LightLike, as_light_source, constant_light
from ..emulation.registers import RegisterFile
from .codec import (
    CTRL_ENABLE,
    CTRL_SW_RESET,
    CTRL_UVS_MODE,
    DEFAULTS,
    REG_ALS_DATA,
    REG_GAIN,
    REG_MAIN_CTRL,
    REG_MAIN_STATUS,
    REG_MEAS_RATE,
    REG_UVS_DATA,
    STATUS_DATA_READY,
    STATUS_POWER_ON,
    WRITABLE,
    decode_gain,
    decode_meas_rate,
    encode_count,
    integration_s,
    lux_to_als,
    uvi_to_uvs,
)

__all__ = ["Daylight", "LTR390Model", "Measured", "constant_light"]


@dataclass(frozen=True, slots=True)
class Measured:
    """One finished measurement: when, the mode, the count, the settings and the truth."""

    t: float
    mode: str  # "als" or "uvs"
    count: int
    gain: int
    bits: int
    truth: Light


class LTR390Model(RegisterFile):
    """Device side of an LTR390 (implements :class:`drivers.emulation.i2c.I2CModel`).

    State (:attr:`regs`, :attr:`measured`, :attr:`stats`) is public so tests and the
    simulator can look at it.
    """

    LAST_REGISTER = 0xFF

    def __init__(self, source: LightLike | None = None, *, seed: int | None = 0,
                 keep: int = 1000) -> None:
        self.source = as_light_source(source, seed)
        self.measured: deque[Measured] = deque(maxlen=keep)
        self.stats = {"transfers": 0, "measurements": 0, "ignored_writes": 0, "resets": 0}
        self._power_up()

    def _power_up(self) -> None:
        self.regs = bytearray(0x100)
        for reg, val in DEFAULTS.items():
            self.regs[reg] = val
        self.pointer = 0
        # The measurement cycle under way: start, mode, gain, bits, period; None in standby.
        self._cycle: tuple[float, str, int, int, float] | None = None
        self._done = 0  # measurements of this cycle already in the data registers

    def power_cycle(self, now: float) -> None:
        """Supply cut and restored (brown-out): the power-up state."""
        self._power_up()
        self.stats["resets"] += 1

    @property
    def mode(self) -> str | None:
        """The mode measuring now ("als", "uvs"), None in standby."""
        return None if self._cycle is None else self._cycle[1]

    # -- RegisterFile -------------------------------------------------------------------
    def _read(self, reg: int, now: float) -> int:
        val = self.regs[reg]
        if reg == REG_MAIN_STATUS:
            self.regs[reg] &= ~(STATUS_DATA_READY | STATUS_POWER_ON) & 0xFF
        return val

    def _write(self, reg: int, val: int, now: float) -> None:
        mask = WRITABLE.get(reg)
        if mask is None:
            self.stats["ignored_writes"] += 1
            return
        if reg == REG_MAIN_CTRL and val & CTRL_SW_RESET:
            self.power_cycle(now)
            return
        self.regs[reg] = val & mask
        if reg == REG_MAIN_CTRL:
            self.regs[REG_MAIN_STATUS] &= ~STATUS_DATA_READY & 0xFF
        if reg in (REG_MAIN_CTRL, REG_MEAS_RATE, REG_GAIN):
            self._start(now)

    def _start(self, now: float) -> None:
        """(Re)start measuring with the settings in the registers, or stop."""
        ctrl = self.regs[REG_MAIN_CTRL]
        bits, rate = decode_meas_rate(self.regs[REG_MEAS_RATE])
        gain = decode_gain(self.regs[REG_GAIN])
        if not ctrl & CTRL_ENABLE or bits is None or gain is None:
            self._cycle = None  # standby, or a reserved setting: nothing measured
            return
        mode = "uvs" if ctrl & CTRL_UVS_MODE else "als"
        self._cycle = (now, mode, gain, bits, max(rate, integration_s(bits)))
        self._done = 0

    def _update(self, now: float) -> None:
        """Finish what the elapsed time finished (the latest measurement counts)."""
        if self._cycle is None:
            return
        start, mode, gain, bits, period = self._cycle
        first = start + integration_s(bits)
        if now < first:
            return
        done = int((now - first) / period) + 1
        if done <= self._done:
            return
        self._done = done
        t = first + (done - 1) * period
        truth = self.source(t)
        count = (lux_to_als(truth.lux, gain, bits) if mode == "als"
                 else uvi_to_uvs(truth.uvi, gain, bits))
        reg = REG_ALS_DATA if mode == "als" else REG_UVS_DATA
        self.regs[reg:reg + 3] = encode_count(count)
        self.regs[REG_MAIN_STATUS] |= STATUS_DATA_READY
        self.measured.append(Measured(t, mode, count, gain, bits, truth))
        self.stats["measurements"] += 1
