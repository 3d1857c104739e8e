"""The SDS011 conversation, as a state machine with the clock passed in.

The codec knows frames; this knows the sensor's habits and keeps the host
honest about them:

* Every command gets a reply (``AA C5``) that echoes the command and the value
  now in force. Commands go out one at a time; a reply that does not match the
  command in flight (another command, another value, another device id) is
  counted and reported as a :class:`ReplyMismatch`. A command left unanswered
  is sent again (a sleeping sensor's MCU often loses the first command that
  wakes it) and, after ``retries`` more tries, reported as :class:`NoReply`.
* Query mode by default: the node asks for each reading (``query data``), and
  puts the sensor back in query mode if frames arrive unasked.
* Readings are discarded for ``warmup_s`` after open or wake (the fan and the
  laser need time), while asleep, and while both values are 0.0 (the sensor's
  "no data yet", as ESPHome treats it).
* Firmware version, device id and the state the sensor reports (mode, working,
  period) are tracked from the replies as they arrive.

The command machinery (one in flight, re-sends, duplicates) is
:class:`drivers.families.commands.CommandChannel`, shared with the LD2450. Like
h11, it does no I/O: callers pass in received bytes and the current monotonic
time, and collect the bytes it wants sent from :meth:`SDS011Protocol.data_to_send`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..families import commands
from . import codec
from .codec import ANY_ID, format_id

MODES = codec.REPORT_MODES  # ("active", "query")

#: Do not re-send the query-mode command more often than this while frames
#: keep arriving unasked (the sensor may simply not have acted on it yet).
REASSERT_HOLDOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class Sample:
    """A good frame received outside the warm-up period."""

    frame: codec.Frame
    t: float


@dataclass(frozen=True, slots=True)
class Discarded:
    """A good frame thrown away, and why (warm-up, sleeping, no data yet, other device)."""

    frame: codec.Frame
    reason: str


@dataclass(frozen=True, slots=True)
class Request:
    """A command for the sensor and what its reply must say.

    ``op`` is the expected byte 3 of the reply (0 query, 1 set), ``value`` the
    expected byte 4 and ``reply_id`` the expected device id; None: not checked.
    """

    raw: bytes
    cmd: int
    description: str
    op: int | None = None
    value: int | None = None
    reply_id: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyMismatch:
    """A reply that does not confirm the command in flight (or came unasked)."""

    reply: codec.Reply
    expected: Request | None
    reason: str


class NoReply(commands.NoReply[Request]):
    """A command the sensor never answered, after every retry (``request``, ``attempts``)."""

    __slots__ = ()


ProtocolEvent = Sample | Discarded | codec.Reply | ReplyMismatch | NoReply | codec.Rejected


def _describe_value(cmd: int, value: int) -> str:
    names = {codec.CMD_REPORT_MODE: MODES, codec.CMD_SLEEP_WORK: codec.WORK_STATES}.get(cmd)
    if names is not None and value < len(names):
        return names[value]
    if cmd == codec.CMD_PERIOD:
        return f"{value} min"
    return str(value)


class SDS011Protocol(commands.CommandChannel[Request, Request]):
    """Host side of the SDS011 protocol for one sensor."""

    no_reply_type = NoReply

    def __init__(
        self,
        mode: str = "query",
        warmup_s: float = 15.0,
        *,
        device_id: int = ANY_ID,
        period_min: int = 0,
        reply_timeout_s: float = 1.0,
        retries: int = 3,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if warmup_s < 0:
            raise ValueError("warmup_s must not be negative")
        if not 0 <= period_min <= codec.MAX_PERIOD_MIN:
            raise ValueError(f"period_min must be 0..{codec.MAX_PERIOD_MIN}")
        if not 0 <= device_id <= 0xFFFF:
            raise ValueError("device_id must fit 16 bits (0xFFFF: any sensor)")
        super().__init__(reply_timeout_s, retries)
        self.mode = mode
        self.warmup_s = warmup_s
        self.device_id = device_id
        self.period_min = period_min
        self.decoder = codec.FrameDecoder()
        self.asleep = False
        # What the sensor said about itself (None until a reply says it).
        self.firmware: tuple[int, int, int] | None = None
        self.sensor_id: int | None = None
        self.sensor_mode: str | None = None
        self.sensor_working: bool | None = None
        self.sensor_period: int | None = None
        # Counters (and the command channel's: confirmed, mismatches, duplicates, resends,
        # no_replies).
        self.discarded_warmup = 0
        self.discarded_zero = 0
        self.reasserts = 0
        self._warm_until = 0.0
        self._reads_outstanding = 0
        self._last_reassert = float("-inf")

    # -- requests ---------------------------------------------------------------
    @property
    def _reply_id(self) -> int | None:
        return None if self.device_id == ANY_ID else self.device_id

    def _set_mode_request(self, mode: str) -> Request:
        return Request(codec.set_reporting_mode(mode, self.device_id), codec.CMD_REPORT_MODE,
                       f"set {mode} mode", 1, MODES.index(mode), self._reply_id)

    def _work_request(self, work: bool) -> Request:
        return Request(codec.set_working(work, self.device_id), codec.CMD_SLEEP_WORK,
                       "work" if work else "sleep", 1, int(work), self._reply_id)

    def _period_request(self, minutes: int) -> Request:
        return Request(codec.set_working_period(minutes, self.device_id), codec.CMD_PERIOD,
                       f"set working period {minutes} min", 1, minutes, self._reply_id)

    # -- host actions --------------------------------------------------------------
    def start(self, now: float) -> None:
        """The port was (re)opened: wake the sensor, set mode and period, ask its firmware."""
        self.decoder.reset()
        self._forget()
        self._reads_outstanding = 0
        self._queue.append(self._work_request(True))
        self._queue.append(self._set_mode_request(self.mode))
        self._queue.append(self._period_request(self.period_min))
        self._queue.append(Request(codec.query_firmware(self.device_id), codec.CMD_FIRMWARE,
                                   "query firmware", reply_id=self._reply_id))
        self.asleep = False
        self._warm_until = now + self.warmup_s
        self._last_reassert = now
        self._pump(now)

    def wake(self, now: float) -> None:
        """Fan and laser on; readings are discarded for ``warmup_s`` from now.

        The warm-up restarts when the sensor confirms the wake, so a first command
        lost to the sleeping MCU does not shorten it.
        """
        self.asleep = False
        self._warm_until = now + self.warmup_s
        self._replace_power_request(True)
        self._pump(now)

    def sleep(self, now: float) -> None:
        """Fan and laser off (the laser lasts about 8000 h: sleep between measurements)."""
        self.asleep = True
        self._reads_outstanding = 0
        self._replace_power_request(False)
        self._pump(now)

    def set_working_period(self, minutes: int, now: float) -> None:
        """0: continuous; 1-30: the sensor works 30 s then sleeps, once per ``minutes``."""
        self.period_min = minutes
        self._queue.append(self._period_request(minutes))  # raises ValueError if out of range
        self._pump(now)

    def set_device_id(self, new_id: int, now: float) -> None:
        """Give the sensor a new id; once confirmed, commands are addressed to it."""
        self._queue.append(Request(codec.set_device_id(new_id, self.device_id), codec.CMD_SET_ID,
                                   f"set device id {format_id(new_id)}", reply_id=new_id))
        self._pump(now)

    def query_firmware(self, now: float) -> None:
        self._queue.append(Request(codec.query_firmware(self.device_id), codec.CMD_FIRMWARE,
                                   "query firmware", reply_id=self._reply_id))
        self._pump(now)

    def request_read(self) -> None:
        """Query mode: ask for one frame."""
        if self.mode != "query" or self.asleep:
            return
        self._reads_outstanding = min(self._reads_outstanding + 1, 3)
        self._outbox += codec.query_data(self.device_id)

    def warming_up(self, now: float) -> bool:
        return not self.asleep and now < self._warm_until

    # -- sensor input (tick(), busy and data_to_send() come with the command channel) --
    def receive(self, data: bytes, now: float) -> list[ProtocolEvent]:
        """Decode received bytes into events, applying the sensor's habits."""
        return self._handle(self.decoder.feed(data), now)

    def line_idle(self, now: float) -> list[ProtocolEvent]:
        """The port has been silent for a while: give up on any partial frame."""
        return self._handle(self.decoder.expire(), now)

    # -- internals -------------------------------------------------------------------
    def _replace_power_request(self, work: bool) -> None:
        self._queue = deque(r for r in self._queue if r.cmd != codec.CMD_SLEEP_WORK)
        self._queue.appendleft(self._work_request(work))

    def _make(self, item: Request) -> Request:
        return item  # the queue holds the requests themselves

    def _handle(self, events: list[codec.Event], now: float) -> list[ProtocolEvent]:
        out: list[ProtocolEvent] = []
        for ev in events:
            if isinstance(ev, codec.Frame):
                out.append(self._on_frame(ev, now))
            elif isinstance(ev, codec.Reply):
                got = self._on_reply(ev, now)
                if got is not None:
                    out.append(got)
            else:
                out.append(ev)
        return out

    def _mismatch(self, reply: codec.Reply, req: Request) -> str | None:
        """Why ``reply`` does not confirm ``req`` (None: it does)."""
        if reply.cmd != req.cmd:
            return (f"reply to command {reply.cmd:02x} while waiting for "
                    f"{req.cmd:02x} ({req.description})")
        if req.reply_id is not None and reply.device_id != req.reply_id:
            return (f"{req.description}: reply from device {format_id(reply.device_id)}, "
                    f"expected {format_id(req.reply_id)}")
        if req.op is not None and reply.data[0] != req.op:
            return f"{req.description}: reply says op {reply.data[0]}, expected {req.op}"
        if req.value is not None and reply.value != req.value:
            return (f"{req.description}: sensor says "
                    f"{_describe_value(reply.cmd, reply.value)}")
        return None

    def _track(self, reply: codec.Reply) -> None:
        self.sensor_id = reply.device_id
        v = reply.value
        if reply.cmd == codec.CMD_FIRMWARE:
            self.firmware = reply.firmware
        elif reply.cmd == codec.CMD_REPORT_MODE and v < len(MODES):
            self.sensor_mode = MODES[v]
        elif reply.cmd == codec.CMD_SLEEP_WORK and v < 2:
            self.sensor_working = bool(v)
        elif reply.cmd == codec.CMD_PERIOD and v <= codec.MAX_PERIOD_MIN:
            self.sensor_period = v

    def _on_reply(self, reply: codec.Reply, now: float) -> codec.Reply | ReplyMismatch | None:
        self._track(reply)
        req = self._inflight
        why = "unexpected reply: no command in flight" if req is None else self._mismatch(
            reply, req)
        # A reply to this command, just not as asked, settles it: do not insist.
        verdict = self._settle(reply.raw, why, req is not None and reply.cmd == req.cmd)
        if verdict == "confirmed":
            assert req is not None
            if req.cmd == codec.CMD_SET_ID and self.device_id != ANY_ID:
                self.device_id = reply.device_id
            if req.cmd == codec.CMD_SLEEP_WORK and req.value == 1 and not self.asleep:
                # The fan starts now, not when the (perhaps lost) first try went out.
                self._warm_until = max(self._warm_until, now + self.warmup_s)
            self._pump(now)
            return reply
        if verdict == "duplicate":  # the late answer to an earlier try
            return None
        if verdict == "refused":
            self.mismatches += 1
            self._pump(now)
        assert why is not None
        return ReplyMismatch(reply, req, why)

    def _on_frame(self, frame: codec.Frame, now: float) -> Sample | Discarded:
        self.sensor_id = frame.device_id
        if self.mode == "query":
            if self._reads_outstanding:
                self._reads_outstanding -= 1
            elif now - self._last_reassert >= REASSERT_HOLDOFF_S and not any(
                    r.cmd == codec.CMD_REPORT_MODE
                    for r in (self._inflight, *self._queue) if r is not None):
                # An unasked frame: the sensor is in active mode (someone else set it,
                # or it never took our command). Put it back.
                self._queue.append(self._set_mode_request("query"))
                self._last_reassert = now
                self.reasserts += 1
                self._pump(now)
        if self.asleep:
            return Discarded(frame, "sensor should be asleep")
        if self.device_id != ANY_ID and frame.device_id != self.device_id:
            return Discarded(frame, f"frame from device {format_id(frame.device_id)}, "
                                    f"expected {format_id(self.device_id)}")
        if now < self._warm_until:
            self.discarded_warmup += 1
            return Discarded(frame, "warming up")
        if frame.pm25 == 0 and frame.pm10 == 0:
            self.discarded_zero += 1
            return Discarded(frame, "no data yet (both values 0.0)")
        return Sample(frame, now)
