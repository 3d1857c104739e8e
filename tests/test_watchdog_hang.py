"""A hung sampling loop stops the watchdog pings (systemd then restarts the daemon).

The hang is real: the emulated SHT3x is told to hold the I2C bus (``stuck_after``),
so the sampling thread blocks inside a transfer, exactly as on a bus whose chip
holds SCL low. The main thread keeps running; only the loop's progress stops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_end_to_end import NotifySocket, wait_for

from agent.core import config
from drivers.emulation.i2c import FakeBus, parse_i2c_faults
from drivers.sht3x.emulator import SHT3xModel

ROOT = Path(__file__).resolve().parent.parent

CFG = """
[node]
id = "hang-1"
state_dir = "{state}"
[report]
interval_s = 2
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
read_interval_s = 0.3
emulator_faults = "stuck_after={after}"
"""


def test_fault_spec_is_checked() -> None:
    assert parse_i2c_faults("nack=0.1, stuck_after=30") == {"nack": 0.1, "stuck_after": 30.0}
    for bad in ("nack=2", "stuck_after=-1", "bogus=1", "nack", "flip=x", "detached=0.5"):
        with pytest.raises(ValueError):
            parse_i2c_faults(bad)


def test_emulator_faults_only_on_the_emulated_bus() -> None:
    with pytest.raises(config.ConfigError, match=r"emulator_faults: only for bus"):
        config.parse(CFG.format(state="/tmp/x", after=1).replace('"emulator"', "1"),
                     check_devices=False)
    with pytest.raises(config.ConfigError, match=r"emulator_faults: 'stuck_after=x'"):
        config.parse(CFG.format(state="/tmp/x", after="x"))


def test_stuck_bus_blocks_transfers_until_released() -> None:
    now = [0.0]
    bus = FakeBus({0x44: SHT3xModel()}, clock=lambda: now[0],
                  sleep=lambda s: now.__setitem__(0, now[0] + s))
    bus.fault(0x44, stuck_after=10)
    bus.write_byte(0x44, 0x30)  # before the deadline: answered at once
    assert now[0] == 0.0
    released = []

    def sleep(s: float) -> None:
        now[0] += s
        if now[0] > 12:
            bus.faults[0x44].stuck_at = None  # power-cycled
            released.append(now[0])

    bus._sleep = sleep
    now[0] = 10.0
    bus.write_byte(0x44, 0x30)
    assert released and now[0] > 12


@pytest.mark.timeout(60)
def test_hung_sampling_loop_stops_watchdog_pings(tmp_path: Path) -> None:
    cfg = tmp_path / "citynode.toml"
    cfg.write_text(CFG.format(state=tmp_path / "state", after=4))
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000",
           "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    with open(tmp_path / "agent.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: notify.lines("READY") and len(notify.lines("WATCHDOG")) >= 3, 15,
                     "READY and watchdog pings while the loop makes progress")
            time.sleep(9)  # the bus hangs 4 s after start; the loop's deadline passes
            before = len(notify.lines("WATCHDOG"))
            time.sleep(3)
            assert proc.poll() is None, "the daemon itself keeps running"
            assert len(notify.lines("WATCHDOG")) == before, "pings must stop"
        finally:
            proc.kill()
            proc.wait(5)
            notify.close()
