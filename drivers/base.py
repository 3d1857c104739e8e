"""What every driver hands to the agent: readings, and errors it can act on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


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
    """The interface the agent's sampling loop drives; one per physical sensor.

    Devices that deliver sample batches (their spec says ``samples=True``: the FIFO
    accelerometers) also have a sample stream: :attr:`on_samples` and
    :meth:`read_samples_within`. The agent touches those only on such devices.
    """

    quantities: tuple[str, ...]
    #: Sample stream: called with every new batch of samples, in order, on the sampling
    #: thread (exceptions reach the sampling loop, which logs and survives them); set it
    #: before :meth:`open`. None (the default): the device keeps a bounded buffer instead.
    on_samples: Callable[[list[Any]], None] | None = None

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

    def read_samples_within(self, seconds: float) -> None:
        """Sample stream: hand each sample over at most ``seconds`` after it was measured
        (how often a FIFO is read), for a listener with a latency budget; never slower
        than the device's own period. Only devices with a sample stream are asked."""
