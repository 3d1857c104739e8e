"""Lite-On LTR-390UV-01 registers and conversions, with no I/O at all.

The LTR390 is a register file at 0x53 (write a register address, then read with
auto-increment; writes are a register address and its value). It measures either ambient
light (ALS) or UV (UVS), one at a time, chosen in MAIN_CTRL:

======  ==================  =========================================================
0x00    MAIN_CTRL           bit 1 enable, bit 3 UVS mode (0: ALS), bit 4 software reset
0x04    ALS_UVS_MEAS_RATE   bits 6:4 resolution (20/19/18/17/16/13 bit: 400/200/100/50/
                            25/12.5 ms integration), bits 2:0 rate (25 ms ... 2 s)
0x05    ALS_UVS_GAIN        bits 2:0: gain 1, 3, 6, 9, 18
0x06    PART_ID             0xB2: part 0xB, revision 2
0x07    MAIN_STATUS         bit 5 power-on event, bit 4 interrupt, bit 3 new data
0x0D    ALS_DATA            20 bits, little-endian, 0x0D..0x0F
0x10    UVS_DATA            20 bits, little-endian, 0x10..0x12
======  ==================  =========================================================

Datasheet conversions: lux = 0.6 × ALS / (gain × int) × wfac, int = integration time /
100 ms; UV index = UVS / sensitivity × wfac, sensitivity 2300 counts per UVI at gain 18
and 20 bits (400 ms), scaled here by gain / 18 and integration time / 400 ms (the datasheet
gives that one point; the chip's counts are linear in both). wfac corrects for a window
over the sensor (1 without one).

:func:`decode_capture` turns a capture of I2C transfers (``ADDR W|R HEX`` lines) into
JSON-ready dicts for ``citynode frames ltr390``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..i2ccapture import CaptureWalk, Record

ADDRESSES = (0x53,)

# -- registers ------------------------------------------------------------------------
REG_MAIN_CTRL = 0x00
REG_MEAS_RATE = 0x04
REG_GAIN = 0x05
REG_PART_ID = 0x06
REG_MAIN_STATUS = 0x07
REG_ALS_DATA = 0x0D
REG_UVS_DATA = 0x10
REG_INT_CFG = 0x19
REG_INT_PST = 0x1A
REG_THRES_UP = 0x21
REG_THRES_LOW = 0x24

CTRL_ENABLE = 0x02
CTRL_UVS_MODE = 0x08
CTRL_SW_RESET = 0x10

STATUS_POWER_ON = 0x20
STATUS_INTERRUPT = 0x10
STATUS_DATA_READY = 0x08

PART_ID = 0xB2
PART_NUMBER = 0xB  # the high nibble; the low one is the revision

#: Power-on values (datasheet): resolution 18 bit, rate 100 ms, gain 3; thresholds 0xFFFFF/0.
DEFAULTS: dict[int, int] = {
    REG_MAIN_CTRL: 0x00, REG_MEAS_RATE: 0x22, REG_GAIN: 0x01, REG_PART_ID: PART_ID,
    REG_MAIN_STATUS: STATUS_POWER_ON, REG_INT_CFG: 0x10, REG_INT_PST: 0x00,
    REG_THRES_UP: 0xFF, REG_THRES_UP + 1: 0xFF, REG_THRES_UP + 2: 0x0F,
    **{REG_THRES_LOW + k: 0x00 for k in range(3)},
    **{REG_ALS_DATA + k: 0x00 for k in range(6)},
}
#: Writable registers and their meaningful bits (reserved bits read 0).
WRITABLE: dict[int, int] = {
    REG_MAIN_CTRL: 0x1A, REG_MEAS_RATE: 0x77, REG_GAIN: 0x07, REG_INT_CFG: 0x34,
    REG_INT_PST: 0xF0, REG_THRES_UP: 0xFF, REG_THRES_UP + 1: 0xFF, REG_THRES_UP + 2: 0x0F,
    REG_THRES_LOW: 0xFF, REG_THRES_LOW + 1: 0xFF, REG_THRES_LOW + 2: 0x0F,
}
REGISTER_NAMES: dict[int, str] = {
    REG_MAIN_CTRL: "main_ctrl", REG_MEAS_RATE: "meas_rate", REG_GAIN: "gain",
    REG_PART_ID: "part_id", REG_MAIN_STATUS: "main_status",
    REG_ALS_DATA: "als_data_0", REG_ALS_DATA + 1: "als_data_1", REG_ALS_DATA + 2: "als_data_2",
    REG_UVS_DATA: "uvs_data_0", REG_UVS_DATA + 1: "uvs_data_1", REG_UVS_DATA + 2: "uvs_data_2",
    REG_INT_CFG: "int_cfg", REG_INT_PST: "int_pst",
    **{REG_THRES_UP + k: f"thres_up_{k}" for k in range(3)},
    **{REG_THRES_LOW + k: f"thres_low_{k}" for k in range(3)},
}

#: Resolution in bits -> (register code, integration time in seconds).
RESOLUTIONS: dict[int, tuple[int, float]] = {
    20: (0, 0.400), 19: (1, 0.200), 18: (2, 0.100), 17: (3, 0.050), 16: (4, 0.025),
    13: (5, 0.0125),
}
#: Measurement rate by register code (6 and 7 are 2 s too).
RATES_S = (0.025, 0.050, 0.100, 0.200, 0.500, 1.0, 2.0, 2.0)
#: Gain -> register code.
GAINS: dict[int, int] = {1: 0, 3: 1, 6: 2, 9: 3, 18: 4}
#: UV sensitivity, counts per UV index, at gain 18 and 20 bits (400 ms).
UV_SENSITIVITY = 2300.0


# -- register values ----------------------------------------------------------------------
def main_ctrl(enable: bool, uvs: bool) -> int:
    """MAIN_CTRL for a mode: enable bit 1, UVS mode bit 3."""
    return (CTRL_ENABLE if enable else 0) | (CTRL_UVS_MODE if uvs else 0)


def integration_s(bits: int) -> float:
    """The integration time of a resolution (400 ms at 20 bits ... 12.5 ms at 13)."""
    try:
        return RESOLUTIONS[bits][1]
    except KeyError:
        raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)} bits, "
                         f"not {bits!r}") from None


def meas_rate(bits: int) -> int:
    """ALS_UVS_MEAS_RATE for a resolution, with the shortest rate not below its
    integration time (a faster rate would be stretched to it anyway)."""
    t = integration_s(bits)
    rate = next(i for i, r in enumerate(RATES_S) if r >= t)
    return RESOLUTIONS[bits][0] << 4 | rate


def gain_code(gain: int) -> int:
    try:
        return GAINS[gain]
    except KeyError:
        raise ValueError(f"gain must be one of {sorted(GAINS)}, not {gain!r}") from None


def decode_meas_rate(value: int) -> tuple[int | None, float]:
    """(resolution in bits, None if reserved; rate in s) from ALS_UVS_MEAS_RATE."""
    code = value >> 4 & 0x07
    bits = next((b for b, (c, _) in RESOLUTIONS.items() if c == code), None)
    return bits, RATES_S[value & 0x07]


def decode_gain(value: int) -> int | None:
    """The gain from ALS_UVS_GAIN, None if reserved."""
    return next((g for g, c in GAINS.items() if c == value & 0x07), None)


def full_scale(bits: int) -> int:
    """The largest count at a resolution (saturation)."""
    integration_s(bits)
    return (1 << bits) - 1


# -- conversions --------------------------------------------------------------------------
def als_to_lux(als: int, gain: int, bits: int, wfac: float = 1.0) -> float:
    """Datasheet: 0.6 × ALS / (gain × int) × wfac, int = integration time / 100 ms."""
    return 0.6 * als / (gain * integration_s(bits) / 0.1) * wfac


def lux_to_als(lux: float, gain: int, bits: int) -> int:
    """Device side: the ALS count for this light, clamped to the resolution's full scale."""
    count = round(lux * gain * integration_s(bits) / 0.1 / 0.6)
    return max(0, min(full_scale(bits), count))


