"""ST VL53L1X time-of-flight ranger: registers, the ULD's sequences and values, with no I/O.

Sources (values carry over, the code is ours):

* the register map and every sequence and value below are those of ST's VL53L1X ultra lite
  driver (ULD, STSW-IMG009, ``VL53L1X_api.c``/``.h``) and its user manual UM2510 ("A guide
  to using the VL53L1X ultra lite driver");
* the region of interest (ROI) and the SPAD numbering: UM2555 ("VL53L1X ultra lite driver
  multiple zone implementation"), section 2 and its SPAD table;
* the two people-counting zones: UM2600 ("Counting people with the VL53L1X long-distance
  ranging Time-of-Flight sensor") and ST's reference application (STSW-IMG010).

The chip answers at 0x29 (7-bit). Registers have 16-bit addresses, sent big-endian before
the data; reads and writes auto-increment, and multi-byte values are big-endian.

==========  ==========================================  ===================================
0x0001      I2C_SLAVE__DEVICE_ADDRESS                   7-bit address (volatile: 0x29 at
                                                        power-up)
0x0008      VHV_CONFIG__TIMEOUT_MACROP_LOOP_BOUND       0x09 after init ("two bounds VHV")
0x002D-87   the ULD's default configuration block       written once by sensor init
0x0030      GPIO_HV_MUX__CTRL                           bit 4: 0 = interrupt active high
0x0031      GPIO__TIO_HV_STATUS                         bit 0 == polarity: data ready
0x004B      PHASECAL_CONFIG__TIMEOUT_MACROP             0x14 short, 0x0A long mode
0x005E/61   RANGE_CONFIG__TIMEOUT_MACROP_A/B_HI         timing budget (words)
0x006C      SYSTEM__INTERMEASUREMENT_PERIOD             32 bits, oscillator ticks
0x007F      ROI_CONFIG__USER_ROI_CENTRE_SPAD            SPAD number (UM2555 table)
0x0080      ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY    (height-1) << 4 | (width-1)
0x0086      SYSTEM__INTERRUPT_CLEAR                     write 0x01
0x0087      SYSTEM__MODE_START                          0x40 start ranging, 0x00 stop
0x0089      RESULT__RANGE_STATUS                        17-byte result block from here
0x0096      RESULT__FINAL_CROSSTALK_CORRECTED_RANGE     distance in mm
0x00DE      RESULT__OSC_CALIBRATE_VAL                   oscillator calibration (10 bits)
0x00E5      FIRMWARE__SYSTEM_STATUS                     1 once booted
0x010F      IDENTIFICATION__MODEL_ID                    0xEACC (word, with module type)
0x013E      ROI_CONFIG__MODE_ROI_CENTRE_SPAD            the optical centre (199)
==========  ==========================================  ===================================

:func:`decode_capture` turns a capture of I2C transfers (``ADDR W|R HEX`` lines) into
JSON-ready dicts for ``citynode frames vl53l1x``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..i2ccapture import CaptureWalk, Record

ADDRESS = 0x29
ADDRESSES = (ADDRESS,)
MODEL_ID = 0xEACC
#: Model ids of ST's other time-of-flight chips with the same register layout.
OTHER_MODELS = {0xEBAA: "a VL53L4CD"}

# -- registers (ULD VL53L1X_api.h) -------------------------------------------------------
SOFT_RESET = 0x0000
I2C_SLAVE__DEVICE_ADDRESS = 0x0001
VHV_CONFIG__TIMEOUT_MACROP_LOOP_BOUND = 0x0008
VHV_CONFIG__INIT = 0x000B  # the ULD writes 0 here after init: "start VHV from the previous
#                            temperature"
ALGO__PART_TO_PART_RANGE_OFFSET_MM = 0x001E
MM_CONFIG__INNER_OFFSET_MM = 0x0020
MM_CONFIG__OUTER_OFFSET_MM = 0x0022
GPIO_HV_MUX__CTRL = 0x0030
GPIO__TIO_HV_STATUS = 0x0031
SYSTEM__INTERRUPT_CONFIG_GPIO = 0x0046
PHASECAL_CONFIG__TIMEOUT_MACROP = 0x004B
RANGE_CONFIG__TIMEOUT_MACROP_A_HI = 0x005E
RANGE_CONFIG__VCSEL_PERIOD_A = 0x0060
RANGE_CONFIG__TIMEOUT_MACROP_B_HI = 0x0061
RANGE_CONFIG__VCSEL_PERIOD_B = 0x0063
RANGE_CONFIG__SIGMA_THRESH = 0x0064
RANGE_CONFIG__MIN_COUNT_RATE_RTN_LIMIT_MCPS = 0x0066
RANGE_CONFIG__VALID_PHASE_HIGH = 0x0069
SYSTEM__INTERMEASUREMENT_PERIOD = 0x006C
SYSTEM__THRESH_HIGH = 0x0072
SYSTEM__THRESH_LOW = 0x0074
SD_CONFIG__WOI_SD0 = 0x0078
SD_CONFIG__INITIAL_PHASE_SD0 = 0x007A
ROI_CONFIG__USER_ROI_CENTRE_SPAD = 0x007F
ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY_SIZE = 0x0080
SYSTEM__SEQUENCE_CONFIG = 0x0081
SYSTEM__INTERRUPT_CLEAR = 0x0086
SYSTEM__MODE_START = 0x0087
RESULT__RANGE_STATUS = 0x0089
RESULT__STREAM_COUNT = 0x008B
RESULT__DSS_ACTUAL_EFFECTIVE_SPADS_SD0 = 0x008C
RESULT__AMBIENT_COUNT_RATE_MCPS_SD = 0x0090
RESULT__FINAL_CROSSTALK_CORRECTED_RANGE_MM_SD0 = 0x0096
RESULT__PEAK_SIGNAL_COUNT_RATE_CROSSTALK_CORRECTED_MCPS_SD0 = 0x0098
RESULT__OSC_CALIBRATE_VAL = 0x00DE
FIRMWARE__SYSTEM_STATUS = 0x00E5
IDENTIFICATION__MODEL_ID = 0x010F
ROI_CONFIG__MODE_ROI_CENTRE_SPAD = 0x013E

#: The result block the ULD's GetResult reads: 17 bytes from RESULT__RANGE_STATUS.
RESULT_LEN = 17

REGISTER_NAMES: dict[int, str] = {
    value: name for name, value in list(globals().items())
    if name.isupper() and isinstance(value, int) and name.startswith(
        ("SOFT_", "I2C_", "VHV_", "ALGO_", "MM_", "GPIO", "SYSTEM_", "PHASECAL_", "RANGE_",
         "SD_", "ROI_", "RESULT__", "FIRMWARE_", "IDENTIFICATION_"))
}

START_RANGING = 0x40  # SYSTEM__MODE_START: timed ranging (the ULD's StartRanging)
STOP_RANGING = 0x00
CLEAR_INTERRUPT = 0x01
BOOTED = 0x01  # FIRMWARE__SYSTEM_STATUS once the firmware has booted (the ULD's BootState)

#: VL51L1X_DEFAULT_CONFIGURATION of the ULD: registers 0x2D..0x87, written by SensorInit.
#: It leaves long distance mode, a 100 ms timing budget, interrupt active high on new
#: sample, the full 16x16 ROI at SPAD 199, and ranging stopped (0x87 = 0).
DEFAULT_CONFIG_START = 0x002D
DEFAULT_CONFIGURATION = bytes([
    0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x02, 0x08,  # 0x2D-0x34
    0x00, 0x08, 0x10, 0x01, 0x01, 0x00, 0x00, 0x00,  # 0x35-0x3C
    0x00, 0xFF, 0x00, 0x0F, 0x00, 0x00, 0x00, 0x00,  # 0x3D-0x44
    0x00, 0x20, 0x0B, 0x00, 0x00, 0x02, 0x0A, 0x21,  # 0x45-0x4C
    0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0xC8,  # 0x4D-0x54
    0x00, 0x00, 0x38, 0xFF, 0x01, 0x00, 0x08, 0x00,  # 0x55-0x5C
    0x00, 0x01, 0xCC, 0x0F, 0x01, 0xF1, 0x0D, 0x01,  # 0x5D-0x64
    0x68, 0x00, 0x80, 0x08, 0xB8, 0x00, 0x00, 0x00,  # 0x65-0x6C
    0x00, 0x0F, 0x89, 0x00, 0x00, 0x00, 0x00, 0x00,  # 0x6D-0x74
    0x00, 0x00, 0x01, 0x0F, 0x0D, 0x0E, 0x0E, 0x00,  # 0x75-0x7C
    0x00, 0x02, 0xC7, 0xFF, 0x9B, 0x00, 0x00, 0x00,  # 0x7D-0x84
    0x01, 0x00, 0x00,                                # 0x85-0x87
])
DEFAULT_CONFIG_END = DEFAULT_CONFIG_START + len(DEFAULT_CONFIGURATION) - 1  # 0x87
REGISTER_NAMES.setdefault(DEFAULT_CONFIG_START, "(the ULD's default configuration block)")
#: What the ULD's SensorInit writes after its first ranging (VHV loop bound, VHV start).
VHV_AFTER_INIT = ((VHV_CONFIG__TIMEOUT_MACROP_LOOP_BOUND, 0x09), (VHV_CONFIG__INIT, 0x00))

# -- distance mode and timing budget (ULD SetDistanceMode, SetTimingBudgetInMs) -----------
DistanceMode = Literal["short", "long"]
#: ULD distance mode numbers: 1 short (up to 1.3 m), 2 long (up to 4 m in the dark).
MODE_NUMBERS: dict[str, int] = {"short": 1, "long": 2}


class ModeRegisters(NamedTuple):
    """What the ULD writes for a distance mode: four bytes and two words."""

    phasecal_timeout: int  # 0x4B
    vcsel_period_a: int  # 0x60
    vcsel_period_b: int  # 0x63
    valid_phase_high: int  # 0x69
    woi_sd0: int  # 0x78, word
    initial_phase_sd0: int  # 0x7A, word


DISTANCE_MODES: dict[str, ModeRegisters] = {
    "short": ModeRegisters(0x14, 0x07, 0x05, 0x38, 0x0705, 0x0606),
    "long": ModeRegisters(0x0A, 0x0F, 0x0D, 0xB8, 0x0F0D, 0x0E0E),
}
#: Maximum range per mode (UM2510, distance mode: 1.3 m short, 4 m long, in the dark).
MAX_RANGE_MM: dict[str, int] = {"short": 1300, "long": 4000}

#: RANGE_CONFIG__TIMEOUT_MACROP_A_HI and _B_HI words per mode and timing budget (ms).
#: 15 ms exists in short mode only.
TIMING_BUDGETS: dict[str, dict[int, tuple[int, int]]] = {
    "short": {15: (0x001D, 0x0027), 20: (0x0051, 0x006E), 33: (0x00D6, 0x006E),
              50: (0x01AE, 0x01E8), 100: (0x02E1, 0x0388), 200: (0x03E1, 0x0496),
              500: (0x0591, 0x05C1)},
    "long": {20: (0x001E, 0x0022), 33: (0x0060, 0x006E), 50: (0x00AD, 0x00C6),
             100: (0x01CC, 0x01EA), 200: (0x02D9, 0x02F8), 500: (0x048F, 0x04A4)},
}
BUDGETS_MS = (15, 20, 33, 50, 100, 200, 500)


def mode_of_phasecal(value: int) -> str | None:
    """The distance mode PHASECAL_CONFIG__TIMEOUT_MACROP says (the ULD's GetDistanceMode)."""
    return next((m for m, r in DISTANCE_MODES.items() if r.phasecal_timeout == value), None)


def timing_budget_words(mode: str, budget_ms: int) -> tuple[int, int]:
    """The A and B macro-period words for a budget; ValueError names the ones the mode has."""
    try:
        return TIMING_BUDGETS[mode][budget_ms]
    except KeyError:
        if mode not in TIMING_BUDGETS:
            raise ValueError(f"distance mode must be 'short' or 'long', not {mode!r}") from None
        have = ", ".join(str(b) for b in TIMING_BUDGETS[mode])
        raise ValueError(f"timing budget in {mode} mode must be one of {have} ms, "
                         f"not {budget_ms!r}") from None


def budget_of_words(macrop_a: int) -> int | None:
    """The timing budget (ms) a RANGE_CONFIG__TIMEOUT_MACROP_A word stands for (the ULD's
    GetTimingBudgetInMs reads only that word; its values never repeat across modes)."""
    for table in TIMING_BUDGETS.values():
        for ms, (a, _b) in table.items():
            if a == macrop_a:
                return ms
    return None


# -- inter-measurement period (ULD SetInterMeasurementInMs) ------------------------------
#: The ULD writes ``(OSC_CALIBRATE_VAL & 0x3FF) * ms * 1.075`` (its getter divides by 1.065:
#: an asymmetry of ST's code; here the period is decoded as the inverse of the write).
IM_FACTOR = 1.075
OSC_MASK = 0x3FF


def inter_measurement_register(ms: float, osc_calibrate: int) -> int:
    """SYSTEM__INTERMEASUREMENT_PERIOD for ``ms`` with this chip's oscillator calibration."""
    if ms <= 0:
        raise ValueError(f"inter-measurement period must be positive, not {ms!r}")
    value = int((osc_calibrate & OSC_MASK) * ms * IM_FACTOR)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"inter-measurement period {ms} ms does not fit the register")
    return value


