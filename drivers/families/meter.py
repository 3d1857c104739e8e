"""Power meters in smart plugs: what every meter's table has.

``plug`` says what the plug does for the household (docs/inactivity.md, docs/relay.md):
whether its use counts as activity, and the relay it may switch.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ..schema import Gpio, Port, ReadInterval, Sensor, Table

PowerQuantity = Literal["w", "v", "a", "kwh", "hz", "pf"]


class PlugUse(Table):
    """What a power meter's plug does for the household (docs/inactivity.md, docs/relay.md)."""

    # Counted as the household's activity (kettle, TV, rice cooker); false for loads
    # that run by themselves (a fridge).
    activity: bool = True
    relay_pin: Gpio | None = None
    relay_active_high: bool = True
    relay_safe_state: Literal["on", "off"] = "off"
    cutoff_w: Annotated[float, msgspec.Meta(gt=0, le=4000)] | None = None
    cutoff_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0


class Meter(Sensor, kw_only=True):
    """Base of a serial power meter's ``[[sensor]]`` table."""

    port: Port
    read_interval_s: ReadInterval = 1.0
    plug: PlugUse = msgspec.field(default_factory=PlugUse)
    quantities: list[PowerQuantity] = msgspec.field(default_factory=lambda: ["w", "kwh"])
