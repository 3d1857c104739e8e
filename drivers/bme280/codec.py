"""Bosch BME280 registers and compensation, with no I/O at all.

The BME280 is a register file: write a register address, then read with
auto-increment; writes are (register, value) pairs. Readings are raw ADC
values (20-bit pressure and temperature, 16-bit humidity) that only mean
something after compensation with the chip's own trimming parameters, read
once from 0x88..0xA1 and 0xE1..0xE7. Compensation here is Bosch's reference
integer code (the datasheet's, also ESPHome's): temperature in 0.01 °C,
pressure in Pa as Q24.8 (64-bit version), humidity in %RH as Q22.10. It
reproduces the reference example exactly (sensor-protocols.md section 4b).

:func:`decode_capture` turns a capture of I2C transfers (``ADDR W|R HEX``
lines) into JSON-ready dicts for ``citynode frames bme280``, using the
calibration read in the capture to compensate the data reads after it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ..i2ccapture import CaptureWalk, Record

ADDRESSES = (0x76, 0x77)  # SDO low / high

# -- registers ------------------------------------------------------------------------
REG_CALIB_TP = 0x88  # 0x88..0xA1: T1..P9 (24 bytes), 0xA0 unused, 0xA1 H1
CALIB_TP_LEN = 26
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CALIB_H = 0xE1  # 0xE1..0xE7: H2..H6
CALIB_H_LEN = 7
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # 0xF7..0xFE: press msb/lsb/xlsb, temp msb/lsb/xlsb, hum msb/lsb
DATA_LEN = 8

RESET_WORD = 0xB6
CHIP_ID = 0x60
CHIP_NAMES = {0x60: "BME280", 0x56: "BMP280 (sample)", 0x57: "BMP280 (sample)",
              0x58: "BMP280", 0x61: "BME680"}

STATUS_MEASURING = 0x08
STATUS_IM_UPDATE = 0x01

MODE_SLEEP = 0b00
MODE_FORCED = 0b01  # 0b10 is forced too
MODE_NORMAL = 0b11
MODE_NAMES = {0: "sleep", 1: "forced", 2: "forced", 3: "normal"}

#: Oversampling register code -> number of samples (0: measurement skipped).
OVERSAMPLING = {0: 0, 1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 6: 16, 7: 16}
#: Standby time in normal mode, config t_sb[7:5] -> seconds.
STANDBY_S = (0.0005, 0.0625, 0.125, 0.25, 0.5, 1.0, 0.010, 0.020)
#: IIR filter coefficient, config filter[4:2] -> coefficient (0 = off).
FILTER = (0, 2, 4, 8, 16, 16, 16, 16)

SKIPPED_PT = 0x80000  # a skipped pressure or temperature measurement reads as this
SKIPPED_H = 0x8000
RESET_DATA = bytes([0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00])  # data after reset

REGISTER_NAMES = {
    REG_CHIP_ID: "chip_id", REG_RESET: "reset", REG_CTRL_HUM: "ctrl_hum",
    REG_STATUS: "status", REG_CTRL_MEAS: "ctrl_meas", REG_CONFIG: "config",
    0xF7: "press_msb", 0xF8: "press_lsb", 0xF9: "press_xlsb", 0xFA: "temp_msb",
    0xFB: "temp_lsb", 0xFC: "temp_xlsb", 0xFD: "hum_msb", 0xFE: "hum_lsb",
}
WRITABLE = (REG_RESET, REG_CTRL_HUM, REG_CTRL_MEAS, REG_CONFIG)


def osrs_code(samples: int) -> int:
    """Oversampling count (0 = skip, 1, 2, 4, 8, 16) -> its 3-bit register code."""
    codes = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
    if samples not in codes:
        raise ValueError(f"oversampling must be one of {sorted(codes)}, not {samples!r}")
    return codes[samples]


def ctrl_meas(osrs_t: int, osrs_p: int, mode: int) -> int:
    """ctrl_meas (0xF4) from oversampling counts and a mode."""
    return osrs_code(osrs_t) << 5 | osrs_code(osrs_p) << 2 | (mode & 0b11)


def ctrl_hum(osrs_h: int) -> int:
    """ctrl_hum (0xF2) from the humidity oversampling count."""
    return osrs_code(osrs_h)


def config(standby_code: int = 0, filter_code: int = 0) -> int:
    """config (0xF5): t_sb[7:5], filter[4:2], spi3w_en = 0."""
    return (standby_code & 7) << 5 | (filter_code & 7) << 2


def measurement_time_s(osrs_t: int, osrs_p: int, osrs_h: int, *, typical: bool = False) -> float:
    """Forced-mode conversion time for oversampling *counts* (datasheet 9.1).

    Maximum: 1.25 + 2.3·T + (2.3·P + 0.575) + (2.3·H + 0.575) ms (9.3 ms for 1x/1x/1x);
    typical: 1 + 2·T + (2·P + 0.5) + (2·H + 0.5) ms. A skipped measurement costs nothing.
    """
    step, extra, base = (2.0, 0.5, 1.0) if typical else (2.3, 0.575, 1.25)
    ms = base + step * osrs_t
    ms += step * osrs_p + extra if osrs_p else 0.0
    ms += step * osrs_h + extra if osrs_h else 0.0
    return ms / 1000.0


# -- calibration --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Calibration:
    """The chip's trimming parameters (dig_T1 ... dig_H6)."""

    T1: int
    T2: int
    T3: int
    P1: int
    P2: int
    P3: int
    P4: int
    P5: int
    P6: int
    P7: int
    P8: int
    P9: int
    H1: int
    H2: int
    H3: int
    H4: int
    H5: int
    H6: int

    @classmethod
    def from_registers(cls, tp: bytes, h: bytes) -> Calibration:
        """Parse 0x88..0xA1 (26 bytes) and 0xE1..0xE7 (7 bytes); ValueError if mis-sized.

        T1 and P1 are unsigned 16-bit, T2..T3 and P2..P9 signed, all little-endian;
        H1 (0xA1) and H3 (0xE3) unsigned bytes, H2 signed 16-bit; H4 and H5 are 12-bit
        values sharing 0xE5 whose MSB byte is sign-extended (as Bosch's code does);
        H6 a signed byte.
        """
        if len(tp) != CALIB_TP_LEN or len(h) != CALIB_H_LEN:
            raise ValueError(f"calibration blocks are {CALIB_TP_LEN} and {CALIB_H_LEN} bytes, "
                             f"got {len(tp)} and {len(h)}")
        t_p = struct.unpack_from("<HhhHhhhhhhhh", tp)
        h1 = tp[25]
        h2 = struct.unpack_from("<h", h)[0]
        h3 = h[2]
        e4, e5, e6 = struct.unpack_from("<bBb", h, 3)
        h4 = (e4 << 4) | (e5 & 0x0F)
        h5 = (e6 << 4) | (e5 >> 4)
        h6 = struct.unpack_from("<b", h, 6)[0]
        return cls(*t_p, h1, h2, h3, h4, h5, h6)

    def to_registers(self) -> tuple[bytes, bytes]:
        """Device side: the two register blocks (0x88.., 0xE1..) holding these values."""
        tp = struct.pack("<HhhHhhhhhhhh", self.T1, self.T2, self.T3, self.P1, self.P2,
                         self.P3, self.P4, self.P5, self.P6, self.P7, self.P8, self.P9)
        tp += bytes([0x00, self.H1 & 0xFF])
        h = struct.pack("<hB", self.H2, self.H3)
        h += bytes([(self.H4 >> 4) & 0xFF, (self.H4 & 0x0F) | ((self.H5 & 0x0F) << 4),
                    (self.H5 >> 4) & 0xFF])
        h += struct.pack("<b", self.H6)
        return tp, h

    def problems(self) -> list[str]:
        """Why these values cannot be a BME280's trimming (empty if plausible)."""
        out = []
        if self.T1 == 0 or self.P1 == 0:
            out.append("dig_T1/dig_P1 is zero (calibration read before the NVM copy ended, "
                       "or not a BME280)")
        if self.T1 == 0xFFFF and self.P1 == 0xFFFF:
            out.append("calibration reads as all 0xFF (nothing drives the bus)")
        return out

    def as_dict(self) -> dict[str, int]:
        return {f"dig_{k}": v for k, v in asdict(self).items()}


