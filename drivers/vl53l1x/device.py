"""A VL53L1X on an I2C bus, through smbus2: a distance ranger, or UM2600's two-zone counter.

    >>> from drivers.vl53l1x import VL53L1X
    >>> tof = VL53L1X(1, mode="counting")        # /dev/i2c-1, address 0x29
    >>> tof.on_samples = print                   # [ZoneSample(t, zone, distance_mm, status)]
    >>> tof.open()
    >>> readings = tof.poll()                    # one short step of I/O
    >>> tof.close()

On open, the ULD's sequence (ST UM2510): read the model id (0xEACC at 0x010F; another chip
is :class:`~drivers.i2cdev.WrongChip`), wait until FIRMWARE__SYSTEM_STATUS says booted,
sensor init (the default configuration block from 0x2D, one ranging, clear, stop, the VHV
settings), then the distance mode's registers, the timing budget's two words, the
inter-measurement period from the chip's oscillator calibration, the ROI size and centre,
and start ranging (timed mode). Each poll checks data ready (GPIO__TIO_HV_STATUS bit 0
against the interrupt polarity read once after init), reads the 17-byte result block and
clears the interrupt; in counting mode it writes the other zone's ROI centre *before* the
clear, so the next measurement is certain to use it (ST's example writes it after).

``mode="ranging"``: a reading ``{"d": metres}`` every ``read_interval_s``, the median of the
valid ranges since the previous one (status 0, or 6 for the first after a start); none when
there was none (``no_target``). ``mode="counting"``: the ROI alternates between two 8x16
zones (UM2600: centres 167 and 231), every measurement goes to :attr:`VL53L1X.on_samples`
as a :class:`~drivers.vl53l1x.codec.ZoneSample` (its distance None unless the status is one
ST's counting reference ranges with: 0, 4, 6, 7); the reading every ``read_interval_s`` is
the *farthest* trusted range of the interval, the floor or the doorway's background and
never a passer-by, so no height or position of a person leaves the node.

A chip that stops producing results (a brown-out resets it to its power-up registers and
stops ranging) is set up again after ``max(1 s, 10 periods)`` of silence (``stalls``).
NACKs and bus errors are :class:`~drivers.base.DeviceError`; ``gone_after`` in a row is
:class:`~drivers.base.DeviceGone`.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Literal, Unpack

from smbus2 import i2c_msg

from ..base import DeviceError, Reading
from ..i2cdev import IDLE_WAIT_S, BusOptions, PolledChip, WrongChip
from . import codec as c
from .codec import ZoneSample

__all__ = ["QUANTITIES", "VL53L1X", "ZoneSample"]

#: The value a reading carries, named as in docs/payload.md: distance in metres.
QUANTITIES = ("d",)
#: Between data-ready checks once a result is due.
CHECK_S = 0.004
#: FIRMWARE__SYSTEM_STATUS must say booted within this (datasheet: 1.2 ms).
BOOT_TIMEOUT_S = 0.1
#: The first ranging of sensor init must end within this (the ULD: 1000 x 1 ms).
INIT_TIMEOUT_S = 1.0
#: Samples kept for :meth:`VL53L1X.drain_samples` while nobody listens (30 s at 33 ms).
BUFFER = 1024

Mode = Literal["ranging", "counting"]
#: The counter each range-status failure goes to (others: ``other_status``).
FAILURE_COUNTERS = {c.SIGNAL_FAIL: "signal_fail", c.SIGMA_FAIL: "sigma_fail",
                    c.OUT_OF_BOUNDS: "out_of_bounds", c.WRAPAROUND: "wraparound"}


class VL53L1X(PolledChip):
    """Host driver for one ST VL53L1X (implements :class:`drivers.base.Device`).

    ``distance_mode`` "short" (1.3 m, better in sunlight) or "long" (4 m);
    ``timing_budget_ms`` 15 (short only), 20, 33, 50, 100, 200 or 500;
    ``inter_measurement_ms`` at least the budget (default: the budget when counting, else
    at least 100 ms); ``roi`` (width, height) and ``roi_centre`` for ranging;
    ``zone_centres`` and ``zone_roi`` for counting. ``bus``: a bus number or path (opened
    with ``bus_factory``) or an smbus2-like object the caller owns.
    """

    chip = "VL53L1X"
    QUANTITIES = QUANTITIES
    BAD_FRAMES = ()  # no checksum; range-status failures are counted by kind instead

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = c.ADDRESS,
        mode: Mode = "ranging",
        distance_mode: c.DistanceMode = "long",
        timing_budget_ms: int = 50,
        inter_measurement_ms: int | None = None,
        roi: tuple[int, int] = (16, 16),
        roi_centre: int = c.OPTICAL_CENTRE,
        zone_centres: tuple[int, int] = c.COUNTING_CENTRES,
        zone_roi: tuple[int, int] = c.COUNTING_ROI,
        read_interval_s: float = 0.5,
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        if not 0x08 <= address <= 0x77:
            raise ValueError(f"VL53L1X address must be 0x08..0x77, not {address!r}")
        if mode not in ("ranging", "counting"):
            raise ValueError(f"mode must be 'ranging' or 'counting', not {mode!r}")
        c.timing_budget_words(distance_mode, timing_budget_ms)  # checks both
        im = inter_measurement_ms
        if im is None:
            im = timing_budget_ms if mode == "counting" else max(timing_budget_ms, 100)
        if not timing_budget_ms <= im <= 10_000:
            raise ValueError(f"inter_measurement_ms must be {timing_budget_ms}..10000 (at "
                             f"least the timing budget), not {im!r}")
        if mode == "counting":
            if len(zone_centres) != 2 or zone_centres[0] == zone_centres[1]:
                raise ValueError("counting needs two different zone centres")
            for centre in zone_centres:
                c.check_roi(*zone_roi, centre)
        else:
            c.check_roi(*roi, roi_centre)
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "measurements", "samples", "no_target",
                                   "signal_fail", "sigma_fail", "out_of_bounds",
                                   "wraparound", "other_status", "stalls", "nacks",
                                   "bus_errors", "crc_errors"), **options)
        self.mode: Mode = mode
        self.distance_mode = distance_mode
        self.timing_budget_ms = timing_budget_ms
        self.inter_measurement_ms = im
        self.roi = tuple(zone_roi if mode == "counting" else roi)
        self.centres: tuple[int, ...] = (tuple(zone_centres) if mode == "counting"
                                          else (roi_centre,))
        #: Called with every batch of new zone samples (counting mode), on the sampling
        #: thread; exceptions propagate to the sampling loop, which logs and survives them.
        self.on_samples: Callable[[list[ZoneSample]], None] | None = None
        self._buffer: deque[ZoneSample] = deque(maxlen=BUFFER)
        self._buffer_lock = threading.Lock()
        self._active_high = True
        self._zone = 0  # the zone whose centre the measurement under way uses
        self._period_s = im / 1000.0
        self._stall_s = max(1.0, 10 * self._period_s)
        self._latency_s = self._period_s
        self._next_check = 0.0
        self._next_reading = 0.0
        self._last_result = 0.0
        self._window: list[int] = []  # trusted distances since the previous reading
        self.last: c.Result | None = None

    @property
    def counting(self) -> bool:
        return self.mode == "counting"

    # -- the sample stream ---------------------------------------------------------------
    def read_samples_within(self, seconds: float) -> None:
        """Hand a zone sample over at most ``seconds`` after it was measured: results are
        read as they come (one period apart), so only a longer wait is shortened."""
        self._latency_s = max(CHECK_S, min(self._latency_s, seconds))

    def drain_samples(self) -> list[ZoneSample]:
        """Every zone sample since the previous call while :attr:`on_samples` is unset (the
        oldest beyond :data:`BUFFER` are dropped); thread-safe."""
        with self._buffer_lock:
            out = list(self._buffer)
            self._buffer.clear()
        return out

    # -- register transfers ----------------------------------------------------------------
    def _read_reg(self, reg: int, n: int) -> bytes:
        """Write the register address, then read ``n`` bytes (a repeated start)."""
        w = i2c_msg.write(self.address, c.reg_bytes(reg))
        r = i2c_msg.read(self.address, n)
        self._need_bus().i2c_rdwr(w, r)
        return bytes(r)

    def _read_word(self, reg: int) -> int:
        return int.from_bytes(self._read_reg(reg, 2), "big")

    # -- lifecycle ---------------------------------------------------------------------------
    def _setup(self) -> None:
        """Check the chip, boot, sensor init, configure, start ranging."""
        with self._errors("open", gone_on_nack=True):
            model = self._read_word(c.IDENTIFICATION__MODEL_ID)
        if model != c.MODEL_ID:
            what = c.OTHER_MODELS.get(model, "an unknown chip")
            raise WrongChip(f"{self.name}: model id 0x{model:04x} is {what}, not a VL53L1X "
                            f"(0x{c.MODEL_ID:04X})")
        with self._errors("open"):
            self._wait_booted()
            self._sensor_init()
            self._configure()
            self._zone = 0
            self._write(c.write_byte(c.SYSTEM__MODE_START, c.START_RANGING))
        now = self._clock()
        self._last_result = now
        self._next_check = now + self.timing_budget_ms / 1000.0
        self._window.clear()

    def open(self) -> None:
        super().open()
        self._next_reading = self._clock() + self.read_interval_s

    def _wait_booted(self) -> None:
        deadline = self._clock() + BOOT_TIMEOUT_S
        while self._read_reg(c.FIRMWARE__SYSTEM_STATUS, 1)[0] != c.BOOTED:
            if self._clock() >= deadline:
                raise DeviceError(f"{self.name}: firmware did not boot within "
                                  f"{BOOT_TIMEOUT_S * 1000:.0f} ms")
            self._sleep(0.002)

    def _sensor_init(self) -> None:
        """The ULD's SensorInit: the default block, one ranging to settle the VHV, stop."""
        self._write(c.sensor_init_block())
        self._active_high = c.interrupt_active_high(
            self._read_reg(c.GPIO_HV_MUX__CTRL, 1)[0])
        self._write(c.write_byte(c.SYSTEM__MODE_START, c.START_RANGING))
        deadline = self._clock() + INIT_TIMEOUT_S
        while not self._data_ready():
            if self._clock() >= deadline:
                raise DeviceError(f"{self.name}: no ranging within {INIT_TIMEOUT_S:.0f} s of "
                                  "sensor init")
            self._sleep(0.005)
        self._write(c.write_byte(c.SYSTEM__INTERRUPT_CLEAR, c.CLEAR_INTERRUPT))
        self._write(c.write_byte(c.SYSTEM__MODE_START, c.STOP_RANGING))
        for reg, value in c.VHV_AFTER_INIT:
            self._write(c.write_byte(reg, value))

    def _configure(self) -> None:
        for data in c.distance_mode_writes(self.distance_mode):
            self._write(data)
        for data in c.timing_budget_writes(self.distance_mode, self.timing_budget_ms):
            self._write(data)
        osc = self._read_word(c.RESULT__OSC_CALIBRATE_VAL)
        if not osc & c.OSC_MASK:
            raise DeviceError(f"{self.name}: oscillator calibration reads 0")
        period = c.inter_measurement_register(self.inter_measurement_ms, osc)
        self._write(c.write_dword(c.SYSTEM__INTERMEASUREMENT_PERIOD, period))
        size = c.roi_size_byte(*self.roi)
        self._write(c.write_byte(c.ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY_SIZE, size))
        self._write(c.write_byte(c.ROI_CONFIG__USER_ROI_CENTRE_SPAD, self.centres[0]))

    def _data_ready(self) -> bool:
        return c.data_ready(self._read_reg(c.GPIO__TIO_HV_STATUS, 1)[0], self._active_high)

    def change_address(self, new_address: int) -> None:
        """Move the chip to ``new_address`` (the ULD's SetI2CAddress) and follow it; the chip
        is back at 0x29 after a power cycle or XSHUT, so a node with several needs XSHUT
        wiring to give each its address at every start."""
        data = c.address_write(new_address)
        with self._errors("change address"):
            self._write(data)
        self.address = new_address

    # -- sampling ----------------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Read the result when one is ready (else wait a little); a reading when due."""
        self._need_bus()
        now = self._clock()
        if now < self._next_check:
            self._sleep(min(self._next_check - now, IDLE_WAIT_S))
            return []
        with self._errors("data-ready check"):
            ready = self._data_ready()
        if not ready:
            now = self._clock()
            if now - self._last_result > self._stall_s:
                self.counters["stalls"] += 1  # reset by a brown-out, or stopped: set it up
                self._last_result = now
                self._setup()
                return []
            self._next_check = now + CHECK_S
            return self._due(now)
        zone = self._zone
        after = 1 - zone if self.counting else zone
        with self._errors("result read"):
            result = c.decode_result(self._read_reg(c.RESULT__RANGE_STATUS, c.RESULT_LEN))
            if self.counting:
                self._write(c.write_byte(c.ROI_CONFIG__USER_ROI_CENTRE_SPAD,
                                         self.centres[after]))
            self._write(c.write_byte(c.SYSTEM__INTERRUPT_CLEAR, c.CLEAR_INTERRUPT))
        # Only a cleared interrupt starts the next measurement, through the next zone: when the
        # clear fails, the same result is read (and taken) at the next poll, for this zone.
        self._zone = after
        t = self._clock()
        self._last_result = t
        self._next_check = t + max(CHECK_S, min(0.9 * self._period_s, self._latency_s))
        self._take(result, zone, t)
        return self._due(t)

    def _take(self, result: c.Result, zone: int, t: float) -> None:
        self.last = result
        self.counters["measurements"] += 1
        status = result.status
        if status not in c.TRUSTED:
            self.counters[FAILURE_COUNTERS.get(status, "other_status")] += 1
        else:
            self._window.append(result.distance_mm)
        if not self.counting:
            return
        mm = result.distance_mm if status in c.COUNTING_STATUSES else None
        sample = ZoneSample(t, zone, mm, status)
        self.counters["samples"] += 1
        if self.on_samples is not None:
            self.on_samples([sample])
            return
        with self._buffer_lock:
            self._buffer.append(sample)

    def _due(self, now: float) -> list[Reading]:
        """The reading of the interval when one is due: the median trusted range (ranging),
        the farthest (counting: the background, never a passer-by)."""
        if now < self._next_reading:
            return []
        self._next_reading += self.read_interval_s
        if self._next_reading <= now:
            self._next_reading = now + self.read_interval_s
        window, self._window = self._window, []
        if not window:
            self.counters["no_target"] += 1
            return []
        mm = max(window) if self.counting else statistics.median(window)
        self.counters["readings"] += 1
        return [Reading({"d": mm / 1000.0}, now, self._wall())]
