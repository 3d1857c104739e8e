"""The devices citynode knows: one line each, the folder under ``drivers/``.

Each folder's ``spec.py`` describes its device (:class:`drivers.spec.DeviceSpec`); the
agent's configuration, sensors, doctor, ``citynode frames`` and the conformance tests
all derive from this list. Adding a device: its folder, and its line here.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from .spec import DeviceSpec

DEVICES = (
    "pms5003",       # Plantower PMS5003/7003/A003 fine dust (UART)
    "sds011",        # Nova Fitness SDS011 fine dust (UART)
    "sps30",         # Sensirion SPS30 fine dust (I2C)
    "sht3x",         # Sensirion SHT3x temperature and humidity (I2C)
    "bme280",        # Bosch BME280 temperature, humidity, pressure (I2C)
    "sgp30",         # Sensirion SGP30 eCO2 and TVOC (I2C)
    "a02yyuw",       # DFRobot A02YYUW ultrasonic distance (UART)
    "jsnsr04t",      # JSN-SR04T V3 ultrasonic distance (UART)
    "maxbotix",      # MaxBotix MaxSonar serial (UART)
    "maxbotix_i2c",  # MaxBotix I2CXL-MaxSonar (I2C)
    "hcsr04",        # HC-SR04 ultrasonic distance (GPIO)
    "cse7766",       # Chipsea CSE7766 power meter, Sonoff POW R2/S31 (UART)
    "pzem004t",      # Peacefair PZEM-004T v3 power meter (UART, Modbus)
    "adxl345",       # Analog Devices ADXL345 accelerometer (I2C)
    "mpu6050",       # InvenSense MPU-6050 accelerometer (I2C)
    "bh1750",        # ROHM BH1750 ambient light (I2C)
    "ltr390",        # Lite-On LTR390 ambient light and UV index (I2C)
    "ld2450",        # Hi-Link HLK-LD2450 24 GHz radar, people tracking (UART)
    "vl53l1x",       # ST VL53L1X time of flight, two-zone people counting (I2C)
    "pir",           # PIR motion sensor, presence (GPIO)
)


@cache
def specs() -> dict[str, DeviceSpec]:
    """Every device's spec by its configuration ``type``, in catalogue order."""
    out: dict[str, DeviceSpec] = {}
    for folder in DEVICES:
        spec: DeviceSpec = importlib.import_module(f"drivers.{folder}.spec").SPEC
        spec.folder = folder
        out[spec.type] = spec
    return out


def first_of_kind(kind: str) -> str:
    """The type of the catalogue's first device of ``kind`` ("particulate"): what examples
    in documents name, so that no code outside a device's folder names the device."""
    return next(s.type for s in specs().values() if s.kind == kind)


@cache
def aliases() -> dict[str, str]:
    """Other names people use for a device (``pms7003``, ``gy-521``) -> its type."""
    return {a: s.type for s in specs().values() for a in s.aliases}


def get(name: str) -> DeviceSpec:
    """A spec by type or alias (any case); KeyError names the known types."""
    key = name.lower()
    key = aliases().get(key, key)
    try:
        return specs()[key]
    except KeyError:
        known = ", ".join(sorted(specs()))
        raise KeyError(f"unknown device {name!r}; known: {known}") from None


def spec_of(cfg: Any) -> DeviceSpec:
    """The spec of one configured sensor (its table's ``type``)."""
    return specs()[type(cfg).__struct_config__.tag]


def configs() -> tuple[type, ...]:
    """Every device's configuration class, for the ``[[sensor]]`` union."""
    return tuple(s.config for s in specs().values())
