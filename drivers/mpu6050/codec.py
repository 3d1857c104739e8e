"""InvenSense MPU-6050 registers, configuration and data scaling, with no I/O.

A register file like the ADXL345's (first byte of a write is the address, reads
auto-increment), with these differences that matter to a driver:

* values are 16-bit two's complement, **big-endian** (ACCEL_XOUT_H first);
* it powers up **asleep** (PWR_MGMT_1 0x6B = 0x40) and reads zeros until woken;
* sample rate = gyroscope output rate / (1 + SMPLRT_DIV), the gyroscope output
  rate being 8 kHz with the DLPF off (CONFIG DLPF_CFG 0 or 7) and 1 kHz otherwise
  (the accelerometer itself outputs at most 1 kHz);
* ACCEL_CONFIG AFS_SEL (bits 4:3): ±2/4/8/16 g at 16384/8192/4096/2048 LSB/g;
* a 1024-byte FIFO, fed at the sample rate with the registers FIFO_EN (0x23)
  selects (ACCEL_FIFO_EN bit 3: 6 bytes, the accelerometer's XOUT_H..ZOUT_L) once
  USER_CTRL (0x6A) FIFO_EN (bit 6) is set; FIFO_COUNTH/L (0x72-0x73) count the
  bytes; reads of FIFO_R_W (0x74) pop them, the address does not advance; when
  full the oldest bytes are overwritten (1024 is not a multiple of 6: the frames
  lose their alignment) and INT_STATUS (0x3A) FIFO_OFLOW_INT (bit 4) is set;
  USER_CTRL FIFO_RESET (bit 2), written while FIFO_EN is 0, empties it.

:func:`decode_capture` turns a capture of transfers into JSON-ready dicts for
``citynode frames mpu6050``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

from ..families.accel import decode_register_capture
from ..i2ccapture import Record

ADDRESSES = (0x68, 0x69)  # AD0 low / high

REG_SMPLRT_DIV = 0x19
REG_CONFIG = 0x1A
REG_GYRO_CONFIG = 0x1B
REG_ACCEL_CONFIG = 0x1C
REG_FIFO_EN = 0x23
REG_INT_PIN_CFG = 0x37
REG_INT_ENABLE = 0x38
REG_INT_STATUS = 0x3A
REG_ACCEL_XOUT_H = 0x3B  # 0x3B..0x40 accel, 0x41..0x42 temp, 0x43..0x48 gyro
DATA_LEN = 6
REG_TEMP_OUT_H = 0x41
REG_GYRO_XOUT_H = 0x43
REG_SIGNAL_PATH_RESET = 0x68
REG_USER_CTRL = 0x6A
REG_PWR_MGMT_1 = 0x6B
REG_PWR_MGMT_2 = 0x6C
REG_FIFO_COUNTH = 0x72
REG_FIFO_COUNTL = 0x73
REG_FIFO_R_W = 0x74
REG_WHO_AM_I = 0x75

WHO_AM_I = 0x68
FIFO_BYTES = 1024

PWR_DEVICE_RESET = 0x80
PWR_SLEEP = 0x40
PWR_CYCLE = 0x20
PWR_CLK_PLL_X = 0x01  # PLL on the X gyro: the recommended clock source
FIFO_EN_TEMP = 0x80
FIFO_EN_XG, FIFO_EN_YG, FIFO_EN_ZG = 0x40, 0x20, 0x10
FIFO_EN_ACCEL = 0x08
USER_FIFO_EN = 0x40
USER_FIFO_RESET = 0x04
INT_FIFO_OFLOW = 0x10
INT_DATA_RDY = 0x01

#: Power-up values (register map rev 4.2, section 3); every other register reads 0x00.
RESET_VALUES = {REG_PWR_MGMT_1: PWR_SLEEP, REG_WHO_AM_I: WHO_AM_I}
RANGES = (2, 4, 8, 16)
#: Accelerometer bandwidth (Hz) per DLPF_CFG 0..6; the gyroscope rate is 8 kHz at 0 and 7.
DLPF_ACCEL_HZ = (260, 184, 94, 44, 21, 10, 5)

REGISTER_NAMES = {
    0x0D: "self_test_x", 0x0E: "self_test_y", 0x0F: "self_test_z", 0x10: "self_test_a",
    REG_SMPLRT_DIV: "smplrt_div", REG_CONFIG: "config", REG_GYRO_CONFIG: "gyro_config",
    REG_ACCEL_CONFIG: "accel_config", REG_FIFO_EN: "fifo_en", REG_INT_PIN_CFG: "int_pin_cfg",
    REG_INT_ENABLE: "int_enable", REG_INT_STATUS: "int_status", 0x3B: "accel_xout_h",
    0x3C: "accel_xout_l", 0x3D: "accel_yout_h", 0x3E: "accel_yout_l", 0x3F: "accel_zout_h",
    0x40: "accel_zout_l", 0x41: "temp_out_h", 0x42: "temp_out_l", 0x43: "gyro_xout_h",
    0x44: "gyro_xout_l", 0x45: "gyro_yout_h", 0x46: "gyro_yout_l", 0x47: "gyro_zout_h",
    0x48: "gyro_zout_l", REG_SIGNAL_PATH_RESET: "signal_path_reset",
    REG_USER_CTRL: "user_ctrl", REG_PWR_MGMT_1: "pwr_mgmt_1", REG_PWR_MGMT_2: "pwr_mgmt_2",
    REG_FIFO_COUNTH: "fifo_counth", REG_FIFO_COUNTL: "fifo_countl", REG_FIFO_R_W: "fifo_r_w",
    REG_WHO_AM_I: "who_am_i",
}
READ_ONLY = frozenset({REG_INT_STATUS, *range(0x3B, 0x61), REG_FIFO_COUNTH, REG_FIFO_COUNTL,
                       REG_WHO_AM_I})
CHIP_NAMES = {0x68: "MPU-6050", 0x70: "an MPU-6500", 0x71: "an MPU-9250",
              0x73: "an MPU-9255", 0x98: "an ICM-20689", 0x19: "an MPU-6886",
              0xE5: "an ADXL345", 0xFF: "nothing (the bus reads 0xFF)"}


# -- configuration ----------------------------------------------------------------------------
def accel_config(range_g: int) -> int:
    """ACCEL_CONFIG (0x1C): AFS_SEL in bits 4:3, no self-test."""
    if range_g not in RANGES:
        raise ValueError(f"MPU-6050 ranges are ±{RANGES} g, not {range_g!r}")
    return RANGES.index(range_g) << 3


def lsb_per_g(accel_cfg: int) -> int:
    """16384 LSB/g at ±2 g, halving per AFS_SEL step."""
    return 16384 >> ((accel_cfg >> 3) & 3)


def range_of(accel_cfg: int) -> int:
    return RANGES[(accel_cfg >> 3) & 3]


def gyro_rate_hz(config: int) -> float:
    """Gyroscope output rate: 8 kHz with the DLPF off (DLPF_CFG 0 or 7), else 1 kHz."""
    return 8000.0 if config & 7 in (0, 7) else 1000.0


def sample_rate_hz(smplrt_div: int, config: int) -> float:
    return gyro_rate_hz(config) / (1 + smplrt_div)


def dlpf_for(rate_hz: float) -> int:
    """The DLPF_CFG (1-6) with the widest accelerometer bandwidth below rate/2 (anti-aliasing);
    never 0, so the gyroscope rate is 1 kHz."""
    for cfg in range(1, 7):
        if DLPF_ACCEL_HZ[cfg] <= rate_hz / 2:
            return cfg
    return 6


def smplrt_div_for(rate_hz: float) -> int:
    """SMPLRT_DIV for ``rate_hz`` at the 1 kHz gyroscope rate (ValueError if not exact)."""
    div = round(1000.0 / rate_hz) - 1
    if not 0 <= div <= 255 or abs(1000.0 / (div + 1) - rate_hz) > 1e-9:
        raise ValueError(f"MPU-6050 rates are 1000/(1 + n) Hz for n = 0..255, not {rate_hz!r}")
    return div


def frame_len(fifo_en: int) -> int:
    """Bytes per FIFO sample for the FIFO_EN bits (slave FIFOs not counted)."""
    return ((6 if fifo_en & FIFO_EN_ACCEL else 0) + (2 if fifo_en & FIFO_EN_TEMP else 0)
            + 2 * sum(1 for b in (FIFO_EN_XG, FIFO_EN_YG, FIFO_EN_ZG) if fifo_en & b))


# -- data -------------------------------------------------------------------------------------
def counts_from(data: bytes) -> tuple[int, int, int]:
    if len(data) != DATA_LEN:
        raise ValueError(f"an accelerometer sample is {DATA_LEN} bytes, got {len(data)}")
    return struct.unpack(">hhh", data)


def decode_xyz(data: bytes, accel_cfg: int) -> tuple[float, float, float]:
    """6 bytes (ACCEL_XOUT_H..ZOUT_L, or one FIFO frame) -> (ax, ay, az) in g."""
    s = lsb_per_g(accel_cfg)
    x, y, z = counts_from(data)
    return x / s, y / s, z / s


def counts_for(g: float, accel_cfg: int) -> int:
    """Device side: the count for ``g``, rounded and saturated at ±32767/-32768."""
    return max(-32768, min(32767, round(g * lsb_per_g(accel_cfg))))


def encode_xyz(counts: tuple[int, int, int]) -> bytes:
    return struct.pack(">hhh", *counts)


def decode_fifo(data: bytes, accel_cfg: int) -> list[tuple[float, float, float]]:
    """Accelerometer-only FIFO bytes (whole 6-byte frames) -> samples in g."""
    if len(data) % DATA_LEN:
        raise ValueError(f"{len(data)} FIFO bytes are not whole {DATA_LEN}-byte frames")
    return [decode_xyz(data[i:i + DATA_LEN], accel_cfg) for i in range(0, len(data), DATA_LEN)]


# -- captures ---------------------------------------------------------------------------------
def describe_write(reg: int, val: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"reg": f"{reg:02x}", "name": REGISTER_NAMES.get(reg, "?"),
                           "value": f"{val:02x}"}
    if reg == REG_PWR_MGMT_1:
        doc.update(device_reset=bool(val & PWR_DEVICE_RESET), sleep=bool(val & PWR_SLEEP),
                   cycle=bool(val & PWR_CYCLE), clksel=val & 7)
    elif reg == REG_CONFIG:
        cfg = val & 7
        doc.update(dlpf_cfg=cfg, gyro_rate_hz=gyro_rate_hz(val),
                   accel_bandwidth_hz=DLPF_ACCEL_HZ[cfg] if cfg < 7 else None)
    elif reg == REG_SMPLRT_DIV:
        doc.update(smplrt_div=val, rate_hz_at_1khz=1000.0 / (1 + val))
    elif reg == REG_ACCEL_CONFIG:
        doc.update(range_g=range_of(val), lsb_per_g=lsb_per_g(val))
    elif reg == REG_FIFO_EN:
        doc.update(accel=bool(val & FIFO_EN_ACCEL), temp=bool(val & FIFO_EN_TEMP),
                   gyro=bool(val & (FIFO_EN_XG | FIFO_EN_YG | FIFO_EN_ZG)),
                   bytes_per_sample=frame_len(val))
    elif reg == REG_USER_CTRL:
        doc.update(fifo_en=bool(val & USER_FIFO_EN), fifo_reset=bool(val & USER_FIFO_RESET))
    elif reg == REG_INT_ENABLE:
        doc.update(fifo_oflow_en=bool(val & INT_FIFO_OFLOW), data_rdy_en=bool(val & 1))
    return doc


class _Chip:
    """What the capture has told us about one MPU-6050 so far."""

    def __init__(self) -> None:
        self.pointer: int | None = None
        self.accel_cfg: int | None = None
        self.fifo_en: int | None = None
        self.rest = b""  # FIFO bytes of a frame split across reads

    def write(self, head: dict[str, Any], reg: int, data: bytes) -> Iterator[dict[str, Any]]:
        for k, val in enumerate(data):
            r = reg if reg == REG_FIFO_R_W else reg + k
            if r in READ_ONLY or r > REG_WHO_AM_I:
                yield {**head, "type": "rejected", "reg": f"{r:02x}", "value": f"{val:02x}",
                       "reason": f"register {r:02x} is read-only or reserved: the chip "
                       "ignores this write"}
                continue
            if r == REG_ACCEL_CONFIG:
                self.accel_cfg = val
            elif r == REG_FIFO_EN:
                self.fifo_en = val
            elif r == REG_USER_CTRL and val & USER_FIFO_RESET:
                self.rest = b""
            yield {**head, "type": "write", **describe_write(r, val)}
        if reg != REG_FIFO_R_W:
            self.pointer = min(reg + len(data), 0xFF)

    def _scale(self, doc: dict[str, Any]) -> int:
        if self.accel_cfg is None:
            doc["note"] = "no ACCEL_CONFIG write in this capture: scaled for ±2 g (power-up)"
            return 0
        return self.accel_cfg

    def read(self, head: dict[str, Any], reg: int, data: bytes) -> Iterator[dict[str, Any]]:
        if reg == REG_FIFO_R_W:
            yield from self._fifo(head, data)
            return
        end = reg + len(data)
        self.pointer = min(end, 0xFF)
        regs = dict(zip(range(reg, end), data, strict=True))
        if REG_WHO_AM_I in regs:
            v = regs[REG_WHO_AM_I]
            doc = {**head, "type": "who_am_i", "who_am_i": f"{v:02x}",
                   "chip": CHIP_NAMES.get(v, "unknown").removeprefix("an ")}
            if v != WHO_AM_I:
                doc["note"] = f"not an MPU-6050 (WHO_AM_I 0x{WHO_AM_I:02x})"
            yield doc
        if REG_PWR_MGMT_1 in regs:
            v = regs[REG_PWR_MGMT_1]
            doc = {**head, "type": "pwr_mgmt_1", "value": f"{v:02x}",
                   "sleep": bool(v & PWR_SLEEP)}
            if v & PWR_SLEEP:
                doc["note"] = "asleep (the power-up state): the data registers read zeros"
            yield doc
        if REG_INT_STATUS in regs:
            v = regs[REG_INT_STATUS]
            doc = {**head, "type": "int_status", "value": f"{v:02x}",
                   "fifo_oflow": bool(v & INT_FIFO_OFLOW), "data_rdy": bool(v & INT_DATA_RDY)}
            if v & INT_FIFO_OFLOW:
                doc["note"] = "FIFO overflowed: its frames are misaligned until a FIFO reset"
            yield doc
        if all(r in regs for r in range(REG_ACCEL_XOUT_H, REG_ACCEL_XOUT_H + DATA_LEN)):
            raw = bytes(regs[r] for r in range(REG_ACCEL_XOUT_H, REG_ACCEL_XOUT_H + DATA_LEN))
            doc = {**head, "type": "sample"}
            ax, ay, az = decode_xyz(raw, self._scale(doc))
            doc.update(ax=ax, ay=ay, az=az, counts=list(counts_from(raw)))
            yield doc
        if REG_FIFO_COUNTH in regs and REG_FIFO_COUNTL in regs:
            n = regs[REG_FIFO_COUNTH] << 8 | regs[REG_FIFO_COUNTL]
            doc = {**head, "type": "fifo_count", "bytes": n}
            if n >= FIFO_BYTES:
                doc["note"] = "FIFO full: it has overflowed or is about to"
            yield doc

    def _fifo(self, head: dict[str, Any], data: bytes) -> Iterator[dict[str, Any]]:
        size = DATA_LEN if self.fifo_en is None else frame_len(self.fifo_en)
        if self.fifo_en is not None and self.fifo_en != FIFO_EN_ACCEL:
            yield {**head, "type": "rejected", "bytes": data.hex(" "),
                   "reason": f"FIFO_EN 0x{self.fifo_en:02x} is not accelerometer-only: "
                   "frames not decoded"}
            return
        doc: dict[str, Any] = {**head, "type": "fifo"}
        cfg = self._scale(doc)
        buf = self.rest + data
        whole = len(buf) - len(buf) % size
        self.rest = buf[whole:]
        samples = decode_fifo(buf[:whole], cfg)
        doc.update(samples=[list(s) for s in samples], bytes=len(data))
        if self.rest:
            doc["partial"] = len(self.rest)
        yield doc


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Captured transfers -> JSON-ready dicts: ``write`` events with decoded fields,
    ``who_am_i``, ``pwr_mgmt_1``, ``int_status``, ``fifo_count``, ``sample`` (data
    registers) and ``fifo`` (the samples of a FIFO_R_W read, in g, scaled with the
    ACCEL_CONFIG written earlier in the capture). Never raises."""
    return decode_register_capture(records, addresses, _Chip)
