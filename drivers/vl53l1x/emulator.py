"""The VL53L1X's side of the I2C bus, register by register, over a scene (a doorway).

:class:`VL53L1XModel` is a chip model for :class:`drivers.emulation.i2c.FakeBus`:

* 16-bit register addresses, big-endian, auto-increment for reads and writes; a write of
  one byte (half an address) is ignored, an empty one is an address probe;
* at power-up: model id 0xEACC at 0x010F, the optical centre 199 at 0x013E, an oscillator
  calibration at 0x00DE, address 0x29 at 0x0001, everything else 0 (the ULD's default
  block is the driver's to write); for ``boot_s`` after a power cycle every transfer is
  NACKed, then FIRMWARE__SYSTEM_STATUS reads 1;
* SYSTEM__MODE_START 0x40 starts timed ranging, 0x00 stops it. A measurement latches the
  ROI (centre and size), distance mode and timing budget in the registers when it starts,
  lasts the timing budget, then writes the 17-byte result block at 0x0089 and raises the
  interrupt: GPIO__TIO_HV_STATUS bit 0 equals the polarity GPIO_HV_MUX__CTRL bit 4 sets
  (0: active high). The next measurement starts one inter-measurement period after the
  previous start, but not before the host has cleared the interrupt (SYSTEM__INTERRUPT_CLEAR
  0x01): a register written before the clear is in force for the next measurement. The
  first range after a start has status 6 (no wraparound check yet);
* the inter-measurement period is the register divided by ``osc_calibrate * 1.075`` (the
  inverse of what the ULD writes); an unknown timing budget word measures 100 ms;
* I2C_SLAVE__DEVICE_ADDRESS moves the chip to a new address (``on_address`` is told,
  :func:`attach` wires it to the bus) until :meth:`power_cycle`; SOFT_RESET 0x00 then 0x01
  reboots it.

What each measurement sees comes from a *scene*: ``scene.measure(t, centre, width, height,
mode, budget_ms) -> (distance_mm, status, signal_kcps)`` (:class:`drivers.vl53l1x.doorway.
Doorway` by default: an empty floor 2.4 m below), with ``t`` the middle of the
measurement. :attr:`measured` keeps what was measured, with the ROI, for tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..emulation.i2c import FakeBus, Nack
from ..emulation.registers import RegisterFile
from . import codec as c
from .doorway import Doorway, EndlessDoorway, Walker, scripted_doorway

__all__ = ["Doorway", "EndlessDoorway", "Flat", "Measured", "VL53L1XModel", "Walker",
           "attach", "scripted_doorway"]

#: Registers modelled: 0x0000..0x01FF (the ULD touches nothing above 0x013E).
SIZE = 0x0200
#: A plausible RESULT__OSC_CALIBRATE_VAL (the chip's own, measured at the factory).
OSC_CALIBRATE = 0x01C5
#: Datasheet: boot time after XSHUT is released (1.2 ms maximum).
BOOT_S = 0.0012
#: Registers the host cannot write (results, identification, firmware status).
READ_ONLY = frozenset([*range(c.RESULT__RANGE_STATUS, c.RESULT__RANGE_STATUS + c.RESULT_LEN),
                       c.RESULT__OSC_CALIBRATE_VAL, c.RESULT__OSC_CALIBRATE_VAL + 1,
                       c.FIRMWARE__SYSTEM_STATUS, c.IDENTIFICATION__MODEL_ID,
                       c.IDENTIFICATION__MODEL_ID + 1, c.ROI_CONFIG__MODE_ROI_CENTRE_SPAD])


class Scene(Protocol):
    def measure(self, t: float, centre: int, width: int, height: int, mode: str = "long",
                budget_ms: int = 33) -> tuple[int, int, int]: ...


class Flat:
    """A scene that always measures ``mm`` with ``status`` (tests)."""

    def __init__(self, mm: int = 1500, status: int = c.VALID) -> None:
        self.mm, self.status = mm, status

    def measure(self, t: float, centre: int, width: int, height: int, mode: str = "long",
                budget_ms: int = 33) -> tuple[int, int, int]:
        return self.mm, self.status, 10_000


@dataclass(frozen=True, slots=True)
class Measured:
    """One finished measurement: when, through which ROI, and what it reported."""

    start: float
    end: float
    centre: int
    width: int
    height: int
    mode: str
    budget_ms: int
    distance_mm: int
    status: int


@dataclass(slots=True)
class _Running:
    start: float
    end: float
    centre: int
    width: int
    height: int
    mode: str
    budget_ms: int


class VL53L1XModel(RegisterFile):
    """Device side of a VL53L1X (implements :class:`drivers.emulation.i2c.I2CModel`).

    State (:attr:`regs`, :attr:`ranging`, :attr:`pending`, :attr:`measured`,
    :attr:`stats`) is public so tests and the simulator can look at it.
    """

    LAST_REGISTER = 0xFFFF

    def __init__(self, scene: Scene | None = None, *, model_id: int = c.MODEL_ID,
                 osc_calibrate: int = OSC_CALIBRATE, boot_s: float = BOOT_S,
                 keep: int = 1000,
                 on_address: Callable[[int], None] | None = None) -> None:
        self.scene: Scene = scene if scene is not None else Doorway()
        self.model_id = model_id
        self.osc_calibrate = osc_calibrate
        self.boot_s = boot_s
        self.on_address = on_address
        self.measured: deque[Measured] = deque(maxlen=keep)
        self.stats = {"transfers": 0, "writes": 0, "reads": 0, "ignored": 0,
                      "measurements": 0, "starts": 0, "stops": 0, "clears": 0, "resets": 0}
        self.pointer = 0
        self._power_up(booted_at=float("-inf"))

    def _power_up(self, booted_at: float) -> None:
        self.regs = bytearray(SIZE)
        self.regs[c.I2C_SLAVE__DEVICE_ADDRESS] = c.ADDRESS
        self.regs[c.IDENTIFICATION__MODEL_ID:c.IDENTIFICATION__MODEL_ID + 2] = (
            self.model_id.to_bytes(2, "big"))
        self.regs[c.ROI_CONFIG__MODE_ROI_CENTRE_SPAD] = c.OPTICAL_CENTRE
        self.regs[c.RESULT__OSC_CALIBRATE_VAL:c.RESULT__OSC_CALIBRATE_VAL + 2] = (
            self.osc_calibrate.to_bytes(2, "big"))
        self.booted_at = booted_at
        self.ranging = False
        self.pending = False  # a result waits for the host (the interrupt is raised)
        self.running: _Running | None = None
        self.next_start: float | None = None
        self.last_start: float | None = None
        self.first_after_start = True
        self.stream_count = 0
        self._soft_reset_low = False

    def power_cycle(self, now: float) -> None:
        """Supply cut and restored (or XSHUT toggled): power-up registers, boot again."""
        self._power_up(booted_at=now + self.boot_s)
        self.stats["resets"] += 1
        if self.on_address is not None:
            self.on_address(c.ADDRESS)

    # -- what the registers say ---------------------------------------------------------
    def word(self, reg: int) -> int:
        return int.from_bytes(self.regs[reg:reg + 2], "big")

    @property
    def mode(self) -> str:
        return c.mode_of_phasecal(self.regs[c.PHASECAL_CONFIG__TIMEOUT_MACROP]) or "long"

    @property
    def budget_ms(self) -> int:
        return c.budget_of_words(self.word(c.RANGE_CONFIG__TIMEOUT_MACROP_A_HI)) or 100

    @property
    def period_s(self) -> float:
        """Start to start of measurements: the inter-measurement period, at least the budget."""
        reg = int.from_bytes(self.regs[c.SYSTEM__INTERMEASUREMENT_PERIOD:
                                       c.SYSTEM__INTERMEASUREMENT_PERIOD + 4], "big")
        ms = c.inter_measurement_ms(reg, self.osc_calibrate) or 0.0
        return max(ms, self.budget_ms) / 1000.0

    @property
    def roi(self) -> tuple[int, int, int]:
        """(centre, width, height) in force."""
        size = self.regs[c.ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY_SIZE]
        return (self.regs[c.ROI_CONFIG__USER_ROI_CENTRE_SPAD], *c.decode_roi_size(size))

    # -- the transfer's parts (RegisterFile walks them) -------------------------------------
    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        if now < self.booted_at:
            raise Nack()
        return super().transfer(parts, now)

    def _write_part(self, data: bytes, now: float) -> None:
        """A write: a 16-bit register address, then data for consecutive registers."""
        if len(data) < 2:
            if data:
                self.stats["ignored"] += 1  # half a register address
            return
        reg = int.from_bytes(data[:2], "big")
        self.pointer = reg
        for k, byte in enumerate(data[2:]):
            self._write(reg + k, byte, now)

    def _read_part(self, n: int, now: float) -> bytes:
        start = self.pointer
        block = bytes(self._read(start + k, now) for k in range(n))
        self.pointer = min(start + n, self.LAST_REGISTER)
        self.stats["reads"] += 1
        return block

    def _read(self, reg: int, now: float) -> int:
        if reg == c.GPIO__TIO_HV_STATUS:
            level = self.pending == c.interrupt_active_high(self.regs[c.GPIO_HV_MUX__CTRL])
            return (self.regs[reg] & 0xFE) | int(level)
        if reg == c.FIRMWARE__SYSTEM_STATUS:
            return c.BOOTED
        return self.regs[reg] if reg < SIZE else 0

    def _write(self, reg: int, val: int, now: float) -> None:
        if reg >= SIZE or reg in READ_ONLY:
            self.stats["ignored"] += 1
            return
        self.stats["writes"] += 1
        self.regs[reg] = val
        if reg == c.SYSTEM__MODE_START:
            self._mode_start(val, now)
        elif reg == c.SYSTEM__INTERRUPT_CLEAR and val & c.CLEAR_INTERRUPT:
            self._clear(now)
        elif reg == c.I2C_SLAVE__DEVICE_ADDRESS:
            self.regs[reg] = val & 0x7F
            if self.on_address is not None:
                self.on_address(val & 0x7F)
        elif reg == c.SOFT_RESET:
            if val & 1 and self._soft_reset_low:
                self.power_cycle(now)
            self._soft_reset_low = not val & 1

    def _mode_start(self, val: int, now: float) -> None:
        if val == c.START_RANGING:
            self.stats["starts"] += 1
            self.ranging, self.running, self.next_start = True, None, now
            self.first_after_start = True
        elif val == c.STOP_RANGING:
            self.stats["stops"] += 1
            self.ranging, self.running, self.next_start = False, None, None
        else:
            self.stats["ignored"] += 1

    def _clear(self, now: float) -> None:
        self.stats["clears"] += 1
        if not self.pending:
            return
        self.pending = False
        if self.ranging and self.running is None:
            due = now if self.last_start is None else self.last_start + self.period_s
            self.next_start = max(now, due)

    # -- time ---------------------------------------------------------------------------
    def _update(self, now: float) -> None:
        """Start and finish the measurements the elapsed time has seen."""
        while True:
            run = self.running
            if run is not None and run.end <= now:
                self._finish(run)
            elif (run is None and self.ranging and not self.pending
                  and self.next_start is not None and self.next_start <= now):
                self._start(self.next_start)
            else:
                return

    def _start(self, t: float) -> None:
        centre, width, height = self.roi
        budget = self.budget_ms
        self.running = _Running(t, t + budget / 1000.0, centre, width, height, self.mode,
                                budget)
        self.last_start, self.next_start = t, None

    def _finish(self, run: _Running) -> None:
        self.running = None
        mm, status, signal = self.scene.measure((run.start + run.end) / 2, run.centre,
                                                run.width, run.height, run.mode,
                                                run.budget_ms)
        if self.first_after_start and status == c.VALID:
            status = c.NO_WRAP_CHECK
        self.first_after_start = False
        self.stream_count = (self.stream_count + 1) & 0xFF
        block = c.encode_result(status, mm, stream_count=self.stream_count,
                                spads=run.width * run.height // 2, ambient_kcps=800,
                                signal_kcps=signal)
        self.regs[c.RESULT__RANGE_STATUS:c.RESULT__RANGE_STATUS + c.RESULT_LEN] = block
        self.pending = True
        self.stats["measurements"] += 1
        self.measured.append(Measured(run.start, run.end, run.centre, run.width, run.height,
                                      run.mode, run.budget_ms, mm, status))


def attach(bus: FakeBus, model: VL53L1XModel, address: int = c.ADDRESS) -> VL53L1XModel:
    """Put ``model`` on ``bus`` at ``address`` so that an address change moves it there."""
    where = {"addr": address}

    def move(new: int) -> None:
        if bus.devices.get(where["addr"]) is model:
            del bus.devices[where["addr"]]
        bus.devices[new] = model
        where["addr"] = new

    model.on_address = move
    bus.attach(address, model)
    return model


def model_for(scene: str, seed: int, **kw: Any) -> VL53L1XModel:
    """The chip for ``emulator_scene``: "doorway" (people passing, a few range errors),
    "empty" (the floor alone) or "covered" (something over the cover glass)."""
    if scene == "doorway":
        return VL53L1XModel(EndlessDoorway(seed, signal_fail=0.01, out_of_bounds=0.005), **kw)
    if scene == "empty":
        return VL53L1XModel(Doorway(seed=seed), **kw)
    if scene == "covered":
        return VL53L1XModel(Doorway(covered=[(float("-inf"), float("inf"))], seed=seed), **kw)
    raise ValueError(f"emulator_scene is 'doorway', 'empty' or 'covered', not {scene!r}")
