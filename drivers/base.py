"""What every driver hands to the agent: readings, and errors it can act on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement from a device: named values in the units docs/payload.md lists.

    ``t_mono`` orders and schedules (monotonic clock); ``t_wall`` is the Unix time
    reported upstream.
    """

    values: Mapping[str, float]
    t_mono: float
    t_wall: float
    fault: bool = False  # the device itself reports a fault (e.g. a status or error byte)


class DeviceError(Exception):
    """The device is there but misbehaves (no data, bad replies): retry later."""


class DeviceGone(DeviceError):
    """The port or bus vanished (cable pulled, adapter unplugged): re-open it."""


class Device(Protocol):
    """The interface the agent's sampling loop drives; one per physical sensor."""

    quantities: tuple[str, ...]

    def open(self) -> None:
        """Open the port and put the device in its working mode."""

    def close(self) -> None:
        """Release the port; safe to call twice."""

    def poll(self) -> list[Reading]:
        """Do one short step of I/O (at most about a second) and return new readings."""

    @property
    def warming_up(self) -> bool:
        """True while readings are being discarded after power-up or wake."""

    def stats(self) -> Mapping[str, int]:
        """Protocol counters (good frames, bad frames, discarded bytes...)."""
