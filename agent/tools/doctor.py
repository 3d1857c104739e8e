"""``citynode doctor``: what the configuration expects against what is actually there.

Field installers run it on site after wiring a node (and it runs against the
emulators too). It never changes the configuration and never switches a load: it
parses the configuration, scans the I2C buses and identifies the chips, listens
to every serial sensor through the daemon's own drivers and codecs, claims the
GPIO pins the way the daemon would, connects to the broker, and looks at the
clock, the disk and the journal. The result is one table, one row per finding,
with a fix for every WARN and FAIL (docs/doctor.md lists them all).

Every check runs on its own thread with its own time limit: a hung port or an
unreachable broker costs its own row, never the run. An unexpected exception in
a check becomes a FAIL row carrying the exception text.

Exit codes: 0 nothing failed, 1 a check failed, 78 (EX_CONFIG) the configuration
itself is invalid (the daemon would refuse to start).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent.core.config import EX_CONFIG, Config, ConfigError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CHECKS = ("config", "i2c", "serial", "gpio", "broker", "clock", "disk", "journal")
DEFAULT_LISTEN_S = 3.0
CONNECT_TIMEOUT_S = 5.0
CERT_WARN_DAYS = 30
MIN_YEAR = 2024


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: which check, on what, the verdict, why, and (WARN/FAIL) the fix."""

    name: str
    target: str
    status: str
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# -- fix hints (docs/doctor.md quotes these) ------------------------------------------------
HINT_CONFIG = "fix the key named above (README.md has the configuration reference), then " \
              "run `citynode config check FILE`"
HINT_I2C_OFF = "enable I2C: dtparam=i2c_arm=on in /boot/firmware/config.txt (or raspi-config " \
               "> Interface Options > I2C), then reboot"
HINT_I2C_PERM = "add the service user to the i2c group: sudo usermod -aG i2c citynode"
HINT_I2C_MISSING = "check the wiring (SDA GPIO2, SCL GPIO3, 3.3 V, GND), the address " \
                   "jumper/pin and that I2C is on (dtparam=i2c_arm=on)"
HINT_I2C_WRONG = "a different chip is fitted at this address: fit the configured part, or " \
                 "change sensor.type to what is there"
HINT_I2C_UNKNOWN = "the device answers but not as this chip does: check the part number " \
                   "and that no other chip shares the address"
HINT_I2C_KERNEL = "a kernel driver owns this address: remove the dtoverlay that binds it " \
                  "(e.g. dtoverlay=i2c-sensor,...) from config.txt and reboot"
HINT_I2C_EXTRA = "not in the configuration: add a [[sensor]] for it, or ignore it if it " \
                 "belongs to a HAT (EEPROM, RTC)"
HINT_PORT_MISSING = "check the udev name (ls -l /dev/serial* /dev/ttyUSB*), enable the UART " \
                    "(enable_uart=1 in config.txt) and turn the serial console off " \
                    "(raspi-config > Interface Options > Serial Port)"
HINT_PORT_PERM = "add the service user to the dialout group: sudo usermod -aG dialout citynode " \
                 "(log in again to take effect)"
HINT_PORT_BUSY = "another program holds the port: stop the daemon (systemctl stop citynode) " \
                 "or the serial console getty, then run doctor again"
HINT_PORT_GONE = "the port vanished while listening: loose USB adapter or cable, or power " \
                 "brown-out"
HINT_SILENT = "nothing arrives: check the wiring (sensor TX to Pi RX GPIO15, sensor RX to " \
              "Pi TX GPIO14, crossed) and the sensor's power"
HINT_GARBAGE = "bytes arrive but never a valid frame: wrong baud rate or wrong device type " \
               "(is it really this sensor?); capture and inspect with `citynode frames`"
HINT_CHECKSUM = "some frames are corrupt: loose connector, long or unshielded cable, missing " \
                "common ground, or a weak power supply"
HINT_NO_DATA = "the sensor answers commands but sent no measurement yet: it may still be " \
               "spinning up; run again with a longer --listen-s"
SILENT_EXTRA = {
    "pms5003": "; the PMS5003 needs 5 V for its fan (3.3 V logic)",
    "sds011": "; the SDS011 needs 5 V",
    "pzem004t": "; the PZEM-004T is powered from the mains side: no AC voltage, no answer; "
                "check sensor.address (its Modbus address)",
    "cse7766": "; the CSE7766 runs at 4800 8E1 and only streams with mains connected",
}
HINT_GPIO_NONE = "no GPIO on this machine: on a Pi install python3-lgpio (or pip install " \
                 "lgpio); elsewhere use pins = \"emulator\" or GPIOZERO_PIN_FACTORY=mock"
HINT_GPIO_BUSY = "the pin is held by another program (a running citynode: systemctl stop " \
                 "citynode), a dtoverlay or a kernel driver; or choose a free GPIO"
HINT_GPIO_CLASH = "give each use its own GPIO in the configuration"
HINT_LOCAL = "set mqtt.host (and port) to send data to the platform"
HINT_DNS = "check mqtt.host for typos and the node's DNS (/etc/resolv.conf)"
HINT_REFUSED = "nothing listens there: check mqtt.port, that the broker runs, and firewalls"
HINT_TIMEOUT = "no answer: check the network route, firewalls and mqtt.host"
HINT_TLS_VERIFY = "the broker's certificate is not trusted: check mqtt.ca_file (the CA that " \
                  "signed it), mqtt.server_name (a name the certificate lists) and the clock"
HINT_TLS_FAIL = "the TLS handshake failed: is this a TLS port (usually 8883)? a client " \
                "certificate may be required (mqtt.cert_file, mqtt.key_file)"
