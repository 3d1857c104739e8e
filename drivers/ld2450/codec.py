"""HLK-LD2450 24 GHz radar wire protocol, with no I/O at all.

Facts from Hi-Link's "HLK-LD2450 Serial Communication Protocol" V1.03 (2023-10-17), cited by
section:

* 2.1.1: every multi-byte field is little-endian.
* 2.3: the radar reports 10 frames a second, 30 bytes each: ``AA FF 03 00``, three 8-byte
  target slots, ``55 CC``. A slot is x, y, speed and distance resolution, 16 bits each; an
  empty slot is all zeros. x and y (mm) and speed (cm/s) are *not* two's complement: the top
  bit set means positive and the other 15 bits are the magnitude; top bit clear means
  negative (``0x030E`` is -782 mm, ``0x86B1`` is +1713 mm). The resolution is an unsigned
  size of one distance gate in mm. There is no checksum: the header and the tail are all a
  receiver can check, so :class:`FrameDecoder` also refuses positions no radar can report
  (a target at or behind the antenna plane, ``y <= 0``: what a bit error in y's sign bit
  makes).
* Axes (section 2.3 and Hi-Link's instruction manual): y is the distance straight out from
  the antenna, always positive; x is across it. In citynode's mounting (docs/counting.md)
  the radar looks across the pavement, so x runs along the pavement. Speed is the radial
  speed: positive moving away from the radar, negative approaching (the manual's example
  target at -16 cm/s is approaching).
* 2.1.2: commands are ``FD FC FB FA``, a 2-byte data length, the data (2-byte command word
  and its value), ``04 03 02 01``. 2.2: the ACK is framed the same way; its word is the
  command word with bit 8 set (``0x00FF`` -> ``0x01FF``), then a 2-byte status (0 success,
  1 failure) and the return value. Every command but "enable configuration" is ignored
  unless configuration is enabled first (2.2.1); "end configuration" returns the radar to
  reporting (2.2.2).
* 2.2.1 enable configuration (``0x00FF``, value ``0x0001``): ACK with protocol version
  ``0x0001`` and buffer size ``0x0040`` (so no command or ACK carries more than 64 bytes);
  2.2.3/2.2.4 single/multi-target tracking (``0x0080``/``0x0090``); 2.2.5 query tracking
  (``0x0091``: 1 single, 2 multi); 2.2.6 firmware version (``0x00A0``: type, major.minor,
  a 32-bit build shown in hex, ``V1.02.22062416``); 2.2.9 restart (``0x00A3``, restarts
  after its ACK); 2.2.10 Bluetooth (``0x00A4``, value 1 on, 0 off; saved, effective after a
  restart); 2.2.11 MAC address (``0x00A5``, value 1: 6 bytes after the status); 2.2.12/2.2.13
  zone filtering (``0x00C1`` query, ``0x00C2`` set): a 2-byte mode (0 off, 1 report only
  inside the zones, 2 report only outside them) and three rectangles of two opposite
  corners, x1 y1 x2 y2, *two's complement* int16 mm (``18 FC`` is -1000); an all-zero
  rectangle is unused.
* ESPHome's ld2450 component (a reference driver) adds one observation: with Bluetooth off
  the MAC query answers ``08 05 04 03 02 01``.

Bytes go in through :meth:`FrameDecoder.feed`; report frames, ACKs, host commands (in a
capture of both lines) and rejected spans come out, every byte accounted for exactly once.
The device-side encoders (:func:`encode_report`, :func:`ack`) serve the emulator and tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..framing import Rejected, StreamDecoder

__all__ = [
    "Ack", "Command", "Counters", "Firmware", "FrameDecoder", "Rejected", "Report", "Target",
    "Zone", "ZoneFilter",
]

# -- framing ------------------------------------------------------------------------------------
REPORT_HEADER = b"\xaa\xff\x03\x00"
REPORT_TAIL = b"\x55\xcc"
REPORT_LEN = 30
SLOTS = 3
SLOT_LEN = 8
CMD_HEADER = b"\xfd\xfc\xfb\xfa"
CMD_TAIL = b"\x04\x03\x02\x01"
#: Data bytes (command word + value) a command or ACK may carry: the radar's buffer size
#: (section 2.2.1); the longest in the manual is the zone query's ACK, 30.
MAX_DATA = 64
#: Longest frame of either kind, so the longest a decoder ever holds.
MAX_FRAME = len(CMD_HEADER) + 2 + MAX_DATA + len(CMD_TAIL)
ACK_BIT = 0x0100
#: Frames a second (section 2.3).
FRAME_RATE_HZ = 10.0

# -- command words (section 2.2) ---------------------------------------------------------------
ENABLE_CONFIG = 0x00FF
END_CONFIG = 0x00FE
SINGLE_TARGET = 0x0080
MULTI_TARGET = 0x0090
QUERY_TRACKING = 0x0091
READ_FIRMWARE = 0x00A0
SET_BAUD = 0x00A1
FACTORY_RESET = 0x00A2
RESTART = 0x00A3
BLUETOOTH = 0x00A4
READ_MAC = 0x00A5
QUERY_ZONE = 0x00C1
SET_ZONE = 0x00C2

NAMES = {
    ENABLE_CONFIG: "enable configuration", END_CONFIG: "end configuration",
    SINGLE_TARGET: "single-target tracking", MULTI_TARGET: "multi-target tracking",
    QUERY_TRACKING: "query tracking mode", READ_FIRMWARE: "read firmware version",
    SET_BAUD: "set baud rate", FACTORY_RESET: "restore factory settings",
    RESTART: "restart", BLUETOOTH: "Bluetooth on/off", READ_MAC: "read MAC address",
    QUERY_ZONE: "query zone filter", SET_ZONE: "set zone filter",
}
TRACKING = {1: "single", 2: "multi"}
#: The MAC address the radar reports while its Bluetooth is off (ESPHome ld2450).
NO_MAC = bytes([0x08, 0x05, 0x04, 0x03, 0x02, 0x01])
#: Baud rate index of the set-baud command (section 2.2.7, table 6); 256000 is the default.
BAUD_RATES = {1: 9600, 2: 19200, 3: 38400, 4: 57600, 5: 115200, 6: 230400, 7: 256000,
              8: 460800}


def name_of(word: int) -> str:
    return NAMES.get(word, f"command {word:04x}")


# -- the sign-magnitude numbers of a report -----------------------------------------------------
def from_sign_magnitude(raw: int) -> int:
    """A report field as a signed int: top bit set = positive (section 2.3)."""
    magnitude = raw & 0x7FFF
    return magnitude if raw & 0x8000 else -magnitude


def to_sign_magnitude(value: int) -> int:
    """Device side: a signed int as the radar encodes it (0 as ``0x8000``, positive zero)."""
    if not -0x7FFF <= value <= 0x7FFF:
        raise ValueError(f"{value} does not fit the radar's 15-bit magnitude")
    return 0x8000 | value if value >= 0 else -value


class Target(NamedTuple):
    """One tracked target: its slot (0-2), position in mm (x across the antenna, along the
    pavement in citynode's mounting; y the distance out from it), radial speed in cm/s
    (positive moving away from the radar) and the radar's distance resolution in mm."""

    slot: int
    x_mm: int
    y_mm: int
    speed_cms: int
    resolution_mm: int


@dataclass(frozen=True, slots=True)
class Report:
    """One report frame: the occupied slots only, in slot order."""

    targets: tuple[Target, ...]
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"targets": len(self.targets), "slots": [t._asdict() for t in self.targets]}


