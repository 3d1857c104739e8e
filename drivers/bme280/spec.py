"""Bosch BME280 as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .. import quantities as q
from ..schema import I2CAddress, I2CSensor, ReadInterval
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESSES = (0x76, 0x77)  # SDO low / high
#: Chip ids at register 0xD0 of Bosch's sensors that answer at these addresses.
CHIP_IDS = {0x60: "BME280", 0x56: "BMP280", 0x57: "BMP280", 0x58: "BMP280", 0x61: "BME680"}


class BME280Config(I2CSensor, tag="bme280", kw_only=True):
    address: I2CAddress = 0x76
    read_interval_s: ReadInterval = 2.0
    quantities: list[Literal["temp", "rh", "pressure"]] = msgspec.field(
        default_factory=lambda: ["temp", "rh", "pressure"])


def _chip(cfg: BME280Config) -> Any:
    from .emulator import BME280Model

    return BME280Model()


def _build(cfg: BME280Config, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import BME280

    return BME280(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address,
                  read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """The chip id register (0xD0): a BME280, or the BMP280/BME680 often sold as one."""
    from ..i2cdev import read_register

    cid = read_register(bus, addr, 0xD0)
    if cid is None:
        return None
    return Ident(CHIP_IDS.get(cid), f"chip id 0x{cid:02x} at 0xD0")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


SPEC = DeviceSpec(
    type="bme280",
    title="Bosch BME280 temperature/humidity/pressure (I2C 0x76/0x77)",
    kind="climate",
    bus="i2c",
    addresses=ADDRESSES,
    config=BME280Config,
    quantities={"temp": q.TEMP.within(-40, 85), "rh": q.RH.within(0, 100),
                "pressure": q.PRESSURE.within(300, 1100)},
    build=_build,
    chip="BME280",
    identify=_identify,
    frames=_frames,
    emulator=_chip,
)
