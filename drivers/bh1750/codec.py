"""ROHM BH1750FVI ambient light sensor wire format, with no I/O at all.

The chip has no registers. The host writes one-byte opcodes - power down ``00``, power on
``01``, reset ``07`` (clears the result; refused while powered down), a measurement mode
(continuous ``10``/``11``/``13``, one-time ``20``/``21``/``23`` for H-resolution,
H-resolution mode 2 and L-resolution), and the measurement time register MTreg (31..254,
69 at power-up) in two halves, ``01000_MT[7:5]`` then ``011_MT[4:0]`` - and reads the
result as two bytes, big-endian:

    lux = raw / 1.2 × 69 / MTreg       (H-resolution mode 2: half of that)

A larger MTreg integrates longer: more counts per lux for dim light (0.11 lx steps at 254
in mode 2), less range (full scale 7417 lx there, 121557 lx at 31 in H-resolution). The
measurement time scales with it: 120 ms typical, 180 ms maximum at 69 in H-resolution
(16/24 ms in L-resolution). The chip never NACKs a read while it measures: it returns the
previous result, so a host must wait the maximum time.

Besides the host side this module has the device side the emulator uses
(:func:`lux_to_raw`) and :func:`decode_capture`, which turns a capture of I2C transfers
(``ADDR W|R HEX`` lines) into JSON-ready dicts for ``citynode frames bh1750``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..i2ccapture import CaptureWalk, Record

ADDRESSES = (0x23, 0x5C)  # ADDR low / high

# -- opcodes --------------------------------------------------------------------------
POWER_DOWN = 0x00
POWER_ON = 0x01
RESET = 0x07
CONT_H = 0x10
CONT_H2 = 0x11
CONT_L = 0x13
ONE_H = 0x20
ONE_H2 = 0x21
ONE_L = 0x23
MTREG_HIGH = 0x40  # 0b01000_xxx: MT[7:5]
MTREG_LOW = 0x60  # 0b011_xxxxx: MT[4:0]

MTREG_DEFAULT = 69
MTREG_MIN = 31
MTREG_MAX = 254
SATURATED = 0xFFFF

Resolution = Literal["high", "high2", "low"]


@dataclass(frozen=True, slots=True)
class Mode:
    """What a measurement opcode asks for."""

    resolution: Resolution
    continuous: bool

    @property
    def name(self) -> str:
        what = {"high": "H-resolution", "high2": "H-resolution mode 2",
                "low": "L-resolution"}[self.resolution]
        return f"{'continuous' if self.continuous else 'one-time'} {what}"


MODES: dict[int, Mode] = {
    CONT_H: Mode("high", True), CONT_H2: Mode("high2", True), CONT_L: Mode("low", True),
    ONE_H: Mode("high", False), ONE_H2: Mode("high2", False), ONE_L: Mode("low", False),
}
OPCODE_NAMES: dict[int, str] = {
    POWER_DOWN: "power down", POWER_ON: "power on", RESET: "reset (clears the result)",
    **{op: m.name for op, m in MODES.items()},
}

#: Measurement time at MTreg 69 (datasheet: typical, maximum); it scales with MTreg.
TYPICAL_S: dict[str, float] = {"high": 0.120, "high2": 0.120, "low": 0.016}
MAX_S: dict[str, float] = {"high": 0.180, "high2": 0.180, "low": 0.024}


def mode_opcode(resolution: Resolution, continuous: bool) -> int:
    """The measurement opcode for a resolution and continuous/one-time."""
    for op, m in MODES.items():
        if m == Mode(resolution, continuous):
            return op
    raise ValueError(f"resolution must be 'high', 'high2' or 'low', not {resolution!r}")


def is_mtreg_opcode(op: int) -> bool:
    return op & 0xF8 == MTREG_HIGH or op & 0xE0 == MTREG_LOW


def check_mtreg(mtreg: int) -> int:
    if not MTREG_MIN <= mtreg <= MTREG_MAX:
        raise ValueError(f"MTreg must be {MTREG_MIN}..{MTREG_MAX}, not {mtreg!r}")
    return mtreg


def mtreg_opcodes(mtreg: int) -> tuple[int, int]:
    """The two opcodes that set MTreg: high bits, then low bits."""
    check_mtreg(mtreg)
    return MTREG_HIGH | mtreg >> 5, MTREG_LOW | mtreg & 0x1F


def apply_mtreg_opcode(mtreg: int, op: int) -> int:
    """MTreg after one of its half-writes (the other half is kept)."""
    if op & 0xF8 == MTREG_HIGH:
        return (op & 0x07) << 5 | mtreg & 0x1F
    if op & 0xE0 == MTREG_LOW:
        return mtreg & 0xE0 | op & 0x1F
    raise ValueError(f"0x{op:02x} is not an MTreg opcode")


def measurement_time_s(resolution: str, mtreg: int = MTREG_DEFAULT, *,
                       typical: bool = False) -> float:
    """How long one measurement takes at this MTreg (the maximum unless ``typical``)."""
    return (TYPICAL_S if typical else MAX_S)[resolution] * mtreg / MTREG_DEFAULT


# -- conversions --------------------------------------------------------------------------
def counts_per_lux(mtreg: int = MTREG_DEFAULT, resolution: str = "high") -> float:
    """Counts one lux gives: 1.2 at MTreg 69, proportional to MTreg, doubled in mode 2."""
    return 1.2 * mtreg / MTREG_DEFAULT * (2 if resolution == "high2" else 1)


def raw_to_lux(raw: int, mtreg: int = MTREG_DEFAULT, resolution: str = "high") -> float:
    """The datasheet's conversion: raw / 1.2 × 69 / MTreg (mode 2: / 2)."""
    return raw / counts_per_lux(mtreg, resolution)