def decode_slot(slot: int, data: bytes | bytearray | memoryview) -> Target | None:
    """Eight bytes of a report: None for an empty slot (x and y both zero, as the manual's
    all-zero slots are; speed and resolution mean nothing without a position)."""
    x, y, speed, resolution = (int.from_bytes(data[i:i + 2], "little") for i in (0, 2, 4, 6))
    if x == 0 and y == 0:
        return None
    return Target(slot, from_sign_magnitude(x), from_sign_magnitude(y),
                  from_sign_magnitude(speed), resolution)


def decode_report(frame: bytes) -> tuple[Target, ...]:
    """The occupied slots of a 30-byte report frame (header and tail not checked here)."""
    out = []
    for slot in range(SLOTS):
        start = len(REPORT_HEADER) + slot * SLOT_LEN
        t = decode_slot(slot, frame[start:start + SLOT_LEN])
        if t is not None:
            out.append(t)
    return tuple(out)


def implausible(targets: Iterable[Target]) -> str:
    """Why a report cannot have come from a radar (""): a target at or behind the antenna
    plane. The frame has no checksum; a bit error in y's sign bit shows up here."""
    for t in targets:
        if t.y_mm <= 0:
            return f"target in slot {t.slot} at y = {t.y_mm} mm, at or behind the antenna"
    return ""


