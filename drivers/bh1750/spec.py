"""ROHM BH1750 as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..schema import I2CAddress, I2CSensor, ReadInterval
from ..spec import BuildContext, CaptureCodec, DeviceSpec

ADDRESSES = (0x23, 0x5C)  # ADDR low / high
MTreg = Annotated[int, msgspec.Meta(ge=31, le=254)]


class BH1750Config(I2CSensor, tag="bh1750", kw_only=True):
    address: I2CAddress = 0x23
    read_interval_s: ReadInterval = 2.0
    #: "one_time": the chip measures when asked and sleeps in between; "continuous".
    mode: Literal["one_time", "continuous"] = "one_time"
    #: "high": 1 lx steps at MTreg 69; "high2" (H-resolution mode 2): 0.5 lx, half the range.
    resolution: Literal["high", "high2"] = "high"
    #: Measurement time register, 31..254 (69 is the chip's default), or "auto".
    mtreg: MTreg | Literal["auto"] = "auto"
    quantities: list[Literal["lux"]] = msgspec.field(default_factory=lambda: ["lux"])


def _chip(cfg: BH1750Config) -> Any:
    """A day of daylight at the street, seeded by the sensor's name."""
    import zlib

    from .emulator import BH1750Model

    return BH1750Model(seed=zlib.crc32(cfg.name.encode()))


def _build(cfg: BH1750Config, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import BH1750

    return BH1750(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address,
                  read_interval_s=cfg.read_interval_s, mode=cfg.mode,
                  resolution=cfg.resolution, mtreg=cfg.mtreg,
                  quantities=tuple(cfg.quantities))


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


SPEC = DeviceSpec(
    type="bh1750",
    title="ROHM BH1750 ambient light (I2C 0x23/0x5C)",
    aliases=("bh1750fvi", "gy-30", "gy-302"),
    kind="light",
    bus="i2c",
    addresses=ADDRESSES,
    config=BH1750Config,
    # 0.11 ... 100000 lx is the datasheet's range with the measurement time adjusted.
    quantities={"lux": q.LUX.within(0, 100_000)},
    build=_build,
    frames=_frames,
    emulator=_chip,
)
