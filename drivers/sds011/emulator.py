"""The SDS011 itself, emulated: the device side of the protocol, with no I/O.

Behaviour follows the Nova "Laser Dust Sensor Control Protocol V1.3" and what
field drivers learned (see ``sensor-protocols.md`` section 2):

* At power-up it is in **active** mode with working period 0: a 10-byte
  ``AA C0`` frame every second. Reporting mode, working period and device id
  survive a power cycle (:meth:`SDS011Model.reset`); sleep does not.
* Every valid command addressed to its id (or to ``FFFF``) gets an ``AA C5``
  reply echoing the command and the value in force; ``query data`` gets an
  ``AA C0`` frame. Commands with a bad checksum or tail, for another device id,
  or that it does not know are ignored, as the real sensor does. Commands may
  arrive split or glued together.
* Sleep (command 6) stops the fan and the output; the MCU sleeps too and the
  first command after a sleep only wakes it and is lost (the host must retry).
  Work restarts the fan: frames are zeros, then erratic, for ``warmup_s``.
* Working period n > 0: the sensor works ``work_s`` (30 s), reports once, and
  sleeps until n minutes have passed since the work began. ``minute_s`` makes
  the "minute" shorter for tests. In query mode the measurement is kept and
  sent when asked.
* The reply to *set device id* carries the new id.

Run it behind a pty with :class:`drivers.emulation.SerialEmulator`::

    >>> from drivers.emulation import SerialEmulator
    >>> emu = SerialEmulator(SDS011Model(default_source()), "/tmp/citynode/sds0")
    >>> emu.start()

Values come from a *source* returning PM2.5 and PM10 in µg/m³: the PMS5003
emulator's sources (a replay of the recorded PMS5003 log, or the built-in urban
day) work as they are, and :func:`default_source` adds the tenths the SDS011
reports.
"""

from __future__ import annotations

import logging
import numbers
import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from ..emulation import uart
from ..pms5003.emulator import PMValues, builtin_profile, find_csv, replay_csv
from .codec import (
    ANY_ID,
    CMD_FIRMWARE,
    CMD_PERIOD,
    CMD_QUERY_DATA,
    CMD_REPORT_MODE,
    CMD_SET_ID,
    CMD_SLEEP_WORK,
    COMMAND_LEN,
    HEAD,
    HOST,
    MAX_PERIOD_MIN,
    MAX_RAW,
    REPORT_MODES,
    HostCommand,
    encode_frame,
    encode_reply,
    parse_command,
)

log = logging.getLogger(__name__)

INTERVAL_S = 1.0  # continuous mode: a frame every second
WARMUP_S = 15.0  # zeros, then erratic values, after the fan starts
WORK_S = 30.0  # working period > 0: the fan runs this long before each report
DEFAULT_ID = 0xA160  # the datasheet's example sensor
DEFAULT_FIRMWARE = (15, 7, 10)  # the datasheet's example: 2015-07-10
COMMAND_HEADER = bytes([HEAD, HOST])


class SDSValues(NamedTuple):
    """One frame's worth of values: PM2.5 and PM10 in µg/m³."""

    pm25: float
    pm10: float


ZERO = SDSValues(0.0, 0.0)

#: A source is called with the model's clock and returns the next values
#: (:class:`SDSValues`, a PMS5003 :class:`PMValues`, or a (pm25, pm10) pair);
#: an iterator of those is accepted too.
Source = Callable[[float], SDSValues | PMValues | tuple[float, float]]
SourceLike = Source | Iterable[SDSValues | PMValues | tuple[float, float]]


def coerce_values(v: object) -> SDSValues:
    """Accept :class:`SDSValues`, a PMS5003 :class:`PMValues` (atmospheric values), or a pair."""
    if isinstance(v, SDSValues):
        return v
    if isinstance(v, PMValues):
        return SDSValues(float(v.pm25), float(v.pm10))
    if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, numbers.Real) for x in v):
        return SDSValues(float(v[0]), float(v[1]))
    raise ValueError(f"SDS011 values need (pm25, pm10), got {v!r}")


