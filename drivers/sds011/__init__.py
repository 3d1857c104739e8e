"""Nova Fitness SDS011 particulate sensor (UART, 9600 8N1)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ANY_ID": ".codec",
    "DEFAULT_QUANTITIES": ".device",
    "Frame": ".codec",
    "FrameDecoder": ".codec",
    "NoReply": ".protocol",
    "QUANTITIES": ".device",
    "Rejected": ".codec",
    "Reply": ".codec",
    "ReplyMismatch": ".protocol",
    "SDS011": ".device",
    "SDS011Protocol": ".protocol",
})
