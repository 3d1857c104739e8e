"""End to end: emulated PMS5003s -> ``citynode run`` with an ``[[uplink]]`` in format
"onem2m" -> the broker of a real Mobius -> what a oneM2M platform reads through Mobius's
own HTTP API: the AE, one container per sensor, contentInstances with the readings, a
command created in Mobius that runs on the node and whose result comes back, and no
message lost across a Mobius restart, an outage and a reset that loses the CSE's data.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from onem2m_harness import Mobius, wait_for

from agent.core.commands import sign_command
from agent.tools.simulate import write_config
from tests.emulated_node import EmulatedNode

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.onem2m, pytest.mark.timeout(420)]
SCRIPT = [(5, 8, 11, 5, 8, 11), (7, 12, 16, 7, 12, 16), (6, 10, 13, 6, 10, 13)]
CONTAINERS = ("pm0", "pm1", "node", "health", "events", "state", "results")
KEY = b"3f1e9a7c0b2d4e6f8a1c3e5f7b9d0a2c4e6f8b1d3f5a7c9e0b2d4f6a8c1e3f5"


class Node(EmulatedNode):
    """The agent process on two emulated PMS5003s (``pm0``, and ``pm1`` with prefix
    ``s1.``), reporting every second to Mobius's broker only."""

    def __init__(self, tmp_path: Path, mobius: Mobius, node: str) -> None:
        self.node = node
        key = tmp_path / "command.key"
        key.write_bytes(KEY + b"\n")
        key.chmod(0o600)
        self.state = tmp_path / "state"

        def configure(ports: list[str]) -> Path:
            cfg = tmp_path / "citynode.toml"
            write_config(cfg, node_id=node, state_dir=self.state, ports=ports, interval=1,
                         fmt="senml-cbor", broker=None, warmup_s=0.0, read_interval_s=0.3)
            cfg.write_text(cfg.read_text() + "\n".join([
                "", "[commands]", f'hmac_key_file = "{key}"', "",
                "[[uplink]]", 'name = "mobius"', 'format = "onem2m"', 'host = "127.0.0.1"',
                f"port = {mobius.mqtt_port}", 'protocol = "3.1.1"', "backoff_initial_s = 0.5",
                "backoff_max_s = 2", "",
                "[uplink.onem2m]", f'cse_id = "{mobius.cse_id}"',
                f'cse_name = "{mobius.cse_name}"',
                # Short: a stock Mobius worker sometimes dies on a create and never answers.
                "request_timeout_s = 3", ""]))
            return cfg

        super().__init__(tmp_path, 2, SCRIPT, configure)

    def epoch(self) -> str:
        return (self.state / "uplinks" / "mobius" / "onem2m-mobius.epoch").read_text().strip()


def stored(mobius: Mobius, base: str) -> dict[str, list[dict[str, Any]]]:
    """Every contentInstance's con in each of the node's containers."""
    return {c: [x for x in mobius.instances(f"{base}/{c}") if isinstance(x, dict)]
            for c in CONTAINERS}


def seqs(cins: dict[str, list[dict[str, Any]]]) -> set[int]:
    return {c["seq"] for items in cins.values() for c in items}


def contiguous(numbers: set[int]) -> bool:
    return bool(numbers) and numbers == set(range(max(numbers) + 1))


@pytest.fixture
def node_id() -> str:
    return f"e2e-{uuid.uuid4().hex[:6]}"


