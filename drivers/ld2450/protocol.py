"""The LD2450 conversation on the host side, a state machine with the clock passed in.

The codec knows frames; this knows the radar's habits and keeps the host honest about
them (HLK-LD2450 Serial Communication Protocol V1.03, section 2.4):

* Configuration goes enable -> commands -> end, one command at a time, each confirmed by
  its ACK before the next goes out. An ACK is checked against the command in flight
  (:func:`~drivers.ld2450.codec.check_ack`): the wrong command word is an
  :class:`AckMismatch` (the wait goes on), a failure status a :class:`CommandFailed`, and a
  command unanswered after ``retries`` more tries a :class:`NoReply`. After a failure the
  rest of the plan is dropped and the radar is told to end configuration, so it reports
  again whatever went wrong.
* The plan reads before it writes: firmware version, Bluetooth state (the MAC query),
  tracking mode and zone filter are queried, and only what differs from the settings is
  set, so an open does not rewrite the radar's flash. Bluetooth takes effect after a
  restart (section 2.2.10): only then is the radar restarted, and its silence while it
  boots is expected.
* The radar stops reporting while configuration is enabled; :meth:`warming_up` is True
  until the plan is done (or the restart is over).
* Every report frame becomes a :class:`RadarSample` with its time: the receive time, the
  frames of one read spread back one frame period (100 ms, section 2.3) apart. A gap of
  more than one period between frames counts the frames missed (``dropped``).

The command machinery (one in flight, re-sends, duplicates) is
:class:`drivers.families.commands.CommandChannel`, shared with the SDS011. Like h11, it does
no I/O: callers pass in received bytes and the current monotonic time, and collect the bytes
it wants sent from :meth:`LD2450Protocol.data_to_send`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from ..families import commands
from . import codec
from .codec import Ack, Firmware, Target, ZoneFilter

#: How long a restarted radar may stay silent before that is a problem (it boots in ~1 s).
RESTART_S = 3.0
#: Gaps longer than this are outages, not dropped frames (the no-data error reports them).
MAX_GAP_S = 5.0


class RadarSample(NamedTuple):
    """One report frame as the sample stream delivers it: its time (``time.monotonic()``,
    or the emulator's clock) and the targets tracked in it."""

    t: float
    targets: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Settings:
    """What the radar should be set to; None: leave it as it is."""

    tracking: str | None = "multi"
    bluetooth: bool | None = False
    zone_filter: ZoneFilter | None = None

    def __post_init__(self) -> None:
        if self.tracking not in (None, "single", "multi"):
            raise ValueError(f"tracking is 'single' or 'multi', not {self.tracking!r}")


@dataclass(frozen=True, slots=True)
class Request:
    """A command for the radar: its word, bytes and what it is for people."""

    word: int
    raw: bytes
    description: str


@dataclass(frozen=True, slots=True)
class AckMismatch:
    """An ACK that does not answer the command in flight (or came with none in flight)."""

    ack: Ack
    request: Request | None
    reason: str


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """The radar answered the command with a failure status."""

    request: Request
    ack: Ack

    @property
    def reason(self) -> str:
        return f"the radar refused {self.request.description} (ACK status {self.ack.status})"


class NoReply(commands.NoReply[Request]):
    """A command the radar never answered, after every try (``request``, ``attempts``)."""

    __slots__ = ()

    @property
    def reason(self) -> str:
        hint = " (is the radar's RX wired to the Pi's TX?)" if (
            self.request.word == codec.ENABLE_CONFIG) else ""
        return f"no ACK to {self.request.description} after {self.attempts} tries{hint}"


Problem = AckMismatch | CommandFailed | NoReply
ProtocolEvent = RadarSample | Ack | codec.Command | codec.Rejected | Problem
Step = Callable[[], "Request | None"]


def _request(word: int, raw: bytes) -> Request:
    return Request(word, raw, codec.name_of(word))


class LD2450Protocol(commands.CommandChannel[Request, Step]):
    """Host side of the LD2450 protocol for one radar.

    The command queue is the configuration plan: each step makes its request when its turn
    comes (None: nothing to do), so a setting is only written if the query before it showed
    it differs.
    """

    mode = "active"  # the radar streams; the host never asks for a frame
    asleep = False
    no_reply_type = NoReply

    def __init__(self, settings: Settings | None = None, *, configure: bool = True,
                 reply_timeout_s: float = 1.0, retries: int = 2,
                 frame_period_s: float = 1.0 / codec.FRAME_RATE_HZ,
                 restart_s: float = RESTART_S) -> None:
        if reply_timeout_s <= 0 or retries < 0 or frame_period_s <= 0 or restart_s < 0:
            raise ValueError("timeouts and the frame period must be positive, retries and "
                             "restart_s not negative")
        super().__init__(reply_timeout_s, retries)
        self.settings = settings or Settings()
        self.configure = configure
        self.frame_period_s = frame_period_s
        self.restart_s = restart_s
        self.decoder = codec.FrameDecoder()
        # What the radar said about itself (None until an ACK says it).
        self.firmware: Firmware | None = None
        self.radar_bluetooth: bool | None = None
        self.radar_tracking: str | None = None
        self.radar_zone: ZoneFilter | None = None
        #: The last plan ran to its end without a problem.
        self.configured = False
        # Counters (and the command channel's: confirmed, mismatches, duplicates, resends,
        # no_replies).
        self.samples = 0
        self.dropped = 0
        self.failures = 0
        self.restarts = 0
        self._in_config = False
        self._restart_wanted = False
        self._quiet_until = 0.0
        self._prev_t: float | None = None
        self._clean = True  # no command of the current plan has failed

    # -- host actions ----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """The port was (re)opened: forget partial input; configure the radar if asked."""
        self.decoder.reset()
        self._forget()
        self._in_config = False
        self._restart_wanted = False
        self._prev_t = None
        self.configured = False
        self._clean = True
        if self.configure:
            self._queue.extend(self._steps())
        self._pump(now)

    def wake(self, now: float) -> None:
        """The radar has no sleep mode: nothing to do."""

    def request_read(self) -> None:
        """The radar streams: nothing to ask."""

    def warming_up(self, now: float) -> bool:
        """True while the radar is being configured (it does not report) or restarting."""
        return self.busy or now < self._quiet_until

    # -- radar input (tick(), busy and data_to_send() come with the command channel) -------------
    def receive(self, data: bytes, now: float) -> list[ProtocolEvent]:
        """Decode received bytes into samples, ACKs and problems."""
        return self._handle(self.decoder.feed(data), now)

    def line_idle(self, now: float) -> list[ProtocolEvent]:
        """The port has been silent for a while: give up on any partial frame."""
        return self._handle(self.decoder.expire(), now)

    # -- the plan ----------------------------------------------------------------------------------
    def _steps(self) -> list[Step]:
        s = self.settings
        steps: list[Step] = [
            lambda: _request(codec.ENABLE_CONFIG, codec.enable_config()),
            lambda: _request(codec.READ_FIRMWARE, codec.command(codec.READ_FIRMWARE)),
        ]
        if s.bluetooth is not None:
            steps.append(lambda: _request(codec.READ_MAC, codec.read_mac()))
        if s.tracking is not None:
            steps += [lambda: _request(codec.QUERY_TRACKING, codec.command(codec.QUERY_TRACKING)),
                      self._set_tracking]
        if s.zone_filter is not None:
            steps += [lambda: _request(codec.QUERY_ZONE, codec.command(codec.QUERY_ZONE)),
                      self._set_zone]
        if s.bluetooth is not None:
            steps.append(self._set_bluetooth)
        steps.append(self._finish)
        return steps

    def _set_tracking(self) -> Request | None:
        want = self.settings.tracking
        if want is None or self.radar_tracking == want:
            return None
        word = codec.SINGLE_TARGET if want == "single" else codec.MULTI_TARGET
        return _request(word, codec.tracking(want))

    def _set_zone(self) -> Request | None:
        want = self.settings.zone_filter
        if want is None or (self.radar_zone is not None and self.radar_zone.same_as(want)):
            return None
        return Request(codec.SET_ZONE, codec.set_zone(want), f"set zone filter {want.mode}")

    def _set_bluetooth(self) -> Request | None:
        want = self.settings.bluetooth
        if want is None or self.radar_bluetooth is None or self.radar_bluetooth == want:
            return None
        return Request(codec.BLUETOOTH, codec.bluetooth(want),
                       f"Bluetooth {'on' if want else 'off'}")

    def _finish(self) -> Request:
        if self._restart_wanted:  # the Bluetooth setting takes effect after a restart
            return _request(codec.RESTART, codec.command(codec.RESTART))
        return _request(codec.END_CONFIG, codec.end_config())

    def _make(self, item: Step) -> Request | None:
        return item()

    def _gave_up(self, request: Request, now: float) -> None:
        self._abort(request, now)

    def _abort(self, failed: Request, now: float) -> None:
        """A command failed: drop the plan; leave configuration so the radar reports."""
        self._queue.clear()
        self.configured = False
        self._clean = False
        self._restart_wanted = False
        if self._in_config and failed.word != codec.END_CONFIG:
            self._queue.append(lambda: _request(codec.END_CONFIG, codec.end_config()))
        self._pump(now)

    def _confirm(self, req: Request, ack: Ack, now: float) -> None:
        """What a confirmed command tells us about the radar."""
        info = codec.describe_value(ack.command, ack.value)
        word = req.word
        if word == codec.ENABLE_CONFIG:
            self._in_config = True
        elif word == codec.READ_FIRMWARE and "firmware" in info:
            self.firmware = Firmware.decode(ack.value)
        elif word == codec.READ_MAC and "bluetooth" in info:
            self.radar_bluetooth = bool(info["bluetooth"])
        elif word == codec.QUERY_TRACKING:
            t = info.get("tracking")
            self.radar_tracking = t if t in ("single", "multi") else None
        elif word in (codec.SINGLE_TARGET, codec.MULTI_TARGET):
            self.radar_tracking = "single" if word == codec.SINGLE_TARGET else "multi"
        elif word == codec.QUERY_ZONE and "zone_filter" in info:
            self.radar_zone = ZoneFilter.decode(ack.value)
        elif word == codec.SET_ZONE:
            self.radar_zone = self.settings.zone_filter
        elif word == codec.BLUETOOTH:
            self._restart_wanted = True
        elif word == codec.RESTART:
            self._in_config = False
            self.restarts += 1
            self.radar_bluetooth = self.settings.bluetooth
            self._quiet_until = now + self.restart_s
            self._prev_t = None
            self.configured = self._clean
        elif word == codec.END_CONFIG:
            self._in_config = False
            self._prev_t = None
            # Only a plan that got here without a failure counts as configured.
            self.configured = self._clean

    # -- events ------------------------------------------------------------------------------------
    def _handle(self, events: list[codec.Event], now: float) -> list[ProtocolEvent]:
        out: list[ProtocolEvent] = []
        reports = [ev for ev in events if isinstance(ev, codec.Report)]
        k = 0
        for ev in events:
            if isinstance(ev, codec.Report):
                out.append(self._sample(ev, now - (len(reports) - 1 - k) * self.frame_period_s))
                k += 1
            elif isinstance(ev, Ack):
                got = self._on_ack(ev, now)
                if got is not None:
                    out.append(got)
            else:
                out.append(ev)
        return out

    def _sample(self, report: codec.Report, t: float) -> RadarSample:
        prev = self._prev_t
        if prev is not None:
            t = max(t, prev)
            gap = t - prev
            if gap <= MAX_GAP_S:
                self.dropped += max(0, round(gap / self.frame_period_s) - 1)
        self._prev_t = t
        self._quiet_until = 0.0  # the radar is back from its restart
        self.samples += 1
        return RadarSample(t, report.targets)

    def _on_ack(self, reply: Ack, now: float) -> Ack | Problem | None:
        req = self._inflight
        why = codec.check_ack(req.word, reply) if req is not None else (
            f"unexpected ACK for {reply.command:04x} ({codec.name_of(reply.command)}): "
            "no command in flight")
        # An ACK for the command in flight with a failure status settles it: do not insist.
        verdict = self._settle(reply.raw, why, req is not None and reply.command == req.word)
        if verdict == "duplicate":  # a late answer to an earlier try
            return None
        if verdict == "mismatch":
            assert why is not None
            return AckMismatch(reply, req, why)
        assert req is not None
        if verdict == "refused":
            self.failures += 1
            self._abort(req, now)
            return CommandFailed(req, reply)
        self._confirm(req, reply, now)
        self._pump(now)
        return reply
