"""Broker failover against a real three-node NATS cluster with MQTT (`make test-cluster`).

The node is the real agent process (`python -m agent run`) on an emulated SHT3x,
reporting every second, with [mqtt] on server 1 and servers 2 and 3 as failover; the
platform is a QoS 1 consumer with a persistent session on server 3. What must hold:

- stopping the node's broker moves it to the next one (the platform sees its birth
  from there; the time is printed), it stays there after its first broker is back, and
  the signed ``broker`` command brings it back;
- a rolling restart of the whole cluster under load: every (b, q) arrives, each lane in
  order (docs/spool.md section 1), and the time to reconnect after each stop is printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.core.commands import sign_command
from bench.nats_cluster import Consumer, NatsCluster, judge, write_agent_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]
KEY = b"cluster-test-key-0123456789abcdef"


def wait_for(pred, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


class Node:
    """One real agent process with its own state directory."""

    def __init__(self, tmp: Path, node_id: str, brokers: list[str]) -> None:
        self.id, self.tmp = node_id, tmp
        key = tmp / "command.key"
        key.write_bytes(KEY)
        key.chmod(0o600)
        self.cfg = tmp / "node.toml"
        write_agent_config(self.cfg, node_id=node_id, state_dir=tmp / "state",
                           brokers=brokers, hmac_key_file=str(key))
        self.log = tmp / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
        env.pop("RUNTIME_DIRECTORY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config",
                                      str(self.cfg)], cwd=ROOT, env=env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def status(self) -> dict:
        try:
            return json.loads((self.tmp / "state" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def broker(self) -> str:
        return (self.status().get("uplink") or {}).get("broker", "")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(30) == 0, self.log.read_text()[-2000:]
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(5)


def births_after(platform: Consumer, node: str, wall: float) -> list:
    return [a for a in platform.snapshot()
            if a.node == node and a.leaf == "state" and a.status == "online" and a.wall > wall]


def goodbye(platform: Consumer, node: str) -> bool:
    return any(a.node == node and a.leaf == "state" and a.status == "offline"
               and a.q is not None for a in platform.snapshot())


def send_command(port: int, node: str, command: dict) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ops-{uuid.uuid4().hex[:6]}",
                    protocol=MQTTProtocolVersion.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(f"citynode/{node}/command", json.dumps(sign_command(command, KEY)),
                  qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def reconnect_after_stop(cluster: NatsCluster, i: int, node: Node,
                         times: list[float]) -> None:
    """Stop server ``i``; when the node was on it, wait until it is connected to another
    (its status file: the broker and the wall time of the CONNACK)."""
    was = node.broker()
    t0 = time.time()
    cluster.stop_node(i)
    if was != cluster.nodes[i].address:
        return

    def moved() -> bool:
        up = node.status().get("uplink") or {}
        return up.get("connected") and up.get("broker") != was and \
            (up.get("last_connect") or 0) > t0

    assert wait_for(moved, 60), f"no reconnect after stopping {cluster.nodes[i].name}"
    up = node.status()["uplink"]
    times.append(up["last_connect"] - t0)
    print(f"\n  stopped {cluster.nodes[i].name} (the node's broker): connected to "
          f"{up['broker']} after {times[-1]:.2f} s")


def started(cluster, tmp_path, node_id: str) -> tuple[list[str], Consumer, Node]:
    """A platform consuming from the last server, and a node on the first: born there."""
    addrs = [n.address for n in cluster.nodes]
    platform = Consumer([n.mqtt for n in reversed(cluster.nodes)],
                        client_id=f"platform-{uuid.uuid4().hex[:6]}")
    platform.start()
    node = Node(tmp_path, node_id, addrs)
    node.start()
    return addrs, platform, node


def born_on_the_first(platform: Consumer, node: Node, addrs: list[str]) -> None:
    assert wait_for(lambda: births_after(platform, node.id, 0), 30), node.log.read_text()
    assert wait_for(lambda: node.broker() == addrs[0], 20)


def judged(platform: Any, node: Any, goodbye_s: float) -> Any:
    """After the node's clean stop: its goodbye arrived (within ``goodbye_s``), then what
    the platform received, judged (lost, duplicates, order)."""
    assert wait_for(lambda: goodbye(platform, node.id), goodbye_s)
    time.sleep(2)
    platform.stop()
    return judge(platform.snapshot())


def test_stop_the_broker_moves_on_and_the_command_brings_it_back(healed, tmp_path):
    cluster = healed
    addrs, platform, node = started(cluster, tmp_path, "fo-1")
    try:
        born_on_the_first(platform, node, addrs)
        times: list[float] = []
        reconnect_after_stop(cluster, 0, node, times)
        # The next broker (or the one after it, if the next was still electing leaders).
        assert wait_for(lambda: node.broker() in addrs[1:], 20), node.status().get("uplink")
        now = node.status()["uplink"]
        assert now["broker_index"] == addrs.index(now["broker"]) and now["brokers"] == 3
        out = subprocess.run([sys.executable, "-m", "agent", "status", "--config",
                              str(node.cfg)], cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
        assert f"{now['broker']}, failover {now['broker_index']} of 2" in out.stdout, \
            out.stdout + out.stderr
        # The first broker comes back: the node stays where it is until told.
        cluster.start_node(0)
        cluster.wait_ready()
        time.sleep(5)
        assert node.broker() == now["broker"]
        t0 = time.time()
        send_command(cluster.nodes[1].mqtt, node.id,
                     {"id": "back-1", "cmd": "broker", "args": {"use": "primary"}})
        assert wait_for(lambda: node.broker() == addrs[0] and node.status()["uplink"].get(
            "connected") and node.status()["uplink"]["last_connect"] > t0, 30), \
            node.status().get("uplink")
        print(f"\n  broker command: back on {cluster.nodes[0].name} after "
              f"{node.status()['uplink']['last_connect'] - t0:.2f} s")
        assert wait_for(lambda: births_after(platform, node.id, t0), 30)
        time.sleep(3)
    finally:
        node.stop()
    verdict = judged(platform, node, 30)
    print(f"  {verdict.unique} messages, {verdict.duplicates} duplicates, "
          f"lost {verdict.lost_count}")
    log = node.log.read_text()
    assert log.count("EVENT=broker_failover") >= 2 or log.count("moving to broker") >= 2, log
    assert not verdict.lost, verdict.lost
    assert not verdict.order_breaks, verdict.order_breaks[:10]
    results = [a for a in platform.snapshot() if a.leaf == "result"]
    assert results, "the broker command's result"


def test_rolling_restart_under_load_loses_nothing(healed, tmp_path):
    cluster = healed
    addrs, platform, node = started(cluster, tmp_path, "fo-2")
    times: list[float] = []
    try:
        born_on_the_first(platform, node, addrs)
        time.sleep(3)
        for i in range(len(cluster.nodes)):  # node by node, as an operator upgrades
            reconnect_after_stop(cluster, i, node, times)
            time.sleep(4)
            t = time.time()
            cluster.start_node(i)
            cluster.wait_ready()
            print(f"  {cluster.nodes[i].name} back and ready after {time.time() - t:.2f} s")
            time.sleep(4)
        time.sleep(3)
    finally:
        node.stop()
    verdict = judged(platform, node, 60)
    print(f"  rolling restart: {verdict.unique} messages, {verdict.duplicates} duplicates, "
          f"lost {verdict.lost_count}, reconnect {', '.join(f'{t:.2f}' for t in times)} s")
    assert times, "the node's broker was never stopped"
    assert not verdict.lost, verdict.lost
    assert not verdict.order_breaks, verdict.order_breaks[:10]
