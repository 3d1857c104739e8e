"""From a sensor's configuration to its driver, and what its values may be.

This is the one place that maps a configured ``type`` to a driver class, so a
new device needs a config table in :mod:`agent.config` and an entry here.
"""

from __future__ import annotations

from drivers.base import Device
from drivers.pms5003 import PMS5003

from .config import PMS5003Config, SensorConfig

#: Specified ranges; a value outside is kept but flagged OUT_OF_RANGE.
PMS5003_RANGE = {q: (0.0, 1000.0) for q in ("pm1", "pm25", "pm10", "pm1_cf1", "pm25_cf1",
                                             "pm10_cf1")}


def build_device(cfg: SensorConfig) -> Device:
    """Construct (but do not open) the driver for one configured sensor."""
    if isinstance(cfg, PMS5003Config):
        return PMS5003(
            cfg.port,
            mode=cfg.mode,
            warmup_s=cfg.warmup_s,
            read_interval_s=cfg.read_interval_s,
            quantities=tuple(cfg.quantities),
            no_data_timeout_s=max(10.0, 3 * cfg.read_interval_s),
        )
    raise ValueError(f"no driver for sensor type {type(cfg).__name__}")


def valid_range(cfg: SensorConfig) -> dict[str, tuple[float, float]]:
    if isinstance(cfg, PMS5003Config):
        return PMS5003_RANGE
    return {}
