"""Check 6: the clock (NTP synchronisation, a plausible year)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

from .base import FAIL, MIN_YEAR, OK, WARN, Check
from .hints import HINT_NTP, HINT_YEAR


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
