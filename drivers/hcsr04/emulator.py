"""An HC-SR04 emulated on gpiozero's mock pins, its echo following a distance source.

gpiozero's :class:`~gpiozero.pins.mock.MockTriggerPin` answers every trigger pulse
with an echo pulse of a fixed ``echo_time``. :class:`SourceTriggerPin` works out the
echo time at each trigger from a *distance source*: a callable ``source(now) -> float |
None`` giving the true distance in millimetres at monotonic time ``now``, or None for
"no echo" (the scripted scenes of :mod:`drivers.emulation.scenes` have this interface).
The echo lasts ``2 * d / 343.26`` s (gpiozero's speed of sound), so the driver reads the
source back within the timing jitter of a thread sleep (a few cm; more on a loaded box).
"No echo" is what the real module does when nothing is in range: a ~38 ms echo
(``no_echo_time_s``; 6.5 m, beyond any ``max_distance``); ``no_echo_time_s=None`` keeps
the echo pin low instead (a dead or unwired module: gpiozero warns "no echo received").

    >>> from drivers.hcsr04 import HCSR04
    >>> from drivers.hcsr04.emulator import emulated_hcsr04
    >>> factory, pin = emulated_hcsr04(lambda now: 1500.0, trigger=23, echo=24)
    >>> sonar = HCSR04(23, 24, pin_factory=factory)   # or Device.pin_factory = factory
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpiozero.pins.mock import MockFactory, MockTriggerPin

DistanceSource = Callable[[float], float | None]
#: gpiozero's DistanceSensor.speed_of_sound (m/s).
SPEED_OF_SOUND = 343.26
#: How long an HC-SR04's echo stays high when nothing echoes back.
NO_ECHO_TIME_S = 0.038

__all__ = ["NO_ECHO_TIME_S", "SPEED_OF_SOUND", "DistanceSource", "SourceTriggerPin",
           "echo_time_for", "emulated_hcsr04"]


def echo_time_for(mm: float) -> float:
    """The echo pulse length for a target ``mm`` millimetres away."""
    return 2.0 * (mm / 1000.0) / SPEED_OF_SOUND


class SourceTriggerPin(MockTriggerPin):
    """A MockTriggerPin whose echo time follows ``source`` (see the module docstring).

    ``triggers`` counts pings; ``last_mm`` is the truth of the last one.
    """

    def __init__(self, factory: Any, info: Any, echo_pin: Any = None,
                 source: DistanceSource | None = None,
                 no_echo_time_s: float | None = NO_ECHO_TIME_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(factory, info, echo_pin=echo_pin, echo_time=NO_ECHO_TIME_S)
        self.source: DistanceSource = source or (lambda now: None)
        self.no_echo_time_s = no_echo_time_s
        self.clock = clock
        self.triggers = 0
        self.last_mm: float | None = None

    def _echo(self) -> None:
        self.triggers += 1
        mm = self.last_mm = self.source(self.clock())
        if mm is None:
            if self.no_echo_time_s is None:
                return  # the echo pin stays low
            self.echo_time = self.no_echo_time_s
        else:
            self.echo_time = echo_time_for(max(0.0, mm))
        super()._echo()


def emulated_hcsr04(source: DistanceSource, *, trigger: Any = 23, echo: Any = 24,
                    factory: MockFactory | None = None,
                    no_echo_time_s: float | None = NO_ECHO_TIME_S,
                    ) -> tuple[MockFactory, SourceTriggerPin]:
    """A MockFactory (``factory``, or a new one) with an emulated HC-SR04 on ``trigger``
    and ``echo``; returns the factory and the trigger pin (its ``source`` can be
    swapped). Create it before the driver opens its pins."""
    factory = factory or MockFactory()
    echo_pin = factory.pin(echo)
    trig = factory.pin(trigger, pin_class=SourceTriggerPin, echo_pin=echo_pin,
                       source=source, no_echo_time_s=no_echo_time_s)
    if not isinstance(trig, SourceTriggerPin):
        raise ValueError(f"GPIO {trigger} is already a {type(trig).__name__} on this factory")
    return factory, trig
