"""Host-side I2C plumbing shared by the I2C drivers (SPS30, SHT3x, BME280).

:class:`I2CDevice` holds what every one of them does the same way:

* ``bus`` is a bus number or device path, opened with ``bus_factory`` (smbus2's
  ``SMBus``) on open and closed on close, or an smbus2-like object that the
  caller owns and that is never closed here;
* messages name the chip, its address and its bus (:func:`bus_label`);
* plain transfers: a write, a separate read, and a write - wait - separate read
  (no repeated start: the Sensirion chips do not take one);
* NACKs (``OSError`` 121 on a Pi) and other bus errors are counted, failures in
  a row escalate to :class:`DeviceGone` ("error, error, gone"), a vanished
  adapter is gone at once (:class:`I2CErrors`);
* CRC errors are counted, and ``stats()`` adds ``bad_frames``, the sum of the
  counters listed in :attr:`I2CDevice.BAD_FRAMES`, which the agent watches;
* a read the chip NACKs because it is not ready yet is retried a few times
  (:meth:`I2CDevice._read_retrying`);
* every driver's constructor takes the same :class:`BusOptions` (failures in a row
  that mean gone, the bus factory and the clocks), and :func:`check_address` says
  which addresses a chip's address pin selects;
* on open, a chip with an id register is checked (:meth:`I2CDevice._check_chip_id`):
  another chip at the address is :class:`WrongChip`.

:class:`PolledChip` is a chip set up when the bus opens and read for some of its
quantities every ``read_interval_s``; :class:`SingleShotDevice` adds the poll loop of a
chip that measures on demand (SHT3x, BME280): one measurement per interval, no catching
up. The FIFO accelerometers (:mod:`drivers.families.accel_fifo`) are the other kind.
"""

from __future__ import annotations

import errno
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypedDict, Unpack

from smbus2 import SMBus, i2c_msg

from .base import DeviceError, DeviceGone, Reading
from .sensirion import CRCError

#: errno values that mean the bus itself is gone (adapter removed, file closed).
GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.EBADF, errno.ESHUTDOWN})
#: Longest poll() of a :class:`SingleShotDevice` sleeps while no measurement is due.
IDLE_WAIT_S = 0.25
#: Transfers (or operations) in a row with no answer after which a chip is gone.
GONE_AFTER = 3

BusFactory = Callable[[Any], Any]


class WrongChip(DeviceError):
    """Something answers at the address, but it is not the chip configured."""


class BusIO(TypedDict, total=False):
    """The bus factory (smbus2's ``SMBus``) and the clocks of a driver: tests replace them."""

    bus_factory: BusFactory
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    sleep: Callable[[float], None]


class BusOptions(BusIO, total=False):
    """Keywords every I2C driver takes besides its own: its :class:`BusIO`, and
    ``gone_after`` failures in a row that mean the chip is gone."""

    gone_after: int


def check_address(chip: str, address: int, addresses: Sequence[int], pin: str) -> None:
    """ValueError unless ``address`` is one of the two ``addresses`` the chip's address
    ``pin`` selects (low, high)."""
    if address not in addresses:
        low, high = addresses
        raise ValueError(f"{chip} address must be 0x{low:02X} ({pin} low) or 0x{high:02X} "
                         f"({pin} high), not {address:#04x}")


def bus_label(bus: Any) -> str:
    """How a bus is named in messages: its number or path, else the object's class."""
    return str(bus) if isinstance(bus, int | str) else type(bus).__name__


def open_bus(bus: Any, bus_factory: BusFactory) -> tuple[Any, bool]:
    """The bus object to use and whether we opened it (so close it): a number or path is
    opened with ``bus_factory``, anything else is the caller's smbus2-like object."""
    if not isinstance(bus, int | str):
        return bus, False
    try:
        return bus_factory(bus), True
    except OSError as exc:
        raise DeviceGone(f"cannot open I2C bus {bus}: {exc}") from exc


