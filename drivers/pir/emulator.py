"""A PIR motion sensor emulated on gpiozero's mock pins, its output following a script.

An HC-SR501 (datasheet: BISS0001 controller) turns "a warm body moving in view" into its
output like this, and :class:`PirScript` does the same over *presence spells* (start, end):

* the output goes high when motion starts, and stays high until ``hold_s`` after the last
  motion: in repeatable-trigger mode (jumper H, ``retrigger=True``) motion during the hold
  extends it; in single-trigger mode (L) the output drops ``hold_s`` after it rose, whatever
  happens meanwhile (the TIME potentiometer sets the hold: about 3 s to 5 min);
* after the output drops, motion is ignored for ``block_s`` (2.5 s by default on the
  module); motion still going on when the block ends triggers again.

:class:`ScriptedPin` is a gpiozero ``MockPin`` whose level is the script's at the time it
is read (gpiozero's ``MotionSensor`` polls its pin on its own thread, so no thread is needed
here); ``active_high=False`` inverts it, for an open-collector module read with the pull-up.
:class:`EndlessPresence` makes people pass by for ever from a seed (``citynode simulate``).

    >>> from drivers.pir import PIR
    >>> from drivers.pir.emulator import PirScript, emulated_pir
    >>> factory, pin = emulated_pir(PirScript([(5.0, 9.0)]), pin=4)
    >>> pir = PIR(4, pin_factory=factory)
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

__all__ = ["BLOCK_S", "HOLD_S", "EndlessPresence", "PirScript", "ScriptedPin", "emulated_pir"]

HOLD_S = 3.0  # the HC-SR501's shortest hold (TIME potentiometer fully anticlockwise)
BLOCK_S = 2.5  # the HC-SR501's block time after the output drops


def _merged(spells: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted(spells):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def output_spells(presence: Iterable[tuple[float, float]], *, hold_s: float = HOLD_S,
                  block_s: float = BLOCK_S, retrigger: bool = True) -> list[tuple[float, float]]:
    """When the module's output is high, for motion during each presence spell."""
    spells = _merged(presence)
    out: list[tuple[float, float]] = []
    blocked_until = -math.inf
    i = 0
    while i < len(spells):
        start, end = spells[i]
        on = max(start, blocked_until)
        if on >= end:
            i += 1
            continue
        if retrigger:
            off = end + hold_s
            i += 1
            while i < len(spells) and spells[i][0] < off:
                off = max(off, spells[i][1] + hold_s)
                i += 1
        else:
            off = on + hold_s
            while i < len(spells) and spells[i][1] <= off + block_s:
                i += 1  # over before the block ends: ignored
        out.append((on, off))
        blocked_until = off + block_s
    return out


class PirScript:
    """The module's output over ``presence`` spells: ``script(t) -> bool`` (high)."""

    def __init__(self, presence: Iterable[tuple[float, float]] = (), *, hold_s: float = HOLD_S,
                 block_s: float = BLOCK_S, retrigger: bool = True) -> None:
        if hold_s <= 0 or block_s < 0:
            raise ValueError("hold_s must be positive and block_s not negative")
        self.presence = _merged(presence)
        self.output = output_spells(self.presence, hold_s=hold_s, block_s=block_s,
                                    retrigger=retrigger)
        self._ons = [on for on, _ in self.output]

    def __call__(self, t: float) -> bool:
        i = bisect.bisect_right(self._ons, t) - 1
        return i >= 0 and t < self.output[i][1]


class EndlessPresence:
    """People passing through the PIR's view for ever, in 60 s blocks from ``seed``: each in
    view for 2-8 s, ``rate_per_min`` of them on average. The module's hold and block are
    applied within each block."""

    SPAN_S = 60.0  # the blocks of people made at a time

    def __init__(self, seed: int, *, rate_per_min: float = 3.0, hold_s: float = HOLD_S,
                 block_s: float = BLOCK_S) -> None:
        self.seed, self.rate_per_min = seed, rate_per_min
        self.hold_s, self.block_s = hold_s, block_s
        self._blocks: dict[int, PirScript] = {}

    def _block(self, k: int) -> PirScript:
        script = self._blocks.get(k)
        if script is None:
            rng = random.Random(f"{self.seed}:{k}")
            start, spells = k * self.SPAN_S, []
            t = start
            while self.rate_per_min > 0:
                t += rng.expovariate(self.rate_per_min / 60.0)
                if t >= start + self.SPAN_S:
                    break
                spells.append((t, min(t + rng.uniform(2.0, 8.0), start + self.SPAN_S)))
            script = PirScript(spells, hold_s=self.hold_s, block_s=self.block_s)
            self._blocks = {b: s for b, s in self._blocks.items() if b >= k - 2}
            self._blocks[k] = script
        return script

    def __call__(self, t: float) -> bool:
        return self._block(math.floor(t / self.SPAN_S))(t)


class ScriptedPin(MockPin):
    """A mock input pin whose level follows ``script(clock())`` when read."""

    def __init__(self, factory: Any, info: Any, script: Callable[[float], bool] | None = None,
                 active_high: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(factory, info)
        self.script: Callable[[float], bool] = script or (lambda t: False)
        self.active_high = active_high
        self.clock = clock
        self.reads = 0

    def _get_state(self) -> bool:
        self.reads += 1
        high = bool(self.script(self.clock()))
        return high if self.active_high else not high


def emulated_pir(script: Callable[[float], bool], *, pin: Any = 4,
                 factory: MockFactory | None = None, active_high: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> tuple[MockFactory, ScriptedPin]:
    """A MockFactory (``factory``, or a new one) with an emulated PIR output on ``pin``;
    returns the factory and the pin (its ``script`` can be swapped). Create it before the
    driver opens the pin."""
    factory = factory or MockFactory()
    got = factory.pin(pin, pin_class=ScriptedPin, script=script, active_high=active_high,
                      clock=clock)
    if not isinstance(got, ScriptedPin):
        raise ValueError(f"GPIO {pin} is already a {type(got).__name__} on this factory")
    return factory, got
