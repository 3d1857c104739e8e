"""Sensirion SPS30 I2C wire format, with no I/O and no clock.

The host writes a 16-bit command code (big-endian, no CRC), optionally followed
by argument words, each ``hi lo CRC``; commands that return data are then read
in a *separate* transfer (the SPS30 rejects repeated starts) as ``hi lo CRC``
triplets. Measured values in float mode are ten big-endian IEEE-754 floats,
each split into two CRC'd words: 60 bytes. See sensor-protocols.md section 3.

This module builds the host's commands (:func:`start_measurement`,
:func:`read_measured_values`...), decodes the chip's replies into typed results
(:func:`decode_measurement`, :func:`decode_data_ready`...), encodes replies for
the emulator and tests (:func:`encode_measurement`...), and turns a capture of
bus transfers into JSON-ready dicts (:func:`decode_capture`).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass, fields
from typing import Any

from ..sensirion import CRCError, pack_words, unpack_words

__all__ = [
    "ADDRESS",
    "COMMANDS",
    "FORMAT_FLOAT",
    "FORMAT_UINT16",
    "QUANTITIES",
    "CRCError",
    "CommandInfo",
    "Measurement",
    "command",
    "decode_capture",
    "decode_data_ready",
    "decode_firmware_version",
    "decode_measurement",
    "decode_string",
    "decode_u32",
    "encode_measurement",
    "exec_time",
    "f32",
    "parse_write",
]

ADDRESS = 0x69  # fixed 7-bit address

CMD_START_MEASUREMENT = 0x0010
CMD_STOP_MEASUREMENT = 0x0104
CMD_READ_DATA_READY = 0x0202
CMD_READ_MEASURED_VALUES = 0x0300
CMD_SLEEP = 0x1001
CMD_WAKE_UP = 0x1103
CMD_START_FAN_CLEANING = 0x5607
CMD_AUTO_CLEANING_INTERVAL = 0x8004
CMD_READ_PRODUCT_TYPE = 0xD002
CMD_READ_SERIAL_NUMBER = 0xD033
CMD_READ_FIRMWARE_VERSION = 0xD100
CMD_READ_DEVICE_STATUS = 0xD206
CMD_CLEAR_DEVICE_STATUS = 0xD210
CMD_DEVICE_RESET = 0xD304

FORMAT_FLOAT = 0x0300  # start-measurement argument: IEEE-754 float output
FORMAT_UINT16 = 0x0500  # start-measurement argument: 16-bit integer output
FORMATS = {FORMAT_FLOAT: "float", FORMAT_UINT16: "uint16"}

MEASUREMENT_LEN = {FORMAT_FLOAT: 60, FORMAT_UINT16: 30}
PRODUCT_TYPE_LEN = 12  # 8 ASCII chars = 4 words
SERIAL_NUMBER_LEN = 48  # up to 32 ASCII chars, NUL-terminated = 16 words
FIRMWARE_VERSION_LEN = 3  # major, minor = 1 word
DATA_READY_LEN = 3
U32_LEN = 6

#: Device status register bits (embedded-sps ``sps30.h``).
STATUS_FAN_SPEED_WARNING = 1 << 21
STATUS_LASER_ERROR = 1 << 5
STATUS_FAN_ERROR = 1 << 4


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """What a command code means on the wire.

    ``args``: the numbers of argument words it may be written with; ``reply``:
    bytes the host reads after writing it *without* arguments (0: it returns
    nothing); ``delay_s``: the execution time to wait after the write before
    reading or sending the next command; ``args_delay_s``: the same when written
    with arguments (0x8004 write).
    """

    code: int
    name: str
    args: tuple[int, ...] = (0,)
    reply: int = 0
    delay_s: float = 0.0
    args_delay_s: float = 0.0


#: Every command in the reference's table, with its execution time (python-i2c-sps30's
#: ``device_busy_delay``; reads with no listed time are read straight after the write).
COMMANDS: dict[int, CommandInfo] = {c.code: c for c in (
    CommandInfo(CMD_START_MEASUREMENT, "start_measurement", args=(1,), args_delay_s=0.020),
    CommandInfo(CMD_STOP_MEASUREMENT, "stop_measurement", delay_s=0.020),
    CommandInfo(CMD_READ_DATA_READY, "read_data_ready", reply=DATA_READY_LEN),
    CommandInfo(CMD_READ_MEASURED_VALUES, "read_measured_values", reply=60),
    CommandInfo(CMD_SLEEP, "sleep", delay_s=0.005),
    CommandInfo(CMD_WAKE_UP, "wake_up", delay_s=0.005),
    CommandInfo(CMD_START_FAN_CLEANING, "start_fan_cleaning", delay_s=0.005),
    CommandInfo(CMD_AUTO_CLEANING_INTERVAL, "auto_cleaning_interval", args=(0, 2), reply=U32_LEN,
                delay_s=0.005, args_delay_s=0.020),
    CommandInfo(CMD_READ_PRODUCT_TYPE, "read_product_type", reply=PRODUCT_TYPE_LEN),
    CommandInfo(CMD_READ_SERIAL_NUMBER, "read_serial_number", reply=SERIAL_NUMBER_LEN),
    CommandInfo(CMD_READ_FIRMWARE_VERSION, "read_firmware_version", reply=FIRMWARE_VERSION_LEN),
    CommandInfo(CMD_READ_DEVICE_STATUS, "read_device_status", reply=U32_LEN, delay_s=0.005),
    CommandInfo(CMD_CLEAR_DEVICE_STATUS, "clear_device_status", delay_s=0.005),
    CommandInfo(CMD_DEVICE_RESET, "device_reset", delay_s=0.100),
)}


def exec_time(code: int, n_args: int = 0) -> float:
    """Seconds to wait after writing ``code`` (with ``n_args`` argument words)."""
    info = COMMANDS[code]
    return info.args_delay_s if n_args else info.delay_s


# -- host -> chip ----------------------------------------------------------------------
def command(code: int, *args: int) -> bytes:
    """``code`` big-endian (no CRC) followed by each argument word and its CRC."""
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"command code out of range: {code!r}")
    return code.to_bytes(2, "big") + pack_words(args)


def start_measurement(fmt: int = FORMAT_FLOAT) -> bytes:
    """``00 10 03 00 AC`` (float output) or ``00 10 05 00 F6`` (uint16 output)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format 0x{fmt:04x}")
    return command(CMD_START_MEASUREMENT, fmt)


