"""``citynode fleet``: the state model and the rollout rings over synthetic messages
(fast), hostile topics and payloads (hypothesis), and the whole command against a real
mosquitto with three ``citynode run`` daemons on emulated sensors."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.tools.cli import main as cli_main
from agent.tools.fleet.model import (
    MAX_SENSORS,
    FleetModel,
    clean,
    judge,
    records_of,
    row_doc,
)
from agent.tools.fleet.rollout import Ring, plan
from agent.wire import formats
from agent.wire.model import Pack, Record

ROOT = Path(__file__).resolve().parent.parent
CBOR = formats.get("senml-cbor")
JSON = formats.get("senml-json")
T0 = 1_763_900_000.0


def pack(records: list[Record], *, t: float = T0, session: int = 3, seq: int | None = 0,
         historical: bool = False, fmt=CBOR) -> bytes:
    return fmt.encode(Pack(t, session, seq, records, historical=historical)).payload


def birth(version: str = "0.1.0", interval: float = 60, **extra: str) -> list[Record]:
    recs = [Record("status", text="online"), Record("version", text=version),
            Record("boot", value=T0 - 5), Record("interval", value=interval),
            Record("sensors", text="pm:pms5003")]
    return recs + [Record(k, text=v) for k, v in extra.items()]


def will(reason: str = "lost") -> list[Record]:
    return [Record("status", text="offline"), Record("reason", text=reason)]


# -- the state model ------------------------------------------------------------------------
def test_births_wills_health_and_events_make_the_rows() -> None:
    m = FleetModel("city/air")
    now = T0 + 10
    m.feed("city/air/pole-1/state", pack(birth(slot="a", update="confirmed 0.1.0")),
           retained=True, now=now)
    m.feed("city/air/pole-2/state", pack(birth("0.2.0")), retained=True, now=now)
    m.feed("city/air/pole-3/state", pack(will()), retained=True, now=now)
    m.feed("city/air/pole-1/health", pack([Record("uptime", value=100),
                                           Record("pm:health", text="errors"),
                                           Record("spool", value=42),
                                           Record("spool_bytes", value=4200),
                                           Record("evicted_tele", value=2),
                                           Record("evicted_ev", value=1)], seq=5), now=now)
    rows = {r.state.node: r for r in m.rows(now)}
    assert set(rows) == {"pole-1", "pole-2", "pole-3"}
    p1 = rows["pole-1"].state
    assert (p1.status, p1.version, p1.slot, p1.update) == ("online", "0.1.0", "a",
                                                           "confirmed 0.1.0")
    assert (p1.spool, p1.spool_bytes, p1.evicted) == (42, 4200, 3)
    assert rows["pole-1"].problems == ("sensors pm errors",)
    assert rows["pole-2"].ok and rows["pole-2"].state.interval_s == 60
    assert rows["pole-3"].problems == ("offline (lost)",)
    # Problems first, then by id.
    assert [r.state.node for r in m.rows(now)] == ["pole-1", "pole-3", "pole-2"]
    # A sensor back to ok in an event; an older (historical) errors event changes nothing.
    m.feed("city/air/pole-1/event", pack([Record("pm:health", text="ok")], t=T0 + 20),
           now=now)
    m.feed("city/air/pole-1/event", pack([Record("pm:health", text="stale")], t=T0 + 1,
                                         historical=True), now=now)
    assert judge(m.nodes["pole-1"], now, 3).ok
    # The version filter (a glob) and the JSON row.
    assert [r.state.node for r in m.rows(now, version="0.2.*")] == ["pole-2"]
    doc = row_doc(rows["pole-1"], now)
    assert doc["node"] == "pole-1" and doc["spool"] == 42 and doc["slot"] == "a"


def test_a_new_boot_session_forgets_the_old_sensor_states_and_goodbyes_say_why() -> None:
    m = FleetModel("citynode")
    m.feed("citynode/n1/state", pack(birth(), session=3), now=T0)
    m.feed("citynode/n1/event", pack([Record("pm:health", text="disconnected")]), now=T0)
    assert m.nodes["n1"].degraded == {"pm": "disconnected"}
    m.feed("citynode/n1/state", pack(will("shutdown")), now=T0)
    assert judge(m.nodes["n1"], T0, 3).problems[0] == "offline (shutdown)"
    m.feed("citynode/n1/state", pack(birth(), session=4), now=T0)
    assert m.nodes["n1"].degraded == {} and m.nodes["n1"].status == "online"
    # An empty retained message (cleared by hand) leaves the state unknown.
    m.feed("citynode/n1/state", b"", retained=True, now=T0)
    assert judge(m.nodes["n1"], T0, 3).problems == ("no state",)


def test_silent_nodes_are_flagged_after_n_of_their_own_intervals() -> None:
    m = FleetModel("citynode")
    m.feed("citynode/fast/state", pack(birth(interval=10)), retained=True, now=T0)
    m.feed("citynode/slow/state", pack(birth(interval=600)), retained=True, now=T0)
    m.feed("citynode/fast/telemetry", b"\x00not even decoded", now=T0 + 5)
    m.feed("citynode/slow/telemetry", b"", now=T0 + 5)
    rows = {r.state.node: r for r in m.rows(T0 + 36, silent_after=3)}
    assert rows["fast"].silent_s == pytest.approx(31) and "silent 31 s" in rows["fast"].problems
    assert rows["slow"].ok
    # Heard again: no longer silent; 0 turns the check off.
    m.feed("citynode/fast/telemetry", b"", now=T0 + 40)
    assert judge(m.nodes["fast"], T0 + 41, 3).ok
    assert judge(m.nodes["fast"], T0 + 400, 0).ok
    # A node seen only through its retained birth counts from when the watcher saw it.
    assert judge(m.nodes["slow"], T0 + 1799, 3).ok
    assert not judge(m.nodes["slow"], T0 + 1806, 3).ok


def test_update_events_and_failed_updates() -> None:
    m = FleetModel("citynode")
    m.feed("citynode/n1/state", pack(birth()), now=T0)
    for i, phase in enumerate(("downloading", "verified", "installing")):
        m.feed("citynode/n1/event", pack([Record("update", text=phase)], t=T0 + i), now=T0)
    assert m.nodes["n1"].update_phase == "installing" and judge(m.nodes["n1"], T0, 3).ok
    m.feed("citynode/n1/event", pack([Record("update", text="rolled_back"),
                                      Record("update:reason", text="gate: no PUBACK")],
                                     t=T0 + 9), now=T0)
    row = judge(m.nodes["n1"], T0, 3)
    assert row.problems == ("update rolled_back (gate: no PUBACK)",)
    assert m.nodes["n1"].update == "rolled_back"
    # The old release's birth says the same in its summary; an older event sent late
    # (history) does not undo it; a later update's summary replaces it.
    m.feed("citynode/n1/state", pack(birth(update="rolled_back 0.2.0"), t=T0 + 20,
                                     session=4), now=T0)
    m.feed("citynode/n1/event", pack([Record("update", text="gate")], t=T0 + 8,
                                     historical=True), now=T0)
    assert (m.nodes["n1"].update, m.nodes["n1"].update_phase) == ("rolled_back 0.2.0",
                                                                  "rolled_back")
    assert judge(m.nodes["n1"], T0, 3).problems == ("update rolled_back (gate: no PUBACK)",)
    m.feed("citynode/n1/health", pack([Record("update", text="confirmed 0.2.1")],
                                      t=T0 + 900), now=T0)
    assert judge(m.nodes["n1"], T0, 3).ok and m.nodes["n1"].update == "confirmed 0.2.1"


def test_topics_ids_filters_and_the_cap() -> None:
    m = FleetModel("citynode", pattern="pole-*", max_nodes=2)
    good = pack(birth())
    for topic in ("citynode/pole-1/state", "citynode/pole-2/state", "citynode/pole-3/state",
                  "citynode/kiosk/state", "citynode/pole-1/nope", "other/pole-1/state",
                  "citynode/-bad/state", "citynode/a/b/state", "citynode//state",
                  "citynode/" + "p" * 65 + "/state"):
        m.feed(topic, good, now=T0)
    assert sorted(m.nodes) == ["pole-1", "pole-2"]
    c = m.counters
    assert (c.over_cap, c.filtered, c.foreign) == (1, 1, 6)
    m.feed("citynode/pole-1/health", b"\xff\x00garbage", now=T0)
    assert m.counters.malformed == 1


def test_text_from_payloads_is_bounded_and_printable() -> None:
    m = FleetModel("citynode")
    m.feed("citynode/n1/state", pack(birth("\x1b[2J" + "9" * 500)), now=T0)
    v = m.nodes["n1"].version
    assert "\x1b" not in v and len(v) <= 64
    many = [Record(f"s{i}:health", text="errors") for i in range(3 * MAX_SENSORS)]
    m.feed("citynode/n1/health", pack(many), now=T0)
    assert len(m.nodes["n1"].degraded) == MAX_SENSORS
    assert clean("\ud800x") == "?x"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(
    st.one_of(st.sampled_from(["citynode/n1/state", "citynode/n1/health", "citynode/n2/event",
                               "citynode/n1/result", "citynode/n3/telemetry", "citynode/+/x",
                               "citynode/n\x00/state", ""]),
              st.text(max_size=40), st.text(max_size=10).map(lambda s: f"citynode/{s}/state")),
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.tuples(st.sampled_from(["status", "version", "interval", "pm:health",
                                            "spool", "update", "update:reason", "slot",
                                            "reason", "x" * 90, ""]),
                           st.one_of(st.text(max_size=30).map(lambda s: ("t", s)),
                                     st.floats(allow_nan=False, allow_infinity=False)
                                     .map(lambda v: ("v", v)),
                                     st.booleans().map(lambda b: ("b", b)))),
                 min_size=1, max_size=8).map(
            lambda rs: json.dumps([{"n": n, {"t": "vs", "v": "v", "b": "vb"}[k]: x}
                                   for n, (k, x) in rs]).encode()),
        st.sampled_from([b"[]", b"[{}]", b'[{"bt": "x", "n": "status", "vs": "online"}]',
                         b'[{"bt": 1e400, "n": "status", "vs": "online"}]',
                         b'[{"b": -1, "n": "status", "vs": "online"}]', b"[" * 5000]),
    ),
    st.booleans()), max_size=30))
def test_hostile_topics_and_payloads_never_crash_the_model(messages) -> None:
    m = FleetModel("citynode", max_nodes=3)
    for topic, payload, retained in messages:
        m.feed(topic, payload, retained=retained, now=T0)
    assert len(m.nodes) <= 3
    for row in m.rows(T0 + 1000):
        doc = row_doc(row, T0 + 1000)
        json.dumps(doc, allow_nan=False, ensure_ascii=False).encode("utf-8")


# -- rings --------------------------------------------------------------------------------
def test_rings_are_planned_as_listed_then_in_the_last_size() -> None:
    nodes = [f"n{i}" for i in range(25)]
    assert [len(r) for r in plan(nodes, (1, 10))] == [1, 10, 10, 4]
    assert [len(r) for r in plan(nodes[:3], (1, 10, 100))] == [1, 2]
    assert plan([], (5,)) == []
    assert [n for ring in plan(nodes, (7,)) for n in ring] == nodes


def _result(ident: str, ok: bool = True, error: str = "") -> dict:
    recs = [Record("id", text=ident), Record("cmd", text="ping"),
            Record("status", text="ok" if ok else "error")]
    recs += [Record("error", text=error)] if error else [Record("pong", flag=True)]
    return records_of(recs)


def test_a_ring_counts_results_errors_and_time_outs() -> None:
    ring = Ring(1, ["a", "b", "c", "d"], timeout_s=5)
    for n in "abc":
        ring.sent(n, f"id-{n}", 0.0)
    ring.fail("d", "nokey", "no key", 0.0)
    assert not ring.result("a", _result("id-other"), 1.0)  # not our command
    assert ring.result("a", _result("id-a"), 1.0)
    assert ring.result("b", _result("id-b", ok=False, error="bad signature"), 1.0)
    assert not ring.result("b", _result("id-b"), 1.5)  # a duplicate changes nothing
    ring.tick(4.0)
    assert not ring.done
    ring.tick(5.5)
    assert ring.done and ring.failures == 3 and ring.failure_rate == 0.75
    doc = ring.doc(0.5)
    outcomes = {o["node"]: o["outcome"] for o in doc["outcomes"]}
    assert outcomes == {"a": "ok", "b": "error", "c": "timeout", "d": "nokey"}
    assert doc["stopped"] and doc["outcomes"][1]["detail"] == "bad signature"


def test_with_wait_update_a_ring_waits_for_the_outcome_event() -> None:
    ring = Ring(1, ["a", "b", "c"], timeout_s=5, wait_update=True, update_timeout_s=100)
    for n in "abc":
        ring.sent(n, f"id-{n}", 0.0)
        assert ring.result(n, _result(f"id-{n}"), 1.0)
    assert not ring.done
    assert ring.event("a", {"update": "downloading"}, 2.0)
    assert ring.outcomes["a"].state == "updating"
    assert not ring.event("a", {"update": "confirmed"}, 3.0, historical=True)
    assert ring.event("a", {"update": "confirmed"}, 50.0)
    assert ring.event("b", {"update": "rolled_back", "update:reason": "crash loop"}, 60.0)
    ring.tick(102.0)
    states = {n: (o.state, o.detail) for n, o in ring.outcomes.items()}
    assert states["a"] == ("ok", "confirmed")
    assert states["b"] == ("update", "rolled_back: crash loop")
    assert states["c"][0] == "timeout" and ring.done and ring.failures == 2


# -- the command line ------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["fleet", "--once", "--cmd", "ping"],  # a send option to the view
    ["fleet", "send", "--once"],  # a view option to send
    ["fleet", "send", "--cmd", "ping", "--nodes", "*"],  # no key
    ["fleet", "send", "--key", "k", "--nodes", "*"],  # no command
    ["fleet", "send", "--key", "k", "--cmd", "ping"],  # no --nodes
    ["fleet", "send", "--cmd", "ping", "--key", "k", "--ring", "1", "--ring-size", "2"],
    ["fleet", "send", "--cmd", "ping", "--key", "k", "--args", "[1]"],
    ["fleet", "send", "--cmd", "ping", "--key", "k", "--args", '{"a": NaN}'],
    ["fleet", "send", "--cmd", "ping", "--key", "k", "--ring", "1,,2"],
    ["fleet", "send", "--cmd", "ping", "--key", "k", "--max-failure-rate", "2"],
    ["fleet", "send", "--cmd", "ping", "--key", "k", "--wait-update"],
    ["fleet", "--wait", "1"],  # --wait without --once
    ["fleet", "--once"],  # no broker
    ["fleet", "--once", "--broker", "127.0.0.1:70000"],
    ["fleet", "--once", "--broker", "127.0.0.1:1", "--prefix", "a//b"],
])
def test_usage_errors_are_one_line_and_64(argv, capsys) -> None:
    assert cli_main(argv) == 64
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unreachable_broker_is_69_and_a_missing_key_66(tmp_path, capsys) -> None:
    from agent.tools.simulate import free_port

    port = free_port()
    assert cli_main(["fleet", "--once", "--broker", f"127.0.0.1:{port}"]) == 69
    assert cli_main(["fleet", "--once", "--json", "--broker", f"127.0.0.1:{port}"]) == 69
    doc = json.loads(capsys.readouterr().out)
    assert (doc["command"], doc["exit"], doc["ok"]) == ("fleet", 69, False)
    assert cli_main(["fleet", "send", "--cmd", "ping", "--key", str(tmp_path / "no"),
                     "--nodes", "*", "--broker", f"127.0.0.1:{port}"]) == 66
    key = tmp_path / "k"
    key.write_text("short")
    key.chmod(0o600)
    assert cli_main(["fleet", "send", "--cmd", "ping", "--key", str(key), "--nodes", "*",
                     "--broker", f"127.0.0.1:{port}"]) == 65
    assert "holds 5 bytes; at least 16" in capsys.readouterr().err


# -- against a real broker and real daemons --------------------------------------------------
KEY = b"fleet-test-key-0123456789abcdef"
OTHER_KEY = b"another-key-the-fleet-does-not-hold"


def _fleet(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "fleet", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class LiveView:
    """``citynode fleet`` (the live view) in a child process, its output collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "fleet", *args], cwd=ROOT,
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        out = self.proc.stdout
        threading.Thread(target=lambda: self.lines.extend(iter(out.readline, "")),  # type: ignore[union-attr]
                         daemon=True).start()

    def saw(self, text: str, within: float = 15.0) -> bool:
        """Whether a line with ``text`` came within ``within`` seconds."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            if any(text in line for line in list(self.lines)):
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout)


def _view(port: int, *extra: str) -> dict:
    proc = _fleet("--broker", f"127.0.0.1:{port}", "--once", "--wait", "1.5", "--json", *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit"] == proc.returncode
    return doc


@pytest.mark.broker
def test_the_fleet_of_three_real_daemons(tmp_path, mosquitto) -> None:
    from agent.tools.simulate import write_config
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    port = mosquitto.port
    keys = tmp_path / "keys"
    keys.mkdir()
    fleet_key = tmp_path / "fleet.key"
    fleet_key.write_bytes(KEY + b"\n")
    fleet_key.chmod(0o600)
    agents: dict[str, subprocess.Popen[bytes]] = {}
    emulators = []
    try:
        for i, node in enumerate(("pole-1", "pole-2", "pole-3"), 1):
            model = PMS5003Model(itertools.cycle([(5, 8, 11, 5, 8, 11)]), interval_s=0.5,
                                 warmup_s=0)
            emu = SerialEmulator(model, tmp_path / "dev" / f"pms{i}")
            emu.start()
            emulators.append(emu)
            node_key = keys / f"{node}.key"
            # pole-1 holds a key the fleet does not: it refuses what the fleet signs.
            node_key.write_bytes((OTHER_KEY if node == "pole-1" else KEY) + b"\n")
            node_key.chmod(0o600)
            cfg = tmp_path / f"{node}.toml"
            write_config(cfg, node_id=node, state_dir=tmp_path / node, ports=[emu.path],
                         interval=1, fmt="senml-cbor", broker=("127.0.0.1", port),
                         warmup_s=0, read_interval_s=0.3)
            cfg.write_text(cfg.read_text().replace("backoff_max_s = 10", "backoff_max_s = 1")
                           + f'\n[commands]\nhmac_key_file = "{node_key}"\n')
            agents[node] = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=ROOT,
                stdout=open(tmp_path / f"{node}.log", "wb"), stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            doc = _view(port)
            online = {n["node"] for n in doc["nodes"] if n["status"] == "online"}
            if online == set(agents):
                break
        else:
            pytest.fail(f"not every node came online: {doc}")
        assert doc["exit"] == 0, doc["summary"]
        assert {n["version"] for n in doc["nodes"]} == {__import__("agent").__version__}
        assert all(n["interval_s"] == 1 for n in doc["nodes"])

        # A signed ping to a pattern, a node a ring: every node answers.
        proc = _fleet("send", "--broker", f"127.0.0.1:{port}", "--nodes", "pole-[23]",
                      "--cmd", "ping", "--key", str(fleet_key), "--ring-size", "1",
                      "--timeout", "10", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert [r["nodes"] for r in report["rings"]] == [1, 1]
        outcomes = [o for r in report["rings"] for o in r["outcomes"]]
        assert {o["node"]: o["outcome"] for o in outcomes} == {"pole-2": "ok", "pole-3": "ok"}
        assert all(o["data"]["pong"] is True and o["data"]["uptime_s"] >= 0 for o in outcomes)

        # The first ring fails (pole-1 refuses the signature): the rollout stops there.
        proc = _fleet("send", "--broker", f"127.0.0.1:{port}", "--nodes", "pole-*",
                      "--cmd", "ping", "--key", str(fleet_key), "--ring", "1,2",
                      "--max-failure-rate", "0.1", "--timeout", "10")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "pole-1  error" in proc.stdout and "bad signature" in proc.stdout
        assert "not sent: pole-2, pole-3 (2)" in proc.stdout
        # Per-node keys: each node's own file signs for it (pole-1's too).
        proc = _fleet("send", "--broker", f"127.0.0.1:{port}", "--nodes", "*", "--cmd", "ping",
                      "--key", str(keys), "--ring", "3", "--timeout", "10")
        assert proc.returncode == 0, proc.stdout + proc.stderr

        # A node that stops talking (SIGSTOP: its connection stays up) is flagged silent.
        agents["pole-3"].send_signal(signal.SIGSTOP)
        try:
            live = LiveView("--broker", f"127.0.0.1:{port}", "--silent-after", "2",
                            "--refresh", "0.3")
            try:
                assert live.saw("pole-3: online", 10), live.lines
                assert live.saw("silent", 10), live.lines
                assert any(line.split()[1] == "pole-3:" and "silent" in line
                           for line in live.lines), live.lines
                # A killed node goes offline through its last will, live.
                agents["pole-2"].send_signal(signal.SIGKILL)
                agents["pole-2"].wait(10)
                assert live.saw("pole-2: offline (lost)", 10), live.lines
            finally:
                live.stop(10)
            assert "Traceback" not in live.proc.stderr.read()
            assert live.proc.returncode == 1  # the last verdict: nodes need attention
        finally:
            agents["pole-3"].send_signal(signal.SIGCONT)
        doc = _view(port, "--problems")
        assert doc["exit"] == 1
        assert {n["node"]: n["status"] for n in doc["nodes"]} == {"pole-2": "offline"}
        assert doc["nodes"][0]["reason"] == "lost"
        text = _fleet("--broker", f"127.0.0.1:{port}", "--once", "--wait", "1").stdout
        assert "pole-2  offline (lost)" in text and "pole-1" in text
    finally:
        for agent in agents.values():
            if agent.poll() is None:
                agent.terminate()
        for agent in agents.values():
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
        for emu in emulators:
            emu.stop()
    for node in agents:
        log = (tmp_path / f"{node}.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-2000:]


class _FakeNode:
    """A node as the fleet sees it, without a daemon: a retained birth, the node's own
    command processor (signature, replay, schema), results, and update events: what a
    real update ends with (confirmed or rolled_back) is given."""

    def __init__(self, port: int, node: str, key: bytes, outcome: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from agent.core.commands import CommandProcessor
        from agent.core.config import CommandsConfig

        self.node, self.outcome, self.seq = node, outcome, 0
        self.requests: list[tuple[str, str]] = []
        self.processor = CommandProcessor(self, CommandsConfig(), key=key)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fake-{node}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"citynode/{node}/command", qos=1)
        self.client.loop_start()
        self._publish("state", birth("0.1.0", interval=60), retain=True)

    def _publish(self, leaf: str, records: list[Record], retain: bool = False) -> None:
        self.seq += 1
        self.client.publish(f"citynode/{self.node}/{leaf}",
                            pack(records, t=time.time(), seq=self.seq), qos=1, retain=retain)

    def _on_message(self, client, userdata, msg) -> None:
        result = self.processor.handle(msg.payload)
        self._publish("result", result.records())
        if result.ok and result.cmd == "update":
            for phase in ("downloading", "verified", "installing", self.outcome):
                reason = "the gate's deadline passed" if phase == "rolled_back" else ""
                self._publish("event", [Record("update", text=phase)]
                              + ([Record("update:reason", text=reason)] if reason else []))

    # NodeControl: only what the commands sent here use.
    def uptime_s(self) -> float:
        return 1.0

    def update(self, url, sha256, size, version, command_id=None) -> tuple[bool, str]:
        self.requests.append((version, command_id or ""))
        return True, "downloading"

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.broker
def test_send_update_waits_for_each_nodes_outcome(tmp_path, mosquitto) -> None:
    key = tmp_path / "fleet.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    nodes = [_FakeNode(mosquitto.port, "a-1", KEY, "confirmed"),
             _FakeNode(mosquitto.port, "a-2", KEY, "confirmed"),
             _FakeNode(mosquitto.port, "a-3", KEY, "rolled_back"),
             _FakeNode(mosquitto.port, "a-4", KEY, "confirmed")]
    try:
        view = subprocess.Popen(
            [sys.executable, "-m", "agent", "fleet", "--broker", f"127.0.0.1:{mosquitto.port}",
             "--once", "--wait", "8", "--json", "--problems"], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        time.sleep(1.5)
        args = json.dumps({"url": "https://updates.example.net/citynode-0.2.0.tar",
                           "sha256": "ab" * 32, "version": "0.2.0"})
        proc = _fleet("send", "--broker", f"127.0.0.1:{mosquitto.port}", "--nodes", "a-*",
                      "--cmd", "update", "--args", args, "--key", str(key), "--ring", "2",
                      "--wait-update", "--update-timeout", "20", "--timeout", "10",
                      "--max-failure-rate", "0.4", "--json")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        first, second = report["rings"]
        assert [(o["node"], o["outcome"]) for o in first["outcomes"]] == \
            [("a-1", "ok"), ("a-2", "ok")]
        assert [(o["node"], o["outcome"], o["detail"]) for o in second["outcomes"]] == \
            [("a-3", "update", "rolled_back: the gate's deadline passed"),
             ("a-4", "ok", "confirmed")]
        assert second["failure_rate"] == 0.5 and second["stopped"] and not report["ok"]
        assert [n.requests[0][0] for n in nodes] == ["0.2.0"] * 4
        # The view, listening meanwhile, shows the update that was rolled back.
        out, err = view.communicate(timeout=30)
        assert view.returncode == 1, err
        (row,) = json.loads(out)["nodes"]
        assert (row["node"], row["update_phase"], row["problems"]) == (
            "a-3", "rolled_back", ["update rolled_back (the gate's deadline passed)"])
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.broker
def test_the_live_view_reconnects_when_the_broker_comes_back(tmp_path, mosquitto) -> None:
    live = LiveView("--broker", f"127.0.0.1:{mosquitto.port}", "--refresh", "0.2")
    try:
        time.sleep(1.0)
        mosquitto.stop()
        assert live.saw("retrying"), live.lines
        mosquitto.start()
        assert live.saw("connected again"), live.lines
        node = _FakeNode(mosquitto.port, "back-1", KEY, "confirmed")
        try:
            assert live.saw("back-1: online, version 0.1.0: ok"), live.lines
        finally:
            node.stop()
    finally:
        live.stop(15)
    assert "Traceback" not in live.proc.stderr.read()
