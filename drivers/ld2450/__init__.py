"""Hi-Link HLK-LD2450 24 GHz radar (UART, 256000 8N1): up to three people tracked, 10 frames a
second."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "Ack": ".codec",
    "FrameDecoder": ".codec",
    "Habits": ".emulator",
    "LD2450": ".device",
    "LD2450Model": ".emulator",
    "LD2450Protocol": ".protocol",
    "QUANTITIES": ".device",
    "RadarSample": ".protocol",
    "Report": ".codec",
    "Scene": ".scenes",
    "Settings": ".protocol",
    "Target": ".codec",
    "ZoneFilter": ".codec",
    "generate": ".scenes",
    "stream": ".emulator",
})
