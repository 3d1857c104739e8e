"""Sensirion SHT3x as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .. import quantities as q
from ..schema import I2CAddress, I2CSensor, ReadInterval
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESSES = (0x44, 0x45)  # ADDR pin low / high


class SHT3xConfig(I2CSensor, tag="sht3x", kw_only=True):
    address: I2CAddress = 0x44
    read_interval_s: ReadInterval = 2.0
    quantities: list[Literal["temp", "rh"]] = msgspec.field(
        default_factory=lambda: ["temp", "rh"])


def _chip(cfg: SHT3xConfig) -> Any:
    from .emulator import SHT3xModel

    return SHT3xModel()


def _build(cfg: SHT3xConfig, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import SHT3x

    return SHT3x(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address,
                 read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """The status register, whose CRC only a Sensirion chip gets right."""
    from ..sensirion import read_after_command, unpack_words
    from .codec import READ_STATUS

    raw = read_after_command(bus, addr, READ_STATUS, 1, 0.001, sleep)
    if raw is None:
        return None
    try:
        (word,) = unpack_words(raw)
    except ValueError as exc:
        return Ident(None, f"status register unreadable ({exc})")
    return Ident("SHT3x", f"status 0x{word:04x} with a valid CRC")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


SPEC = DeviceSpec(
    type="sht3x",
    title="Sensirion SHT3x temperature/humidity (I2C 0x44/0x45)",
    aliases=("sht30", "sht31", "sht35"),
    kind="climate",
    bus="i2c",
    addresses=ADDRESSES,
    config=SHT3xConfig,
    quantities={"temp": q.TEMP.within(-40, 125), "rh": q.RH.within(0, 100)},
    build=_build,
    chip="SHT3x",
    identify=_identify,
    identify_by_command=True,
    frames=_frames,
    emulator=_chip,
)