def inter_measurement_ms(register: int, osc_calibrate: int) -> float | None:
    """The period (ms) a register value means; None with no oscillator calibration."""
    pll = osc_calibrate & OSC_MASK
    return register / (pll * IM_FACTOR) if pll else None


# -- region of interest (UM2555) ---------------------------------------------------------
GRID = 16  # the SPAD array is 16 x 16
MIN_ROI = 4  # UM2555: the smallest ROI is 4 x 4
OPTICAL_CENTRE = 199  # the default centre (row 7, column 8), ROI_CONFIG__MODE_ROI_CENTRE_SPAD
#: UM2600: two 8 x 16 zones, one per half of the array along the walking direction.
COUNTING_ROI = (8, 16)
COUNTING_CENTRES = (167, 231)


def spad_number(row: int, col: int) -> int:
    """The SPAD number UM2555's table gives at ``row`` (0 = top) and ``col`` (0 = left),
    looking into the sensor: 128 + 8 col + row in the top half, 8 (15 - col) + 15 - row in the
    bottom half (SPAD 0 is the bottom-right corner, next to pin 1)."""
    if not (0 <= row < GRID and 0 <= col < GRID):
        raise ValueError(f"SPAD row and column are 0..15, not ({row}, {col})")
    if row < 8:
        return 128 + 8 * col + row
    return 8 * (15 - col) + 15 - row


