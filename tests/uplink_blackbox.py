"""The real agent under a broker outage and SIGKILLs, seen only from the platform's side.

Shared by tests/test_uplink.py (seconds, in `make test`) and tests/faults/test_faults.py
(minutes, `make test-faults`). What a platform may rely on (docs/spool.md section 1,
docs/payload.md section 4) is checked by :func:`check`:

- no gap: in every boot session the numbers delivered are 0..n without a hole (a kill
  takes only the newest numbers of its session);
- the goodbye is the last message of the session that stops, after its last telemetry;
- live telemetry does not wait behind a draining backlog;
- duplicates after a kill are bounded by one batch window and the in-flight window;
- the retained state at the end is the last goodbye, not an older birth sent late.
"""

from __future__ import annotations

import itertools
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.tools.simulate import Mosquitto, free_port, write_config
from agent.wire import formats
from agent.wire.uplink import MAX_INFLIGHT

ROOT = Path(__file__).resolve().parent.parent
BATCH_S = 1.0  # the default [spool] batch_s the agent runs with here


@dataclass(slots=True)
class Arrival:
    leaf: str  # telemetry, event, health, state
    b: int
    q: int | None
    h: bool
    bt: float
    status: str  # for state: online or offline
    wall: float  # when the platform got it


class Platform:
    """A consumer with a persistent session: it misses nothing across a broker restart."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        self.connected_at = 0.0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"platform-{uuid.uuid4().hex[:6]}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.1, 0.5)
        self.client = c
        self.subscribed = threading.Event()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if not flags.session_present:
            client.subscribe(self.topic, qos=1)
        self.connected_at = time.time()
        self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            pack = formats.decode(msg.payload)
        except formats.PayloadError:
            return
        first = pack.records[0] if pack.records else None
        status = first.text if first is not None and first.name == "status" else ""
        with self.lock:
            self.arrivals.append(Arrival(msg.topic.rsplit("/", 1)[-1], pack.session, pack.seq,
                                         pack.historical, pack.time, status or "", time.time()))

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def since(self, wall: float) -> list[Arrival]:
        with self.lock:
            return [a for a in self.arrivals if a.wall > wall]

    def births_since(self, wall: float) -> list[Arrival]:
        return [a for a in self.since(wall) if a.leaf == "state" and a.status == "online"]

    def unique(self) -> set[tuple[int, int]]:
        """(boot session, sequence) of every numbered arrival: what de-duplication keeps."""
        with self.lock:
            return {(a.b, a.q) for a in self.arrivals if a.q is not None}

    def sessions(self) -> set[int]:
        with self.lock:
            return {a.b for a in self.arrivals}

    def born(self, known: set[int]) -> bool:
        """A birth from a boot session not in ``known`` (an older birth sent late is not)."""
        with self.lock:
            return any(a.leaf == "state" and a.status == "online" and a.b not in known
                       for a in self.arrivals)


def retained_state(port: int, topic: str) -> Arrival | None:
    """What a platform that subscribes now is told about the node's state."""
    got: list[Arrival] = []

    def on_message(client, userdata, msg) -> None:
        pack = formats.decode(msg.payload)
        status = next((r.text for r in pack.records if r.name == "status"), "") or ""
        got.append(Arrival("state", pack.session, pack.seq, pack.historical, pack.time,
                           status, time.time()))

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"late-{uuid.uuid4().hex[:6]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.on_connect = lambda client, u, f, rc, p: client.subscribe(topic, qos=1)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(lambda: got, 3)
    c.disconnect()
    c.loop_stop()
    return got[0] if got else None


def wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@dataclass
class Run:
    """What happened: the platform's view, and how often the node was killed."""

    platform: Platform
    kills: int = 0
    drain_rate: float = 0.0
    final_session: int = 0
    retained: Arrival | None = None
    log: str = ""
    notes: list[str] = field(default_factory=list)