HINT_CERT_EXPIRY = "renew the broker's certificate before it expires"
HINT_AUTH = "the broker refused this node: check mqtt.credentials_file, the client " \
            "certificate and the broker's ACL for this client"
HINT_NO_CONNACK = "the broker accepted TCP but did not answer CONNECT: is this an MQTT port?"
HINT_NTP = "check the network and the time service (timedatectl timesync-status; " \
           "systemctl status systemd-timesyncd)"
HINT_YEAR = "the clock is wrong (the Pi has no battery clock): TLS certificates and " \
            "timestamps fail until NTP sets it; connect the network and wait for NTP"
HINT_DISK_FULL = "free space on this filesystem or lower spool.max_bytes: a full disk loses " \
                 "the backlog during a broker outage"
HINT_JOURNAL = "under systemd, stderr still reaches the journal; elsewhere redirect it, or " \
               "set log.target = \"stderr\" to say so"


# -- running checks ------------------------------------------------------------------------
@dataclass
class Task:
    """A check to run on its own thread: rows from ``run``, within ``timeout_s``."""

    name: str
    target: str
    run: Callable[[], Iterable[Check]]
    timeout_s: float


def run_tasks(tasks: Sequence[Task]) -> list[Check]:
    """Run every task concurrently; rows come back in task order.

    A task that overruns its time limit keeps the rows it had produced and gets a
    FAIL row; its thread is abandoned (a daemon thread: it cannot hold the exit).
    """
    results: list[list[Check]] = [[] for _ in tasks]
    threads: list[threading.Thread] = []

    def work(task: Task, out: list[Check]) -> None:
        try:
            for row in task.run():
                out.append(row)
        except Exception as exc:  # one check's bug must not end the run
            out.append(Check(task.name, task.target, FAIL,
                             f"check crashed: {type(exc).__name__}: {exc}",
                             "a bug in citynode doctor: please report this line"))

    start = time.monotonic()
    for task, out in zip(tasks, results, strict=True):
        t = threading.Thread(target=work, args=(task, out), daemon=True,
                             name=f"doctor:{task.name}:{task.target}")
        t.start()
        threads.append(t)
    rows: list[Check] = []
    for task, out, t in zip(tasks, results, threads, strict=True):
        t.join(max(0.0, start + task.timeout_s - time.monotonic()))
        got = list(out)
        if t.is_alive():
            got.append(Check(task.name, task.target, FAIL,
                             f"no result within {task.timeout_s:g} s (check abandoned)",
                             "the device or service hangs: power-cycle it and run doctor "
                             "again"))
        rows += got
    return rows


# -- 1. configuration -----------------------------------------------------------------------
def _security_text(exc: Any) -> str:
    """A SecurityError without its fix (which goes in the hint column)."""
    where = f"{exc.what} {exc.path}" if exc.path else exc.what
    return f"{where}: {exc.problem}"


def check_config(path: str) -> tuple[Config | None, Check, bool]:
    """Parse the file (device paths are the other checks' business) and the security files.

    Returns the configuration (None if it does not parse), the row, and whether the
    daemon would refuse it (exit 78): a security file it cannot use counts, as in
    ``citynode config check``, but the other checks can still run.
    """
    from agent.core.config import load

    try:
        cfg = load(path, check_devices=False)
    except ConfigError as exc:
        return None, Check("config", path, FAIL, str(exc), HINT_CONFIG), True
    if not cfg.local_mode:
        from agent.wire.security import SecurityError, validate_security

        try:
            validate_security(cfg.mqtt)
        except SecurityError as exc:
            return cfg, Check("config", path, FAIL, _security_text(exc),
                              exc.fix or HINT_CONFIG), True
    types = sorted({type(s).__name__.removesuffix("Config").lower() for s in cfg.sensor})
    mode = "local mode" if cfg.local_mode else f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    return cfg, Check("config", path, OK, f"node {cfg.node.id}, {len(cfg.sensor)} sensor(s)"
                      + (f" ({', '.join(types)})" if types else "") + f", {mode}"), False


# -- 2. I2C ----------------------------------------------------------------------------------
FIRST_ADDRESS, LAST_ADDRESS = 0x03, 0x77
#: Where i2cdetect's default mode reads instead of writing (EEPROMs, write-protect latches).
READ_PROBE = frozenset([*range(0x30, 0x38), *range(0x50, 0x60)])
#: errno values of an address nobody acknowledged (121 on a Pi; some adapters say ENXIO/EIO).
ABSENT_ERRNOS = frozenset({errno.EREMOTEIO, errno.ENXIO, errno.EIO, errno.ETIMEDOUT,
                           errno.EAGAIN})
#: What the configured sensor types must identify as (None: the chip has no id to read).
EXPECTED_CHIP = {"sps30": "SPS30", "sht3x": "SHT3x", "bme280": "BME280", "sgp30": "SGP30",
                 "i2cxl": None}


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


@dataclass(frozen=True, slots=True)
class Ident:
    """What an address turned out to be: a chip name (None: not recognised) and why."""

    chip: str | None
    evidence: str


def _register(bus: Any, addr: int, reg: int) -> int | None:
    try:
        return bus.read_byte_data(addr, reg)
    except OSError:
        return None


def _sensirion_read(bus: Any, addr: int, cmd: int, words: int, wait_s: float,
                    sleep: Callable[[float], None]) -> bytes | None:
    """Command, wait, then a separate read (Sensirion chips take no repeated start)."""
    from smbus2 import i2c_msg

    try:
        bus.i2c_rdwr(i2c_msg.write(addr, cmd.to_bytes(2, "big")))
        sleep(wait_s)
        msg = i2c_msg.read(addr, 3 * words)
        bus.i2c_rdwr(msg)
    except OSError:
        return None
    return bytes(msg)


