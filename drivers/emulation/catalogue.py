"""Every catalogued device on its emulator: the sample configuration from its README
(:mod:`drivers.readme`), moved onto emulated hardware (``citynode simulate --site
catalogue``, the conformance tests).

How a configured device is emulated depends only on its bus: an I2C chip goes on the
shared emulated bus (``bus = "emulator"``, at an address no other chip took), a serial
device gets its spec's emulator behind a pseudo-terminal (``port`` = the pty), a GPIO device
gets gpiozero's mock pins (``pins = "emulator"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..spec import DeviceSpec


@dataclass
class EmulatedSite:
    """Sensor tables on emulated hardware, and the serial emulators behind their ports."""

    tables: list[dict[str, Any]] = field(default_factory=list)
    emulators: list[Any] = field(default_factory=list)
    _addresses: set[int] = field(default_factory=set)

    def add(self, spec: DeviceSpec, table: dict[str, Any], workdir: Path,
            **emulator_options: Any) -> dict[str, Any]:
        """Put one sensor on emulated hardware; returns its (changed) table."""
        table = dict(table, type=spec.type)
        fields = {f.name for f in msgspec.structs.fields(spec.config)}
        if spec.bus == "i2c":
            # The addresses fewest catalogued chips can take first, so that a chip with one
            # address finds it free (the LTR390's only 0x53 is one of the ADXL345's two).
            from .. import catalogue

            shared = [a for s in catalogue.specs().values() for a in s.addresses]
            free = sorted((a for a in spec.addresses if a not in self._addresses),
                          key=shared.count)
            if not free:
                raise ValueError(f"{spec.type}: every address of the chip is taken on the "
                                 "emulated bus")
            table.update(bus="emulator", address=free[0])
            self._addresses.add(free[0])
        elif spec.bus == "uart":
            from .pty import SerialEmulator

            if spec.emulator is None:
                raise ValueError(f"{spec.type}: the spec names no emulator")
            cfg = msgspec.convert({**table, "port": "/dev/null"}, spec.config)
            emu = SerialEmulator(spec.emulator(cfg), workdir / "dev" / table["name"],
                                 **emulator_options)
            emu.start()
            self.emulators.append(emu)
            table["port"] = emu.path
        if "pins" in fields:
            table["pins"] = "emulator"
        self.tables.append(table)
        return table

    def stop(self) -> None:
        for emu in self.emulators:
            emu.stop()
        self.emulators.clear()
