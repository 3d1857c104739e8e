"""The HLK-LD2450 itself, emulated: the radar side of the protocol, with no I/O.

It plays a :class:`~drivers.ld2450.scenes.Scene` through the real protocol: a 30-byte report
every 100 ms (HLK-LD2450 Serial Communication Protocol V1.03, section 2.3), the commands of
section 2.2 answered with their ACKs (nothing but "enable configuration" is answered until
configuration is enabled; no reports while it is; Bluetooth changes take effect at the next
restart, and a restart is a second of silence), and the zone filter applied to what it
reports. Settings stored in the radar's flash (tracking mode, zone filter, Bluetooth)
survive :meth:`LD2450Model.reset`, a power cycle.

What it reports is what such a radar makes of the scene, with its habits
(:class:`Habits`, each with its knob and its own seeded random stream, so turning one habit
off does not change the others):

* it sees people in its field of view (:func:`~drivers.ld2450.scenes.in_view`) and tracks at
  most three (one in single-target mode): a tracked person keeps the slot; a free slot goes
  to the nearest person not tracked yet;
* two tracked people who pass closer than ``swap_distance_m`` may swap slots
  (``swap_prob`` per encounter): the tracker confuses them;
* positions carry Gaussian noise (``noise_mm``), speeds too (``speed_noise_cms``);
* frames are lost (``drop_rate``): on the wire they simply do not arrive;
* multipath: now and then (``ghost_rate`` per frame with someone tracked and a slot free)
  a ghost appears at the mirror image of a tracked person behind a reflecting surface at
  ``mirror_y_m`` and lasts a few frames (``ghost_frames``);
* someone standing still (slower than ``still_mps``) fades out of the report after
  ``fade_after_s`` (the radar suppresses what does not move) and is picked up again when
  they move.

``Habits.clean()`` turns every habit off (no noise, loss, swaps, ghosts or fading), leaving
only what the protocol itself imposes (three slots, the field of view).

Behind a pseudo-terminal: :class:`drivers.emulation.SerialEmulator` with an
:class:`LD2450Model` (the scene plays from the first tick, in a loop if ``loop``). In
process, for a fast evaluation on a virtual clock: :func:`stream` yields ``(t, frame)``
for a whole scene without any I/O or waiting.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from . import codec
from .codec import Firmware, Target, ZoneFilter
from .scenes import Position, Scene, in_view

#: The firmware the emulated radar reports (ESPHome's minimum for its LD2450 component).
FIRMWARE = Firmware(0, 2, 0x02, 0x23090617)
#: The emulated radar's Bluetooth MAC address while Bluetooth is on.
MAC = bytes.fromhex("8f272eb80f65")
#: Distance resolution the radar reports (the manual's example frame: 320 mm).
RESOLUTION_MM = 320
FRAME_PERIOD_S = 1.0 / codec.FRAME_RATE_HZ
#: Seconds a restarted radar stays silent.
BOOT_S = 1.0


@dataclass(frozen=True, slots=True)
class Habits:
    """How far the emulated radar is from a perfect tracker (see the module docstring)."""

    noise_mm: float = 40.0
    speed_noise_cms: float = 5.0
    drop_rate: float = 0.01
    swap_prob: float = 0.3
    swap_distance_m: float = 0.6
    ghost_rate: float = 0.004
    ghost_frames: tuple[int, int] = (2, 6)
    mirror_y_m: float = 4.0
    fade_after_s: float = 8.0
    still_mps: float = 0.15
    max_targets: int = codec.SLOTS

    def __post_init__(self) -> None:
        for name in ("drop_rate", "swap_prob", "ghost_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability, 0..1")
        if self.noise_mm < 0 or self.speed_noise_cms < 0 or self.fade_after_s <= 0:
            raise ValueError("noise must not be negative and fade_after_s must be positive")
        lo, hi = self.ghost_frames
        if not 1 <= lo <= hi:
            raise ValueError("ghost_frames is (shortest, longest), at least one frame")
        if not 1 <= self.max_targets <= codec.SLOTS:
            raise ValueError(f"the radar tracks 1-{codec.SLOTS} targets")

    @classmethod
    def clean(cls) -> Habits:
        """Every habit off: the scene exactly, in at most three slots."""
        return cls(noise_mm=0.0, speed_noise_cms=0.0, drop_rate=0.0, swap_prob=0.0,
                   ghost_rate=0.0, fade_after_s=math.inf)


PROFILES = {"default": Habits(), "clean": Habits.clean()}


class SentReport(NamedTuple):
    """A report frame the model made: when, who is in each slot (a walker's index, "ghost",
    or None), what went on the wire (``b""`` when the frame was dropped)."""

    t: float
    slots: tuple[int | str | None, ...]
    targets: tuple[Target, ...]
    raw: bytes


@dataclass
class _Track:
    walker: int            # the walker tracked, or the one a ghost mirrors
    ghost: int = 0         # frames a ghost has left (0: a real track)


@dataclass
class _Flash:
    """Settings the radar keeps across power cycles."""

    tracking: str = "multi"
    bluetooth: bool = True
    zone: ZoneFilter = field(default_factory=ZoneFilter)


class LD2450Model:
    """The radar's side of the serial line (a :class:`drivers.emulation.DeviceModel`)."""

    def __init__(self, scene: Scene, *, habits: Habits | None = None, seed: int = 0,
                 loop: bool = False, firmware: Firmware = FIRMWARE,
                 ack_faults: dict[int, str] | None = None, keep_sent: int = 1000) -> None:
        self.scene = scene
        self.habits = habits or Habits()
        self.loop = loop
        self.firmware = firmware
        #: Command word -> "refuse" (ACK with status 1), "mute" (no ACK) or "wrong" (the ACK
        #: of another command): to rehearse the host's checks.
        self.ack_faults = dict(ack_faults or {})
        self.flash = _Flash()
        self.sent: deque[SentReport] = deque(maxlen=keep_sent)
        self.commands: list[tuple[int, bytes]] = []  # every command received, in order
        self.stats = {"frames": 0, "dropped": 0, "swaps": 0, "ghosts": 0, "faded": 0,
                      "commands": 0, "ignored": 0, "restarts": 0}
        self._rngs = {name: random.Random(f"{name}:{seed}")
                      for name in ("noise", "drop", "swap", "ghost")}
        self._decoder = codec.FrameDecoder()
        self._config = False
        self._bluetooth_next: bool | None = None
        self._silent_until = -math.inf
        self._origin: float | None = None
        self._next_frame: float | None = None
        self._clear_tracks()

    def _clear_tracks(self) -> None:
        self._slots: list[_Track | None] = [None] * codec.SLOTS
        self._still_since: dict[int, float] = {}
        self._faded: set[int] = set()
        self._close: set[tuple[int, int]] = set()

    # -- DeviceModel ----------------------------------------------------------------------------
    def tick(self, now: float) -> bytes:
        """A report when one is due (not while configuring or booting)."""
        if self._origin is None:
            self._origin = now
            self._next_frame = now
        assert self._next_frame is not None
        if now < self._next_frame:
            return b""
        self._next_frame += FRAME_PERIOD_S
        if self._next_frame <= now:  # fell behind (a stalled thread): no burst of old frames
            self._next_frame = now + FRAME_PERIOD_S
        if self._config or now < self._silent_until:
            return b""
        t = now - self._origin
        if self.loop:
            t %= self.scene.duration_s
        return self.step(t, now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Host bytes: commands, in any chunking; anything else is ignored."""
        out: list[bytes] = []
        for ev in self._decoder.feed(data):
            if isinstance(ev, codec.Command):
                reply = self._command(ev.command, ev.value, now)
                if reply:
                    out.append(reply)
            else:
                self.stats["ignored"] += 1
        return out

    def reset(self, now: float) -> None:
        """Power cycle: out of configuration mode, tracks lost; the flash keeps its settings."""
        self._power_up(now, boot_s=0.0)

    # -- commands (section 2.2) --------------------------------------------------------------------
    def _command(self, word: int, value: bytes, now: float) -> bytes:
        self.stats["commands"] += 1
        self.commands.append((word, value))
        if now < self._silent_until:
            return b""  # booting
        if word != codec.ENABLE_CONFIG and not self._config:
            return b""  # "other commands will be ineffective" (section 2.2.1)
        fault = self.ack_faults.get(word)
        if fault == "mute":
            return b""
        if fault == "refuse":
            return codec.ack(word, 1)
        if fault == "wrong":
            return codec.ack(codec.READ_FIRMWARE if word != codec.READ_FIRMWARE
                             else codec.END_CONFIG, 0)
        status, reply = self._execute(word, value, now)
        return codec.ack(word, status, reply)

    def _execute(self, word: int, value: bytes, now: float) -> tuple[int, bytes]:
        flash = self.flash
        if word == codec.ENABLE_CONFIG:
            self._config = True
            return 0, (1).to_bytes(2, "little") + (codec.MAX_DATA).to_bytes(2, "little")
        if word == codec.END_CONFIG:
            self._config = False
        elif word in (codec.SINGLE_TARGET, codec.MULTI_TARGET):
            flash.tracking = "single" if word == codec.SINGLE_TARGET else "multi"
            self._clear_tracks()
        elif word == codec.QUERY_TRACKING:
            return 0, (1 if flash.tracking == "single" else 2).to_bytes(2, "little")
        elif word == codec.READ_FIRMWARE:
            return 0, self.firmware.encode()
        elif word == codec.READ_MAC:
            return 0, MAC if flash.bluetooth else codec.NO_MAC
        elif word == codec.BLUETOOTH:
            if value not in (b"\x00\x00", b"\x01\x00"):
                return 1, b""
            self._bluetooth_next = value == b"\x01\x00"
        elif word == codec.RESTART:
            self._power_up(now, boot_s=BOOT_S)
        elif word == codec.FACTORY_RESET:
            self.flash = _Flash()
        elif word == codec.SET_BAUD:
            return (0, b"") if int.from_bytes(value, "little") in codec.BAUD_RATES else (1, b"")
        elif word == codec.QUERY_ZONE:
            return 0, flash.zone.encode()
        elif word == codec.SET_ZONE:
            try:
                flash.zone = ZoneFilter.decode(value)
            except ValueError:
                return 1, b""
        else:
            return 1, b""
        return 0, b""

    def _power_up(self, now: float, *, boot_s: float) -> None:
        self._config = False
        self._decoder.reset()
        if self._bluetooth_next is not None:
            self.flash.bluetooth = self._bluetooth_next
            self._bluetooth_next = None
        self._silent_until = now + boot_s
        self._clear_tracks()
        self.stats["restarts"] += 1

    # -- the radar's view of the scene -------------------------------------------------------------
    def step(self, t: float, now: float | None = None) -> bytes:
        """The report for scene time ``t`` (``now``: the clock it is recorded at); ``b""``
        when the frame is dropped."""
        h = self.habits
        seen = {p.walker: p for p in self.scene.at(t)
                if in_view(p.x, p.y) and self.flash.zone.admits(p.x * 1000, p.y * 1000)}
        moving = self._not_faded(seen, t)
        self._release(moving, seen)
        self._acquire(moving)
        self._swap(moving)
        self._ghost(moving)
        targets, slots = self._measure(seen)
        raw = codec.encode_report(targets)
        if h.drop_rate and self._rngs["drop"].random() < h.drop_rate:
            self.stats["dropped"] += 1
            raw_out = b""
        else:
            self.stats["frames"] += 1
            raw_out = raw
        self.sent.append(SentReport(t if now is None else now, slots, tuple(targets), raw_out))
        return raw_out

    def _capacity(self) -> int:
        return 1 if self.flash.tracking == "single" else self.habits.max_targets

    def _not_faded(self, seen: dict[int, Position], t: float) -> dict[int, Position]:
        """Who the radar still reports: standing still too long fades out."""
        h = self.habits
        for w in list(self._still_since):
            if w not in seen:
                del self._still_since[w]
                self._faded.discard(w)
        out: dict[int, Position] = {}
        for w, p in seen.items():
            if math.hypot(p.vx, p.vy) >= h.still_mps:
                self._still_since.pop(w, None)
                self._faded.discard(w)
            elif t - self._still_since.setdefault(w, t) >= h.fade_after_s:
                if w not in self._faded:
                    self._faded.add(w)
                    self.stats["faded"] += 1
                continue
            out[w] = p
        return out

    def _release(self, moving: dict[int, Position], seen: dict[int, Position]) -> None:
        for i, tr in enumerate(self._slots):
            if tr is None:
                continue
            if tr.ghost:
                tr.ghost -= 1
                if tr.ghost == 0 or tr.walker not in seen:
                    self._slots[i] = None
            elif tr.walker not in moving or i >= self._capacity():
                self._slots[i] = None

    def _acquire(self, moving: dict[int, Position]) -> None:
        tracked = {tr.walker for tr in self._slots if tr is not None and not tr.ghost}
        waiting = sorted((w for w in moving if w not in tracked),
                         key=lambda w: math.hypot(moving[w].x, moving[w].y))
        for i in range(self._capacity()):
            if self._slots[i] is None and waiting:
                self._slots[i] = _Track(waiting.pop(0))

    def _swap(self, moving: dict[int, Position]) -> None:
        """Tracks of people passing close to each other may trade places."""
        h = self.habits
        real = [(i, tr.walker) for i, tr in enumerate(self._slots) if tr and not tr.ghost]
        close: set[tuple[int, int]] = set()
        for a in range(len(real)):
            for b in range(a + 1, len(real)):
                (i, wi), (j, wj) = real[a], real[b]
                pi, pj = moving[wi], moving[wj]
                if math.hypot(pi.x - pj.x, pi.y - pj.y) >= h.swap_distance_m:
                    continue
                pair = (min(wi, wj), max(wi, wj))
                close.add(pair)
                if pair in self._close or not h.swap_prob:
                    continue  # one chance per encounter
                if self._rngs["swap"].random() < h.swap_prob:
                    self._slots[i], self._slots[j] = self._slots[j], self._slots[i]
                    self.stats["swaps"] += 1
        self._close = close

    def _ghost(self, moving: dict[int, Position]) -> None:
        """Multipath: a short-lived target at the mirror image of a tracked person."""
        h = self.habits
        if not h.ghost_rate:
            return
        rng = self._rngs["ghost"]
        free = [i for i in range(self._capacity()) if self._slots[i] is None]
        real = [tr.walker for tr in self._slots if tr is not None and not tr.ghost]
        if not free or not real or rng.random() >= h.ghost_rate:
            return
        source = rng.choice(real)
        p = moving[source]
        if not in_view(p.x, 2.0 * h.mirror_y_m - p.y):
            return
        self._slots[free[0]] = _Track(source, ghost=rng.randint(*h.ghost_frames))
        self.stats["ghosts"] += 1

    def _measure(self, seen: dict[int, Position]
                 ) -> tuple[list[Target], tuple[int | str | None, ...]]:
        h = self.habits
        rng = self._rngs["noise"]
        targets: list[Target] = []
        slots: list[int | str | None] = []
        for i, tr in enumerate(self._slots):
            if tr is None or tr.walker not in seen:
                slots.append(None)
                continue
            p = seen[tr.walker]
            if tr.ghost:  # the mirror image moves mirrored
                x, y, vx, vy = p.x, 2.0 * h.mirror_y_m - p.y, p.vx, -p.vy
            else:
                x, y, vx, vy = p.x, p.y, p.vx, p.vy
            r = math.hypot(x, y)
            radial = (x * vx + y * vy) / r if r else 0.0
            x_mm = round(x * 1000 + (rng.gauss(0.0, h.noise_mm) if h.noise_mm else 0.0))
            y_mm = round(y * 1000 + (rng.gauss(0.0, h.noise_mm) if h.noise_mm else 0.0))
            speed = round(radial * 100 + (rng.gauss(0.0, h.speed_noise_cms)
                                          if h.speed_noise_cms else 0.0))
            targets.append(Target(i, max(-0x7FFF, min(0x7FFF, x_mm)),
                                  max(1, min(0x7FFF, y_mm)), max(-0x7FFF, min(0x7FFF, speed)),
                                  RESOLUTION_MM))
            slots.append("ghost" if tr.ghost else tr.walker)
        return targets, tuple(slots)


def stream(scene: Scene, habits: Habits | None = None, seed: int = 0, *,
           tracking: str = "multi", zone: ZoneFilter | None = None,
           start_s: float = 0.0, end_s: float | None = None) -> Iterator[tuple[float, bytes]]:
    """The radar's report frames for ``scene`` on a virtual clock, without I/O: ``(t,
    frame)`` every 100 ms from ``start_s`` to ``end_s`` (the scene's end), dropped frames
    left out. Feed the bytes to :class:`~drivers.ld2450.codec.FrameDecoder` as the driver
    does."""
    model = LD2450Model(scene, habits=habits, seed=seed, keep_sent=1)
    model.flash = replace(model.flash, tracking=tracking, zone=zone or ZoneFilter())
    end = scene.duration_s if end_s is None else end_s
    n = 0
    while (t := start_s + n * FRAME_PERIOD_S) < end:
        raw = model.step(t)
        if raw:
            yield t, raw
        n += 1