def as_source(source: SourceLike) -> Source:
    """Turn a callable or an iterable of values into a :data:`Source`."""
    return uart.as_source(source, coerce_values)


class WithTenths:
    """Wrap a whole-µg/m³ source (the PMS5003's) so its values have the SDS011's tenths.

    A seeded dither of ±0.5 µg/m³ keeps the mean and never makes PM10 < PM2.5.
    """

    def __init__(self, source: SourceLike, seed: int | None = 0) -> None:
        self.source = as_source(source)
        self.rng = random.Random(seed)

    @property
    def description(self) -> str:
        inner = getattr(self.source, "description", repr(self.source))
        return f"{inner}, with tenths"

    def __call__(self, now: float) -> SDSValues:
        v = coerce_values(self.source(now))
        pm25 = max(0.0, v.pm25 + self.rng.uniform(-0.5, 0.5))
        pm10 = max(pm25, v.pm10 + self.rng.uniform(-0.5, 0.5))
        return SDSValues(round(pm25, 1), round(pm10, 1))


def default_source(seed: int | None = 0, speed: float | None = 1.0) -> Source:
    """Replay the recorded PMS5003 log if it can be found, else the built-in profile; in tenths."""
    path = find_csv()
    if path is not None:
        inner: Source = replay_csv(path, speed=speed)  # type: ignore[assignment]
    else:
        inner = builtin_profile(seed, speed=speed or 1.0)  # type: ignore[assignment]
    src = WithTenths(inner, seed)
    log.info("SDS011 emulator values: %s", src.description)
    return src


# -- the device ----------------------------------------------------------------
#: A data frame the model sent, its values as on the wire (``solicited``: a reply to
#: query data rather than an active-mode report).
SentFrame = uart.SentFrame


