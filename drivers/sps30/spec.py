"""Sensirion SPS30 particulate sensor as the rest of citynode sees it (README.md beside
this file)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .. import quantities as q
from ..schema import I2CAddress, I2CSensor, ReadInterval, SampleS, Warmup
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESS = 0x69  # fixed in the chip

SPS30Quantity = Literal["pm1", "pm25", "pm4", "pm10", "nc0_5", "nc1_0", "nc2_5", "nc4_0",
                        "nc10", "tps"]


class SPS30Config(I2CSensor, tag="sps30", kw_only=True):
    address: I2CAddress = 0x69
    duty_cycle: bool = True
    sample_s: SampleS = 20.0
    read_interval_s: ReadInterval = 1.0
    warmup_s: Warmup = 15.0
    quantities: list[SPS30Quantity] = msgspec.field(
        default_factory=lambda: ["pm1", "pm25", "pm10"])


def _chip(cfg: SPS30Config) -> Any:
    from .emulator import SPS30Model

    return SPS30Model()


def _build(cfg: SPS30Config, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import SPS30

    return SPS30(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address, warmup_s=cfg.warmup_s,
                 read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """The product type, ``00080000`` on an SPS30 (CRC-checked words)."""
    from ..sensirion import read_after_command
    from . import codec as sps

    raw = read_after_command(bus, addr, sps.CMD_READ_PRODUCT_TYPE, 4,
                             sps.exec_time(sps.CMD_READ_PRODUCT_TYPE), sleep)
    if raw is None:
        return None
    try:
        product = sps.decode_string(raw)
    except ValueError as exc:
        return Ident(None, f"product type unreadable ({exc})")
    return Ident("SPS30" if product == "00080000" else None, f"product type {product!r}")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, (ADDRESS,), decode_capture)


SPEC = DeviceSpec(
    type="sps30",
    title="Sensirion SPS30 particulate sensor (I2C 0x69)",
    kind="particulate",
    bus="i2c",
    addresses=(ADDRESS,),
    config=SPS30Config,
    quantities={
        "pm1": q.PM1.within(0, 1000), "pm25": q.PM25.within(0, 1000),
        "pm4": q.PM4.within(0, 1000), "pm10": q.PM10.within(0, 1000),
        "nc0_5": q.NC0_5.any_range, "nc1_0": q.NC1_0.any_range,
        "nc2_5": q.NC2_5.any_range, "nc4_0": q.NC4_0.any_range, "nc10": q.NC10.any_range,
        "tps": q.TPS.any_range,
    },
    build=_build,
    chip="SPS30",
    identify=_identify,
    identify_by_command=True,
    frames=_frames,
    emulator=_chip,
)