def lux_to_raw(lux: float, mtreg: int = MTREG_DEFAULT, resolution: str = "high") -> int:
    """Device side: the count for this light, clamped to 0..65535 (saturation)."""
    return max(0, min(SATURATED, round(lux * counts_per_lux(mtreg, resolution))))


def full_scale_lux(mtreg: int = MTREG_DEFAULT, resolution: str = "high") -> float:
    """The most a measurement can report before it saturates."""
    return raw_to_lux(SATURATED, mtreg, resolution)


#: Automatic MTreg: keep the count between these, and when it leaves them aim at the
#: middle on a log scale (eight times below saturation).
AUTO_LOW = 2048
AUTO_HIGH = 32768
AUTO_TARGET = 8192


def auto_mtreg(raw: int, mtreg: int) -> int:
    """MTreg for the next measurement, from the last count at ``mtreg`` (counts are
    proportional to MTreg): unchanged while the count stays within AUTO_LOW..AUTO_HIGH,
    else the MTreg that brings it to AUTO_TARGET, within 31..254; 31 after a saturation."""
    if raw >= SATURATED:
        return MTREG_MIN
    if AUTO_LOW <= raw <= AUTO_HIGH:
        return mtreg
    want = MTREG_MAX if raw == 0 else int(AUTO_TARGET * mtreg / raw)
    return max(MTREG_MIN, min(MTREG_MAX, want))


@dataclass(frozen=True, slots=True)
class Measurement:
    """One result: lux, the raw count, and the settings it was measured with."""

    lux: float
    raw: int
    mtreg: int
    resolution: str

    @property
    def saturated(self) -> bool:
        """The count hit full scale: the light was at least :attr:`lux`."""
        return self.raw >= SATURATED

    def as_dict(self) -> dict[str, Any]:
        return {"lux": round(self.lux, 2), "raw": self.raw, "mtreg": self.mtreg,
                "resolution": self.resolution, "saturated": self.saturated}


