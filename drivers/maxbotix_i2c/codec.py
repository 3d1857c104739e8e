"""MaxBotix I2CXL-MaxSonar-EZ (MB1202/1212/1222/1232/1242) wire format, with no I/O.

sensor-protocols.md section 8.4 (MaxBotix MB1242 datasheet p.3):

* default 7-bit address 0x70 (the datasheet's 224/225 are the 8-bit write/read forms);
* take a range reading: write one byte 0x51; the chip ranges for up to ~80-100 ms and
  ignores (NACKs) the bus meanwhile; then read 2 bytes, high byte first, in centimetres;
* change address: write ``AA A5 <new 8-bit address>``; odd values are taken as the next
  lower even one, and 0, 80, 164 and 170 are ignored;
* range 20 (or 25) to 765 cm, 1 cm resolution.

Assumption (not stated in the datasheet excerpt): 765 cm, the top of the range, is what
the chip reports when nothing echoes back, so :func:`is_no_target` treats it (and 0) as
"no target". :func:`decode_capture` turns a capture of transfers (``ADDR W|R HEX``
lines) into JSON-ready dicts for ``citynode frames i2cxl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..i2ccapture import CaptureWalk, Record

ADDRESS = 0x70
ADDRESSES = (ADDRESS,)
RANGE_COMMAND = 0x51
CHANGE_ADDRESS = b"\xaa\xa5"
#: 8-bit addresses the chip refuses in a change-address command.
INVALID_ADDRESSES_8BIT = frozenset({0, 80, 164, 170})
#: Time from the range command to a readable result (datasheet: "allow 100ms").
RANGE_WAIT_S = 0.1
#: Typical ranging time the emulator uses ("command a range reading ~80ms before reading").
RANGING_TIME_S = 0.08
MIN_CM = 20
MAX_CM = 765



def range_command() -> bytes:
    return bytes([RANGE_COMMAND])


def change_address_command(new_address: int) -> bytes:
    """The 3-byte write that moves the chip to 7-bit ``new_address``."""
    if not 0 < new_address < 0x80:
        raise ValueError(f"I2C address must be 7-bit, not {new_address!r}")
    eight = new_address << 1
    if eight in INVALID_ADDRESSES_8BIT:
        raise ValueError(f"the I2CXL refuses address {new_address:#04x} "
                         f"(8-bit {eight}: 0, 80, 164 and 170 are ignored)")
    return CHANGE_ADDRESS + bytes([eight])


def decode_range(data: bytes) -> int:
    """The range in centimetres from the 2-byte reply (big-endian)."""
    if len(data) != 2:
        raise ValueError(f"range reply is 2 bytes, got {len(data)}")
    return int.from_bytes(data, "big")


def encode_range(cm: int) -> bytes:
    return max(0, min(0xFFFF, int(cm))).to_bytes(2, "big")


def is_no_target(cm: int, max_cm: int = MAX_CM) -> bool:
    """True for the readings that mean nothing echoed (0, or the top of the range)."""
    return cm <= 0 or cm >= max_cm


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Turn captured transfers (``parse_capture`` output) into JSON-ready dicts.

    Writes are ``command`` events (range, change address, probe); 2-byte reads are
    ``range`` events (``cm``, ``d`` in metres, ``no_target``). NACKs, other lengths and
    unknown commands are ``rejected`` with a reason; transfers to other addresses are
    summed up in one ``rejected`` line at the end. Never raises for any byte content.
    """
    ranged: dict[int, bool] = {}  # address -> a range command came before this read
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        if kind == "W":
            yield _capture_write(head, addr, data, ranged)
        else:
            yield _capture_read(head, addr, data, ranged)
    yield from walk.summary()


def _capture_write(head: dict[str, Any], addr: int, data: bytes | None,
                   ranged: dict[int, bool]) -> dict[str, Any]:
    if data is None:
        return {**head, "type": "rejected",
                "reason": "write NACKed: no device, or it is still ranging"}
    if not data:
        return {**head, "type": "probe", "reason": "empty write (address probe)"}
    if data == range_command():
        ranged[addr] = True
        return {**head, "type": "command", "cmd": "51", "name": "take range reading"}
    if len(data) == 3 and data[:2] == CHANGE_ADDRESS:
        eight = data[2] & 0xFE
        doc = {**head, "type": "command", "cmd": "aa a5", "name": "change address",
               "new_address_8bit": data[2]}
        if eight in INVALID_ADDRESSES_8BIT:
            return {**doc, "type": "rejected",
                    "reason": f"change to 8-bit address {data[2]} is ignored by the chip"}
        return {**doc, "new_address": f"0x{eight >> 1:02x}"}
    return {**head, "type": "rejected", "bytes": data.hex(" "),
            "reason": "unknown command (the I2CXL takes 51 or aa a5 ADDR)"}


def _capture_read(head: dict[str, Any], addr: int, data: bytes | None,
                  ranged: dict[int, bool]) -> dict[str, Any]:
    if data is None:
        return {**head, "type": "rejected",
                "reason": "read NACKed (still ranging: read ~100 ms after 51, or no device)"}
    if len(data) != 2:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"read of {len(data)} bytes; a range is 2"}
    cm = decode_range(data)
    doc = {**head, "type": "range", "cm": cm, "d": cm / 100, "no_target": is_no_target(cm)}
    if not ranged.get(addr):
        doc["note"] = ("no range command before this read in the capture: the last range, "
                       "or the part info bytes after power-up")
    return doc
