"""What a configuration needs from the machine: device nodes, files, writable directories.

``citynode config check`` (without ``--no-devices``) and the daemon at start-up ask these
questions before opening anything, so a serial ``port`` that is ``/dev/null``, a model file
that is not there or a spool directory the service cannot write is one configuration error
(exit 78) instead of a sensor that never connects or a crash loop. Nothing here opens a
device or writes a file: the answers come from ``stat``, ``access``, ``statvfs``, sysfs
and the mount table. Standard library only (the daemon imports this at start-up).
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

SERVICE_USER = "citynode"  # User= in deploy/citynode.service

#: Character-device majors that are never serial ports (when sysfs cannot tell the class).
_NOT_SERIAL = {1: "a memory device (like /dev/null or /dev/zero)", 10: "a misc device",
               13: "an input device", 29: "a framebuffer", 81: "a video device",
               89: "an I2C bus", 116: "a sound device", 180: "a raw USB device",
               189: "a raw USB device", 226: "a graphics device"}
#: File systems nothing can be created in, whatever their modes say.
_PSEUDO_FS = {"proc", "sysfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
              "securityfs", "configfs", "pstore", "bpf", "efivarfs", "fusectl", "mqueue",
              "binfmt_misc", "autofs", "nsfs", "rpc_pipefs", "hugetlbfs"}


class User(NamedTuple):
    """Whose access is checked: the service user, or whoever runs the check."""

    name: str
    uid: int
    gids: frozenset[int]
    current: bool  # the running process: os.access answers (ACLs included)


def current_user() -> User:
    uid = os.geteuid()
    try:
        import pwd

        name = pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        name = str(uid)
    return User(name, uid, frozenset(os.getgroups()) | {os.getegid()}, True)


def service_user() -> User:
    """``citynode`` when that account exists (the unit runs as it), else the current user."""
    try:
        import grp
        import pwd

        pw = pwd.getpwnam(SERVICE_USER)
    except (KeyError, ImportError):
        return current_user()
    if pw.pw_uid == os.geteuid():
        return current_user()
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if SERVICE_USER in g.gr_mem}
    return User(SERVICE_USER, pw.pw_uid, frozenset(gids), False)


# -- device nodes ------------------------------------------------------------------------
def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a device"


def _char_class(rdev: int) -> str:
    """The device's sysfs class (``tty``, ``mem``, ``i2c-dev``), or "" when sysfs cannot say."""
    link = f"/sys/dev/char/{os.major(rdev)}:{os.minor(rdev)}/subsystem"
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return ""


def serial_port_problem(path: str) -> str | None:
    """Why ``path`` cannot be a serial port (None: it can). A missing port, a directory, a
    regular file and ``/dev/null`` pass an existence check, and then the sensor never
    connects."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{path} is a symlink to {os.path.realpath(path)}, which does not exist " \
                "(is the adapter plugged in?)"
        return f"device {path} does not exist (is the sensor wired and the UART enabled?)"
    except OSError as exc:
        return f"device {path} cannot be checked: {exc.strerror or exc}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{path} is {_kind(st.st_mode)}, not a serial device (a character device " \
            "such as /dev/ttyAMA0 or /dev/ttyUSB0)"
    cls = _char_class(st.st_rdev)
    if cls and cls != "tty":
        return f"{path} is a character device of class '{cls}', not a serial port (class 'tty')"
    if not cls and os.major(st.st_rdev) in _NOT_SERIAL:
        return f"{path} is {_NOT_SERIAL[os.major(st.st_rdev)]}, not a serial port"
    return None


def i2c_bus_problem(bus: int) -> str | None:
    """Why ``/dev/i2c-<bus>`` cannot be used (None: it can)."""
    path = f"/dev/i2c-{bus}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist (enable I2C: dtparam=i2c_arm=on in config.txt, " \
            "or raspi-config)"
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{path} is {_kind(st.st_mode)}, not an I2C bus device"
    cls = _char_class(st.st_rdev)
    if cls and cls != "i2c-dev":
        return f"{path} is a character device of class '{cls}', not an I2C bus (class " \
            "'i2c-dev')"
    return None


# -- files ---------------------------------------------------------------------------------
def file_problem(path: str) -> str | None:
    """Why a file the configuration names is not there (None: it is a regular file).
    Existence only: who may read it and its mode are agent/wire/security.py's business."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{path} is a symlink to {os.path.realpath(path)}, which does not exist"
        return f"{path} does not exist"
    except PermissionError:
        return None  # reachable only by another user: the security checks say so
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is {_kind(st.st_mode)}, not a file"
    return None


