"""MaxBotix MaxSonar ultrasonic sensors, TTL serial (9600 8N1, ``R####\\r`` / ``R###\\r``)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "Frame": ".codec",
    "FrameDecoder": ".codec",
    "LIMITS": ".device",
    "MaxBotix": ".device",
    "QUANTITIES": ".device",
    "Rejected": ".codec",
    "UNITS": ".codec",
})