def outage_and_kills(tmp_path: Path, *, node_id: str, outage_s: float, drain_rate: float,
                     kills_before: int = 0, kills_in_outage: int = 0,
                     kill_at_reconnect: bool = True, kills_in_drain: int = 1,
                     seed: int = 12) -> Run:
    """A connected node; SIGKILLs while connected, the broker stopped for ``outage_s``
    (SIGKILLs meanwhile), a SIGKILL just after the reconnect (the birth delivered, the
    last report still in its batch window) and while the backlog drains; then a clean
    stop once it has drained."""
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    rng = random.Random(seed)
    port = free_port()
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker", port=port, persistence=True)
    broker.start()
    platform = Platform(port, f"citynode/{node_id}/#")
    platform.start()
    model = PMS5003Model(itertools.cycle([(5, 8, 11, 5, 8, 11)]), interval_s=0.5, warmup_s=0)
    emu = SerialEmulator(model, tmp_path / "dev" / "pms0")
    emu.start()
    cfg = tmp_path / "c.toml"
    write_config(cfg, node_id=node_id, state_dir=tmp_path / "state", ports=[emu.path],
                 interval=1, fmt="senml-cbor", broker=("127.0.0.1", port), warmup_s=0,
                 read_interval_s=0.3)
    text = cfg.read_text().replace("backoff_max_s = 10", "backoff_max_s = 1")
    cfg.write_text(text + f"\n[spool]\ndrain_rate = {drain_rate:g}\n")
    log_path = tmp_path / "agent.log"
    run = Run(platform, drain_rate=drain_rate)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=open(log_path, "ab"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def kill(agent: subprocess.Popen[bytes], why: str) -> subprocess.Popen[bytes]:
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        run.kills += 1
        run.notes.append(f"{time.time():.2f} SIGKILL {why}")
        return start()

    def born(known: set[int], timeout: float = 30) -> None:
        assert wait_for(lambda: platform.born(known), timeout), "no birth"

    agent = start()
    try:
        t = time.time()
        born(set())
        assert wait_for(lambda: any(a.leaf == "telemetry" for a in platform.since(t)), 20)
        for _ in range(kills_before):
            time.sleep(rng.uniform(0.5, 2.0))
            known = platform.sessions()
            agent = kill(agent, "while connected")
            born(known)
        broker.stop()
        run.notes.append(f"{time.time():.2f} broker stopped")
        for i in range(kills_in_outage):
            time.sleep(outage_s / (kills_in_outage + 1))
            agent = kill(agent, f"in the outage ({i + 1})")
        time.sleep(outage_s / (kills_in_outage + 1))
        known = platform.sessions()
        broker = Mosquitto(tmp_path / "broker", port=port, persistence=True)
        broker.start()
        up = time.time()
        run.notes.append(f"{up:.2f} broker back")
        if kills_in_outage:
            born(known)  # the agent that was started in the outage
        else:
            assert wait_for(lambda: platform.births_since(up), 30), "no reconnect"
        if kill_at_reconnect:
            # The birth is delivered; the report made just before it may still be in its
            # batch window behind the backlog.
            time.sleep(rng.uniform(0.0, 0.4))
            known = platform.sessions()
            agent = kill(agent, "just after the reconnect")
            born(known)
        for i in range(kills_in_drain):
            since = time.time()
            assert wait_for(lambda s=since: any(a.h for a in platform.since(s)), 30), "no drain"
            time.sleep(rng.uniform(0.1, 0.8))
            known = platform.sessions()
            agent = kill(agent, f"while the backlog drains ({i + 1})")
            born(known)
        run.final_session = max(platform.sessions())
        since = time.time()
        # Drained: the history the last start found has come, and none for three seconds.
        wait_for(lambda: any(a.h for a in platform.since(since)), 10)

        def drained() -> bool:
            recent = platform.since(time.time() - 3)
            return bool(recent) and not any(a.h for a in recent)

        assert wait_for(drained, 120), "the backlog did not drain"
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        run.notes.append(f"{time.time():.2f} SIGTERM")
        time.sleep(1.0)
        run.retained = retained_state(port, f"citynode/{node_id}/state")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        platform.stop()
        emu.stop()
        broker.stop()
        run.log = log_path.read_text(errors="replace")
    return run


def check(run: Run) -> None:
    """What a platform may rely on, after a run of :func:`outage_and_kills`."""
    arrivals = list(run.platform.arrivals)
    where = "\n".join(run.notes)
    # No gap: within each boot session the delivered numbers are 0..n.
    sessions: dict[int, set[int]] = {}
    for a in arrivals:
        if a.q is not None:
            sessions.setdefault(a.b, set()).add(a.q)
    for b, qs in sessions.items():
        missing = sorted(set(range(max(qs) + 1)) - qs)
        assert not missing, f"session {b}: numbers {missing[:20]} never arrived\n{where}"
    # The goodbye is the last message of the session that stopped, after its telemetry.
    final = [a for a in arrivals if a.b == run.final_session]
    bye = [i for i, a in enumerate(final)
           if a.leaf == "state" and a.status == "offline" and a.q is not None]  # not the will
    assert bye, f"no goodbye from session {run.final_session}"
    last_tele = max(i for i, a in enumerate(final) if a.leaf == "telemetry")
    assert last_tele < bye[0], "the goodbye arrived before the last telemetry"
    assert final[bye[0]].q == max(sessions[run.final_session]), "the goodbye is the last number"
    assert run.retained is not None and run.retained.status == "offline" and \
        run.retained.b == run.final_session, f"retained state: {run.retained}"
    # Live telemetry first: a pack not marked historical arrives within a report or so of
    # being made (bt is its whole second), also while a backlog drains behind it.
    seen: set[tuple[int, int | None]] = set()
    late = []
    for a in arrivals:
        key = (a.b, a.q)
        if key in seen:
            continue
        seen.add(key)
        if a.leaf == "telemetry" and not a.h and a.wall > run.platform.connected_at + 0.5 \
                and a.wall - a.bt > 2.0:
            late.append(round(a.wall - a.bt, 1))
    assert not late, f"live telemetry waited {late} s\n{where}"
    # Duplicates: after a kill, what was acknowledged in the last batch window and what
    # was in flight; after a connection drop, what was in flight.
    dupes = len([a for a in arrivals if a.q is not None]) - sum(map(len, sessions.values()))
    bound = run.kills * (run.drain_rate * BATCH_S * 2 + MAX_INFLIGHT) + MAX_INFLIGHT
    assert dupes <= bound, f"{dupes} duplicates, more than {bound}"
