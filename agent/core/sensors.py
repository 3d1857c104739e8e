"""From a sensor's configuration to its driver, and what its values may be.

This is the one place that maps a configured ``type`` to a driver class, so a
new device needs a config table in :mod:`agent.core.config` and an entry here.

I2C sensors on ``bus = "emulator"`` talk to emulated chips inside the agent,
all on one shared :class:`drivers.emulation.i2c.FakeBus` (the kernel has no I2C
stub to put them behind): ``citynode simulate`` and site rehearsals use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.core.config import (
    A02YYUWConfig,
    BME280Config,
    CSE7766Config,
    HCSR04Config,
    I2CXLConfig,
    JSNSR04TConfig,
    MaxBotixConfig,
    PMS5003Config,
    PZEM004TConfig,
    SDS011Config,
    SensorConfig,
    SGP30Config,
    SHT3xConfig,
    SPS30Config,
)
from drivers.base import Device

_PM = ("pm1", "pm25", "pm10", "pm4", "pm1_cf1", "pm25_cf1", "pm10_cf1")
#: Specified ranges; a value outside is kept but flagged OUT_OF_RANGE.
RANGES = {
    "pms5003": {q: (0.0, 1000.0) for q in _PM},
    "sds011": {q: (0.0, 999.9) for q in _PM},
    "sps30": {q: (0.0, 1000.0) for q in _PM},
    "sht3x": {"temp": (-40.0, 125.0), "rh": (0.0, 100.0)},
    "bme280": {"temp": (-40.0, 85.0), "rh": (0.0, 100.0), "pressure": (300.0, 1100.0)},
    "sgp30": {"eco2": (400.0, 60000.0), "tvoc": (0.0, 60000.0)},
    "a02yyuw": {"d": (0.03, 4.5)},
    "jsnsr04t": {"d": (0.25, 6.0)},
    "maxbotix": {"d": (0.3, 10.0)},
    "i2cxl": {"d": (0.2, 7.65)},
    "hcsr04": {"d": (0.02, 4.0)},
    "cse7766": {"w": (0.0, 3600.0), "v": (80.0, 280.0), "a": (0.0, 16.0)},
    "pzem004t": {"w": (0.0, 23000.0), "v": (80.0, 260.0), "a": (0.0, 100.0)},
}

HumiditySource = Callable[[], "tuple[float, float] | None"]

_emulated_bus = None
_emulated_lock = threading.Lock()


def emulated_bus():
    """The agent's shared emulated I2C bus (created on first use)."""
    global _emulated_bus
    with _emulated_lock:
        if _emulated_bus is None:
            from drivers.emulation.i2c import FakeBus

            _emulated_bus = FakeBus(seed=None)
        return _emulated_bus


def _i2c_bus(cfg: SensorConfig, model_factory):
    """The bus a driver gets: a bus number, or the emulated bus with its chip attached."""
    if cfg.bus != "emulator":
        return cfg.bus
    bus = emulated_bus()
    if cfg.address not in bus.devices:
        bus.attach(cfg.address, model_factory())
        if cfg.emulator_faults:
            from drivers.emulation.i2c import parse_i2c_faults

            bus.fault(cfg.address, **parse_i2c_faults(cfg.emulator_faults))
    return bus


def type_name(cfg: SensorConfig) -> str:
    return type(cfg).__name__.removesuffix("Config").lower()


def build_device(cfg: SensorConfig, *, state_dir: Path | None = None,
                 humidity_source: HumiditySource | None = None) -> Device:
    """Construct (but do not open) the driver for one configured sensor.

    Only the SGP30 uses the keywords: ``state_dir`` holds its baseline file (None: the
    baseline is kept in memory only, unless ``baseline_file`` is absolute), and
    ``humidity_source`` is its humidity compensation (see :func:`humidity_reader`).
    """
    if isinstance(cfg, PMS5003Config):
        from drivers.pms5003 import PMS5003

        return PMS5003(cfg.port, mode=cfg.mode, warmup_s=cfg.warmup_s,
                       read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities),
                       no_data_timeout_s=max(10.0, 3 * cfg.read_interval_s))
    if isinstance(cfg, SDS011Config):
        from drivers.sds011 import SDS011

        return SDS011(cfg.port, mode=cfg.mode, warmup_s=cfg.warmup_s,
                      read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))
    if isinstance(cfg, SPS30Config):
        from drivers.sps30 import SPS30
        from drivers.sps30.emulator import SPS30Model

        return SPS30(_i2c_bus(cfg, SPS30Model), address=cfg.address, warmup_s=cfg.warmup_s,
                     read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))
    if isinstance(cfg, SHT3xConfig):
        from drivers.sht3x import SHT3x
        from drivers.sht3x.emulator import SHT3xModel

        return SHT3x(_i2c_bus(cfg, SHT3xModel), address=cfg.address,
                     read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))
    if isinstance(cfg, BME280Config):
        from drivers.bme280 import BME280
        from drivers.bme280.emulator import BME280Model

        return BME280(_i2c_bus(cfg, BME280Model), address=cfg.address,
                      read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))
    if isinstance(cfg, SGP30Config):
        return _sgp30(cfg, state_dir, humidity_source)
    if isinstance(cfg, I2CXLConfig):
        from drivers.maxbotix_i2c import I2CXL
        from drivers.maxbotix_i2c.emulator import I2CXLModel

        return I2CXL(_i2c_bus(cfg, lambda: I2CXLModel(source=scene_for(cfg.name))),
                     address=cfg.address, read_interval_s=cfg.read_interval_s)
    if isinstance(cfg, HCSR04Config):
        from drivers.hcsr04 import HCSR04

        factory = None
        if cfg.pins == "emulator":
            from drivers.hcsr04.emulator import emulated_hcsr04

            factory, _ = emulated_hcsr04(scene_for(cfg.name), trigger=cfg.trigger,
                                         echo=cfg.echo)
        return HCSR04(cfg.trigger, cfg.echo, max_distance_m=cfg.max_distance_m,
                      read_interval_s=cfg.read_interval_s, pin_factory=factory)
    if isinstance(cfg, A02YYUWConfig | JSNSR04TConfig | MaxBotixConfig):
        return _serial_ranger(cfg)
    if isinstance(cfg, CSE7766Config):
        from drivers.cse7766 import CSE7766

        return CSE7766(cfg.port, read_interval_s=cfg.read_interval_s,
                       quantities=tuple(cfg.quantities))
    if isinstance(cfg, PZEM004TConfig):
        from drivers.pzem004t import PZEM004T

        return PZEM004T(cfg.port, address=cfg.address, read_interval_s=cfg.read_interval_s,
                        quantities=tuple(cfg.quantities))
    from agent.core.config import ADXL345Config, MPU6050Config

    if isinstance(cfg, ADXL345Config | MPU6050Config):
        return _accelerometer(cfg)
    raise ValueError(f"no driver for sensor type {type(cfg).__name__}")