def _id_bosch(bus: Any, addr: int, sleep: Callable[[float], None]) -> Ident | None:
    names = {0x60: "BME280", 0x56: "BMP280", 0x57: "BMP280", 0x58: "BMP280", 0x61: "BME680"}
    cid = _register(bus, addr, 0xD0)
    if cid is None:
        return None
    return Ident(names.get(cid), f"chip id 0x{cid:02x} at 0xD0")


def _id_adxl345(bus: Any, addr: int, sleep: Callable[[float], None]) -> Ident | None:
    dev = _register(bus, addr, 0x00)
    if dev is None:
        return None
    return Ident("ADXL345" if dev == 0xE5 else None, f"DEVID 0x{dev:02x} at 0x00")


def _id_mpu6050(bus: Any, addr: int, sleep: Callable[[float], None]) -> Ident | None:
    who = _register(bus, addr, 0x75)
    if who is None:
        return None
    names = {0x68: "MPU-6050", 0x70: "MPU-6500"}
    return Ident(names.get(who), f"WHO_AM_I 0x{who:02x} at 0x75")


def _id_sps30(bus: Any, addr: int, sleep: Callable[[float], None]) -> Ident | None:
    from drivers.sps30 import codec as sps

    raw = _sensirion_read(bus, addr, sps.CMD_READ_PRODUCT_TYPE, 4,
                          sps.exec_time(sps.CMD_READ_PRODUCT_TYPE), sleep)
    if raw is None:
        return None
    try:
        product = sps.decode_string(raw)
    except ValueError as exc:
        return Ident(None, f"product type unreadable ({exc})")
    return Ident("SPS30" if product == "00080000" else None, f"product type {product!r}")


def _id_sgp30(bus: Any, addr: int, sleep: Callable[[float], None]) -> Ident | None:
    from drivers.sensirion import unpack_words

    raw = _sensirion_read(bus, addr, 0x202F, 1, 0.010, sleep)
    if raw is None:
        return None
    try:
        (word,) = unpack_words(raw)
    except ValueError as exc:
        return Ident(None, f"feature set unreadable ({exc})")
    return Ident("SGP30" if word >> 12 == 0 else None, f"feature set 0x{word:04x}")


def _id_sht3x(bus: Any, addr: int, sleep: Callable[[float], None]) -> Ident | None:
    from drivers.sensirion import unpack_words
    from drivers.sht3x import codec as sht

    raw = _sensirion_read(bus, addr, sht.READ_STATUS, 1, 0.001, sleep)
    if raw is None:
        return None
    try:
        (word,) = unpack_words(raw)
    except ValueError as exc:
        return Ident(None, f"status register unreadable ({exc})")
    return Ident("SHT3x", f"status 0x{word:04x} with a valid CRC")


#: Identification by address, register reads (harmless to anything) before commands.
SIGNATURES: dict[int, tuple[Callable[[Any, int, Callable[[float], None]], Ident | None], ...]] = {
    0x1D: (_id_adxl345,), 0x53: (_id_adxl345,),
    0x44: (_id_sht3x,), 0x45: (_id_sht3x,),
    0x58: (_id_sgp30,),
    0x68: (_id_mpu6050,), 0x69: (_id_mpu6050, _id_sps30),
    0x76: (_id_bosch,), 0x77: (_id_bosch,),
}


def identify(bus: Any, addr: int, sleep: Callable[[float], None] = time.sleep) -> Ident:
    """The chip at ``addr`` by its id register or command, where it has one."""
    first: Ident | None = None
    for probe in SIGNATURES.get(addr, ()):
        got = probe(bus, addr, sleep)
        if got is None:
            continue
        if got.chip is not None:
            return got
        first = first or got
    return first or Ident(None, "no id register known at this address")


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
        from agent.core.sensors import build_device, emulated_bus

        for s in cfg.sensor:
            if getattr(s, "bus", None) == "emulator":
                build_device(s)  # attaches the emulated chip if the address is free
        return emulated_bus()
    from smbus2 import SMBus

    return SMBus(bus)


