"""What a feature is to the daemon: readings and samples in; records, events and status out.

A feature turns what the sensors measure into something a platform or a person acts on:
parking bays and bins, the household's plugs, fall and fire alarms, air-quality bands, the
fall cancel button. The daemon builds each class of :data:`agent.features.registry.FEATURES`
whose :meth:`Feature.wanted` finds what it needs in the configuration, and from then on
talks to the features only through this interface, so it names none of them.

What a feature may declare, per configured sensor:

* :meth:`Feature.watches` and :meth:`Feature.handler`: a callback for each reading;
* :meth:`Feature.samples`: a :class:`SampleStream` for devices that deliver sample batches
  (their spec says ``samples=True``: the accelerometers), with how soon after measurement
  it needs each sample (the device's FIFO read period, :class:`drivers.base.Device`);

and for the node as a whole: :meth:`Feature.tick` (the main loop's clock, about 5 times
a second), what it adds to each report (:meth:`Feature.report_stats`,
:meth:`Feature.report_records`, :meth:`Feature.summary_records`), the events and alarms it
sends (through :attr:`FeatureContext.publish`, with the message kind), its
:meth:`Feature.status` for ``citynode status``, downlink ``device`` commands
(:meth:`Feature.command`) and :meth:`Feature.close`.

Threads: reading handlers and sample streams run on the sensor's sampling thread; every
other method on the daemon's main thread. A feature locks what both touch.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agent.wire.model import Record

if TYPE_CHECKING:
    from agent.core.config import Config, SensorConfig
    from agent.wire.model import Kind
    from drivers.base import Device, Reading

T = TypeVar("T")
#: A report window's values of one sensor: quantity -> (centre, min, max).
Stats = dict[str, tuple[float, float, float]]
ReadingHandler = Callable[["Reading"], None]
SampleHandler = Callable[[list[Any]], None]
#: ``publish(kind, records)``: one message on the node's event topic; kind ``"event"``
#: (a state change) or ``"alarm"`` (someone should act).
Publish = Callable[["Kind", list[Record]], None]
#: ``on_model_health(task, ok, message)``: a feature's model loaded or failed; the daemon
#: reports it as the health of the pseudo-sensor ``<task>_model``.
ModelHealth = Callable[[str, bool, str], None]


@dataclass(frozen=True, slots=True)
class SampleStream:
    """A feature's hook on a device's sample batches (see :class:`drivers.base.Device`).

    ``within_s``: the longest a sample may wait in the device before it is handed over
    (the alarm latency budget of a fall detector); the device reads at least that often.
    """

    handler: SampleHandler
    within_s: float


@dataclass
class FeatureContext:
    """What features get from the node when they are built.

    ``pin_factory``: gpiozero's pin factory for relays and buttons (None: gpiozero's
    default; tests pass a ``MockFactory``). ``clock`` is monotonic, ``wall`` Unix time.
    """

    state_dir: Path
    publish: Publish
    on_model_health: ModelHealth | None = None
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    pin_factory: Any = None
    _offered: dict[type, Any] = field(default_factory=dict, repr=False)

    def offer(self, thing: object) -> None:
        """Make a part of this feature available to the features built after it (the fall
        feature offers its cancel window to the button)."""
        self._offered[type(thing)] = thing

    def find(self, kind: type[T]) -> T | None:
        """What an earlier feature offered, by its class; None if nobody did."""
        return self._offered.get(kind)


class Feature(ABC):
    """One feature of the node. Subclasses override what they use; the rest does nothing.

    Built as ``cls(cfg, ctx)`` only when ``cls.wanted(cfg)``, then :meth:`open` before any
    sensor starts, and :meth:`close` when the sensors stop (shutdown, or a new
    configuration: then a new instance is built from it).
    """

    #: Its key in ``citynode status`` and in the logs.
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def wanted(cls, cfg: Config) -> bool:
        """Does this configuration ask for the feature (sensors it uses, its table enabled)?"""

    def open(self) -> None:
        """Claim outputs (relays to their safe state) before any sensor starts."""
        return None

    # -- inputs ----------------------------------------------------------------------------
    def watches(self, sensor: SensorConfig) -> bool:
        """Does the feature take this sensor's readings or samples?"""
        return False

    def handler(self, sensor: str) -> ReadingHandler | None:
        """The callback for each reading of a watched sensor (sampling thread)."""
        return None

    def samples(self, sensor: str) -> SampleStream | None:
        """The hook on a watched sensor's sample batches, if the feature needs every sample."""
        return None

    def tick(self) -> None:
        """The main loop's clock: timeouts, and what a missing reading means."""
        return None

    # -- each report -----------------------------------------------------------------------
    def report_stats(self, sensor: str, stats: Stats) -> Stats:
        """A sensor's window values as they are to be reported: a parking bay reports its
        state, not its distances (return ``{}``)."""
        return stats

    def report_records(self, sensor: str, stats: Stats) -> list[Record]:
        """Records to add after a sensor's own in the report."""
        return []

    def summary_records(self) -> list[Record]:
        """Records to add at the end of the report."""
        return []

    # -- the operator --------------------------------------------------------------------
    def command(self, sensor: str, action: str, value: object) -> tuple[bool, str] | None:
        """A downlink ``device`` command on a sensor; None: not this feature's sensor."""
        return None

    def status(self) -> dict[str, Any]:
        """What ``citynode status`` shows (JSON-able); ``models``: model name -> version."""
        return {}

    def close(self) -> None:
        """Outputs back to their safe state, state saved; safe to call twice."""
        return None


def reading_handler(features: Sequence[Feature], sensor: SensorConfig) -> ReadingHandler | None:
    """One callback for a sensor's readings that feeds every feature watching it."""
    handlers = [h for f in features if f.watches(sensor)
                if (h := f.handler(sensor.name)) is not None]
    if len(handlers) <= 1:
        return handlers[0] if handlers else None

    def all_of(reading: Reading) -> None:
        for h in handlers:
            h(reading)
    return all_of


def attach_samples(features: Sequence[Feature], sensor: SensorConfig, device: Device) -> None:
    """Hand a device's sample batches to every feature that asked for them (before the
    device is opened), read as often as the most demanding one needs."""
    streams = [st for f in features if f.watches(sensor)
               if (st := f.samples(sensor.name)) is not None]
    if not streams:
        return
    if len(streams) == 1:
        device.on_samples = streams[0].handler
    else:
        def all_of(batch: list[Any]) -> None:
            for st in streams:
                st.handler(batch)
        device.on_samples = all_of
    device.read_samples_within(min(st.within_s for st in streams))


def event_records(subject: str, event: dict[str, Any]) -> list[Record]:
    """A detector's event as records: ``<subject>:event`` and its numeric fields."""
    recs = [Record(f"{subject}:event", text=str(event.get("event", "event")))]
    for key, value in event.items():
        if key in ("t", "event", "plug", "bay", "bin") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            recs.append(Record(f"{subject}:{key}", value=float(value)))
    return recs
