"""Start-up under hostile settings (issue 14, items 1 and 4).

A spool place that cannot work (a read-only mount, /proc, a directory as the path, a
parent that is a file or cannot be created) is refused by ``config check`` and ``doctor``
before a start, and by the daemon at its start with one line and exit 78, which the unit
does not restart; it is never taken for a corrupt store (nothing is moved, nothing is
claimed to be). Any other unexpected error at start-up is one line and exit 70, never a
traceback and exit 1. And a sensor that cannot be opened says why in the journal, at
WARNING, once per reason.
"""

from __future__ import annotations

import configparser
import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core import daemon
from agent.core.aggregate import Aggregator
from agent.core.config import ConfigError, parse
from agent.core.daemon import EX_SOFTWARE, EX_TEMPFAIL, Node, exit_for
from agent.core.sampling import Health, SensorLoop
from agent.core.sensors import build_device
from agent.tools.cli import main
from agent.wire import spool as spool_mod
from agent.wire.spool import EVENT, Spool, SpoolError, SpoolLocationError
from drivers.base import DeviceError, DeviceGone

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "citynode.service"
EX_CONFIG = 78


def node_toml(state: Path, spool: str | None = None, *, broker: bool = True) -> str:
    """A node with a broker (so it has a spool) and nothing else to go wrong."""
    text = f'[node]\nid = "start-test"\nstate_dir = "{state}"\n[log]\ntarget = "stderr"\n'
    if broker:
        text += '[mqtt]\nhost = "127.0.0.1"\nport = 1\n'
    if spool is not None:
        text += f'[spool]\npath = "{spool}"\n'
    return text


def write_node(tmp: Path, spool: str | None = None, *, broker: bool = True) -> Path:
    (tmp / "state").mkdir(exist_ok=True)
    cfg = tmp / "citynode.toml"
    cfg.write_text(node_toml(tmp / "state", spool, broker=broker))
    return cfg


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with its kind and, for files, a hash of the contents."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p)] = "dir" if p.is_dir() else "other"
    return out


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _file(p: Path) -> Path:
    p.write_text("not a folder\n")
    return p


def _device(p: Path) -> Path:
    """A private character device like /dev/null (1:3), or a FIFO where mknod is not
    allowed: never the system's own /dev/null, which a spool must never replace."""
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        os.mkfifo(p)
    return p


#: Places the daemon cannot keep a spool in, without needing mounts (tests run as root,
#: which ignores permission bits: a read-only mount has its own tests below).
BAD_PLACES: dict[str, Callable[[Path], str]] = {
    "proc": lambda tmp: "/proc/citynode-spool.db",
    "proc_missing_parent": lambda tmp: "/proc/citynode-none/spool.db",
    "sysfs": lambda tmp: "/sys/citynode-spool.db",
    "directory": lambda tmp: str(_mkdir(tmp / "spooldir")),
    "file_as_parent": lambda tmp: str(_file(tmp / "plain") / "spool.db"),
    "file_as_grandparent": lambda tmp: str(_file(tmp / "plain") / "sub" / "spool.db"),
    "device": lambda tmp: str(_device(tmp / "null")),
}