def check_i2c(cfg: Config, *, open_bus: Callable[[int | str, Config], Any] = open_i2c_bus,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[Check]:
    """One scan per configured bus."""
    buses: dict[int | str, dict[int, tuple[str, str | None]]] = {}
    for s in cfg.sensor:
        if hasattr(s, "bus"):
            kind = type(s).__name__.removesuffix("Config").lower()
            buses.setdefault(s.bus, {})[s.address] = (s.name, EXPECTED_CHIP.get(kind))
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


# -- 3. serial --------------------------------------------------------------------------------
SERIAL_TYPES = ("pms5003", "sds011", "a02yyuw", "jsnsr04t", "maxbotix", "cse7766", "pzem004t")
#: Stop listening early once this many good frames have arrived.
ENOUGH_FRAMES = 3


class _Tap:
    """A pyserial port that keeps a copy of every byte read and written."""

    def __init__(self, ser: Any) -> None:
        self._ser = ser
        self.rx = bytearray()
        self.tx = bytearray()

    def read(self, size: int = 1) -> bytes:
        data = self._ser.read(size)
        self.rx += data
        return data

    def write(self, data: bytes) -> int | None:
        self.tx += data
        return self._ser.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ser, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_ser", "rx", "tx"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._ser, name, value)


@dataclass
class StreamTally:
    """What the device's codec made of the bytes received (registry.py's codec)."""

    frames: int = 0
    acks: int = 0
    exceptions: int = 0
    rejected_spans: int = 0
    rejected_bytes: int = 0
    leading_partial: int = 0  # bytes of a frame already under way when we started
    first: dict[str, Any] | None = None
    reasons: dict[str, int] | None = None


def _poll_quietly(dev: Any) -> None:
    """One poll of the driver; its "no valid frame for N s" errors are left to the byte
    tally, which says what arrived better. A vanished port (DeviceGone) is raised."""
    from drivers.base import DeviceError, DeviceGone

    try:
        dev.poll()
    except DeviceGone:
        raise
    except DeviceError:
        return


class _Decoder:
    """Feed received bytes to the device's sans-I/O codec and count what comes out."""

    def __init__(self, kind: str) -> None:
        from drivers import registry

        self.codec = registry.CODECS[kind]
        self.dec = self.codec.decoder()
        self.tally = StreamTally(reasons={})
        self.offset = 0

    def feed(self, data: bytes) -> None:
        t = self.tally
        for ev in self.dec.feed(data):
            doc, n = self.codec.describe(ev)
            kind = doc["type"]
            if kind == "frame":
                t.frames += 1
                t.first = t.first or doc
            elif kind == "ack":
                t.acks += 1
            elif kind == "exception":
                t.exceptions += 1
                t.first = t.first or doc
            elif kind == "rejected":
                if self.offset == 0:  # we came in mid-frame: not the line's fault
                    t.leading_partial += n
                else:
                    t.rejected_spans += 1
                    t.rejected_bytes += n
                    assert t.reasons is not None
                    t.reasons[doc["reason"]] = t.reasons.get(doc["reason"], 0) + 1
            self.offset += n


def _serial_open_error(port: str, exc: BaseException) -> Check:
    cause = exc.__cause__ or exc
    code = getattr(cause, "errno", None)
    if code is None and cause.args and isinstance(cause.args[0], int):
        code = cause.args[0]  # pyserial's SerialException(errno, text)
    if code in (errno.EACCES, errno.EPERM):
        return Check("serial", port, FAIL, "cannot open: permission denied", HINT_PORT_PERM)
    if code == errno.ENOENT:
        return Check("serial", port, FAIL, "port does not exist", HINT_PORT_MISSING)
    if code in (errno.EBUSY, errno.EAGAIN):
        return Check("serial", port, FAIL, "cannot open: port busy", HINT_PORT_BUSY)
    return Check("serial", port, FAIL, f"cannot open: {cause}", HINT_PORT_BUSY)


def _values(doc: dict[str, Any], quantities: Sequence[str]) -> str:
    keys = [q for q in quantities if q in doc]
    if not keys:
        keys = [k for k, v in doc.items() if k not in ("offset", "length", "type")
                and isinstance(v, int | float) and not isinstance(v, bool)][:4]
    return " ".join(f"{k}={doc[k]:g}" if isinstance(doc[k], float) else f"{k}={doc[k]}"
                    for k in keys)


def _doctor_copy(s: Any) -> Any:
    """The sensor's configuration as the daemon would use it, minus the waits: no warm-up
    discards, and requests at least once a second, so a short listen sees frames."""
    import msgspec

    changes: dict[str, Any] = {"read_interval_s": min(s.read_interval_s, 1.0)}
    if hasattr(s, "warmup_s"):
        changes["warmup_s"] = 0.0
    return msgspec.structs.replace(s, **changes)


def check_serial_sensor(s: Any, *, port: str | None = None,
                        listen_s: float = DEFAULT_LISTEN_S) -> Iterator[Check]:
    """Open the port through the sensor's own driver (its settings, its requests), listen
    up to ``listen_s``, and judge the bytes with the device's codec."""
    import msgspec

    from agent.core.sensors import build_device, type_name
    from drivers.base import DeviceError, DeviceGone

    kind = type_name(s)
    port = port or s.port
    target = f"{s.name} {port}"
    if not os.path.exists(port):  # also a dangling udev symlink
        yield Check("serial", target, FAIL, f"port does not exist ({kind})", HINT_PORT_MISSING)
        return
    if not os.access(port, os.R_OK | os.W_OK):
        yield Check("serial", target, FAIL, "cannot open: permission denied", HINT_PORT_PERM)
        return
    dev = build_device(msgspec.structs.replace(_doctor_copy(s), port=port))
    taps: list[_Tap] = []
    opener = dev.serial_factory  # the driver's own port settings (e.g. CSE7766: 4800 8E1)

    def tapped(*args: Any, **kw: Any) -> Any:
        tap = _Tap(opener(*args, **kw))
        taps.append(tap)
        return tap

    dev.serial_factory = tapped
    try:
        dev.open()
    except DeviceError as exc:
        yield _serial_open_error(target, exc)
        return
    decoder = _Decoder(kind)
    start = time.monotonic()
    gone: str | None = None
    try:
        while time.monotonic() - start < listen_s and decoder.tally.frames < ENOUGH_FRAMES:
            try:
                _poll_quietly(dev)
            except DeviceGone as exc:
                gone = str(exc)
                break
            for tap in taps:
                if tap.rx:
                    decoder.feed(bytes(tap.rx))
                    tap.rx.clear()
    finally:
        dev.close()
    shown = ("v", *s.quantities) if kind in ("cse7766", "pzem004t") else s.quantities
    yield _serial_verdict(kind, target, decoder.tally, sum(len(t.tx) for t in taps),
                          time.monotonic() - start, shown, gone)


def _serial_verdict(kind: str, target: str, t: StreamTally, sent: int, elapsed: float,
                    quantities: Sequence[str], gone: str | None) -> Check:
    asked = f" (sent {sent} bytes of requests)" if sent else ""
    if gone and not (t.frames or t.acks):
        return Check("serial", target, FAIL, f"port vanished: {gone}", HINT_PORT_GONE)
    bad = (f"{t.rejected_bytes} bytes rejected in {t.rejected_spans} span(s)"
           + (f": {_top_reason(t)}" if t.reasons else ""))
    if t.frames:
        values = _values(t.first or {}, quantities)
        detail = f"{t.frames} valid frame(s) in {elapsed:.1f} s"
        if t.rejected_spans:
            return Check("serial", target, WARN, f"{detail}, {bad}; {values}", HINT_CHECKSUM)
        return Check("serial", target, OK, f"{detail}, none rejected; {values}")
    if t.exceptions:
        return Check("serial", target, WARN, "the device answers with an error: "
                     f"{_values(t.first or {}, ('exception', 'code', 'reason'))}",
                     "check sensor.address and the device's configuration")
    if t.acks and not t.rejected_spans:
        return Check("serial", target, WARN, f"{t.acks} command ack(s) but no measurement "
                     f"in {elapsed:.1f} s", HINT_NO_DATA)
    if t.rejected_bytes or t.leading_partial:
        n = t.rejected_bytes + t.leading_partial
        return Check("serial", target, FAIL, f"garbage: {n} bytes in {elapsed:.1f} s, no valid "
                     f"{kind} frame{asked}", HINT_GARBAGE)
    return Check("serial", target, FAIL, f"silent: no byte in {elapsed:.1f} s{asked}",
                 HINT_SILENT + SILENT_EXTRA.get(kind, ""))


def _top_reason(t: StreamTally) -> str:
    assert t.reasons is not None
    reason, n = max(t.reasons.items(), key=lambda kv: kv[1])
    return f"{reason} x{n}" if n > 1 else reason


# -- 4. GPIO -----------------------------------------------------------------------------------
#: GPIOs the buses use; a sensor or relay there clashes with the bus when the bus is in use.
BUS_PINS = {2: ("i2c", "I2C1 SDA"), 3: ("i2c", "I2C1 SCL"),
            14: ("uart", "UART TX"), 15: ("uart", "UART RX")}
PRIMARY_UARTS = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0")


@dataclass(frozen=True, slots=True)
class PinUse:
    pin: int
    owner: str  # sensor name
    role: str  # "trigger", "echo", "relay"
    emulated: bool
    claim: Callable[[Any], Callable[[], None]]  # factory -> release


def _claim_output(pin: int, initial: bool) -> Callable[[Any], Callable[[], None]]:
    def claim(factory: Any) -> Callable[[], None]:
        from gpiozero import OutputDevice

        dev = OutputDevice(pin, initial_value=initial, pin_factory=factory)
        return dev.close
    return claim


def _claim_input(pin: int) -> Callable[[Any], Callable[[], None]]:
    def claim(factory: Any) -> Callable[[], None]:
        from gpiozero import InputDevice

        dev = InputDevice(pin, pull_up=False, pin_factory=factory)
        return dev.close
    return claim


def _claim_relay(pin: int, plug: Any) -> Callable[[Any], Callable[[], None]]:
    """As the daemon does (drivers.relay): an output already at the safe state."""
    def claim(factory: Any) -> Callable[[], None]:
        from drivers.relay import Relay

        relay = Relay(pin, active_high=plug.relay_active_high,
                      safe_state=plug.relay_safe_state, pin_factory=factory)
        relay.open()
        return relay.close
    return claim


def gpio_uses(cfg: Config) -> list[PinUse]:
    """Every GPIO the configuration claims, with how the daemon claims it."""
    from agent.core.config import HCSR04Config

    uses: list[PinUse] = []
    for s in cfg.sensor:
        if isinstance(s, HCSR04Config):
            emu = s.pins == "emulator"
            uses.append(PinUse(s.trigger, s.name, "trigger", emu, _claim_output(s.trigger, False)))
            uses.append(PinUse(s.echo, s.name, "echo", emu, _claim_input(s.echo)))
        plug = getattr(s, "plug", None)
        if plug is not None and plug.relay_pin is not None:
            uses.append(PinUse(plug.relay_pin, s.name, "relay", False,
                               _claim_relay(plug.relay_pin, plug)))
    return uses


def _default_factory() -> Any:
    """gpiozero's pin factory as the daemon gets it (GPIOZERO_PIN_FACTORY=mock included)."""
    import warnings

    from gpiozero import Device

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "falling back to ...": the result says it
        Device.ensure_pin_factory()
    return Device.pin_factory


def check_gpio(cfg: Config, *, factory: Callable[[], Any] = _default_factory
               ) -> Iterator[Check]:
    """Clashes between uses (and with the buses in use), then claim each pin and let go."""
    from gpiozero.exc import GPIOZeroError

    from drivers.base import DeviceError

    uses = gpio_uses(cfg)
    if not uses:
        return
    buses_in_use = set()
    for s in cfg.sensor:
        if getattr(s, "bus", None) == 1:
            buses_in_use.add("i2c")
        if getattr(s, "port", None) in PRIMARY_UARTS:
            buses_in_use.add("uart")
    by_pin: dict[int, list[PinUse]] = {}
    for u in uses:
        by_pin.setdefault(u.pin, []).append(u)
    clashed: set[int] = set()
    for pin, group in sorted(by_pin.items()):
        bus = BUS_PINS.get(pin)
        who = " and ".join(f"{u.owner} {u.role}" for u in group)
        if len(group) > 1:
            clashed.add(pin)
            yield Check("gpio", f"GPIO {pin}", FAIL, f"used twice: {who}", HINT_GPIO_CLASH)
        elif bus and bus[0] in buses_in_use:
            clashed.add(pin)
            yield Check("gpio", f"GPIO {pin}", FAIL, f"{who} is also the {bus[1]} pin, "
                        "which a configured sensor uses", HINT_GPIO_CLASH)
    real: Any = None
    real_error: str | None = None
    if any(not u.emulated for u in uses):
        try:
            real = factory()
        except (GPIOZeroError, ImportError, OSError, RuntimeError) as exc:
            real_error = f"{type(exc).__name__}: {exc}"
    for u in uses:
        if u.pin in clashed:
            continue
        target = f"GPIO {u.pin} ({u.owner} {u.role})"
        if u.emulated:
            from gpiozero.pins.mock import MockFactory

            fac = MockFactory()
        elif real is None:
            yield Check("gpio", target, FAIL, f"no pin factory: {real_error}", HINT_GPIO_NONE)
            continue
        else:
            fac = real
        try:
            release = u.claim(fac)
        except (GPIOZeroError, DeviceError, OSError, ValueError) as exc:
            yield Check("gpio", target, FAIL, f"cannot claim: {exc}", HINT_GPIO_BUSY)
            continue
        try:
            release()
        except (GPIOZeroError, DeviceError, OSError) as exc:
            yield Check("gpio", target, FAIL, f"claimed, but releasing failed: {exc}",
                        HINT_GPIO_BUSY)
            continue
        kind = "emulated" if u.emulated else type(fac).__name__
        yield Check("gpio", target, OK, f"claimed and released ({kind})")


# -- 5. broker -------------------------------------------------------------------------------
def _cert_days_left(cert: dict[str, Any], now: float) -> float | None:
    not_after = cert.get("notAfter")
    if not not_after:
        return None
    return (ssl.cert_time_to_seconds(not_after) - now) / 86400.0


def check_broker(cfg: Config, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Check]:
    """TCP, then TLS (verified as the daemon verifies), then MQTT CONNECT with its
    credentials, each only if the step before it worked."""
    m = cfg.mqtt
    if cfg.local_mode:
        yield Check("broker", "mqtt.host", WARN, "local mode, nothing leaves the node",
                    HINT_LOCAL)
        return
    target = f"{m.host}:{m.port}"
    t0 = time.monotonic()
    try:
        sock = socket.create_connection((m.host, m.port), timeout=timeout_s)
    except socket.gaierror as exc:
        yield Check("broker", target, FAIL, f"cannot resolve {m.host}: {exc.strerror}", HINT_DNS)
        return
    except TimeoutError:
        yield Check("broker", target, FAIL, f"TCP: no answer within {timeout_s:g} s",
                    HINT_TIMEOUT)
        return
    except ConnectionRefusedError:
        yield Check("broker", target, FAIL, "TCP: connection refused", HINT_REFUSED)
        return
    except OSError as exc:
        yield Check("broker", target, FAIL, f"TCP: {exc.strerror or exc}", HINT_TIMEOUT)
        return
    yield Check("broker", target, OK, f"TCP connected in {1000 * (time.monotonic() - t0):.0f} ms")
    if m.tls:
        ok = yield from _check_tls(cfg, sock, target, timeout_s)
        if not ok:
            return
    else:
        sock.close()
    yield from _check_connect(cfg, target, timeout_s)


def _check_tls(cfg: Config, sock: socket.socket, target: str,
               timeout_s: float) -> Iterator[Check]:
    from agent.wire.security import SecurityError, tls_context

    m = cfg.mqtt
    try:
        ctx = tls_context(m)
    except SecurityError as exc:
        sock.close()
        yield Check("broker", target, FAIL, f"TLS: {_security_text(exc)}",
                    exc.fix or HINT_TLS_VERIFY)
        return False
    assert ctx is not None
    name = m.server_name or m.host
    try:
        sock.settimeout(timeout_s)
        with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
            cert = tls.getpeercert() or {}
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        yield Check("broker", target, FAIL, f"TLS: certificate not accepted for {name}: "
                    f"{exc.verify_message}", HINT_TLS_VERIFY)
        return False
    except (ssl.SSLError, OSError) as exc:
        yield Check("broker", target, FAIL, f"TLS handshake failed: {exc}", HINT_TLS_FAIL)
        return False
    finally:
        sock.close()
    days = _cert_days_left(cert, time.time())
    expiry = ("" if days is None
              else f", certificate expires {cert['notAfter']} (in {int(days)} days)")
    status, hint = OK, ""
    if days is not None and days < CERT_WARN_DAYS:
        status, hint = WARN, HINT_CERT_EXPIRY
    yield Check("broker", target, status, f"TLS {version}, verified as {name}{expiry}", hint)
    return True


def _check_connect(cfg: Config, target: str, timeout_s: float) -> Iterator[Check]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from agent.wire.security import SecurityError, apply

    m = cfg.mqtt
    # Not the daemon's own client id: a broker would disconnect a running daemon.
    base = m.client_id or f"{m.prefix.replace('/', '-')}-{cfg.node.id}"
    client_id = f"{base[:56]}-doctor"
    versions = ([MQTTProtocolVersion.MQTTv311] if m.protocol == "3.1.1"
                else [MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311]
                if m.protocol == "auto" else [MQTTProtocolVersion.MQTTv5])
    for version in versions:
        result: dict[str, Any] = {}
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                             reconnect_on_failure=False)
        client.connect_timeout = timeout_s

        def on_connect(client, userdata, flags, reason_code, properties,
                       result: dict[str, Any] = result) -> None:
            result["code"] = int(getattr(reason_code, "value", reason_code))
            result["text"] = str(reason_code)

        client.on_connect = on_connect
        label = "MQTT 5" if version == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1"
        try:
            apply(client, m)
            client.connect(m.host, m.port, keepalive=m.keepalive_s)
            deadline = time.monotonic() + timeout_s
            while "code" not in result and time.monotonic() < deadline:
                if client.loop(timeout=0.1) != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        except SecurityError as exc:
            yield Check("broker", target, FAIL, f"MQTT: {_security_text(exc)}",
                        exc.fix or HINT_AUTH)
            return
        except (OSError, ValueError) as exc:
            yield Check("broker", target, FAIL, f"MQTT CONNECT failed: {exc}", HINT_NO_CONNACK)
            return
        finally:
            _close_client(client, connected=result.get("code") == 0)
        code = result.get("code")
        if code == 0:
            yield Check("broker", target, OK, f"CONNACK {result['text']} ({label}, client id "
                        f"{client_id})")
            return
        if code in (1, 132) and version != versions[-1]:
            continue  # the broker does not speak MQTT 5: try 3.1.1, as the daemon does
        if code is None:
            yield Check("broker", target, FAIL, f"no CONNACK within {timeout_s:g} s ({label})",
                        HINT_NO_CONNACK)
        else:
            yield Check("broker", target, FAIL, f"CONNACK refused: {result['text']} ({label})",
                        HINT_AUTH)
        return


