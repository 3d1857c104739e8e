"""Sensirion SHT3x (SHT30/SHT31/SHT35) wire format, with no I/O at all.

The chip takes 16-bit commands (big-endian, no CRC) and answers with 16-bit
words, each followed by a Sensirion CRC-8 (:mod:`drivers.sensirion`). A
measurement is 6 bytes: ``T_msb T_lsb CRC RH_msb RH_lsb CRC``, with
T = -45 + 175 * S_T / 65535 °C and RH = 100 * S_RH / 65535 %.

Besides the host side (commands, :func:`decode_measurement`, :func:`decode_status`)
this module has the device side the emulator uses (:func:`encode_measurement`,
:func:`temp_to_raw`...) and :func:`decode_capture`, which turns a capture of
I2C transfers (``ADDR W|R HEX`` lines) into JSON-ready dicts for
``citynode frames sht3x``. See sensor-protocols.md section 4a.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..i2ccapture import CaptureWalk, Record
from ..sensirion import CRCError, crc8, pack_words, unpack_words

ADDRESSES = (0x44, 0x45)  # ADDR pin low / high
GENERAL_CALL = 0x00  # general-call address; byte 0x06 resets every chip on the bus

# -- commands ---------------------------------------------------------------------
MEASURE_STRETCH = {"high": 0x2C06, "medium": 0x2C0D, "low": 0x2C10}
MEASURE_NO_STRETCH = {"high": 0x2400, "medium": 0x240B, "low": 0x2416}
PERIODIC = {0.5: 0x2032, 1.0: 0x2130, 2.0: 0x2236, 4.0: 0x2334, 10.0: 0x2737}  # high repeatability
FETCH_DATA = 0xE000
ART = 0x2B32
BREAK = 0x3093
SOFT_RESET = 0x30A2
HEATER_ON = 0x306D
HEATER_OFF = 0x3066
READ_STATUS = 0xF32D
CLEAR_STATUS = 0x3041
READ_SERIAL_STRETCH = 0x3780
READ_SERIAL = 0x3682

#: Maximum single-shot measurement duration by repeatability (datasheet; low VDD).
MEASURE_TIME_S = {"high": 0.0155, "medium": 0.0065, "low": 0.0045}
SOFT_RESET_TIME_S = 0.0015
POWER_UP_TIME_S = 0.001

_REPEATABILITY = {**{v: k for k, v in MEASURE_STRETCH.items()},
                  **{v: k for k, v in MEASURE_NO_STRETCH.items()}}

COMMAND_NAMES: dict[int, str] = {
    **{c: f"single shot, {r} repeatability, clock stretching" for r, c in MEASURE_STRETCH.items()},
    **{c: f"single shot, {r} repeatability, no clock stretching"
       for r, c in MEASURE_NO_STRETCH.items()},
    **{c: f"periodic {mps:g} mps, high repeatability" for mps, c in PERIODIC.items()},
    FETCH_DATA: "fetch data (periodic mode)",
    ART: "periodic with accelerated response time",
    BREAK: "break (stop periodic mode)",
    SOFT_RESET: "soft reset",
    HEATER_ON: "heater on",
    HEATER_OFF: "heater off",
    READ_STATUS: "read status register",
    CLEAR_STATUS: "clear status register",
    READ_SERIAL_STRETCH: "read serial number (clock stretching)",
    READ_SERIAL: "read serial number",
}

#: Commands after which the chip has 16-bit words to read, and how many.
REPLY_WORDS: dict[int, int] = {
    **{c: 2 for c in (*MEASURE_STRETCH.values(), *MEASURE_NO_STRETCH.values(), FETCH_DATA)},
    READ_STATUS: 1,
    READ_SERIAL_STRETCH: 2,
    READ_SERIAL: 2,
}


def command(code: int) -> bytes:
    """A 16-bit command as written on the wire (big-endian, no CRC)."""
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"command {code!r} out of range")
    return code.to_bytes(2, "big")


def is_measurement(code: int) -> bool:
    return code in _REPEATABILITY or code == FETCH_DATA


def repeatability(code: int) -> str | None:
    """'high', 'medium' or 'low' for a single-shot command, else None."""
    return _REPEATABILITY.get(code)


def stretches(code: int) -> bool:
    """True for the single-shot commands that hold SCL low until the result is ready."""
    return code in MEASURE_STRETCH.values()


# -- conversions ------------------------------------------------------------------
T_STEP = 175 / 65535  # °C per LSB
RH_STEP = 100 / 65535  # %RH per LSB


def raw_to_temp(raw: int) -> float:
    """S_T -> °C."""
    return -45.0 + 175.0 * raw / 65535.0


def raw_to_rh(raw: int) -> float:
    """S_RH -> %RH."""
    return 100.0 * raw / 65535.0


def temp_to_raw(temp_c: float) -> int:
    """°C -> nearest S_T, clamped to the sensor's output range (-45 ... 130 °C)."""
    return max(0, min(0xFFFF, round((temp_c + 45.0) * 65535.0 / 175.0)))


