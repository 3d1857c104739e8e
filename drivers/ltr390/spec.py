"""Lite-On LTR390 as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..schema import I2CAddress, I2CSensor, ReadInterval
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESSES = (0x53,)
REG_PART_ID = 0x06
Gain = Literal[1, 3, 6, 9, 18]
Resolution = Literal[20, 19, 18, 17, 16, 13]


class LTR390Config(I2CSensor, tag="ltr390", kw_only=True):
    address: I2CAddress = 0x53
    read_interval_s: ReadInterval = 2.0
    #: Ambient light: gain 1 and 18 bits reach 157286 lx (full sun) in 0.6 lx steps.
    als_gain: Gain = 1
    als_resolution: Resolution = 18
    #: UV: gain 18 and 20 bits are the datasheet's 2300 counts per UV index.
    uvs_gain: Gain = 18
    uvs_resolution: Resolution = 20
    #: wfac: 1 without a window over the sensor, more behind one that dims it.
    window_factor: Annotated[float, msgspec.Meta(ge=1.0, le=100.0)] = 1.0
    quantities: list[Literal["lux", "uvi"]] = msgspec.field(
        default_factory=lambda: ["lux", "uvi"])


def _chip(cfg: LTR390Config) -> Any:
    """A day of daylight at the street, seeded by the sensor's name."""
    import zlib

    from .emulator import LTR390Model

    return LTR390Model(seed=zlib.crc32(cfg.name.encode()))


def _build(cfg: LTR390Config, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import LTR390

    return LTR390(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address,
                  read_interval_s=cfg.read_interval_s, als_gain=cfg.als_gain,
                  als_resolution=cfg.als_resolution, uvs_gain=cfg.uvs_gain,
                  uvs_resolution=cfg.uvs_resolution, window_factor=cfg.window_factor,
                  quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """PART_ID (register 0x06): 0xB2, part 0xB revision 2. On the ADXL345, also at 0x53,
    register 0x06 is reserved (0 on its emulator), and the LTR390's register 0x00
    (MAIN_CTRL, only bits 1, 3 and 4 used) is never the ADXL345's DEVID 0xE5: each
    identification recognises only its own chip."""
    from ..i2cdev import read_register

    pid = read_register(bus, addr, REG_PART_ID)
    if pid is None:
        return None
    return Ident("LTR390" if pid >> 4 == 0xB else None,
                 f"PART_ID 0x{pid:02x} at 0x06 (part 0x{pid >> 4:x}, revision {pid & 0xF})")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


SPEC = DeviceSpec(
    type="ltr390",
    title="Lite-On LTR390 ambient light and UV index (I2C 0x53)",
    aliases=("ltr-390uv", "ltr390uv"),
    kind="light",
    bus="i2c",
    addresses=ADDRESSES,
    config=LTR390Config,
    # lux: the full scale at gain 1; UV index: 0..20 (above 20 is a sensor fault outside
    # the highest mountains of the tropics).
    quantities={"lux": q.LUX.within(0, 157_286), "uvi": q.UVI.within(0, 20)},
    build=_build,
    chip="LTR390",
    identify=_identify,
    frames=_frames,
    emulator=_chip,
)