def _close_client(client: Any, *, connected: bool) -> None:
    """Say goodbye when connected, and never leave the socket open."""
    try:
        if connected:
            client.disconnect()
            client.loop(timeout=0.1)
        sock = client.socket()
        if sock is not None:
            sock.close()
    except (OSError, ValueError):
        pass


# -- 6. clock ----------------------------------------------------------------------------------
class _Timex(ctypes.Structure):
    """Linux ``struct timex`` (adjtimex(2)), with generous padding at the end."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long),
        ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int), ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int), ("_pad", ctypes.c_int * 32),
    ]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def ntp_synchronised() -> tuple[bool | None, str]:
    """(synchronised or None if unknown, how we know).

    The kernel's own flag through adjtimex(2) (read-only, any user, no D-Bus): what
    ``timedatectl``'s NTPSynchronized reports. ``timedatectl`` is the fallback where
    the call is not available.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        rc = libc.adjtimex(ctypes.byref(tx))
        if rc >= 0:
            synced = rc != TIME_ERROR and not tx.status & STA_UNSYNC
            return synced, f"kernel adjtimex: {'synchronised' if synced else 'unsynchronised'}" \
                           f", max error {tx.maxerror / 1000:.0f} ms"
    except (OSError, AttributeError):
        pass
    exe = shutil.which("timedatectl")
    if exe:
        try:
            out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"],
                                 capture_output=True, text=True, timeout=3)
            value = out.stdout.strip()
            if out.returncode == 0 and value in ("yes", "no"):
                return value == "yes", f"timedatectl: NTPSynchronized={value}"
        except (OSError, subprocess.SubprocessError):
            pass
    return None, "neither adjtimex nor timedatectl could tell"


