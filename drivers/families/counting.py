"""People-tracking radars: where the counting line is, and the tracker's knobs.

A tracking radar (the HLK-LD2450) reports people's positions; the node's counting feature
(agent/features/counting.py, docs/counting.md) turns them into crossings of a line, per
direction and report interval, and nothing else leaves the node. ``[sensor.counting]``
configures it, in metres in the radar's frame (x along the pavement, y out from the radar).
The tracker keys have the names and defaults of
:class:`agent.detectors.crossing.CrossingParams` (tests/test_crossing.py checks they agree;
drivers/ import nothing from agent/).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import msgspec

from ..schema import Problem, Table

#: Metres in the radar's frame: the LD2450 reports 6 m out, 60 degrees either side.
Metres = Annotated[float, msgspec.Meta(ge=-10.0, le=10.0)]
Span = Annotated[list[Annotated[float, msgspec.Meta(ge=0.0, le=10.0)]],
                 msgspec.Meta(min_length=2, max_length=2)]
PositiveS = Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)]


class CountingLine(Table):
    """``[sensor.counting]`` of a tracking radar (docs/counting.md)."""

    # The counting line x = line_x_m; "in" is a crossing towards +x.
    line_x_m: Metres = 0.0
    # Only crossings with y (distance out from the radar) inside [min, max] count, and
    # only people inside it are occupancy; unset: the whole field.
    zone_y_m: Span | None = None
    # Half-width of the band around the line a person must leave on both sides to count.
    hysteresis_m: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] = 0.3
    # How far from its predicted position a track takes a target.
    gate_m: Annotated[float, msgspec.Meta(gt=0.0, le=3.0)] = 0.5
    # Frames with a target before a track is born (ghosts last fewer).
    birth_frames: Annotated[int, msgspec.Meta(ge=1, le=50)] = 7
    # A track unseen this long is gone.
    coast_s: Annotated[float, msgspec.Meta(gt=0.0, le=30.0)] = 2.0
    # How long a track lost near the line is remembered (people waiting at a bus stop).
    relink_s: Annotated[float, msgspec.Meta(ge=0.0, le=3600.0)] = 300.0
    # Frames without any target for this long raise the "blind" flag.
    blind_after_s: PositiveS = 3600.0
    # Every frame with the radar's three targets for this long raises "saturated".
    saturated_after_s: PositiveS = 10.0
    # Counts after a start (or after frames resume) are flagged "warming_up" this long.
    warmup_s: Annotated[float, msgspec.Meta(ge=0.0, le=600.0)] = 5.0

    def problems(self) -> Iterator[Problem]:
        """The zone's bounds in order."""
        if self.zone_y_m is not None and not self.zone_y_m[0] < self.zone_y_m[1]:
            yield "counting.zone_y_m", "[min, max] with min < max (metres from the radar)"
