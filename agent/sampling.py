"""One supervised sampling loop per sensor, and the sensor's health.

A loop never dies of its sensor: a vanished port is re-opened with backoff, a
misbehaving device is counted and retried, and even an unexpected exception in
a driver is logged and survived. Each iteration beats the watchdog, so systemd
restarts the daemon only when a loop is truly stuck.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from drivers.base import Device, DeviceError, DeviceGone

from .aggregate import Aggregator, Quality

log = logging.getLogger("citynode.sampling")


class Health(StrEnum):
    OK = "ok"
    WARMING_UP = "warming_up"
    STALE = "stale"
    ERRORS = "errors"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, initial * 2**attempt)].

    Full jitter spreads a fleet's retries evenly, so 50,000 nodes that lost the
    same broker or power feed do not come back in lock-step.
    """
    return rng.uniform(0, min(cap, initial * 2 ** min(attempt, 30)))


class SensorLoop(threading.Thread):
    """Drives one :class:`drivers.base.Device` on its own thread."""

    def __init__(
        self,
        name: str,
        device: Device,
        aggregator: Aggregator,
        *,
        stale_after_s: float = 60.0,
        reopen_initial_s: float = 0.5,
        reopen_max_s: float = 30.0,
        beat: Callable[[], None] = lambda: None,
        on_health: Callable[[str, Health, Health, str], None] = lambda *a: None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name=f"sensor-{name}", daemon=True)
        self.sensor = name
        self.device = device
        self.aggregator = aggregator
        self.stale_after_s = stale_after_s
        self.reopen_initial_s = reopen_initial_s
        self.reopen_max_s = reopen_max_s
        self._beat = beat
        self._on_health = on_health
        self._clock = clock
        self._rng = rng or random.Random()
        self._halt = threading.Event()
        self.opened = threading.Event()  # set after the first open attempt, good or bad
        self.health = Health.DISCONNECTED
        self.detail = "not opened yet"
        self.last_values: dict[str, float] = {}
        self.last_reading_at: float | None = None
        self.readings = 0
        self.errors = 0
        self.opens = 0
        self._last_error_at = -1e18
        self._bad_seen = 0
        self._start = clock()

    # -- control ---------------------------------------------------------------
    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout)

    # -- the loop --------------------------------------------------------------
    def run(self) -> None:
        attempt = 0
        is_open = False
        while not self._halt.is_set():
            self._beat()
            if not is_open:
                try:
                    self.device.open()
                except DeviceError as exc:
                    self.aggregator.flag(Quality.DISCONNECTED)
                    self._set_health(Health.DISCONNECTED, str(exc))
                    self.opened.set()
                    self._pause(backoff_delay(attempt, self.reopen_initial_s,
                                              self.reopen_max_s, self._rng))
                    attempt += 1
                    continue
                is_open, attempt = True, 0
                self.opens += 1
                self._set_health(Health.WARMING_UP if self.device.warming_up else Health.OK,
                                 "opened" if self.opens == 1 else "re-opened")
                self.opened.set()
            try:
                readings = self.device.poll()
            except DeviceGone as exc:
                is_open = False
                self.device.close()
                self.aggregator.flag(Quality.DISCONNECTED)
                self._set_health(Health.DISCONNECTED, str(exc))
                continue
            except DeviceError as exc:
                self._error(str(exc))
                continue
            except Exception as exc:  # a driver bug must not kill sampling
                log.exception("unexpected error in driver", extra={
                    "SENSOR": self.sensor, "EVENT": "driver_exception"})
                self._error(f"driver exception: {exc!r}")
                self._pause(1.0)
                continue
            now = self._clock()
            for r in readings:
                self.aggregator.add(r)
                self.last_values = dict(r.values)
                self.last_reading_at = now
                self.readings += 1
            self._update_health(now)
        self.device.close()
        self._set_health(Health.STOPPED, "stopped")

    def _pause(self, seconds: float) -> None:
        """Wait (for a backoff) while still beating: waiting on purpose is progress."""
        deadline = self._clock() + seconds
        while not self._halt.is_set():
            left = deadline - self._clock()
            if left <= 0:
                return
            self._beat()
            self._halt.wait(min(1.0, left))

    @property
    def reopens(self) -> int:
        return max(0, self.opens - 1)

    def _error(self, text: str) -> None:
        self.errors += 1
        self._last_error_at = self._clock()
        self.aggregator.flag(Quality.ERRORS)
        self._set_health(Health.ERRORS, text)

    def _update_health(self, now: float) -> None:
        stats = self.device.stats()
        bad = stats.get("bad_frames", 0)
        if bad > self._bad_seen:
            self._bad_seen = bad
            self.aggregator.flag(Quality.ERRORS)
        if self.device.warming_up:
            self.aggregator.flag(Quality.WARMING_UP)
            self._set_health(Health.WARMING_UP, "discarding readings while the sensor warms up")
            return
        recent = self.last_reading_at or self._start
        if now - recent > self.stale_after_s:
            self._set_health(Health.STALE, f"no reading for {now - recent:.0f} s")
        elif self.last_reading_at is not None and self.last_reading_at > self._last_error_at:
            # An error state lasts until a good reading follows it.
            self._set_health(Health.OK, "")

    def _set_health(self, new: Health, detail: str) -> None:
        old = self.health
        self.detail = detail
        if new is not old:
            self.health = new
            self._on_health(self.sensor, old, new, detail)

    def carry_flags(self) -> Quality:
        """Conditions that persist across a report boundary."""
        if self.health is Health.DISCONNECTED:
            return Quality.DISCONNECTED
        if self.health is Health.WARMING_UP:
            return Quality.WARMING_UP
        return Quality(0)
