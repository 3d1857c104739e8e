"""Peacefair PZEM-004T v3.0 power meter (Modbus RTU over UART 9600 8N1)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "DEFAULT_QUANTITIES": ".device",
    "FrameDecoder": ".codec",
    "Measurement": ".codec",
    "ModbusError": ".codec",
    "ModbusException": ".codec",
    "PZEM004T": ".device",
    "QUANTITIES": ".device",
})