def encode_slot(x_mm: int, y_mm: int, speed_cms: int, resolution_mm: int) -> bytes:
    """Device side: one occupied slot."""
    if not 0 <= resolution_mm <= 0xFFFF:
        raise ValueError(f"resolution {resolution_mm} mm does not fit 16 bits")
    return b"".join(v.to_bytes(2, "little") for v in (
        to_sign_magnitude(x_mm), to_sign_magnitude(y_mm), to_sign_magnitude(speed_cms),
        resolution_mm))


def encode_report(targets: Iterable[Target]) -> bytes:
    """Device side: a report frame with each target in its slot, the others empty."""
    slots = [bytes(SLOT_LEN)] * SLOTS
    seen: set[int] = set()
    for t in targets:
        if not 0 <= t.slot < SLOTS or t.slot in seen:
            raise ValueError(f"slot {t.slot} is not a free slot 0-{SLOTS - 1}")
        seen.add(t.slot)
        slots[t.slot] = encode_slot(t.x_mm, t.y_mm, t.speed_cms, t.resolution_mm)
    return REPORT_HEADER + b"".join(slots) + REPORT_TAIL


# -- zones (sections 2.2.12, 2.2.13) -------------------------------------------------------------
ZONE_MODES = ("off", "include", "exclude")  # 0, 1, 2
ZONES = 3


class Zone(NamedTuple):
    """A rectangle by two opposite corners, mm in the radar's frame."""

    x1_mm: int
    y1_mm: int
    x2_mm: int
    y2_mm: int

    def normalised(self) -> Zone:
        return Zone(min(self.x1_mm, self.x2_mm), min(self.y1_mm, self.y2_mm),
                    max(self.x1_mm, self.x2_mm), max(self.y1_mm, self.y2_mm))

    def contains(self, x_mm: float, y_mm: float) -> bool:
        z = self.normalised()
        return z.x1_mm <= x_mm <= z.x2_mm and z.y1_mm <= y_mm <= z.y2_mm


