"""What the FIFO accelerometers (ADXL345, MPU-6050) share on the host side.

A fall detector needs *every* sample at the configured rate, while the report
needs one small summary per window. So :class:`FifoAccelerometer` does both:

* :meth:`FifoAccelerometer.poll` drains the chip's FIFO often enough that it
  never fills (every half FIFO, at most every 0.25 s) and timestamps the
  samples (the chips do not): one period apart, continuing the previous batch
  while that stays consistent with the read time, else spread back from the
  read time at the configured rate (after an overrun, a stall, or when the
  chip's clock drifts from the host's: counted as ``reanchored``);
* every drained batch goes to :attr:`FifoAccelerometer.on_samples` (called on
  the sampling thread) or, when that is not set, into a bounded buffer that
  :meth:`FifoAccelerometer.drain_samples` empties (thread-safe): that is the
  detector's stream, a list of :class:`Sample` ``(t, ax, ay, az)`` in g;
* once per ``read_interval_s`` a :class:`drivers.base.Reading` carries the
  latest sample (``ax``, ``ay``, ``az``) and the peak magnitude since the
  previous reading (``amag``), so telemetry stays a few numbers per window;
* a FIFO that overflowed anyway (a stalled bus, a busy CPU) is counted
  (``overruns``, in ``bad_frames`` so the window is flagged, and
  ``lost_samples``, estimated from the elapsed time).

The family's configuration, its quantities, :class:`Sample` and the capture walk are in
:mod:`drivers.families.accel`, which a device spec can import without loading smbus2.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Unpack

from ..base import Reading
from ..i2cdev import IDLE_WAIT_S, BusOptions, PolledChip
from .accel import QUANTITIES, Sample

#: Longest wait between FIFO reads, whatever the FIFO depth.
MAX_FIFO_INTERVAL_S = 0.25
#: Samples kept for :meth:`FifoAccelerometer.drain_samples` (at least this many seconds).
BUFFER_S = 30.0


def spread_back(t_read: float, n: int, rate_hz: float) -> list[float]:
    """Times of ``n`` samples read at ``t_read``: the last one then, the others one
    sample period apart before it (the chips do not timestamp their FIFO entries)."""
    period = 1.0 / rate_hz
    return [t_read - (n - 1 - i) * period for i in range(n)]


class FifoAccelerometer(PolledChip, ABC):
    """Poll loop of an accelerometer streaming into its FIFO (implements
    :class:`drivers.base.Device`).

    Subclasses set :attr:`chip`, :attr:`FIFO_DEPTH` (samples) and implement
    :meth:`_setup` (check the chip, configure it, start the FIFO), :meth:`_read_fifo`
    (``(samples in g, overflowed)``) and :meth:`_configured` (is the chip still
    measuring as set up? False after a brown-out reset it).
    """

    QUANTITIES: ClassVar[tuple[str, ...]] = QUANTITIES
    FIFO_DEPTH: ClassVar[int] = 32
    BAD_FRAMES = ("overruns", "bad_data")

    def __init__(self, bus: Any, *, address: int, rate_hz: float, range_g: int,
                 read_interval_s: float, quantities: tuple[str, ...],
                 **options: Unpack[BusOptions]) -> None:
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "samples", "overruns", "lost_samples",
                                   "bad_data", "reconfigured", "reanchored", "nacks", "bus_errors",
                                   "crc_errors"), **options)
        self.rate_hz = float(rate_hz)
        self.range_g = range_g
        #: Seconds between FIFO reads: half the FIFO's fill time, at most 0.25 s.
        self.fifo_interval_s = min(MAX_FIFO_INTERVAL_S, 0.5 * self.FIFO_DEPTH / self.rate_hz)
        #: Called with every batch of new samples, on the sampling thread (exceptions
        #: propagate to the sampling loop, which logs and survives them).
        self.on_samples: Callable[[list[Sample]], None] | None = None
        self._buffer: deque[Sample] = deque(maxlen=max(4096, int(BUFFER_S * self.rate_hz)))
        self._buffer_lock = threading.Lock()
        self._next_fifo = 0.0
        self._next_reading = 0.0
        self._last_read_t = 0.0
        self._last_sample_t = 0.0
        self._latest: Sample | None = None
        self._prev_t: float | None = None  # time of the last sample delivered
        self._peak = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> None:
        """Open the bus, check and configure the chip, start its FIFO; a failure closes."""
        super().open()
        now = self._clock()
        self._next_fifo = now + self.fifo_interval_s
        self._next_reading = now + self.read_interval_s
        self._last_read_t = self._last_sample_t = now
        self._latest, self._peak = None, 0.0
        self._prev_t = None

    # -- the detector's stream -----------------------------------------------------------
    def read_samples_within(self, seconds: float) -> None:
        """Read the FIFO at least every ``seconds`` (:class:`drivers.base.Device`): a sample
        waits in the chip until the next read, and a fall alarm has a latency budget."""
        self.fifo_interval_s = min(self.fifo_interval_s, seconds)

    def drain_samples(self) -> list[Sample]:
        """Every sample since the previous call (thread-safe; the oldest beyond
        ``max(4096, 30 s)`` are dropped if nobody drains). Empty while :attr:`on_samples`
        is set: then every sample goes to that callback instead."""
        with self._buffer_lock:
            out = list(self._buffer)
            self._buffer.clear()
        return out

    # -- sampling ------------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Read the FIFO when due (else wait a little); a Reading every read_interval_s."""
        self._need_bus()
        now = self._clock()
        if now < self._next_fifo:
            self._sleep(min(self._next_fifo - now, IDLE_WAIT_S))
            return []
        self._next_fifo = max(self._next_fifo + self.fifo_interval_s, now)
        with self._errors("FIFO read"):
            values, overflowed = self._read_fifo()
        t_read = self._clock()
        if overflowed:
            self.counters["overruns"] += 1
            due = round((t_read - self._last_read_t) * self.rate_hz)
            self.counters["lost_samples"] += max(1, due - len(values))
        self._last_read_t = t_read
        if values:
            times = self._times(t_read, len(values), continuous=not overflowed)
            self._deliver([Sample(t, *v) for t, v in zip(times, values, strict=True)])
        elif t_read - self._last_sample_t > max(1.0, 8.0 / self.rate_hz):
            self._check_configured(t_read)
        if t_read < self._next_reading or self._latest is None:
            return []
        self._next_reading = max(self._next_reading + self.read_interval_s, t_read)
        s, peak = self._latest, self._peak
        self._peak = 0.0
        self.counters["readings"] += 1
        vals = {"ax": s.ax, "ay": s.ay, "az": s.az, "amag": peak}
        return [Reading({q: vals[q] for q in self.quantities}, t_read, self._wall())]

    def _times(self, t_read: float, n: int, *, continuous: bool) -> list[float]:
        """Sample times: one period after the previous batch while that stays plausible (the
        last sample no later than the read, nor more than two periods before it), else spread
        back from the read time - after an overrun, a gap, or when the chip's clock drifts."""
        period = 1.0 / self.rate_hz
        if continuous and self._prev_t is not None:
            last = self._prev_t + n * period
            if t_read - 2 * period - 1e-3 <= last <= t_read + 1e-9:
                return [self._prev_t + (i + 1) * period for i in range(n)]
        self.counters["reanchored"] += 1
        return spread_back(t_read, n, self.rate_hz)

    def _deliver(self, batch: list[Sample]) -> None:
        self.counters["samples"] += len(batch)
        self._last_sample_t = self._prev_t = batch[-1].t
        self._latest = batch[-1]
        self._peak = max(self._peak, max(s.magnitude for s in batch))
        if self.on_samples is not None:  # handed over, not kept: 30 s of samples per
            self.on_samples(batch)       # chip would be 0.7 MiB of the daemon's memory
            return
        with self._buffer_lock:
            self._buffer.extend(batch)

    def _check_configured(self, now: float) -> None:
        """No sample for a while: a chip reset by a brown-out is back in standby or asleep,
        so configure it again (counted: ``reconfigured``)."""
        with self._errors("configuration check"):
            ok = self._configured()
        self._last_sample_t = now  # check again after the same quiet time
        if not ok:
            self.counters["reconfigured"] += 1
            self._setup()
            self._prev_t = None

    @abstractmethod
    def _setup(self) -> None:
        """Check the chip id, configure range, rate and FIFO, start measuring."""

    @abstractmethod
    def _read_fifo(self) -> tuple[list[tuple[float, float, float]], bool]:
        """The samples queued in the FIFO (in g, oldest first) and whether it overflowed."""

    @abstractmethod
    def _configured(self) -> bool:
        """Is the chip still measuring into its FIFO as set up?"""
