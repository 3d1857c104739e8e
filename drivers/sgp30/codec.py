"""Sensirion SGP30 gas sensor wire format, with no I/O and no clock.

Like the other Sensirion chips (:mod:`drivers.sensirion`): the host writes a
16-bit command (big-endian, no CRC), followed for some commands by argument
words ``hi lo CRC``; after the command's execution time it reads the reply in
a *separate* transfer as ``hi lo CRC`` words. A read before the command has
finished is NACKed (the chip does not stretch the clock).

Word orders worth a second look (datasheet, checked against Sensirion's
embedded-sgp ``sgp30.c`` and Adafruit's driver):

* ``measure_iaq`` (0x2008) replies eCO2 (ppm) then TVOC (ppb);
* ``measure_raw_signals`` (0x2050) replies H2 then ethanol (raw ticks);
* ``get_iaq_baseline`` (0x2015) replies the eCO2 baseline then the TVOC baseline,
  but ``set_iaq_baseline`` (0x201E) takes them the other way round: TVOC first.

Humidity compensation takes the absolute humidity in g/m³ as an 8.8 fixed-point
word (0x0F80 = 15.50 g/m³); 0 switches compensation off (the chip then uses its
default, 0x0B92 = 11.57 g/m³, as after power-up).

Besides the host side this module has the chip side the emulator uses
(:func:`encode_words`, :func:`parse_write`) and :func:`decode_capture` for
``citynode frames sgp30``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..i2ccapture import CaptureWalk, Record
from ..sensirion import CRCError, pack_words, unpack_words

__all__ = [
    "ADDRESS",
    "COMMANDS",
    "AirQuality",
    "Baseline",
    "CRCError",
    "FeatureSet",
    "RawSignals",
    "absolute_humidity",
    "command",
    "decode_capture",
    "humidity_word",
]

ADDRESS = 0x58  # fixed

IAQ_INIT = 0x2003
MEASURE_IAQ = 0x2008
GET_IAQ_BASELINE = 0x2015
SET_IAQ_BASELINE = 0x201E
SET_ABSOLUTE_HUMIDITY = 0x2061
MEASURE_TEST = 0x2032
GET_FEATURE_SET = 0x202F
MEASURE_RAW = 0x2050
GET_SERIAL_ID = 0x3682
GET_TVOC_INCEPTIVE_BASELINE = 0x20B3  # feature set >= 0x21; decoded in captures only
SET_TVOC_BASELINE = 0x2077  # feature set >= 0x21; decoded in captures only

MEASURE_TEST_OK = 0xD400  # the self-test's pass pattern
PRODUCT_TYPE_SGP30 = 0  # bits 15..12 of the feature set word
MIN_FEATURE_SET = 0x20  # the oldest version Sensirion's driver accepts
DEFAULT_HUMIDITY_WORD = 0x0B92  # 11.57 g/m³: after power-up, soft reset, or a 0 written
WARMUP_S = 15.0  # after iaq_init measure_iaq returns these fixed values for 15 s
WARMUP_ECO2 = 400
WARMUP_TVOC = 0


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A command: its argument words, reply words and maximum execution time."""

    code: int
    name: str
    args: int = 0
    reply: int = 0  # words
    duration_s: float = 0.0


COMMANDS: dict[int, CommandInfo] = {c.code: c for c in (
    CommandInfo(IAQ_INIT, "iaq_init", duration_s=0.010),
    CommandInfo(MEASURE_IAQ, "measure_iaq", reply=2, duration_s=0.012),
    CommandInfo(GET_IAQ_BASELINE, "get_iaq_baseline", reply=2, duration_s=0.010),
    CommandInfo(SET_IAQ_BASELINE, "set_iaq_baseline", args=2, duration_s=0.010),
    CommandInfo(SET_ABSOLUTE_HUMIDITY, "set_absolute_humidity", args=1, duration_s=0.010),
    CommandInfo(MEASURE_TEST, "measure_test", reply=1, duration_s=0.220),
    CommandInfo(GET_FEATURE_SET, "get_feature_set", reply=1, duration_s=0.010),
    CommandInfo(MEASURE_RAW, "measure_raw_signals", reply=2, duration_s=0.025),
    CommandInfo(GET_SERIAL_ID, "get_serial_id", reply=3, duration_s=0.0005),
    CommandInfo(GET_TVOC_INCEPTIVE_BASELINE, "get_tvoc_inceptive_baseline", reply=1,
                duration_s=0.010),
    CommandInfo(SET_TVOC_BASELINE, "set_tvoc_baseline", args=1, duration_s=0.010),
)}


# -- results -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AirQuality:
    """``measure_iaq``: eCO2 in ppm, TVOC in ppb."""

    eco2: int
    tvoc: int

    @property
    def is_warmup_pattern(self) -> bool:
        """The fixed 400 ppm / 0 ppb the chip returns for 15 s after iaq_init."""
        return self.eco2 == WARMUP_ECO2 and self.tvoc == WARMUP_TVOC


