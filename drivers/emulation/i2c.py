"""An I2C bus with smbus2's interface, behind which device models answer.

The Pi's kernel is not here, so drivers get their bus by dependency injection:
``smbus2.SMBus(1)`` on a node, :class:`FakeBus` in tests and in ``citynode
simulate``. The fake behaves like the hardware where it matters to a driver:

* an address with no device, or a device that refuses a transfer, raises
  ``OSError(121, "Remote I/O error")`` - exactly a NACK on a Pi;
* a combined write-then-read (repeated start) reaches the model as one
  transaction, so a model of a chip that rejects repeated starts (the SPS30)
  can NACK it, and a driver that needs two separate transfers must do so;
* clock stretching: a model may ask the bus to hold the transfer for a while
  (``stretch_s``), which the bus turns into elapsed time;
* faults per address: NACKs at random, corrupted read bytes, a device that has
  stopped answering (``detach``);
* every transfer can be logged as ``ADDR W|R HEX`` lines, the capture format
  ``citynode frames`` decodes for I2C devices.
"""

from __future__ import annotations

import errno
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from smbus2 import i2c_msg

from ..i2ccapture import parse_line

I2C_M_RD = 0x0001


class Nack(Exception):
    """Raised by a model to NACK a transfer; the bus turns it into OSError 121."""


@runtime_checkable
class I2CModel(Protocol):
    """The device side of an I2C chip, with the clock passed in.

    ``transfer`` receives the parts of one transaction (START ... STOP): each a
    ``("w", data)`` or ``("r", length)``; it returns the bytes of every read part,
    in order, or raises :class:`Nack`. ``stretch_s`` (optional attribute) is how
    long the chip stretched the clock during the last transfer.
    """

    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]: ...


def nack(addr: int) -> OSError:
    return OSError(errno.EREMOTEIO, f"Remote I/O error (no ACK from 0x{addr:02x})")


@dataclass
class Faults:
    """Fault injection for one address."""

    nack: float = 0.0  # probability a transfer is NACKed
    flip: float = 0.0  # probability a read byte has one bit flipped
    detached: bool = False  # the chip stopped answering (brown-out, cable)
    # From this bus-clock time on the chip holds SCL low: every transfer on the bus
    # blocks, as a real bus does until power-cycled (a hung sampling loop upstream).
    stuck_at: float | None = None


FAULT_SPEC_KEYS = ("nack", "flip", "detached", "stuck_after")


def parse_i2c_faults(spec: str) -> dict[str, float]:
    """``"nack=0.05,flip=0.01,detached=1,stuck_after=30"`` -> checked values.

    ``stuck_after`` is seconds after the chip is attached; rates are 0..1."""
    out: dict[str, float] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, sep, val = item.partition("=")
        if not sep or key not in FAULT_SPEC_KEYS:
            raise ValueError(f"{item!r}: expected one of {', '.join(FAULT_SPEC_KEYS)}=VALUE")
        try:
            v = float(val)
        except ValueError:
            raise ValueError(f"{item!r}: {val!r} is not a number") from None
        if key in ("nack", "flip") and not 0 <= v <= 1:
            raise ValueError(f"{item!r}: a rate between 0 and 1")
        if key == "stuck_after" and not 0 <= v <= 7 * 86400:
            raise ValueError(f"{item!r}: seconds between 0 and 604800")
        if key == "detached" and v not in (0, 1):
            raise ValueError(f"{item!r}: 0 or 1")
        out[key] = v
    return out


