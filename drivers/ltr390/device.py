"""An LTR390 on an I2C bus: illuminance and UV index through smbus2.

    >>> from drivers.ltr390 import LTR390
    >>> ltr = LTR390(1, read_interval_s=5)   # /dev/i2c-1, address 0x53
    >>> ltr.open()
    >>> readings = ltr.poll()          # one short step of I/O
    >>> ltr.close()

On open: check PART_ID (0xB2: part 0xB; on the ADXL345 accelerometer, also at 0x53, that
register is reserved), read MAIN_STATUS (clearing its power-on flag) and leave the chip in
standby.

The chip measures ambient light (ALS) or UV (UVS), one at a time, with one gain and one
resolution register for both; each reading therefore goes through the modes it needs in
turn: write the mode's resolution and rate, its gain, then MAIN_CTRL (enable, mode), wait
the integration time, poll MAIN_STATUS until its new-data bit is set, and read the mode's
3 data bytes. Then standby until the next reading. The default settings suit a street:
ALS at gain 1, 18 bits (100 ms, 0.6 lx steps, 157286 lx full scale), UVS at gain 18,
20 bits (400 ms, the datasheet's 2300 counts per UV index): 0.55 s per reading.
"""

from __future__ import annotations

from typing import Any, Unpack

from ..base import DeviceError
from ..i2cdev import BusOptions, SingleShotDevice
from .codec import (
    ADDRESSES,
    PART_ID,
    REG_ALS_DATA,
    REG_GAIN,
    REG_MAIN_CTRL,
    REG_MAIN_STATUS,
    REG_MEAS_RATE,
    REG_PART_ID,
    REG_UVS_DATA,
    Measurement,
    Status,
    als_to_lux,
    decode_count,
    full_scale,
    gain_code,
    integration_s,
    main_ctrl,
    meas_rate,
    uvs_to_uvi,
)

#: The values an LTR390 reading carries, named as in docs/payload.md.
QUANTITIES = ("lux", "uvi")
#: The mode that measures each quantity, in the order a reading measures them.
MODES = {"lux": "als", "uvi": "uvs"}

#: After the integration time: a margin, then MAIN_STATUS polls this far apart (a tenth
#: of the integration time, at least 5 ms), at most this many.
MARGIN_S = 0.005
STATUS_TRIES = 12


class LTR390(SingleShotDevice):
    """Host driver for one Lite-On LTR-390UV-01 on I2C (implements
    :class:`drivers.base.Device`).

    ``als_gain``/``uvs_gain`` are 1, 3, 6, 9 or 18 and ``als_resolution``/
    ``uvs_resolution`` 20, 19, 18, 17, 16 or 13 bits, per mode; ``window_factor`` (wfac,
    at least 1) makes up for a window over the sensor. ``bus``: a bus number or path
    (opened with ``bus_factory``, closed on :meth:`close`) or an smbus2-like object the
    caller owns. After ``gone_after`` measurements in a row that got no answer the driver
    raises :class:`DeviceGone`; a single failure is a :class:`DeviceError`.
    """

    chip = "LTR390"
    QUANTITIES = QUANTITIES
    BAD_FRAMES = ("bad_data",)  # data with bits set above the 20 a count has

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x53,
        read_interval_s: float = 2.0,
        als_gain: int = 1,
        als_resolution: int = 18,
        uvs_gain: int = 18,
        uvs_resolution: int = 20,
        window_factor: float = 1.0,
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        if address not in ADDRESSES:
            raise ValueError(f"the LTR390 answers at 0x53 only, not {address:#04x}")
        if window_factor < 1:
            raise ValueError("window_factor is at least 1 (1: no window)")
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "nacks", "bus_errors", "bad_data", "saturated",
                                   "not_ready", "resets"), **options)
        #: mode -> (gain, resolution in bits); the register values are checked here.
        self.settings = {"als": (als_gain, als_resolution), "uvs": (uvs_gain, uvs_resolution)}
        for gain, bits in self.settings.values():
            gain_code(gain)
            integration_s(bits)
        self.window_factor = window_factor
        self.modes = tuple(MODES[q] for q in QUANTITIES if q in self.quantities)
        self.part_id: int | None = None
        self.last: Measurement | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def _setup(self) -> None:
        """On open: check the part id, clear the power-on flag, standby."""
        self.part_id = self._check_chip_id(  # the high nibble; the low one is the revision
            REG_PART_ID, PART_ID, mask=0xF0,
            wrong=lambda pid: f"PART_ID 0x{pid:02x} is not an LTR390's (0x{PART_ID:02x}); "
                              "an ADXL345 also answers at 0x53")
        with self._errors("open"):
            self._bus.read_byte_data(self.address, REG_MAIN_STATUS)
            self._bus.write_byte_data(self.address, REG_MAIN_CTRL, main_ctrl(False, False))

    # -- sampling ----------------------------------------------------------------------
    def measure(self) -> Measurement:
        """One reading now: each mode it needs in turn (blocks 0.55 s at the defaults)."""
        self._need_bus()
        counts: dict[str, int] = {}
        with self._errors("measurement"):
            for mode in self.modes:
                counts[mode] = self._measure_mode(mode)
            self._bus.write_byte_data(self.address, REG_MAIN_CTRL, main_ctrl(False, False))
        wfac = self.window_factor
        als, uvs = counts.get("als"), counts.get("uvs")
        saturated = tuple(m for m, c in counts.items() if c >= full_scale(self.settings[m][1]))
        m = Measurement(
            lux=None if als is None else als_to_lux(als, *self.settings["als"], wfac),
            uvi=None if uvs is None else uvs_to_uvi(uvs, *self.settings["uvs"], wfac),
            als=als, uvs=uvs, saturated=saturated)
        self.counters["readings"] += 1
        self.counters["saturated"] += bool(saturated)
        self.last = m
        return m

    def _fault(self, measurement: Measurement) -> bool:
        """A reading with a saturated count (either mode) is marked ``fault``."""
        return bool(measurement.saturated)

    def _measure_mode(self, mode: str) -> int:
        """Configure and enable one mode, wait for its new data, read its count."""
        gain, bits = self.settings[mode]
        bus, a = self._bus, self.address
        bus.write_byte_data(a, REG_MEAS_RATE, meas_rate(bits))
        bus.write_byte_data(a, REG_GAIN, gain_code(gain))
        bus.write_byte_data(a, REG_MAIN_CTRL, main_ctrl(True, mode == "uvs"))
        t_int = integration_s(bits)
        started = self._clock()
        self._sleep(t_int + MARGIN_S)
        for _ in range(STATUS_TRIES):
            status = Status(bus.read_byte_data(a, REG_MAIN_STATUS))
            if status.power_on:
                self.counters["resets"] += 1
                raise DeviceError(f"{self.name}: the chip went through a power-up (supply "
                                  "dip?): its settings were lost, measuring again next time")
            if status.data_ready:
                break
            self._sleep(max(t_int / 10, MARGIN_S))
        else:
            self.counters["not_ready"] += 1
            waited = self._clock() - started
            raise DeviceError(f"{self.name}: no {mode.upper()} data {waited * 1000:.0f} ms "
                              f"after enabling it ({t_int * 1000:g} ms integration)")
        reg = REG_ALS_DATA if mode == "als" else REG_UVS_DATA
        data = bytes(bus.read_i2c_block_data(a, reg, 3))
        try:
            return decode_count(data)
        except ValueError as exc:
            self.counters["bad_data"] += 1
            raise DeviceError(f"{self.name}: {mode.upper()} {exc}") from exc
