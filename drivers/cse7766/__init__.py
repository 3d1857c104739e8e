"""Chipsea CSE7766 power meter (UART 4800 8E1, transmit only)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "CSE7766": ".device",
    "DEFAULT_QUANTITIES": ".device",
    "EnergyCounter": ".codec",
    "Frame": ".codec",
    "FrameDecoder": ".codec",
    "QUANTITIES": ".device",
    "Rejected": ".codec",
    "encode_frame": ".codec",
})
