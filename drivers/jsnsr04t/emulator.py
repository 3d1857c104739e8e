"""The JSN-SR04T in a UART mode, emulated (the A02YYUW model with the JSN's habits).

``mode="auto"`` (mode 2): a frame every 100 ms; ``mode="triggered"`` (mode 3): one
frame per ``0x55`` received, other bytes ignored. The blind zone is ≈ 250 mm and
the range ≈ 6 m; the raw measurement is sent (no median filter).
"""

from __future__ import annotations

from ..a02yyuw.emulator import UltrasonicModel
from ..emulation.ranger import Source, constant
from .codec import TRIGGER

__all__ = ["JSNSR04TModel", "Source", "constant"]


class JSNSR04TModel(UltrasonicModel):
    """Device side of a JSN-SR04T V3.x in mode 2 (auto) or mode 3 (triggered by 0x55)."""

    def __init__(self, source: Source | None = None, *, mode: str = "triggered",
                 interval_s: float = 0.1, noise_mm: float = 3.0, max_range_mm: int = 6000,
                 variant: str = "jsn-sr04t", seed: int | None = 0,
                 keep_sent: int = 1000) -> None:
        if mode not in ("auto", "triggered"):
            raise ValueError(f"mode must be 'auto' or 'triggered', not {mode!r}")
        super().__init__(source, output="real-time", interval_s=interval_s,
                         triggered=mode == "triggered", trigger=TRIGGER, noise_mm=noise_mm,
                         blind_mm=250, max_range_mm=max_range_mm,
                         sum_header=variant == "jsn-sr04t", seed=seed, keep_sent=keep_sent)
        self.mode = mode