def stop_measurement() -> bytes:
    return command(CMD_STOP_MEASUREMENT)


def read_data_ready() -> bytes:
    return command(CMD_READ_DATA_READY)


def read_measured_values() -> bytes:
    return command(CMD_READ_MEASURED_VALUES)


def sleep() -> bytes:
    """Enter sleep mode (firmware >= 2.0); the I2C interface is off until woken."""
    return command(CMD_SLEEP)


def wake_up() -> bytes:
    """Wake from sleep: send it twice within 100 ms, the first one is NACKed."""
    return command(CMD_WAKE_UP)


def start_fan_cleaning() -> bytes:
    return command(CMD_START_FAN_CLEANING)


def read_auto_cleaning_interval() -> bytes:
    return command(CMD_AUTO_CLEANING_INTERVAL)


def write_auto_cleaning_interval(seconds: int) -> bytes:
    """Two words, most significant first."""
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise ValueError(f"auto-cleaning interval must fit 32 bits: {seconds!r}")
    return command(CMD_AUTO_CLEANING_INTERVAL, seconds >> 16, seconds & 0xFFFF)


def read_product_type() -> bytes:
    return command(CMD_READ_PRODUCT_TYPE)


def read_serial_number() -> bytes:
    return command(CMD_READ_SERIAL_NUMBER)


def read_firmware_version() -> bytes:
    return command(CMD_READ_FIRMWARE_VERSION)


def read_device_status() -> bytes:
    return command(CMD_READ_DEVICE_STATUS)


def clear_device_status() -> bytes:
    return command(CMD_CLEAR_DEVICE_STATUS)


def device_reset() -> bytes:
    return command(CMD_DEVICE_RESET)


def parse_write(data: bytes) -> tuple[int, list[int]]:
    """A host write -> (command code, argument words); CRCError/ValueError if malformed."""
    if len(data) < 2:
        raise ValueError(f"write of {len(data)} bytes carries no 16-bit command")
    try:
        args = unpack_words(data[2:])
    except CRCError as exc:
        if exc.index is None:
            raise CRCError(f"{len(data) - 2} argument bytes are not whole words") from None
        raise CRCError(f"argument word {exc.index}: {exc}", index=exc.index) from None
    return int.from_bytes(data[:2], "big"), args


# -- chip -> host: typed results ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Measurement:
    """One set of measured values, named like the driver's quantities.

    Mass concentrations in µg/m³ (pm1 ... pm10, cumulative), number
    concentrations in #/cm³ (nc0_5 ... nc10, cumulative), typical particle size
    in µm.
    """

    pm1: float
    pm25: float
    pm4: float
    pm10: float
    nc0_5: float
    nc1_0: float
    nc2_5: float
    nc4_0: float
    nc10: float
    tps: float

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_tuple(self) -> tuple[float, ...]:
        return astuple(self)