def check_clock(*, sync: Callable[[], tuple[bool | None, str]] = ntp_synchronised,
                now: Callable[[], float] = time.time) -> Iterator[Check]:
    synced, how = sync()
    if synced:
        yield Check("clock", "NTP", OK, how)
    elif synced is None:
        yield Check("clock", "NTP", WARN, f"unknown: {how}", HINT_NTP)
    else:
        yield Check("clock", "NTP", WARN, f"not synchronised ({how})", HINT_NTP)
    t = time.gmtime(now())
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", t)
    if t.tm_year < MIN_YEAR:
        yield Check("clock", "date", FAIL, f"{stamp}: before {MIN_YEAR}", HINT_YEAR)
    else:
        yield Check("clock", "date", OK, stamp)


# -- 7. disk -----------------------------------------------------------------------------------
def spool_path(cfg: Config) -> str:
    return cfg.spool.path or os.path.join(cfg.node.resolved_state_dir(), "spool.db")


def _mib(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.1f} MiB"


def check_disk(cfg: Config) -> Iterator[Check]:
    """Free space where the spool lives against spool.max_bytes."""
    path = spool_path(cfg)
    probe = os.path.dirname(os.path.abspath(path))
    missing = ""
    if not os.path.exists(probe):
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        missing = f" ({os.path.dirname(path)} does not exist yet; measured on {probe})"
    st = os.statvfs(probe)
    free = st.f_bavail * st.f_frsize
    want = cfg.spool.max_bytes
    detail = f"{_mib(free)} free, spool.max_bytes {_mib(want)}{missing}"
    if free < want:
        yield Check("disk", path, FAIL, detail, HINT_DISK_FULL)
    elif free < 2 * want:
        yield Check("disk", path, WARN, f"{detail}: less than twice the bound", HINT_DISK_FULL)
    else:
        yield Check("disk", path, OK, detail)


