"""Agent core: boot sessions, aggregation and quality flags, supervised loops, local mode."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

import pytest

from agent.core import config
from agent.core.aggregate import Aggregator, Quality
from agent.core.daemon import Node, StateDirError, next_boot_session
from agent.core.sampling import Health, SensorLoop
from agent.tools.simulate import write_config
from drivers.base import DeviceError, DeviceGone, Reading
from drivers.emulation import SerialEmulator
from drivers.pms5003.emulator import PMS5003Model


def r(**values: float) -> Reading:
    return Reading(values, time.monotonic(), time.time())


# -- boot session ----------------------------------------------------------------------
def test_boot_session_increments_and_persists(tmp_path):
    assert [next_boot_session(tmp_path) for _ in range(3)] == [1, 2, 3]
    assert (tmp_path / "boot_session").read_text().strip() == "3"


def test_corrupt_boot_session_file_never_repeats_a_session(tmp_path):
    (tmp_path / "boot_session").write_text("garbage\x00")
    s = next_boot_session(tmp_path)
    assert s > 1000  # continued above the file's mtime, so earlier sessions are not reused
    assert next_boot_session(tmp_path) == s + 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_state_dir(tmp_path):
    tmp_path.chmod(0o500)
    with pytest.raises(StateDirError):
        next_boot_session(tmp_path / "x")


def test_unwritable_state_dir_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(StateDirError, match="state directory"):
        next_boot_session(f / "sub")


# -- aggregation -------------------------------------------------------------------------
def test_window_statistics_and_records():
    agg = Aggregator("pm", valid_range={"pm25": (0, 1000)})
    for v in (10, 20, 30):
        agg.add(r(pm25=v, pm10=v + 1))
    s = agg.close_window()
    assert s.samples == 3 and s.flags == Quality(0)
    assert s.stats["pm25"] == (20, 10, 30)
    names = [rec.name for rec in agg.records(s, ["mean", "min", "max", "count"])]
    assert names == ["pm25", "pm25:min", "pm25:max", "pm10", "pm10:min", "pm10:max", "pm:n"]
    assert [rec.name for rec in agg.records(s, ["mean"])] == ["pm25", "pm10"]


def test_empty_window_is_stale_and_flags_carry():
    agg = Aggregator("pm", prefix="b.")
    s = agg.close_window(carry=Quality.DISCONNECTED)
    assert s.flags == Quality.STALE
    s = agg.close_window()
    assert s.flags == Quality.STALE | Quality.DISCONNECTED
    recs = agg.records(s, ["mean", "count"])
    assert [(x.name, x.value) for x in recs] == [("pm:n", 0), ("pm:q", 0x0A)]


def test_out_of_range_is_flagged_not_dropped():
    agg = Aggregator("pm", prefix="b.", valid_range={"pm25": (0, 1000)})
    agg.add(r(pm25=5000))
    s = agg.close_window()
    assert Quality.OUT_OF_RANGE in s.flags and s.stats["pm25"][0] == 5000
    assert agg.records(s, ["mean"])[0].name == "b.pm25"


def test_non_finite_values_are_errors_not_data():
    agg = Aggregator("pm")
    agg.add(r(pm25=float("nan")))
    s = agg.close_window()
    assert Quality.ERRORS in s.flags and "pm25" not in s.stats


# -- supervised sampling loop -------------------------------------------------------------
class FlakyDevice:
    """A device that misbehaves in every way a driver can."""

    quantities = ("x",)

    def __init__(self, script):
        self.script = iter(script)
        self.opens = 0
        self.closed = 0

    def open(self):
        self.opens += 1
        if self.opens == 1:
            raise DeviceGone("no such port")

    def close(self):
        self.closed += 1

    def poll(self):
        time.sleep(0.005)
        step = next(self.script, "ok")
        if step == "gone":
            raise DeviceGone("cable pulled")
        if step == "error":
            raise DeviceError("no valid frame")
        if step == "bug":
            raise ZeroDivisionError("driver bug")
        return [r(x=1.0)]

    @property
    def warming_up(self):
        return False

    def stats(self):
        return {}


def test_loop_survives_everything_and_reports_health():
    changes: list[tuple[Health, Health]] = []
    dev = FlakyDevice(["error", "ok", "bug", "ok", "gone", "ok"])
    agg = Aggregator("s")
    loop = SensorLoop("s", dev, agg, reopen_initial_s=0.01, reopen_max_s=0.02,
                      on_health=lambda s, o, n, d: changes.append((o, n)))
    loop.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (dev.opens >= 3 and loop.health is Health.OK
                                                and loop.readings > 3):
        time.sleep(0.01)
    loop.stop()
    assert loop.is_alive() is False
    seen = [n for _, n in changes]
    assert Health.DISCONNECTED in seen and Health.ERRORS in seen and Health.OK in seen
    assert seen[-1] is Health.STOPPED
    assert dev.opens >= 3 and loop.reopens >= 1 and loop.errors >= 2
    flags = agg.close_window().flags
    assert Quality.ERRORS in flags and Quality.DISCONNECTED in flags


class BuggyOpen(FlakyDevice):
    """A driver whose open() raises what no driver should (termios.error, a bug)."""

    def open(self):
        self.opens += 1
        if self.opens <= 2:
            raise [OSError, ValueError][self.opens - 1]("tcsetattr: Invalid argument")


def test_an_unexpected_error_opening_a_device_is_a_disconnect_not_a_dead_thread(caplog):
    changes: list[tuple[Health, Health, str]] = []
    dev = BuggyOpen([])
    loop = SensorLoop("s", dev, Aggregator("s"), reopen_initial_s=0.01, reopen_max_s=0.02,
                      on_health=lambda s, o, n, d: changes.append((o, n, d)))
    loop.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and loop.readings < 2:
        time.sleep(0.01)
    loop.stop()
    assert dev.opens >= 3 and loop.readings >= 2, changes
    assert [r.message for r in caplog.records if r.levelno == logging.ERROR] == [
        "unexpected error opening the device"] * 2


# -- local mode ---------------------------------------------------------------------------
def test_local_mode_runs_without_broker(tmp_path, caplog):
    model = PMS5003Model(itertools.cycle([(1, 2, 3, 4, 5, 6)]), interval_s=0.2, warmup_s=0)
    with SerialEmulator(model, tmp_path / "pms0") as emu:
        cfgfile = tmp_path / "c.toml"
        write_config(cfgfile, node_id="local-1", state_dir=tmp_path / "state", ports=[emu.path],
                     interval=1, fmt="senml-json", broker=None, warmup_s=0, read_interval_s=0.2)
        cfg = config.load(cfgfile)
        assert cfg.local_mode
        caplog.set_level(logging.INFO, logger="citynode")
        node = Node(cfg)
        t = threading.Thread(target=node.run)
        t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                "telemetry" in m and '"pm25"' in m for m in caplog.messages):
            time.sleep(0.05)
        node.request_stop()
        t.join(10)
    tele = [m for m in caplog.messages if "citynode/local-1/telemetry" in m and '"pm25"' in m]
    assert tele and '"v":5' in tele[0]
    assert any("citynode/local-1/state" in m and "offline" in m for m in caplog.messages)