QUANTITIES: tuple[str, ...] = tuple(f.name for f in fields(Measurement))


def f32(raw: bytes) -> float:
    """A big-endian IEEE-754 single as the shortest decimal that maps back to it.

    ``3F D0 A3 D7`` is 1.6299999952316284 as a double but 1.63 to the chip: readings
    and captures show what the sensor meant (and ``struct.pack(">f", x)`` still gives
    the same four bytes).
    """
    (x,) = struct.unpack(">f", raw)
    if not math.isfinite(x):
        return x
    for digits in range(6, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack(">f", y) == raw:
            return y
    return x  # pragma: no cover - 9 significant digits always round-trip a float32


def _expect(data: bytes, n: int, what: str) -> None:
    if len(data) != n:
        raise ValueError(f"{what}: expected {n} bytes, got {len(data)}")


def decode_measurement(data: bytes) -> Measurement:
    """60 bytes (float mode) or 30 bytes (uint16 mode; particle size nm -> µm)."""
    if len(data) == 60:
        words = unpack_words(data)
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        return Measurement(*(f32(raw[i:i + 4]) for i in range(0, 40, 4)))
    if len(data) == 30:
        w = unpack_words(data)
        return Measurement(*(float(x) for x in w[:9]), w[9] / 1000.0)
    raise ValueError(f"measured values: expected 60 (float) or 30 (uint16) bytes, got {len(data)}")


def decode_data_ready(data: bytes) -> bool:
    """``00 00 81`` -> False, ``00 01 B0`` -> True."""
    _expect(data, DATA_READY_LEN, "data-ready flag")
    (word,) = unpack_words(data)
    if word not in (0, 1):
        raise ValueError(f"data-ready flag: unexpected word 0x{word:04x}")
    return bool(word)


def decode_string(data: bytes) -> str:
    """Product type / serial number: ASCII in CRC'd words, up to the first NUL."""
    if not data:
        raise ValueError("empty string reply")
    raw = b"".join(w.to_bytes(2, "big") for w in unpack_words(data))
    raw = raw.split(b"\0", 1)[0]
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"string reply is not ASCII: {raw.hex()}") from None
    if not text.isprintable():
        raise ValueError(f"string reply is not printable: {text!r}")
    return text


def decode_firmware_version(data: bytes) -> tuple[int, int]:
    """(major, minor) from the first word (1 word on I2C; longer replies tolerated)."""
    if not data:
        raise ValueError("empty firmware version reply")
    words = unpack_words(data)
    return words[0] >> 8, words[0] & 0xFF


def decode_u32(data: bytes) -> int:
    """Auto-cleaning interval (seconds) or device status register: two words, MSW first."""
    _expect(data, U32_LEN, "32-bit value")
    hi, lo = unpack_words(data)
    return hi << 16 | lo


# -- chip side: encoders for the emulator and tests ---------------------------------------
def encode_measurement(m: Measurement | Iterable[float], fmt: int = FORMAT_FLOAT) -> bytes:
    values = m.as_tuple() if isinstance(m, Measurement) else tuple(m)
    if len(values) != 10:
        raise ValueError(f"a measurement has 10 values, got {len(values)}")
    if fmt == FORMAT_FLOAT:
        raw = struct.pack(">10f", *values)
        return pack_words(int.from_bytes(raw[i:i + 2], "big") for i in range(0, 40, 2))
    if fmt == FORMAT_UINT16:
        ints = [round(v) for v in values[:9]] + [round(values[9] * 1000)]
        return pack_words(max(0, min(0xFFFF, v)) for v in ints)
    raise ValueError(f"unknown output format 0x{fmt:04x}")


def encode_string(text: str, length: int) -> bytes:
    """ASCII, NUL-padded to ``length`` bytes (even), as words with CRCs."""
    raw = text.encode("ascii")
    if len(raw) > length or length % 2:
        raise ValueError(f"{text!r} does not fit {length} bytes")
    raw = raw.ljust(length, b"\0")
    return pack_words(int.from_bytes(raw[i:i + 2], "big") for i in range(0, length, 2))


def encode_u32(value: int) -> bytes:
    return pack_words((value >> 16 & 0xFFFF, value & 0xFFFF))


def encode_firmware_version(major: int, minor: int) -> bytes:
    return pack_words((major << 8 | minor,))


def encode_data_ready(ready: bool) -> bytes:
    return pack_words((int(bool(ready)),))


