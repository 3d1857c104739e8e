"""The fall alarm's cancel window, and its "I'm OK" button, buzzer and LED (gpiozero).

:class:`CancelWindow` is the thread-safe shell around the sans-I/O
:class:`~agent.detectors.fall.FallAlarm`: the fall feature (:mod:`agent.features.safety`)
hands it each ``fall`` event and calls :meth:`CancelWindow.tick` from the main loop; the
alarm is pending for ``cancel_s``; ``tick`` returns what goes upstream: ``alarm`` (nobody
cancelled within ``cancel_s``) or ``cancelled`` (still worth telling the platform: a fall
happened and the person said they were fine).

:class:`FallButton` is the feature that puts the window on the node's GPIO, through
:class:`FallAlarmGPIO`: the buzzer sounds and the LED is lit while the alarm is pending; a
press on the button (wired to ground, internal pull-up) cancels it at once, from gpiozero's
own thread. Pins are BCM numbers; pass a gpiozero ``pin_factory`` (``MockFactory`` in
tests, or ``[fall] pins = "emulator"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.features.base import Feature, FeatureContext

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.detectors.fall import Event

__all__ = ["CancelWindow", "FallAlarmGPIO", "FallButton"]

log = logging.getLogger("citynode.safety")


class CancelWindow:
    """The pending fall alarm: falls in, a cancel from any thread, ``alarm``/``cancelled``
    out at :meth:`tick`. Thread-safe; ``watch`` callbacks see every change of ``pending``."""

    def __init__(self, cancel_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        from agent.detectors.fall import FallAlarm

        self.alarm = FallAlarm(cancel_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._queued: list[Event] = []
        self._watchers: list[Callable[[bool], None]] = []

    @property
    def pending(self) -> bool:
        return self.alarm.pending

    def watch(self, show: Callable[[bool], None]) -> None:
        """Call ``show(pending)`` now and after every change (under the window's lock)."""
        with self._lock:
            self._watchers.append(show)
            show(self.alarm.pending)

    def fall(self, event: Event | dict[str, Any]) -> list[Event]:
        """A detected fall: start the window (a second fall keeps the first deadline)."""
        with self._lock:
            out = self.alarm.fall(event, self._clock())
            self._changed()
            return out

    def cancel(self) -> None:
        """The "I'm OK" button (any thread): ``cancelled`` leaves at the next :meth:`tick`."""
        with self._lock:
            self._queued += self.alarm.cancel(self._clock())
            self._changed()

    def tick(self) -> list[Event]:
        """Cancels since the last call and the timeout: events to send upstream."""
        with self._lock:
            out, self._queued = self._queued, []
            out += self.alarm.tick(self._clock())
            self._changed()
            return out

    def _changed(self) -> None:
        for show in self._watchers:
            show(self.alarm.pending)


class FallAlarmGPIO:
    """A window's buzzer and LED (on while pending) and its cancel button."""

    def __init__(self, window: CancelWindow, *, button_pin: int | str,
                 buzzer_pin: int | str | None = None, led_pin: int | str | None = None,
                 pin_factory: Any = None, bounce_s: float | None = 0.05) -> None:
        from gpiozero import LED, Button, Buzzer

        self.window = window
        self.buzzer = self.led = self.button = None
        try:
            self.buzzer = Buzzer(buzzer_pin, pin_factory=pin_factory) \
                if buzzer_pin is not None else None
            self.led = LED(led_pin, pin_factory=pin_factory) if led_pin is not None else None
            self.button = Button(button_pin, pull_up=True, bounce_time=bounce_s,
                                 pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise
        self.button.when_pressed = window.cancel
        window.watch(self._show)

    @property
    def pending(self) -> bool:
        return self.window.pending

    def _show(self, pending: bool) -> None:
        for dev in (self.buzzer, self.led):
            if dev is not None and not dev.closed:
                dev.value = 1 if pending else 0

    def close(self) -> None:
        for dev in (self.button, self.buzzer, self.led):
            if dev is not None:
                dev.close()


class FallButton(Feature):
    """The cancel window on the node's GPIO (``[fall] button_pin``, ``buzzer_pin``,
    ``led_pin``). Built after the fall feature, which offers its window; without one (no
    accelerometer, falls disabled) it claims no pin."""

    name = "fall_button"

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return cfg.fall.enabled and cfg.fall.button_pin is not None

    def __init__(self, cfg: Config, ctx: FeatureContext) -> None:
        self.io: FallAlarmGPIO | None = None
        self._error = ""
        window = ctx.find(CancelWindow)
        if window is None:
            return
        f = cfg.fall
        factory = ctx.pin_factory
        if factory is None and f.pins == "emulator":
            from gpiozero.pins.mock import MockFactory

            factory = MockFactory()
        try:
            self.io = FallAlarmGPIO(window, button_pin=f.button_pin, buzzer_pin=f.buzzer_pin,
                                    led_pin=f.led_pin, pin_factory=factory)
        except Exception as exc:  # no GPIO, pin busy: the alarm still goes upstream
            self._error = str(exc)
            log.error("fall cancel button unavailable (%s): alarms go upstream after "
                      "%g s without a local cancel", exc, f.cancel_s,
                      extra={"EVENT": "relay_error", "SENSOR": "fall_button"})

    def status(self) -> dict[str, Any]:
        """Whether the button works (the pending alarm is the safety feature's)."""
        if self.io is None:
            return {"button": f"unavailable: {self._error}"} if self._error else {}
        return {"button": "ok"}

    def close(self) -> None:
        if self.io is not None:
            self.io.close()
