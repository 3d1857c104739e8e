"""What the FIFO accelerometer models share (ADXL345, MPU-6050): a register file that
samples a motion source at the chip's output data rate.

At every transfer the model catches up with the clock
(:meth:`AccelerometerModel._update`): the samples due since the measurement run started
are taken, oldest first, except those the chip could no longer hold anyway - they are
counted as samples and the chip model says what losing them means for its FIFO. Each
sample's truth is kept in ``produced``. No numpy (nor anything importing it): the daemon
runs these models in simulations and in the memory benchmark.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .motion import MotionSource, RestSource
from .registers import RegisterFile


@dataclass(frozen=True, slots=True)
class Produced:
    """One sample the chip took: when, which source row, and the true acceleration."""

    t: float
    index: int
    g: tuple[float, float, float]


class AccelerometerModel(RegisterFile):
    """Device side of an accelerometer sampling into its registers and FIFO.

    Subclasses set :attr:`_t0` when a measurement run starts (None: not sampling) and
    implement :attr:`rate_hz`, :meth:`_room`, :meth:`_skip` and :meth:`_take`, which
    gets each sample's values from :meth:`_motion`.
    """

    def __init__(self, source: MotionSource | None, *, keep: int, registers: int,
                 stats: dict[str, int]) -> None:
        self.source = source or RestSource()
        self.produced: deque[Produced] = deque(maxlen=keep)
        self.stats = stats
        self.regs = bytearray(registers)
        self.pointer = 0
        self._t0: float | None = None  # when the current measurement run started
        self._taken = 0  # samples taken since _t0
        self._rows: Sequence[Sequence[float]] | None = None
        self._rows_rate = 0.0

    @property
    @abstractmethod
    def rate_hz(self) -> float:
        """The output data rate the registers select."""

    def _power_up(self, reset_values: Mapping[int, int], id_register: int,
                  chip_id: int) -> None:
        """Registers at their power-up values, the identity the model plays, not sampling."""
        self.regs[:] = bytes(len(self.regs))
        for reg, val in reset_values.items():
            self.regs[reg] = val
        self.regs[id_register] = chip_id
        self.pointer = 0
        self._t0 = None
        self._taken = 0

    def _update(self, now: float) -> None:
        if self._t0 is None:
            return
        rate = self.rate_hz
        due = math.floor((now - self._t0) * rate + 1e-9)
        new = due - self._taken
        if new <= 0:
            return
        keep = min(new, self._room())
        if new > keep:
            self._skip(new - keep, rate)
            self.stats["samples"] += new - keep
        for j in range(due - keep, due):
            self._take(self._t0 + (j + 1) / rate, rate)
        self._taken = due

    def _motion(self, t: float, index: int, rate: float) -> tuple[float, float, float]:
        """The motion source's row ``index`` (looping) at ``rate``, kept in ``produced``."""
        if self._rows is None or self._rows_rate != rate:
            self._rows, self._rows_rate = self.source.samples(rate), rate
        row = self._rows[index % len(self._rows)]
        g = (float(row[0]), float(row[1]), float(row[2]))
        self.produced.append(Produced(t, index, g))
        return g

    @abstractmethod
    def _room(self) -> int:
        """How many of the newest due samples can still be in the chip (older ones are
        overwritten before anyone could read them)."""

    @abstractmethod
    def _skip(self, n: int, rate: float) -> None:
        """``n`` samples were taken and overwritten unread: the FIFO overflowed."""

    @abstractmethod
    def _take(self, t: float, rate: float) -> None:
        """Take one sample at time ``t`` into the data registers and FIFO."""
