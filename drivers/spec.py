"""What a device tells the rest of the system about itself (``drivers/<device>/spec.py``).

Every device folder holds one light ``spec.py`` whose ``SPEC`` names the device, its
quantities with units and valid ranges, its configuration schema, its bus and addresses,
and how to build, identify, decode and emulate it. The agent reads only these specs (through
:mod:`drivers.catalogue`), so adding a device is one folder and one catalogue line.

The value types are msgspec Structs, not dataclasses: the catalogue is loaded by every
command, even ``citynode --help``, and a Struct class costs a fortieth of a dataclass to
create. A spec module imports nothing heavy: the driver, the codec and the emulator are imported
inside the callables, when a sensor of that type is configured (the daemon's memory budget
counts every module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from .base import Device

Bus = Literal["uart", "i2c", "gpio"]
#: What a device measures; features choose their inputs by kind (fire: climate, gas,
#: particulate; falls: motion; parking and bins: distance; the household: power; counting
#: people: presence).
Kind = Literal["particulate", "climate", "gas", "distance", "power", "motion", "light",
               "presence"]


class Quantity(msgspec.Struct, frozen=True):
    """A measured quantity: unit (SenML where one is registered), resolution, meaning."""

    unit: str
    resolution: float
    description: str
    ipso: str = ""  # LwM2M/IPSO object/resource with the same meaning

    def within(self, low: float, high: float) -> Measured:
        """This quantity as one device measures it: its specified range."""
        return Measured(self, (float(low), float(high)))

    @property
    def any_range(self) -> Measured:
        """Measured without a specified range (counts, raw signals)."""
        return Measured(self, None)


class Measured(msgspec.Struct, frozen=True):
    """A quantity as a device delivers it; values outside ``range`` are kept but flagged."""

    quantity: Quantity
    range: tuple[float, float] | None


class Ident(msgspec.Struct, frozen=True):
    """What an I2C address turned out to be: a chip name (None: not recognised) and why."""

    chip: str | None
    evidence: str


Sleep = Callable[[float], None]
#: ``identify(bus, address, sleep)``: read the chip's id where it has one; None when the
#: address did not answer the probe.
Identify = Callable[[Any, int, Sleep], "Ident | None"]


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...
    def flush(self) -> list[Any]: ...


class FrameCodec(msgspec.Struct, frozen=True):
    """A serial device's decoder for captured bytes (``citynode frames``, doctor).

    ``describe(event)`` gives ``(json_dict, bytes_consumed)``; the dict's ``type`` is
    ``frame``, ``ack``, ``request``, ``exception`` or ``rejected`` (with ``reason``)."""

    description: str
    decoder: Callable[[], StreamDecoder]
    describe: Callable[[Any], tuple[dict[str, Any], int]]


class CaptureCodec(msgspec.Struct, frozen=True):
    """An I2C device's decoder for captured transfers (``ADDR W|R HEX`` lines)."""

    description: str
    addresses: tuple[int, ...]
    decode: Callable[[list[tuple[int, str, bytes | None]]], Iterable[dict[str, Any]]]


def describe_frames(frame_types: tuple[type, ...], ack_types: tuple[type, ...] = ()
                    ) -> Callable[[Any], tuple[dict[str, Any], int]]:
    """The usual ``describe``: frames and acks carry ``raw`` and ``as_dict()``; anything else
    is a rejected span with ``reason`` and ``data``."""
    def describe(ev: Any) -> tuple[dict[str, Any], int]:
        if isinstance(ev, frame_types):
            return {"type": "frame", **ev.as_dict()}, len(ev.raw)
        if isinstance(ev, ack_types):
            return {"type": "ack", **ev.as_dict()}, len(ev.raw)
        return rejected(ev)
    return describe


def rejected(ev: Any) -> tuple[dict[str, Any], int]:
    """A span the codec could not use, as every device reports it."""
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


class PinUse(msgspec.Struct, frozen=True):
    """A GPIO a configured device claims, and how (doctor claims it the same way)."""

    pin: int
    role: str  # "trigger", "echo", ...
    direction: Literal["input", "output"]
    emulated: bool


def _nothing(name: str) -> dict[str, float] | None:
    return None


class BuildContext(msgspec.Struct):
    """What building a device may need from the node, beyond its own configuration.

    ``state_dir``: where a device keeps state across restarts (None: in memory only).
    ``latest(name)``: the latest values of another configured sensor, or None while it
    has none young enough (the SGP30's humidity compensation reads a climate sensor).
    """

    state_dir: Path | None = None
    latest: Callable[[str], dict[str, float] | None] = _nothing


class DeviceSpec(msgspec.Struct, kw_only=True):
    """One device type, as the agent, doctor, ``frames`` and ``simulate`` see it."""

    type: str
    title: str
    kind: Kind
    bus: Bus
    config: type  # the msgspec Struct of its ``[[sensor]]`` table (tag = type)
    quantities: dict[str, Measured]
    #: ``build(cfg, ctx)``: the driver for one configured sensor (not opened yet).
    build: Callable[[Any, BuildContext], Device]
    aliases: tuple[str, ...] = ()
    addresses: tuple[int, ...] = ()  # I2C addresses the chip can take
    #: I2C: what :attr:`identify` returns for this device (None: the chip has no id).
    chip: str | None = None
    identify: Identify | None = None
    #: True when :attr:`identify` sends commands (Sensirion); register reads go first.
    identify_by_command: bool = False
    #: Decoder for captures (``citynode frames``; the doctor's serial check).
    frames: Callable[[], FrameCodec | CaptureCodec] | None = None
    #: The device side for emulation: an I2C chip model for the emulated bus, or a serial
    #: device model for a pseudo-terminal (``drivers.emulation``); ``emulator(cfg)``.
    emulator: Callable[[Any], Any] | None = None
    #: Extra hint when the doctor hears nothing from it (power, line settings).
    silent_hint: str = ""
    #: Values the doctor shows from a decoded frame besides the configured quantities.
    doctor_values: tuple[str, ...] = ()
    #: The driver delivers sample batches through ``Device.on_samples`` (accelerometers).
    samples: bool = False
    #: GPIOs the configured device claims (GPIO devices).
    pins: Callable[[Any], list[PinUse]] | None = None
    folder: str = ""  # set by the catalogue: drivers/<folder>/

    def valid_range(self) -> dict[str, tuple[float, float]]:
        return {q: m.range for q, m in self.quantities.items() if m.range is not None}

    @property
    def readme(self) -> Path:
        return Path(__file__).parent / self.folder / "README.md"
