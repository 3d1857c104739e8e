"""Check 3: listen to each serial sensor through its own driver and judge the bytes with
its codec."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import DEFAULT_LISTEN_S, FAIL, OK, WARN, Check
from .daemon import flock_holder, holder_text, is_citynode
from .hints import (
    HINT_CHECKSUM,
    HINT_DAEMON_RUNNING,
    HINT_GARBAGE,
    HINT_NO_DATA,
    HINT_NOT_SERIAL,
    HINT_PORT_BUSY,
    HINT_PORT_DIR,
    HINT_PORT_GONE,
    HINT_PORT_MISSING,
    HINT_PORT_PERM,
    HINT_SILENT,
)

if TYPE_CHECKING:
    from drivers.spec import DeviceSpec

# -- 3. serial --------------------------------------------------------------------------------
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

        codec = registry.get(kind)
        from drivers.spec import FrameCodec

        assert isinstance(codec, FrameCodec)
        self.codec = codec
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


def _serial_open_error(target: str, exc: BaseException, port: str = "") -> Check:
    cause = exc.__cause__ or exc
    code = getattr(cause, "errno", None)
    if code is None and cause.args and isinstance(cause.args[0], int):
        code = cause.args[0]  # pyserial's SerialException(errno, text)
    if code in (errno.EACCES, errno.EPERM):
        return Check("serial", target, FAIL, "cannot open: permission denied", HINT_PORT_PERM)
    if code == errno.ENOENT:
        return Check("serial", target, FAIL, "port does not exist", HINT_PORT_MISSING)
    if code == errno.EAGAIN or "exclusively lock" in str(cause):
        # the daemon opens its ports with an exclusive lock (drivers/serialdev.py)
        holder = flock_holder(port) if port else None
        if holder is not None and is_citynode(holder):
            return Check("serial", target, FAIL, f"not opened: held by the running daemon "
                         f"(citynode, pid {holder})", HINT_DAEMON_RUNNING)
        return Check("serial", target, FAIL, f"cannot open: held by {holder_text(holder)}",
                     HINT_PORT_BUSY)
    if code == errno.EBUSY:
        return Check("serial", target, FAIL, "cannot open: port busy (another program has "
                     "it in exclusive mode)", HINT_PORT_BUSY)
    if code == errno.ENOTTY or "Inappropriate ioctl" in str(cause):
        return Check("serial", target, FAIL, "not a serial device: it takes no serial line "
                     "settings (not a terminal)", HINT_NOT_SERIAL)
    return Check("serial", target, FAIL, f"cannot open: {cause}", HINT_PORT_BUSY)


_FILE_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISBLK, "a block device (a disk)"))


def _not_serial(target: str, port: str, kind: str) -> Check | None:
    """A FAIL row when ``port`` cannot be a serial device, found without opening it:
    opening an arbitrary device can have effects (a watchdog starts counting)."""
    try:
        st = os.stat(port)
    except OSError:
        return None  # the open says why
    if stat.S_ISDIR(st.st_mode):
        return Check("serial", target, FAIL, f"is a directory, not a serial device ({kind})",
                     HINT_PORT_DIR)
    for test, what in _FILE_KINDS:
        if test(st.st_mode):
            return Check("serial", target, FAIL, f"not a serial device: {what} ({kind})",
                         HINT_NOT_SERIAL)
    # A character device: sysfs names its class (ptys are not listed there; they are ttys).
    sysfs = f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/subsystem"
    if os.path.exists(sysfs):
        cls = os.path.basename(os.path.realpath(sysfs))
        if cls != "tty":
            return Check("serial", target, FAIL, f"not a serial device: a character device "
                         f"of class {cls!r} ({kind})", HINT_NOT_SERIAL)
    return None


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

    from agent.core.sensors import build_device
    from drivers.base import DeviceError, DeviceGone
    from drivers.catalogue import spec_of

    spec = spec_of(s)
    kind = spec.type
    port = port or s.port
    target = f"{s.name} {port}"
    if not os.path.exists(port):  # also a dangling udev symlink
        yield Check("serial", target, FAIL, f"port does not exist ({kind})", HINT_PORT_MISSING)
        return
    wrong = _not_serial(target, port, kind)
    if wrong is not None:
        yield wrong
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
        yield _serial_open_error(target, exc, port)
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
    yield _serial_verdict(spec, target, decoder.tally, sum(len(t.tx) for t in taps),
                          time.monotonic() - start, (*spec.doctor_values, *s.quantities), gone)


def _serial_verdict(spec: DeviceSpec, target: str, t: StreamTally, sent: int, elapsed: float,
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
                     f"{spec.type} frame{asked}", HINT_GARBAGE)
    return Check("serial", target, FAIL, f"silent: no byte in {elapsed:.1f} s{asked}",
                 HINT_SILENT + (f"; {spec.silent_hint}" if spec.silent_hint else ""))


def _top_reason(t: StreamTally) -> str:
    assert t.reasons is not None
    reason, n = max(t.reasons.items(), key=lambda kv: kv[1])
    return f"{reason} x{n}" if n > 1 else reason
