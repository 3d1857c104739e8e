"""What ``citynode frames`` and ``citynode decode`` read: FILE, ``-`` (stdin) or ``--hex``.

Captures are streamed: raw bytes in 64 KiB chunks, hex text decoded as it arrives, I2C
captures a line at a time (a line longer than :data:`MAX_LINE` is reported, not held), so
a capture of any size costs the same memory. A payload for ``decode`` is bounded: a file
larger than any payload is refused by its size, before it is read; standard input as soon
as it goes beyond it.

Errors are :class:`agent.core.inputs.InputError`: one line naming the input, and its exit
code (66 cannot be read, 65 not hex text or too large).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from agent.core.inputs import EX_DATAERR, InputError, input_name, open_input
from drivers.i2ccapture import BadLine, Record, parse_line

#: How much of a capture is read at a time.
CHUNK = 64 * 1024
#: The longest I2C capture line read whole (a 1 KiB FIFO read is about 3 KiB of hex).
MAX_LINE = 64 * 1024
#: Hex text is at most this many characters per byte ("0x00, "): bounds a hex payload file.
HEX_CHARS_PER_BYTE = 6

_HEX_TEXT = re.compile(rb"^[0-9a-fA-Fx:,\s]*$")
_PREFIX = re.compile(rb"0x", re.IGNORECASE)
_SEPARATORS = re.compile(rb"[\s:,]")
_NOT_HEX = re.compile(rb"[^0-9a-fA-F]")


def looks_like_hex(data: bytes) -> bool:
    """Hex as installers paste it: digits with spaces, colons, commas, 0x, newlines."""
    return bool(data.strip()) and _HEX_TEXT.match(data) is not None


class HexText:
    """Hex text to bytes, incrementally: ``feed`` any chunking of the text, then ``end``.

    Accepts what installers paste (spaces, colons, commas, ``0x`` prefixes, newlines)
    exactly as a whole-text decode would: a ``0`` at the end of a chunk waits for the next
    one (it may be the start of ``0x``), an odd digit for its partner."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.digits = 0  # hex digits seen
        self.chars = 0  # characters consumed before the held-back ones
        self._zero = b""  # a trailing "0" that may start "0x"
        self._odd = b""  # a digit waiting for its partner

    def feed(self, text: bytes) -> bytes:
        text = self._zero + text
        if text.endswith(b"0"):
            text, self._zero = text[:-1], b"0"
        else:
            self._zero = b""
        digits = _SEPARATORS.sub(b"", _PREFIX.sub(b"", text))
        bad = _NOT_HEX.search(digits)
        if bad is not None:
            at = self.chars + self._position(text, bad.group())
            hint = "" if self.name == "--hex" else " (--format raw reads a binary capture)"
            raise InputError(self.name, f"not hex text: {bad.group().decode('latin-1')!r} at "
                             f"offset {at}{hint}", EX_DATAERR)
        self.chars += len(text)
        return self._pairs(digits)

    def end(self) -> bytes:
        """The input ended: the held-back ``0`` is a digit after all; no digit may be left."""
        zero, self._zero = self._zero, b""
        self.chars += len(zero)
        out = self._pairs(zero)
        if self._odd:
            raise InputError(self.name, f"odd number of hex digits ({self.digits})",
                             EX_DATAERR)
        return out

    def _pairs(self, digits: bytes) -> bytes:
        self.digits += len(digits)
        digits = self._odd + digits
        cut = len(digits) - len(digits) % 2
        self._odd = digits[cut:]
        return bytes.fromhex(digits[:cut].decode("ascii"))

    @staticmethod
    def _position(text: bytes, char: bytes) -> int:
        """Where in ``text`` the offending character is (an ``x`` not after ``0`` too)."""
        for i in range(len(text)):
            if text[i:i + 1] == char and not (char in b"xX" and text[i - 1:i] == b"0"):
                return i
        return 0


