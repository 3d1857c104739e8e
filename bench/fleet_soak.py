"""The fleet soak: many real agents against a real three-node NATS cluster, a rolling restart.

``make soak`` (``python -m bench.fleet_soak``): 100 agent processes (``python -m agent run``,
each with its own configuration and state directory, an emulated SHT3x on the emulated I2C
bus, MALLOC_ARENA_MAX=2 as the unit sets it), their primaries spread over the three servers
and the other two as failover; a platform consumer (QoS 1, persistent session) on the
cluster; for 10 minutes, during which the servers are restarted one by one. Printed: the
messages lost (must be 0), duplicates, order within each lane, each agent's CPU and memory
(from /proc), the servers' CPU, memory and connections, and the broker capacity a
50,000-node city needs at S-DoT's 2-minute report interval, from the measured
per-connection and per-message costs (docs/ops.md, "Fleet capacity").

Everything listens on 127.0.0.1. Exit status 0 when nothing was lost, 1 otherwise, 77 when
nats-server is missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.nats_cluster import Consumer, NatsCluster, find_nats, judge, write_agent_config

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
#: The city the estimate is for: nodes, report interval (S-DoT: every 2 minutes), and the
#: health report every 5 minutes ([health] interval_s default).
CITY_NODES, CITY_INTERVAL_S, CITY_HEALTH_S = 50_000, 120.0, 300.0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (/proc/<pid>/stat), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Sample:
    at: float
    wall: float
    agent_cpu: dict[int, float] = field(default_factory=dict)
    agent_rss: dict[int, int] = field(default_factory=dict)
    broker_cpu: dict[str, float] = field(default_factory=dict)
    broker_rss: dict[str, int] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)


def sample(agents: list[subprocess.Popen[bytes]], cluster: NatsCluster) -> Sample:
    s = Sample(time.monotonic(), time.time())
    for a in agents:
        c, r = cpu_seconds(a.pid), rss_bytes(a.pid)
        if c is not None and r is not None:
            s.agent_cpu[a.pid], s.agent_rss[a.pid] = c, r
    for i, n in enumerate(cluster.nodes):
        if n.proc is None:
            continue
        c, r = cpu_seconds(n.proc.pid), rss_bytes(n.proc.pid)
        if c is not None and r is not None:
            s.broker_cpu[n.name], s.broker_rss[n.name] = c, r
            s.connections[n.name] = cluster.connections(i)
    return s


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def run(nodes: int, minutes: float, interval_s: float, down_s: float, workdir: Path) -> int:
    cluster = NatsCluster(workdir / "nats")
    cluster.start()
    ports = [n.mqtt for n in cluster.nodes]
    addrs = [n.address for n in cluster.nodes]
    platform = Consumer(list(reversed(ports)), client_id="soak-platform")
    platform.start()
    idle0 = sample([], cluster)  # the servers with the platform only: the baseline
    time.sleep(10)
    idle = sample([], cluster)
    idle_cpu_rate = sum(idle.broker_cpu[n] - idle0.broker_cpu[n] for n in idle.broker_cpu) \
        / (idle.at - idle0.at)
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    env.pop("RUNTIME_DIRECTORY", None)
    agents: list[subprocess.Popen[bytes]] = []
    t_start = time.monotonic()
    print(f"# {nodes} agents, report every {interval_s:g} s, {minutes:g} min, servers "
          f"{', '.join(addrs)}", flush=True)
    try:
        for i in range(nodes):
            d = workdir / f"node{i:03d}"
            d.mkdir()
            cfg = d / "node.toml"
            order = addrs[i % 3:] + addrs[:i % 3]  # primaries spread over the servers
            write_agent_config(cfg, node_id=f"soak-{i:03d}", state_dir=d / "state",
                               brokers=order, interval_s=interval_s,
                               read_interval_s=max(1.0, interval_s / 2), backoff_max_s=5.0)
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=ROOT,
                env=env, stdout=open(d / "agent.log", "wb"), stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL))
            time.sleep(0.25)  # Python's start-up costs a core-second: stagger them
        started = time.monotonic()
        print(f"# started {nodes} agents in {started - t_start:.0f} s", flush=True)
        samples: list[Sample] = []
        end = started + minutes * 60
        # The rolling restart: each server in turn, evenly through the middle of the run.
        plan = [started + minutes * 60 * (k + 1) / (len(cluster.nodes) + 1)
                for k in range(len(cluster.nodes))]
        restarts: list[str] = []
        stop_sampling = threading.Event()

        def sampler() -> None:
            while not stop_sampling.wait(15):
                samples.append(sample(agents, cluster))

        th = threading.Thread(target=sampler, daemon=True)
        samples.append(sample(agents, cluster))
        th.start()
        first_restart_wall = time.time() + (plan[0] - time.monotonic())
        for k, at in enumerate(plan):
            time.sleep(max(0.0, at - time.monotonic()))
            t = time.monotonic()
            conns = cluster.connections(k)
            cluster.stop_node(k)
            time.sleep(down_s)
            cluster.start_node(k)
            cluster.wait_ready(120)
            restarts.append(f"{cluster.nodes[k].name} ({conns} connections) down "
                            f"{down_s:g} s, ready again after {time.monotonic() - t:.1f} s")
            print(f"# restarted {restarts[-1]}", flush=True)
        time.sleep(max(0.0, end - time.monotonic()))
        stop_sampling.set()
        th.join(20)
        samples.append(sample(agents, cluster))
        died = [a.pid for a in agents if a.poll() is not None]
    finally:
        for a in agents:
            if a.poll() is None:
                a.send_signal(signal.SIGTERM)
        for a in agents:
            try:
                a.wait(60)
            except subprocess.TimeoutExpired:
                a.kill()
                a.wait(10)
    # Every goodbye delivered (or a minute passed), then what the platform got.
    ids = {f"soak-{i:03d}" for i in range(nodes)}

    def goodbyes() -> set[str]:
        return {a.node for a in platform.snapshot()
                if a.leaf == "state" and a.status == "offline" and a.q is not None}

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and goodbyes() != ids:
        time.sleep(0.5)
    time.sleep(3)
    arrivals = platform.snapshot()
    platform.stop()
    last = sample([], cluster)
    cluster.stop()
    verdict = judge(arrivals)
    missing_bye = sorted(ids - goodbyes())

    # -- figures ---------------------------------------------------------------------
    first, final = samples[0], samples[-1]
    span = final.at - first.at
    pids = [p for p in final.agent_cpu if p in first.agent_cpu]
    cpu_pct = sorted(100 * (final.agent_cpu[p] - first.agent_cpu[p]) / span for p in pids)
    rss = sorted(max(s.agent_rss.get(p, 0) for s in samples) for p in pids)
    total_msgs = len(arrivals)
    broker_cpu_s = 0.0
    for name in first.broker_cpu:  # per server, across restarts: sum the runs' deltas
        seen = [s.broker_cpu[name] for s in samples if name in s.broker_cpu]
        broker_cpu_s += sum(max(0.0, b - a) for a, b in itertools.pairwise(seen)
                            if b >= a)
    peak_rss = {n: max(s.broker_rss.get(n, 0) for s in samples) for n in first.broker_rss}
    peak_conn = {n: max(s.connections.get(n, 0) for s in samples) for n in first.broker_rss}
    rss_sum = sum(final.broker_rss.values())
    idle_sum = sum(idle.broker_rss.values())
    per_conn = max(0.0, (rss_sum - idle_sum) / max(1, nodes))
    msgs_in = verdict.unique + verdict.duplicates
    rate = msgs_in / span if span else 0.0
    # The per-message cost in the steady part (all agents up, before the first restart),
    # less what the idle cluster burns anyway: in + out + JetStream replication (R3).
    steady = [s for s in samples if s.wall < first_restart_wall]
    a, b = steady[0], steady[-1]
    steady_msgs = sum(1 for x in arrivals if a.wall <= x.wall < b.wall)
    steady_cpu = sum(b.broker_cpu[n] - a.broker_cpu[n] for n in b.broker_cpu
                     if n in a.broker_cpu)
    busy_cpu = max(0.0, steady_cpu - idle_cpu_rate * (b.at - a.at))
    cpu_per_msg = busy_cpu / max(1, steady_msgs)
    city_rate = CITY_NODES / CITY_INTERVAL_S + CITY_NODES / CITY_HEALTH_S
    city_cores = city_rate * cpu_per_msg
    city_mem = CITY_NODES * per_conn
    report = {
        "nodes": nodes, "minutes": minutes, "interval_s": interval_s,
        "messages": total_msgs, "unique": verdict.unique, "duplicates": verdict.duplicates,
        "lost": verdict.lost_count, "lost_detail": {f"{k[0]}/{k[1]}": v[:20]
                                                    for k, v in verdict.lost.items()},
        "order_breaks": verdict.order_breaks[:20], "no_goodbye": missing_bye,
        "agents_died": died, "restarts": restarts,
        "agent_cpu_pct": {"mean": sum(cpu_pct) / len(cpu_pct), "p95": cpu_pct[
            int(0.95 * (len(cpu_pct) - 1))], "max": cpu_pct[-1]} if cpu_pct else {},
        "agent_rss_mib": {"mean": sum(rss) / len(rss) / 2**20, "max": rss[-1] / 2**20}
        if rss else {},
        "broker_cpu_s": broker_cpu_s, "broker_cpu_pct_of_one_core": 100 * broker_cpu_s / span,
        "broker_rss_mib_peak": {k: v / 2**20 for k, v in peak_rss.items()},
        "broker_rss_mib_idle": {k: v / 2**20 for k, v in idle.broker_rss.items()},
        "broker_rss_mib_end": {k: v / 2**20 for k, v in final.broker_rss.items()},
        "broker_rss_mib_after_goodbyes": {k: v / 2**20 for k, v in last.broker_rss.items()},
        "connections_peak": peak_conn, "messages_per_s": rate,
        "broker_rss_per_connection_kib": per_conn / 1024,
        "broker_cpu_ms_per_message": 1000 * cpu_per_msg,
        "broker_idle_cpu_pct": 100 * idle_cpu_rate,
        "steady": {"seconds": b.at - a.at, "messages": steady_msgs, "broker_cpu_s": steady_cpu},
        "city": {"nodes": CITY_NODES, "interval_s": CITY_INTERVAL_S,
                 "messages_per_s": city_rate, "cpu_cores": city_cores,
                 "memory_gib": city_mem / 2**30},
    }
    out = ROOT / "build" / "fleet_soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"fleet soak: {nodes} agents x {minutes:g} min, report every {interval_s:g} s, "
          f"NATS {len(cluster.nodes)}-server cluster, rolling restart:")
    for r in restarts:
        print(f"  restart: {r}")
    print(f"  messages: {total_msgs} received, {verdict.unique} unique, {verdict.duplicates} "
          f"duplicates, LOST {verdict.lost_count}, order breaks {len(verdict.order_breaks)}, "
          f"no goodbye {len(missing_bye)}, agents died {len(died)}")
    if cpu_pct:
        print(f"  agent: CPU {report['agent_cpu_pct']['mean']:.2f} % of a core mean, "
              f"p95 {report['agent_cpu_pct']['p95']:.2f} %, max {cpu_pct[-1]:.2f} %; "
              f"RSS mean {report['agent_rss_mib']['mean']:.1f} MiB, max "
              f"{report['agent_rss_mib']['max']:.1f} MiB")
    print(f"  brokers: {broker_cpu_s:.1f} CPU s ({report['broker_cpu_pct_of_one_core']:.1f} % of "
          f"a core, all three), RSS idle {mib(idle_sum)} -> end {mib(rss_sum)} "
          f"(peak per server {', '.join(f'{k} {mib(v)}' for k, v in peak_rss.items())}); "
          f"connections peak {peak_conn}")
    print(f"  per connection: {per_conn / 1024:.0f} KiB of broker RSS (cluster total); "
          f"per message: {1000 * cpu_per_msg:.3f} CPU ms over the idle cluster's "
          f"{100 * idle_cpu_rate:.1f} % ({steady_msgs} messages in the "
          f"{b.at - a.at:.0f} s before the first restart; {rate:.1f} msg/s overall)")
    print(f"  a {CITY_NODES}-node city at {CITY_INTERVAL_S:g} s (+ health every "
          f"{CITY_HEALTH_S:g} s): {city_rate:.0f} msg/s -> ~{city_cores:.1f} cores and "
          f"~{city_mem / 2**30:.1f} GiB of broker RSS over the cluster (measured costs, "
          f"before headroom)")
    print(f"  figures in {out.relative_to(ROOT)}")
    return 0 if verdict.lost_count == 0 and not died else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_soak", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0, help="report interval, seconds")
    ap.add_argument("--down", type=float, default=10.0, help="seconds each server is down")
    args = ap.parse_args(argv)
    if find_nats() is None:
        print("nats-server is not installed (apt-get install nats-server): no soak",
              file=sys.stderr)
        return 77
    with tempfile.TemporaryDirectory(prefix="citynode-soak-") as tmp:
        return run(args.nodes, args.minutes, args.interval, args.down, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