class SDS011Model:
    """Device side of an SDS011 (implements :class:`drivers.emulation.DeviceModel`).

    ``receive`` and ``tick`` return a list of chunks, one frame or reply each.
    State (:attr:`mode`, :attr:`asleep`, :attr:`period_min`, :attr:`device_id`,
    :attr:`sent`, :attr:`stats`) is public so tests and the simulator can look at it.
    """

    def __init__(
        self,
        source: SourceLike | None = None,
        *,
        interval_s: float = INTERVAL_S,
        warmup_s: float = WARMUP_S,
        device_id: int = DEFAULT_ID,
        firmware: tuple[int, int, int] = DEFAULT_FIRMWARE,
        mode: str = "active",
        period_min: int = 0,
        minute_s: float = 60.0,
        work_s: float = WORK_S,
        lose_first_command_after_sleep: bool = True,
        seed: int | None = 0,
        keep_sent: int = 1000,
    ) -> None:
        if interval_s <= 0 or minute_s <= 0:
            raise ValueError("interval_s and minute_s must be positive")
        if warmup_s < 0 or work_s < 0:
            raise ValueError("warmup_s and work_s must not be negative")
        if mode not in REPORT_MODES:
            raise ValueError(f"mode must be one of {REPORT_MODES}, not {mode!r}")
        if not 0 <= period_min <= MAX_PERIOD_MIN:
            raise ValueError(f"period_min must be 0..{MAX_PERIOD_MIN}")
        if not 0 <= device_id < ANY_ID:
            raise ValueError("device_id must be 0..0xFFFE (0xFFFF means any sensor)")
        self.source: Source = (as_source(source) if source is not None
                               else WithTenths(builtin_profile(seed), seed))
        self.interval_s = interval_s
        self.warmup_s = warmup_s
        self.device_id = device_id
        self.firmware = firmware
        self.mode = mode
        self.period_min = period_min
        self.minute_s = minute_s
        self.work_s = work_s
        self.lose_first_command_after_sleep = lose_first_command_after_sleep
        self.rng = random.Random(seed)
        self.sent: deque[SentFrame[SDSValues]] = deque(maxlen=keep_sent)
        self.stats = {
            "frames": 0, "replies": 0, "commands": 0, "queries": 0, "bad_commands": 0,
            "other_id": 0, "lost_commands": 0, "ignored_bytes": 0, "wakes": 0, "sleeps": 0,
            "resets": 0,
        }
        self.asleep = False
        self._commands = uart.CommandBuffer(COMMAND_HEADER, COMMAND_LEN, parse_command, self.stats)
        self._mcu_asleep = False
        self._warm_from = float("-inf")  # when the fan last started
        self._started = False
        self._next_frame = 0.0  # period 0, active mode
        self._cycle_start = 0.0  # period > 0
        self._report_at = 0.0
        #: The latest measurement of a working period > 0, and whether it was warm-up junk.
        self._last: tuple[SDSValues, bool] | None = None

    # -- DeviceModel ----------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Host bytes in (any chunking, garbage allowed); replies and frames out."""
        self._power_up(now)
        out: list[bytes] = []
        # Commands with a bad checksum or tail are ignored, as the real sensor does.
        for cmd in self._commands.feed(data):
            out += self._command(cmd, now)
        return out

    def tick(self, now: float) -> list[bytes]:
        """Active mode: one frame per ``interval_s``, or one per working period."""
        self._power_up(now)
        if self.asleep:
            return []
        if self.period_min == 0:
            if self.mode != "active" or now < self._next_frame:
                return []
            self._next_frame += self.interval_s
            if self._next_frame <= now:  # we were not ticked for a while: no burst
                self._next_frame = now + self.interval_s
            return [self._frame(now, solicited=False)]
        if now < self._report_at:
            return []
        warming = self._report_at - self._fan_since() < self.warmup_s
        self._last = (self._measure(self._report_at), warming)
        nxt = self._cycle_start + self.period_min * self.minute_s
        self._start_cycle(nxt if nxt > now else now)
        if self.mode != "active":
            return []  # kept for the next query
        return [self._send(*self._last, now, solicited=False)]

    # -- the power supply and the fan ---------------------------------------------
    def sleep(self, now: float) -> None:
        """Fan and laser off, the MCU asleep until UART traffic wakes it."""
        self._power_up(now)
        self.asleep = True
        self._mcu_asleep = self.lose_first_command_after_sleep
        self.stats["sleeps"] += 1

    def wake(self, now: float) -> None:
        """Fan on (work): warm-up if it was asleep, and the report schedule restarts."""
        self._power_up(now)
        if self.asleep:
            self._warm_from = now
        self.asleep = False
        self._mcu_asleep = False
        self._restart_schedule(now)
        self.stats["wakes"] += 1

    def reset(self, now: float) -> None:
        """Power cycle (brown-out, re-plugged adapter): working, fan spinning up.

        Reporting mode, working period and device id are kept (the sensor stores them).
        """
        self._commands.clear()
        self._started = True
        self.asleep = False
        self._mcu_asleep = False
        self._warm_from = now
        self._last = None
        self._restart_schedule(now)
        self.stats["resets"] += 1

    def warming_up(self, now: float) -> bool:
        return not self.asleep and now - self._fan_since() < self.warmup_s

    def fan_on(self, now: float) -> bool:
        """Whether the fan runs now (a working period > 0 sleeps between reports)."""
        if self.asleep:
            return False
        return self.period_min == 0 or self._cycle_start <= now < self._report_at

    # -- internals --------------------------------------------------------------
    def _power_up(self, now: float) -> None:
        if not self._started:
            self._started = True
            self._restart_schedule(now)

    def _restart_schedule(self, now: float) -> None:
        self._next_frame = now + self.interval_s
        self._start_cycle(now)

    def _start_cycle(self, start: float) -> None:
        self._cycle_start = start
        self._report_at = start + self.work_s

    def _fan_since(self) -> float:
        if self.period_min == 0:
            return self._warm_from
        return max(self._warm_from, self._cycle_start)

    def _reply(self, cmd: int, r3: int, r4: int = 0, r5: int = 0) -> list[bytes]:
        self.stats["replies"] += 1
        return [encode_reply(cmd, (r3, r4, r5), self.device_id)]

    def _command(self, c: HostCommand, now: float) -> list[bytes]:
        if c.device_id not in (ANY_ID, self.device_id):
            self.stats["other_id"] += 1
            return []
        if self._mcu_asleep:
            # The MCU was asleep: this command only woke it.
            self._mcu_asleep = False
            self.stats["lost_commands"] += 1
            return []
        op, value = c.data[0], c.data[1]
        if c.cmd == CMD_QUERY_DATA:
            return self._query(now)
        if c.cmd == CMD_FIRMWARE:
            return self._reply(c.cmd, *self.firmware)
        if c.cmd == CMD_SET_ID:
            self.device_id = int.from_bytes(c.data[10:12], "big")
            return self._reply(c.cmd, 0)  # from the new id
        if op not in (0, 1):
            return self._unknown()
        if c.cmd == CMD_REPORT_MODE:
            if op == 1:
                if value not in (0, 1):
                    return self._unknown()
                self.mode = REPORT_MODES[value]
                self._next_frame = now + self.interval_s
            return self._reply(c.cmd, op, REPORT_MODES.index(self.mode))
        if c.cmd == CMD_SLEEP_WORK:
            if op == 1:
                if value not in (0, 1):
                    return self._unknown()
                reply = self._reply(c.cmd, op, value)  # sent before the fan stops
                if value:
                    self.wake(now)
                else:
                    self.sleep(now)
                return reply
            return self._reply(c.cmd, op, int(not self.asleep))
        if c.cmd == CMD_PERIOD:
            if op == 1 and value <= MAX_PERIOD_MIN:
                self.period_min = value
                self._restart_schedule(now)
            # Out of range: not taken; the reply says what is in force.
            return self._reply(c.cmd, op, self.period_min)
        return self._unknown()

    def _unknown(self) -> list[bytes]:
        self.stats["bad_commands"] += 1  # a valid frame with a command it does not know
        return []

    def _query(self, now: float) -> list[bytes]:
        self.stats["queries"] += 1
        if self.asleep:
            return []
        if self.period_min and not self.fan_on(now) and self._last is not None:
            return [self._send(*self._last, now, solicited=True)]
        return [self._frame(now, solicited=True)]

    def _measure(self, now: float) -> SDSValues:
        values = coerce_values(self.source(now))
        if now - self._fan_since() < self.warmup_s:
            values = self._unstable(values, now)
        return values

    def _frame(self, now: float, solicited: bool) -> bytes:
        warming = self.warming_up(now)
        return self._send(self._measure(now), warming, now, solicited)

    def _send(self, values: SDSValues, warming: bool, now: float, solicited: bool) -> bytes:
        raw = encode_frame(values.pm25, values.pm10, self.device_id)
        wire = SDSValues(int.from_bytes(raw[2:4], "little") / 10,
                         int.from_bytes(raw[4:6], "little") / 10)
        self.sent.append(SentFrame(now, wire, raw, warming, solicited))
        self.stats["frames"] += 1
        return raw

    def _unstable(self, v: SDSValues, now: float) -> SDSValues:
        """Warm-up output: zeros while the fan spins up, then erratic values."""
        if now - self._fan_since() < self.warmup_s / 2:
            return ZERO
        f = self.rng.uniform(0.2, 1.6)
        return SDSValues(min(MAX_RAW / 10, v.pm25 * f), min(MAX_RAW / 10, v.pm10 * f))
