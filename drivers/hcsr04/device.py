"""An HC-SR04 ultrasonic rangefinder on two GPIO pins, through gpiozero.

    >>> from drivers.hcsr04 import HCSR04
    >>> sonar = HCSR04(trigger=23, echo=24, max_distance_m=4.0)   # BCM numbers
    >>> sonar.open()
    >>> readings = sonar.poll()        # [] or [Reading({"d": 1.23}, ...)], metres
    >>> sonar.close()

gpiozero's :class:`~gpiozero.DistanceSensor` pings on a background thread every 60 ms
and keeps the median of the last ``queue_len`` echoes; :meth:`HCSR04.poll` reports that
median every ``read_interval_s``. gpiozero clamps a distance to ``max_distance``, and the
module's own timeout (a ~38 ms echo when nothing is in range) lands there too, so a
median at ``max_distance_m`` means "no target": no reading, ``no_target`` counter. When
no echo came at all since the last reading (echo pin unwired, sensor unpowered: gpiozero
warns ``DistanceSensorNoEcho`` and ignores the sample) there is no reading either, and
``no_echo`` counts the missed pings.

GPIO pins do not vanish like a USB adapter, so this driver never raises
:class:`DeviceGone` from :meth:`poll`; a pin that cannot be claimed on :meth:`open`
(in use, no GPIO on this machine) is a :class:`DeviceError`.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from gpiozero import DistanceSensor
from gpiozero.exc import GPIOZeroError, PWMSoftwareFallback

from ..base import DeviceError, DeviceGone, Reading

QUANTITIES = ("d",)
#: Longest poll() sleeps while no reading is due.
IDLE_WAIT_S = 0.25
#: gpiozero's DistanceSensor pings every 60 ms (its sample_wait).
SAMPLE_WAIT_S = 0.06


class _CountingDistanceSensor(DistanceSensor):
    """A DistanceSensor that counts pings with and without an echo."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.echoes = 0
        self.missed = 0
        self._count_lock = threading.Lock()
        super().__init__(*args, **kw)

    def _read(self) -> float | None:
        try:
            value = super()._read()
        except AttributeError:
            if getattr(self, "_trigger", None) is None:
                return None  # closed while gpiozero's queue thread was still pinging
            raise
        with self._count_lock:
            if value is None:
                self.missed += 1
            else:
                self.echoes += 1
        return value


class HCSR04:
    """Host driver for one HC-SR04 (or HC-SR04P, JSN-SR04T in mode 1) (implements Device).

    ``trigger`` and ``echo`` are BCM GPIO numbers (or any pin spec gpiozero takes).
    ``pin_factory`` is gpiozero's (None: ``Device.pin_factory``, e.g. a MockFactory in
    tests). The echo pin of a 5 V module needs a voltage divider: see docs/drivers.md.
    """

    chip = "HC-SR04"
    QUANTITIES = QUANTITIES

    def __init__(
        self,
        trigger: Any = 23,
        echo: Any = 24,
        *,
        max_distance_m: float = 4.0,
        read_interval_s: float = 0.2,
        queue_len: int = 5,
        pin_factory: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_distance_m <= 0 or read_interval_s <= 0 or queue_len < 1:
            raise ValueError("max_distance_m and read_interval_s must be positive, "
                             "queue_len at least 1")
        self.trigger, self.echo = trigger, echo
        self.max_distance_m = float(max_distance_m)
        self.read_interval_s = read_interval_s
        self.queue_len = queue_len
        self.pin_factory = pin_factory
        self.quantities = QUANTITIES
        self._clock, self._wall, self._sleep = clock, wall_clock, sleep
        self._sensor: _CountingDistanceSensor | None = None
        self._next_read = 0.0
        self._echoes_seen = 0
        self._missed_seen = 0
        self.counters = {"readings": 0, "no_target": 0, "no_echo": 0, "stale": 0}

    @property
    def name(self) -> str:
        return f"{self.chip} on trigger {self.trigger}/echo {self.echo}"

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Claim the pins and start gpiozero's sampling thread."""
        self.close()
        try:
            with warnings.catch_warnings():  # "use the pigpio pin factory": noise here
                warnings.simplefilter("ignore", PWMSoftwareFallback)
                self._sensor = _CountingDistanceSensor(
                    echo=self.echo, trigger=self.trigger, queue_len=self.queue_len,
                    max_distance=self.max_distance_m, partial=False,
                    pin_factory=self.pin_factory)
        except (GPIOZeroError, OSError, ValueError) as exc:
            raise DeviceError(f"{self.name}: cannot claim the pins: {exc}") from exc
        self._echoes_seen = self._missed_seen = 0
        self._next_read = self._clock()

    def close(self) -> None:
        """Stop sampling and release both pins. Safe to call twice."""
        sensor, self._sensor = self._sensor, None
        if sensor is not None:
            sensor.close()

    @property
    def warming_up(self) -> bool:
        """True until gpiozero has ``queue_len`` echoes to take the median of."""
        s = self._sensor
        return s is not None and not s._queue.full.is_set()

    def stats(self) -> dict[str, int]:
        return {**self.counters, "bad_frames": 0}

    # -- sampling -----------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        sensor = self._sensor
        if sensor is None:
            raise DeviceGone(f"{self.name} is not open")
        now = self._clock()
        if now < self._next_read or self.warming_up:
            wait = self._next_read - now if now < self._next_read else SAMPLE_WAIT_S
            self._sleep(min(wait, IDLE_WAIT_S))
            return []
        self._next_read += self.read_interval_s
        if self._next_read <= now:
            self._next_read = now + self.read_interval_s
        with sensor._count_lock:
            echoes, missed = sensor.echoes, sensor.missed
        new_echoes = echoes - self._echoes_seen
        self.counters["no_echo"] += missed - self._missed_seen
        self._echoes_seen, self._missed_seen = echoes, missed
        if not new_echoes:
            self.counters["stale"] += 1  # no echo since the last reading
            return []
        d = sensor.distance
        if d >= self.max_distance_m * 0.999:
            self.counters["no_target"] += 1
            return []
        self.counters["readings"] += 1
        return [Reading({"d": float(d)}, self._clock(), self._wall())]
