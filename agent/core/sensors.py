"""From a sensor's configuration to its driver and the ranges its values may take.

Everything here comes from the device's spec (``drivers/<device>/spec.py``, listed in
:mod:`drivers.catalogue`): this module names no device.

I2C sensors on ``bus = "emulator"`` talk to emulated chips inside the agent, all on one
shared :func:`drivers.emulation.i2c.shared_bus` (the kernel has no I2C stub to put them
behind): ``citynode simulate`` and site rehearsals use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from drivers import catalogue
from drivers.base import Device
from drivers.spec import BuildContext

from .config import SensorConfig

Latest = Callable[[str], "dict[str, float] | None"]


def type_name(cfg: SensorConfig) -> str:
    """The configured ``type`` of a sensor (its spec's name)."""
    return catalogue.spec_of(cfg).type


def build_device(cfg: SensorConfig, *, state_dir: Path | None = None,
                 latest: Latest | None = None) -> Device:
    """Construct (but do not open) the driver for one configured sensor.

    ``state_dir`` is where a device keeps state across restarts (None: in memory only);
    ``latest(name)`` gives another sensor's latest values (see :func:`latest_values`).
    """
    ctx = BuildContext(state_dir=state_dir)
    if latest is not None:
        ctx.latest = latest
    return catalogue.spec_of(cfg).build(cfg, ctx)


def latest_values(loops: Callable[[], Iterable[Any]], max_age_s: float = 300.0) -> Latest:
    """``latest(name)``: the latest values of the sampling loop of sensor ``name`` among
    ``loops()`` (looked up on each call, so loops may start later), or None while it has no
    reading younger than ``max_age_s``."""
    def latest(name: str) -> dict[str, float] | None:
        loop = next((lp for lp in loops() if lp.sensor == name), None)
        if loop is None or loop.last_reading_at is None:
            return None
        if time.monotonic() - loop.last_reading_at > max_age_s:
            return None
        return dict(loop.last_values)

    return latest


def valid_range(cfg: SensorConfig) -> dict[str, tuple[float, float]]:
    """Specified ranges; a value outside is kept but flagged OUT_OF_RANGE."""
    return catalogue.spec_of(cfg).valid_range()
