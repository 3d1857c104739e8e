"""The ADXL345 itself, emulated: its register file and FIFO over I2C, with no I/O.

Attach :class:`ADXL345Model` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> from drivers.emulation.motion import RestSource
    >>> bus = FakeBus({0x53: ADXL345Model(RestSource())})

Behaviour (ADXL345 datasheet rev. G):

* power-up: DEVID 0xE5, BW_RATE 0x0A (100 Hz), INT_SOURCE 0x02, everything else 0:
  **standby** (POWER_CTL measure bit clear), no samples, and the data registers
  read zeros until 0x08 is written to POWER_CTL (0x2D);
* a write's first byte is the register address, the rest go to consecutive
  registers; reads auto-increment; read-only registers ignore writes;
* measuring, a sample is taken every 1/rate s from the start of measurement and
  the motion source gives its value (sample ``k`` is the source's row ``k``,
  looping; a new rate starts it again), quantized and saturated as DATA_FORMAT
  says at that moment;
* bypass mode: the data registers hold the latest sample. FIFO modes: 32
  entries; the data registers show the oldest; any read that touches 0x32-0x37
  pops one entry (so a sample must be a 6-byte burst); stream mode drops the
  oldest when full, FIFO mode stops; either sets INT_SOURCE overrun (bit 0),
  cleared by the next data read; a FIFO_CTL write that changes the mode, or
  bypass, empties the FIFO;
* INT_SOURCE: DATA_READY while data is unread, watermark while the entries reach
  the FIFO_CTL samples field (so 0x02 at power-up), overrun as above;
* :meth:`ADXL345Model.power_cycle` (a brown-out) restores the power-up state.

Trigger mode, tap/activity/free-fall detection, self-test and offsets are not
modelled. ``produced`` keeps the truth of every sample (time, source row, g).
No numpy (nor anything importing it): the daemon runs this model in simulations and
in the memory benchmark.
"""

from __future__ import annotations

from collections import deque

from ..emulation.accel import AccelerometerModel
from ..emulation.motion import MotionSource
from .codec import (
    DATA_LEN,
    DEVID,
    ENTRIES_MASK,
    FIFO_BYPASS,
    FIFO_DEPTH,
    FIFO_FIFO,
    INT_DATA_READY,
    INT_OVERRUN,
    INT_WATERMARK,
    POWER_MEASURE,
    POWER_SLEEP,
    RATES,
    READ_ONLY,
    REG_BW_RATE,
    REG_DATA,
    REG_DATA_FORMAT,
    REG_DEVID,
    REG_FIFO_CTL,
    REG_FIFO_STATUS,
    REG_INT_SOURCE,
    REG_POWER_CTL,
    RESET_VALUES,
    counts_for,
    encode_xyz,
)

ZEROS = bytes(DATA_LEN)


