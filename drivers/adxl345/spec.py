"""Analog Devices ADXL345 accelerometer as the rest of citynode sees it (README.md beside
this file)."""

from __future__ import annotations

from typing import Any, ClassVar

from .. import quantities as q
from ..families.accel import Accelerometer
from ..schema import I2CAddress
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESSES = (0x53, 0x1D)  # ALT ADDRESS low / high


class ADXL345Config(Accelerometer, tag="adxl345", kw_only=True):
    ADDRESSES: ClassVar[tuple[int, ...]] = ADDRESSES
    #: The driver's rates (drivers/adxl345/device.py DRIVER_RATES).
    RATES: ClassVar[tuple[float, ...]] = (12.5, 25.0, 50.0, 100.0, 200.0, 400.0)

    address: I2CAddress = 0x53  # 0x1D with ALT ADDRESS high


def _chip(cfg: ADXL345Config) -> Any:
    """The chip playing ``emulator_source``. keep: the emulator's ground-truth history is
    for tests; in the daemon 20,000 samples would cost about 5.6 MiB per accelerometer of
    its 45 MiB budget."""
    from ..emulation.motion import source_from_spec
    from .emulator import ADXL345Model

    return ADXL345Model(source_from_spec(cfg.emulator_source), keep=256)


def _build(cfg: ADXL345Config, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import ADXL345

    return ADXL345(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address, rate_hz=cfg.rate_hz,
                   range_g=cfg.range_g, read_interval_s=cfg.read_interval_s,
                   quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """DEVID (register 0x00), 0xE5 on an ADXL345."""
    from ..i2cdev import read_register

    dev = read_register(bus, addr, 0x00)
    if dev is None:
        return None
    return Ident("ADXL345" if dev == 0xE5 else None, f"DEVID 0x{dev:02x} at 0x00")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


_AXIS = (-16, 16)  # the widest range_g

SPEC = DeviceSpec(
    type="adxl345",
    title="Analog Devices ADXL345 accelerometer, FIFO samples in g (I2C 0x53/0x1D)",
    aliases=("gy-291",),
    kind="motion",
    bus="i2c",
    addresses=ADDRESSES,
    config=ADXL345Config,
    quantities={"ax": q.AX.within(*_AXIS), "ay": q.AY.within(*_AXIS),
                "az": q.AZ.within(*_AXIS), "amag": q.AMAG.within(0, 27.8)},
    build=_build,
    chip="ADXL345",
    identify=_identify,
    frames=_frames,
    emulator=_chip,
    samples=True,
)