#: The reference calibration (sensor-protocols.md 4b: the Bosch BMP280 datasheet worked
#: example's T/P parameters plus a mock's humidity parameters).
REFERENCE_CALIB_TP = bytes.fromhex(
    "706b436718fc7d8e43d6d00b270b8c00f9ff8c3cf8c67017" "00" "4b")
REFERENCE_CALIB_H = bytes.fromhex("6a0100140d001e")
REFERENCE_CALIBRATION = Calibration.from_registers(REFERENCE_CALIB_TP, REFERENCE_CALIB_H)


# -- compensation (Bosch reference integer code) ----------------------------------------------
def _cdiv(a: int, b: int) -> int:
    """C integer division: truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_temperature(adc_t: int, cal: Calibration) -> tuple[int, int]:
    """adc_T -> (temperature in 0.01 °C, t_fine)."""
    var1 = (((adc_t >> 3) - (cal.T1 << 1)) * cal.T2) >> 11
    d = (adc_t >> 4) - cal.T1
    var2 = (((d * d) >> 12) * cal.T3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_pressure(adc_p: int, cal: Calibration, t_fine: int) -> int | None:
    """adc_P -> pressure in Pa as Q24.8 (divide by 256); None where Bosch's code returns 0."""
    v1 = t_fine - 128000
    v2 = v1 * v1 * cal.P6 + ((v1 * cal.P5) << 17) + (cal.P4 << 35)
    v1 = ((v1 * v1 * cal.P3) >> 8) + ((v1 * cal.P2) << 12)
    v1 = (((1 << 47) + v1) * cal.P1) >> 33
    if v1 == 0:
        return None  # avoid division by zero
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - v2) * 3125, v1)
    v1 = (cal.P9 * (p >> 13) * (p >> 13)) >> 25
    v2 = (cal.P8 * p) >> 19
    return ((p + v1 + v2) >> 8) + (cal.P7 << 4)