# -- 8. journal --------------------------------------------------------------------------------
def check_journal(cfg: Config | None) -> Iterator[Check]:
    from agent.core.journal import DEFAULT_SOCKET, SOCKET_ENV

    path = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        is_socket = False
    target = cfg.log.target if cfg is not None else "auto"
    if is_socket:
        yield Check("journal", path, OK, f"journald socket present (log.target = {target})")
    elif target == "stderr":
        yield Check("journal", path, OK, "no journald socket; log.target = stderr anyway")
    else:
        yield Check("journal", path, WARN, f"no journald socket: logs go to stderr "
                    f"(log.target = {target})", HINT_JOURNAL)


# -- the run -----------------------------------------------------------------------------------
def build_tasks(cfg: Config | None, *, listen_s: float = DEFAULT_LISTEN_S,
                only: Iterable[str] = CHECKS) -> list[Task]:
    """The checks to run for ``cfg`` (None: only those that need no configuration)."""
    want = set(only)
    tasks: list[Task] = []
    if cfg is not None:
        from agent.core.sensors import type_name

        if "i2c" in want and any(hasattr(s, "bus") for s in cfg.sensor):
            tasks.append(Task("i2c", "I2C buses", lambda: check_i2c(cfg), 30.0))
        if "serial" in want:
            for s in cfg.sensor:
                if type_name(s) in SERIAL_TYPES:
                    tasks.append(Task("serial", f"{s.name} {s.port}",
                                      lambda s=s: check_serial_sensor(s, listen_s=listen_s),
                                      listen_s + 10.0))
        if "gpio" in want:
            tasks.append(Task("gpio", "GPIO", lambda: check_gpio(cfg), 15.0))
        if "broker" in want:
            target = f"{cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.host else "mqtt.host"
            tasks.append(Task("broker", target, lambda: check_broker(cfg),
                              4 * CONNECT_TIMEOUT_S + 2))
    if "clock" in want:
        tasks.append(Task("clock", "NTP", check_clock, 8.0))
    if cfg is not None and "disk" in want:
        tasks.append(Task("disk", spool_path(cfg), lambda: check_disk(cfg), 5.0))
    if "journal" in want:
        tasks.append(Task("journal", "journald", lambda: check_journal(cfg), 3.0))
    return tasks