@dataclass(frozen=True, slots=True)
class RawSignals:
    """``measure_raw_signals``: H2 and ethanol raw ticks (higher = less gas)."""

    h2: int
    ethanol: int


@dataclass(frozen=True, slots=True)
class Baseline:
    """The IAQ algorithm's baseline, as the chip reports it (opaque to us)."""

    eco2: int
    tvoc: int

    @property
    def valid(self) -> bool:
        """Sensirion's driver treats an all-zero baseline as "none yet"."""
        return bool(self.eco2 or self.tvoc)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """``get_feature_set``: product type (0 = SGP30) and feature set version (0x20, 0x22...)."""

    word: int

    @property
    def product_type(self) -> int:
        return self.word >> 12 & 0xF

    @property
    def version(self) -> int:
        return self.word & 0xFF

    @property
    def is_sgp30(self) -> bool:
        return self.product_type == PRODUCT_TYPE_SGP30 and self.version >= MIN_FEATURE_SET


# -- host -> chip ---------------------------------------------------------------------
def command(code: int, *args: int) -> bytes:
    """``code`` big-endian (no CRC), then each argument word with its CRC."""
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"command code out of range: {code!r}")
    return code.to_bytes(2, "big") + pack_words(args)


def set_iaq_baseline(baseline: Baseline) -> bytes:
    """Note the order: TVOC baseline first, then eCO2 (the reverse of what get returns)."""
    if not baseline.valid:
        raise ValueError("refusing to write an all-zero baseline (it means 'no baseline')")
    return command(SET_IAQ_BASELINE, baseline.tvoc, baseline.eco2)


def set_absolute_humidity(word: int) -> bytes:
    """8.8 fixed-point g/m³ (:func:`humidity_word`); 0 switches compensation off."""
    return command(SET_ABSOLUTE_HUMIDITY, word)


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


# -- humidity -------------------------------------------------------------------------
def absolute_humidity(temp_c: float, rh_pct: float) -> float:
    """Absolute humidity in g/m³ from °C and %RH (the SGP30 datasheet's formula, Magnus
    with Sensirion's constants): 216.7 * (RH/100 * 6.112 * exp(17.62 T / (243.12 + T)))
    / (273.15 + T)."""
    if not (math.isfinite(temp_c) and math.isfinite(rh_pct)):
        raise ValueError(f"temperature and humidity must be finite, got {temp_c}, {rh_pct}")
    if not -50.0 <= temp_c <= 130.0:
        raise ValueError(f"temperature {temp_c} °C is outside -50 ... 130 °C")
    rh = min(max(rh_pct, 0.0), 100.0)
    vapour_hpa = rh / 100.0 * 6.112 * math.exp(17.62 * temp_c / (243.12 + temp_c))
    return 216.7 * vapour_hpa / (273.15 + temp_c)


def humidity_word(ah_g_m3: float) -> int:
    """g/m³ -> the 8.8 fixed-point word; 0 stays 0 (compensation off), any other value is
    at least 0x0001 so that a very dry reading does not switch compensation off."""
    if not math.isfinite(ah_g_m3) or ah_g_m3 < 0:
        raise ValueError(f"absolute humidity must be >= 0 g/m3, got {ah_g_m3}")
    if ah_g_m3 == 0:
        return 0
    return max(1, min(0xFFFF, round(ah_g_m3 * 256.0)))


def humidity_from_word(word: int) -> float:
    """The 8.8 fixed-point word -> g/m³ (0x0F80 -> 15.5)."""
    return word / 256.0


# -- chip -> host ---------------------------------------------------------------------
def _words(data: bytes, n: int, what: str) -> list[int]:
    if len(data) != 3 * n:
        raise CRCError(f"{what}: expected {3 * n} bytes ({n} words), got {len(data)}")
    try:
        return unpack_words(data)
    except CRCError as exc:
        raise CRCError(f"{what}: {exc}", index=exc.index) from None


def decode_air_quality(data: bytes) -> AirQuality:
    eco2, tvoc = _words(data, 2, "measure_iaq reply")
    return AirQuality(eco2, tvoc)


def decode_raw_signals(data: bytes) -> RawSignals:
    h2, ethanol = _words(data, 2, "measure_raw_signals reply")
    return RawSignals(h2, ethanol)


def decode_baseline(data: bytes) -> Baseline:
    """get_iaq_baseline: eCO2 baseline word, then TVOC baseline word."""
    eco2, tvoc = _words(data, 2, "get_iaq_baseline reply")
    return Baseline(eco2, tvoc)


def decode_feature_set(data: bytes) -> FeatureSet:
    (word,) = _words(data, 1, "get_feature_set reply")
    return FeatureSet(word)


def decode_serial_id(data: bytes) -> int:
    """Three words, most significant first: a 48-bit serial number."""
    a, b, c = _words(data, 3, "get_serial_id reply")
    return a << 32 | b << 16 | c