def decode_measurement(data: bytes, mtreg: int = MTREG_DEFAULT,
                       resolution: str = "high") -> Measurement:
    """2 bytes (big-endian) -> :class:`Measurement`; ValueError if mis-sized."""
    if len(data) != 2:
        raise ValueError(f"a result is 2 bytes, got {len(data)}")
    raw = int.from_bytes(data, "big")
    return Measurement(raw_to_lux(raw, mtreg, resolution), raw, mtreg, resolution)


def encode_raw(raw: int) -> bytes:
    """Device side: the 2 bytes the chip sends for this count."""
    return max(0, min(SATURATED, raw)).to_bytes(2, "big")


# -- captures ---------------------------------------------------------------------------------


@dataclass
class _Chip:
    """What the capture has told us about one chip so far."""

    mtreg: int = MTREG_DEFAULT
    mtreg_seen: bool = False
    mode: Mode | None = None
    mode_mtreg: int = MTREG_DEFAULT  # MTreg when the last measurement opcode was written


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Turn captured transfers (``parse_capture`` output) into JSON-ready dicts.

    Writes become ``command`` events (with the MTreg after an MTreg half); 2-byte reads
    become ``measurement`` events, converted with the mode and MTreg written before them
    (or, when the capture holds none, the power-up MTreg and H-resolution, which the event
    then notes). NACKs, writes that are not one known opcode and reads that are not 2
    bytes are ``rejected`` with a reason. Never raises for any byte content.
    """
    chips: dict[int, _Chip] = {}
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        handler = _capture_write if kind == "W" else _capture_read
        yield handler(head, chips.setdefault(addr, _Chip()), data)
    yield from walk.summary()


def _capture_write(head: dict[str, Any], chip: _Chip, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {**head, "type": "rejected", "reason": "write NACKed (no device at this "
                "address, or a bus fault)"}
    if not data:
        return {**head, "type": "probe", "reason": "empty write (address probe)"}
    if len(data) != 1:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"write of {len(data)} bytes: the BH1750 takes one-byte opcodes"}
    op = data[0]
    doc: dict[str, Any] = {**head, "type": "command", "cmd": f"{op:02x}"}
    if is_mtreg_opcode(op):
        chip.mtreg = apply_mtreg_opcode(chip.mtreg, op)
        chip.mtreg_seen = True
        half = "high bits MT[7:5]" if op & 0xF8 == MTREG_HIGH else "low bits MT[4:0]"
        doc.update(name=f"measurement time (MTreg) {half}", mtreg=chip.mtreg)
        if not MTREG_MIN <= chip.mtreg <= MTREG_MAX:
            doc["note"] = f"MTreg {chip.mtreg} is outside {MTREG_MIN}..{MTREG_MAX} (so far)"
        return doc
    if op not in OPCODE_NAMES:
        return {**head, "type": "rejected", "bytes": data.hex(),
                "reason": f"unknown opcode 0x{op:02x}"}
    doc["name"] = OPCODE_NAMES[op]
    if op in MODES:
        chip.mode = MODES[op]
        chip.mode_mtreg = chip.mtreg
        doc["mtreg"] = chip.mtreg
    return doc


def _capture_read(head: dict[str, Any], chip: _Chip, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {**head, "type": "rejected", "reason": "read NACKed (the chip never NACKs "
                "for being busy: no device at this address, or a bus fault)"}
    if len(data) != 2:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": f"read of {len(data)} bytes: a result is 2 bytes (a 1-byte read "
                          "is an address probe)"}
    resolution = chip.mode.resolution if chip.mode else "high"
    m = decode_measurement(data, chip.mode_mtreg, resolution)
    doc = {**head, "type": "measurement", **m.as_dict()}
    notes = []
    if chip.mode is None:
        notes.append("no mode opcode in the capture: assumed H-resolution")
    if not chip.mtreg_seen:
        notes.append(f"no MTreg write in the capture: assumed {MTREG_DEFAULT} (power-up)")
    if notes:
        doc["note"] = "; ".join(notes)
    return doc