def rh_to_raw(rh: float) -> int:
    """%RH -> nearest S_RH, clamped to 0 ... 100 %."""
    return max(0, min(0xFFFF, round(rh * 65535.0 / 100.0)))


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded measurement: °C and %RH, with the raw words."""

    temp: float
    rh: float
    raw_t: int
    raw_rh: int

    def as_dict(self) -> dict[str, Any]:
        return {"temp": round(self.temp, 2), "rh": round(self.rh, 2),
                "raw_t": self.raw_t, "raw_rh": self.raw_rh}


def decode_measurement(data: bytes) -> Measurement:
    """6 bytes ``T T CRC RH RH CRC`` -> :class:`Measurement`; :class:`CRCError` if bad."""
    if len(data) != 6:
        raise CRCError(f"a measurement is 6 bytes, got {len(data)}")
    raw_t, raw_rh = unpack_words(data)
    return Measurement(raw_to_temp(raw_t), raw_to_rh(raw_rh), raw_t, raw_rh)


def encode_measurement(temp_c: float, rh: float) -> bytes:
    """Device side: the 6 bytes the chip sends for these values."""
    return pack_words([temp_to_raw(temp_c), rh_to_raw(rh)])


# -- status register --------------------------------------------------------------
ST_ALERT = 1 << 15  # at least one pending alert (set at power-up)
ST_HEATER = 1 << 13
ST_RH_ALERT = 1 << 11  # RH tracking alert
ST_T_ALERT = 1 << 10  # T tracking alert
ST_RESET = 1 << 4  # system reset detected (power-up, soft or general-call reset, brown-out)
ST_COMMAND = 1 << 1  # last command not processed (invalid, or failed its checksum)
ST_CHECKSUM = 1 << 0  # checksum of the last write transfer failed
#: The bits "clear status register" (0x3041) clears.
ST_CLEARABLE = ST_ALERT | ST_RH_ALERT | ST_T_ALERT | ST_RESET
#: Status right after power-up or a reset (datasheet defaults: alert pending, reset detected).
ST_POWER_UP = ST_ALERT | ST_RESET


@dataclass(frozen=True, slots=True)
class Status:
    """The 16-bit status register, bit by bit."""

    word: int

    @property
    def alert_pending(self) -> bool:
        return bool(self.word & ST_ALERT)

    @property
    def heater(self) -> bool:
        return bool(self.word & ST_HEATER)

    @property
    def rh_alert(self) -> bool:
        return bool(self.word & ST_RH_ALERT)

    @property
    def t_alert(self) -> bool:
        return bool(self.word & ST_T_ALERT)

    @property
    def reset_detected(self) -> bool:
        return bool(self.word & ST_RESET)

    @property
    def command_failed(self) -> bool:
        return bool(self.word & ST_COMMAND)

    @property
    def checksum_failed(self) -> bool:
        return bool(self.word & ST_CHECKSUM)

    def as_dict(self) -> dict[str, Any]:
        return {"status": f"{self.word:04x}", "alert_pending": self.alert_pending,
                "heater": self.heater, "rh_alert": self.rh_alert, "t_alert": self.t_alert,
                "reset_detected": self.reset_detected, "command_failed": self.command_failed,
                "checksum_failed": self.checksum_failed}


def decode_status(data: bytes) -> Status:
    """3 bytes ``hi lo CRC`` -> :class:`Status`; :class:`CRCError` if bad."""
    if len(data) != 3:
        raise CRCError(f"the status register is 3 bytes, got {len(data)}")
    return Status(unpack_words(data)[0])


def decode_serial(data: bytes) -> int:
    """6 bytes (2 words with CRC) -> the 32-bit serial number."""
    if len(data) != 6:
        raise CRCError(f"the serial number is 6 bytes, got {len(data)}")
    hi, lo = unpack_words(data)
    return hi << 16 | lo


# -- captures ---------------------------------------------------------------------


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Turn captured transfers (``parse_capture`` output) into JSON-ready dicts.

    Writes become ``command`` events; reads are decoded according to the last
    command written to the same address (``measurement``, ``status``,
    ``serial``). CRC failures, NACKs and reads that fit no command are
    ``rejected`` with a reason. Transfers to other addresses are summed up in
    one ``rejected`` line at the end. Never raises for any byte content.
    """
    pending: dict[int, int | None] = {}  # address -> command whose reply is still unread
    walk = CaptureWalk(addresses, passthrough=(GENERAL_CALL,))
    for addr, kind, data, head in walk(records):
        if addr == GENERAL_CALL and addr not in addresses:
            if kind == "W" and data == b"\x06":
                for a in pending:
                    pending[a] = None
                yield {"transfer": head["transfer"], "type": "command", "addr": "0x00", "cmd": "06",
                       "name": "general call reset"}
            else:
                walk.skip(addr)
            continue
        if kind == "W":
            yield from _capture_write(head, addr, data, pending)
        else:
            yield _capture_read(head, addr, data, pending)
    yield from walk.summary()


