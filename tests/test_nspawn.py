"""The installed unit under a real systemd booted in systemd-nspawn (``make test-nspawn``).

What ops engineers rely on, seen from systemd itself: READY and the STATUS line, the
sandbox in effect, the structured journal fields, messages at a broker, a clean flush
on SIGTERM, a configuration error that exits 78 without a restart loop, and a hung
sampling loop (a stuck I2C bus) killed by the watchdog and restarted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nspawn import Container, require, rootfs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.nspawn, pytest.mark.timeout(900)]
VENV = "/opt/citynode/venv"

CONFIG = """
[node]
id = "nspawn-1"
[report]
interval_s = 2
[mqtt]
host = "127.0.0.1"
port = 1883
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
read_interval_s = 0.5
{faults}
[[sensor]]
type = "bme280"
name = "bme"
bus = "emulator"
prefix = "bme."
read_interval_s = 0.5
{extra}"""
#: An emulated accelerometer: the fall model loads and runs inside the sandbox (fire
#: detection, on the climate sensors, runs on rules and has no model since 2026.12).
ACCEL = """
[[sensor]]
type = "adxl345"
name = "wear"
bus = "emulator"
prefix = "acc."
"""

SUBSCRIBE = """
import json, sys, time
from agent.tools.simulate import Subscriber
got = []
sub = Subscriber("127.0.0.1", 1883, "citynode/nspawn-1/#", lambda t, d, r: got.append((t, d, r)))
sub.start()
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    time.sleep(0.1)
sub.stop()
for t, d, r in got:
    print(json.dumps({"topic": t, "retained": r, "data": d}, default=str))
