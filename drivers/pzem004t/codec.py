"""Peacefair PZEM-004T v3.0 Modbus RTU, sans I/O: our own small codec.

Why not pymodbus: the meter needs three function codes (0x04 read input
registers, 0x06 write single register for the slave address, 0x42 reset
energy) plus exception responses; that is ~200 lines with no dependency, every
byte testable against the reference frames, and the same code decodes a
sniffed bus for ``citynode frames pzem004t``. pymodbus is large, async-first
and would still need the vendor function 0x42 added by hand.

Frames (``sensor-protocols.md`` section 6), CRC-16/Modbus (reflected 0xA001,
init 0xFFFF) appended low byte first::

    read 10 input registers   01 04 00 00 00 0A 70 0D
    its response              01 04 14 <20 data bytes> CRC
    reset energy              01 42 80 11            (reply echoes it)
    set address to 0x01       F8 06 00 02 00 01 FD A3 (reply echoes it)
    exception                 01 84 02 CRC            (function | 0x80, code)

Input registers: V (0.1 V), I (0.001 A, 32 bit), P (0.1 W, 32 bit), E (1 Wh,
32 bit), f (0.1 Hz), PF (0.01), alarm; 32-bit values low word first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..framing import Rejected, StreamDecoder

__all__ = [
    "Counters", "Echo", "ExceptionResponse", "FrameDecoder", "Measurement", "ModbusError",
    "ModbusException", "Registers", "Rejected", "Request", "crc16",
]

GENERAL_ADDRESS = 0xF8  # any single meter answers
BROADCAST = 0x00  # no reply
MAX_ADDRESS = 0xF7
READ_HOLDING, READ_INPUT, WRITE_SINGLE, CALIBRATE, RESET_ENERGY = 0x03, 0x04, 0x06, 0x41, 0x42
FUNCTIONS = (READ_HOLDING, READ_INPUT, WRITE_SINGLE, CALIBRATE, RESET_ENERGY)
REG_ALARM_THRESHOLD, REG_ADDRESS = 0x0001, 0x0002
N_INPUT = 10
EXCEPTION_CODES = {
    0x01: "illegal function", 0x02: "illegal data address", 0x03: "illegal data value",
    0x04: "slave device failure",
}
REQUEST_LEN = {READ_HOLDING: 8, READ_INPUT: 8, WRITE_SINGLE: 8, CALIBRATE: 6, RESET_ENERGY: 4}


def _crc_table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        out.append(c)
    return tuple(out)


#: CRC-16/Modbus a byte at a time: eight times faster than bit by bit, which matters when
#: ``citynode frames`` tries every possible frame start of a long noisy capture.
_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/Modbus of ``data``; ``crc`` continues a CRC computed over what came before."""
    table = _CRC_TABLE
    for x in data:
        crc = (crc >> 8) ^ table[(crc ^ x) & 0xFF]
    return crc


def add_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def _check_address(address: int) -> None:
    if not 0 <= address <= GENERAL_ADDRESS:
        raise ValueError(f"Modbus address {address:#x} out of range 0x00..0xf8")


# -- requests (host side) ------------------------------------------------------------
def read_input_registers(address: int = 0x01, start: int = 0, count: int = N_INPUT) -> bytes:
    _check_address(address)
    return add_crc(bytes([address, READ_INPUT]) + start.to_bytes(2, "big")
                   + count.to_bytes(2, "big"))


def read_holding_registers(address: int, start: int, count: int = 1) -> bytes:
    _check_address(address)
    return add_crc(bytes([address, READ_HOLDING]) + start.to_bytes(2, "big")
                   + count.to_bytes(2, "big"))


def write_single_register(address: int, register: int, value: int) -> bytes:
    _check_address(address)
    return add_crc(bytes([address, WRITE_SINGLE]) + register.to_bytes(2, "big")
                   + value.to_bytes(2, "big"))


def set_address(new: int, address: int = GENERAL_ADDRESS) -> bytes:
    """Give the meter at ``address`` the slave address ``new`` (0x01..0xF7)."""
    if not 1 <= new <= MAX_ADDRESS:
        raise ValueError(f"new address {new:#x} out of range 0x01..0xf7")
    return write_single_register(address, REG_ADDRESS, new)


def reset_energy(address: int = 0x01) -> bytes:
    _check_address(address)
    return add_crc(bytes([address, RESET_ENERGY]))


# -- events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """A host request as seen on the bus (``value`` is the count for reads)."""

    address: int
    function: int
    register: int | None = None
    value: int | None = None
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "function": f"{self.function:02x}",
                "register": self.register, "value": self.value}


@dataclass(frozen=True, slots=True)
class Measurement:
    """Response to reading the 10 input registers."""

    address: int
    v: float
    a: float
    w: float
    kwh: float
    hz: float
    pf: float
    alarm: bool
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def wh(self) -> int:
        return round(self.kwh * 1000)

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "v": self.v, "a": self.a, "w": self.w, "wh": self.wh,
                "kwh": self.kwh, "hz": self.hz, "pf": self.pf, "alarm": self.alarm}