class FakeBus:
    """The subset of ``smbus2.SMBus`` citynode's drivers use, over device models."""

    def __init__(self, devices: dict[int, I2CModel] | None = None, *, seed: int | None = 0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.devices: dict[int, I2CModel] = dict(devices or {})
        self.faults: dict[int, Faults] = {}
        self.log: list[str] | None = None
        self.transfers = 0
        self.nacks = 0
        self._rng = random.Random(seed)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.fd = None  # like smbus2: opened lazily; here always usable

    # -- set-up ------------------------------------------------------------------------
    def attach(self, addr: int, model: I2CModel) -> None:
        self.devices[addr] = model

    def fault(self, addr: int, **kw: float | bool) -> Faults:
        f = self.faults.setdefault(addr, Faults())
        if "stuck_after" in kw:
            f.stuck_at = self._clock() + float(kw.pop("stuck_after"))
        for k, v in kw.items():
            if not hasattr(f, k):
                raise ValueError(f"unknown I2C fault {k!r}")
            setattr(f, k, v)
        return f

    def start_log(self) -> list[str]:
        self.log = []
        return self.log

    # -- the core ------------------------------------------------------------------------
    def _transfer(self, addr: int, parts: list[tuple[str, bytes | int]]) -> list[bytes]:
        while any(f.stuck_at is not None and self._clock() >= f.stuck_at
                  for f in list(self.faults.values())):
            self._sleep(0.05)  # SCL held low: nothing moves on this bus
        with self._lock:
            self.transfers += 1
            model = self.devices.get(addr)
            f = self.faults.get(addr)
            if model is None or (f and (f.detached or self._rng.random() < f.nack)):
                self.nacks += 1
                self._record(addr, parts, None)
                raise nack(addr)
            try:
                out = model.transfer(parts, self._clock())
            except Nack:
                self.nacks += 1
                self._record(addr, parts, None)
                raise nack(addr) from None
            stretch = getattr(model, "stretch_s", 0.0)
            if f and f.flip:
                out = [self._flip(b, f.flip) for b in out]
            self._record(addr, parts, out)
        if stretch:
            self._sleep(stretch)
        return out

    def _flip(self, data: bytes, p: float) -> bytes:
        b = bytearray(data)
        for i in range(len(b)):
            if self._rng.random() < p:
                b[i] ^= 1 << self._rng.randrange(8)
        return bytes(b)

    def _record(self, addr: int, parts, out: list[bytes] | None) -> None:
        if self.log is None:
            return
        reads = iter(out or [])
        for kind, val in parts:
            if kind == "w":
                self.log.append(f"{addr:02x} W {bytes(val).hex(' ')}")
            else:
                data = next(reads, b"")
                self.log.append(f"{addr:02x} R {data.hex(' ')}" if out is not None
                                else f"{addr:02x} R NACK")

    # -- smbus2's interface ------------------------------------------------------------
    def i2c_rdwr(self, *msgs: i2c_msg) -> None:
        """Messages in one call form one transaction (repeated starts between them)."""
        parts: list[tuple[str, bytes | int]] = []
        addr = msgs[0].addr
        for m in msgs:
            if m.addr != addr:
                raise ValueError("one i2c_rdwr call per address in this fake")
            if m.flags & I2C_M_RD:
                parts.append(("r", m.len))
            else:
                parts.append(("w", bytes(m)))
        reads = iter(self._transfer(addr, parts))
        for m in msgs:
            if m.flags & I2C_M_RD:
                data = next(reads)
                if len(data) != m.len:
                    raise OSError(errno.EIO, f"short read from 0x{addr:02x}")
                for i, byte in enumerate(data):
                    m.buf[i] = bytes([byte])  # a ctypes char array, as smbus2 allocates

    def write_byte(self, addr: int, value: int, force: bool | None = None) -> None:
        self._transfer(addr, [("w", bytes([value]))])

    def read_byte(self, addr: int, force: bool | None = None) -> int:
        return self._transfer(addr, [("r", 1)])[0][0]

    def write_byte_data(self, addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._transfer(addr, [("w", bytes([register, value]))])

    def read_byte_data(self, addr: int, register: int, force: bool | None = None) -> int:
        return self._transfer(addr, [("w", bytes([register])), ("r", 1)])[0][0]

    def write_i2c_block_data(self, addr: int, register: int, data: Iterable[int],
                             force: bool | None = None) -> None:
        self._transfer(addr, [("w", bytes([register, *data]))])

    def read_i2c_block_data(self, addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        if not 0 < length <= 32:
            raise ValueError("SMBus block reads are limited to 32 bytes")
        return list(self._transfer(addr, [("w", bytes([register])), ("r", length)])[0])

    def close(self) -> None:
        """Nothing to release; present because drivers close their bus."""

    def __enter__(self) -> FakeBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_capture(lines: Iterable[str]) -> list[tuple[int, str, bytes | None]]:
    """Read ``ADDR W|R HEX`` capture lines (``R NACK`` for a refused read)."""
    out: list[tuple[int, str, bytes | None]] = []
    for no, raw in enumerate(lines, 1):
        try:
            record = parse_line(raw)
        except ValueError as exc:
            raise ValueError(f"line {no}: {exc}") from None
        if record is not None:
            out.append(record)
    return out


_shared: FakeBus | None = None
_shared_lock = threading.Lock()


def shared_bus() -> FakeBus:
    """The one emulated bus of this process: every sensor configured with
    ``bus = "emulator"`` puts its chip here (the kernel has no I2C stub to put them behind)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FakeBus(seed=None)
        return _shared
