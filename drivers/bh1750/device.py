"""A BH1750 on an I2C bus: illuminance through smbus2.

    >>> from drivers.bh1750 import BH1750
    >>> bh = BH1750(1, address=0x23, read_interval_s=5)   # /dev/i2c-1
    >>> bh.open()
    >>> readings = bh.poll()          # one short step of I/O
    >>> bh.close()

On open: power on, reset (clears a result left from before), write MTreg; in continuous
mode start measuring, otherwise power down. Each reading in one-time mode (the default):
write the one-time opcode, wait the maximum measurement time for the MTreg in force
(180 ms at 69, 663 ms at 254), read 2 bytes; the chip powers itself down until the next
one, and a chip that lost its supply in between is simply commanded again. In continuous
mode each reading reads the latest result, waiting after opening or an MTreg change until
a measurement with the new settings has ended.

``mtreg="auto"`` (the default) chooses MTreg for each measurement from the previous count
(:func:`drivers.bh1750.codec.auto_mtreg`): 254 in the dark (0.23 lx steps, 0.11 lx in
H-resolution mode 2), down to 31 in full sun (121557 lx full scale); a saturated count is
measured again at once at MTreg 31. A fixed MTreg (31..254) is used as given. A
saturated reading that remains is reported with ``fault`` set (the light was at least
that bright).
"""

from __future__ import annotations

from typing import Any, Literal, Unpack

from ..i2cdev import BusOptions, SingleShotDevice, check_address
from .codec import (
    ADDRESSES,
    MTREG_DEFAULT,
    MTREG_MIN,
    POWER_DOWN,
    POWER_ON,
    RESET,
    Measurement,
    auto_mtreg,
    check_mtreg,
    decode_measurement,
    measurement_time_s,
    mode_opcode,
    mtreg_opcodes,
)

#: The values a BH1750 reading carries, named as in docs/payload.md.
QUANTITIES = ("lux",)

#: Extra time after the datasheet's maximum measurement time.
MARGIN_S = 0.005


class BH1750(SingleShotDevice):
    """Host driver for one ROHM BH1750FVI on I2C (implements :class:`drivers.base.Device`).

    ``mode`` is ``"one_time"`` or ``"continuous"``; ``resolution`` ``"high"`` (1 lx
    nominal), ``"high2"`` (H-resolution mode 2: 0.5 lx, half the range) or ``"low"``
    (4 lx, 24 ms); ``mtreg`` 31..254 or ``"auto"``. ``bus``: a bus number or path (opened
    with ``bus_factory``, closed on :meth:`close`) or an smbus2-like object the caller
    owns. After ``gone_after`` measurements in a row that got no answer the driver raises
    :class:`DeviceGone`; a single failure is a :class:`DeviceError`.
    """

    chip = "BH1750"
    QUANTITIES = QUANTITIES
    BAD_FRAMES = ()  # no checksum: nothing the chip sends can be told to be corrupt
    #: The chip never NACKs a read for being busy (it returns the previous result): a
    #: NACKed read is a glitch on the bus, read once more.
    READ_RETRIES = 1

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x23,
        read_interval_s: float = 2.0,
        mode: Literal["one_time", "continuous"] = "one_time",
        resolution: Literal["high", "high2", "low"] = "high",
        mtreg: int | Literal["auto"] = "auto",
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        check_address(self.chip, address, ADDRESSES, "ADDR")
        if mode not in ("one_time", "continuous"):
            raise ValueError(f"mode must be 'one_time' or 'continuous', not {mode!r}")
        self._opcode = mode_opcode(resolution, mode == "continuous")  # checks resolution
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "nacks", "bus_errors", "saturated",
                                   "mtreg_changes"), **options)
        self.mode = mode
        self.resolution = resolution
        self.auto = mtreg == "auto"
        #: MTreg for the next measurement.
        self.mtreg = MTREG_DEFAULT if self.auto else check_mtreg(int(mtreg))
        self._chip_mtreg: int | None = None  # what the chip holds (None: not known)
        self._ready_at = 0.0  # continuous: when the result reflects the current settings
        self.last: Measurement | None = None

    @property
    def continuous(self) -> bool:
        return self.mode == "continuous"

    # -- lifecycle ---------------------------------------------------------------------
    def _setup(self) -> None:
        """On open: power on, clear the result, set MTreg; start measuring or power down."""
        with self._errors("open", gone_on_nack=True):
            self._op(POWER_ON)
            self._op(RESET)
            self._chip_mtreg = None
            self._write_mtreg()
            if self.continuous:
                self._start_continuous()
            else:
                self._op(POWER_DOWN)

    # -- sampling ----------------------------------------------------------------------
    def measure(self) -> Measurement:
        """One result now (blocks up to the measurement time, 0.7 s at the most)."""
        self._need_bus()
        with self._errors("measurement"):
            m = self._measure_once()
            if m.saturated and self.auto and m.mtreg > MTREG_MIN:
                # Too bright for this MTreg: measure again at once, least sensitive.
                self.mtreg = MTREG_MIN
                m = self._measure_once()
        self.counters["readings"] += 1
        if m.saturated:
            self.counters["saturated"] += 1
        if self.auto:
            self.mtreg = auto_mtreg(m.raw, m.mtreg)
        self.last = m
        return m

    def _fault(self, measurement: Measurement) -> bool:
        """A saturated reading is marked ``fault``: the light was at least that bright."""
        return measurement.saturated

    def _measure_once(self) -> Measurement:
        changed = self._chip_mtreg != self.mtreg
        if changed:
            self._write_mtreg()
        if not self.continuous:
            self._op(self._opcode)
            self._sleep(measurement_time_s(self.resolution, self.mtreg) + MARGIN_S)
        else:
            if changed:
                self._start_continuous()
            wait = self._ready_at - self._clock()
            if wait > 0:
                self._sleep(wait)
        return decode_measurement(self._read_retrying(2), self.mtreg, self.resolution)

    # -- I/O ---------------------------------------------------------------------------
    def _op(self, opcode: int) -> None:
        self._write(bytes([opcode]))

    def _write_mtreg(self) -> None:
        """Both halves; what the chip holds is unknown until both went through."""
        if self._chip_mtreg is not None:
            self.counters["mtreg_changes"] += 1
        self._chip_mtreg = None
        for op in mtreg_opcodes(self.mtreg):
            self._op(op)
        self._chip_mtreg = self.mtreg

    def _start_continuous(self) -> None:
        self._op(self._opcode)
        self._ready_at = (self._clock() + measurement_time_s(self.resolution, self.mtreg)
                          + MARGIN_S)
