"""FIFO accelerometers (ADXL345, MPU-6050): what the family shares and a spec may import.

A fall detector needs *every* sample at the configured rate, while the report needs one
small summary per window: the driver (:class:`drivers.families.accel_fifo.FifoAccelerometer`,
kept apart because it loads smbus2) hands every sample over as a :class:`Sample` and
reports a reading of :data:`QUANTITIES` every ``read_interval_s``.

Here, light enough for a device's ``spec.py``: the ``[[sensor]]`` table every
accelerometer has (:class:`Accelerometer`), the quantities, :class:`Sample`, and
:func:`decode_register_capture`, the walk over a capture of I2C transfers both chips'
``citynode frames`` decoders use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol

import msgspec

from ..schema import I2CSensor, ReadInterval

if TYPE_CHECKING:
    from ..i2ccapture import Record

#: What a reading of an accelerometer carries (docs/payload.md): the latest sample and
#: the peak magnitude since the previous reading, all in g.
QUANTITIES = ("ax", "ay", "az", "amag")
AccelQuantity = Literal["ax", "ay", "az", "amag"]


class Sample(NamedTuple):
    """One accelerometer sample: monotonic time in s and acceleration in g."""

    t: float
    ax: float
    ay: float
    az: float

    @property
    def magnitude(self) -> float:
        return math.sqrt(self.ax * self.ax + self.ay * self.ay + self.az * self.az)


# -- configuration -----------------------------------------------------------------------------


class Accelerometer(I2CSensor, kw_only=True):
    """A FIFO-streamed accelerometer: every sample goes to the fall detector, a reading
    (latest sample, peak magnitude) every read_interval_s goes to the report.

    Each chip's table sets :attr:`ADDRESSES` and :attr:`RATES`, the addresses and output
    rates in Hz its driver accepts, and declares ``address`` with its default."""

    ADDRESSES: ClassVar[tuple[int, ...]] = ()
    RATES: ClassVar[tuple[float, ...]] = ()

    range_g: Literal[2, 4, 8, 16] = 16
    rate_hz: float = 50.0
    read_interval_s: ReadInterval = 1.0
    # Only with bus = "emulator": "rest", or a SisFall trial such as "sisfall:SA01/F01_R01"
    # replayed in a loop.
    emulator_source: str = "rest"
    quantities: list[AccelQuantity] = msgspec.field(
        default_factory=lambda: ["ax", "ay", "az", "amag"])

    def __post_init__(self) -> None:
        # msgspec reports these at the sensor's table, so each message names its key.
        addresses, rates = self.ADDRESSES, self.RATES
        if self.address not in addresses:  # type: ignore[attr-defined]
            raise ValueError(f"address: {self.address:#04x} is not one of "  # type: ignore
                             f"{', '.join(f'{a:#04x}' for a in addresses)}")
        if self.rate_hz not in rates:
            raise ValueError(f"rate_hz: {self.rate_hz:g} is not one of "
                             f"{', '.join(f'{r:g}' for r in rates)}")
        from ..emulation.motion import check_spec

        try:
            check_spec(self.emulator_source)
        except ValueError as exc:
            raise ValueError(f"emulator_source: {exc}") from None
        if self.emulator_source != "rest" and self.bus != "emulator":
            raise ValueError('emulator_source: only for bus = "emulator"')


# -- captures ---------------------------------------------------------------------------------


class CaptureChip(Protocol):
    """What one chip's capture decoder knows so far; the walk feeds it transfers."""

    pointer: int | None

    def write(self, head: dict[str, Any], reg: int, data: bytes) -> Iterable[dict[str, Any]]:
        """A write of ``data`` starting at register ``reg`` (the pointer is then set)."""
        ...

    def read(self, head: dict[str, Any], reg: int, data: bytes) -> Iterable[dict[str, Any]]:
        """A read of ``data`` starting at register ``reg``."""
        ...


def decode_register_capture(records: Iterable[Record], addresses: tuple[int, ...],
                            new_chip: Callable[[], CaptureChip]) -> Iterator[dict[str, Any]]:
    """Walk captured transfers of register-file chips: a write's first byte sets the
    register pointer (the rest are data), a read starts at the pointer. NACKs, reads with no
    pointer and transfers to other addresses become ``rejected`` events; a read of registers
    the chip's decoder gives no meaning is a plain ``read`` event with its bytes, so no
    transfer goes unmentioned. Never raises."""
    from ..i2ccapture import CaptureWalk

    chips: dict[int, CaptureChip] = {}
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        chip = chips.setdefault(addr, new_chip())
        if data is None:
            what = "write" if kind == "W" else "read"
            yield {**head, "type": "rejected",
                   "reason": f"{what} NACKed (no device at this address, or a bus fault)"}
        elif kind == "W":
            if not data:
                yield {**head, "type": "probe", "reason": "empty write (address probe)"}
                continue
            chip.pointer = data[0]
            if len(data) > 1:
                yield from chip.write(head, data[0], data[1:])
        elif chip.pointer is None:
            yield {**head, "type": "rejected", "bytes": data.hex(" "),
                   "reason": "read with no register address written before it in the capture"}
        else:
            reg, said = chip.pointer, False
            for doc in chip.read(head, reg, data):
                said = True
                yield doc
            if not said:  # registers the decoder has no meaning for: still shown
                yield {**head, "type": "read", "reg": f"{reg:02x}", "bytes": data.hex(" ")}
    yield from walk.summary()