def test_the_node_is_an_ae_whose_readings_and_commands_go_through_mobius(
        tmp_path: Path, mobius: Mobius, node_id: str) -> None:
    base = f"{mobius.cse_name}/{node_id}"
    seen: dict[tuple[str, int], float] = {}  # (container, seq) -> first seen (wall)
    done = threading.Event()

    def watch() -> None:  # what a platform polling the events container sees, and when
        while not done.wait(0.01):
            for con in mobius.instances(f"{base}/events"):
                if isinstance(con, dict):
                    seen.setdefault(("events", con["seq"]), time.time())

    node = Node(tmp_path, mobius, node_id)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert wait_for(lambda: mobius.http("GET", base)[0] == 200, 60), node.tail()
        _, body = mobius.http("GET", base)
        assert body["m2m:ae"]["aei"] == f"S{node_id}" and body["m2m:ae"]["api"] == "Ncitynode"
        for c in (*CONTAINERS, "commands"):
            assert wait_for(lambda c=c: mobius.http("GET", f"{base}/{c}")[0] == 200, 20), c
        assert wait_for(lambda: mobius.http("GET", f"{base}/commands/citynode")[0] == 200,
                        20), node.tail()

        # Telemetry: each sensor's readings in its own container, with units and numbers.
        assert wait_for(lambda: len(mobius.instances(f"{base}/pm1")) >= 3, 60), node.tail()
        pm0, pm1 = mobius.instances(f"{base}/pm0")[-1], mobius.instances(f"{base}/pm1")[-1]
        for con, name in ((pm0, "pm0"), (pm1, "pm1")):
            assert con["kind"] == "telemetry" and con["sensor"] == name
            assert con["type"] == "pms5003" and con["session"] == 1
            assert con["readings"]["pm25"]["u"] == "ug/m3"  # pm1's "s1.pm25" in its own
            assert con["readings"]["pm25"]["v"] in {8, 9, 10, 11, 12}
            assert {"min", "max"} <= set(con["readings"]["pm25"])
            assert con["readings"]["n"]["v"] >= 1 and con["time"].endswith("Z")
        state = mobius.instances(f"{base}/state")
        assert state[0]["values"]["status"] == "online"
        assert state[0]["values"]["sensors"] == "pm0:pms5003,pm1:pms5003"

        # A command created in Mobius, signed as docs/commands.md says: it runs on the node
        # and its result comes back into the results container.
        cmd = sign_command({"id": "c-ping-1", "cmd": "ping", "args": {}}, KEY)
        t0 = time.monotonic()
        assert mobius.post_cin(f"{base}/commands", cmd) == 201

        def result(cid: str) -> dict[str, Any] | None:
            for con in mobius.instances(f"{base}/results"):
                if isinstance(con, dict) and con["values"].get("id") == cid:
                    return con
            return None
        got = wait_for(lambda: result("c-ping-1"), 20)
        round_trip = time.monotonic() - t0
        assert got, node.tail()
        assert got["values"]["status"] == "ok" and got["values"]["pong"] is True
        assert got["values"]["cmd"] == "ping" and got["kind"] == "result"
        # Signed with args (strings survive Mobius's JSON as they are).
        cmd = sign_command({"id": "c-sample", "cmd": "sample-now", "args": {"sensor": "pm0"}},
                           KEY)
        assert mobius.post_cin(f"{base}/commands", cmd) == 201
        got = wait_for(lambda: result("c-sample"), 20)
        assert got and got["values"]["status"] == "ok", got
        # Unsigned, and replayed: refused by the node, and the platform reads why.
        assert mobius.post_cin(f"{base}/commands", {"id": "c-bad", "cmd": "ping"}) == 201
        got = wait_for(lambda: result("c-bad"), 20)
        assert got and got["values"]["status"] == "error", got
        assert mobius.post_cin(f"{base}/commands", cmd) == 201  # c-sample again
        wait_for(lambda: sum(1 for c in mobius.instances(f"{base}/results")
                             if c["values"].get("id") == "c-sample") == 2, 20)
        replies = [c for c in mobius.instances(f"{base}/results")
                   if c["values"].get("id") == "c-sample"]
        assert sorted(c["values"]["status"] for c in replies) == ["error", "ok"]

        # Health transitions while the node runs (pm1's port unplugged for a moment):
        # events with their own time to the millisecond, for the latency below.
        steady = max(seqs(stored(mobius, base)))
        for _ in range(3):
            node.emulators[1].unplug(for_s=2.5)
            wait_for(lambda: node.emulators[1].plugged, 10)
            time.sleep(3)

        # Nothing missing: every number of the boot session up to the newest is stored.
        assert wait_for(lambda: contiguous(seqs(stored(mobius, base))), 30), \
            sorted(seqs(stored(mobius, base)))
        names = {f"{round(c['unix'] * 1000):013d}-1-{c['seq']:010d}-{node.epoch()}"
                 for c in mobius.instances(f"{base}/pm0")}
        _, body = mobius.http("GET", f"{base}/pm0?fu=1&ty=4")
        assert {u.rsplit("/", 1)[1] for u in body["m2m:uril"]} == names
        assert mobius.latest(f"{base}/pm0")["seq"] == max(
            c["seq"] for c in mobius.instances(f"{base}/pm0"))
    finally:
        done.set()
        watcher.join(5)
        assert node.stop() == 0, node.tail()
    assert wait_for(lambda: mobius.latest(f"{base}/state")["values"].get("status")
                    == "offline", 10)
    assert mobius.latest(f"{base}/state")["values"]["reason"] == "shutdown"

    # Latency (printed, not asserted): an event's own time (milliseconds) -> readable in
    # Mobius by a platform polling every 10 ms; and a command's round trip.
    events = {c["seq"]: c for c in mobius.instances(f"{base}/events")}
    lat = sorted(seen[("events", q)] - c["unix"] for q, c in events.items()
                 if ("events", q) in seen and q > steady)
    first = sorted(seen[("events", q)] - c["unix"] for q, c in events.items()
                   if ("events", q) in seen and q <= steady)
    print(f"\nreport -> contentInstance readable in Mobius (a platform polling every 10 ms): "
          f"{len(lat)} events while connected: "
          + ", ".join(f"{1000 * x:.0f}" for x in lat) + " ms; at start-up, before the AE "
          "was registered: " + ", ".join(f"{1000 * x:.0f}" for x in first)
          + f" ms; command created in Mobius -> its result readable: "
          f"{1000 * round_trip:.0f} ms")


