"""Nova Fitness SDS011 wire protocol, with no I/O at all.

The sensor sends 10-byte frames: ``AA C0`` measurements (PM2.5 and PM10 as
little-endian tenths of µg/m³, the device id, an 8-bit sum of bytes 2..7,
``AB``) and ``AA C5`` replies to the host's 19-byte commands
(``AA B4 CMD d3..d14 ID1 ID2 SUM AB``, the sum over bytes 2..16). Bytes go in
through :meth:`FrameDecoder.feed`; frames, replies and rejected spans come out
as events. Every byte fed is accounted for exactly once: either in a good frame
or reply, or in a :class:`Rejected` span with its reason, so an installer can
see where a capture went wrong.

Device ids are written as the datasheet prints them: id ``0xA160`` travels as
the bytes ``A1 60`` (byte 6 then 7 of a reply, 15 then 16 of a command), and
``0xFFFF`` addresses any sensor.

Host commands are built by the functions below (:func:`set_reporting_mode`,
:func:`query_data`, :func:`sleep`...); the device-side encoders
(:func:`encode_frame`, :func:`encode_reply`) and :func:`parse_command` are used
by the emulator and by tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..framing import Rejected, StreamDecoder

__all__ = ["ANY_ID", "Counters", "Event", "Frame", "FrameDecoder", "HostCommand", "Rejected",
           "Reply"]

HEAD = 0xAA
TAIL = 0xAB
HOST = 0xB4  # byte 1 of every host command
DATA = 0xC0  # byte 1 of a measurement frame
REPLY = 0xC5  # byte 1 of a command reply
KINDS = (DATA, REPLY)
FRAME_LEN = 10
COMMAND_LEN = 19
ANY_ID = 0xFFFF

CMD_REPORT_MODE = 0x02  # d3: 0 query / 1 set; d4: 0 active / 1 query
CMD_QUERY_DATA = 0x04  # answered with an AA C0 frame
CMD_SET_ID = 0x05  # d13, d14: the new id
CMD_SLEEP_WORK = 0x06  # d3: 0 query / 1 set; d4: 0 sleep / 1 work
CMD_FIRMWARE = 0x07  # reply r3, r4, r5: year, month, day
CMD_PERIOD = 0x08  # d3: 0 query / 1 set; d4: 0 continuous, 1-30 minutes

COMMAND_NAMES = {
    CMD_REPORT_MODE: "reporting_mode",
    CMD_QUERY_DATA: "query_data",
    CMD_SET_ID: "set_device_id",
    CMD_SLEEP_WORK: "sleep_work",
    CMD_FIRMWARE: "firmware",
    CMD_PERIOD: "working_period",
}
OPS = ("query", "set")  # d3 / r3 of commands 02, 06 and 08
REPORT_MODES = ("active", "query")  # d4 / r4 of command 02
WORK_STATES = ("sleep", "work")  # d4 / r4 of command 06
MAX_PERIOD_MIN = 30
MAX_RAW = 9999  # datasheet range 0.0-999.9 µg/m³


def sum8(data: bytes | bytearray | memoryview) -> int:
    """SDS011 checksum: 8-bit sum of the bytes it covers."""
    return sum(data) & 0xFF


def _id_bytes(device_id: int) -> bytes:
    if not 0 <= device_id <= 0xFFFF:
        raise ValueError(f"device id {device_id:#x} does not fit 16 bits")
    return device_id.to_bytes(2, "big")


def format_id(device_id: int) -> str:
    """A device id as the datasheet writes it (``a160``)."""
    return f"{device_id:04x}"


# -- host commands ---------------------------------------------------------------
def command(cmd: int, data: Sequence[int] | bytes = b"", device_id: int = ANY_ID) -> bytes:
    """Build a 19-byte host command: ``data`` fills bytes 3..14 (zero-padded)."""
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"command byte {cmd:#x} out of range")
    payload = bytes(data)  # raises ValueError for values outside 0..255
    if len(payload) > 12:
        raise ValueError(f"at most 12 data bytes, not {len(payload)}")
    body = bytes([cmd]) + payload.ljust(12, b"\x00") + _id_bytes(device_id)
    return bytes([HEAD, HOST]) + body + bytes([sum8(body), TAIL])


def query_reporting_mode(device_id: int = ANY_ID) -> bytes:
    return command(CMD_REPORT_MODE, [0, 0], device_id)


def set_reporting_mode(mode: str, device_id: int = ANY_ID) -> bytes:
    """``mode``: "active" (a frame every working period) or "query" (only when asked)."""
    if mode not in REPORT_MODES:
        raise ValueError(f"reporting mode must be one of {REPORT_MODES}, not {mode!r}")
    return command(CMD_REPORT_MODE, [1, REPORT_MODES.index(mode)], device_id)


def query_data(device_id: int = ANY_ID) -> bytes:
    return command(CMD_QUERY_DATA, b"", device_id)


def set_device_id(new_id: int, device_id: int = ANY_ID) -> bytes:
    """Give the sensor addressed by ``device_id`` the id ``new_id`` (bytes 13-14)."""
    return command(CMD_SET_ID, bytes(10) + _id_bytes(new_id), device_id)


def set_working(work: bool, device_id: int = ANY_ID) -> bytes:
    """Sleep (fan and laser off) or work."""
    return command(CMD_SLEEP_WORK, [1, int(bool(work))], device_id)


def sleep(device_id: int = ANY_ID) -> bytes:
    return set_working(False, device_id)


def work(device_id: int = ANY_ID) -> bytes:
    return set_working(True, device_id)


def query_working(device_id: int = ANY_ID) -> bytes:
    return command(CMD_SLEEP_WORK, [0, 0], device_id)


def set_working_period(minutes: int, device_id: int = ANY_ID) -> bytes:
    """0: continuous (a measurement every second); 1-30: work 30 s every ``minutes``."""
    if not 0 <= minutes <= MAX_PERIOD_MIN:
        raise ValueError(f"working period must be 0..{MAX_PERIOD_MIN} minutes, not {minutes}")
    return command(CMD_PERIOD, [1, minutes], device_id)


def query_working_period(device_id: int = ANY_ID) -> bytes:
    return command(CMD_PERIOD, [0, 0], device_id)


def query_firmware(device_id: int = ANY_ID) -> bytes:
    return command(CMD_FIRMWARE, b"", device_id)


#: The broadcast (any id) commands a node usually sends.
SET_QUERY = set_reporting_mode("query")
SET_ACTIVE = set_reporting_mode("active")
QUERY_DATA = query_data()
SLEEP = sleep()
WORK = work()
FIRMWARE = query_firmware()


@dataclass(frozen=True, slots=True)
class HostCommand:
    """A host command as the sensor sees it (device side)."""

    cmd: int
    data: bytes  # bytes 3..14 of the command
    device_id: int
    raw: bytes = field(default=b"", repr=False, compare=False)


def parse_command(frame: bytes | bytearray | memoryview) -> HostCommand | None:
    """Decode a 19-byte host command (device side); None if it is not valid."""
    frame = bytes(frame)
    if len(frame) != COMMAND_LEN or frame[0] != HEAD or frame[1] != HOST or frame[18] != TAIL:
        return None
    if sum8(frame[2:17]) != frame[17]:
        return None
    return HostCommand(frame[2], frame[3:15], int.from_bytes(frame[15:17], "big"), raw=frame)


# -- sensor output -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Frame:
    """One measurement (``AA C0``): PM2.5 and PM10 in µg/m³, 0.1 resolution."""

    pm25: float
    pm10: float
    device_id: int
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, float | str]:
        """Every decoded field, for JSON output."""
        return {"pm25": self.pm25, "pm10": self.pm10, "device_id": format_id(self.device_id)}


@dataclass(frozen=True, slots=True)
class Reply:
    """The sensor's reply (``AA C5``) to a command; ``data`` is bytes 3..5.

    The id is the replying sensor's: after a set-id command, its *new* id.
    """

    cmd: int
    data: bytes
    device_id: int
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.cmd, f"unknown_{self.cmd:02x}")

    @property
    def op(self) -> str | None:
        """"query" or "set" for commands 02, 06, 08 (None otherwise or if garbled)."""
        if self.cmd in (CMD_REPORT_MODE, CMD_SLEEP_WORK, CMD_PERIOD) and self.data[0] < 2:
            return OPS[self.data[0]]
        return None

    @property
    def value(self) -> int:
        """Byte 4: the mode, the sleep/work state, the period (whatever the command is about)."""
        return self.data[1]

    @property
    def firmware(self) -> tuple[int, int, int] | None:
        """(year, month, day) of a firmware reply, e.g. (15, 7, 10) for 2015-07-10."""
        if self.cmd != CMD_FIRMWARE:
            return None
        return self.data[0], self.data[1], self.data[2]

    def as_dict(self) -> dict[str, int | str | None]:
        """The decoded meaning, for JSON output."""
        out: dict[str, int | str | None] = {"command": self.name}
        if self.cmd in (CMD_REPORT_MODE, CMD_SLEEP_WORK, CMD_PERIOD):
            out["op"] = self.op if self.op is not None else self.data[0]
        v = self.value
        if self.cmd == CMD_REPORT_MODE:
            out["mode"] = REPORT_MODES[v] if v < 2 else v
        elif self.cmd == CMD_SLEEP_WORK:
            out["state"] = WORK_STATES[v] if v < 2 else v
        elif self.cmd == CMD_PERIOD:
            out["period_min"] = v
        elif self.cmd == CMD_FIRMWARE:
            out["firmware"] = "{:02d}-{:02d}-{:02d}".format(*self.data)
        elif self.cmd not in COMMAND_NAMES or self.cmd == CMD_QUERY_DATA:
            out["data"] = self.data.hex(" ")
        out["device_id"] = format_id(self.device_id)
        return out


Event = Frame | Reply | Rejected


def _frame(kind: int, payload: bytes) -> bytes:
    return bytes([HEAD, kind]) + payload + bytes([sum8(payload), TAIL])


def encode_frame(pm25: float, pm10: float, device_id: int = ANY_ID) -> bytes:
    """Build the 10-byte measurement frame an SDS011 sends (device side).

    Values are rounded to 0.1 µg/m³ and clamped to the sensor's 0.0-999.9 range.
    """
    raw = [max(0, min(MAX_RAW, round(v * 10))) for v in (pm25, pm10)]
    payload = raw[0].to_bytes(2, "little") + raw[1].to_bytes(2, "little")
    return _frame(DATA, payload + _id_bytes(device_id))


def encode_reply(cmd: int, data: Sequence[int] | bytes, device_id: int) -> bytes:
    """Build the 10-byte reply an SDS011 sends for a command (device side)."""
    payload = bytes(data)
    if len(payload) != 3:
        raise ValueError(f"a reply carries 3 data bytes, not {len(payload)}")
    return _frame(REPLY, bytes([cmd & 0xFF]) + payload + _id_bytes(device_id))


def _decode(buf: bytes) -> Frame | Reply:
    device_id = int.from_bytes(buf[6:8], "big")
    if buf[1] == DATA:
        pm25 = int.from_bytes(buf[2:4], "little") / 10
        pm10 = int.from_bytes(buf[4:6], "little") / 10
        return Frame(pm25, pm10, device_id, raw=buf)
    return Reply(buf[2], buf[3:6], device_id, raw=buf)


def _find_header(buf: bytearray, start: int, end: int | None = None) -> int:
    """Index of the first ``AA C0``/``AA C5`` at or after ``start`` (before ``end``), or -1.

    A lone ``AA`` as the very last byte counts: it may be the first half of a header.
    """
    end = len(buf) if end is None else end
    i = buf.find(HEAD, start, end)
    while i >= 0:
        if i + 1 == len(buf) or buf[i + 1] in KINDS:
            return i
        i = buf.find(HEAD, i + 1, end)
    return -1


@dataclass(slots=True)
class Counters:
    """What the decoder has seen: an installer's first look at line quality."""

    frames: int = 0
    replies: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0


