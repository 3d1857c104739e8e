"""HC-SR04 ultrasonic rangefinder on two GPIO pins (trigger/echo), through gpiozero."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "HCSR04": ".device",
    "QUANTITIES": ".device",
})
