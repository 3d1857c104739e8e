"""MaxBotix I2CXL-MaxSonar-EZ as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from typing import Any

from .. import quantities as q
from ..families.ranger import Ranger
from ..schema import I2CAddress, I2CBus
from ..spec import BuildContext, CaptureCodec, DeviceSpec

DEFAULT_ADDRESS = 0x70
#: The factory default first; change_address() moves the chip to any 7-bit address but
#: those whose 8-bit form it ignores (0, 80, 164, 170: codec.INVALID_ADDRESSES_8BIT).
ADDRESSES = (DEFAULT_ADDRESS, *(a for a in range(0x03, 0x78)
                                if a != DEFAULT_ADDRESS and a << 1 not in (0, 80, 164, 170)))


class I2CXLConfig(Ranger, tag="i2cxl", kw_only=True):
    # msgspec takes fields from one base only, so these are I2CSensor's keys, declared here.
    bus: I2CBus = 1
    # Only with bus = "emulator": faults to rehearse, e.g. "nack=0.05,stuck_after=60".
    emulator_faults: str = ""
    address: I2CAddress = 0x70


def _chip(cfg: I2CXLConfig) -> Any:
    """A day of parking under the sensor, seeded by the sensor's name."""
    from ..emulation.scenes import scene_for
    from .emulator import I2CXLModel

    return I2CXLModel(source=scene_for(cfg.name))


def _build(cfg: I2CXLConfig, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import I2CXL

    return I2CXL(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address,
                 read_interval_s=cfg.read_interval_s)


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


SPEC = DeviceSpec(
    type="i2cxl",
    title="MaxBotix I2CXL-MaxSonar-EZ ultrasonic range (I2C 0x70)",
    kind="distance",
    bus="i2c",
    addresses=ADDRESSES,
    config=I2CXLConfig,
    quantities={"d": q.D.within(0.2, 7.65)},
    build=_build,
    frames=_frames,
    emulator=_chip,
)
