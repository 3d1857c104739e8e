"""A PIR motion sensor on one GPIO, through gpiozero's ``MotionSensor``: presence only.

    >>> from drivers.pir import PIR
    >>> pir = PIR(4, warmup_s=60)             # BCM GPIO4
    >>> pir.open()
    >>> readings = pir.poll()                 # [] or [Reading({"motion": 0.0 or 1.0}, ...)]
    >>> pir.close()

gpiozero's :class:`~gpiozero.MotionSensor` samples the pin ``sample_rate_hz`` times a second
on its own thread into a queue of ``queue_len`` values and calls the sensor active while
their mean exceeds ``threshold`` (0..1 exclusive; ``queue_len = 1``, its default, uses each
sample as it is; a longer queue steadies a twitchy sensor). ``active_high`` follows
gpiozero's pull semantics: True (an HC-SR501, an AM312: a push-pull output high on motion)
claims the pin with the pull-down, False (an open-collector output pulled low on motion)
with the pull-up, and then low is active.

Every ``read_interval_s`` a reading says whether there was motion since the previous one:
``motion`` 1 when the sensor was active at any moment in between (gpiozero's activation
callback latches it) or is active now, else 0. Averaged over a report, it is the share of
readings with motion. A PIR says nothing about how many people, nor where.

PIR modules need about a minute after power-up to settle, and trigger falsely meanwhile
(HC-SR501 datasheet: initialisation); the driver cannot know when the module was powered,
so it discards readings for ``warmup_s`` after every open (``warming_up``). GPIO pins do not
vanish like a USB adapter: :meth:`PIR.poll` never raises :class:`DeviceGone` once open; a
pin that cannot be claimed is a :class:`DeviceError` from :meth:`PIR.open`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import MotionSensor
from gpiozero.exc import GPIOZeroError

from ..base import DeviceError, DeviceGone, Reading

QUANTITIES = ("motion",)
#: Longest poll() sleeps while no reading is due.
IDLE_WAIT_S = 0.25


class PIR:
    """Host driver for one PIR motion sensor (implements :class:`drivers.base.Device`).

    ``pin`` is a BCM GPIO number (or any pin spec gpiozero takes); ``pin_factory`` is
    gpiozero's (None: ``Device.pin_factory``, e.g. a MockFactory in tests).
    """

    chip = "PIR"
    QUANTITIES = QUANTITIES

    def __init__(
        self,
        pin: Any = 4,
        *,
        active_high: bool = True,
        queue_len: int = 1,
        sample_rate_hz: float = 10.0,
        threshold: float = 0.5,
        warmup_s: float = 60.0,
        read_interval_s: float = 1.0,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if queue_len < 1 or sample_rate_hz <= 0 or not 0 < threshold < 1:
            raise ValueError("queue_len must be at least 1, sample_rate_hz positive and "
                             "threshold between 0 and 1 (exclusive, as gpiozero takes it)")
        if read_interval_s <= 0 or warmup_s < 0:
            raise ValueError("read_interval_s must be positive and warmup_s not negative")
        self.pin = pin
        self.active_high = active_high
        self.queue_len, self.sample_rate_hz, self.threshold = queue_len, sample_rate_hz, threshold
        self.warmup_s = warmup_s
        self.read_interval_s = read_interval_s
        self.pin_factory = pin_factory
        self.quantities = QUANTITIES
        self._clock, self._wall, self._sleep = clock, wall_clock, sleep
        self._sensor: MotionSensor | None = None
        self._lock = threading.Lock()
        self._activations = 0
        self._seen = 0
        self._opened_at = 0.0
        self._next_read = 0.0
        self.counters = {"readings": 0, "with_motion": 0, "activations": 0, "discarded": 0}

    @property
    def name(self) -> str:
        return f"{self.chip} on GPIO {self.pin}"

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Claim the pin and start gpiozero's sampling thread."""
        self.close()
        try:
            sensor = MotionSensor(self.pin, pull_up=not self.active_high,
                                  queue_len=self.queue_len, sample_rate=self.sample_rate_hz,
                                  threshold=self.threshold, partial=False,
                                  pin_factory=self.pin_factory)
        except (GPIOZeroError, OSError, ValueError) as exc:
            raise DeviceError(f"{self.name}: cannot claim the pin: {exc}") from exc
        with self._lock:
            self._activations = self._seen = 0
        sensor.when_motion = self._activated
        self._sensor = sensor
        self._opened_at = self._clock()
        self._next_read = self._opened_at + self.read_interval_s

    def close(self) -> None:
        """Stop sampling and release the pin. Safe to call twice."""
        sensor, self._sensor = self._sensor, None
        if sensor is not None:
            sensor.when_motion = None
            sensor.close()

    def _activated(self) -> None:
        """gpiozero's thread: the sensor went active."""
        with self._lock:
            self._activations += 1

    @property
    def warming_up(self) -> bool:
        """True for ``warmup_s`` after opening, and until gpiozero's queue is full."""
        s = self._sensor
        if s is None:
            return False
        return self._clock() - self._opened_at < self.warmup_s or not s._queue.full.is_set()

    def stats(self) -> dict[str, int]:
        with self._lock:
            activations = self._activations
        return {**self.counters, "activations": activations, "bad_frames": 0}

    # -- sampling -----------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        sensor = self._sensor
        if sensor is None:
            raise DeviceGone(f"{self.name} is not open")
        now = self._clock()
        if now < self._next_read:
            self._sleep(min(self._next_read - now, IDLE_WAIT_S))
            return []
        self._next_read += self.read_interval_s
        if self._next_read <= now:
            self._next_read = now + self.read_interval_s
        with self._lock:
            fresh = self._activations > self._seen
            self._seen = self._activations
        if self.warming_up:
            self.counters["discarded"] += 1  # false triggers while the module settles
            return []
        try:
            active = bool(sensor.motion_detected)
        except GPIOZeroError as exc:  # closed under us by another thread
            raise DeviceError(f"{self.name}: {exc}") from exc
        motion = fresh or active
        self.counters["readings"] += 1
        self.counters["with_motion"] += motion
        return [Reading({"motion": 1.0 if motion else 0.0}, self._clock(), self._wall())]
