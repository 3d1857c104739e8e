"""sd_notify and a progress-gated watchdog, without libsystemd or python-systemd.

The agent runs as a ``Type=notify`` unit with ``WatchdogSec=``.  The notify protocol is one
datagram of ``KEY=value`` lines sent to the ``AF_UNIX`` socket named by ``NOTIFY_SOCKET``
(see sd_notify(3)); that is a dozen lines of code, so we do not pay for a binding.

    >>> notifier = Notifier.from_env()
    >>> wd = Watchdog(notifier)                 # interval from WATCHDOG_USEC, or disabled
    >>> beat = wd.register("pm")                # one per sampling loop
    >>> wd.start(); notifier.ready()
    >>> while running:
    ...     poll_sensor(); beat()               # proves the loop still makes progress
    >>> notifier.stopping(); wd.stop()

The watchdog pings only while every registered loop has beaten recently, so a loop hung in
I/O gets the whole process killed and restarted by systemd instead of lingering silently.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

__all__ = ["STATUS_MAX", "Beat", "Notifier", "Watchdog"]

log = logging.getLogger("citynode.systemd")

#: STATUS= texts longer than this are cut: systemctl shows one line, and a runaway
#: exception text should not fill a datagram.
STATUS_MAX = 200


def _socket_address(name: str) -> bytes | None:
    """Turn a NOTIFY_SOCKET value into a sockaddr_un path (``@`` = abstract namespace)."""
    if name.startswith("@"):
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return os.fsencode(name)
    return None  # vsock:, relative paths...: not something systemd gives a local service


def _parse_watchdog(env: Mapping[str, str]) -> float | None:
    """Seconds from WATCHDOG_USEC, or None when unset, invalid, or meant for another PID."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    if pid:
        try:
            if int(pid) != os.getpid():
                return None  # inherited from a parent that is the real service process
        except ValueError:
            return None
    return value / 1_000_000


