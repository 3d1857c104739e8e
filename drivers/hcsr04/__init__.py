"""HC-SR04 ultrasonic rangefinder on two GPIO pins (trigger/echo), through gpiozero."""

from .device import HCSR04, QUANTITIES

__all__ = ["HCSR04", "QUANTITIES"]
