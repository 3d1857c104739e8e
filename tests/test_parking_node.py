"""Parking through the real agent: an A02YYUW over a pty, a car arrives and leaves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.features.parking import load_baselines, save_baseline
from agent.tools.simulate import Subscriber, write_config
from drivers.a02yyuw.emulator import A02YYUWModel
from drivers.emulation import SerialEmulator

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_baselines_are_stored_atomically(tmp_path):
    save_baseline(tmp_path, "bay1", 2412.34)
    save_baseline(tmp_path, "bay2", 2600)
    assert load_baselines(tmp_path) == {"bay1": 2412.3, "bay2": 2600.0}
    (tmp_path / "baselines.json").write_text("{not json")
    assert load_baselines(tmp_path) == {}


def test_car_arrives_and_leaves(tmp_path, mosquitto):
    distance = {"mm": 2500.0}
    model = A02YYUWModel(lambda now: distance["mm"], interval_s=0.1)
    emu = SerialEmulator(model, tmp_path / "dev" / "bay1")
    emu.start()
    cfg = tmp_path / "c.toml"
    write_config(cfg, node_id="park-1", state_dir=tmp_path / "state", ports=[], interval=1,
                 fmt="senml-json", broker=(mosquitto.host, mosquitto.port), sensors=[
                     {"type": "a02yyuw", "name": "bay1", "port": emu.path,
                      "read_interval_s": 0.2}])
    with open(cfg, "a") as f:
        f.write("[sensor.use]\nrole = \"bay\"\nbaseline_mm = 2500\ndebounce_s = 1\n")
    received: list[tuple[str, dict]] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "citynode/park-1/#",
                     lambda t, d, r: received.append((t, d)))
    sub.start()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=open(tmp_path / "agent.log", "w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def states() -> list[str]:
        return [r["vs"] for t, d in received if t.endswith("/event")
                for r in d["records"] if r["n"] == "bay1:state"]

    def mask() -> int | None:
        masks = [r["v"] for t, d in received if t.endswith("/telemetry")
                 for r in d["records"] if r["n"] == "bays:occ"]
        return masks[-1] if masks else None

    try:
        wait_for(lambda: "free" in states(), 20, "the bay reported free")
        distance["mm"] = 1300.0  # a car's bonnet
        wait_for(lambda: "occupied" in states(), 10, "occupied")
        wait_for(lambda: mask() == 1, 5, "bit 0 set in the bay summary")
        distance["mm"] = 2500.0
        wait_for(lambda: states()[-1] == "free", 10, "free again")
        assert states().count("occupied") == 1  # no flicker
        assert proc.poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(20)
        sub.stop()
        emu.stop()


def test_detect_occupancy_cli_replays_a_csv(tmp_path, capsys):
    from agent.tools.cli import main

    rows = ["t,bay,distance_mm"]
    for t in range(0, 120):
        rows.append(f"{1700000000 + t},A1,{2500 if t < 60 or t > 100 else 1200}")
    csv = tmp_path / "bays.csv"
    csv.write_text("\n".join(rows) + "\n")
    assert main(["detect", "occupancy", "--input", str(csv), "--baseline", "A1=2500"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["state"] for x in lines] == ["free", "occupied", "free"]
    bad = tmp_path / "bad.csv"
    bad.write_text("t,bay,distance_mm\n1,A1,xx\n")
    assert main(["detect", "occupancy", "--input", str(bad)]) == 65
    assert "bad.csv:2" in capsys.readouterr().err
