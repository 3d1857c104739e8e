"""Plantower PMS5003/PMS7003 particulate sensor (UART, 9600 8N1)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "Ack": ".codec",
    "DEFAULT_QUANTITIES": ".device",
    "Frame": ".codec",
    "FrameDecoder": ".codec",
    "PMS5003": ".device",
    "PMS5003Protocol": ".protocol",
    "QUANTITIES": ".device",
    "Rejected": ".codec",
})
