"""What the emulated UART rangers share (A02YYUW, JSN-SR04T, MaxBotix): the true distance
from a source, and a frame every ``interval_s`` when the sensor runs free.

A *source* gives the true distance: any callable ``source(now) -> float | None``
returning millimetres at monotonic time ``now``, or None for "no echo" (scripted scenes
live in :mod:`drivers.emulation.scenes`). The default is a constant 2000 mm. A model
says how it measures and encodes a frame (:meth:`RangerModel._frame`) and whether it
waits for the host's trigger.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

from . import uart

Source = Callable[[float], "float | None"]


def constant(mm: float | None = 2000.0) -> Source:
    """A source that always says ``mm`` (None: never an echo)."""

    def source(now: float) -> float | None:
        return mm

    source.description = f"constant {mm} mm"  # type: ignore[attr-defined]
    return source


class RangerModel(ABC):
    """Device side of a ranger on a UART (a :class:`drivers.emulation.DeviceModel`).

    :attr:`sent` keeps each frame sent with the value it carries; :attr:`stats` counts
    at least frames, no echoes and resets.
    """

    #: Silent until the host asks for a frame (else the sensor sends on its own).
    triggered = False

    def __init__(self, source: Source | None, *, interval_s: float, noise_mm: float,
                 seed: int | None, keep_sent: int, stats: dict[str, int]) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.source: Source = source if source is not None else constant()
        self.interval_s = interval_s
        self.noise_mm = noise_mm
        self.rng = random.Random(seed)
        self.sent: deque[uart.SentFrame[Any]] = deque(maxlen=keep_sent)
        self.stats = stats
        self._next_frame: float | None = None

    def tick(self, now: float) -> list[bytes]:
        """Automatic output: one frame per ``interval_s``, never a burst after a stall."""
        if self.triggered:
            return []
        if self._next_frame is None:
            self._next_frame = now + self.interval_s
            return []
        if now < self._next_frame:
            return []
        self._next_frame += self.interval_s
        if self._next_frame <= now:
            self._next_frame = now + self.interval_s
        return [self._frame(now, solicited=False)]

    def reset(self, now: float) -> None:
        """Power cycle: the next frame one interval from now."""
        self._next_frame = now + self.interval_s
        self.stats["resets"] += 1

    @abstractmethod
    def _frame(self, now: float, solicited: bool) -> bytes:
        """Measure now and encode the frame sent (``solicited``: the host asked)."""
