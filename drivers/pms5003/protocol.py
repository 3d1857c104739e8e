"""The PMS5003 conversation, as a state machine with the clock passed in.

The codec knows frames; this knows the sensor's habits: it powers up in active
mode, it returns to active mode after every wake (so passive mode must be
re-asserted), and its first readings after a wake are unreliable until the fan
has run for about 30 s. Like h11, it does no I/O: callers pass in received bytes
and the current monotonic time, and collect the bytes it wants sent from
:meth:`PMS5003Protocol.data_to_send`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec

MODES = ("active", "passive")


@dataclass(frozen=True, slots=True)
class Sample:
    """A good frame received outside the warm-up period."""

    frame: codec.Frame
    t: float


@dataclass(frozen=True, slots=True)
class Discarded:
    """A good frame thrown away, and why (warm-up, sleeping)."""

    frame: codec.Frame
    reason: str


ProtocolEvent = Sample | Discarded | codec.Ack | codec.Rejected

#: Do not re-send the passive-mode command more often than this while frames
#: keep arriving unasked (the sensor may simply not have acted on it yet).
REASSERT_HOLDOFF_S = 5.0


class PMS5003Protocol:
    """Host side of the PMS5003 protocol for one sensor."""

    def __init__(self, mode: str = "passive", warmup_s: float = 30.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if warmup_s < 0:
            raise ValueError("warmup_s must not be negative")
        self.mode = mode
        self.warmup_s = warmup_s
        self.decoder = codec.FrameDecoder()
        self.asleep = False
        self.discarded_warmup = 0
        self.reasserts = 0
        self._outbox = bytearray()
        self._warm_until = 0.0
        self._reads_outstanding = 0
        self._last_reassert = float("-inf")

    # -- host actions --------------------------------------------------------
    def start(self, now: float) -> None:
        """The port was (re)opened: wake the sensor, set the mode, start warm-up."""
        self.decoder.reset()
        self._reads_outstanding = 0
        self.wake(now)
        if self.mode == "active":
            self._outbox += codec.SET_ACTIVE

    def wake(self, now: float) -> None:
        """Spin the fan up; readings are discarded for ``warmup_s`` from now."""
        self.asleep = False
        self._warm_until = now + self.warmup_s
        self._outbox += codec.WAKE
        if self.mode == "passive":
            # The sensor comes back in active mode after every wake.
            self._outbox += codec.SET_PASSIVE
            self._last_reassert = now

    def sleep(self) -> None:
        """Stop the fan and laser (saves the laser's life between measurements)."""
        self.asleep = True
        self._reads_outstanding = 0
        self._outbox += codec.SLEEP

    def request_read(self) -> None:
        """Passive mode: ask for one frame."""
        if self.mode != "passive" or self.asleep:
            return
        self._reads_outstanding = min(self._reads_outstanding + 1, 3)
        self._outbox += codec.READ

    def warming_up(self, now: float) -> bool:
        return not self.asleep and now < self._warm_until

    def data_to_send(self) -> bytes:
        """Bytes the host should write to the sensor now (empties the outbox)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    # -- sensor input --------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[ProtocolEvent]:
        """Decode received bytes into events, applying the sensor's habits."""
        return [self._on_frame(ev, now) if isinstance(ev, codec.Frame) else ev
                for ev in self.decoder.feed(data)]

    def line_idle(self, now: float) -> list[ProtocolEvent]:
        """The port has been silent for a while: give up on any partial frame."""
        return [self._on_frame(ev, now) if isinstance(ev, codec.Frame) else ev
                for ev in self.decoder.expire()]

    def _on_frame(self, frame: codec.Frame, now: float) -> Sample | Discarded:
        if self.mode == "passive":
            if self._reads_outstanding:
                self._reads_outstanding -= 1
            elif now - self._last_reassert >= REASSERT_HOLDOFF_S:
                # An unasked frame: the sensor fell back to active mode (reset,
                # brown-out, or a wake we did not see). Put it back.
                self._outbox += codec.SET_PASSIVE
                self._last_reassert = now
                self.reasserts += 1
        if self.asleep:
            return Discarded(frame, "sensor should be asleep")
        if now < self._warm_until:
            self.discarded_warmup += 1
            return Discarded(frame, "warming up")
        return Sample(frame, now)