class FrameDecoder(StreamDecoder):
    """Incremental decoder: feed it any chunking of the byte stream.

    It matches the whole two-byte header (``AA C0`` or ``AA C5``, never a lone
    ``AA``), checks the tail byte ``AB`` and the 8-bit sum, and on any failure
    slides by one byte only, so a frame that begins inside a corrupt one is
    still found. A frame takes 10.4 ms at 9600 baud: :meth:`expire` is for a
    longer silence inside one.
    """

    counters: Counters

    def __init__(self) -> None:
        super().__init__(Counters())

    def _find_start(self, start: int) -> int:
        return _find_header(self._buf, start)

    def _truncated_frame(self) -> bool:
        return len(self._buf) >= 2 and self._buf[0] == HEAD and self._buf[1] in KINDS

    def _valid_at(self, q: int) -> bool:
        buf = self._buf
        return (len(buf) >= q + FRAME_LEN and buf[q] == HEAD and buf[q + 1] in KINDS
                and buf[q + 9] == TAIL and sum8(buf[q + 2:q + 8]) == buf[q + 8])

    def _valid_frame_inside(self) -> int:
        """Offset of a complete, valid frame starting inside the first frame's bytes, or 0."""
        q = _find_header(self._buf, 1, FRAME_LEN)
        while q > 0:
            if self._valid_at(q):
                return q
            q = _find_header(self._buf, q + 1, FRAME_LEN)
        return 0

    def _next(self) -> Event | None:
        buf = self._buf
        skipped = self._skip_to_start("no header aa c0 / aa c5")
        if skipped is not None:
            return skipped
        if len(buf) < FRAME_LEN:
            return None
        if buf[9] != TAIL:
            self.counters.bad_frames += 1
            return self._skip_to_start(f"bad tail byte {buf[9]:02x} (expected ab)", 1)
        expected, got = sum8(buf[2:8]), buf[8]
        if expected != got:
            self.counters.bad_frames += 1
            return self._skip_to_start(
                f"checksum mismatch: computed {expected:02x}, frame says {got:02x}", 1
            )
        later = self._valid_frame_inside()
        if later:
            # A truncated frame plus the start of the next one can pass the tail and
            # sum checks (rarely). When a complete valid frame starts inside this one,
            # that frame is the real one.
            self.counters.bad_frames += 1
            return self._reject(later, "checksum collision: a valid frame starts inside")
        frame = bytes(buf[:FRAME_LEN])
        del buf[:FRAME_LEN]
        if frame[1] == DATA:
            self.counters.frames += 1
        else:
            self.counters.replies += 1
        return _decode(frame)
