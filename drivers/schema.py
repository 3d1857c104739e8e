"""The building blocks of a device's ``[[sensor]]`` table (msgspec structs and types).

A device's configuration class lives in its own ``spec.py`` and derives from
:class:`SerialSensor`, :class:`I2CSensor` or :class:`Sensor` (or a family in
``drivers/families/``). What the node checks for every sensor (names, duplicate records,
I2C addresses, ports) is done once, in the agent's configuration, from these bases; what
only one device needs it checks itself in :meth:`Sensor.problems`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,15}\Z")]
Prefix = Annotated[str, msgspec.Meta(pattern=r"^([a-z][a-z0-9_]{0,7}\.)?\Z")]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
ReadInterval = Annotated[float, msgspec.Meta(ge=0.2, le=3600)]
Warmup = Annotated[float, msgspec.Meta(ge=0, le=600)]
#: Particulate sensors: seconds of sampling after the warm-up before each report.
SampleS = Annotated[float, msgspec.Meta(ge=1, le=3600)]
#: /dev/i2c-<bus>; "emulator": an emulated chip inside the agent (citynode simulate)
I2CBus = Annotated[int, msgspec.Meta(ge=0, le=255)] | Literal["emulator"]
I2CAddress = Annotated[int, msgspec.Meta(ge=0x03, le=0x77)]
Gpio = Annotated[int, msgspec.Meta(ge=0, le=27)]
Port = Annotated[str, msgspec.Meta(min_length=1)]

#: A problem found in one sensor's table: (key relative to the table, sentence).
Problem = tuple[str, str]


class Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A TOML table: unknown keys are errors (a typo must not pass silently)."""


class Sensor(Table, tag_field="type", kw_only=True):
    """Keys every ``[[sensor]]`` has; ``type`` selects the device (its spec's tag)."""

    name: Name
    prefix: Prefix = ""
    stale_after_s: Seconds = 60.0

    @property
    def type_name(self) -> str:
        return str(type(self).__struct_config__.tag)

    def reported(self) -> Sequence[str]:
        """The quantities this sensor reports as records (for duplicate checks)."""
        return getattr(self, "quantities", ())

    def problems(self, sensors: Sequence[Any]) -> Iterator[Problem]:
        """Device-specific checks after the schema's; ``sensors`` is the whole list."""
        return iter(())


class SerialSensor(Sensor, kw_only=True):
    port: Port


class I2CSensor(Sensor, kw_only=True):
    bus: I2CBus = 1
    # Only with bus = "emulator": faults to rehearse, e.g. "nack=0.05,stuck_after=60".
    emulator_faults: str = ""