def spad_position(spad: int) -> tuple[int, int]:
    """(row, column) of a SPAD number 0..255 (the inverse of :func:`spad_number`)."""
    if not 0 <= spad <= 255:
        raise ValueError(f"a SPAD number is 0..255, not {spad!r}")
    if spad >= 128:
        return (spad - 128) % 8, (spad - 128) // 8
    return 15 - spad % 8, 15 - spad // 8


def roi_size_byte(width: int, height: int) -> int:
    """ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY_SIZE: (height - 1) << 4 | (width - 1)."""
    check_roi_size(width, height)
    return (height - 1) << 4 | (width - 1)


def decode_roi_size(value: int) -> tuple[int, int]:
    """(width, height) from the size register."""
    return (value & 0x0F) + 1, (value >> 4 & 0x0F) + 1


def check_roi_size(width: int, height: int) -> None:
    if not (MIN_ROI <= width <= GRID and MIN_ROI <= height <= GRID):
        raise ValueError(f"ROI width and height are {MIN_ROI}..{GRID} SPADs (UM2555), "
                         f"not {width}x{height}")


def roi_span(centre: int, width: int, height: int) -> tuple[range, range]:
    """The rows and columns of the SPADs an ROI covers: ``height`` rows and ``width`` columns
    around the centre SPAD, the extra one of an even size above and to the left of it (so
    16x16 at 199 is the whole array, and 8x16 at 167 and 231 its two halves)."""
    row, col = spad_position(centre)
    top = row - (height - 1) // 2
    left = col - width // 2
    return range(top, top + height), range(left, left + width)