"""


def _bundle(tmp: Path) -> Path:
    """The offline bundle for this machine's architecture (the Pi's is aarch64)."""
    out = tmp / "dist"
    subprocess.run([sys.executable, str(ROOT / "deploy" / "bundle.py"), "--arch", "x86_64",
                    "--extras", "tflite",
                    "--out", str(out)], check=True, timeout=600, capture_output=True)
    return next(out.glob("citynode-bundle-*-x86_64.tar.gz"))


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    require()
    tmp = tmp_path_factory.mktemp("nspawn")
    bundle = _bundle(tmp)
    c = Container(rootfs(), {str(bundle.parent): "/mnt/dist", str(ROOT / "deploy"): "/mnt/deploy"},
                  tmp / "console.log")
    try:
        # install.sh from the offline bundle, as on a Pi (--force: this is x86_64, and
        # --no-boot-config: no config.txt in a container); no network in the container.
        inst = c.sh(f"/bin/bash /mnt/deploy/install.sh --bundle /mnt/dist/{bundle.name} --force "
                    "--no-boot-config", timeout=600)
        assert "citynode" in inst.stdout
        assert c.sh("systemctl is-enabled citynode").stdout.strip() == "enabled"
        assert set(c.sh("id -nG citynode").stdout.split()) >= {"dialout", "i2c", "gpio"}
        again = c.sh(f"/bin/bash /mnt/deploy/install.sh --bundle /mnt/dist/{bundle.name} "
                     "--force --no-boot-config", timeout=600)
        assert "nothing changed" in again.stdout, again.stdout
        c.sh("systemctl start mosquitto")
        yield c
    finally:
        c.stop()


def _configure(c: Container, faults: str = "", dropin: str = "", extra: str = "") -> None:
    c.sh("systemctl stop citynode 2>/dev/null; systemctl reset-failed citynode 2>/dev/null; "
         "rm -rf /etc/systemd/system/citynode.service.d; true")
    c.write("/etc/citynode/citynode.toml", CONFIG.format(faults=faults, extra=extra), "0640")
    c.sh("chgrp citynode /etc/citynode/citynode.toml")
    if dropin:
        c.write("/etc/systemd/system/citynode.service.d/test.conf", dropin)
    c.sh("systemctl daemon-reload")


def _subscribe(c: Container, seconds: float) -> list[dict]:
    out = c.sh(f"{VENV}/bin/python - {seconds}", input=SUBSCRIBE, timeout=seconds + 30).stdout
    return [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_ready_status_sandbox_journal_messages_and_clean_stop(box):
    _configure(box, extra=ACCEL)
    t0 = time.monotonic()
    box.sh("systemctl start citynode")  # Type=notify: returns once READY=1 arrived
    ready_s = time.monotonic() - t0
    props = box.show("citynode", "ActiveState", "SubState", "StatusText", "MainPID",
                     "NRestarts", "WatchdogUSec")
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert ready_s < 30
    _wait(lambda: "sht" in box.show("citynode", "StatusText")["StatusText"], 20,
          "a STATUS line naming the sensors")
    assert props["WatchdogUSec"] == "30s"

    # The sandbox: a dedicated user in the device groups, no capabilities.
    pid = props["MainPID"]
    status = box.sh(f"cat /proc/{pid}/status").stdout
    uid = box.sh("id -u citynode").stdout.strip()
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
    assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status
    assert box.sh("stat -c %U /var/lib/citynode").stdout.strip()\
        .endswith("citynode")

    # Messages at the broker, decoded.
    msgs = _subscribe(box, 6)
    tele = [m for m in msgs if m["topic"].endswith("/telemetry")]
    names = {r["n"] for m in tele for r in m["data"]["records"]}
    assert {"temp", "rh"} <= names, names
    state = [m for m in msgs if m["topic"].endswith("/state")]
    assert state and state[0]["retained"]

    # journald holds the structured fields.
    entries = [json.loads(ln) for ln in box.sh(
        "journalctl -u citynode -o json --no-pager").stdout.splitlines() if ln.startswith("{")]
    ours = [e for e in entries if e.get("NODE_ID") == "nspawn-1"]
    assert ours, entries[-5:]
    assert any(e.get("SENSOR") == "sht" for e in ours)
    assert all("MESSAGE" in e for e in ours)

    # citynode status reads the daemon's snapshot in its RuntimeDirectory.
    st = box.sh(f"{VENV}/bin/citynode status --json", check=False)
    assert st.returncode == 0, st.stdout + st.stderr
    snap = json.loads(st.stdout)
    assert {s["name"] for s in snap["sensors"]} >= {"sht", "bme", "wear"}, snap
    # the fall model runs inside the sandbox (MemoryDenyWriteExecute, syscall filter)
    model_log = [e.get("MESSAGE") for e in entries if "model" in str(e.get("MESSAGE", ""))]
    assert snap["models"].get("fall", "").startswith("fall "), (snap["models"], model_log)
    assert "fire" not in snap["models"] and "fire_alarms" in snap["features"]["safety"]
    log = box.sh("journalctl -u citynode -o cat --no-pager").stdout
    assert "fall_model" not in log and "fire_model" not in log, log[-2000:]
    assert box.sh("stat -c %a /run/citynode").stdout.strip() == "755"

    # SIGTERM (systemctl stop): flushed, "offline" retained, exit status 0.
    box.sh("systemctl stop citynode")
    after = box.show("citynode", "ActiveState", "ExecMainStatus", "Result")
    assert after == {"ActiveState": "inactive", "ExecMainStatus": "0", "Result": "success"}, after
    log = box.sh("journalctl -u citynode -o cat --no-pager").stdout
    assert "Stopping" in log or "stopping" in log
    assert box.sh(f"{VENV}/bin/citynode status", check=False).returncode == 3
    retained = _subscribe(box, 2)
    st = [m for m in retained if m["topic"].endswith("/state")]
    assert st and {"n": "status", "vs": "offline"} in st[-1]["data"]["records"]


def test_configuration_error_exits_78_without_restart_loop(box):
    _configure(box)
    box.write("/etc/citynode/citynode.toml", '[node]\nid = "nspawn-1"\nbogus = 1\n', "0644")
    box.sh("systemctl start citynode", check=False)
    _wait(lambda: box.show("citynode", "ActiveState")["ActiveState"] in ("failed", "inactive"),
          30, "the unit to give up")
    time.sleep(8)  # longer than RestartSec: a restart would have happened by now
    props = box.show("citynode", "ActiveState", "ExecMainStatus", "NRestarts", "Result")
    assert props["ExecMainStatus"] == "78", props
    assert props["NRestarts"] == "0", props
    assert props["ActiveState"] == "failed", props
    log = box.sh("journalctl -u citynode -o cat --no-pager -n 30").stdout
    assert "bogus" in log and "unknown key" in log


def test_hung_sampling_loop_is_killed_by_the_watchdog_and_restarted(box):
    # The emulated SHT3x holds the I2C bus 5 s after start; a short watchdog for the test.
    _configure(box, faults='emulator_faults = "stuck_after=5"',
               dropin="[Service]\nWatchdogSec=3s\n")
    box.sh("systemctl start citynode")
    _wait(lambda: int(box.show("citynode", "NRestarts")["NRestarts"]) >= 1, 90,
          "a watchdog restart")
    log = box.sh("journalctl -u citynode -o cat --no-pager").stdout
    assert "Watchdog timeout" in log, log[-3000:]
    _wait(lambda: box.show("citynode", "ActiveState")["ActiveState"] == "active", 30,
          "the restarted daemon to be active")
    box.sh("systemctl stop citynode")


def test_device_dropin_narrows_the_sandbox_and_the_node_still_runs(box):
    _configure(box)
    box.sh(f"{VENV}/bin/citynode config devices /etc/citynode/citynode.toml --write")
    box.sh("systemctl daemon-reload && systemctl start citynode")
    props = box.show("citynode", "ActiveState", "DeviceAllow", "DevicePolicy")
    assert props["ActiveState"] == "active", props
    assert props["DevicePolicy"] == "closed"
    # emulated chips only: not even the UART classes of the unit file remain
    assert "ttyAMA" not in props["DeviceAllow"] and "ttyUSB" not in props["DeviceAllow"], props
    box.sh("systemctl stop citynode && rm -rf /etc/systemd/system/citynode.service.d && "
           "systemctl daemon-reload")
