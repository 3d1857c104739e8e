"""The host side of a UART distance ranger, as a state machine with the clock passed in.

Shared by the A02YYUW, JSN-SR04T and MaxBotix drivers (:mod:`drivers.families.ranger_device`
drives it over pyserial). The codec knows frames;
this knows what a frame means: a distance the sensor cannot have measured
(inside the blind zone, the sensor's "no echo" encoding, beyond its range) is
not a reading. It is reported as :class:`Discarded` with the reason and counted
(:attr:`DistanceProtocol.no_echo`, :attr:`DistanceProtocol.out_of_range`), and
it still shows the sensor is alive. In ``triggered`` mode the host writes a
trigger byte for every reading it wants; in ``auto`` mode it only listens.
Like h11, it does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..framing import Rejected

MODES = ("auto", "triggered")


@dataclass(frozen=True, slots=True)
class Sample:
    """A frame carrying a distance the sensor really measured."""

    frame: Any  # has ``d`` (metres) and ``distance_mm``
    t: float


@dataclass(frozen=True, slots=True)
class Discarded:
    """A good frame that is no reading, and why (no echo, out of range)."""

    frame: Any
    reason: str
    kind: str  # "no_echo" or "out_of_range"


ProtocolEvent = Sample | Discarded | Rejected

#: frame -> None (a reading) or (kind, reason)
Classifier = Callable[[Any], "tuple[str, str] | None"]


def range_classifier(blind_mm: int, max_mm: int) -> Classifier:
    """Frames at or inside ``blind_mm`` are no echo (ESPHome publishes only > blind);
    beyond ``max_mm`` they are out of range."""

    def classify(frame: Any) -> tuple[str, str] | None:
        mm = frame.distance_mm
        if mm <= blind_mm:
            return "no_echo", f"no echo or inside the blind zone ({mm} mm <= {blind_mm} mm)"
        if mm > max_mm:
            return "out_of_range", f"beyond the sensor's range ({mm} mm > {max_mm} mm)"
        return None

    return classify


class DistanceProtocol:
    """Host side of a streaming or triggered UART distance sensor."""

    def __init__(
        self,
        decoder: Any,
        classify: Classifier,
        *,
        mode: str = "auto",
        trigger: bytes = b"\x55",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode == "triggered" and not trigger:
            raise ValueError("triggered mode needs a trigger byte")
        self.decoder = decoder
        self.classify = classify
        self.mode = mode
        self.trigger = bytes(trigger)
        self.asleep = False
        self.samples = 0
        self.no_echo = 0
        self.out_of_range = 0
        self.triggers = 0
        self._outbox = bytearray()

    def start(self, now: float) -> None:
        """The port was (re)opened: forget partial frames."""
        self.decoder.reset()
        self._outbox.clear()

    def wake(self, now: float) -> None:
        """Nothing to wake: the sensor measures whenever it is powered."""

    def warming_up(self, now: float) -> bool:
        return False

    def request_read(self) -> None:
        """Triggered mode: start one measurement."""
        if self.mode == "triggered":
            self.triggers += 1
            self._outbox += self.trigger

    def data_to_send(self) -> bytes:
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def receive(self, data: bytes, now: float) -> list[ProtocolEvent]:
        return [self._on_event(ev, now) for ev in self.decoder.feed(data)]

    def line_idle(self, now: float) -> list[ProtocolEvent]:
        return [self._on_event(ev, now) for ev in self.decoder.expire()]

    def _on_event(self, ev: Any, now: float) -> ProtocolEvent:
        if isinstance(ev, Rejected):
            return ev
        verdict = self.classify(ev)
        if verdict is None:
            self.samples += 1
            return Sample(ev, now)
        kind, reason = verdict
        if kind == "no_echo":
            self.no_echo += 1
        else:
            self.out_of_range += 1
        return Discarded(ev, reason, kind)