def check_roi(width: int, height: int, centre: int) -> None:
    """ValueError unless the ROI's size is 4..16 each way and it lies within the array."""
    check_roi_size(width, height)
    rows, cols = roi_span(centre, width, height)
    if rows.start < 0 or cols.start < 0 or rows.stop > GRID or cols.stop > GRID:
        raise ValueError(f"a {width}x{height} ROI centred on SPAD {centre} does not fit the "
                         f"16x16 array (rows {rows.start}..{rows.stop - 1}, columns "
                         f"{cols.start}..{cols.stop - 1})")


# -- results ---------------------------------------------------------------------------------
#: The ULD's status_rtn: RESULT__RANGE_STATUS & 0x1F (the device's code) -> its range status.
STATUS_FROM_DEVICE = (255, 255, 255, 5, 2, 4, 1, 7, 3, 0, 255, 255,
                      9, 13, 255, 255, 255, 255, 10, 6, 255, 255, 11, 12)
#: The range statuses (UM2510 names 0, 1, 2, 4 and 7; the others are ST's full API's).
STATUS_NAMES: dict[int, str] = {
    0: "valid", 1: "sigma fail", 2: "signal fail", 3: "valid, min range clipped",
    4: "out of bounds", 5: "hardware fail", 6: "valid, no wrap check", 7: "wraparound",
    8: "processing fail", 9: "crosstalk signal fail", 10: "synchronisation interrupt",
    11: "valid, merged pulse", 12: "target present, lack of signal", 13: "min range fail",
    255: "no update",
}
VALID = 0
SIGMA_FAIL = 1
SIGNAL_FAIL = 2
OUT_OF_BOUNDS = 4
HARDWARE_FAIL = 5
NO_WRAP_CHECK = 6
WRAPAROUND = 7
NO_UPDATE = 255
#: Statuses whose distance a plain ranger reports: a valid range (6: the first range after
#: a start, before the wraparound check has a previous one).
TRUSTED = frozenset({VALID, NO_WRAP_CHECK})
#: Statuses whose distance ST's people-counting reference still uses (UM2600, STSW-IMG010:
#: 0, 4 and 7; every other status counts as "nobody", the far end of the use case).
COUNTING_STATUSES = frozenset({VALID, OUT_OF_BOUNDS, NO_WRAP_CHECK, WRAPAROUND})
#: Device code for each range status (the emulator's side of STATUS_FROM_DEVICE; each
#: status but "no update" has one code).
DEVICE_CODE: dict[int, int] = {status: code for code, status in enumerate(STATUS_FROM_DEVICE)
                               if status != NO_UPDATE}


