"""The node's features, in the order the daemon builds and runs them.

Adding a feature: its module with a :class:`~agent.features.base.Feature` subclass, and its
line here. The order is the order of the reading callbacks, of the records each adds to a
report and of ``citynode status``; a feature that uses what another offers
(:meth:`~agent.features.base.FeatureContext.offer`) comes after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.features.airquality import AirQuality
from agent.features.base import Feature, FeatureContext
from agent.features.counting import Counting
from agent.features.fall_alarm import FallButton
from agent.features.household import Household
from agent.features.parking import Parking
from agent.features.safety import Safety

if TYPE_CHECKING:
    from agent.core.config import Config

FEATURES: tuple[type[Feature], ...] = (
    Parking,     # bays and bins from distance sensors (docs/parking.md)
    Household,   # smart plugs: relays, cut-offs, inactivity (docs/inactivity.md, relay.md)
    Safety,      # fall and fire alarms (docs/fall.md, docs/fire.md)
    AirQuality,  # Korean PM bands in each report (agent/features/airquality.py)
    FallButton,  # the fall alarm's "I'm OK" button, buzzer and LED (after Safety)
    Counting,    # people crossing a line, presence: counts only (docs/counting.md)
)


def start_features(cfg: Config, ctx: FeatureContext) -> list[Feature]:
    """Build every feature the configuration asks for, each opened before the next is
    built (relays reach their safe state before any model loads)."""
    out: list[Feature] = []
    for cls in FEATURES:
        if cls.wanted(cfg):
            feature = cls(cfg, ctx)
            feature.open()
            out.append(feature)
    return out
