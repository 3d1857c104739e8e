"""JSN-SR04T V3.x waterproof ultrasonic sensor in its UART modes (9600 8N1, ``FF H L SUM``)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "Frame": ".codec",
    "FrameDecoder": ".codec",
    "JSNSR04T": ".device",
    "QUANTITIES": ".device",
    "Rejected": ".codec",
    "TRIGGER": ".codec",
    "VARIANTS": ".device",
})