def compensate_humidity(adc_h: int, cal: Calibration, t_fine: int) -> int:
    """adc_H -> relative humidity in % as Q22.10 (divide by 1024), clamped to 0..100 %."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (cal.H4 << 20) - (cal.H5 * v)) + 16384) >> 15) * (
        ((((((v * cal.H6) >> 10) * (((v * cal.H3) >> 11) + 32768)) >> 10) + 2097152)
         * cal.H2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal.H1) >> 4)
    v = min(max(v, 0), 419430400)
    return v >> 12


@dataclass(frozen=True, slots=True)
class Raw:
    """The ADC values of one burst read of 0xF7..0xFE."""

    adc_p: int
    adc_t: int
    adc_h: int

    @classmethod
    def from_bytes(cls, data: bytes) -> Raw:
        if len(data) != DATA_LEN:
            raise ValueError(f"the data registers are {DATA_LEN} bytes, got {len(data)}")
        return cls((data[0] << 12) | (data[1] << 4) | (data[2] >> 4),
                   (data[3] << 12) | (data[4] << 4) | (data[5] >> 4),
                   (data[6] << 8) | data[7])

    def to_bytes(self) -> bytes:
        """Device side: the 8 data registers holding these ADC values."""
        p, t, h = self.adc_p & 0xFFFFF, self.adc_t & 0xFFFFF, self.adc_h & 0xFFFF
        return bytes([p >> 12, (p >> 4) & 0xFF, (p & 0xF) << 4,
                      t >> 12, (t >> 4) & 0xFF, (t & 0xF) << 4, h >> 8, h & 0xFF])


@dataclass(frozen=True, slots=True)
class Measurement:
    """Compensated values (None where the measurement was skipped) and the exact integers."""

    temp: float | None  # °C
    pressure: float | None  # hPa
    rh: float | None  # %RH
    raw: Raw
    t_fine: int | None
    temp_centi: int | None  # 0.01 °C
    pressure_q24_8: int | None  # Pa * 256
    rh_q22_10: int | None  # %RH * 1024

    @property
    def skipped(self) -> tuple[str, ...]:
        return tuple(q for q in ("temp", "pressure", "rh") if getattr(self, q) is None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "temp": self.temp,
            "pressure": None if self.pressure is None else round(self.pressure, 4),
            "rh": None if self.rh is None else round(self.rh, 3),
            "adc_T": self.raw.adc_t, "adc_P": self.raw.adc_p, "adc_H": self.raw.adc_h,
            "t_fine": self.t_fine, "temp_centi": self.temp_centi,
            "pressure_q24_8": self.pressure_q24_8, "rh_q22_10": self.rh_q22_10,
        }


def compensate(raw: Raw, cal: Calibration) -> Measurement:
    """Compensate one reading. Pressure and humidity need the temperature's t_fine:
    when temperature was skipped, everything is None."""
    if raw.adc_t == SKIPPED_PT:
        return Measurement(None, None, None, raw, None, None, None, None)
    t_centi, t_fine = compensate_temperature(raw.adc_t, cal)
    p = None if raw.adc_p == SKIPPED_PT else compensate_pressure(raw.adc_p, cal, t_fine)
    h = None if raw.adc_h == SKIPPED_H else compensate_humidity(raw.adc_h, cal, t_fine)
    return Measurement(
        t_centi / 100, None if p is None else p / 25600, None if h is None else h / 1024,
        raw, t_fine, t_centi, p, h)


def decode_data(data: bytes, cal: Calibration) -> Measurement:
    """8 data-register bytes -> :class:`Measurement`; ValueError if mis-sized."""
    return compensate(Raw.from_bytes(data), cal)


# -- captures ---------------------------------------------------------------------------------


class _Chip:
    """What the capture has told us about one chip so far."""

    def __init__(self) -> None:
        self.pointer: int | None = None
        self.regs: dict[int, int] = {}  # register -> last byte read
        self.cal: Calibration | None = None
        self.cal_bytes: bytes = b""
        self.ctrl_hum: int | None = None  # last value written to 0xF2
        self.hum_pending = False  # 0xF2 written since the last 0xF4 write
        self.osrs_h_active: int | None = None  # latched at the last 0xF4 write


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Turn captured transfers (``parse_capture`` output) into JSON-ready dicts.

    Register writes become ``write`` events (decoded fields for the control
    registers); reads become ``chip_id``, ``status``, ``calibration``,
    ``measurement`` or ``read`` events. A measurement is compensated with the
    calibration read earlier in the capture; without one, raw ADC values are
    reported and the event says so. NACKs, and reads with no register pointer
    before them, are ``rejected`` with a reason. Never raises for any byte content.
    """
    chips: dict[int, _Chip] = {}
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        chip = chips.setdefault(addr, _Chip())
        if data is None:
            what = "write" if kind == "W" else "read"
            yield {**head, "type": "rejected", "reason": f"{what} NACKed (no device at this "
                   "address, or a bus fault)"}
        else:
            handler = _capture_write if kind == "W" else _capture_read
            for doc in handler(head, chip, data):
                yield {**head, "type": doc.pop("type"), **doc}  # the type first, for reading
    yield from walk.summary()