def byte_chunks(path: str | None, hex_text: str | None, fmt: str) -> Iterator[bytes]:
    """A capture's bytes, a chunk at a time: ``--hex`` text, or FILE / stdin read as raw
    bytes, as hex text, or (``auto``) as hex text when its first chunk looks like it."""
    if hex_text is not None:
        dec = HexText("--hex")
        yield dec.feed(hex_text.encode("utf-8", "replace")) + dec.end()
        return
    name = path if path is not None else "-"
    with open_input(name) as f:
        first = f.read(CHUNK)
        if not (fmt == "hex" or (fmt == "auto" and looks_like_hex(first))):
            yield first
            while chunk := f.read(CHUNK):
                yield chunk
            return
        dec = HexText(input_name(name))
        held = dec.feed(first)  # one chunk behind, so the end's last digits join it
        while chunk := f.read(CHUNK):
            out, held = held, dec.feed(chunk)
            yield out
        yield held + dec.end()


def read_payload(path: str | None, hex_text: str | None, fmt: str, limit: int) -> bytes:
    """One payload for ``decode``, never more than ``limit`` bytes of it read (hex text:
    never more than ``limit`` decoded bytes, nor :data:`HEX_CHARS_PER_BYTE` times as many
    characters). A file known to be too large is refused by its size, unread."""
    name = path if path is not None else "-"
    shown = "--hex" if hex_text is not None else input_name(name)
    too_large = f"larger than a payload can be ({limit} bytes)"
    text_limit = limit if fmt == "raw" else limit * HEX_CHARS_PER_BYTE
    if hex_text is None and name != "-":
        try:
            st = os.stat(name)
        except OSError:
            st = None  # open_input says why, in its words
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > text_limit:
            raise InputError(shown, f"{st.st_size} bytes: {too_large}", EX_DATAERR)
    out = bytearray()

    def add(data: bytes) -> None:
        out.extend(data)
        if len(out) > limit:
            raise InputError(shown, too_large, EX_DATAERR)

    if hex_text is not None:
        if len(hex_text) > text_limit:
            raise InputError(shown, f"{len(hex_text)} characters: {too_large}", EX_DATAERR)
        for chunk in byte_chunks(None, hex_text, "hex"):
            add(chunk)
        return bytes(out)
    with open_input(name, limit=text_limit) as f:
        first = f.read(CHUNK)
        if not (fmt == "hex" or (fmt == "auto" and looks_like_hex(first))):
            add(first)
            add(f.read(limit + 1 - len(out)))  # one byte more says it is too large
            return bytes(out)
        dec = HexText(shown)
        add(dec.feed(first))
        while chunk := f.read(CHUNK):
            add(dec.feed(chunk))
        add(dec.end())
    return bytes(out)


def capture_lines(path: str | None, hex_text: str | None) -> Iterator[Record | BadLine]:
    """An I2C capture's transfers, a line at a time (``--hex``: ``;`` separates lines).
    A line that is not a transfer is a :class:`BadLine`, so one typo does not hide the
    rest of the capture."""
    if hex_text is not None:
        yield from _parsed(enumerate(hex_text.replace(";", "\n").splitlines(), 1))
        return
    name = path if path is not None else "-"
    with open_input(name) as f:
        yield from _parsed(_lines(f))


def _lines(f: BinaryIO) -> Iterator[tuple[int, str | BadLine]]:
    """Numbered lines of a binary stream, none held longer than :data:`MAX_LINE`."""
    readline = f.readline
    no = 0
    while True:
        raw: bytes = readline(MAX_LINE + 1)
        if not raw:
            return
        no += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of it, a piece at a time
                raw = readline(MAX_LINE)
            yield no, BadLine(no, f"longer than {MAX_LINE} characters: not a transfer")
            continue
        yield no, raw.decode("utf-8", "replace")


def _parsed(lines: Iterable[tuple[int, str | BadLine]]) -> Iterator[Record | BadLine]:
    for no, line in lines:
        if isinstance(line, BadLine):
            yield line
            continue
        try:
            record = parse_line(line)
        except ValueError as exc:
            yield BadLine(no, str(exc))
            continue
        if record is not None:
            yield record
