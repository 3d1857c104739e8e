"""agent.core.journal against a real systemd-journald, run privately in its own namespaces.

Recipe from docs: unshare a mount namespace, put tmpfs over /run/systemd, /run/log and
/var/log/journal, bind-mount a volatile journald.conf, start journald, log, read back with
journalctl.  A PID namespace as well (``--pid --fork --kill-child``) means that whatever
happens (timeout, crash), the kernel kills journald with the namespace: nothing stays running
and nothing outside the namespace is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

JOURNALD = "/lib/systemd/systemd-journald"
REPO = Path(__file__).resolve().parent.parent

JOURNALD_CONF = """\
[Journal]
Storage=volatile
ReadKMsg=no
RateLimitBurst=0
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
"""

# Runs inside the namespaces; $1 = work dir, $2 = python, $3 = marker.
SCRIPT = r"""
set -eu
work=$1 py=$2 mark=$3
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mount -t tmpfs tmpfs /var/log/journal
mount --bind "$work/journald.conf" /etc/systemd/journald.conf
/lib/systemd/systemd-journald 2>"$work/journald.err" &
jpid=$!
trap 'kill $jpid 2>/dev/null; wait $jpid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.025; done
[ -S /run/systemd/journal/socket ] || { echo "journald did not start" >&2; exit 90; }
timeout 30 "$py" "$work/client.py" "$mark" 2>"$work/client.err"
dir=/run/log/journal/$(cat /etc/machine-id)
for _ in $(seq 200); do
    if journalctl -D "$dir" -o json --all --no-pager "TEST_MARK=$mark" >"$work/out.json" \
        2>/dev/null && grep -q '"EVENT":"done"' "$work/out.json"; then
        exit 0
    fi
    sleep 0.025
done
echo "entries did not show up in journalctl" >&2
exit 91
"""

CLIENT = """\
import logging, sys
sys.path.insert(0, {repo!r})
from agent.core.journal import JournalHandler, setup_logging

mark = sys.argv[1]
log = setup_logging("journal", "debug", identifier="citynode-test", node_id="n-real")
pm = log.getChild("pm")
pm.info("port reopened", extra={{"SENSOR": "pm", "EVENT": "reopen", "TEST_MARK": mark}})
try:
    1 / 0
except ZeroDivisionError:
    pm.exception("sampling failed", extra={{"SENSOR": "pm", "EVENT": "crash", "TEST_MARK": mark}})

# An entry too big for the send buffer: it must go through the sealed-memfd path.
big = logging.getLogger("citynode-big")
big.propagate = False
big.addHandler(JournalHandler("citynode-test", sndbuf=4096))
big.warning("B" * 300000 + "\\nend", extra={{"EVENT": "big", "TEST_MARK": mark}})

log.info("done", extra={{"EVENT": "done", "TEST_MARK": mark}})
"""


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (mount namespaces, tmpfs mounts)"
    for tool in ("unshare", "journalctl", "timeout"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.access(JOURNALD, os.X_OK):
        return f"{JOURNALD} not installed (apt-get install systemd)"
    machine_id = Path("/etc/machine-id")
    if not machine_id.exists() or not machine_id.read_text().strip():
        return "no /etc/machine-id (journalctl -D needs it)"
    if not Path("/etc/systemd/journald.conf").exists():
        return "no /etc/systemd/journald.conf to bind-mount over"
    for d in ("/run/systemd", "/run/log", "/var/log/journal"):
        if not Path(d).is_dir():
            return f"{d} missing (a mount point is needed; not creating it on the host)"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "-p", "-f", "--kill-child",
         "--mount-proc", "true"],
        check=False, capture_output=True, text=True, timeout=10,
    )
    if probe.returncode != 0:
        return f"unshare does not work here: {probe.stderr.strip()}"
    return None


def test_real_journald_round_trip() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    mark = uuid.uuid4().hex
    with tempfile.TemporaryDirectory(prefix="cn-journald-") as tmp:
        work = Path(tmp)
        (work / "journald.conf").write_text(JOURNALD_CONF)
        (work / "client.py").write_text(CLIENT.format(repo=str(REPO)))
        started = time.monotonic()
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "-p", "-f", "--kill-child",
             "--mount-proc", "bash", "-c", SCRIPT, "journald-test", str(work), sys.executable,
             mark],
            check=False, capture_output=True, text=True, timeout=60,
        )
        elapsed = time.monotonic() - started
        client_err = (work / "client.err").read_text() if (work / "client.err").exists() else ""
        detail = (f"rc={proc.returncode} stderr={proc.stderr!r} client={client_err!r} "
                  f"journald={(work / 'journald.err').read_text()!r}")
        assert proc.returncode == 0, detail
        # The handler never fell back: nothing on the client's stderr.
        assert client_err == "", detail
        entries = [json.loads(line) for line in (work / "out.json").read_text().splitlines()]
    print(f"real journald round trip: {elapsed:.2f} s")

    by_event = {e["EVENT"]: e for e in entries}
    assert set(by_event) == {"reopen", "crash", "big", "done"}

    reopen = by_event["reopen"]
    assert reopen["MESSAGE"] == "port reopened"
    assert (reopen["NODE_ID"], reopen["SENSOR"]) == ("n-real", "pm")
    assert reopen["PRIORITY"] == "6"
    assert reopen["SYSLOG_IDENTIFIER"] == "citynode-test"
    assert reopen["LOGGER"] == "citynode.pm"
    assert reopen["CODE_FUNC"] == "<module>" and reopen["CODE_FILE"].endswith("client.py")
    assert int(reopen["_PID"]) > 0  # journald's own trusted field: it really came from a socket

    crash = by_event["crash"]
    assert crash["PRIORITY"] == "3"
    assert (crash["NODE_ID"], crash["SENSOR"]) == ("n-real", "pm")
    message = crash["MESSAGE"]
    assert message.startswith("sampling failed\nTraceback (most recent call last):\n")
    assert message.rstrip().endswith("ZeroDivisionError: division by zero")

    big = by_event["big"]
    assert big["MESSAGE"] == "B" * 300000 + "\nend"
    assert "NODE_ID" not in big  # a separate handler without the node-id filter
