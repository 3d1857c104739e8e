"""The fall cancel window on the node's GPIO: buzzer, LED, "I'm OK" button (gpiozero).

A thin shell around the sans-I/O :class:`~agent.detectors.fall.FallAlarm`: the daemon
hands it each ``fall`` event with :meth:`FallAlarmGPIO.fall` and calls :meth:`tick`
about once a second; the buzzer sounds and the LED is lit while the alarm is pending;
a press on the button (wired to ground, internal pull-up) cancels it at once, from
gpiozero's own thread. ``tick`` returns what the daemon must send upstream:
``alarm`` (nobody pressed within ``cancel_s``) or ``cancelled`` (still worth telling the
platform: a fall happened and the person said they were fine). Pass a gpiozero
``pin_factory`` (``MockFactory`` in tests); pins are BCM numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from agent.detectors.fall import Event, FallAlarm

__all__ = ["FallAlarmGPIO"]


class FallAlarmGPIO:
    """Buzzer and LED on while pending; the button cancels. Thread-safe."""

    def __init__(self, *, button_pin: int | str, buzzer_pin: int | str | None = None,
                 led_pin: int | str | None = None, cancel_s: float = 30.0,
                 pin_factory: Any = None, bounce_s: float | None = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from gpiozero import LED, Button, Buzzer

        self.alarm = FallAlarm(cancel_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._queued: list[Event] = []
        self.buzzer = Buzzer(buzzer_pin, pin_factory=pin_factory) if buzzer_pin is not None \
            else None
        self.led = LED(led_pin, pin_factory=pin_factory) if led_pin is not None else None
        self.button = Button(button_pin, pull_up=True, bounce_time=bounce_s,
                             pin_factory=pin_factory)
        self.button.when_pressed = self._pressed

    @property
    def pending(self) -> bool:
        return self.alarm.pending

    def fall(self, event: Event | dict[str, Any]) -> list[Event]:
        """A detected fall: start (or extend nothing of) the cancel window."""
        with self._lock:
            out = self.alarm.fall(event, self._clock())
            self._outputs()
            return out

    def cancel(self) -> list[Event]:
        """What the button does (also for a cancel from elsewhere, e.g. the platform)."""
        with self._lock:
            out = self.alarm.cancel(self._clock())
            self._outputs()
            return out

    def tick(self) -> list[Event]:
        """Button presses since the last call and the timeout: events to send upstream."""
        with self._lock:
            out, self._queued = self._queued, []
            out += self.alarm.tick(self._clock())
            self._outputs()
            return out

    def _pressed(self) -> None:
        with self._lock:
            self._queued += self.alarm.cancel(self._clock())
            self._outputs()

    def _outputs(self) -> None:
        on = self.alarm.pending
        for dev in (self.buzzer, self.led):
            if dev is not None:
                dev.value = 1 if on else 0

    def close(self) -> None:
        for dev in (self.button, self.buzzer, self.led):
            if dev is not None:
                dev.close()
