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

from agent.core.aggregate import Aggregator, Quality
from drivers.base import Device, DeviceError, DeviceGone, Reading

log = logging.getLogger("citynode.sampling")


class Health(StrEnum):
    OK = "ok"
    WARMING_UP = "warming_up"
    STALE = "stale"
    ERRORS = "errors"
    DISCONNECTED = "disconnected"
    SLEEPING = "sleeping"  # duty cycling: laser and fan off until shortly before a report
    STOPPED = "stopped"


class DutyCycle:
    """When a particulate sensor should be awake: the last ``on_s`` before each report.

    ``on_s`` is the warm-up plus the sampling time. ``next_report`` returns the
    monotonic time the next report is due (the daemon's schedule), so the sensor
    wakes early enough to be warm and sampled by then, and sleeps in between:
    at a 5-minute report interval a PMS5003 (30 s warm-up, 20 s sampling) runs
    50 s of every 300, so its laser lasts six times as long.
    """

    def __init__(self, on_s: float, next_report: Callable[[], float],
                 interval: Callable[[], float]) -> None:
        self.on_s = on_s
        self._next_report = next_report
        self._interval = interval

    def next_wake(self) -> float:
        return self._next_report() - self.on_s

    def awake(self, now: float) -> bool:
        if self.on_s + 10 >= self._interval():
            return True  # sleeping a few seconds would save nothing and lose samples
        return self._next_report() - now <= self.on_s


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
        duty: DutyCycle | None = None,
        on_reading: Callable[[Reading], None] | None = None,
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
        self._on_reading = on_reading
        can_sleep = callable(getattr(device, "sleep", None)) and callable(
            getattr(device, "wake", None))
        self.duty = duty if can_sleep else None
        self.asleep = False
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
        self._open_failure: str | None = None  # the reason last logged, until an open works
        self._last_error_at = -1e18
        self._bad_seen = 0
        self._start = clock()
        self._awake_since = self._start

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
                except Exception as exc:  # a driver bug must not kill sampling either
                    reason = self._open_failed(exc)
                    self.aggregator.flag(Quality.DISCONNECTED)
                    self._set_health(Health.DISCONNECTED, reason)
                    self.opened.set()
                    self._pause(backoff_delay(attempt, self.reopen_initial_s,
                                              self.reopen_max_s, self._rng))
                    attempt += 1
                    continue
                is_open, attempt = True, 0
                self._open_failure = None  # a later failure is news again, even the same one
                self.asleep = False  # opening wakes the sensor
                self._awake_since = self._clock()
                self.opens += 1
                self._set_health(Health.WARMING_UP if self.device.warming_up else Health.OK,
                                 "opened" if self.opens == 1 else "re-opened")
                self.opened.set()
            if self.duty is not None and self._duty_step():
                continue
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
                if self._on_reading is not None:
                    try:
                        self._on_reading(r)
                    except Exception:  # a detector bug must not stop sampling
                        log.exception("reading handler failed", extra={
                            "SENSOR": self.sensor, "EVENT": "detector_exception"})
                self.last_values = dict(r.values)
                self.last_reading_at = now
                self.readings += 1
            self._update_health(now)
        self.device.close()
        self._set_health(Health.STOPPED, "stopped")

    def _open_failed(self, exc: Exception) -> str:
        """The reason the device cannot be opened; logged when it changes, not at every
        retry: a health change would not show it, since the loop starts disconnected."""
        bug = not isinstance(exc, DeviceError)
        reason = f"driver exception: {exc!r}" if bug else str(exc)
        if reason != self._open_failure:
            self._open_failure = reason
            if bug:
                log.exception("unexpected error opening the device", extra={
                    "SENSOR": self.sensor, "EVENT": "driver_exception"})
            else:
                log.warning("sensor %s cannot be opened: %s", self.sensor, reason, extra={
                    "SENSOR": self.sensor, "EVENT": "open_failed"})
        return reason

    def _duty_step(self) -> bool:
        """Sleep or wake as the duty cycle says; True while asleep (nothing to poll)."""
        want = self.duty.awake(self._clock())
        try:
            if not want and not self.asleep:
                self.device.sleep()
                self.asleep = True
                self._set_health(Health.SLEEPING, "duty cycle: laser off until the next report")
            elif want and self.asleep:
                self.device.wake()
                self.asleep = False
                self._awake_since = self._clock()
                self._set_health(Health.WARMING_UP, "duty cycle: woken for the next report")
        except DeviceGone:
            self.asleep = False
            return False  # the next poll() reports it and the port is re-opened
        except DeviceError as exc:
            self._error(f"sleep/wake failed: {exc}")
        if self.asleep:
            self._pause(min(1.0, max(0.05, self._remaining_sleep())))
        return self.asleep

    def _remaining_sleep(self) -> float:
        return self.duty.next_wake() - self._clock() if self.duty else 0.0

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
        recent = max(self.last_reading_at or self._start, self._awake_since)
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
