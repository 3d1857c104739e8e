"""Sensirion's I2C word framing, shared by the SPS30, SHT3x, SGP30... drivers.

Every 16-bit data word on the wire (arguments written to the chip and words read
back) is sent big-endian and followed by a CRC-8 byte: polynomial 0x31
(x^8 + x^5 + x^4 + 1), initial value 0xFF, no reflection, no final XOR.
Command codes themselves carry no CRC. See the protocol reference (sensor-protocols.md,
section 0); ``crc8(b"\\xbe\\xef") == 0x92`` is the datasheet's example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CRCError", "crc8", "pack_words", "read_after_command", "unpack_words"]


class CRCError(ValueError):
    """A word read from a Sensirion chip failed its CRC (or the reply is mis-sized)."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index  # the word index that failed, None for a length error


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = ((c << 1) ^ 0x31) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        out.append(c)
    return tuple(out)


_TABLE = _table()


def crc8(data: bytes) -> int:
    """Sensirion CRC-8 (poly 0x31, init 0xFF) over ``data`` (normally one 2-byte word)."""
    c = 0xFF
    for x in data:
        c = _TABLE[c ^ x]
    return c


def pack_words(words: Iterable[int]) -> bytes:
    """16-bit words -> ``hi lo CRC`` triplets."""
    out = bytearray()
    for w in words:
        if not 0 <= w <= 0xFFFF:
            raise ValueError(f"word out of range: {w!r}")
        pair = w.to_bytes(2, "big")
        out += pair
        out.append(crc8(pair))
    return bytes(out)


def unpack_words(data: bytes) -> list[int]:
    """``hi lo CRC`` triplets -> 16-bit words; :class:`CRCError` on a bad CRC or length."""
    if len(data) % 3:
        raise CRCError(f"reply of {len(data)} bytes is not a whole number of 3-byte words")
    words = []
    for i in range(0, len(data), 3):
        pair = bytes(data[i:i + 2])
        got = data[i + 2]
        want = crc8(pair)
        if got != want:
            raise CRCError(
                f"CRC mismatch in word {i // 3} ({pair.hex()}): got 0x{got:02x}, "
                f"expected 0x{want:02x}", index=i // 3)
        words.append(int.from_bytes(pair, "big"))
    return words


def read_after_command(bus: Any, addr: int, cmd: int, words: int, wait_s: float,
                       sleep: Callable[[float], None]) -> bytes | None:
    """Command, wait, then a separate read (Sensirion chips take no repeated start); None
    when the chip did not answer. For identifying a chip on site (``citynode doctor``)."""
    from smbus2 import i2c_msg

    try:
        bus.i2c_rdwr(i2c_msg.write(addr, cmd.to_bytes(2, "big")))
        sleep(wait_s)
        msg = i2c_msg.read(addr, 3 * words)
        bus.i2c_rdwr(msg)
    except OSError:
        return None
    return bytes(msg)