def run_agent(cfg: Path, *, wrap: list[str] | None = None, code: str | None = None,
              timeout: float = 60, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """``python -m agent run --config CFG`` (or ``code`` with the config as argv[1])."""
    argv = [sys.executable, "-m", "agent", "run", "--config", str(cfg)] if code is None \
        else [sys.executable, "-c", code, str(cfg)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "CITYNODE_TRACEBACK")} | (env or {})
    return subprocess.run([*(wrap or []), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    """What a start that failed said, without the INFO lines before it."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("INFO ")]


# -- the spool refuses a bad place, and claims nothing --------------------------------------
@pytest.mark.parametrize("place", sorted(BAD_PLACES))
def test_spool_refuses_a_place_that_cannot_hold_it_and_moves_nothing(tmp_path, place, caplog):
    path = BAD_PLACES[place](tmp_path)
    before = snapshot(tmp_path)
    caplog.set_level(logging.INFO, logger="citynode")
    with pytest.raises(SpoolLocationError) as err:
        Spool(path)
    assert str(err.value).startswith(f"spool {path}: ") and "\n" not in str(err.value)
    assert snapshot(tmp_path) == before  # nothing moved, nothing created
    assert not any("moved to" in r.getMessage() for r in caplog.records)


def test_a_damaged_store_that_cannot_be_moved_aside_is_refused_and_says_so(tmp_path, caplog,
                                                                         monkeypatch):
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not sqlite" * 100)
    before = snapshot(tmp_path)

    def no_rename(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(src))

    monkeypatch.setattr(spool_mod.os, "replace", no_rename)
    with pytest.raises(SpoolLocationError, match=r"damaged .* cannot be moved aside: "
                       r"Permission denied \(nothing moved\)"):
        Spool(path)
    assert snapshot(tmp_path) == before
    assert not any("moved to" in r.getMessage() for r in caplog.records)


def test_a_corrupt_store_is_still_quarantined_and_the_log_names_what_moved(tmp_path, caplog):
    path = tmp_path / "spool.db"
    path.write_bytes(b"garbage" * 500)
    caplog.set_level(logging.ERROR, logger="citynode")
    s = Spool(path)
    try:
        assert s.quarantined is not None and s.quarantined.read_bytes() == b"garbage" * 500
        (msg,) = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
        assert f"moved to {s.quarantined}" in msg
        s.put(EVENT, "e", b"x")
    finally:
        s.close()


def test_a_spool_in_use_is_a_temporary_failure_not_a_bad_place(tmp_path):
    first = Spool(tmp_path / "spool.db")
    try:
        with pytest.raises(SpoolError, match="in use by another process") as err:
            Spool(tmp_path / "spool.db")
        assert not isinstance(err.value, SpoolLocationError)
        assert exit_for(err.value)[0] == EX_TEMPFAIL
    finally:
        first.close()


def test_a_symlink_to_a_file_not_yet_there_is_followed_as_sqlite_does(tmp_path):
    (tmp_path / "real").mkdir()
    link = tmp_path / "spool.db"
    link.symlink_to(tmp_path / "real" / "sub" / "spool.db")
    s = Spool(link)
    s.put(EVENT, "e", b"x")
    s.close()
    assert (tmp_path / "real" / "sub" / "spool.db").is_file()


# -- before the start: config check and doctor ----------------------------------------------
@pytest.mark.parametrize("place", sorted(BAD_PLACES))
def test_config_check_and_doctor_refuse_the_place(tmp_path, place, capsys):
    cfg = write_node(tmp_path, BAD_PLACES[place](tmp_path))
    assert main(["config", "check", str(cfg)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "spool.path" in err and "Traceback" not in err, err
    assert main(["config", "check", "--no-devices", str(cfg)]) == 0  # on a laptop: not asked
    capsys.readouterr()
    assert main(["doctor", "-c", str(cfg), "--only", "disk"]) == 1
    out = capsys.readouterr().out
    disk = [ln for ln in out.splitlines() if ln.startswith("disk ")]
    assert len(disk) == 1 and "FAIL" in disk[0] and "spool.path:" in disk[0], out
    assert "fix: point spool.path" in out


def test_a_good_place_passes_both(tmp_path, capsys):
    cfg = write_node(tmp_path, str(tmp_path / "not" / "yet" / "spool.db"))
    assert main(["config", "check", str(cfg)]) == 0
    assert main(["doctor", "-c", str(cfg), "--only", "disk"]) == 0
    assert not (tmp_path / "not").exists()  # checking creates nothing
    capsys.readouterr()


# -- at the start: exit 78 in one line -------------------------------------------------------
@pytest.mark.parametrize("place", sorted(BAD_PLACES))
def test_run_exits_78_in_one_line(tmp_path, place):
    path = BAD_PLACES[place](tmp_path)
    proc = run_agent(write_node(tmp_path, path))
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert "Traceback" not in proc.stderr and "moved to" not in proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "citynode.toml:" in lines[0], proc.stderr
    assert "spool.path" in lines[0] and Path(path).parts[1] in lines[0]


@pytest.mark.parametrize("place", sorted(BAD_PLACES))
def test_the_daemon_itself_refuses_a_bad_place_the_check_let_through(tmp_path, place, caplog):
    """Should the configuration's check ever miss one (a mount changed since, another
    user), the daemon's own open still ends in 78 and one line, with nothing moved."""
    path = BAD_PLACES[place](tmp_path)
    (tmp_path / "state").mkdir()
    cfg = parse(node_toml(tmp_path / "state", path), "c.toml", check_devices=False)
    before = snapshot(tmp_path)
    caplog.set_level(logging.INFO, logger="citynode")
    assert Node(cfg).run() == EX_CONFIG
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in errors] == ["cannot open the spool"]
    assert path in errors[0].getMessage() and "moved" not in errors[0].getMessage()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if "/state/" not in k} == \
        {k: v for k, v in before.items() if "/state/" not in k}


