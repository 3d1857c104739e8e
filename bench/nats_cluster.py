"""A real three-node NATS cluster with MQTT on this machine (127.0.0.1 only), for the
cluster tests (tests/cluster) and the fleet soak (bench/fleet_soak.py).

NATS speaks MQTT 3.1.1 through JetStream (sessions, QoS 1 and retained messages live in
replicated streams), so each server runs JetStream, and the three are joined by cluster
routes. A server can be stopped and started again on the same ports and store: that is a
rolling restart as an operator does it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NATS_PATHS = ("/usr/bin/nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server")


def find_nats() -> str | None:
    """The nats-server binary (Debian's package), or None."""
    found = shutil.which("nats-server")
    if found:
        return found
    return next((p for p in NATS_PATHS if Path(p).exists()), None)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Node:
    """One server: its client, route, MQTT and monitoring ports, its store and process."""

    name: str
    client: int
    route: int
    mqtt: int
    monitor: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.mqtt}"


@dataclass
class NatsCluster:
    """Three (or ``size``) nats-server processes, clustered, MQTT on each."""

    workdir: Path
    size: int = 3
    binary: str = ""
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.binary = self.binary or find_nats() or ""
        if not self.binary:
            raise FileNotFoundError("nats-server is not installed (apt-get install nats-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(4 * self.size)
        for i in range(self.size):
            c, r, m, mon = ports[4 * i:4 * i + 4]
            self.nodes.append(Node(f"n{i + 1}", c, r, m, mon, self.workdir / f"n{i + 1}"))

    def _conf(self, node: Node) -> Path:
        routes = ", ".join(f'"nats-route://127.0.0.1:{n.route}"' for n in self.nodes
                           if n is not node)
        node.store.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"{node.name}.conf"
        conf.write_text(
            f'server_name: "{node.name}"\n'
            f"listen: 127.0.0.1:{node.client}\n"
            f"http: 127.0.0.1:{node.monitor}\n"
            f'jetstream {{ store_dir: "{node.store}", max_memory_store: 64MB, '
            f"max_file_store: 2GB }}\n"
            f'cluster {{ name: "citynode-test", listen: 127.0.0.1:{node.route}, '
            f"routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{node.mqtt}, ack_wait: \"10s\", "
            f"stream_replicas: {min(3, self.size)} }}\n")
        return conf

    def start_node(self, i: int, timeout: float = 20.0) -> None:
        node = self.nodes[i]
        log = open(self.workdir / f"{node.name}.log", "ab")
        # Its own folder as the working directory: nats-server 2.9 was seen writing a
        # consumer's meta.inf/meta.sum into its working directory.
        node.proc = subprocess.Popen([self.binary, "-c", str(self._conf(node))], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=node.store)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"nats-server {node.name} exited: "
                                   f"{(self.workdir / f'{node.name}.log').read_text()[-800:]}")
            if port_open(node.mqtt):
                return
            time.sleep(0.1)
        raise TimeoutError(f"nats-server {node.name}: MQTT port {node.mqtt} not open")

    def stop_node(self, i: int, timeout: float = 20.0) -> None:
        """A clean stop (SIGTERM: lame duck is SIGUSR2; SIGTERM closes at once)."""
        node = self.nodes[i]
        if node.proc is None:
            return
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(5)
        node.proc = None

    def start(self, timeout: float = 60.0) -> None:
        for i in range(self.size):
            self.start_node(i)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every running server sees its routes and a JetStream meta leader."""
        import json
        import urllib.request

        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.proc is not None]
        while time.monotonic() < deadline:
            ok = 0
            for n in running:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{n.monitor}/jsz", timeout=1) as r:
                        jsz = json.load(r)
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{n.monitor}/healthz?js-enabled-only=true",
                            timeout=1) as r:
                        healthy = r.status == 200
                except (OSError, ValueError):
                    break
                leader = (jsz.get("meta_cluster") or {}).get("leader")
                if leader and healthy:
                    ok += 1
            if ok == len(running):
                return
            time.sleep(0.25)
        raise TimeoutError("the NATS cluster did not become ready (no JetStream meta leader)")

    def stop(self) -> None:
        for i in range(self.size):
            self.stop_node(i)

    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes if n.proc is not None]

    def connections(self, i: int) -> int:
        """MQTT connections on server ``i`` (its monitoring endpoint /connz)."""
        import json
        import urllib.request

        n = self.nodes[i]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{n.monitor}/connz",
                                        timeout=2) as r:
                return int(json.load(r).get("num_connections", 0))
        except (OSError, ValueError):
            return 0


@dataclass(slots=True)
class Arrival:
    """One message as the platform got it."""

    node: str  # the node id from the topic
    leaf: str  # telemetry, health, event, state, result...
    b: int
    q: int | None
    h: bool
    status: str  # for state: online or offline
    wall: float


#: The spool lane of each topic leaf (agent/wire/uplink.py LANE_OF): order is per lane.
LANE = {"telemetry": "telemetry", "health": "telemetry"}


class Consumer:
    """The platform: MQTT 3.1.1 (all NATS speaks), QoS 1, a persistent session (clean
    session false) on a server of the cluster, so it misses nothing while it or a server
    is away; when its server goes, paho reconnects it to the next of ``ports``."""

    def __init__(self, ports: list[int], topic: str = "citynode/#",
                 client_id: str = "platform", decode: bool = True) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.ports, self.topic, self.decode = ports, topic, decode
        self._next = 0
        self.arrivals: list[Arrival] = []
        self.raw: list[tuple[str, bytes, float]] = []  # undecodable (command results...)
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connects = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._rotate
        c.on_connect_fail = self._rotate
        c.reconnect_delay_set(0.1, 0.5)
        c.max_inflight_messages_set(100)
        self.client = c

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if getattr(rc, "value", rc) != 0:
            return
        self.connects += 1
        if not flags.session_present:
            client.subscribe(self.topic, qos=1)
        self.subscribed.set()

    def _rotate(self, client, *args) -> None:
        """The next server for paho's next attempt (the session lives in the cluster)."""
        self._next = (self._next + 1) % len(self.ports)
        try:
            client.port = self.ports[self._next]
        except RuntimeError:  # still open: the next attempt goes where it went
            pass

    def _on_message(self, client, userdata, msg) -> None:
        from agent.wire import formats

        now = time.time()
        if msg.retain:  # a stored copy for a new subscription (an earlier node's state)
            return
        parts = msg.topic.split("/")
        try:
            pack = formats.decode(msg.payload)
        except formats.PayloadError:
            with self.lock:
                self.raw.append((msg.topic, bytes(msg.payload), now))
            return
        first = pack.records[0] if pack.records else None
        status = first.text if first is not None and first.name == "status" else ""
        with self.lock:
            self.arrivals.append(Arrival(parts[1] if len(parts) > 2 else "", parts[-1],
                                         pack.session, pack.seq, bool(pack.historical),
                                         status or "", now))

    def start(self, timeout: float = 15.0) -> None:
        self.client.connect("127.0.0.1", self.ports[0], keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError("the platform could not subscribe")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)