def test_a_restart_an_outage_and_a_reset_lose_nothing(tmp_path: Path, own_mobius: Mobius,
                                                        node_id: str) -> None:
    mobius = own_mobius
    base = f"{mobius.cse_name}/{node_id}"
    node = Node(tmp_path, mobius, node_id)
    try:
        assert wait_for(lambda: len(mobius.instances(f"{base}/pm0")) >= 4, 90), node.tail()

        # Mobius, its broker and database stop for a few seconds and come back with their
        # data: the node reconnects, finds its resources (4105) and sends what waited.
        # Its broker comes back seconds before Mobius does: what was made in between
        # waited for Mobius all the same, so it is historical (docs/spool.md), not only
        # what was made while the broker was away.
        before = max(seqs(stored(mobius, base)))
        down = time.time()
        mobius.restart()
        up = time.time()  # Mobius answers (the fixture waited for it): the node after that
        assert wait_for(lambda: max(seqs(stored(mobius, base)), default=0) > before + 5, 90), \
            node.tail()
        assert wait_for(lambda: contiguous(seqs(stored(mobius, base))), 60), \
            sorted(seqs(stored(mobius, base)))
        waited = [(c["seq"], c["historical"]) for c in mobius.instances(f"{base}/pm0")
                  if down + 2 <= c["unix"] <= up - 2]
        assert len(waited) >= 2 and all(h for _, h in waited), (up - down, waited)

        # Mobius stops answering (SIGSTOP) with its broker up: the node's requests time out
        # and go again with new rqis until it answers; none is stored twice.
        before = max(seqs(stored(mobius, base)))
        pids = mobius.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(8)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: max(seqs(stored(mobius, base)), default=0) > before + 10, 90), \
            node.tail()
        assert wait_for(lambda: contiguous(seqs(stored(mobius, base))), 60), \
            sorted(seqs(stored(mobius, base)))

        # A reset that loses the CSE's data. The node is paused meanwhile so that what was
        # stored before can be read back first: with what is stored after, nothing lacks.
        os.kill(node.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
            kept = seqs(stored(mobius, base))
            mobius.restart(fresh=True)
            assert mobius.http("GET", base)[0] == 404
        finally:
            os.kill(node.proc.pid, signal.SIGCONT)
        assert wait_for(lambda: mobius.http("GET", f"{base}/commands/citynode")[0] == 200,
                        90), node.tail()
        newest = max(kept)
        assert wait_for(lambda: max(seqs(stored(mobius, base)), default=0) > newest + 5, 90), \
            node.tail()
        assert wait_for(lambda: contiguous(kept | seqs(stored(mobius, base))), 60), \
            sorted(set(range(max(kept | seqs(stored(mobius, base))))) - kept
                   - seqs(stored(mobius, base)))
        # The node still takes commands after the reset.
        cmd = sign_command({"id": "after-reset", "cmd": "ping", "args": {}}, KEY)
        assert mobius.post_cin(f"{base}/commands", cmd) == 201
        assert wait_for(lambda: any(c["values"].get("id") == "after-reset"
                                    for c in mobius.instances(f"{base}/results")), 20), \
            node.tail()
    finally:
        code = node.stop()
    assert code == 0, node.tail()
    everything = kept | seqs(stored(mobius, base))
    assert contiguous(everything), sorted(set(range(max(everything))) - everything)
    for container, cons in stored(mobius, base).items():  # each message once per container
        numbers = [c["seq"] for c in cons]
        assert len(numbers) == len(set(numbers)), (container, sorted(numbers))
    assert mobius.latest(f"{base}/state")["values"]["reason"] == "shutdown"
    print(f"\nrestart, silent CSE and reset: {len(everything)} messages, all stored, none "
          f"twice; {len(everything - kept)} after the reset")
