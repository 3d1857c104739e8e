"""Peacefair PZEM-004T v3.0 power meter (Modbus RTU over UART 9600 8N1)."""

from .codec import FrameDecoder, Measurement, ModbusError, ModbusException
from .device import DEFAULT_QUANTITIES, PZEM004T, QUANTITIES

__all__ = ["DEFAULT_QUANTITIES", "PZEM004T", "QUANTITIES", "FrameDecoder", "Measurement",
           "ModbusError", "ModbusException"]