def range_status(register: int) -> int:
    """The ULD's range status for a RESULT__RANGE_STATUS byte (255: no update/unknown)."""
    code = register & 0x1F
    return STATUS_FROM_DEVICE[code] if code < len(STATUS_FROM_DEVICE) else NO_UPDATE


@dataclass(frozen=True, slots=True)
class Result:
    """One ranging result, as the ULD's GetResult reads it from 17 bytes at 0x0089."""

    status: int  # the ULD's range status (STATUS_NAMES)
    device_status: int  # RESULT__RANGE_STATUS & 0x1F
    distance_mm: int
    stream_count: int
    spads: int  # effective SPADs enabled (integer part)
    ambient_kcps: int  # ambient count rate (register x 8)
    signal_kcps: int  # peak signal count rate (register x 8)

    @property
    def trusted(self) -> bool:
        return self.status in TRUSTED

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "status_name": STATUS_NAMES.get(self.status, "?"),
                "device_status": self.device_status, "distance_mm": self.distance_mm,
                "stream_count": self.stream_count, "spads": self.spads,
                "ambient_kcps": self.ambient_kcps, "signal_kcps": self.signal_kcps}


def decode_result(data: bytes) -> Result:
    """The 17-byte result block -> :class:`Result`; ValueError if mis-sized."""
    if len(data) != RESULT_LEN:
        raise ValueError(f"a result block is {RESULT_LEN} bytes, got {len(data)}")
    return Result(
        status=range_status(data[0]), device_status=data[0] & 0x1F,
        distance_mm=int.from_bytes(data[13:15], "big"), stream_count=data[2],
        spads=data[3], ambient_kcps=int.from_bytes(data[7:9], "big") * 8,
        signal_kcps=int.from_bytes(data[15:17], "big") * 8)