def _capture_write(head: dict[str, Any], chip: _Chip, data: bytes) -> Iterator[dict[str, Any]]:
    if not data:
        yield {**head, "type": "probe", "reason": "empty write (address probe)"}
        return
    pairs = len(data) // 2
    for k in range(pairs):
        reg, val = data[2 * k], data[2 * k + 1]
        yield _register_write(head, chip, reg, val)
    if len(data) % 2:
        chip.pointer = data[-1]  # a lone register address: where the next read starts


def _register_write(head: dict[str, Any], chip: _Chip, reg: int, val: int) -> dict[str, Any]:
    doc: dict[str, Any] = {**head, "type": "write", "reg": f"{reg:02x}",
                           "name": REGISTER_NAMES.get(reg, "?"), "value": f"{val:02x}"}
    chip.pointer = reg
    if reg not in WRITABLE:
        return {**head, "type": "rejected", "reg": f"{reg:02x}", "value": f"{val:02x}",
                "reason": f"register {reg:02x} is read-only: the chip ignores this write"}
    if reg == REG_RESET:
        if val == RESET_WORD:
            doc["note"] = "soft reset"
            chip.osrs_h_active = chip.ctrl_hum = None
            chip.hum_pending = False
        else:
            doc["note"] = f"ignored: only {RESET_WORD:02x} resets"
    elif reg == REG_CTRL_HUM:
        chip.ctrl_hum = val & 7
        chip.hum_pending = True
        doc["osrs_h"] = OVERSAMPLING[val & 7]
        doc["note"] = "takes effect at the next ctrl_meas (0xF4) write"
    elif reg == REG_CTRL_MEAS:
        doc.update(osrs_t=OVERSAMPLING[val >> 5], osrs_p=OVERSAMPLING[(val >> 2) & 7],
                   mode=MODE_NAMES[val & 3])
        if chip.ctrl_hum is not None:
            chip.osrs_h_active = chip.ctrl_hum
            doc["osrs_h"] = OVERSAMPLING[chip.ctrl_hum]
        chip.hum_pending = False
    elif reg == REG_CONFIG:
        doc.update(standby_s=STANDBY_S[val >> 5], filter=FILTER[(val >> 2) & 7],
                   spi3w_en=bool(val & 1))
    return doc