def uv_sensitivity(gain: int, bits: int) -> float:
    """Counts per UV index: 2300 at gain 18 and 20 bits, proportional to gain and time."""
    return UV_SENSITIVITY * gain / 18 * integration_s(bits) / 0.4


def uvs_to_uvi(uvs: int, gain: int, bits: int, wfac: float = 1.0) -> float:
    """Datasheet: UVS / sensitivity × wfac."""
    return uvs / uv_sensitivity(gain, bits) * wfac


def uvi_to_uvs(uvi: float, gain: int, bits: int) -> int:
    """Device side: the UVS count for this UV index, clamped to full scale."""
    return max(0, min(full_scale(bits), round(uvi * uv_sensitivity(gain, bits))))


def decode_count(data: bytes) -> int:
    """3 data bytes (little-endian) -> the count; ValueError if mis-sized or if the four
    bits above the 20 are set (they read 0 on a healthy chip)."""
    if len(data) != 3:
        raise ValueError(f"a count is 3 bytes, got {len(data)}")
    if data[2] & 0xF0:
        raise ValueError(f"data {data.hex(' ')}: bits above the 20th are set")
    return int.from_bytes(data, "little")


def encode_count(count: int) -> bytes:
    """Device side: the 3 data registers holding a 20-bit count."""
    return (count & 0xFFFFF).to_bytes(3, "little")