# -- directories ---------------------------------------------------------------------------
def _unescape_mount(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def fs_type(path: str) -> str:
    """The file system type ``path`` is on (``ext4``, ``proc``), or "" when unknown."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            table = fh.read(4 << 20)
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, best_len = "", -1
    for row in table.splitlines():
        left, sep, right = row.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount = _unescape_mount(fields[4])
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > best_len:
            best, best_len = right.split()[0], len(mount)
    return best


def _allows(st: os.stat_result, user: User, bit: int) -> bool:
    """POSIX permission bits for ``user`` (``bit``: 4 read, 2 write, 1 search)."""
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in user.gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _may_write(path: str, user: User) -> bool:
    """Whether ``user`` can create files in the directory ``path`` (modes, not ACLs)."""
    if user.current:
        eff = os.access in os.supports_effective_ids
        return os.access(path, os.W_OK | os.X_OK, effective_ids=eff)
    real = os.path.realpath(path)
    parts = [p for p in real.split("/") if p]
    for n in range(len(parts)):  # every directory on the way must be searchable
        try:
            if not _allows(os.stat("/" + "/".join(parts[:n])), user, 1):
                return False
        except OSError:
            return False
    try:
        st = os.stat(real)
    except OSError:
        return False
    return _allows(st, user, 2) and _allows(st, user, 1)


def _owner(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def _readonly(path: str) -> str | None:
    kind = fs_type(path)
    if kind in _PSEUDO_FS:
        return f"is on a {kind} file system, where no files can be created"
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except OSError:
        pass
    return None


def dir_problem(path: str, user: User, *, created: bool = True) -> str | None:
    """Why ``user`` cannot keep files in the directory ``path`` (None: it can).

    ``created``: the daemon creates a missing directory (with its parents), so a missing
    one is fine when the nearest existing directory above it is writable.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not created:
            return f"{path} does not exist"
        if os.path.islink(path):  # mkdir cannot make it, nor should it (an unmounted disk)
            return f"{path} is a symlink to {os.path.realpath(path)}, which does not exist"
        above = os.path.dirname(os.path.abspath(path))
        while not os.path.lexists(above) and above != os.path.dirname(above):
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            return f"{path} cannot be created: {above} is not a directory"
        why = _readonly(above)
        if why:
            return f"{path} does not exist and cannot be created: {above} {why}"
        if not _may_write(above, user):
            return f"{path} does not exist and user {user.name} cannot create it " \
                f"({above} is not writable by {user.name})"
        return None
    except NotADirectoryError:
        return f"{path} cannot be created: a part of it is a file"
    except OSError as exc:
        return f"{path} cannot be checked as user {user.name}: {exc.strerror or exc}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is {_kind(st.st_mode)}, not a directory"
    why = _readonly(path)
    if why:
        return f"{path} {why}"
    if not _may_write(path, user):
        return f"{path} is not writable by user {user.name} (owner {_owner(st.st_uid)}, " \
            f"mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def writable_file_problem(path: str, user: User) -> str | None:
    """Why an existing file the daemon writes (the spool) cannot be written (None: it can,
    or it does not exist yet)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be checked as user {user.name}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is {_kind(st.st_mode)}, not a file"
    if user.current:
        ok = os.access(path, os.W_OK)
    else:
        ok = _allows(st, user, 2)
    if not ok:
        return f"{path} is not writable by user {user.name} (owner {_owner(st.st_uid)}, " \
            f"mode {stat.S_IMODE(st.st_mode):04o})"
    return None