class Notifier:
    """Sends sd_notify messages; a cheap no-op when not started by systemd.

    Sending never raises: a failure is logged once (EVENT=notify_error) and the daemon goes
    on, because losing a STATUS update must never take the agent down.
    """

    def __init__(self, socket_name: str | None, watchdog_interval: float | None = None) -> None:
        self.socket_name = socket_name or None
        self.watchdog_interval = watchdog_interval if self.socket_name else None
        self._address = _socket_address(socket_name) if socket_name else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._reported = False
        if self.socket_name and self._address is None:
            self._report(f"unsupported NOTIFY_SOCKET address {socket_name!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Build from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (default: os.environ)."""
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"), _parse_watchdog(env))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to talk to."""
        return self._address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` fields in one datagram; True if it was sent."""
        if self._address is None or not fields:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value)
            if "\n" in text:  # a newline would start a new (bogus) assignment
                text = " ".join(text.splitlines())
            lines.append(f"{key}={text}")
        return self._send("\n".join(lines).encode("utf-8", "backslashreplace"))

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup finished, systemd may start units ordered after us."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=_one_line(status))

    def status(self, text: str) -> bool:
        """STATUS=: the one line ``systemctl status`` shows."""
        return self.notify(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """WATCHDOG=1: keep-alive ping (use Watchdog for pings gated on progress)."""
        return self.notify(WATCHDOG=1)

    def stopping(self) -> bool:
        """STOPPING=1: shutdown began, so a slow stop is not mistaken for a hang."""
        return self.notify(STOPPING=1)

    def reloading(self) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload (systemd >= 253) requires."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=usec)

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=: ask for more time to start or stop (e.g. sensor warm-up)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        """Close the socket (it is reopened on the next send)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, payload: bytes) -> bool:
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(payload, self._address)
            return True
        except OSError as exc:
            self._report(f"sd_notify to {self.socket_name} failed: {exc}")
            return False

    def _report(self, text: str) -> None:
        if not self._reported:
            self._reported = True
            log.warning(text, extra={"EVENT": "notify_error"})


def _one_line(text: str) -> str:
    """Collapse whitespace runs with newlines and cap at STATUS_MAX characters."""
    text = " ".join(str(text).splitlines()).strip()
    if len(text) > STATUS_MAX:
        text = text[: STATUS_MAX - 3] + "..."
    return text


class Beat:
    """A progress source; call it once per loop iteration (cheap: stores a timestamp)."""

    __slots__ = ("_clock", "_owner", "last", "name", "stall_after", "stalled")

    def __init__(
        self, name: str, stall_after: float, clock: Callable[[], float], owner: Watchdog
    ) -> None:
        self.name = name
        self.stall_after = stall_after
        self._clock = clock
        self._owner = owner
        self.last = clock()
        self.stalled = False

    def __call__(self) -> None:
        self.last = self._clock()

    def close(self) -> None:
        """Stop counting this source (a sensor deliberately shut down must not block pings)."""
        self._owner.unregister(self.name)


class Watchdog:
    """Pings WATCHDOG=1 from a thread, but only while every registered source makes progress.

    ``interval`` is the systemd watchdog timeout (default: the notifier's WATCHDOG_USEC);
    pings go every ``period`` seconds (default interval/2).  A source that has not beaten for
    ``stall_after`` seconds (default: interval) withholds the ping, and systemd kills and
    restarts the process once ``interval`` passes without one.  Without a watchdog interval
    everything here is a no-op, but ``register()`` still returns a usable beat.  With no
    sources registered, pings only prove the process is alive.
    """

    def __init__(
        self,
        notifier: Notifier,
        interval: float | None = None,
        *,
        period: float | None = None,
        stall_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.notifier = notifier
        self.interval = notifier.watchdog_interval if interval is None else interval
        if self.interval is not None and self.interval <= 0:
            self.interval = None
        self.period = period if period is not None else (self.interval or 0) / 2
        self.stall_after = stall_after if stall_after is not None else self.interval
        self.pings = 0
        self._clock = clock
        self._log = logger or log
        self._sources: dict[str, Beat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when systemd asked for watchdog pings."""
        return self.interval is not None and self.notifier.enabled

    def register(self, name: str, stall_after: float | None = None) -> Beat:
        """Add a progress source and return its beat; registering counts as a first beat."""
        limit = stall_after if stall_after is not None else self.stall_after
        beat = Beat(name, limit if limit is not None else float("inf"), self._clock, self)
        with self._lock:
            self._sources[name] = beat
        return beat

    def unregister(self, name: str) -> None:
        """Forget a source; unknown names are ignored."""
        with self._lock:
            self._sources.pop(name, None)

    def kept(self) -> bool:
        """No source is stalled (as the last check found): the pings are not withheld."""
        with self._lock:
            return not any(b.stalled for b in self._sources.values())

    def check(self) -> bool:
        """Ping if all sources beat within their stall_after; True when a ping was sent.

        Logs each stall once (EVENT=watchdog_stall, SENSOR=name) and its recovery once.
        """
        if not self.enabled:
            return False
        now = self._clock()
        with self._lock:
            sources = list(self._sources.values())
        healthy = True
        for beat in sources:
            age = now - beat.last
            if age > beat.stall_after:
                healthy = False
                if not beat.stalled:
                    beat.stalled = True
                    self._log.error(
                        "%s made no progress for %.1f s: withholding watchdog pings",
                        beat.name, age,
                        extra={"EVENT": "watchdog_stall", "SENSOR": beat.name,
                               "STALL_S": f"{age:.3f}"},
                    )
            elif beat.stalled:
                beat.stalled = False
                self._log.warning(
                    "%s made progress again: watchdog pings resume", beat.name,
                    extra={"EVENT": "watchdog_recovered", "SENSOR": beat.name},
                )
        if healthy and self.notifier.watchdog():
            self.pings += 1
            return True
        return False

    def start(self) -> None:
        """Start the ping thread (no-op when disabled or already running)."""
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the ping thread and wait for it (bounded by ``timeout``)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            self.check()
            if self._stop.wait(self.period):
                return


# -- the unit's device allow list, narrowed to one node's configuration ---------------------
# Hot-plugged adapters get a new minor number when they come back, so USB serial ports are
# allowed by class; everything else by its path (systemd resolves it when the unit starts).
_HOTPLUG_CLASSES = (("ttyUSB", "char-ttyUSB"), ("ttyACM", "char-ttyACM"))
GPIO_DEVICES = ("char-gpiochip", "/dev/gpiomem")


def device_allow(cfg: Any, resolve: Callable[[str], str] = os.path.realpath) -> list[str]:
    """``DeviceAllow=`` values for exactly the devices ``cfg`` uses (sorted, unique).

    Emulated buses and pins need nothing. A serial port is named by its configured path
    (a udev name such as /dev/citynode-... is resolved to see what it is)."""
    allow: set[str] = set()
    for s in cfg.sensor:
        port = getattr(s, "port", None)
        if port:
            real = resolve(port)
            cls = next((c for prefix, c in _HOTPLUG_CLASSES
                        if os.path.basename(real).startswith(prefix)), None)
            allow.add(cls or port)
        bus = getattr(s, "bus", None)
        if isinstance(bus, int):
            allow.add(f"/dev/i2c-{bus}")
        plug = getattr(s, "plug", None)
        uses_gpio = (getattr(s, "pins", None) == "gpio"
                     or (plug is not None and plug.relay_pin is not None))
        if uses_gpio:
            allow.update(GPIO_DEVICES)
    return sorted(allow)


def device_dropin(cfg: Any, resolve: Callable[[str], str] = os.path.realpath) -> str:
    """A drop-in (``/etc/systemd/system/citynode.service.d/devices.conf``) that replaces
    the unit's device classes by this node's devices: an empty ``DeviceAllow=`` first
    resets the list the unit file built."""
    lines = ["# Written by `citynode config devices`: only the devices this node's",
             "# configuration uses. Re-run it after changing sensors, then",
             "# `systemctl daemon-reload && systemctl restart citynode`.",
             "[Service]", "DevicePolicy=closed", "DeviceAllow="]
    lines += [f"DeviceAllow={d} rw" for d in device_allow(cfg, resolve)]
    return "\n".join(lines) + "\n"