# -- a read-only mount (a bind mount in a private mount namespace) ---------------------------
def _ro_wrap(folder: Path) -> list[str]:
    return ["unshare", "-m", "sh", "-c",
            f'mount --bind "{folder}" "{folder}" && '
            f'mount -o remount,bind,ro "{folder}" "{folder}" && exec "$@"', "sh"]


@pytest.fixture(scope="module")
def ro_mounts() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run([*_ro_wrap(Path(d)), "sh", "-c", f'! touch "{d}/x"'],
                               capture_output=True, timeout=30)
        return probe.returncode == 0


def test_read_only_mount_check_doctor_run_and_an_existing_store(tmp_path, ro_mounts):
    if not ro_mounts:
        pytest.skip("no read-only bind mounts here (needs root and unshare -m)")
    ro = tmp_path / "ro"
    ro.mkdir()
    existing = Spool(ro / "spool.db")  # a healthy store with a message in it
    existing.put(EVENT, "e", b"keep me")
    existing.close()
    before = snapshot(ro)
    cfg = write_node(tmp_path, str(ro / "spool.db"))
    wrap = _ro_wrap(ro)
    check = subprocess.run([*wrap, sys.executable, "-m", "agent", "config", "check", str(cfg)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == EX_CONFIG and "read-only" in check.stderr, check.stderr
    doctor = subprocess.run([*wrap, sys.executable, "-m", "agent", "doctor", "-c", str(cfg),
                             "--only", "disk"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert doctor.returncode == 1 and "read-only" in doctor.stdout, doctor.stdout
    proc = run_agent(cfg, wrap=wrap)
    assert proc.returncode == EX_CONFIG and "Traceback" not in proc.stderr, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "read-only" in proc.stderr
    # The daemon's own open, the configuration check bypassed: 78, the store untouched.
    code = ("import sys\nfrom agent.core.config import parse\nfrom agent.core.daemon import Node\n"
            "from pathlib import Path\n"
            "cfg = parse(Path(sys.argv[1]).read_text(), sys.argv[1], check_devices=False)\n"
            "sys.exit(Node(cfg).run())\n")
    proc = run_agent(cfg, wrap=wrap, code=code)
    assert proc.returncode == EX_CONFIG and "Traceback" not in proc.stderr, proc.stderr
    assert "read-only file system" in proc.stderr and "moved" not in proc.stderr
    assert snapshot(ro) == before
    s = Spool(ro / "spool.db")
    try:
        assert s.quarantined is None and [m.payload for m in s.iter_ready(EVENT)] == [b"keep me"]
    finally:
        s.close()


@pytest.fixture
def modes_dir():
    """A folder whose modes forbid writing to whoever runs the daemon here: as root (which
    ignores modes) the commands run as ``nobody``; the path is outside pytest's private
    temporary folder, so that user can reach it."""
    base = Path(tempfile.mkdtemp(prefix="citynode-modes-"))
    base.chmod(0o755)
    (base / "ro").mkdir()
    (base / "ro").chmod(0o555)
    (base / "state").mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores modes, and setpriv is missing to drop to nobody")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        os.chown(base / "state", 65534, 65534)
    yield base, as_user
    (base / "ro").chmod(0o755)
    shutil.rmtree(base)


def test_a_directory_read_only_by_its_modes(modes_dir):
    base, as_user = modes_dir
    cfg = base / "citynode.toml"
    cfg.write_text(node_toml(base / "state", str(base / "ro" / "spool.db")))
    cfg.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}

    def agent(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, sys.executable, *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env=env)

    check = agent("-m", "agent", "config", "check", str(cfg))
    assert check.returncode == EX_CONFIG and "spool.path" in check.stderr, check.stderr
    assert "not writable by user" in check.stderr
    run = agent("-m", "agent", "run", "--config", str(cfg))
    assert run.returncode == EX_CONFIG and "Traceback" not in run.stderr, run.stderr
    assert len(error_lines(run.stderr)) == 1
    code = ("import sys\nfrom pathlib import Path\nfrom agent.core.config import parse\n"
            "from agent.core.daemon import Node\n"
            "cfg = parse(Path(sys.argv[1]).read_text(), sys.argv[1], check_devices=False)\n"
            "sys.exit(Node(cfg).run())\n")
    own = agent("-c", code, str(cfg))
    assert own.returncode == EX_CONFIG and "Traceback" not in own.stderr, own.stderr
    assert "cannot create files in" in own.stderr and "Permission denied" in own.stderr
    assert list((base / "ro").iterdir()) == []


def test_a_full_disk_at_start_is_a_temporary_failure(tmp_path, ro_mounts):
    if not ro_mounts:
        pytest.skip("no private mounts here (needs root and unshare -m)")
    full = tmp_path / "full"
    full.mkdir()
    wrap = ["unshare", "-m", "sh", "-c",
            f'mount -t tmpfs -o size=64k tmpfs "{full}" && '
            f'(dd if=/dev/zero of="{full}/fill" bs=4k count=64 2>/dev/null; true) && exec "$@"',
            "sh"]
    proc = run_agent(write_node(tmp_path, str(full / "spool.db")), wrap=wrap)
    assert proc.returncode == EX_TEMPFAIL, proc.stderr  # retried: space may come back
    assert "Traceback" not in proc.stderr and "moved" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "no space left" in line


# -- any other error at start-up: 70 (or 78 for a path), one line ----------------------------
BUG_BEFORE_LOGGING = """
import sys
import agent.core.daemon as d
def boom(*a, **k):
    raise ValueError("a bug\\nover two lines")
d.Node.__init__ = boom
from agent.tools.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""

BUG_IN_START_UP = """
import sys
import agent.core.daemon as d
def boom(*a, **k):
    raise {exc}
d.start_features = boom
from agent.tools.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


@pytest.mark.parametrize(("code", "want", "says"), [
    (BUG_BEFORE_LOGGING, EX_SOFTWARE, "internal error at "),
    (BUG_IN_START_UP.format(exc="KeyError('model')"), EX_SOFTWARE, "internal error at "),
    (BUG_IN_START_UP.format(exc="PermissionError(13, 'Permission denied', '/x/model')"),
     EX_CONFIG, "/x/model: Permission denied"),
    (BUG_IN_START_UP.format(exc="OSError(28, 'No space left on device', '/x')"),
     EX_TEMPFAIL, "No space left"),
])
def test_any_start_up_error_is_one_line_and_a_documented_code(tmp_path, code, want, says):
    proc = run_agent(write_node(tmp_path, broker=False), code=code)
    assert proc.returncode == want, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and says in lines[0], proc.stderr


@pytest.mark.parametrize("code", [BUG_BEFORE_LOGGING,
                                  BUG_IN_START_UP.format(exc="KeyError('model')")])
def test_a_traceback_only_when_asked_for_a_bug_report(tmp_path, code):
    proc = run_agent(write_node(tmp_path, broker=False), code=code,
                     env={"CITYNODE_TRACEBACK": "1"})
    assert proc.returncode == EX_SOFTWARE and "Traceback" in proc.stderr, proc.stderr


def test_a_failed_start_stops_what_it_started(tmp_path, monkeypatch, caplog):
    cfg = parse(node_toml(tmp_path / "state", broker=False) +
                '[[sensor]]\nname = "pm"\ntype = "pms5003"\nport = "/dev/null"\n',
                "c.toml", check_devices=False)
    node = Node(cfg)
    real = node._start_sensors

    def start_then_fail(*a):
        real(*a)
        raise RuntimeError("after the sensors")

    monkeypatch.setattr(node, "_start_sensors", start_then_fail)
    threads = set(threading.enumerate())
    assert node.run() == EX_SOFTWARE
    assert all(not lp.is_alive() for lp in node.loops)
    time.sleep(0.1)
    assert not [t for t in set(threading.enumerate()) - threads if t.is_alive()]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.startswith("cannot start: internal error at ") and "after the sensors" in line


def test_a_failed_start_after_the_uplink_says_goodbye_and_frees_the_spool(tmp_path, mosquitto):
    """The broker must not keep a retained "online" for a daemon that never started."""
    from agent.tools.simulate import Subscriber

    (tmp_path / "state").mkdir()
    text = node_toml(tmp_path / "state").replace(
        'host = "127.0.0.1"\nport = 1', f'host = "{mosquitto.host}"\nport = {mosquitto.port}')
    node = Node(parse(text, "c.toml", check_devices=False))

    def fail_once_connected(*a):
        _wait(lambda: node.uplink is not None and node.uplink.connected, 10)
        assert node.uplink.connected
        raise RuntimeError("sensors exploded")

    node._start_sensors = fail_once_connected  # type: ignore[method-assign]
    assert node.run() == EX_SOFTWARE
    states: list[dict] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "citynode/start-test/state",
                     lambda t, d, r: states.append(d))
    sub.start()
    try:
        _wait(lambda: bool(states), 5)
    finally:
        sub.stop()
    assert states and {"n": "status", "vs": "offline"} in states[-1]["records"], states
    Spool(tmp_path / "state" / "spool.db").close()  # closed: not "in use by another process"


_EXCEPTIONS = st.one_of(
    st.builds(lambda cls, msg: cls(msg),
              st.sampled_from([ValueError, KeyError, RuntimeError, TypeError, AssertionError,
                               MemoryError, ZeroDivisionError, sqlite3.DatabaseError,
                               SpoolError, SpoolLocationError, UnicodeError]),
              st.text(max_size=200)),
    st.builds(lambda no, msg, name: OSError(no, msg, name) if name else OSError(no, msg),
              st.sampled_from(sorted(errno.errorcode)), st.text(max_size=80),
              st.one_of(st.none(), st.text(min_size=1, max_size=80))),
    st.builds(lambda msg: ConfigError(msg, path="c.toml", key="spool.path", line=3),
              st.text(max_size=100)),
)


@given(_EXCEPTIONS, st.booleans())
@settings(max_examples=300, deadline=None)
def test_exit_for_is_one_line_and_a_documented_code(exc, raised):
    if raised:  # with a traceback to name the place from
        try:
            raise exc
        except BaseException as caught:  # any of them
            exc = caught
    code, line = exit_for(exc)
    assert code in (EX_SOFTWARE, EX_TEMPFAIL, EX_CONFIG)
    if isinstance(exc, (SpoolLocationError, ConfigError)):
        assert code == EX_CONFIG
    elif isinstance(exc, SpoolError):
        assert code == EX_TEMPFAIL
    elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.ENOENT):
        assert code == EX_CONFIG
    elif not isinstance(exc, OSError):
        assert code == EX_SOFTWARE and line.startswith("internal error")
    if code == EX_SOFTWARE:
        assert "\n" not in line and "Traceback" not in line and len(line) < 600


# -- the property: the check and the daemon agree on every place ----------------------------
_DIR_PARTS = st.lists(st.sampled_from(["dir", "missing", "file", "link_dir", "link_missing"]),
                      max_size=3)
_LEAVES = st.sampled_from(["missing", "empty", "garbage", "database", "directory", "fifo",
                           "link_missing", "link_into_missing_dir", "link_device"])


def _build(root: Path, parts: list[str], leaf: str) -> Path:
    """Make a spool path under ``root`` from folder kinds and a leaf kind."""
    at = root
    for i, kind in enumerate(parts):
        nxt = at / f"p{i}"
        if at.is_dir():
            if kind == "dir":
                nxt.mkdir()
            elif kind == "file":
                nxt.write_text("x")
            elif kind == "link_dir":
                (root / f"t{i}").mkdir()
                nxt.symlink_to(root / f"t{i}")
            elif kind == "link_missing":
                nxt.symlink_to(root / f"gone{i}")
        at = nxt
    path = at / "spool.db"
    if not at.is_dir():
        return path
    if leaf == "empty":
        path.write_bytes(b"")
    elif leaf == "garbage":
        path.write_bytes(b"\x00garbage" * 300)
    elif leaf == "database":
        s = Spool(path)
        s.put(EVENT, "e", b"x")
        s.close()
    elif leaf == "directory":
        path.mkdir()
    elif leaf == "fifo":
        os.mkfifo(path)
    elif leaf == "link_missing":
        path.symlink_to(at / "elsewhere.db")
    elif leaf == "link_into_missing_dir":
        path.symlink_to(root / "nowhere" / "spool.db")
    elif leaf == "link_device":
        path.symlink_to(_device(root / "null"))
    return path


@given(st.booleans(), _DIR_PARTS, _LEAVES)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_config_check_and_the_spool_agree_on_every_place(in_proc, parts, leaf):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        path = Path("/proc/citynode-x") / "spool.db" if in_proc else _build(root, parts, leaf)
        (root / "state").mkdir()
        refused = None
        try:
            parse(node_toml(root / "state", str(path)), "c.toml")
        except ConfigError as exc:
            refused = exc
            assert exc.key in ("spool.path", "node.state_dir"), exc
        before = snapshot(root)
        try:
            s = Spool(path)
        except SpoolLocationError:
            assert refused is not None, f"config check passed a place the daemon refuses: {path}"
            assert snapshot(root) == before
            return
        except SpoolError as exc:
            pytest.fail(f"{path}: {exc}")
        try:
            assert refused is None, f"config check refused a usable place: {refused}"
            s.put(EVENT, "e", b"x")
        finally:
            s.close()


# -- the unit: 78 is final, 70 is retried within a limit --------------------------------------
def test_the_unit_does_not_restart_on_78_and_bounds_restarts_on_70():
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read(UNIT)
    svc, unit = cp["Service"], cp["Unit"]
    prevent = svc["RestartPreventExitStatus"].split()
    assert "78" in prevent and "70" not in prevent and "75" not in prevent
    assert svc["Restart"] == "on-failure"  # 70 and 75 are retried...
    assert int(unit["StartLimitBurst"]) <= 10 and int(unit["StartLimitIntervalSec"]) >= 60


# -- item 4: why a sensor cannot be opened, in the journal ------------------------------------
def _pms(port: str):
    cfg = parse(node_toml(Path("/tmp"), broker=False) +
                f'[[sensor]]\nname = "pm"\ntype = "pms5003"\nport = "{port}"\n',
                "c.toml", check_devices=False)
    return build_device(cfg.sensor[0])


class Counting:
    """Counts open() attempts on a real device."""

    def __init__(self, device) -> None:
        self.device, self.attempts = device, 0

    def __getattr__(self, name):
        return getattr(self.device, name)

    def open(self) -> None:
        self.attempts += 1
        self.device.open()


def _open_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "citynode.sampling"
            and r.levelno == logging.WARNING and getattr(r, "EVENT", "") == "open_failed"]


