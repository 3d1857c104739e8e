"""The BME280 itself, emulated: the chip's register file over I2C, with no I/O.

Attach :class:`BME280Model` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> from drivers.emulation.climate import DiurnalClimate
    >>> bus = FakeBus({0x76: BME280Model(DiurnalClimate(seed=1))})

Behaviour (sensor-protocols.md section 4b, Bosch BME280 datasheet):

* power-up defaults: chip id 0x60 at 0xD0, the trimming parameters of the
  reference example at 0x88..0xA1 and 0xE1..0xE7, ctrl_hum/ctrl_meas/config 0
  (sleep mode, every measurement skipped), data registers at their reset
  values (``80 00 00 80 00 00 80 00``);
* register reads auto-increment; writes are (register, value) pairs; a lone
  register byte sets the read pointer; read-only registers ignore writes;
* **ctrl_hum (0xF2) takes effect only at the next write to ctrl_meas (0xF4)**:
  a host that writes 0xF2 after 0xF4 gets its humidity skipped (0x8000) until
  it writes 0xF4 again;
* forced mode: a write of mode 01/10 to 0xF4 starts one conversion; status bit 3
  (measuring) is set for the typical conversion time, the data registers are
  updated at its end (until then they keep the old values) and the mode falls
  back to sleep; normal mode (11) converts every conversion time + t_sb; config
  writes are ignored in normal mode;
* reset: 0xB6 to 0xE0 restores the power-up state; for 2 ms afterwards (the
  start-up time, also after :meth:`BME280Model.power_cycle`) status bit 0
  (im_update) is set and the calibration registers read 0x00 - an assumption:
  the datasheet only says the NVM copy is in progress, and a driver must wait;
* raw ADC values are computed from a physical source by *inverting* the
  compensation (bisection over the ADC code), with the resolution the
  oversampling gives (16 bits at 1x ... 20 bits at 16x for T and P; the IIR
  filter is not modelled), so a driver reads back the source's values within
  resolution.

The climate sources (:class:`drivers.emulation.climate.DiurnalClimate`...) are
shared with the SHT3x emulator.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..emulation.climate import Climate, ClimateLike, as_climate_source
from ..emulation.registers import RegisterFile
from .codec import (
    CALIB_H_LEN,
    CALIB_TP_LEN,
    CHIP_ID,
    OVERSAMPLING,
    REFERENCE_CALIBRATION,
    REG_CALIB_H,
    REG_CALIB_TP,
    REG_CHIP_ID,
    REG_CONFIG,
    REG_CTRL_HUM,
    REG_CTRL_MEAS,
    REG_DATA,
    REG_RESET,
    REG_STATUS,
    RESET_DATA,
    RESET_WORD,
    SKIPPED_H,
    SKIPPED_PT,
    STANDBY_S,
    STATUS_IM_UPDATE,
    STATUS_MEASURING,
    Calibration,
    Measurement,
    Raw,
    compensate,
    compensate_humidity,
    compensate_pressure,
    compensate_temperature,
    measurement_time_s,
)

STARTUP_S = 0.002  # datasheet: start-up time after power-on or reset


# -- inverting the compensation ---------------------------------------------------------------
def _closest(f: Callable[[int], float], n: int, target: float) -> int:
    """The k in [0, n) whose f(k) is closest to target, for a monotonic f (bisection)."""
    lo, hi = 0, n - 1
    rising = f(hi) >= f(lo)
    while lo < hi:
        mid = (lo + hi) // 2
        if (f(mid) < target) == rising:
            lo = mid + 1
        else:
            hi = mid
    best = min((k for k in (lo - 1, lo, lo + 1) if 0 <= k < n), key=lambda k: abs(f(k) - target))
    return best


def adc_bits(samples: int) -> int:
    """Resolution of a T or P conversion: 16 bits at 1x, one more per doubling, 20 at 16x."""
    return 16 + min(int(math.log2(samples)), 4)


def raw_for(truth: Climate, cal: Calibration, osrs: tuple[int, int, int]) -> Raw:
    """The ADC values a chip with calibration ``cal`` reads for this air (the compensation,
    inverted), at the resolution the oversampling counts (T, P, H) give; 0 = skipped."""
    os_t, os_p, os_h = osrs
    # t_fine places pressure and humidity, so it is found even when temperature is skipped
    # (its register then reads "skipped", and a host cannot compensate P or H either).
    shift_t = 20 - adc_bits(os_t or 1)
    k_t = _closest(lambda k: compensate_temperature(k << shift_t, cal)[1] / 5120.0,
                   1 << (20 - shift_t), truth.temp)
    adc_t = k_t << shift_t
    t_fine = compensate_temperature(adc_t, cal)[1]
    adc_p = SKIPPED_PT
    if os_p:
        shift_p = 20 - adc_bits(os_p)

        def pa(k: int) -> float:
            p = compensate_pressure(k << shift_p, cal, t_fine)
            return math.nan if p is None else p / 256.0

        adc_p = _closest(pa, 1 << (20 - shift_p), truth.pressure * 100.0) << shift_p
    adc_h = SKIPPED_H
    if os_h:
        adc_h = _closest(lambda k: compensate_humidity(k, cal, t_fine) / 1024.0, 1 << 16,
                         truth.rh)
    return Raw(adc_p, adc_t if os_t else SKIPPED_PT, adc_h)


# -- the chip -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Converted:
    """One conversion: when it ended, the air's truth, its ADC values and their compensation."""

    t: float
    truth: Climate
    raw: Raw
    expected: Measurement
    osrs: tuple[int, int, int]  # oversampling counts T, P, H actually used (0 = skipped)
    mode: str


