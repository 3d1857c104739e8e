"""The I2CXL-MaxSonar itself, emulated: the chip's side of the I2C protocol, no I/O.

Attach :class:`I2CXLModel` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> bus = FakeBus({0x70: I2CXLModel(lambda now: 1234.0)})   # 1.234 m

Behaviour (sensor-protocols.md section 8.4):

* a write of 0x51 starts ranging: for ``ranging_time_s`` (80 ms) every transfer is
  NACKed (the chip ignores I2C while ranging); the distance is taken from the source
  when the command arrives;
* a 2-byte read returns the last range, high byte first, in cm, rounded and clamped to
  ``min_cm``..``max_cm`` (20..765); "no echo" (the source returns None) reads ``max_cm``
  (an assumption, see the codec);
* before any range command a read returns ``part_info`` (the datasheet's "two part info
  bytes"; their values are not documented, 00 00 here);
* ``AA A5 <8-bit address>`` changes the address (odd -> even; 0, 80, 164, 170 ignored);
  with ``bus``/``address`` set (:meth:`attach_to`) the model moves itself on the bus;
* an empty write (address probe) is acknowledged; any other write is ignored and counted.

A *distance source* is a callable ``source(now) -> float | None``: the true distance in
millimetres at monotonic time ``now``, or None for no echo (the scripted scenes in
:mod:`drivers.emulation.scenes` have this interface). :func:`constant_distance` makes one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from ..emulation.i2c import Nack
from .codec import (
    ADDRESS,
    CHANGE_ADDRESS,
    INVALID_ADDRESSES_8BIT,
    MAX_CM,
    MIN_CM,
    RANGE_COMMAND,
    RANGING_TIME_S,
    encode_range,
)

DistanceSource = Callable[[float], float | None]

__all__ = ["DistanceSource", "I2CXLModel", "Ranged", "constant_distance"]


def constant_distance(mm: float | None) -> DistanceSource:
    """A distance source that always returns ``mm`` (None: never an echo)."""
    def source(now: float) -> float | None:
        return mm
    return source


@dataclass(frozen=True, slots=True)
class Ranged:
    """One range the model measured: when, what it will send (cm) and the truth (mm)."""

    t: float
    cm: int
    truth_mm: float | None


class I2CXLModel:
    """Device side of an I2CXL-MaxSonar-EZ (implements ``I2CModel``)."""

    def __init__(self, source: DistanceSource | float | None = None, *,
                 ranging_time_s: float = RANGING_TIME_S, min_cm: int = MIN_CM,
                 max_cm: int = MAX_CM, part_info: bytes = b"\x00\x00",
                 keep: int = 1000) -> None:
        if source is None or isinstance(source, int | float):
            source = constant_distance(1000.0 if source is None else float(source))
        self.source: DistanceSource = source
        self.ranging_time_s = ranging_time_s
        self.min_cm, self.max_cm = min_cm, max_cm
        self.part_info = bytes(part_info)
        self.measured: deque[Ranged] = deque(maxlen=keep)
        self.stats = {"transfers": 0, "ranges": 0, "nacks": 0, "bad_commands": 0,
                      "address_changes": 0}
        self.bus: Any = None
        self.address = ADDRESS
        self._busy_until = float("-inf")
        self._reply = self.part_info

    def attach_to(self, bus: Any, address: int = ADDRESS) -> I2CXLModel:
        """Put the model on ``bus`` (a FakeBus) so an address change moves it there."""
        self.bus, self.address = bus, address
        bus.attach(address, self)
        return self

    # -- I2CModel ---------------------------------------------------------------------
    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        self.stats["transfers"] += 1
        if now < self._busy_until:
            self._nack()  # ranging: I2C is ignored
        out: list[bytes] = []
        for kind, val in parts:
            if now < self._busy_until:
                self._nack()  # a read after a range command in the same transaction
            if kind == "w":
                self._write(bytes(val), now)  # type: ignore[arg-type]
            else:
                n = int(val)  # type: ignore[arg-type]
                out.append((self._reply + b"\x00" * n)[:n])
        return out

    def power_cycle(self) -> None:
        """Supply cut and restored: no range yet, reads give the part info bytes."""
        self._busy_until = float("-inf")
        self._reply = self.part_info

    # -- internals ----------------------------------------------------------------------
    def _nack(self) -> NoReturn:
        self.stats["nacks"] += 1
        raise Nack()

    def _write(self, data: bytes, now: float) -> None:
        if not data:
            return  # address probe
        if data == bytes([RANGE_COMMAND]):
            self._range(now)
        elif len(data) == 3 and data[:2] == CHANGE_ADDRESS:
            self._change_address(data[2])
        else:
            self.stats["bad_commands"] += 1

    def _range(self, now: float) -> None:
        truth = self.source(now)
        if truth is None:
            cm = self.max_cm
        else:
            cm = max(self.min_cm, min(self.max_cm, round(truth / 10.0)))
        self.stats["ranges"] += 1
        self.measured.append(Ranged(now, cm, truth))
        self._reply = encode_range(cm)
        self._busy_until = now + self.ranging_time_s

    def _change_address(self, eight: int) -> None:
        eight &= 0xFE
        if eight in INVALID_ADDRESSES_8BIT:
            return
        new = eight >> 1
        self.stats["address_changes"] += 1
        if self.bus is not None and new != self.address:
            # Called under the bus's lock: edit its table directly.
            if self.bus.devices.get(self.address) is self:
                del self.bus.devices[self.address]
            self.bus.devices[new] = self
        self.address = new