class I2CDevice:
    """Base of a host driver for one chip at one address on an I2C bus.

    Subclasses set :attr:`chip` (the name in messages) and, if the chip's bus
    errors read differently, :attr:`NACK_ERRNOS` and :attr:`GONE_ERRNOS` (None:
    every error that is not a NACK means the chip or bus is gone).
    """

    chip: ClassVar[str] = "I2C device"
    #: errno values of a transfer the chip did not acknowledge.
    NACK_ERRNOS: ClassVar[frozenset[int]] = frozenset({errno.EREMOTEIO})
    GONE_ERRNOS: ClassVar[frozenset[int] | None] = GONE_ERRNOS
    #: Counters that add up to ``bad_frames`` in :meth:`stats`.
    BAD_FRAMES: ClassVar[tuple[str, ...]] = ("crc_errors",)
    #: NACKed reads :meth:`_read_retrying` tries again, and the wait before each try.
    READ_RETRIES: ClassVar[int] = 3
    RETRY_WAIT_S: ClassVar[float] = 0.005

    def __init__(
        self,
        bus: Any,
        *,
        address: int,
        counters: Iterable[str],
        gone_after: int = GONE_AFTER,
        bus_factory: BusFactory = SMBus,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bus = bus
        self.address = address
        self.gone_after = gone_after
        self._bus_factory = bus_factory
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._bus: Any = None
        self._owns_bus = False
        self._no_answer = 0  # transfers or operations in a row that got no answer
        self.counters: dict[str, int] = dict.fromkeys(counters, 0)

    @property
    def name(self) -> str:
        return f"{self.chip} at 0x{self.address:02x} on bus {bus_label(self.bus)}"

    def stats(self) -> dict[str, int]:
        """Counters, plus ``bad_frames`` (unusable replies), which the agent watches."""
        c = self.counters
        return {**c, "bad_frames": sum(c[k] for k in self.BAD_FRAMES)}

    # -- the bus ----------------------------------------------------------------------
    def _open_bus(self) -> None:
        """(Re-)open: close what we had, then open or take the bus."""
        self._close_bus()
        self._bus, self._owns_bus = open_bus(self.bus, self._bus_factory)
        self._no_answer = 0

    def _close_bus(self) -> None:
        """Release the bus if we opened it. Safe to call twice."""
        bus, self._bus = self._bus, None
        if bus is not None and self._owns_bus:
            try:
                bus.close()
            except OSError:
                pass

    def _need_bus(self) -> Any:
        if self._bus is None:
            raise DeviceGone(f"{self.name} is not open")
        return self._bus

    # -- transfers --------------------------------------------------------------------
    def _rdwr(self, msg: i2c_msg) -> None:
        """One transfer (START ... STOP); OSErrors pass through (see :meth:`_errors`)."""
        self._need_bus().i2c_rdwr(msg)

    def _write(self, data: bytes) -> None:
        self._rdwr(i2c_msg.write(self.address, data))

    def _read(self, n: int) -> bytes:
        msg = i2c_msg.read(self.address, n)
        self._rdwr(msg)
        return bytes(msg)

    def _write_read(self, data: bytes, delay_s: float = 0.0, read_len: int = 0) -> bytes:
        """Write ``data`` (STOP), wait ``delay_s``, then read ``read_len`` bytes separately."""
        self._write(data)
        if delay_s:
            self._sleep(delay_s)
        return self._read(read_len) if read_len else b""

    def _check_chip_id(self, register: int, expected: int, *, label: str = "chip id",
                       article: str = "a", names: Mapping[int, str] | None = None,
                       mask: int = 0xFF, wrong: Callable[[int], str] | None = None) -> int:
        """On open: the id in ``register`` (a NACK: nothing answers there, gone at once),
        which must hold ``expected`` in the bits of ``mask``, else :class:`WrongChip` says
        what answers: "<label> 0x58 is BMP280, not a BME280 (0x60)", the chip named by
        ``names`` (id -> "an MPU-6500"), or ``wrong(id)`` when given."""
        with self._errors("open", gone_on_nack=True):
            value: int = self._need_bus().read_byte_data(self.address, register)
        if value & mask == expected & mask:
            return value
        what = (names or {}).get(value, "an unknown chip")
        detail = wrong(value) if wrong else (f"{label} 0x{value:02x} is {what}, not {article} "
                                             f"{self.chip} (0x{expected:02x})")
        raise WrongChip(f"{self.name}: {detail}")

    def _read_retrying(self, n: int) -> bytes:
        """Read; a NACK means "not ready yet" (still measuring or ranging, a slow chip, a low
        supply): counted, wait :attr:`RETRY_WAIT_S` and try again, :attr:`READ_RETRIES` times."""
        for attempt in range(self.READ_RETRIES + 1):
            try:
                return self._read(n)
            except OSError as exc:
                if not self._is_nack(exc) or attempt == self.READ_RETRIES:
                    raise
                self.counters["nacks"] += 1
                self._sleep(self.RETRY_WAIT_S)
        raise AssertionError("unreachable")

    # -- errors -----------------------------------------------------------------------
    def _is_nack(self, exc: OSError) -> bool:
        return exc.errno in self.NACK_ERRNOS

    def _is_gone(self, exc: OSError) -> bool:
        if self.GONE_ERRNOS is None:
            return not self._is_nack(exc)
        return exc.errno in self.GONE_ERRNOS

    def _escalate(self, limit: int, message: str, cause: BaseException | None) -> None:
        """After ``limit`` failures in a row (counted in ``_no_answer``): start the count
        again and raise :class:`DeviceGone` with ``message`` (from ``cause``)."""
        if self._no_answer >= limit:
            self._no_answer = 0
            raise DeviceGone(message) from cause

    def _decode(self, decode: Callable[[bytes], Any], raw: bytes) -> Any:
        """``decode(raw)``, counting a :class:`CRCError` (which is then raised)."""
        try:
            return decode(raw)
        except CRCError:
            self.counters["crc_errors"] += 1
            raise

    def _errors(self, what: str, *, gone_on_nack: bool = False) -> I2CErrors:
        return I2CErrors(self, what, gone_on_nack)


class I2CErrors:
    """Context manager turning smbus2 and CRC exceptions into DeviceError/DeviceGone.

    ``dev`` is an :class:`I2CDevice` whose ``counters`` include ``crc_errors``,
    ``nacks`` and ``bus_errors``. A transfer that got no answer (NACK, bus
    error) counts towards ``gone_after`` failures in a row, which make a
    :class:`DeviceGone`; ``gone_on_nack`` makes the first one do so (used on
    open: nothing answers at that address). A vanished bus (ENODEV...) is gone
    at once; a CRC error is a :class:`DeviceError` and shows the chip is there.
    Success resets the count. Other exceptions pass through.
    """

    def __init__(self, dev: I2CDevice, what: str, gone_on_nack: bool = False) -> None:
        self.dev, self.what, self.gone_on_nack = dev, what, gone_on_nack

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        dev = self.dev
        if exc is None:
            dev._no_answer = 0
            return False
        if isinstance(exc, CRCError):
            dev._no_answer = 0  # it answered, garbled
            dev.counters["crc_errors"] += 1
            raise DeviceError(f"{dev.name}: {self.what}: {exc}") from exc
        if isinstance(exc, OSError):
            if dev._is_gone(exc):
                dev.close()  # type: ignore[attr-defined]
                raise DeviceGone(f"{dev.name}: {self.what}: {exc}") from exc
            nacked = dev._is_nack(exc)
            dev.counters["nacks" if nacked else "bus_errors"] += 1
            dev._no_answer += 1
            detail = exc.strerror or exc
            dev._escalate(1 if nacked and self.gone_on_nack else dev.gone_after,
                          f"{dev.name}: {self.what}: no answer ({detail})", exc)
            raise DeviceError(f"{dev.name}: {self.what}: {detail}") from exc
        return False


class PolledChip(I2CDevice, ABC):
    """A chip set up when the bus opens (:meth:`_setup`) and read for ``quantities``, some of
    its :attr:`QUANTITIES`, every ``read_interval_s``."""

    QUANTITIES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bus: Any, *, address: int, read_interval_s: float,
                 quantities: tuple[str, ...], counters: Iterable[str],
                 **options: Unpack[BusOptions]) -> None:
        unknown = set(quantities) - set(self.QUANTITIES)
        if unknown or not quantities:
            raise ValueError(f"{self.chip} quantities are {self.QUANTITIES}, got {quantities}")
        if read_interval_s <= 0 or options.get("gone_after", GONE_AFTER) < 1:
            raise ValueError("read_interval_s must be positive and gone_after at least 1")
        super().__init__(bus, address=address, counters=counters, **options)
        self.read_interval_s = read_interval_s
        self.quantities = tuple(quantities)

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Open the bus and set the chip up (:meth:`_setup`); a failure closes it again."""
        self._open_bus()
        try:
            self._setup()
        except DeviceError:
            self.close()
            raise
        self._no_answer = 0

    def close(self) -> None:
        self._close_bus()

    @property
    def warming_up(self) -> bool:
        return False  # ready a few ms after power-up, or after the measure/wake write

    @abstractmethod
    def _setup(self) -> None:
        """Chip-specific start-up on open (check, reset, configuration, calibration)."""


class SingleShotDevice(PolledChip):
    """An I2C chip that measures when asked: :meth:`poll` calls :meth:`measure` every
    ``read_interval_s`` and reports the measurement's attributes named in ``quantities``.

    Subclasses set :attr:`QUANTITIES` and implement :meth:`_setup` (after the bus is
    open: check, reset and configure the chip) and :meth:`measure`; :meth:`_fault` says
    which measurements the chip itself marks as faulty (a saturated count).
    """

    _next_read = 0.0  # clock time the next measurement is due

    def open(self) -> None:
        super().open()
        self._next_read = self._clock()

    # -- sampling ---------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Measure when a reading is due, else wait a little (at most 0.25 s)."""
        self._need_bus()
        now = self._clock()
        if now < self._next_read:
            self._sleep(min(self._next_read - now, IDLE_WAIT_S))
            return []
        self._next_read += self.read_interval_s
        if self._next_read <= now:  # late (errors, a slow bus): no burst to catch up
            self._next_read = now + self.read_interval_s
        m = self.measure()
        return [Reading({q: float(getattr(m, q)) for q in self.quantities},
                        self._clock(), self._wall(), fault=self._fault(m))]

    @abstractmethod
    def measure(self) -> Any:
        """One measurement; its attributes are the quantities."""

    def _fault(self, measurement: Any) -> bool:
        """Whether the reading of ``measurement`` is marked ``fault`` (none by default)."""
        return False


def bus_for(cfg: Any, chip: Callable[[], Any]) -> Any:
    """The bus a configured driver gets: its bus number, or for ``bus = "emulator"`` the
    shared emulated bus with ``chip()`` attached at the configured address (once) and the
    configured ``emulator_faults`` applied."""
    if cfg.bus != "emulator":
        return cfg.bus
    from .emulation.i2c import parse_i2c_faults, shared_bus

    bus = shared_bus()
    if cfg.address not in bus.devices:
        bus.attach(cfg.address, chip())
        if cfg.emulator_faults:
            bus.fault(cfg.address, **parse_i2c_faults(cfg.emulator_faults))
    return bus


def read_register(bus: Any, addr: int, reg: int) -> int | None:
    """One register byte, or None when the address did not answer (for identification)."""
    try:
        return bus.read_byte_data(addr, reg)
    except OSError:
        return None