def run(config_path: str, *, listen_s: float = DEFAULT_LISTEN_S,
        only: Iterable[str] = CHECKS) -> tuple[list[Check], int]:
    """Every check's rows, and the exit code (0, 1, or 78 for an invalid configuration)."""
    cfg, row, invalid = check_config(config_path)
    rows = [row, *run_tasks(build_tasks(cfg, listen_s=listen_s, only=only))]
    if invalid:
        return rows, EX_CONFIG
    return rows, 1 if any(r.status == FAIL for r in rows) else 0


# -- output ------------------------------------------------------------------------------------
_COLOURS = {OK: "\033[32m", WARN: "\033[33m", FAIL: "\033[31m"}


def render_table(rows: Sequence[Check], *, colour: bool = False) -> str:
    """Aligned columns; each WARN/FAIL row is followed by its fix under DETAIL."""
    head = ("CHECK", "TARGET", "RESULT", "DETAIL")
    widths = [max(len(head[0]), *(len(r.name) for r in rows)),
              max(len(head[1]), *(len(r.target) for r in rows)),
              max(len(head[2]), 4)]
    indent = sum(widths) + 2 * 3

    def line(cells: Sequence[str], status: str = "") -> str:
        a, b, c, d = cells
        res = c.ljust(widths[2])
        if colour and status in _COLOURS:
            res = f"{_COLOURS[status]}{res}\033[0m"
        return f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {res}  {d}".rstrip()

    out = [line(head)]
    for r in rows:
        out.append(line((r.name, r.target, r.status, r.detail), r.status))
        if r.hint and r.status != OK:
            out.append(" " * indent + f"fix: {r.hint}")
    counts = {s: sum(r.status == s for r in rows) for s in (OK, WARN, FAIL)}
    out.append(f"\n{len(rows)} results: {counts[OK]} OK, {counts[WARN]} WARN, "
               f"{counts[FAIL]} FAIL")
    return "\n".join(out)


def render_json(rows: Sequence[Check]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=1, ensure_ascii=False)


# -- command line ------------------------------------------------------------------------------
def _only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CHECKS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown check(s) {bad}; known: {', '.join(CHECKS)}")
    return names


def _listen(text: str) -> float:
    value = float(text)
    if not 0.2 <= value <= 120:
        raise argparse.ArgumentTypeError("must be between 0.2 and 120 seconds")
    return value


def cmd_doctor(args: argparse.Namespace) -> int:
    # Drivers log what they see (e.g. "did not answer"); the table says it, once.
    quiet = logging.NullHandler()
    loggers = [logging.getLogger(n) for n in ("drivers", "agent", "citynode")]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(quiet)
        lg.propagate = False
    try:
        rows, code = run(args.config, listen_s=args.listen_s, only=args.only or CHECKS)
    finally:
        for lg, propagate in saved:
            lg.removeHandler(quiet)
            lg.propagate = propagate
    if args.json:
        print(render_json(rows))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        print(render_table(rows, colour=colour))
    return code


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:
    """Add ``citynode doctor`` to the command line (called by agent.tools.cli)."""
    d = sub.add_parser("doctor", help="check on site what the configuration expects against "
                       "what is there: I2C chips, serial sensors, GPIO, broker, clock, disk")
    d.add_argument("--config", "-c", default=default_cfg,
                   help=f"TOML file (default {default_cfg})")
    d.add_argument("--json", action="store_true", help="machine-readable output: a JSON list")
    d.add_argument("--listen-s", type=_listen, default=DEFAULT_LISTEN_S, metavar="SECONDS",
                   help=f"how long to listen on each serial port (default {DEFAULT_LISTEN_S:g})")
    d.add_argument("--only", type=_only, metavar="CHECKS",
                   help=f"comma-separated subset of: {', '.join(CHECKS)} (config always runs)")
    d.set_defaults(func=cmd_doctor)