def _loop(device, health: list) -> SensorLoop:
    return SensorLoop("pm", device, Aggregator("pm"), reopen_initial_s=0.005,
                      reopen_max_s=0.01, on_health=lambda *a: health.append(a))


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["devnull", "directory"])
def test_the_reason_a_port_cannot_be_opened_is_a_warning_once(tmp_path, kind, caplog):
    port = "/dev/null" if kind == "devnull" else str(_mkdir(tmp_path / "ttyDIR"))
    caplog.set_level(logging.DEBUG, logger="citynode")
    dev = Counting(_pms(port))
    health: list = []
    loop = _loop(dev, health)
    loop.start()
    _wait(lambda: dev.attempts >= 20)
    loop.stop()
    assert dev.attempts >= 20
    (w,) = _open_warnings(caplog)  # once, not at every retry
    assert port in w.getMessage() and w.getMessage().startswith("sensor pm cannot be opened: ")
    assert w.SENSOR == "pm"
    why = "Inappropriate ioctl" if kind == "devnull" else "Is a directory"
    assert why in w.getMessage()
    assert loop.health is Health.STOPPED


def test_a_new_reason_is_logged_again_and_so_is_the_old_one_after_an_open(tmp_path, caplog):
    port = tmp_path / "ttyX"
    port.mkdir()
    caplog.set_level(logging.INFO, logger="citynode")
    dev = Counting(_pms(str(port)))
    loop = _loop(dev, [])
    loop.start()
    _wait(lambda: dev.attempts >= 5)
    port.rmdir()  # now it is missing: another reason
    n = dev.attempts
    _wait(lambda: dev.attempts >= n + 5)
    loop.stop()
    msgs = [r.getMessage() for r in _open_warnings(caplog)]
    assert len(msgs) == 2 and "Is a directory" in msgs[0] and "Is a directory" not in msgs[1]