def encode_result(status: int, distance_mm: int, *, stream_count: int = 0, spads: int = 0,
                  ambient_kcps: int = 0, signal_kcps: int = 0) -> bytes:
    """Device side: the 17 result bytes for a range status (ULD numbering) and distance."""
    out = bytearray(RESULT_LEN)
    out[0] = DEVICE_CODE.get(status, 0)
    out[2] = stream_count & 0xFF
    out[3] = max(0, min(255, spads))
    out[7:9] = max(0, min(0xFFFF, ambient_kcps // 8)).to_bytes(2, "big")
    out[13:15] = max(0, min(0xFFFF, int(distance_mm))).to_bytes(2, "big")
    out[15:17] = max(0, min(0xFFFF, signal_kcps // 8)).to_bytes(2, "big")
    return bytes(out)


def interrupt_active_high(mux_ctrl: int) -> bool:
    """GPIO_HV_MUX__CTRL bit 4: 0 = active high (the ULD's GetInterruptPolarity)."""
    return not mux_ctrl & 0x10


def data_ready(tio_hv_status: int, active_high: bool = True) -> bool:
    """GPIO__TIO_HV_STATUS bit 0 equals the interrupt polarity when a result is ready (the
    ULD's CheckForDataReady)."""
    return bool(tio_hv_status & 1) == active_high


class ZoneSample(NamedTuple):
    """One measurement of a counting zone: monotonic time in s, the zone (0 or 1), the
    distance in mm (None when its range status has no usable distance: not one of
    :data:`COUNTING_STATUSES`) and the range status (STATUS_NAMES)."""

    t: float
    zone: int
    distance_mm: int | None
    status: int


# -- transfers -----------------------------------------------------------------------------
def reg_bytes(reg: int) -> bytes:
    """A 16-bit register address as the chip takes it, big-endian."""
    if not 0 <= reg <= 0xFFFF:
        raise ValueError(f"register address is 16 bits, not {reg!r}")
    return reg.to_bytes(2, "big")


def write(reg: int, data: bytes) -> bytes:
    """The bytes of a write transfer: the register address, then data for consecutive
    registers."""
    return reg_bytes(reg) + bytes(data)


def write_byte(reg: int, value: int) -> bytes:
    return write(reg, bytes([value & 0xFF]))


def write_word(reg: int, value: int) -> bytes:
    return write(reg, (value & 0xFFFF).to_bytes(2, "big"))


def write_dword(reg: int, value: int) -> bytes:
    return write(reg, (value & 0xFFFFFFFF).to_bytes(4, "big"))


def sensor_init_block() -> bytes:
    """The default configuration as one write transfer (the ULD writes it byte by byte)."""
    return write(DEFAULT_CONFIG_START, DEFAULT_CONFIGURATION)


def distance_mode_writes(mode: str) -> list[bytes]:
    """The ULD's SetDistanceMode writes, in its order (the timing budget must be written
    again after them: its words differ per mode)."""
    try:
        r = DISTANCE_MODES[mode]
    except KeyError:
        raise ValueError(f"distance mode must be 'short' or 'long', not {mode!r}") from None
    return [write_byte(PHASECAL_CONFIG__TIMEOUT_MACROP, r.phasecal_timeout),
            write_byte(RANGE_CONFIG__VCSEL_PERIOD_A, r.vcsel_period_a),
            write_byte(RANGE_CONFIG__VCSEL_PERIOD_B, r.vcsel_period_b),
            write_byte(RANGE_CONFIG__VALID_PHASE_HIGH, r.valid_phase_high),
            write_word(SD_CONFIG__WOI_SD0, r.woi_sd0),
            write_word(SD_CONFIG__INITIAL_PHASE_SD0, r.initial_phase_sd0)]


def timing_budget_writes(mode: str, budget_ms: int) -> list[bytes]:
    a, b = timing_budget_words(mode, budget_ms)
    return [write_word(RANGE_CONFIG__TIMEOUT_MACROP_A_HI, a),
            write_word(RANGE_CONFIG__TIMEOUT_MACROP_B_HI, b)]


def address_write(new_address: int) -> bytes:
    """The ULD's SetI2CAddress: the 7-bit address into I2C_SLAVE__DEVICE_ADDRESS (it takes
    the 8-bit form and shifts it); the chip answers there until it is powered down."""
    if not 0x08 <= new_address <= 0x77:
        raise ValueError(f"a 7-bit I2C address is 0x08..0x77, not {new_address!r}")
    return write_byte(I2C_SLAVE__DEVICE_ADDRESS, new_address)


# -- captures --------------------------------------------------------------------------------
@dataclass
class _Chip:
    """What a capture has told us about one chip so far."""

    pointer: int | None = None
    mode: str | None = None
    osc: int | None = None
    active_high: bool = True
    roi: tuple[int, int] = (16, 16)


def decode_capture(records: Iterable[Record],
                   addresses: tuple[int, ...] = ADDRESSES) -> Iterator[dict[str, Any]]:
    """Turn captured transfers (``parse_capture`` output) into JSON-ready dicts.

    A write of the register address alone moves the pointer (``select``); longer writes are
    ``write`` events per register block, with what the ULD means by them (the default
    configuration, distance mode, timing budget, inter-measurement period, ROI, start and
    stop, interrupt clear, address change). Reads are decoded by the register the pointer is
    at: model id, data ready, the result block, the distance, the oscillator calibration,
    boot state. NACKs, writes of one byte (half a register address) and reads with no
    register selected are ``rejected`` with a reason. Never raises for any byte content.
    """
    chips: dict[int, _Chip] = {}
    walk = CaptureWalk(addresses)
    for addr, kind, data, head in walk(records):
        chip = chips.setdefault(addr, _Chip())
        if kind == "W":
            yield from _capture_write(head, chip, data)
        else:
            yield _capture_read(head, chip, data)
    yield from walk.summary()


def _capture_write(head: dict[str, Any], chip: _Chip,
                   data: bytes | None) -> Iterator[dict[str, Any]]:
    if data is None:
        chip.pointer = None
        yield {**head, "type": "rejected", "reason": "write NACKed (no device at this "
               "address, the chip still booting, or a bus fault)"}
        return
    if not data:
        yield {**head, "type": "probe", "reason": "empty write (address probe)"}
        return
    if len(data) == 1:
        chip.pointer = None
        yield {**head, "type": "rejected", "bytes": data.hex(" "),
               "reason": "write of 1 byte: VL53L1X register addresses are 16 bits"}
        return
    reg = int.from_bytes(data[:2], "big")
    chip.pointer = reg
    payload = data[2:]
    doc: dict[str, Any] = {**head, "reg": f"{reg:04x}",
                           "name": REGISTER_NAMES.get(reg, "?")}
    if not payload:
        yield {**doc, "type": "select"}
        return
    yield {**doc, "type": "write", "bytes": payload.hex(" "), **_meaning(chip, reg, payload)}


def _meaning(chip: _Chip, reg: int, data: bytes) -> dict[str, Any]:
    """What the ULD means by writing ``data`` from ``reg`` (updates the chip's state)."""
    value = int.from_bytes(data[:4], "big")
    if reg == DEFAULT_CONFIG_START and len(data) == len(DEFAULT_CONFIGURATION):
        same = data == DEFAULT_CONFIGURATION
        chip.mode, chip.active_high, chip.roi = "long", True, (16, 16)
        return {"what": "default configuration (ULD)" if same else
                "configuration block 0x2d-0x87 (differs from the ULD's default)"}
    if reg == SYSTEM__MODE_START and len(data) == 1:
        return {"what": {START_RANGING: "start ranging", STOP_RANGING: "stop ranging"}.get(
            data[0], f"mode start 0x{data[0]:02x}")}
    if reg == SYSTEM__INTERRUPT_CLEAR and len(data) == 1:
        return {"what": "clear interrupt"}
    if reg == PHASECAL_CONFIG__TIMEOUT_MACROP and len(data) == 1:
        chip.mode = mode_of_phasecal(data[0]) or chip.mode
        return {"what": "distance mode", "mode": mode_of_phasecal(data[0])}
    if reg == RANGE_CONFIG__TIMEOUT_MACROP_A_HI and len(data) == 2:
        return {"what": "timing budget (A)", "timing_budget_ms": budget_of_words(value)}
    if reg == RANGE_CONFIG__TIMEOUT_MACROP_B_HI and len(data) == 2:
        return {"what": "timing budget (B)"}
    if reg == SYSTEM__INTERMEASUREMENT_PERIOD and len(data) == 4:
        ms = inter_measurement_ms(value, chip.osc) if chip.osc is not None else None
        out: dict[str, Any] = {"what": "inter-measurement period", "ticks": value}
        if ms is not None:
            out["inter_measurement_ms"] = round(ms, 1)
        return out
    if reg == ROI_CONFIG__USER_ROI_CENTRE_SPAD:
        row, col = spad_position(data[0])
        out = {"what": "ROI centre", "spad": data[0], "row": row, "column": col}
        if len(data) >= 2:
            chip.roi = decode_roi_size(data[1])
            out["roi"] = f"{chip.roi[0]}x{chip.roi[1]}"
        return out
    if reg == ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY_SIZE and len(data) == 1:
        chip.roi = decode_roi_size(data[0])
        return {"what": "ROI size", "roi": f"{chip.roi[0]}x{chip.roi[1]}"}
    if reg == GPIO_HV_MUX__CTRL and len(data) == 1:
        chip.active_high = interrupt_active_high(data[0])
        return {"what": "interrupt polarity",
                "polarity": "active high" if chip.active_high else "active low"}
    if reg == I2C_SLAVE__DEVICE_ADDRESS and len(data) == 1:
        return {"what": "change I2C address", "new_address": f"0x{data[0] & 0x7F:02x}"}
    if reg == SOFT_RESET and len(data) == 1:
        return {"what": "soft reset " + ("released" if data[0] & 1 else "asserted")}
    if reg in (VHV_CONFIG__TIMEOUT_MACROP_LOOP_BOUND, VHV_CONFIG__INIT) and len(data) == 1:
        return {"what": "VHV configuration"}
    return {}


def _capture_read(head: dict[str, Any], chip: _Chip, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {**head, "type": "rejected", "reason": "read NACKed (no device at this "
                "address, the chip still booting, or a bus fault)"}
    if chip.pointer is None:
        return {**head, "type": "rejected", "bytes": data.hex(" "),
                "reason": "read with no register address written before it"}
    reg = chip.pointer
    chip.pointer = reg + len(data)
    doc: dict[str, Any] = {**head, "reg": f"{reg:04x}", "name": REGISTER_NAMES.get(reg, "?"),
                           "bytes": data.hex(" ")}
    value = int.from_bytes(data[:4], "big") if data else 0
    if reg == IDENTIFICATION__MODEL_ID and len(data) == 2:
        what = "VL53L1X" if value == MODEL_ID else OTHER_MODELS.get(value, "an unknown chip")
        return {**doc, "type": "model_id", "model_id": f"0x{value:04x}", "chip": what}
    if reg == GPIO__TIO_HV_STATUS and len(data) == 1:
        return {**doc, "type": "status", "data_ready": data_ready(data[0], chip.active_high)}
    if reg == GPIO_HV_MUX__CTRL and len(data) == 1:
        chip.active_high = interrupt_active_high(data[0])
        return {**doc, "type": "read", "polarity":
                "active high" if chip.active_high else "active low"}
    if reg == RESULT__RANGE_STATUS and len(data) == RESULT_LEN:
        return {**doc, "type": "result", **decode_result(data).as_dict()}
    if reg == RESULT__RANGE_STATUS and len(data) == 1:
        status = range_status(data[0])
        return {**doc, "type": "read", "status": status,
                "status_name": STATUS_NAMES.get(status, "?")}
    if reg == RESULT__FINAL_CROSSTALK_CORRECTED_RANGE_MM_SD0 and len(data) == 2:
        return {**doc, "type": "distance", "distance_mm": value}
    if reg == RESULT__OSC_CALIBRATE_VAL and len(data) == 2:
        chip.osc = value
        return {**doc, "type": "read", "osc_calibrate": value & OSC_MASK}
    if reg == FIRMWARE__SYSTEM_STATUS and len(data) == 1:
        return {**doc, "type": "read", "booted": data[0] == BOOTED}
    if reg == ROI_CONFIG__MODE_ROI_CENTRE_SPAD and len(data) == 1:
        return {**doc, "type": "read", "optical_centre": data[0]}
    if reg == PHASECAL_CONFIG__TIMEOUT_MACROP and len(data) == 1:
        return {**doc, "type": "read", "mode": mode_of_phasecal(data[0])}
    return {**doc, "type": "read"}
