"""Check 2: scan each configured I2C bus and identify the chips by their specs' probes."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .base import FAIL, OK, WARN, Check
from .hints import (
    HINT_I2C_EXTRA,
    HINT_I2C_KERNEL,
    HINT_I2C_MISSING,
    HINT_I2C_OFF,
    HINT_I2C_PERM,
    HINT_I2C_UNKNOWN,
    HINT_I2C_WRONG,
)

if TYPE_CHECKING:
    from agent.core.config import Config
    from drivers.spec import Ident, Identify

# -- 2. I2C ----------------------------------------------------------------------------------
FIRST_ADDRESS, LAST_ADDRESS = 0x03, 0x77
#: Where i2cdetect's default mode reads instead of writing (EEPROMs, write-protect latches).
READ_PROBE = frozenset([*range(0x30, 0x38), *range(0x50, 0x60)])
#: errno values of an address nobody acknowledged (121 on a Pi; some adapters say ENXIO/EIO).
ABSENT_ERRNOS = frozenset({errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT,
                           errno.EAGAIN})
def probe_address(bus: Any, addr: int) -> str:
    """``"ack"``, ``"absent"`` or ``"busy"`` (a kernel driver owns it: i2cdetect's UU).

    Like ``i2cdetect``'s default mode: a quick write (START, address, STOP), except
    in the EEPROM ranges where a one-byte read is safer.
    """
    from smbus2 import i2c_msg

    try:
        if addr in READ_PROBE:
            bus.read_byte(addr)
        elif callable(getattr(bus, "write_quick", None)):
            bus.write_quick(addr)
        else:
            bus.i2c_rdwr(i2c_msg.write(addr, b""))
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return "busy"
        if exc.errno in ABSENT_ERRNOS:
            return "absent"
        raise
    return "ack"


def scan_bus(bus: Any, first: int = FIRST_ADDRESS, last: int = LAST_ADDRESS) -> dict[int, str]:
    """Every address that answered: ``{addr: "ack" | "busy"}``."""
    found: dict[int, str] = {}
    for addr in range(first, last + 1):
        state = probe_address(bus, addr)
        if state != "absent":
            found[addr] = state
    return found


def signatures() -> dict[int, list[Identify]]:
    """Identification probes by address, from every device's spec: register reads (harmless
    to anything) before commands."""
    from drivers import catalogue

    out: dict[int, list[Identify]] = {}
    ordered = sorted(catalogue.specs().values(), key=lambda s: s.identify_by_command)
    for spec in ordered:
        if spec.identify is None:
            continue
        for addr in spec.addresses:
            if spec.identify not in out.setdefault(addr, []):
                out[addr].append(spec.identify)
    return out


def identify(bus: Any, addr: int, sleep: Callable[[float], None] = time.sleep) -> Ident:
    """The chip at ``addr`` by its id register or command, where it has one."""
    first: Ident | None = None
    for probe in signatures().get(addr, ()):
        got = probe(bus, addr, sleep)
        if got is None:
            continue
        if got.chip is not None:
            return got
        first = first or got
    if first is not None:
        return first
    from drivers.spec import Ident

    return Ident(None, "no id register known at this address")


def check_i2c_bus(label: str, bus: Any, expected: dict[int, tuple[str, str | None]],
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[Check]:
    """Scan ``bus`` and compare it with ``expected`` (``{addr: (sensor name, chip)}``)."""
    found = scan_bus(bus)
    listed = ", ".join(f"0x{a:02x}" + (" (UU)" if s == "busy" else "") for a, s in found.items())
    yield Check("i2c", label, OK, f"scanned 0x{FIRST_ADDRESS:02x}-0x{LAST_ADDRESS:02x}: "
                + (f"{len(found)} device(s) at {listed}" if found else "no device answers"))
    idents = {a: identify(bus, a, sleep) for a, s in found.items() if s == "ack"}
    for addr, (name, chip) in sorted(expected.items()):
        target = f"{label} 0x{addr:02x} ({name})"
        state = found.get(addr)
        if state is None:
            elsewhere = [a for a, i in idents.items() if chip and i.chip == chip
                         and a not in expected]
            hint = (f"a {chip} answers at 0x{elsewhere[0]:02x}: set sensor.address = "
                    f"0x{elsewhere[0]:02x} or change the address jumper" if elsewhere
                    else HINT_I2C_MISSING)
            yield Check("i2c", target, FAIL, f"expected {chip or 'device'}: no answer", hint)
        elif state == "busy":
            yield Check("i2c", target, FAIL, "address in use by a kernel driver (UU)",
                        HINT_I2C_KERNEL)
        elif chip is None:
            yield Check("i2c", target, OK, "answers (this chip has no id register)")
        elif idents[addr].chip == chip:
            yield Check("i2c", target, OK, f"{chip} ({idents[addr].evidence})")
        elif idents[addr].chip is not None:
            yield Check("i2c", target, FAIL, f"found {idents[addr].chip} "
                        f"({idents[addr].evidence}), expected {chip}", HINT_I2C_WRONG)
        else:
            yield Check("i2c", target, FAIL, f"answers but is not a {chip} "
                        f"({idents[addr].evidence})", HINT_I2C_UNKNOWN)
    for addr, state in found.items():
        if addr in expected:
            continue
        what = ("in use by a kernel driver (UU)" if state == "busy"
                else idents[addr].chip or f"unidentified ({idents[addr].evidence})")
        yield Check("i2c", f"{label} 0x{addr:02x}", WARN, f"unexpected device: {what}",
                    HINT_I2C_EXTRA)


def open_i2c_bus(bus: int | str, cfg: Config) -> Any:
    """The bus the daemon would use: ``/dev/i2c-N`` through smbus2, or for ``"emulator"``
    the agent's shared emulated bus with the configured chips attached as the daemon
    attaches them (agent.core.sensors)."""
    if bus == "emulator":
        from agent.core.sensors import build_device
        from drivers.emulation.i2c import shared_bus

        for s in cfg.sensor:
            if getattr(s, "bus", None) == "emulator":
                build_device(s)  # attaches the emulated chip if the address is free
        return shared_bus()
    from smbus2 import SMBus

    return SMBus(bus)


def check_i2c(cfg: Config, *, open_bus: Callable[[int | str, Config], Any] = open_i2c_bus,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[Check]:
    """One scan per configured bus."""
    from drivers.catalogue import spec_of

    buses: dict[int | str, dict[int, tuple[str, str | None]]] = {}
    for s in cfg.sensor:
        if spec_of(s).bus == "i2c":
            buses.setdefault(s.bus, {})[s.address] = (s.name, spec_of(s).chip)
    for bus, expected in buses.items():
        label = "emulator" if bus == "emulator" else f"/dev/i2c-{bus}"
        names = ", ".join(n for n, _ in expected.values())
        try:
            handle = open_bus(bus, cfg)
        except FileNotFoundError:
            yield Check("i2c", label, FAIL, f"does not exist (needed by {names})", HINT_I2C_OFF)
            continue
        except PermissionError:
            yield Check("i2c", label, FAIL, f"permission denied (needed by {names})",
                        HINT_I2C_PERM)
            continue
        except OSError as exc:
            yield Check("i2c", label, FAIL, f"cannot open: {exc} (needed by {names})",
                        HINT_I2C_OFF)
            continue
        try:
            yield from check_i2c_bus(label, handle, expected, sleep)
        finally:
            if bus != "emulator":
                handle.close()
