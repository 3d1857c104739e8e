"""Analog Devices ADXL345 registers, configuration and data scaling, with no I/O.

The ADXL345 is a register file: a write's first byte is the register address,
further bytes are written to consecutive registers; a read starts at the last
address written and auto-increments. Acceleration is in DATAX0..DATAZ1
(0x32-0x37), three 16-bit two's-complement values, **little-endian**. Their
scale depends on DATA_FORMAT (0x31):

* FULL_RES (bit 3) set: 3.9 mg/LSB (1/256 g) at every range, 10 bits at ±2 g up
  to 13 bits at ±16 g;
* FULL_RES clear: 10 bits over the range, so 3.9, 7.8, 15.6, 31.2 mg/LSB at ±2,
  ±4, ±8, ±16 g (256, 128, 64, 32 LSB/g);
* justify (bit 2) set: the value is MSB-aligned in the 16 bits instead of
  right-justified and sign-extended.

The nominal 3.9 mg/LSB is exactly 1/256 g here (the SisFall data set's
``count * 32 / 8192``); the datasheet's typical values are 256 LSB/g (230-282
over parts and temperature).

The FIFO (FIFO_CTL 0x38) holds 32 samples: bypass, FIFO (stop when full),
stream (keep the newest 32) or trigger mode. FIFO_STATUS (0x39) bits 5:0 count
the entries; each read of the data registers pops one, so a sample is one
6-byte burst from 0x32. INT_SOURCE (0x30) bit 0 (overrun) is set, whatever
INT_ENABLE says, when a sample was lost because the FIFO was full.

:func:`decode_capture` turns a capture of transfers into JSON-ready dicts for
``citynode frames adxl345``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

from ..families.accel import decode_register_capture
from ..i2ccapture import Record

ADDRESSES = (0x53, 0x1D)  # ALT ADDRESS low / high

# -- registers ------------------------------------------------------------------------
REG_DEVID = 0x00
REG_BW_RATE = 0x2C
REG_POWER_CTL = 0x2D
REG_INT_ENABLE = 0x2E
REG_INT_MAP = 0x2F
REG_INT_SOURCE = 0x30
REG_DATA_FORMAT = 0x31
REG_DATA = 0x32  # DATAX0, DATAX1, DATAY0, DATAY1, DATAZ0, DATAZ1
DATA_LEN = 6
REG_FIFO_CTL = 0x38
REG_FIFO_STATUS = 0x39

DEVID = 0xE5
FIFO_DEPTH = 32

POWER_MEASURE = 0x08
POWER_SLEEP = 0x04
FORMAT_FULL_RES = 0x08
FORMAT_JUSTIFY = 0x04
RATE_LOW_POWER = 0x10
INT_DATA_READY = 0x80
INT_WATERMARK = 0x02
INT_OVERRUN = 0x01
FIFO_TRIG = 0x80
ENTRIES_MASK = 0x3F

FIFO_BYPASS, FIFO_FIFO, FIFO_STREAM, FIFO_TRIGGER = 0, 1, 2, 3
FIFO_MODES = ("bypass", "fifo", "stream", "trigger")

#: Power-up values (datasheet table 19); every other register reads 0x00.
RESET_VALUES = {REG_DEVID: DEVID, REG_BW_RATE: 0x0A, REG_INT_SOURCE: 0x02}

#: Output data rate code (BW_RATE bits 3:0) -> Hz: 3200 Hz at 0b1111, halving per step.
RATES = {code: 3200.0 / 2 ** (15 - code) for code in range(16)}
RANGES = (2, 4, 8, 16)

REGISTER_NAMES = {
    0x00: "devid", 0x1D: "thresh_tap", 0x1E: "ofsx", 0x1F: "ofsy", 0x20: "ofsz",
    0x21: "dur", 0x22: "latent", 0x23: "window", 0x24: "thresh_act", 0x25: "thresh_inact",
    0x26: "time_inact", 0x27: "act_inact_ctl", 0x28: "thresh_ff", 0x29: "time_ff",
    0x2A: "tap_axes", 0x2B: "act_tap_status", REG_BW_RATE: "bw_rate",
    REG_POWER_CTL: "power_ctl", REG_INT_ENABLE: "int_enable", REG_INT_MAP: "int_map",
    REG_INT_SOURCE: "int_source", REG_DATA_FORMAT: "data_format", 0x32: "datax0",
    0x33: "datax1", 0x34: "datay0", 0x35: "datay1", 0x36: "dataz0", 0x37: "dataz1",
    REG_FIFO_CTL: "fifo_ctl", REG_FIFO_STATUS: "fifo_status",
}
READ_ONLY = frozenset({REG_DEVID, 0x2B, REG_INT_SOURCE, *range(0x32, 0x38), REG_FIFO_STATUS})


# -- configuration ----------------------------------------------------------------------------
def rate_code(rate_hz: float) -> int:
    """BW_RATE rate code for an output data rate (6.25 ... 3200 Hz, or the slower ones)."""
    for code, hz in RATES.items():
        if abs(hz - rate_hz) < 1e-9:
            return code
    raise ValueError(f"ADXL345 rates are {sorted(RATES.values())} Hz, not {rate_hz!r}")


def bw_rate(rate_hz: float, *, low_power: bool = False) -> int:
    """BW_RATE (0x2C): rate code, LOW_POWER bit 4 (more noise; only 12.5-400 Hz)."""
    return rate_code(rate_hz) | (RATE_LOW_POWER if low_power else 0)


def data_format(range_g: int, *, full_res: bool = True, justify: bool = False) -> int:
    """DATA_FORMAT (0x31): range bits 1:0, justify bit 2, FULL_RES bit 3; INT active high."""
    if range_g not in RANGES:
        raise ValueError(f"ADXL345 ranges are ±{RANGES} g, not {range_g!r}")
    return (RANGES.index(range_g) | (FORMAT_JUSTIFY if justify else 0)
            | (FORMAT_FULL_RES if full_res else 0))


def fifo_ctl(mode: int = FIFO_STREAM, samples: int = 16) -> int:
    """FIFO_CTL (0x38): mode bits 7:6, trigger on INT1, watermark ``samples`` bits 4:0."""
    if mode not in range(4) or not 0 <= samples <= 31:
        raise ValueError("FIFO mode is 0-3 and samples 0-31")
    return mode << 6 | samples


def range_of(fmt: int) -> int:
    return RANGES[fmt & 0x03]


def bits_of(fmt: int) -> int:
    """Significant bits of each axis: 10, or 10-13 with FULL_RES at ±2 ... ±16 g."""
    return 10 + (fmt & 0x03) if fmt & FORMAT_FULL_RES else 10


def g_per_lsb(fmt: int) -> float:
    """Scale of a right-justified count: 1/256 g with FULL_RES, else range / 512."""
    return 1 / 256 if fmt & FORMAT_FULL_RES else range_of(fmt) / 512


# -- data -------------------------------------------------------------------------------------
def counts_from(data: bytes, fmt: int) -> tuple[int, int, int]:
    """6 data-register bytes -> signed counts per axis (right-justified)."""
    if len(data) != DATA_LEN:
        raise ValueError(f"the data registers are {DATA_LEN} bytes, got {len(data)}")
    x, y, z = struct.unpack("<hhh", data)
    if fmt & FORMAT_JUSTIFY:  # MSB-aligned: shift the sign down with the value
        shift = 16 - bits_of(fmt)
        return x >> shift, y >> shift, z >> shift
    return x, y, z


def decode_xyz(data: bytes, fmt: int) -> tuple[float, float, float]:
    """6 data-register bytes -> (ax, ay, az) in g for this DATA_FORMAT value."""
    s = g_per_lsb(fmt)
    x, y, z = counts_from(data, fmt)
    return x * s, y * s, z * s


def counts_for(g: float, fmt: int) -> int:
    """Device side: the count an axis reads for ``g`` (rounded, saturated at full scale)."""
    top = (1 << (bits_of(fmt) - 1)) - 1
    return max(-top - 1, min(top, round(g / g_per_lsb(fmt))))


def encode_xyz(counts: tuple[int, int, int], fmt: int) -> bytes:
    """Device side: counts -> the 6 data-register bytes, justified as ``fmt`` says."""
    shift = 16 - bits_of(fmt) if fmt & FORMAT_JUSTIFY else 0
    return struct.pack("<hhh", *(c << shift for c in counts))


# -- captures ---------------------------------------------------------------------------------
def describe_write(reg: int, val: int) -> dict[str, Any]:
    """The fields of a register write, for people reading a capture."""
    doc: dict[str, Any] = {"reg": f"{reg:02x}", "name": REGISTER_NAMES.get(reg, "?"),
                           "value": f"{val:02x}"}
    if reg == REG_BW_RATE:
        doc.update(rate_hz=RATES[val & 0x0F], low_power=bool(val & RATE_LOW_POWER))
    elif reg == REG_POWER_CTL:
        doc.update(measure=bool(val & POWER_MEASURE), sleep=bool(val & POWER_SLEEP))
        if not val & POWER_MEASURE:
            doc["note"] = "standby: no measurements (the power-up state)"
    elif reg == REG_DATA_FORMAT:
        doc.update(range_g=range_of(val), full_res=bool(val & FORMAT_FULL_RES),
                   justify="left" if val & FORMAT_JUSTIFY else "right",
                   mg_per_lsb=round(g_per_lsb(val) * 1000, 3))
    elif reg == REG_FIFO_CTL:
        doc.update(fifo_mode=FIFO_MODES[val >> 6], samples=val & 0x1F)
    return doc


class _Chip:
    """What the capture has told us about one ADXL345 so far."""

    def __init__(self) -> None:
        self.pointer: int | None = None
        self.fmt: int | None = None  # last DATA_FORMAT written

    def write(self, head: dict[str, Any], reg: int, data: bytes) -> Iterator[dict[str, Any]]:
        for k, val in enumerate(data):
            r = reg + k
            if r in READ_ONLY or r > REG_FIFO_STATUS:
                yield {**head, "type": "rejected", "reg": f"{r:02x}", "value": f"{val:02x}",
                       "reason": f"register {r:02x} is read-only or reserved: the chip "
                       "ignores this write"}
                continue
            if r == REG_DATA_FORMAT:
                self.fmt = val
            yield {**head, "type": "write", **describe_write(r, val)}
        self.pointer = min(reg + len(data), 0xFF)

    def read(self, head: dict[str, Any], reg: int, data: bytes) -> Iterator[dict[str, Any]]:
        end = reg + len(data)
        self.pointer = min(end, 0xFF)
        regs = dict(zip(range(reg, end), data, strict=True))
        if REG_DEVID in regs:
            v = regs[REG_DEVID]
            doc = {**head, "type": "devid", "devid": f"{v:02x}",
                   "chip": "ADXL345" if v == DEVID else "unknown"}
            if v != DEVID:
                doc["note"] = f"not an ADXL345 (DEVID 0x{DEVID:02x})"
            yield doc
        if REG_INT_SOURCE in regs:
            v = regs[REG_INT_SOURCE]
            yield {**head, "type": "int_source", "value": f"{v:02x}",
                   "data_ready": bool(v & INT_DATA_READY), "watermark": bool(v & INT_WATERMARK),
                   "overrun": bool(v & INT_OVERRUN)}
        if all(r in regs for r in range(REG_DATA, REG_DATA + DATA_LEN)):
            raw = bytes(regs[r] for r in range(REG_DATA, REG_DATA + DATA_LEN))
            yield self._sample(head, raw)
        elif any(r in regs for r in range(REG_DATA, REG_DATA + DATA_LEN)):
            yield {**head, "type": "rejected", "bytes": data.hex(" "),
                   "reason": "partial read of the data registers: each read pops a FIFO entry, "
                   "so a sample must be one 6-byte burst from 0x32"}
        if REG_FIFO_STATUS in regs:
            v = regs[REG_FIFO_STATUS]
            doc = {**head, "type": "fifo_status", "entries": v & ENTRIES_MASK,
                   "fifo_trig": bool(v & FIFO_TRIG)}
            if v & ENTRIES_MASK >= FIFO_DEPTH:
                doc["note"] = "FIFO full: samples are being lost unless it is read faster"
            yield doc

    def _sample(self, head: dict[str, Any], raw: bytes) -> dict[str, Any]:
        fmt = 0x00 if self.fmt is None else self.fmt
        ax, ay, az = decode_xyz(raw, fmt)
        doc = {**head, "type": "sample", "ax": ax, "ay": ay, "az": az,
               "counts": list(counts_from(raw, fmt)), "range_g": range_of(fmt),
               "full_res": bool(fmt & FORMAT_FULL_RES)}
        if self.fmt is None:
            doc["note"] = ("no DATA_FORMAT write in this capture: scaled for the power-up "
                           "format (±2 g, 10 bits)")
        return doc


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Captured transfers (``parse_capture`` output) -> JSON-ready dicts: ``write`` events
    with decoded fields, ``devid``, ``int_source``, ``fifo_status`` and ``sample`` (in g,
    scaled with the DATA_FORMAT written earlier in the capture); NACKs, reads with no
    register address and writes to read-only registers are ``rejected``. Never raises."""
    return decode_register_capture(records, addresses, _Chip)