@dataclass(frozen=True, slots=True)
class Registers:
    """Any other read response: the raw 16-bit registers."""

    address: int
    function: int
    registers: tuple[int, ...]
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "function": f"{self.function:02x}",
                "registers": list(self.registers)}


@dataclass(frozen=True, slots=True)
class Echo:
    """A write or reset-energy reply (echoes the request); a decoder cannot tell a write
    request from its echo except by order, so the second of two equal frames is the echo."""

    address: int
    function: int
    register: int | None
    value: int | None
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "function": f"{self.function:02x}",
                "register": self.register, "value": self.value}


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    address: int
    function: int  # the request's function code (without 0x80)
    code: int
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def message(self) -> str:
        return EXCEPTION_CODES.get(self.code, f"unknown exception {self.code:#04x}")

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "function": f"{self.function:02x}", "code": self.code,
                "message": self.message}


Event = Request | Measurement | Registers | Echo | ExceptionResponse | Rejected


class ModbusError(Exception):
    """A response that is not the answer to the request (CRC, length, address...)."""


class ModbusException(ModbusError):
    """The meter answered with an exception response."""

    def __init__(self, response: ExceptionResponse) -> None:
        self.response = response
        super().__init__(f"meter {response.address:#04x} refused function "
                         f"{response.function:#04x}: {response.message} ({response.code:#04x})")


def decode_measurement(address: int, data: bytes, raw: bytes = b"") -> Measurement:
    r = [int.from_bytes(data[i:i + 2], "big") for i in range(0, 20, 2)]

    def u32(lo: int) -> int:
        return (r[lo + 1] << 16) | r[lo]

    return Measurement(address, r[0] / 10, u32(1) / 1000, u32(3) / 10, u32(5) / 1000,
                       r[7] / 10, r[8] / 100, r[9] == 0xFFFF, raw=raw)


def encode_measurement(address: int, v: float, a: float, w: float, wh: float, hz: float,
                       pf: float, alarm: bool = False) -> bytes:
    """The response to reading the 10 input registers (device side)."""
    def u32(x: int) -> list[int]:
        x = max(0, min(int(x), 0xFFFFFFFF))
        return [x & 0xFFFF, x >> 16]

    regs = [round(v * 10), *u32(round(a * 1000)), *u32(round(w * 10)), *u32(int(wh)),
            round(hz * 10), round(pf * 100), 0xFFFF if alarm else 0]
    return encode_registers(address, READ_INPUT, regs)


def encode_registers(address: int, function: int, regs: list[int]) -> bytes:
    data = b"".join(max(0, min(x, 0xFFFF)).to_bytes(2, "big") for x in regs)
    return add_crc(bytes([address, function, len(data)]) + data)


def encode_exception(address: int, function: int, code: int) -> bytes:
    return add_crc(bytes([address, (function | 0x80) & 0xFF, code]))


def parse_request(frame: bytes) -> Request:
    """A request's fields (frame already length- and CRC-checked)."""
    fn = frame[1]
    if fn in (READ_HOLDING, READ_INPUT, WRITE_SINGLE):
        return Request(frame[0], fn, int.from_bytes(frame[2:4], "big"),
                       int.from_bytes(frame[4:6], "big"), raw=frame)
    if fn == CALIBRATE:
        return Request(frame[0], fn, None, int.from_bytes(frame[2:4], "big"), raw=frame)
    return Request(frame[0], fn, raw=frame)


def _response(frame: bytes) -> Measurement | Registers | ExceptionResponse:
    addr, fn = frame[0], frame[1]
    if fn & 0x80:
        return ExceptionResponse(addr, fn & 0x7F, frame[2], raw=frame)
    data = frame[3:-2]
    if fn == READ_INPUT and len(data) == 2 * N_INPUT:
        return decode_measurement(addr, data, frame)
    regs = tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2))
    return Registers(addr, fn, regs, raw=frame)


def parse_response(request: bytes, frame: bytes) -> Measurement | Registers | Echo:
    """Check and decode the reply to ``request``; raise :class:`ModbusException` for an
    exception response and :class:`ModbusError` for anything else wrong."""
    frame = bytes(frame)
    if len(frame) < 4:
        raise ModbusError(f"response too short: {frame.hex(' ')}")
    if not crc_ok(frame):
        raise ModbusError(f"CRC mismatch in response {frame.hex(' ')}")
    if request[0] not in (GENERAL_ADDRESS, frame[0]):
        raise ModbusError(f"response from address {frame[0]:#04x}, asked {request[0]:#04x}")
    fn = request[1]
    if frame[1] == fn | 0x80 and len(frame) == 5:
        raise ModbusException(ExceptionResponse(frame[0], fn, frame[2], raw=frame))
    if frame[1] != fn:
        raise ModbusError(f"response function {frame[1]:#04x} to request {fn:#04x}")
    if fn in (READ_INPUT, READ_HOLDING):
        n = 2 * int.from_bytes(request[4:6], "big")
        if len(frame) != 5 + n or frame[2] != n:
            raise ModbusError(f"expected {n} data bytes, got {frame.hex(' ')}")
        out = _response(frame)
        assert not isinstance(out, ExceptionResponse)
        return out
    if frame != bytes(request) and not (request[0] == GENERAL_ADDRESS
                                        and frame[1:] == bytes(request[1:-2]) + frame[-2:]):
        raise ModbusError(f"reply {frame.hex(' ')} does not echo {bytes(request).hex(' ')}")
    req = parse_request(frame)
    return Echo(req.address, req.function, req.register, req.value, raw=frame)


