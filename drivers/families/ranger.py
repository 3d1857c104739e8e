"""Distance rangers (ultrasonic, time of flight): what every ranger's table has.

A ranger watches a parking bay, a bin, or reports plain distances; ``use`` says which
(docs/parking.md). Bays and bins report their state and fill level, not distances.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import msgspec

from ..schema import Problem, ReadInterval, Sensor, Table

#: A ranger's reading carries one value: ``d``, the distance in metres. The drivers are
#: in :mod:`drivers.families.ranger_device`.
QUANTITIES = ("d",)


class RangerUse(Table):
    """What a distance sensor watches (docs/parking.md): a parking bay or a bin."""

    role: Literal["bay", "bin", "distance"] = "bay"
    # Bay: the empty-bay distance from `citynode calibrate`; unset: read from the state
    # directory (calibrate writes it there), else learned from the first readings.
    baseline_mm: Annotated[float, msgspec.Meta(gt=0, le=20000)] | None = None
    # Bin: sensor to bin bottom.
    depth_mm: Annotated[float, msgspec.Meta(gt=0, le=20000)] | None = None
    debounce_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    full_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] = 80.0


class Ranger(Sensor, kw_only=True):
    """Base of a ranger's ``[[sensor]]`` table (the bus keys are the device's own)."""

    read_interval_s: ReadInterval = 0.5
    use: RangerUse = msgspec.field(default_factory=RangerUse)
    quantities: list[Literal["d"]] = msgspec.field(default_factory=lambda: ["d"])

    def reported(self) -> Sequence[str]:
        return self.quantities if self.use.role == "distance" else ()

    def problems(self, sensors: Sequence[Any]) -> Iterator[Problem]:
        if self.use.role == "bin" and self.use.depth_mm is None:
            yield "use.depth_mm", "a bin needs its depth (sensor to bottom)"