# -- captures -----------------------------------------------------------------------------
def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _describe_reply(code: int, data: bytes) -> dict[str, Any]:
    """A reply's fields for JSON; raises CRCError/ValueError."""
    if code == CMD_READ_DATA_READY:
        return {"ready": decode_data_ready(data)}
    if code == CMD_READ_MEASURED_VALUES:
        m = decode_measurement(data)
        return {"format": "float" if len(data) == 60 else "uint16",
                **{k: _finite(v) for k, v in m.as_dict().items()}}
    if code in (CMD_READ_PRODUCT_TYPE, CMD_READ_SERIAL_NUMBER):
        key = "product_type" if code == CMD_READ_PRODUCT_TYPE else "serial_number"
        return {key: decode_string(data)}
    if code == CMD_READ_FIRMWARE_VERSION:
        major, minor = decode_firmware_version(data)
        return {"firmware": f"{major}.{minor}"}
    if code == CMD_AUTO_CLEANING_INTERVAL:
        return {"interval_s": decode_u32(data)}
    if code == CMD_READ_DEVICE_STATUS:
        status = decode_u32(data)
        return {"status": f"0x{status:08x}",
                "fan_speed_warning": bool(status & STATUS_FAN_SPEED_WARNING),
                "laser_error": bool(status & STATUS_LASER_ERROR),
                "fan_error": bool(status & STATUS_FAN_ERROR)}
    raise ValueError(f"command 0x{code:04x} returns no data")  # pragma: no cover


def _describe_write(code: int, args: list[int]) -> dict[str, Any]:
    info = COMMANDS[code]
    doc: dict[str, Any] = {"type": info.name, "code": f"{code:04x}"}
    if code == CMD_START_MEASUREMENT:
        doc["format"] = FORMATS.get(args[0], f"unknown 0x{args[0]:04x}")
    elif code == CMD_AUTO_CLEANING_INTERVAL and args:
        doc["type"] = "write_auto_cleaning_interval"
        doc["interval_s"] = args[0] << 16 | args[1]
    return doc


def decode_capture(
    records: Iterable[tuple[int, str, bytes | None]], addresses: tuple[int, ...] = (ADDRESS,)
) -> Iterator[dict[str, Any]]:
    """Captured transfers -> one dict per command (with its reply) or rejected transfer.

    ``records`` are ``(addr, "W" | "R", data)``; ``data`` is None for a NACKed
    transfer. A command that returns data is reported when its reply is read
    (every read after one pointer write is a reply, as the data-ready flag
    allows); a pointer write never followed by a read is reported with
    ``"reply": None``. Never raises on bad input.
    """
    pending: dict[str, Any] | None = None  # a read command waiting for its reply
    pointer: int | None = None  # the code subsequent reads answer
    no = 0

    def rejected(reason: str, data: bytes | None) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": "rejected", "transfer": no, "reason": reason}
        if data is not None:
            doc["bytes"] = data.hex(" ")
        return doc

    for no, (addr, kind, data) in enumerate(records, 1):
        if addr not in addresses:
            yield rejected(f"address 0x{addr:02x} is not an SPS30 "
                           f"({', '.join(f'0x{a:02x}' for a in addresses)})", data)
            continue
        if kind == "W":
            if pending is not None:
                yield {**pending, "reply": None}
                pending = None
            pointer = None
            if data is None:
                yield rejected("write NACKed", None)
                continue
            if not data:
                yield {"type": "wake_pulse", "transfer": no}  # START + address + STOP
                continue
            try:
                code, args = parse_write(data)
            except ValueError as exc:
                yield rejected(str(exc), data)
                continue
            info = COMMANDS.get(code)
            if info is None:
                yield rejected(f"unknown command 0x{code:04x}", data)
                continue
            if len(args) not in info.args:
                yield rejected(f"{info.name} (0x{code:04x}) takes "
                               f"{' or '.join(map(str, info.args))} argument words, "
                               f"got {len(args)}", data)
                continue
            doc = {**_describe_write(code, args), "transfer": no}
            if info.reply and not args:
                pointer, pending = code, doc
            else:
                yield doc
            continue
        # a read
        if pointer is None:
            yield rejected("read NACKed" if data is None else
                           "read without a preceding command that returns data", data)
            continue
        base = pending or {"type": COMMANDS[pointer].name, "code": f"{pointer:04x}"}
        pending = None
        if data is None:
            yield rejected(f"read NACKed after {base['type']} (0x{pointer:04x})", None)
            continue
        try:
            reply = _describe_reply(pointer, data)
        except ValueError as exc:  # CRCError included
            yield rejected(f"{base['type']} (0x{pointer:04x}) reply: {exc}", data)
            continue
        yield {**base, "reply_transfer": no, **reply}
    if pending is not None:
        yield {**pending, "reply": None}