class BME280Model(RegisterFile):
    """Device side of a BME280 (implements :class:`drivers.emulation.i2c.I2CModel`).

    ``chip_id`` can be set to 0x58 to play a BMP280 at the same address.
    ``powered_at``: the time power came on (None: long before the first transfer).
    State (:attr:`regs`, :attr:`osrs_h_active`, :attr:`converted`, :attr:`stats`)
    is public so tests and the simulator can look at it.
    """

    def __init__(
        self,
        source: ClimateLike | None = None,
        *,
        seed: int | None = 0,
        calibration: Calibration = REFERENCE_CALIBRATION,
        chip_id: int = CHIP_ID,
        powered_at: float | None = None,
        keep: int = 1000,
    ) -> None:
        self.source = as_climate_source(source, seed)
        self.calibration = calibration
        self.chip_id = chip_id
        self.converted: deque[Converted] = deque(maxlen=keep)
        self.stats = {"transfers": 0, "reads": 0, "writes": 0, "conversions": 0, "resets": 0,
                      "ignored_writes": 0}
        self.regs = bytearray(256)
        self.pointer = 0
        self.osrs_h_active = 0
        self._forced: tuple[float, float, tuple[int, int, int]] | None = None  # start, end, osrs
        self._normal: tuple[float, tuple[int, int, int]] | None = None  # start, osrs
        self._normal_done = 0
        self._nvm_until = float("-inf") if powered_at is None else powered_at + STARTUP_S
        self._defaults()

    # -- RegisterFile -----------------------------------------------------------------------
    def _write_part(self, data: bytes, now: float) -> None:
        """(register, value) pairs; a lone register byte at the end sets the read pointer."""
        for k in range(0, len(data) - 1, 2):
            self._write(data[k], data[k + 1], now)
        if len(data) % 2:
            self.pointer = data[-1]

    def _read_part(self, n: int, now: float) -> bytes:
        self.stats["reads"] += 1
        return super()._read_part(n, now)

    # -- power --------------------------------------------------------------------------------
    def power_cycle(self, now: float) -> None:
        """Supply cut and restored: power-up defaults, NVM copy for 2 ms."""
        self._defaults()
        self._nvm_until = now + STARTUP_S
        self.stats["resets"] += 1

    @property
    def mode(self) -> str:
        return ("sleep", "forced", "forced", "normal")[self.regs[REG_CTRL_MEAS] & 3]

    def measuring(self, now: float) -> bool:
        self._update(now)
        if self._forced is not None:
            return now < self._forced[1]
        if self._normal is not None:
            start, osrs = self._normal
            t_meas = measurement_time_s(*osrs, typical=True)
            return (now - start) % (t_meas + self._standby()) < t_meas
        return False

    # -- internals --------------------------------------------------------------------------------
    def _defaults(self) -> None:
        self.regs[:] = bytes(256)
        self.regs[REG_CHIP_ID] = self.chip_id
        tp, h = self.calibration.to_registers()
        self.regs[REG_CALIB_TP:REG_CALIB_TP + CALIB_TP_LEN] = tp
        self.regs[REG_CALIB_H:REG_CALIB_H + CALIB_H_LEN] = h
        self.regs[REG_DATA:REG_DATA + len(RESET_DATA)] = RESET_DATA
        self.pointer = 0
        self.osrs_h_active = 0
        self._forced = None
        self._normal = None
        self._normal_done = 0

    def _standby(self) -> float:
        return STANDBY_S[self.regs[REG_CONFIG] >> 5]

    def _osrs(self) -> tuple[int, int, int]:
        meas = self.regs[REG_CTRL_MEAS]
        return (OVERSAMPLING[meas >> 5], OVERSAMPLING[(meas >> 2) & 7],
                OVERSAMPLING[self.osrs_h_active])

    def _read(self, reg: int, now: float) -> int:
        if reg > 0xFF:
            return 0x00
        nvm_busy = now < self._nvm_until
        if reg == REG_STATUS:
            return (STATUS_MEASURING if self.measuring(now) else 0) | (
                STATUS_IM_UPDATE if nvm_busy else 0)
        if nvm_busy and (REG_CALIB_TP <= reg < REG_CALIB_TP + CALIB_TP_LEN
                         or REG_CALIB_H <= reg < REG_CALIB_H + CALIB_H_LEN):
            return 0x00
        if reg == REG_RESET:
            return 0x00  # reads as zero
        return self.regs[reg]

    def _write(self, reg: int, val: int, now: float) -> None:
        self.stats["writes"] += 1
        self.pointer = reg
        if reg == REG_RESET:
            if val == RESET_WORD:
                self.power_cycle(now)
            return
        if reg == REG_CTRL_HUM:
            self.regs[reg] = val & 0x07  # stored now, used from the next ctrl_meas write
            return
        if reg == REG_CONFIG:
            if self._normal is not None:
                self.stats["ignored_writes"] += 1  # "writes in normal mode may be ignored"
            else:
                self.regs[reg] = val & 0xFD  # bit 1 does not exist
            return
        if reg != REG_CTRL_MEAS:
            self.stats["ignored_writes"] += 1  # read-only
            return
        # ctrl_meas: the moment ctrl_hum takes effect (the chip's documented quirk).
        self.osrs_h_active = self.regs[REG_CTRL_HUM] & 0x07
        self._forced = None  # a conversion still running is abandoned
        self.regs[reg] = val
        mode = val & 3
        self._normal = None
        if mode in (1, 2):
            osrs = self._osrs()
            self._forced = (now, now + measurement_time_s(*osrs, typical=True), osrs)
        elif mode == 3:
            self._normal = (now, self._osrs())
            self._normal_done = 0

    def _update(self, now: float) -> None:
        if self._forced is not None:
            self._finish_forced(now)
        if self._normal is not None:
            start, osrs = self._normal
            t_meas = measurement_time_s(*osrs, typical=True)
            period = t_meas + self._standby()
            if now >= start + t_meas:
                done = math.floor((now - start - t_meas) / period) + 1
                if done > self._normal_done:
                    self._normal_done = done
                    self._convert(start + (done - 1) * period + t_meas, osrs, "normal")

    def _finish_forced(self, now: float) -> None:
        assert self._forced is not None
        _, end, osrs = self._forced
        if now < end:
            return
        self._forced = None
        self._convert(end, osrs, "forced")
        self.regs[REG_CTRL_MEAS] &= 0xFC  # back to sleep

    def _convert(self, t: float, osrs: tuple[int, int, int], mode: str) -> None:
        truth = self.source(t)
        raw = raw_for(truth, self.calibration, osrs)
        self.regs[REG_DATA:REG_DATA + 8] = raw.to_bytes()
        self.converted.append(Converted(t, truth, raw, compensate(raw, self.calibration), osrs,
                                        mode))
        self.stats["conversions"] += 1
