"""Over-power protective cut-off for a switched load (sans-I/O).

Feed ``update(t, watts)`` with the power meter's readings (``t`` monotonic seconds,
``None`` or a non-finite value = no reading) and get :class:`CutoffEvent` objects back:

* ``cutoff`` once the power has stayed above ``limit_w`` (strictly) for ``hold_s``,
  counted from the first reading above it: inrush currents and short peaks shorter
  than ``hold_s`` never trip it. Any reading at or below ``limit_w`` before then
  restarts the count; a missing reading neither restarts nor advances it.
* after a cut-off the detector is disarmed until a reading drops below ``rearm_w``
  (default ``limit_w``): hysteresis, so a load hovering around the limit gives one
  event, not one per ``hold_s``.

The detector only decides; the caller switches (the daemon, through
:class:`agent.features.relays.RelayController`, calls ``relay.off()`` on every event and
latches the relay off until a ``reset`` command).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["CUTOFF", "CutoffEvent", "OverPowerCutoff"]

CUTOFF = "cutoff"


@dataclass(frozen=True, slots=True)
class CutoffEvent:
    """A protective cut-off of one plug, with the evidence it was decided on."""

    t: float
    plug: str
    event: str  # "cutoff"
    watts: float  # the reading that completed the hold time
    limit_w: float
    hold_s: float
    above_since: float  # t of the first reading above the limit

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "plug": self.plug, "event": self.event,
                "watts": round(self.watts, 1), "limit_w": self.limit_w,
                "hold_s": self.hold_s, "above_s": round(self.t - self.above_since, 3)}


class OverPowerCutoff:
    """One plug's over-power cut-off (see the module docstring)."""

    def __init__(self, plug: str, *, limit_w: float, hold_s: float,
                 rearm_w: float | None = None) -> None:
        if not (math.isfinite(limit_w) and limit_w > 0):
            raise ValueError("limit_w must be a positive number")
        if not (math.isfinite(hold_s) and hold_s >= 0):
            raise ValueError("hold_s must be a number >= 0")
        rearm = float(limit_w) if rearm_w is None else float(rearm_w)
        if not (math.isfinite(rearm) and 0 <= rearm <= limit_w):
            raise ValueError("rearm_w must be between 0 and limit_w")
        self.plug = plug
        self.limit_w = float(limit_w)
        self.hold_s = float(hold_s)
        self.rearm_w = rearm
        self.armed = True
        self._above_since: float | None = None

    @property
    def above_since(self) -> float | None:
        """When the current run above the limit began (None: not above, or disarmed)."""
        return self._above_since

    def reset(self) -> None:
        """Forget any run above the limit and re-arm."""
        self.armed = True
        self._above_since = None

    def update(self, t: float, watts: float | None) -> list[CutoffEvent]:
        if watts is None or not math.isfinite(watts):
            return []
        if not self.armed:
            if watts < self.rearm_w:
                self.armed = True
            return []
        if watts <= self.limit_w:
            self._above_since = None
            return []
        if self._above_since is None:
            self._above_since = t
        if t - self._above_since < self.hold_s:
            return []
        event = CutoffEvent(t=t, plug=self.plug, event=CUTOFF, watts=float(watts),
                            limit_w=self.limit_w, hold_s=self.hold_s,
                            above_since=self._above_since)
        self.armed = False
        self._above_since = None
        return [event]