def _sgp30(cfg: SGP30Config, state_dir: Path | None,
           humidity_source: HumiditySource | None) -> Device:
    from drivers.sgp30 import SGP30
    from drivers.sgp30.emulator import SGP30Model, default_source

    path = None
    if state_dir is not None or Path(cfg.baseline_file).is_absolute():
        path = cfg.resolved_baseline_file(state_dir or Path("/"))
    bus = _i2c_bus(cfg, lambda: SGP30Model(default_source(cfg.emulator_source, seed=None)))
    return SGP30(bus, address=cfg.address, read_interval_s=cfg.read_interval_s,
                 quantities=tuple(cfg.quantities), raw_every=cfg.raw_every,
                 baseline_path=path, humidity_source=humidity_source)


def humidity_reader(loops: Callable[[], Iterable[Any]], name: str,
                    max_age_s: float = 300.0) -> HumiditySource:
    """An SGP30 ``humidity_source``: the latest (temp, rh) of the sampling loop of sensor
    ``name`` among ``loops()`` (looked up on each call, so loops may start later), or None
    while it has no reading younger than ``max_age_s``."""
    def read() -> tuple[float, float] | None:
        loop = next((lp for lp in loops() if lp.sensor == name), None)
        if loop is None or loop.last_reading_at is None:
            return None
        if time.monotonic() - loop.last_reading_at > max_age_s:
            return None
        v = loop.last_values
        return (v["temp"], v["rh"]) if "temp" in v and "rh" in v else None

    return read


def scene_for(name: str):
    """An emulated parking day for a sensor, seeded by its name (for rehearsals)."""
    import time
    import zlib

    from drivers.emulation.scenes import random_day

    return random_day(zlib.crc32(name.encode()), name, start=time.monotonic()).scene


def valid_range(cfg: SensorConfig) -> dict[str, tuple[float, float]]:
    return RANGES.get(type_name(cfg), {})


def _serial_ranger(cfg: A02YYUWConfig | JSNSR04TConfig | MaxBotixConfig) -> Device:
    """The UART distance sensors: each driver's defaults suit a parking bay or bin."""
    if isinstance(cfg, A02YYUWConfig):
        from drivers.a02yyuw import A02YYUW

        return A02YYUW(cfg.port, read_interval_s=cfg.read_interval_s)
    if isinstance(cfg, JSNSR04TConfig):
        from drivers.jsnsr04t import JSNSR04T

        return JSNSR04T(cfg.port, read_interval_s=cfg.read_interval_s)
    from drivers.maxbotix import MaxBotix

    return MaxBotix(cfg.port, read_interval_s=cfg.read_interval_s)


# -- accelerometers (ADXL345, MPU-6050; docs/drivers.md) ------------------------------------
RANGES.update({t: {"ax": (-16.0, 16.0), "ay": (-16.0, 16.0), "az": (-16.0, 16.0),
                   "amag": (0.0, 27.8)} for t in ("adxl345", "mpu6050")})


def _accelerometer(cfg: Any) -> Device:
    """An ADXL345 or MPU-6050; on the emulated bus its chip plays ``emulator_source``."""
    from drivers.emulation.motion import source_from_spec

    if type_name(cfg) == "adxl345":
        from drivers.adxl345 import ADXL345 as Driver
        from drivers.adxl345.emulator import ADXL345Model as Model
    else:
        from drivers.mpu6050 import MPU6050 as Driver  # type: ignore[assignment]
        from drivers.mpu6050.emulator import MPU6050Model as Model  # type: ignore[assignment]
    # keep: the emulator's ground-truth history is for tests; in the daemon 20,000
    # samples would cost about 5.6 MiB per accelerometer of its 45 MiB budget
    bus = _i2c_bus(cfg, lambda: Model(source_from_spec(cfg.emulator_source), keep=256))
    return Driver(bus, address=cfg.address, rate_hz=cfg.rate_hz, range_g=cfg.range_g,
                  read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))