@dataclass(frozen=True, slots=True)
class Status:
    """MAIN_STATUS, bit by bit."""

    value: int

    @property
    def power_on(self) -> bool:
        """The chip went through a power-up (or reset) since this register was last read."""
        return bool(self.value & STATUS_POWER_ON)

    @property
    def interrupt(self) -> bool:
        return bool(self.value & STATUS_INTERRUPT)

    @property
    def data_ready(self) -> bool:
        """A measurement ended since this register was last read."""
        return bool(self.value & STATUS_DATA_READY)

    def as_dict(self) -> dict[str, Any]:
        return {"status": f"{self.value:02x}", "power_on": self.power_on,
                "interrupt": self.interrupt, "data_ready": self.data_ready}


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading: lux and UV index (None where not measured) and the raw counts."""

    lux: float | None
    uvi: float | None
    als: int | None = None
    uvs: int | None = None
    saturated: tuple[str, ...] = ()  # "als", "uvs": counts at full scale

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.lux is not None:
            out.update(lux=round(self.lux, 2), als=self.als)
        if self.uvi is not None:
            out.update(uvi=round(self.uvi, 3), uvs=self.uvs)
        return {**out, "saturated": list(self.saturated)}


# -- captures ---------------------------------------------------------------------------------


@dataclass
class _Chip:
    """What the capture has told us about one chip so far."""

    pointer: int | None = None
    meas_rate: int | None = None  # the last values written
    gain: int | None = None


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Turn captured transfers (``parse_capture`` output) into JSON-ready dicts.

    Register writes become ``write`` events (with MAIN_CTRL, ALS_UVS_MEAS_RATE and
    ALS_UVS_GAIN decoded); a lone register address only moves the pointer. Reads become
    ``part_id``, ``status``, ``measurement`` (the 3 data bytes of ALS_DATA or UVS_DATA,
    converted with the gain and resolution written before them, or the power-on ones,
    which the event then notes) or ``read`` events. NACKs, writes to read-only or unknown
    registers, and reads with no register address before them are ``rejected`` with a
    reason. Never raises for any byte content.
    """
    chips: dict[int, _Chip] = {}
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        handler = _capture_write if kind == "W" else _capture_read
        yield from handler(head, chips.setdefault(addr, _Chip()), data)
    yield from walk.summary()


def _capture_write(head: dict[str, Any], chip: _Chip,
                   data: bytes | None) -> Iterator[dict[str, Any]]:
    if data is None:
        yield {**head, "type": "rejected", "reason": "write NACKed (no device at this "
               "address, or a bus fault)"}
        return
    if not data:
        yield {**head, "type": "probe", "reason": "empty write (address probe)"}
        return
    chip.pointer = data[0]
    for k, val in enumerate(data[1:]):
        reg = data[0] + k
        name = REGISTER_NAMES.get(reg)
        if reg not in WRITABLE:
            why = "read-only" if name else "not a register of the LTR390"
            yield {**head, "type": "rejected", "bytes": data.hex(" "),
                   "reason": f"write to 0x{reg:02x} ({name or '?'}): {why}"}
            continue
        doc = {**head, "type": "write", "reg": f"{reg:02x}", "name": name,
               "value": f"{val:02x}", **_fields(reg, val)}
        if reg == REG_MEAS_RATE:
            chip.meas_rate = val
        elif reg == REG_GAIN:
            chip.gain = val
        yield doc