def decode_test_result(data: bytes) -> int:
    """measure_test: 0xD400 (:data:`MEASURE_TEST_OK`) when the self-test passed."""
    (word,) = _words(data, 1, "measure_test reply")
    return word


def encode_words(*words: int) -> bytes:
    """Chip side: a reply as ``hi lo CRC`` words (values clamped to 16 bits)."""
    return pack_words(max(0, min(0xFFFF, int(w))) for w in words)


# -- captures -------------------------------------------------------------------------


def _describe_args(code: int, args: list[int]) -> dict[str, Any]:
    if code == SET_IAQ_BASELINE:
        return {"tvoc_baseline": f"{args[0]:04x}", "eco2_baseline": f"{args[1]:04x}"}
    if code == SET_ABSOLUTE_HUMIDITY:
        return {"absolute_humidity": round(humidity_from_word(args[0]), 3),
                "compensation": "off" if args[0] == 0 else "on"}
    if code == SET_TVOC_BASELINE:
        return {"tvoc_baseline": f"{args[0]:04x}"}
    return {}


def _describe_reply(code: int, data: bytes) -> dict[str, Any]:
    """A reply's fields for JSON; raises CRCError."""
    if code == MEASURE_IAQ:
        aq = decode_air_quality(data)
        doc: dict[str, Any] = {"type": "air_quality", "eco2": aq.eco2, "tvoc": aq.tvoc}
        if aq.is_warmup_pattern:
            doc["note"] = "400 ppm / 0 ppb: the fixed output of the first 15 s after iaq_init"
        return doc
    if code == MEASURE_RAW:
        raw = decode_raw_signals(data)
        return {"type": "raw_signals", "h2": raw.h2, "ethanol": raw.ethanol}
    if code == GET_IAQ_BASELINE:
        b = decode_baseline(data)
        return {"type": "baseline", "eco2_baseline": f"{b.eco2:04x}",
                "tvoc_baseline": f"{b.tvoc:04x}"}
    if code == GET_FEATURE_SET:
        fs = decode_feature_set(data)
        return {"type": "feature_set", "product_type": fs.product_type,
                "version": f"0x{fs.version:02x}", "sgp30": fs.is_sgp30}
    if code == GET_SERIAL_ID:
        return {"type": "serial", "serial": f"{decode_serial_id(data):012x}"}
    if code == MEASURE_TEST:
        word = decode_test_result(data)
        return {"type": "self_test", "result": f"{word:04x}", "passed": word == MEASURE_TEST_OK}
    (word,) = _words(data, 1, "reply")
    return {"type": "tvoc_inceptive_baseline", "tvoc_baseline": f"{word:04x}"}


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = (ADDRESS,)) -> Iterator[dict[str, Any]]:
    """Captured transfers (``parse_capture`` output) -> JSON-ready dicts.

    Writes become ``command`` events (with their decoded arguments); a read is
    decoded according to the last command written to the same address. NACKs,
    CRC failures, unknown commands and reads that fit no command are
    ``rejected`` with a reason. Never raises for any byte content.
    """
    pending: dict[int, int | None] = {}
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        if kind == "W":
            yield _capture_write(head, addr, data, pending)
        else:
            yield _capture_read(head, addr, data, pending)
    yield from walk.summary()


def _capture_write(head: dict[str, Any], addr: int, data: bytes | None,
                   pending: dict[int, int | None]) -> dict[str, Any]:
    pending[addr] = None
    if data is None:
        return {**head, "type": "rejected",
                "reason": "write NACKed: no device, or it is still executing a command"}
    if not data:
        return {**head, "type": "probe", "reason": "empty write (address probe)"}
    try:
        code, args = parse_write(data)
    except ValueError as exc:  # CRCError included
        return {**head, "type": "rejected", "bytes": data.hex(" "), "reason": str(exc)}
    info = COMMANDS.get(code)
    if info is None:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"unknown command 0x{code:04x}"}
    if len(args) != info.args:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"{info.name} (0x{code:04x}) takes {info.args} argument words, "
                          f"got {len(args)}"}
    pending[addr] = code if info.reply else None
    return {**head, "type": "command", "cmd": f"{code:04x}", "name": info.name,
            **_describe_args(code, args)}


def _capture_read(head: dict[str, Any], addr: int, data: bytes | None,
                  pending: dict[int, int | None]) -> dict[str, Any]:
    code = pending.get(addr)
    if data is None:
        why = ("the command has not finished yet, or no device" if code is not None
               else "no data to read, or no device")
        return {**head, "type": "rejected", "reason": f"read NACKed ({why})"}
    pending[addr] = None
    if code is None:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"read of {len(data)} bytes with no command that returns data "
                          "before it"}
    try:
        return {**head, **_describe_reply(code, data)}
    except CRCError as exc:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"{COMMANDS[code].name} (0x{code:04x}): {exc}"}