class Script:
    """A device whose open() follows a script: an error text, or "" to open."""

    warming_up = False

    def __init__(self, opens: list[str]) -> None:
        self.opens, self.attempts, self.polls = list(opens), 0, 0

    def open(self) -> None:
        self.attempts += 1
        step = self.opens.pop(0) if self.opens else ""
        if step:
            raise DeviceError(step)

    def poll(self):
        self.polls += 1
        time.sleep(0.002)
        if self.polls == 3:
            raise DeviceGone("cable pulled")
        return []

    def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {}


def test_the_same_reason_after_a_good_open_is_news_again(caplog):
    caplog.set_level(logging.INFO, logger="citynode")
    dev = Script(["no such port"] * 4 + [""] + ["no such port"] * 3)
    loop = _loop(dev, [])
    loop.start()
    _wait(lambda: dev.attempts >= 10)
    loop.stop()
    assert [r.getMessage() for r in _open_warnings(caplog)] == [
        "sensor pm cannot be opened: no such port"] * 2


def test_the_node_logs_the_reason_where_it_used_to_say_only_disconnected(tmp_path, caplog):
    """The daemon as a whole, local mode, a PMS5003 on /dev/null: the journal has why."""
    cfg = parse(node_toml(tmp_path / "state", broker=False) +
                '[[sensor]]\nname = "pm"\ntype = "pms5003"\nport = "/dev/null"\n',
                "c.toml", check_devices=False)
    caplog.set_level(logging.INFO, logger="citynode")
    node = Node(cfg)
    t = threading.Thread(target=node.run)
    t.start()
    _wait(lambda: any(getattr(r, "EVENT", "") == "ready" for r in caplog.records))
    node.request_stop()
    t.join(10)
    (w,) = _open_warnings(caplog)
    assert "/dev/null" in w.getMessage() and "Inappropriate ioctl" in w.getMessage()
    ready = [r for r in caplog.records if getattr(r, "EVENT", "") == "ready"]
    assert ready and ready[0].created >= w.created  # the reason comes before "ready"


def test_daemon_module_exports_the_codes():
    assert (daemon.EX_SOFTWARE, daemon.EX_TEMPFAIL, daemon.EX_CANTCREAT) == (70, 75, 73)