class ADXL345Model(AccelerometerModel):
    """Device side of an ADXL345 (implements :class:`drivers.emulation.i2c.I2CModel`).

    ``source``: a :class:`drivers.emulation.motion.MotionSource` (default: at rest).
    ``devid`` can be set to play another chip at the address. State (:attr:`regs`,
    :attr:`fifo`, :attr:`produced`, :attr:`stats`) is public for tests and the simulator.
    """

    def __init__(self, source: MotionSource | None = None, *, devid: int = DEVID,
                 keep: int = 20000) -> None:
        super().__init__(source, keep=keep, registers=64,
                         stats={"transfers": 0, "samples": 0, "overruns": 0, "pops": 0,
                                "ignored_writes": 0, "resets": 0})
        self.devid = devid
        self.fifo: deque[bytes] = deque()
        self._latest = ZEROS
        self._unread = False
        self._overrun = False
        self._index = 0  # source row of the next sample (continues across runs)
        self._defaults()

    # -- RegisterFile ----------------------------------------------------------------------
    def _read_part(self, n: int, now: float) -> bytes:
        """Any read that touches the data registers pops a FIFO entry."""
        start = self.pointer
        block = super()._read_part(n, now)
        if start < REG_DATA + DATA_LEN and start + n > REG_DATA:
            self._pop()
        return block

    # -- power -----------------------------------------------------------------------------
    def power_cycle(self, now: float) -> None:
        """Supply cut and restored: power-up state (standby, empty FIFO)."""
        self._defaults()
        self.stats["resets"] += 1

    @property
    def measuring(self) -> bool:
        p = self.regs[REG_POWER_CTL]
        return bool(p & POWER_MEASURE) and not p & POWER_SLEEP

    @property
    def rate_hz(self) -> float:
        return RATES[self.regs[REG_BW_RATE] & 0x0F]

    @property
    def fifo_mode(self) -> int:
        return self.regs[REG_FIFO_CTL] >> 6

    # -- internals -------------------------------------------------------------------------
    def _defaults(self) -> None:
        self._power_up(RESET_VALUES, REG_DEVID, self.devid)
        self.fifo.clear()
        self._latest = ZEROS
        self._unread = self._overrun = False

    def _read(self, reg: int, now: float) -> int:
        if reg >= len(self.regs):
            return 0x00
        if REG_DATA <= reg < REG_DATA + DATA_LEN:
            if not self.measuring and not self.fifo:
                return 0x00  # standby: nothing measured
            data = self.fifo[0] if self.fifo else self._latest
            return data[reg - REG_DATA]
        if reg == REG_FIFO_STATUS:
            return min(len(self.fifo), ENTRIES_MASK)
        if reg == REG_INT_SOURCE:
            return self._int_source()
        return self.regs[reg]

    def _int_source(self) -> int:
        v = INT_DATA_READY if (self.fifo or self._unread) else 0
        if len(self.fifo) >= (self.regs[REG_FIFO_CTL] & 0x1F):
            v |= INT_WATERMARK
        return v | (INT_OVERRUN if self._overrun else 0)

    def _pop(self) -> None:
        self.stats["pops"] += 1
        if self.fifo_mode != FIFO_BYPASS and self.fifo:
            self._latest = self.fifo.popleft()
        self._unread = bool(self.fifo)
        self._overrun = False

    def _write(self, reg: int, val: int, now: float) -> None:
        if reg >= len(self.regs) or reg in READ_ONLY:
            self.stats["ignored_writes"] += 1
            return
        was_measuring, old_rate = self.measuring, self.rate_hz
        if reg == REG_FIFO_CTL:
            if (val >> 6) != self.fifo_mode or (val >> 6) == FIFO_BYPASS:
                self.fifo.clear()
                self._overrun = False
        self.regs[reg] = val
        if self.measuring and (not was_measuring or self.rate_hz != old_rate):
            self._t0, self._taken = now, 0  # a new run: sampling restarts from now
        if self.rate_hz != old_rate:
            self._index = 0  # a new rate replays the source from its start
        elif not self.measuring:
            self._t0 = None

    def _room(self) -> int:
        return FIFO_DEPTH + 1  # the FIFO and the data registers

    def _skip(self, n: int, rate: float) -> None:
        if self.fifo_mode != FIFO_BYPASS:
            self._overrun = True
            self.stats["overruns"] += n
        self._index += n

    def _take(self, t: float, rate: float) -> None:
        g = self._motion(t, self._index, rate)
        self._index += 1
        self.stats["samples"] += 1
        fmt = self.regs[REG_DATA_FORMAT]
        data = encode_xyz(tuple(counts_for(v, fmt) for v in g), fmt)  # type: ignore[arg-type]
        mode = self.fifo_mode
        if mode == FIFO_BYPASS:
            if self._unread:
                self._overrun = True
            self._latest, self._unread = data, True
            return
        if len(self.fifo) >= FIFO_DEPTH:
            self._overrun = True
            self.stats["overruns"] += 1
            if mode == FIFO_FIFO:
                return  # FIFO mode: full means stop collecting
            self.fifo.popleft()
        self.fifo.append(data)
        self._unread = True