@dataclass
class Verdict:
    """What the platform got from each node: lost numbers, duplicates, order breaks."""

    nodes: int = 0
    unique: int = 0
    duplicates: int = 0
    lost: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    order_breaks: list[str] = field(default_factory=list)

    @property
    def lost_count(self) -> int:
        return sum(len(v) for v in self.lost.values())


def judge(arrivals: list[Arrival], *, complete: bool = True) -> Verdict:
    """Every (b, q) of a boot session from 0 to its last number arrived (``complete``:
    the sessions ended with their goodbye, so the last number is known); and within each
    lane the first arrivals of live messages are in sequence order, and so are those of
    history (docs/spool.md section 1: live and history interleave; each connection's
    birth goes first, before what was accepted earlier, so births are not judged)."""
    v = Verdict()
    seen: dict[tuple[str, int], set[int]] = {}
    numbered = 0
    last: dict[tuple[str, int, str, bool], tuple[int, str]] = {}
    for a in arrivals:
        if a.q is None:
            continue
        numbered += 1
        qs = seen.setdefault((a.node, a.b), set())
        if a.q in qs:
            continue
        qs.add(a.q)
        if a.leaf == "state":
            continue
        key = (a.node, a.b, LANE.get(a.leaf, "event"), a.h)
        before = last.get(key, (-1, ""))
        if a.q < before[0]:
            v.order_breaks.append(f"{a.node} b={a.b} {key[2]} {'history' if a.h else 'live'}: "
                                  f"q={a.q} ({a.leaf}) after q={before[0]} ({before[1]})")
        else:
            last[key] = (a.q, a.leaf)
    v.nodes = len({n for n, _ in seen})
    v.unique = sum(len(qs) for qs in seen.values())
    v.duplicates = numbered - v.unique
    for key, qs in seen.items():
        missing = sorted(set(range(max(qs) + 1)) - qs)
        if missing:
            v.lost[key] = missing
    return v


def write_agent_config(path: Path, *, node_id: str, state_dir: Path,
                       brokers: list[str], interval_s: float = 1.0,
                       read_interval_s: float = 0.5, hmac_key_file: str = "",
                       backoff_max_s: float = 2.0) -> None:
    """A node on an emulated SHT3x (the emulated I2C bus: no pty, no device node) whose
    [mqtt] is the first of ``brokers`` ("host:port") with the others as failover."""
    from agent.tools.simulate import write_config

    host, port = brokers[0].rsplit(":", 1)
    write_config(path, node_id=node_id, state_dir=state_dir, ports=[], interval=interval_s,
                 fmt="senml-cbor", broker=(host, int(port)), warmup_s=0,
                 sensors=[{"type": "sht3x", "name": "air", "bus": "emulator",
                           "read_interval_s": read_interval_s}])
    text = path.read_text().replace("backoff_max_s = 10", f"backoff_max_s = {backoff_max_s:g}")
    failover = ", ".join(f'"{b}"' for b in brokers[1:])
    text = text.replace("[mqtt]\n", f"[mqtt]\nfailover = [{failover}]\n", 1)
    if hmac_key_file:
        text += f'\n[commands]\nhmac_key_file = "{hmac_key_file}"\n'
    path.write_text(text)
