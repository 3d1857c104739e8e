"""Passive infrared (PIR) motion sensors on one GPIO (HC-SR501, AM312...), through gpiozero."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "PIR": ".device",
    "QUANTITIES": ".device",
})