@dataclass(frozen=True, slots=True)
class ZoneFilter:
    """The radar's zone filter: ``off``, ``include`` (report only targets inside a zone) or
    ``exclude`` (report only targets outside every zone), with up to three zones."""

    mode: str = "off"
    zones: tuple[Zone, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ZONE_MODES:
            raise ValueError(f"zone mode must be one of {ZONE_MODES}, not {self.mode!r}")
        if len(self.zones) > ZONES:
            raise ValueError(f"the radar takes at most {ZONES} zones, not {len(self.zones)}")
        for z in self.zones:
            if any(not -0x8000 <= v <= 0x7FFF for v in z):
                raise ValueError(f"zone {tuple(z)} does not fit signed 16-bit mm")
            if not any(z):
                raise ValueError("an all-zero zone means 'unused' to the radar")

    def encode(self) -> bytes:
        """The 26-byte value of the set command (and of the query's ACK)."""
        rects = [tuple(z) for z in self.zones] + [(0, 0, 0, 0)] * (ZONES - len(self.zones))
        return ZONE_MODES.index(self.mode).to_bytes(2, "little") + b"".join(
            v.to_bytes(2, "little", signed=True) for r in rects for v in r)

    @classmethod
    def decode(cls, value: bytes) -> ZoneFilter:
        """From 26 bytes; ValueError for another length or an unknown mode."""
        if len(value) != 2 + ZONES * 8:
            raise ValueError(f"a zone filter is {2 + ZONES * 8} bytes, not {len(value)}")
        mode = int.from_bytes(value[:2], "little")
        if mode >= len(ZONE_MODES):
            raise ValueError(f"unknown zone filter mode {mode}")
        vals = [int.from_bytes(value[i:i + 2], "little", signed=True)
                for i in range(2, len(value), 2)]
        zones = tuple(Zone(*vals[i:i + 4]) for i in range(0, len(vals), 4) if any(vals[i:i + 4]))
        return cls(ZONE_MODES[mode], zones)

    def same_as(self, other: ZoneFilter) -> bool:
        """Whether the radar filters the same way (corner order does not matter; zones do
        not matter while the filter is off)."""
        if self.mode != other.mode:
            return False
        if self.mode == "off":
            return True
        return sorted(z.normalised() for z in self.zones) == sorted(
            z.normalised() for z in other.zones)

    def admits(self, x_mm: float, y_mm: float) -> bool:
        """Would the radar report a target here?"""
        if self.mode == "off" or not self.zones:
            return True
        inside = any(z.contains(x_mm, y_mm) for z in self.zones)
        return inside if self.mode == "include" else not inside

    def as_dict(self) -> dict[str, Any]:
        return {"zone_filter": self.mode, "zones": [list(z) for z in self.zones]}


# -- commands and ACKs -----------------------------------------------------------------------------
def command(word: int, value: bytes = b"") -> bytes:
    """A host command frame (section 2.1.2)."""
    if not 0 <= word <= 0xFFFF or len(value) + 2 > MAX_DATA:
        raise ValueError(f"command {word:#x} with {len(value)} value bytes does not fit")
    data = word.to_bytes(2, "little") + value
    return CMD_HEADER + len(data).to_bytes(2, "little") + data + CMD_TAIL


def ack(word: int, status: int = 0, value: bytes = b"") -> bytes:
    """Device side: the ACK of command ``word`` (section 2.2)."""
    return command(word | ACK_BIT, status.to_bytes(2, "little") + value)


def enable_config() -> bytes:
    return command(ENABLE_CONFIG, (1).to_bytes(2, "little"))


def end_config() -> bytes:
    return command(END_CONFIG)


def tracking(mode: str) -> bytes:
    """Single- or multi-target tracking (``"single"`` / ``"multi"``)."""
    if mode not in ("single", "multi"):
        raise ValueError(f"tracking is 'single' or 'multi', not {mode!r}")
    return command(SINGLE_TARGET if mode == "single" else MULTI_TARGET)


def bluetooth(on: bool) -> bytes:
    return command(BLUETOOTH, (1 if on else 0).to_bytes(2, "little"))


def read_mac() -> bytes:
    return command(READ_MAC, (1).to_bytes(2, "little"))


def set_zone(zf: ZoneFilter) -> bytes:
    return command(SET_ZONE, zf.encode())


class Firmware(NamedTuple):
    """The firmware version (section 2.2.6): ``V1.02.22062416``."""

    kind: int
    major: int
    minor: int
    build: int

    def __str__(self) -> str:
        return f"V{self.major}.{self.minor:02x}.{self.build:08x}"

    def encode(self) -> bytes:
        return (self.kind.to_bytes(2, "little") + bytes([self.minor, self.major])
                + self.build.to_bytes(4, "little"))

    @classmethod
    def decode(cls, value: bytes) -> Firmware:
        if len(value) < 8:
            raise ValueError(f"a firmware version is 8 bytes, not {len(value)}")
        return cls(int.from_bytes(value[:2], "little"), value[3], value[2],
                   int.from_bytes(value[4:8], "little"))


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True, slots=True)
class Ack:
    """The radar's reply to a command: the command word answered, the status (0 success,
    1 failure) and the return value that follows it."""

    command: int
    status: int
    value: bytes = b""
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == 0

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"cmd": f"{self.command:04x}", "name": name_of(self.command),
                               "status": "ok" if self.ok else f"failed ({self.status})"}
        if self.ok:
            doc.update(describe_value(self.command, self.value))
        elif self.value:
            doc["value"] = self.value.hex(" ")
        return doc


def describe_value(word: int, value: bytes) -> dict[str, Any]:
    """What an ACK's return value says, for people and for the driver; the bytes in hex
    where they do not have the length the manual gives."""
    try:
        if word == ENABLE_CONFIG and len(value) == 4:
            return {"protocol": int.from_bytes(value[:2], "little"),
                    "buffer": int.from_bytes(value[2:], "little")}
        if word == QUERY_TRACKING and len(value) == 2:
            mode = int.from_bytes(value, "little")
            return {"tracking": TRACKING.get(mode, f"unknown ({mode})")}
        if word == READ_FIRMWARE and len(value) == 8:
            return {"firmware": str(Firmware.decode(value))}
        if word == READ_MAC and len(value) == 6:
            return {"bluetooth": value != NO_MAC, "mac": format_mac(value)}
        if word == QUERY_ZONE and len(value) == 26:
            return ZoneFilter.decode(value).as_dict()
    except ValueError:
        pass
    return {"value": value.hex(" ")} if value else {}


@dataclass(frozen=True, slots=True)
class Command:
    """A host command seen in a capture (the radar's RX line, or both lines together)."""

    command: int
    value: bytes = b""
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"cmd": f"{self.command:04x}", "name": name_of(self.command)}
        if self.command == SET_ZONE and len(self.value) == 26:
            try:
                doc.update(ZoneFilter.decode(self.value).as_dict())
            except ValueError:
                doc["value"] = self.value.hex(" ")
        elif self.command == BLUETOOTH and len(self.value) == 2:
            doc["bluetooth"] = self.value != b"\x00\x00"
        elif self.value:
            doc["value"] = self.value.hex(" ")
        return doc