def _capture_write(head: dict[str, Any], addr: int, data: bytes | None,
                   pending: dict[int, int | None]) -> Iterator[dict[str, Any]]:
    if data is None:
        yield {**head, "type": "rejected", "reason": "write NACKed: no device, or it is busy "
               "measuring"}
        return
    if len(data) == 0:
        yield {**head, "type": "probe", "reason": "empty write (address probe)"}
        return
    if len(data) not in (2, 5):
        yield {**head, "type": "rejected", "bytes": data.hex(" "),
               "reason": f"write of {len(data)} bytes: not a 16-bit command (2 bytes) or a "
                         "command with one argument word (5 bytes)"}
        return
    code = int.from_bytes(data[:2], "big")
    doc = {**head, "type": "command", "cmd": f"{code:04x}",
           "name": COMMAND_NAMES.get(code, "unknown command")}
    if len(data) == 5:
        arg, crc = data[2:4], data[4]
        if crc8(arg) != crc:
            yield {**head, "type": "rejected", "bytes": data.hex(" "),
                   "reason": f"argument CRC mismatch ({arg.hex()}): got 0x{crc:02x}, "
                             f"expected 0x{crc8(arg):02x}"}
            return
        doc["argument"] = f"{int.from_bytes(arg, 'big'):04x}"
    pending[addr] = code if code in REPLY_WORDS else None
    yield doc


def _capture_read(head: dict[str, Any], addr: int, data: bytes | None,
                  pending: dict[int, int | None]) -> dict[str, Any]:
    code = pending.get(addr)
    if data is None:
        why = ("measurement not finished yet, or no device" if code is not None and
               is_measurement(code) else "no data to read, or no device")
        return {**head, "type": "rejected", "reason": f"read NACKed ({why})"}
    if code is None:
        # A read with no command before it in the capture: a measurement is the only reply
        # that can be read like this (periodic mode after fetch, or a cut capture).
        if len(data) == 6:
            try:
                m = decode_measurement(data)
            except CRCError as exc:
                return {**head, "type": "rejected", "reason": str(exc), "bytes": data.hex(" ")}
            return {**head, "type": "measurement", **m.as_dict(),
                    "note": "no command before this read in the capture: assumed a measurement"}
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"read of {len(data)} bytes with no command before it"}
    pending[addr] = None
    want = 3 * REPLY_WORDS[code]
    if len(data) != want:
        # A host may read fewer words than there are (T only): decode what is whole.
        if len(data) < want and len(data) % 3 == 0 and is_measurement(code) and data:
            try:
                raw_t = unpack_words(data)[0]
            except CRCError as exc:
                return {**head, "type": "rejected", "reason": str(exc), "bytes": data.hex(" ")}
            return {**head, "type": "measurement", "temp": round(raw_to_temp(raw_t), 2),
                    "raw_t": raw_t, "note": "temperature only (3-byte read)"}
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"read of {len(data)} bytes after {code:04x}; expected {want}"}
    try:
        if is_measurement(code):
            return {**head, "type": "measurement", **decode_measurement(data).as_dict()}
        if code == READ_STATUS:
            return {**head, "type": "status", **decode_status(data).as_dict()}
        return {**head, "type": "serial", "serial": decode_serial(data)}
    except CRCError as exc:
        return {**head, "type": "rejected", "reason": str(exc), "bytes": data.hex(" ")}
