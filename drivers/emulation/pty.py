"""Serial devices emulated behind real pseudo-terminals.

The host side (our drivers, pyserial) cannot tell a pty from ``/dev/ttyAMA0``:
it opens a path, sets 9600 8N1 (ignored), reads and writes bytes. That makes a
pty the most honest stand-in for a sensor on a UART, for tests and for
``citynode simulate``, where installers rehearse a site without hardware.

Three pieces:

* :class:`DeviceModel` - the device side of a protocol with no I/O: bytes in,
  reply bytes out, plus unsolicited output on a clock tick.
* :class:`PtyLink` - a pty pair behind a *stable* symlink (like a udev name),
  so a host re-opens the same path after the "cable" is pulled and re-plugged.
* :class:`SerialEmulator` - a thread that moves bytes between the two, through
  an optional fault injector, and pulls the cable on request or on a schedule.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

log = logging.getLogger(__name__)
#: How often an emulated port is put back to raw 38400 8N1 (PtyLink.reset_line).
LINE_RESET_S = 0.5

#: What a model returns: one chunk, or several. A chunk is the unit the fault
#: injector damages, so models should emit one frame per chunk.
Output = bytes | Sequence[bytes]


@runtime_checkable
class DeviceModel(Protocol):
    """The device side of a serial protocol, sans I/O, with the clock passed in.

    ``now`` is a monotonic time in seconds. Both methods return the bytes the
    device sends: ``b""`` for nothing, one ``bytes`` chunk, or a sequence of
    chunks (one frame each, so faults can be injected frame by frame).
    Neither may block. A model may also define ``reset(now)``: the emulator
    calls it when the link is re-plugged, as a power cycle.
    """

    def receive(self, data: bytes, now: float) -> Output:
        """Bytes the host wrote, in any chunking; return the replies."""
        ...

    def tick(self, now: float) -> Output:
        """Called every few ms; return unsolicited output (active-mode frames)."""
        ...


def _chunks(out: Output | None) -> list[bytes]:
    if not out:
        return []
    if isinstance(out, (bytes, bytearray, memoryview)):
        return [bytes(out)]
    return [bytes(c) for c in out if c]


def _set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class PtyLink:
    """A pseudo-terminal pair reachable through a stable symlink at ``path``.

    The emulator uses :attr:`master_fd`; the host opens :attr:`path`. We hold
    the slave end open too, so the master keeps working (no EIO) while no host
    has the port open. :meth:`unplug` is a pulled cable: the host's next read
    fails and the path disappears; :meth:`replug` makes a new pty and points
    the same path at it atomically.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.master_fd: int | None = None
        self.slave_fd: int | None = None
        self.slave_name: str | None = None
        self.plugs = 0
        p = Path(self.path)
        if p.is_symlink():
            # A link left by an earlier run points at a pty; anything else (say
            # /dev/serial0 -> ttyAMA0, made by udev) belongs to real hardware.
            if not os.readlink(p).startswith("/dev/pts/"):
                raise FileExistsError(f"{self.path} links to {os.readlink(p)}, not a pty; refusing")
        elif p.exists():
            # Never replace a real device node or file (e.g. /dev/ttyAMA0).
            raise FileExistsError(f"{self.path} exists and is not a symlink; refusing to replace")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.replug()

    @property
    def plugged(self) -> bool:
        return self.master_fd is not None

    def replug(self) -> None:
        """Open a fresh pty and point :attr:`path` at it (unplugging first if needed)."""
        self.unplug()
        master, slave = os.openpty()
        try:
            tty.setraw(master)
            tty.setraw(slave)
            _set_nonblocking(master)
            name = os.ttyname(slave)
            # Atomic re-point: the host never sees a missing or half-made link.
            tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(name, tmp)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self.master_fd, self.slave_fd, self.slave_name = master, slave, name
        self.plugs += 1
        log.debug("pty %s -> %s plugged", self.path, name)

    def reset_line(self) -> None:
        """Put the host side back to 38400 baud, as a fresh pty starts.

        A pty keeps the last host's line settings but cannot take parity, and Linux refuses
        (EINVAL) a ``tcsetattr`` that changes nothing it can apply: a host that opened the
        port at 4800 8E1 once could not open it again. A real UART takes any setting, so
        the emulator undoes what the pty kept; the data path of a pty ignores the speed."""
        if self.slave_fd is None:
            return
        with contextlib.suppress(OSError, termios.error):  # unplugged under us: a replug
            attrs = termios.tcgetattr(self.slave_fd)      # starts fresh anyway
            if attrs[4] == attrs[5] == termios.B38400:
                return
            # Only the speed, and TCSANOW: no flush, so a host that has the port open
            # loses nothing (the data path of a pty ignores the speed).
            attrs[4] = attrs[5] = termios.B38400
            termios.tcsetattr(self.slave_fd, termios.TCSANOW, attrs)

    def unplug(self) -> None:
        """Pull the cable: close both ends we hold and remove the symlink."""
        master, slave = self.master_fd, self.slave_fd
        self.master_fd = self.slave_fd = None
        for fd in (master, slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if master is not None:
            self._remove_link()
            log.debug("pty %s unplugged", self.path)

    def close(self) -> None:
        """Unplug for good; safe to call twice."""
        self.unplug()

    def _remove_link(self) -> None:
        try:
            if os.path.islink(self.path) and os.readlink(self.path) == self.slave_name:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"-> {self.slave_name}" if self.plugged else "unplugged"
        return f"PtyLink({self.path!r} {state})"


@dataclass(slots=True)
class EmulatorStats:
    """Byte and event counters of one emulator (what a simulate run reports)."""

    bytes_in: int = 0
    bytes_out: int = 0
    chunks_out: int = 0
    dropped_chunks: int = 0  # the host was not reading and the pty buffer was full
    dropped_bytes: int = 0
    unplugs: int = 0
    replugs: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SerialEmulator(threading.Thread):
    """Run a :class:`DeviceModel` behind a :class:`PtyLink` on a daemon thread.

        >>> emu = SerialEmulator(PMS5003Model(), "/tmp/citynode/pms0")
        >>> emu.start()           # the host may open emu.path before or after this
        >>> emu.stop()

    Output the host is not reading stays in a bounded queue and is then dropped
    whole chunk by chunk (counted in :attr:`stats`), so a port nobody opened
    never blocks the emulator. Model state may be read or changed from other
    threads while holding :attr:`lock`.
    """

    def __init__(
        self,
        model: DeviceModel,
        path: str | os.PathLike[str],
        *,
        faults: Callable[[bytes], bytes] | None = None,
        tick_s: float = 0.01,
        unplug_every_s: float | None = None,
        unplug_for_s: float = 1.0,
        reset_on_replug: bool = True,
        max_pending: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        if unplug_every_s is not None and unplug_every_s <= 0:
            raise ValueError("unplug_every_s must be positive")
        if unplug_for_s < 0:
            raise ValueError("unplug_for_s must not be negative")
        super().__init__(name=name or f"emulator:{os.fspath(path)}", daemon=True)
        self.model = model
        self.faults = faults
        self.tick_s = tick_s
        self.unplug_every_s = unplug_every_s
        self.unplug_for_s = unplug_for_s
        self.reset_on_replug = reset_on_replug
        self.max_pending = max_pending
        self.clock = clock
        self.stats = EmulatorStats()
        self.lock = threading.RLock()
        self.failure: BaseException | None = None
        self.link = PtyLink(path)
        self._pending = bytearray()
        self._stopping = threading.Event()
        self._requests: list[tuple[str, float | None, threading.Event]] = []
        self._req_lock = threading.Lock()
        self._replug_at: float | None = None
        self._next_unplug: float | None = None

    @property
    def path(self) -> str:
        """The stable path the host opens."""
        return self.link.path

    @property
    def plugged(self) -> bool:
        return self.link.plugged

    @property
    def pending(self) -> int:
        """Bytes queued for the host but not yet taken by the pty."""
        return len(self._pending)

    # -- control from other threads -------------------------------------------
    def unplug(self, for_s: float | None = None, timeout: float = 2.0) -> None:
        """Pull the cable now; re-plug by itself after ``for_s`` if given.

        Returns once the link is down, so the caller can rely on it.
        """
        self._request("unplug", for_s, timeout)

    def replug(self, timeout: float = 2.0) -> None:
        """Plug the cable back in (a new pty behind the same path)."""
        self._request("replug", None, timeout)

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread, remove the symlink; re-raise a model failure, if any."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        if not self.is_alive():
            self.link.close()
        if self.failure is not None:
            raise RuntimeError(f"{self.name}: device model failed") from self.failure

    def __enter__(self) -> Self:
        if not self.is_alive():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _request(self, what: str, arg: float | None, timeout: float) -> None:
        if not self.is_alive():
            if self.ident is not None:
                raise RuntimeError(f"{self.name} has stopped")
            self._do(what, arg, self.clock())  # not started yet: no thread to race with
            return
        done = threading.Event()
        with self._req_lock:
            self._requests.append((what, arg, done))
        if not done.wait(timeout):
            raise TimeoutError(f"{self.name}: {what} not done within {timeout:g} s")

    # -- the thread -------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop()
            self.failure = exc
            log.exception("%s: device model failed; unplugging", self.name)
        finally:
            self.link.close()
            with self._req_lock:
                for _, _, done in self._requests:
                    done.set()
                self._requests.clear()

    def _loop(self) -> None:
        now = self.clock()
        if self.unplug_every_s is not None:
            self._next_unplug = now + self.unplug_every_s
        next_tick = next_reset = now
        while not self._stopping.is_set():
            now = self.clock()
            self._serve_requests(now)
            self._schedule(now)
            fd = self.link.master_fd
            if fd is None:
                self._stopping.wait(self.tick_s)
                continue
            wait = max(0.0, min(self.tick_s, next_tick - now))
            wlist = [fd] if self._pending else []
            try:
                readable, writable, _ = select.select([fd], wlist, [], wait)
            except (OSError, ValueError):
                continue  # the fd was closed under us by an unplug request
            if writable:
                self._flush()
            if readable:
                self._read(fd)
            now = self.clock()
            if now >= next_tick:
                with self.lock:
                    out = self.model.tick(now)
                self._send(out)
                next_tick = now + self.tick_s
            if now >= next_reset:
                self.link.reset_line()
                next_reset = now + LINE_RESET_S

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open: cannot happen while we hold it
                return
            raise
        if not data:
            return
        self.stats.bytes_in += len(data)
        with self.lock:
            out = self.model.receive(data, self.clock())
        self._send(out)

    def _send(self, out: Output | None) -> None:
        for chunk in _chunks(out):
            if self.faults is not None:
                chunk = self.faults(chunk)
                if not chunk:
                    continue
            if len(self._pending) + len(chunk) > self.max_pending:
                self.stats.dropped_chunks += 1
                self.stats.dropped_bytes += len(chunk)
                continue
            self._pending += chunk
            self.stats.chunks_out += 1
        self._flush()

    def _flush(self) -> None:
        fd = self.link.master_fd
        if fd is None or not self._pending:
            return
        try:
            n = os.write(fd, self._pending)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                return
            raise
        self.stats.bytes_out += n
        del self._pending[:n]

    def _serve_requests(self, now: float) -> None:
        with self._req_lock:
            requests, self._requests = self._requests, []
        for what, arg, done in requests:
            try:
                self._do(what, arg, now)
            finally:
                done.set()

    def _schedule(self, now: float) -> None:
        if self._replug_at is not None and now >= self._replug_at:
            self._do("replug", None, now)
        if self._next_unplug is not None and now >= self._next_unplug and self.link.plugged:
            self._do("unplug", self.unplug_for_s, now)

    def _do(self, what: str, arg: float | None, now: float) -> None:
        if what == "unplug":
            if self.link.plugged:
                self.link.unplug()
                self._pending.clear()  # bytes in flight are lost with the cable
                self.stats.unplugs += 1
            self._replug_at = None if arg is None else now + arg
        elif what == "replug":
            self._replug_at = None
            self.link.replug()
            self.stats.replugs += 1
            reset = getattr(self.model, "reset", None)
            if self.reset_on_replug and callable(reset):
                with self.lock:
                    reset(now)
            if self.unplug_every_s is not None:
                self._next_unplug = now + self.unplug_every_s
        else:  # pragma: no cover - internal misuse
            raise ValueError(what)