def _capture_read(head: dict[str, Any], chip: _Chip, data: bytes) -> Iterator[dict[str, Any]]:
    start = chip.pointer
    if start is None:
        yield {**head, "type": "rejected", "bytes": data.hex(" "),
               "reason": "read with no register address written before it in the capture"}
        return
    end = start + len(data)  # one past the last register read
    chip.pointer = min(end, 0xFF)
    for k, b in enumerate(data):
        if start + k <= 0xFF:
            chip.regs[start + k] = b
    base = {**head, "reg": f"{start:02x}", "bytes": data.hex(" ")}

    def covers(lo: int, n: int) -> bool:
        return start <= lo and lo + n <= end

    emitted = False
    if covers(REG_CHIP_ID, 1):
        cid = data[REG_CHIP_ID - start]
        doc = {**base, "type": "chip_id", "chip_id": f"{cid:02x}",
               "chip": CHIP_NAMES.get(cid, "unknown")}
        if cid != CHIP_ID:
            doc["note"] = ("not a BME280: a BMP280 has no humidity sensor" if 0x56 <= cid <= 0x58
                           else "not a BME280")
        emitted = True
        yield doc
    if (start < REG_CALIB_TP + CALIB_TP_LEN and end > REG_CALIB_TP) or (
            start < REG_CALIB_H + CALIB_H_LEN and end > REG_CALIB_H):
        emitted = True
        yield _calibration(base, chip)
    if covers(REG_STATUS, 1):
        st = data[REG_STATUS - start]
        emitted = True
        yield {**base, "type": "status", "status": f"{st:02x}",
               "measuring": bool(st & STATUS_MEASURING), "im_update": bool(st & STATUS_IM_UPDATE)}
    if start < REG_DATA + DATA_LEN and end > REG_DATA:
        emitted = True
        yield _measurement(base, chip, start, end)
    if not emitted:
        names = [REGISTER_NAMES.get(r, f"{r:02x}") for r in range(start, min(end, 0x100))]
        yield {**base, "type": "read", "registers": names}


def _calibration(base: dict[str, Any], chip: _Chip) -> dict[str, Any]:
    tp = [chip.regs.get(r) for r in range(REG_CALIB_TP, REG_CALIB_TP + CALIB_TP_LEN)]
    h = [chip.regs.get(r) for r in range(REG_CALIB_H, REG_CALIB_H + CALIB_H_LEN)]
    # 0xA0 is not a calibration byte: a driver may skip it.
    missing = [REG_CALIB_TP + k for k, v in enumerate(tp) if v is None and k != 24]
    missing += [REG_CALIB_H + k for k, v in enumerate(h) if v is None]
    if missing:
        return {**base, "type": "calibration", "complete": False,
                "missing": [f"{r:02x}" for r in missing]}
    raw_tp = bytes(0 if v is None else v for v in tp)
    raw_h = bytes(v or 0 for v in h)
    chip.cal = Calibration.from_registers(raw_tp, raw_h)
    doc = {**base, "type": "calibration", "complete": True, **chip.cal.as_dict()}
    problems = chip.cal.problems()
    if problems:
        doc["note"] = "; ".join(problems)
    return doc


def _measurement(base: dict[str, Any], chip: _Chip, start: int, end: int) -> dict[str, Any]:
    have = {r: chip.regs[r] for r in range(max(start, REG_DATA), min(end, REG_DATA + DATA_LEN))}
    if len(have) < DATA_LEN:
        # A partial data read: fill what was not read in this transfer as "skipped".
        filler = dict(enumerate(RESET_DATA, REG_DATA))
        filler.update(have)
        data = bytes(filler[r] for r in range(REG_DATA, REG_DATA + DATA_LEN))
    else:
        data = bytes(have[r] for r in range(REG_DATA, REG_DATA + DATA_LEN))
    raw = Raw.from_bytes(data)
    doc: dict[str, Any] = {**base, "type": "measurement"}
    notes = []
    if data == RESET_DATA and len(have) == DATA_LEN:
        notes.append("data registers hold their reset values: no measurement since reset")
    if chip.cal is None:
        doc.update(adc_T=raw.adc_t, adc_P=raw.adc_p, adc_H=raw.adc_h)
        notes.append("no calibration read in this capture (0x88..0xA1, 0xE1..0xE7): raw ADC "
                     "values only")
    else:
        m = compensate(raw, chip.cal)
        doc.update(m.as_dict())
        if m.skipped:
            doc["skipped"] = list(m.skipped)
            if "rh" in m.skipped and "temp" not in m.skipped:
                if chip.hum_pending:
                    notes.append("humidity skipped: ctrl_hum (0xF2) was written after the last "
                                 "ctrl_meas (0xF4) write, and applies only from the next one")
                elif chip.osrs_h_active == 0:
                    notes.append("humidity skipped: ctrl_hum was 0 at the last ctrl_meas write")
    if notes:
        doc["note"] = "; ".join(notes)
    return doc
