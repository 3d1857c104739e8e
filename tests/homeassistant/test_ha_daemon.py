"""End to end: emulated PMS5003s -> the agent process with an [[uplink]] in format
"homeassistant" -> a real mosquitto -> what Home Assistant would read there: retained
discovery configurations, the JSON state of each report, availability; and, between two
runs, a sensor removed from the configuration -> its configurations emptied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ha_harness import Watcher, retained, wait_for

from agent.tools.simulate import write_config
from tests.emulated_node import EmulatedNode

NODE = "ha-e2e"
pytestmark = [pytest.mark.homeassistant, pytest.mark.timeout(120)]
SCRIPT = [(5, 8, 11, 5, 8, 11), (7, 12, 16, 7, 12, 16), (6, 10, 13, 6, 10, 13)]


def configure(tmp_path: Path, port: int, ports: list[str]) -> Path:
    cfg = tmp_path / "citynode.toml"
    write_config(cfg, node_id=NODE, state_dir=tmp_path / "state", ports=ports, interval=1,
                 fmt="senml-cbor", broker=None, warmup_s=0.0, read_interval_s=0.3)
    cfg.write_text(cfg.read_text() + "\n".join([
        "", "[[uplink]]", 'name = "ha"', 'format = "homeassistant"', 'host = "127.0.0.1"',
        f"port = {port}", "backoff_initial_s = 0.5", "backoff_max_s = 5", "",
        "[uplink.homeassistant]", 'node_name = "Pole 42"', ""]))
    return cfg


class Node(EmulatedNode):
    """The agent process on emulated PMS5003s."""

    def __init__(self, tmp_path: Path, port: int, sensors: int) -> None:
        super().__init__(tmp_path, sensors, SCRIPT,
                         lambda ports: configure(tmp_path, port, ports),
                         log_name=f"agent-{sensors}.log")


def configs_of(kept: dict[str, bytes], sensor: str) -> set[str]:
    return {t for t, p in kept.items() if p and f"/{NODE}/{sensor}_" in t}


def test_a_daemon_announces_reports_and_removes(tmp_path: Path, mosquitto) -> None:
    state = Watcher(mosquitto.port, f"citynode/{NODE}/ha/state")
    node = Node(tmp_path, mosquitto.port, sensors=2)
    try:
        wait_for(lambda: [p for p in state.on(f"citynode/{NODE}/ha/state")
                          if json.loads(p).get("pm0_pm25") is not None
                          and json.loads(p).get("pm1_pm25") is not None], 40,
                 "a state with both sensors' PM2.5")
        kept = retained(mosquitto.port)
        pm0, pm1 = configs_of(kept, "pm0"), configs_of(kept, "pm1")
        assert f"homeassistant/sensor/{NODE}/pm0_pm25/config" in pm0
        assert f"homeassistant/sensor/{NODE}/pm1_pm25/config" in pm1
        config = json.loads(kept[f"homeassistant/sensor/{NODE}/pm1_pm25/config"])
        assert config["device"]["name"] == "Pole 42"
        assert config["device"]["identifiers"] == [NODE]
        assert config["state_topic"] == f"citynode/{NODE}/ha/state"
        assert kept[f"citynode/{NODE}/ha/availability"] == b"online"
        doc = json.loads(kept[f"citynode/{NODE}/ha/state"])
        assert {doc["pm0_pm25"], doc["pm1_pm25"]} <= {8, 10, 12} | set(range(8, 13))
    finally:
        assert node.stop() == 0, (tmp_path / "agent-2.log").read_text()[-3000:]
        state.close()
    assert retained(mosquitto.port, f"citynode/{NODE}/ha/availability") == \
        {f"citynode/{NODE}/ha/availability": b"offline"}  # the goodbye

    # pm1 leaves the configuration: Home Assistant is told to delete its entities
    node = Node(tmp_path, mosquitto.port, sensors=1)
    try:
        wait_for(lambda: not configs_of(retained(mosquitto.port, "homeassistant/#", 0.3),
                                        "pm1"), 40, "pm1's configurations emptied")
        kept = retained(mosquitto.port)
        assert configs_of(kept, "pm0") == pm0
        wait_for(lambda: retained(mosquitto.port, f"citynode/{NODE}/ha/availability", 0.3)
                 .get(f"citynode/{NODE}/ha/availability") == b"online", 20, "online again")
    finally:
        assert node.stop() == 0, (tmp_path / "agent-1.log").read_text()[-3000:]