def check_ack(sent: int, reply: Ack) -> str | None:
    """Why ``reply`` does not confirm command ``sent`` (None: it does)."""
    if reply.command != sent:
        return (f"ACK for {reply.command:04x} ({name_of(reply.command)}) while waiting for "
                f"{sent:04x} ({name_of(sent)})")
    if not reply.ok:
        return f"the radar refused {name_of(sent)} (ACK status {reply.status})"
    return None


Event = Report | Ack | Command | Rejected


# -- the decoder -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Counters:
    """What the decoder has seen."""

    frames: int = 0
    acks: int = 0
    commands: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0


_STARTS = re.compile(re.escape(REPORT_HEADER) + b"|" + re.escape(CMD_HEADER))
_PREFIXES = tuple(h[:k] for k in (3, 2, 1) for h in (REPORT_HEADER, CMD_HEADER))


class FrameDecoder(StreamDecoder):
    """Incremental decoder of the radar's output (and of host commands in a capture).

    Resynchronisation: match a whole 4-byte header, then the length (commands and ACKs:
    2-64 data bytes) and the tail; on any failure slide one byte, so a frame starting
    inside a damaged one is still found. A report frame also has to be possible (no target
    at or behind the antenna). The decoder never holds more than :data:`MAX_FRAME` bytes
    after a :meth:`feed`: anything longer has been decided. A report takes 1.2 ms at
    256000 baud, so :meth:`expire` after a silence of a fraction of a second is safe.
    """

    counters: Counters

    def __init__(self) -> None:
        super().__init__(Counters())

    def _find_start(self, start: int) -> int:
        m = _STARTS.search(self._buf, start)
        if m is not None:
            return m.start()
        n = len(self._buf)
        for p in _PREFIXES:  # a header cut by the end of the buffer may still complete
            if n - len(p) >= start and self._buf.endswith(p):
                return n - len(p)
        return -1

    def _truncated_frame(self) -> bool:
        return self._buf.startswith(_PREFIXES[-2:])

    def _next(self) -> Event | None:
        skipped = self._skip_to_start("no frame header (aa ff 03 00 or fd fc fb fa)")
        if skipped is not None:
            return skipped
        if len(self._buf) < 4:
            return None
        if self._buf.startswith(REPORT_HEADER):
            return self._report()
        return self._command()

    def _bad(self, reason: str) -> Rejected | None:
        self.counters.bad_frames += 1
        return self._skip_to_start(reason, 1)

    def _report(self) -> Event | None:
        buf = self._buf
        if len(buf) < REPORT_LEN:
            return None
        if buf[REPORT_LEN - 2:REPORT_LEN] != REPORT_TAIL:
            return self._bad("report frame without its tail 55 cc at bytes 28-29")
        frame = bytes(buf[:REPORT_LEN])
        targets = decode_report(frame)
        why = implausible(targets)
        if why:
            return self._bad(f"implausible report: {why}")
        del buf[:REPORT_LEN]
        self.counters.frames += 1
        return Report(targets, frame)

    def _command(self) -> Event | None:
        buf = self._buf
        if len(buf) < 6:
            return None
        n = int.from_bytes(buf[4:6], "little")
        if not 2 <= n <= MAX_DATA:
            return self._bad(f"bad length field {n} (a command or ACK carries 2-{MAX_DATA} "
                             "bytes)")
        total = 10 + n
        if len(buf) < total:
            return None
        if buf[6 + n:total] != CMD_TAIL:
            return self._bad(f"command frame without its tail 04 03 02 01 after {n} data bytes")
        word = int.from_bytes(buf[6:8], "little")
        value = bytes(buf[8:6 + n])
        raw = bytes(buf[:total])
        if word >> 8 == ACK_BIT >> 8:
            if n < 4:
                return self._bad(f"ACK of {word & 0xFF:04x} without its status")
            del buf[:total]
            self.counters.acks += 1
            return Ack(word & ~ACK_BIT, int.from_bytes(value[:2], "little"), value[2:], raw)
        if word >> 8:
            return self._bad(f"unknown command word {word:04x}")
        del buf[:total]
        self.counters.commands += 1
        return Command(word, value, raw)

