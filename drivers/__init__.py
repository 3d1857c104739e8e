"""Device drivers: bytes and devices, nothing about MQTT.

Each device is a sans-I/O codec (bytes in, events out; commands out as bytes),
a thin transport over pyserial, smbus2 or gpiozero, and an emulator of the
device side of the same protocol (see :mod:`drivers.emulation`).
"""