# -- stream decoder ------------------------------------------------------------------------
@dataclass(slots=True)
class Counters:
    requests: int = 0
    responses: int = 0
    exceptions: int = 0
    bad_frames: int = 0
    crc_errors: int = 0
    discarded_bytes: int = 0


def _starts(buf: bytearray, i: int) -> bool:
    if buf[i] > GENERAL_ADDRESS:
        return False
    return i + 1 == len(buf) or buf[i + 1] in FUNCTIONS or (buf[i + 1] & 0x7F) in FUNCTIONS


#: A frame start (``_starts``) followed by its function byte, found by the regex engine
#: rather than a Python loop over every byte.
_START = re.compile(b"[\\x00-\\x%02x][%s]" % (GENERAL_ADDRESS, b"".join(
    b"\\x%02x" % f for f in sorted({*FUNCTIONS, *(f | 0x80 for f in FUNCTIONS)}))))


class FrameDecoder(StreamDecoder):
    """Decode a Modbus byte stream with requests and responses (a sniffed bus, or what
    the host receives, including a half-duplex adapter's echo of its own requests).

    RTU frames carry no length: for each function code the decoder tries the
    possible lengths (request, response with its byte count) shortest first and
    takes the first whose CRC matches; if none does it rejects one byte with a
    "CRC mismatch" reason and resyncs. Write and reset-energy replies echo the
    request: the second of two identical consecutive frames is an :class:`Echo`.
    """

    counters: Counters

    def __init__(self) -> None:
        super().__init__(Counters())
        self._last: bytes | None = None

    def sent(self, request: bytes) -> None:
        """The host sent ``request`` (not looped back to us): an identical frame that
        follows is its echo, i.e. the reply."""
        self._last = bytes(request)

    def _find_start(self, start: int) -> int:
        buf = self._buf
        m = _START.search(buf, start)
        if m is not None:
            return m.start()
        if len(buf) > start and buf[-1] <= GENERAL_ADDRESS:
            return len(buf) - 1  # an address as the last byte: its function may follow
        return -1

    def _truncated_frame(self) -> bool:
        return len(self._buf) >= 2 and _starts(self._buf, 0)

    def _candidates(self) -> list[tuple[int, str]]:
        buf = self._buf
        fn = buf[1]
        if fn & 0x80:
            return [(5, "exception")]
        out = [(REQUEST_LEN[fn], "request")]
        if fn in (READ_HOLDING, READ_INPUT) and len(buf) >= 3:
            out.append((5 + buf[2], "response"))
        return sorted(out)

    def _next(self) -> Event | None:
        skipped = self._skip_to_start("no Modbus frame start (address, known function)")
        if skipped is not None:
            return skipped
        buf = self._buf
        if len(buf) < 3:
            return None
        cands = self._candidates()
        # One pass over the bytes for every candidate length (shortest first), so a
        # start costs at most the longest candidate's CRC, however noisy the line.
        crc, done, first = 0xFFFF, 0, None
        for n, kind in cands:
            if len(buf) < n:
                return None
            crc = crc16(buf[done:n - 2], crc)
            done = n - 2
            if first is None:
                first = crc
            if crc == int.from_bytes(buf[n - 2:n], "little"):
                frame = bytes(buf[:n])
                del buf[:n]
                return self._event(frame, kind)
        n = cands[0][0]
        self.counters.bad_frames += 1
        self.counters.crc_errors += 1
        got = int.from_bytes(buf[n - 2:n], "little")
        return self._skip_to_start(
            f"CRC mismatch: computed {first:04x}, frame says {got:04x}", 1)

    def _event(self, frame: bytes, kind: str) -> Event:
        if kind == "exception":
            self.counters.exceptions += 1
            self._last = None
            return ExceptionResponse(frame[0], frame[1] & 0x7F, frame[2], raw=frame)
        if kind == "response":
            self.counters.responses += 1
            self._last = None
            return _response(frame)
        if frame[1] in (WRITE_SINGLE, RESET_ENERGY, CALIBRATE) and frame == self._last:
            self.counters.responses += 1
            self._last = None
            req = parse_request(frame)
            return Echo(req.address, req.function, req.register, req.value, raw=frame)
        self.counters.requests += 1
        self._last = frame
        return parse_request(frame)
