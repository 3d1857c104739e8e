"""InvenSense MPU-6050 accelerometer as the rest of citynode sees it (README.md beside this
file)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from .. import quantities as q
from ..families.accel import Accelerometer
from ..schema import I2CAddress
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESSES = (0x68, 0x69)  # AD0 low / high
#: WHO_AM_I (register 0x75) of the InvenSense chips that answer at these addresses.
WHO_AM_I = {0x68: "MPU-6050", 0x70: "MPU-6500"}


class MPU6050Config(Accelerometer, tag="mpu6050", kw_only=True):
    ADDRESSES: ClassVar[tuple[int, ...]] = ADDRESSES
    #: The driver's rates, 1000 / (1 + SMPLRT_DIV) Hz (drivers/mpu6050/device.py DRIVER_RATES).
    RATES: ClassVar[tuple[float, ...]] = (10.0, 20.0, 25.0, 40.0, 50.0, 100.0, 125.0, 200.0,
                                          250.0, 500.0)

    address: I2CAddress = 0x68  # 0x69 with AD0 high
    range_g: Literal[2, 4, 8, 16] = 8


def _chip(cfg: MPU6050Config) -> Any:
    """The chip playing ``emulator_source``. keep: the emulator's ground-truth history is
    for tests; in the daemon 20,000 samples would cost about 5.6 MiB per accelerometer of
    its 45 MiB budget."""
    from ..emulation.motion import source_from_spec
    from .emulator import MPU6050Model

    return MPU6050Model(source_from_spec(cfg.emulator_source), keep=256)


def _build(cfg: MPU6050Config, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import MPU6050

    return MPU6050(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address, rate_hz=cfg.rate_hz,
                   range_g=cfg.range_g, read_interval_s=cfg.read_interval_s,
                   quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """WHO_AM_I (register 0x75): 0x68 on an MPU-6050 at either address."""
    from ..i2cdev import read_register

    who = read_register(bus, addr, 0x75)
    if who is None:
        return None
    return Ident(WHO_AM_I.get(who), f"WHO_AM_I 0x{who:02x} at 0x75")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


_AXIS = (-16, 16)  # the widest range_g

SPEC = DeviceSpec(
    type="mpu6050",
    title="InvenSense MPU-6050 accelerometer, FIFO samples in g (I2C 0x68/0x69)",
    aliases=("gy-521",),
    kind="motion",
    bus="i2c",
    addresses=ADDRESSES,
    config=MPU6050Config,
    quantities={"ax": q.AX.within(*_AXIS), "ay": q.AY.within(*_AXIS),
                "az": q.AZ.within(*_AXIS), "amag": q.AMAG.within(0, 27.8)},
    build=_build,
    chip="MPU-6050",
    identify=_identify,
    frames=_frames,
    emulator=_chip,
    samples=True,
)