def _fields(reg: int, val: int) -> dict[str, Any]:
    """The decoded fields of a control register's value."""
    if reg == REG_MAIN_CTRL:
        return {"enable": bool(val & CTRL_ENABLE), "mode": "uvs" if val & CTRL_UVS_MODE
                else "als", "reset": bool(val & CTRL_SW_RESET)}
    if reg == REG_MEAS_RATE:
        bits, rate = decode_meas_rate(val)
        return {"resolution_bits": bits, "rate_ms": rate * 1000,
                "integration_ms": None if bits is None else integration_s(bits) * 1000}
    if reg == REG_GAIN:
        return {"gain": decode_gain(val)}
    return {}


def _capture_read(head: dict[str, Any], chip: _Chip,
                  data: bytes | None) -> Iterator[dict[str, Any]]:
    start = chip.pointer
    if data is None:
        yield {**head, "type": "rejected", "reason": "read NACKed (no device at this "
               "address, or a bus fault)"}
        return
    if not data:
        yield {**head, "type": "rejected", "reason": "read of 0 bytes"}
        return
    if start is None:
        yield {**head, "type": "rejected", "bytes": data.hex(" "),
               "reason": f"read of {len(data)} bytes with no register address before it "
                         "(an address probe, or a cut capture)"}
        return
    chip.pointer = start + len(data)
    if (start, len(data)) in ((REG_ALS_DATA, 3), (REG_ALS_DATA, 6), (REG_UVS_DATA, 3)):
        yield _measurement(head, chip, start, data)
    elif start == REG_PART_ID:
        pid = data[0]
        yield {**head, "type": "part_id", "part_id": f"{pid:02x}", "part": f"{pid >> 4:x}",
               "revision": pid & 0x0F, "ltr390": pid >> 4 == PART_NUMBER}
    elif start == REG_MAIN_STATUS and len(data) == 1:
        yield {**head, "type": "status", **Status(data[0]).as_dict()}
    else:
        doc = {**head, "type": "read", "reg": f"{start:02x}",
               "name": REGISTER_NAMES.get(start, "?"), "bytes": data.hex(" ")}
        if len(data) == 1:
            doc.update(_fields(start, data[0]))
        yield doc


def _measurement(head: dict[str, Any], chip: _Chip, start: int,
                 data: bytes) -> dict[str, Any]:
    notes = []
    bits, _ = decode_meas_rate(DEFAULTS[REG_MEAS_RATE] if chip.meas_rate is None
                               else chip.meas_rate)
    gain = decode_gain(DEFAULTS[REG_GAIN] if chip.gain is None else chip.gain)
    if chip.meas_rate is None or chip.gain is None:
        notes.append("no gain or resolution written in the capture: assumed the power-on "
                     "values (gain 3, 18 bits)")
    doc: dict[str, Any] = {**head, "type": "measurement", "gain": gain, "resolution_bits": bits}
    blocks = [(start + 3 * k, data[3 * k:3 * k + 3]) for k in range(len(data) // 3)]
    for reg, block in blocks:
        what = "als" if reg == REG_ALS_DATA else "uvs"
        try:
            count = decode_count(block)
        except ValueError as exc:
            return {**head, "type": "rejected", "bytes": data.hex(" "), "reason": str(exc)}
        doc[what] = count
        if gain is None or bits is None:
            notes.append("reserved gain or resolution code: counts only")
        elif what == "als":
            doc["lux"] = round(als_to_lux(count, gain, bits), 3)
        else:
            doc["uvi"] = round(uvs_to_uvi(count, gain, bits), 4)
        if bits is not None and count >= full_scale(bits):
            notes.append(f"{what} saturated")
    if notes:
        doc["note"] = "; ".join(dict.fromkeys(notes))
    return doc
