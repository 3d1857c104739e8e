"""The BH1750 itself, emulated: the chip's side of its opcodes over I2C, with no I/O.

Attach :class:`BH1750Model` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> bus = FakeBus({0x23: BH1750Model(Daylight(seed=1))})

Behaviour (ROHM BH1750FVI datasheet):

* power-up: powered down, MTreg 69, result 0;
* one-byte opcodes: power on/down, reset (clears the result; ignored while powered down),
  the six measurement modes, and MTreg's two halves (taking effect at the next
  measurement); a write of any other length, or an unknown opcode, is ignored (counted);
  an empty write (address probe) is acknowledged;
* a measurement takes the typical time (120 ms H-resolution, 16 ms L-resolution at MTreg
  69, proportional to MTreg; ``measure_time_s`` overrides it); until it ends a read
  returns the previous result - the chip never NACKs for being busy;
* one-time modes measure once, then power down; continuous modes measure back to back.
  Changing MTreg during a continuous measurement restarts it with the new value (a
  simplification: the datasheet only says the new MTreg applies from the next one);
* the count is the light at the end of the measurement × 1.2 × MTreg / 69 (× 2 in
  H-resolution mode 2), rounded and saturating at 65535; in L-resolution the two lowest
  bits read 0 (4-count steps, the datasheet's "4 lx resolution" - an assumption about
  how the chip produces it);
* a read returns the result big-endian, ``FF`` past the two bytes, at any time.

Light comes from a light source (:mod:`drivers.emulation.light`): :class:`Daylight` by
default (a made-up day at a Seoul street sensor, seeded), or a constant.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..emulation.light import Daylight, Light, LightLike, as_light_source, constant_light
from ..emulation.registers import RegisterFile
from .codec import (
    MODES,
    MTREG_DEFAULT,
    POWER_DOWN,
    POWER_ON,
    RESET,
    TYPICAL_S,
    Mode,
    apply_mtreg_opcode,
    encode_raw,
    is_mtreg_opcode,
    lux_to_raw,
)

__all__ = ["BH1750Model", "Daylight", "Measured", "constant_light"]


@dataclass(frozen=True, slots=True)
class Measured:
    """One finished measurement: when, the count, the settings and the light's truth."""

    t: float
    raw: int
    mtreg: int
    resolution: str
    truth: Light


class BH1750Model(RegisterFile):
    """Device side of a BH1750 (implements :class:`drivers.emulation.i2c.I2CModel`).

    The chip has no registers: to the shared transfer walk (:class:`RegisterFile`) a write
    is one opcode and every read starts at the result's first byte.

    ``measure_time_s`` overrides the typical measurement times at MTreg 69 (by resolution:
    ``high``, ``high2``, ``low``). State (:attr:`powered`, :attr:`mode`, :attr:`mtreg`,
    :attr:`raw`, :attr:`measured`, :attr:`stats`) is public so tests and the simulator can
    look at it.
    """

    LAST_REGISTER = 0  # no register pointer: a read always starts at the result

    def __init__(self, source: LightLike | None = None, *, seed: int | None = 0,
                 measure_time_s: dict[str, float] | None = None, keep: int = 1000) -> None:
        self.source = as_light_source(source, seed)
        self.measure_time_s = {**TYPICAL_S, **(measure_time_s or {})}
        self.measured: deque[Measured] = deque(maxlen=keep)
        self.pointer = 0
        self.stats = {"transfers": 0, "commands": 0, "measurements": 0, "reads": 0,
                      "ignored": 0, "resets": 0}
        self._power_up()

    def _power_up(self) -> None:
        self.powered = False
        self.mode: Mode | None = None  # the measurement under way (None: idle)
        self.mtreg = MTREG_DEFAULT
        self.raw = 0
        self._start = 0.0  # when the measurement under way started
        self._mode_mtreg = MTREG_DEFAULT  # the MTreg it uses

    # -- the transfer's parts (RegisterFile walks them) ---------------------------------
    def _write_part(self, data: bytes, now: float) -> None:
        """A write is one opcode; an empty one is an address probe (acknowledged)."""
        if len(data) > 1:
            self.stats["ignored"] += 1
        elif data:
            self._write(0, data[0], now)

    def _read(self, reg: int, now: float) -> int:
        """Byte ``reg`` of a read: the result big-endian, then ``FF``."""
        self.stats["reads"] += reg == 0
        return (encode_raw(self.raw) + b"\xff")[min(reg, 2)]

    def power_cycle(self, now: float) -> None:
        """Supply cut and restored (brown-out): powered down, MTreg 69, result 0."""
        self._power_up()
        self.stats["resets"] += 1

    def duration(self, mode: Mode, mtreg: int) -> float:
        return self.measure_time_s[mode.resolution] * mtreg / MTREG_DEFAULT

    # -- internals ------------------------------------------------------------------------
    def _write(self, reg: int, op: int, now: float) -> None:
        """One opcode (the chip has no registers: ``reg`` is always 0)."""
        self.stats["commands"] += 1
        if is_mtreg_opcode(op):
            self.mtreg = apply_mtreg_opcode(self.mtreg, op)
            if self.mode is not None and self.mode.continuous:
                self._begin(self.mode, now)
        elif op in MODES:
            self.powered = True
            self._begin(MODES[op], now)
        elif op == POWER_ON:
            self.powered = True
        elif op == POWER_DOWN:
            self.powered = False
            self.mode = None
        elif op == RESET and self.powered:
            self.raw = 0
        else:
            self.stats["commands"] -= 1
            self.stats["ignored"] += 1  # unknown opcode, or reset while powered down

    def _begin(self, mode: Mode, now: float) -> None:
        self.mode, self._start, self._mode_mtreg = mode, now, self.mtreg

    def _update(self, now: float) -> None:
        """Finish what the elapsed time finished (the latest measurement counts)."""
        mode = self.mode
        if mode is None:
            return
        period = self.duration(mode, self._mode_mtreg)
        if now < self._start + period:
            return
        if not mode.continuous:
            self._finish(self._start + period, mode)
            self.mode = None
            self.powered = False
            return
        done = int((now - self._start) / period)
        end = self._start + done * period
        self._finish(end, mode)
        self._start = end  # the next one started when this one ended

    def _finish(self, t: float, mode: Mode) -> None:
        truth = self.source(t)
        raw = lux_to_raw(truth.lux, self._mode_mtreg, mode.resolution)
        if mode.resolution == "low":
            raw &= ~0x3
        self.raw = raw
        self.measured.append(Measured(t, raw, self._mode_mtreg, mode.resolution, truth))
        self.stats["measurements"] += 1
