"""``python -m bench.platforms``: what each output format costs a node (issue 17, "Measure
and report").

1. Bytes on the wire per report, for every format of ``agent.wire.formats.NAMES``: a
   street pole's node (a PMS5003 "air" and an SHT3x "climate", the configuration the
   daemon parses, the :class:`~agent.wire.session.Context` it builds in
   ``Node._uplink``) and one typical 60-s telemetry pack, spooled in SenML-CBOR as the
   spool keeps it, go through each format's session: ``will()``, ``opening()`` (a oneM2M
   session gets a "created" answer to every request, as a CSE gives), a first report,
   then the report measured (steady state: a second one). Per report: MQTT messages,
   payload and topic bytes, and the total with an estimated 6 bytes of MQTT per PUBLISH
   (2-byte fixed header, 2-byte topic length, 2-byte packet id; no MQTT 5 properties, no
   PUBACK). The one-off opening cost is counted the same way. No broker, no daemon.
2. The daemon's memory with SenML plus one more format: the real daemon (``python -m agent
   run``, MALLOC_ARENA_MAX=2 as deploy/citynode.service sets) with the emulated pole (the
   PMS5003 behind a pty, the SHT3x on the emulated bus) and a private mosquitto, once with
   ``[mqtt]`` alone (SenML-CBOR, the reference) and once per platform format with one
   ``[[uplink]]`` of it to the same broker; VmRSS and VmHWM after ~20 s. Target: peak <= 45
   MiB for each (issue 17). Nothing answers oneM2M requests on that broker: that session
   keeps resending the AE's create and the reports stay spooled for it.
3. Latency from a report to its contentInstance being readable in Mobius, when
   ../shared/vendor/mobius-fixture.sh and its servers are there: the daemon reports every
   second to Mobius's mosquitto through [mqtt] and a onem2m ``[[uplink]]``; a subscriber
   there stamps each report's SenML-CBOR copy and its oneM2M create, and Mobius's HTTP API
   (127.0.0.1) is polled for the climate container's contentInstances (the last one each
   report writes). Latency: from the SenML copy at the broker to the first poll that lists
   the contentInstance. The pack's own time is a poor origin: telemetry times are rounded
   to the whole second on a schedule not aligned to it (printed too, for comparison).
   Discovery (``?fu=1&ty=4``) instead of ``<container>/la``: Mobius's ``la`` is the
   greatest resource name, not the newest (checked and reported at the end).

Exits 1 when the memory target is missed or a daemon fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import __version__
from agent.wire import formats
from agent.wire.model import Pack, Record
from agent.wire.session import Context, Item, Out, SensorInfo, Session
from agent.wire.topics import Topics

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CITYNODE_SHARED", ROOT.parent / "shared"))
FIXTURE = SHARED / "vendor" / "mobius-fixture.sh"

NODE = "pole-1"
BOOT = 3
SEQ = 1440
REPORT_TIME = 1763900060  # 2025-11-23T12:14:20Z: a report window's end, a whole second
#: MQTT's own bytes per PUBLISH, estimated (QoS 1, MQTT 3.1.1): the fixed header (one byte
#: and the remaining length, which takes 2 bytes from 128 to 16,383), the topic's length,
#: the packet identifier.
MQTT_OVERHEAD = 2 + 2 + 2
BUDGET_MIB = 45.0
REFERENCE = "senml-cbor"
CSE_ID, CSE_NAME = "/Mobius2", "Mobius"


# -- the node ---------------------------------------------------------------------------
def config_text(state_dir: Path | str, *, broker: tuple[str, int] = ("127.0.0.1", 1883),
                pms_port: str = "/dev/ttyAMA0", interval_s: float = 60,
                uplinks: tuple[str, ...] = (), emulated: bool = False) -> str:
    """The street pole's configuration: [mqtt] (SenML-CBOR) and one [[uplink]] per format
    in ``uplinks`` to the same broker, each named after its format. ``emulated``: the
    PMS5003 without warm-up or duty cycle, so an emulated one reports at once."""
    host, port = broker
    parts = [f'[node]\nid = "{NODE}"\nstate_dir = "{state_dir}"\n',
             f"[report]\ninterval_s = {interval_s:g}\n",
             f'[mqtt]\nhost = "{host}"\nport = {port}\n',
             f'[[sensor]]\ntype = "pms5003"\nname = "air"\nport = "{pms_port}"\n'
             + ("warmup_s = 0\nduty_cycle = false\n" if emulated else ""),
             '[[sensor]]\ntype = "sht3x"\nname = "climate"\nbus = "emulator"\n']
    for name in uplinks:
        parts.append(f'[[uplink]]\nname = "{name}"\nformat = "{name}"\nhost = "{host}"\n'
                     f"port = {port}\n")
        if name == "onem2m":
            parts.append(f'[uplink.onem2m]\ncse_id = "{CSE_ID}"\ncse_name = "{CSE_NAME}"\n')
    return "\n".join(parts)


def context(cfg: Any, u: Any, state_dir: Path) -> Context:
    """An uplink's Context, built as agent/core/daemon.py ``Node._uplink`` builds it."""
    from agent.core.sensors import type_name

    return Context(node=cfg.node.id, topics=Topics(u.prefix, cfg.node.id),
                   home=Topics(cfg.mqtt.prefix, cfg.node.id), boot=BOOT, version=__version__,
                   sensors=tuple((s.name, type_name(s)) for s in cfg.sensor),
                   state_dir=state_dir / "uplinks" / u.name, uplink=u.name, host=u.host,
                   port=u.port, options=getattr(u, u.format.replace("-", "_"), None),
                   interval_s=cfg.report.interval_s, commands=cfg.commands.enabled,
                   sensor_info=tuple(SensorInfo(s.name, type_name(s), s.prefix,
                                                tuple(s.reported())) for s in cfg.sensor))


def telemetry_records() -> list[Record]:
    """One 60-s window of the pole, as ``citynode run`` wrote it for this configuration
    (names and order from a local-mode run with the emulated sensors): the PMS5003's three
    PM values with min and max, its reading count (duty cycle: 20 s of 2-s reads) and AQI,
    the SHT3x's temperature and humidity with min and max and its count (2-s reads)."""
    values = [("pm1", 6), ("pm1:min", 5), ("pm1:max", 7), ("pm25", 10), ("pm25:min", 9),
              ("pm25:max", 12), ("pm10", 14), ("pm10:min", 12), ("pm10:max", 17),
              ("air:n", 10), ("air:aq", 11), ("temp", 16.23), ("temp:min", 16.18),
              ("temp:max", 16.31), ("rh", 57.9), ("rh:min", 57.6), ("rh:max", 58.3),
              ("climate:n", 30)]
    return [Record(n, value=v) for n, v in values]


def spooled(home: Topics, seq: int, t: float) -> Item:
    """The report as the spool hands it to an uplink: SenML-CBOR, its historical mark."""
    fmt = formats.get(REFERENCE)
    enc = fmt.encode(Pack(time=t, session=BOOT, seq=seq, records=telemetry_records(),
                          kind="telemetry"))
    return Item("telemetry", home.telemetry, enc.payload, fmt.content_type, enc.mark,
                created=t)


def offline() -> Pack:
    """The last will's pack, as ``Node.offline_pack("lost")`` makes it."""
    return Pack(time=REPORT_TIME, session=BOOT, seq=None, kind="state",
                records=[Record("status", text="offline"), Record("reason", text="lost")])


# -- part 1: bytes on the wire ----------------------------------------------------------
@dataclass(slots=True)
class Cost:
    messages: int = 0
    payload: int = 0
    topic: int = 0

    @property
    def total(self) -> int:
        return self.payload + self.topic + MQTT_OVERHEAD * self.messages

    def add(self, outs: list[Out]) -> Cost:
        for o in outs:
            self.messages += 1
            self.payload += len(o.payload)
            self.topic += len(o.topic.encode())
        return self


@dataclass(slots=True)
class Row:
    fmt: str
    report: Cost | None = None  # None: not available
    opening: Cost = field(default_factory=Cost)
    will: int = 0  # payload + topic of the last will (rides in CONNECT)
    ratio: float = float("nan")  # report.total / SenML-CBOR's
    note: str = ""


def _answer_requests(session: Session, outs: list[Out], answers: list[int]) -> list[Out]:
    """oneM2M: answer each request primitive in ``outs`` as the CSE does when it creates
    the resource (TS-0004 clause 7.2.1.2: ``rsc`` 2001 and the ``rqi``); returns what the
    session sends next. ``answers`` collects the response bytes. Other formats: []."""
    responses = [t for t in session.subscriptions() if t.startswith("/oneM2M/resp/")]
    if not responses:
        return []
    after: list[Out] = []
    for out in outs:
        try:
            req = json.loads(out.payload)
        except ValueError:
            continue
        if not isinstance(req, dict) or "rqi" not in req or "op" not in req:
            continue
        body = json.dumps({"rsc": 2001, "rqi": req["rqi"]}, separators=(",", ":")).encode()
        answers.append(len(body))
        reaction = session.receive(responses[0], body)
        after += reaction.send
    return after


def measure_format(name: str, cfg: Any, state_dir: Path) -> Row:
    """One format's row: its opening, a first report, then the report measured."""
    row = Row(name)
    try:
        fmt = formats.get(name)
        u = next(x for x in cfg.uplinks() if x.format == name)
        ctx = context(cfg, u, state_dir)
        if name != REFERENCE and fmt.packs:
            # A pack-format uplink on the spool's own topics sends rows as spooled (in
            # SenML-CBOR); on other topics it encodes in its own format. The spooled rows
            # come from a [mqtt] under another prefix here; this uplink's topics stay.
            ctx = dataclasses.replace(ctx, home=Topics("spool", cfg.node.id))
        session = fmt.session(ctx)
    except Exception as exc:  # a format being written: import or build errors
        row.note = f"not available: {type(exc).__name__}: {exc}"[:160]
        return row
    answers: list[int] = []
    will = session.will(offline())
    row.will = len(will.payload) + len(will.topic.encode()) if will else 0
    session.subscriptions()
    outs = session.opening()
    for _ in range(100):  # each oneM2M create waits for the one before
        if not outs:
            break
        row.opening.add(outs)
        outs = _answer_requests(session, outs, answers)
    if not session.ready():
        row.note = "not available: the session is not ready after its opening"
        return row
    first = session.render(spooled(ctx.home, SEQ - 1, REPORT_TIME - 60))
    _answer_requests(session, first, answers)
    opened = len(answers)
    report = session.render(spooled(ctx.home, SEQ, REPORT_TIME))
    row.report = Cost().add(report)
    _answer_requests(session, report, answers)
    notes = []
    once = Cost().add(first)
    if once.total != row.report.total:
        notes.append(f"first report after the opening: {once.messages} msgs, {once.total} B")
    if len(answers) > opened:
        per = (sum(answers) - sum(answers[:opened])) // (len(answers) - opened)
        notes.append(f"+{len(answers) - opened} responses back (>= {per} B each)")
    row.note = "; ".join(notes)
    return row


def build_rows(state_dir: Path) -> list[Row]:
    """Every format of NAMES, the reference first, ratios against it."""
    from agent.core import config

    text = config_text(state_dir, uplinks=tuple(n for n in formats.NAMES if n != REFERENCE))
    cfg = config.parse(text, "<bench>", check_devices=False)
    rows = [measure_format(n, cfg, state_dir)
            for n in (REFERENCE, *(n for n in formats.NAMES if n != REFERENCE))]
    ref = rows[0].report
    for r in rows:
        if r.report is not None and ref is not None:
            r.ratio = r.report.total / ref.total
    return rows


def print_bytes(rows: list[Row], out: Callable[[str], None] = print) -> None:
    out(f"Bytes on the wire per report: node {NODE}, PMS5003 \"air\" + SHT3x \"climate\", "
        f"one 60-s telemetry pack of {len(telemetry_records())} records (boot session {BOOT}, "
        f"seq {SEQ}),")
    out(f"spooled in {REFERENCE} and rendered by each format's session; total = payload + "
        f"topic + {MQTT_OVERHEAD} B per PUBLISH")
    out("(estimate: 2-byte fixed header, 2-byte topic length, 2-byte packet id; no MQTT 5 "
        "properties, no PUBACK). Opening: once per connection.\n")
    head = (f"{'format':<14} {'msgs':>4} {'payload':>7} {'topic':>5} {'total':>6} "
            f"{'vs CBOR':>7} | {'opening':>7} {'bytes':>6} {'will':>5}  note")
    out(head)
    out("-" * len(head))
    for r in rows:
        if r.report is None:
            out(f"{r.fmt:<14} {r.note}")
            continue
        c, o = r.report, r.opening
        out(f"{r.fmt:<14} {c.messages:>4} {c.payload:>7} {c.topic:>5} {c.total:>6} "
            f"{r.ratio:>6.2f}x | {o.messages:>7} {o.total:>6} {r.will:>5}  {r.note}")
    out("\n* will: payload + topic of the last will, carried in CONNECT (oneM2M's MQTT "
        "binding has none).")
    out("* senml-json: an uplink under another prefix than [mqtt]'s (on [mqtt]'s own topics "
        "a pack-format uplink forwards the spooled SenML-CBOR as it is).")
    if any("first report" in r.note for r in rows):
        out("* first report after the opening: what a session sends more the first time (a "
            "Sparkplug rebirth: a metric the births lacked; its state file keeps it after).")
    out("* oneM2M: every request is answered by the CSE; part 1 answers with the minimal "
        "response (rsc, rqi), Mobius's carries the created resource (see part 3).")


# -- part 2: memory ---------------------------------------------------------------------
def _status_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out


class TopicCounter:
    """Counts messages by first topic level on a broker (proves each uplink spoke), and
    with ``keep`` keeps them with their arrival time (time.time())."""

    def __init__(self, host: str, port: int, topics: tuple[str, ...] = ("#",),
                 keep: bool = False) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.counts: dict[str, int] = {}
        self.keep = keep
        self.messages: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-platforms-{os.getpid()}-"
                                            f"{secrets.token_hex(3)}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 0) for t in topics])
        self.client.on_message = self._on
        self.client.connect(host, port)
        self.client.loop_start()

    def _on(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        if msg.retain:  # kept from an earlier run on the same broker
            return
        parts = msg.topic.split("/")
        key = parts[1] if msg.topic.startswith("/") and len(parts) > 1 else parts[0]
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            if self.keep:
                self.messages.append((now, msg.topic, msg.payload))

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def daemon(config: str, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real daemon on ``config``, in the environment of deploy/citynode.service."""
    cfg = workdir / "citynode.toml"
    cfg.write_text(config)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "MALLOC_ARENA_MAX": "2"}
    with open(workdir / "agent.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@dataclass(slots=True)
class Memory:
    label: str
    rss: float = float("nan")
    hwm: float = float("nan")
    spoke: dict[str, int] = field(default_factory=dict)
    error: str = ""


def run_memory(extra: str | None, seconds: float, broker: tuple[str, int], tmp: Path) -> Memory:
    """The daemon with [mqtt] and, if ``extra``, one [[uplink]] of that format."""
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    mem = Memory(extra or REFERENCE)
    work = tmp / (extra or "reference")
    work.mkdir()
    emu = SerialEmulator(PMS5003Model(interval_s=1.0, warmup_s=0.0), work / "pms0")
    emu.start()
    counter = TopicCounter(*broker)
    try:
        text = config_text(work / "state", broker=broker, pms_port=str(emu.path), interval_s=2,
                           uplinks=(extra,) if extra else (), emulated=True)
        with daemon(text, work) as proc:
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                time.sleep(1)
                if proc.poll() is not None:
                    tail = (work / "agent.log").read_text(errors="replace")[-600:]
                    mem.error = f"the daemon exited {proc.returncode}: {tail}"
                    return mem
                got = _status_mib(proc.pid)
                mem.rss, mem.hwm = got.get("VmRSS", mem.rss), got.get("VmHWM", mem.hwm)
    finally:
        counter.stop()
        emu.stop()
    mem.spoke = dict(counter.counts)
    return mem


def measure_memory(seconds: float, out: Callable[[str], None] = print) -> bool:
    """Part 2; True when every run holds the budget."""
    from agent.tools.simulate import Mosquitto

    platforms = [n for n in formats.NAMES if n not in formats.PACK_NAMES]
    runs: list[Memory] = []
    with tempfile.TemporaryDirectory(prefix="citynode-bench-platforms-") as tmp:
        d = Path(tmp)
        (d / "mosq").mkdir()
        try:
            broker = Mosquitto(d / "mosq")
        except FileNotFoundError as exc:
            out(f"SKIP  daemon memory: {exc}")
            return True
        broker.start()
        try:
            runs.append(run_memory(None, seconds, (broker.host, broker.port), d))
            for name in platforms:
                try:
                    formats.options(name)  # what the configuration imports at start
                except Exception as exc:
                    runs.append(Memory(name, error=f"not available: {type(exc).__name__}: "
                                                   f"{exc}"[:160]))
                    continue
                runs.append(run_memory(name, seconds, (broker.host, broker.port), d))
        finally:
            broker.stop()
    ref = runs[0]
    out(f"\nDaemon memory, the emulated pole reporting every 2 s, ~{seconds:g} s per run, "
        "MALLOC_ARENA_MAX=2; verdict on the peak (VmHWM):")
    ok = True
    for m in runs:
        if m.error:
            ok &= m.error.startswith("not available")
            out(f"{'FAIL' if not m.error.startswith('not available') else 'SKIP'}  "
                f"{m.label}: {m.error}")
            continue
        fits = m.hwm <= BUDGET_MIB
        ok &= fits
        what = "SenML only (reference)" if m is ref else f"SenML + {m.label}"
        delta = "" if m is ref else (f", vs reference RSS {m.rss - ref.rss:+.1f} MiB, "
                                     f"peak {m.hwm - ref.hwm:+.1f} MiB")
        spoke = ", ".join(f"{k} {v}" for k, v in sorted(m.spoke.items()))
        out(f"{'PASS' if fits else 'FAIL'}  {what:<26} RSS {m.rss:5.1f} MiB, peak "
            f"{m.hwm:5.1f} MiB{delta}  [messages at the broker by first topic level: {spoke}]")
    if "onem2m" in platforms:
        out("      onem2m: nothing answers on this broker, so its session sent the AE's "
            "create and waits (reports stay spooled for it).")
    measured = [m for m in runs if not m.error]
    verdict = "holds" if ok and len(measured) == len(runs) else "FAILS" if not ok else \
        "holds for the formats measured"
    out(f"{'PASS' if ok else 'FAIL'}  the {BUDGET_MIB:g} MiB budget {verdict} with SenML plus "
        "one more format")
    return ok


# -- part 3: latency to Mobius ----------------------------------------------------------
def mobius_missing() -> str | None:
    """Why part 3 cannot run here, or None."""
    if not FIXTURE.is_file():
        return f"the Mobius fixture is not at {FIXTURE} (../shared absent; set CITYNODE_SHARED)"
    for tool in ("node", "mariadbd", "mariadb-install-db", "mosquitto"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed"
    return None


class Fixture:
    """../shared/vendor/mobius-fixture.sh DIR: MariaDB, mosquitto and Mobius on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "MOBIUS_READY_TIMEOUT": "90"}
        with open(self.workdir / "fixture.log", "w") as log:
            self.proc = subprocess.Popen([str(FIXTURE), str(self.workdir / "mobius")],
                                         stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=env, start_new_session=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            key, _, value = line.strip().partition("=")
            self.env[key] = value
            if key == "MOBIUS_READY":
                return
        tail = (self.workdir / "fixture.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"the Mobius fixture did not start:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class MobiusReader:
    """GETs over Mobius's HTTP binding on 127.0.0.1, one kept-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self._n = 0

    def get(self, target: str) -> Any:
        """The JSON body of a 200 answer to ``GET /<target>``, else None."""
        self._n += 1
        headers = {"X-M2M-RI": f"bench-{os.getpid()}-{self._n}", "X-M2M-Origin": "CbenchReader",
                   "Accept": "application/json"}
        try:
            self.conn.request("GET", f"/{target}", headers=headers)
            res = self.conn.getresponse()
            body = res.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            return None
        try:
            return json.loads(body) if res.status == 200 else None
        except ValueError:
            return None

    def instances(self, container: str) -> list[str] | None:
        """The contentInstances of a container (discovery: ``fu=1&ty=4``, TS-0004 8.1.2)."""
        got = self.get(f"{container}?fu=1&ty=4")
        uril = got.get("m2m:uril") if isinstance(got, dict) else None
        return uril.split() if isinstance(uril, str) else uril

    def con(self, target: str) -> dict[str, Any] | None:
        """The ``con`` of one contentInstance (``target`` may be ``<container>/la``)."""
        got = self.get(target)
        try:
            con = got["m2m:cin"]["con"]
            con = json.loads(con) if isinstance(con, str) else con
        except (KeyError, TypeError, ValueError):
            return None
        return con if isinstance(con, dict) else None

    def close(self) -> None:
        self.conn.close()


REQUEST = f"/oneM2M/req/S{NODE}/{CSE_ID[1:]}/json"  # the AE's requests (TS-0010 6.4.2)
RESPONSE = f"/oneM2M/resp/S{NODE}/{CSE_ID[1:]}/json"  # the CSE's answers


def _arrivals(messages: list[tuple[float, str, bytes]], since: float
              ) -> tuple[dict[int, float], dict[int, float]]:
    """(SenML telemetry, oneM2M create in climate): seq -> first arrival at the broker,
    of each report whose pack time is ``since`` or later."""
    senml: dict[int, float] = {}
    request: dict[int, float] = {}
    for t, topic, payload in messages:
        try:
            if topic == REQUEST:
                req = json.loads(payload)
                if not str(req.get("to", "")).endswith("/climate"):
                    continue
                con = req["pc"]["m2m:cin"]["con"]
                seq, at = int(con["seq"]), float(con["unix"])
                into = request
            elif topic.endswith("/telemetry"):
                pack = formats.decode(payload)
                seq, at, into = int(pack.seq or 0), pack.time, senml
            else:
                continue
        except (ValueError, KeyError, TypeError):
            continue
        if at >= since and seq not in into:
            into[seq] = t
    return senml, request


def measure_latency(seconds: float, out: Callable[[str], None] = print) -> bool:
    """Part 3; False only when the daemon or the fixture fails."""
    why = mobius_missing()
    if why:
        out(f"\nSKIP  report -> contentInstance readable in Mobius: {why}")
        return True
    try:
        formats.options("onem2m")
    except Exception as exc:
        out(f"\nPENDING  report -> contentInstance readable in Mobius: the onem2m format is "
            f"not available ({type(exc).__name__}: {exc})")
        return True
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    container = f"{CSE_NAME}/{NODE}/climate"
    with tempfile.TemporaryDirectory(prefix="citynode-bench-mobius-") as tmp:
        d = Path(tmp)
        fixture = Fixture(d)
        t0 = time.monotonic()
        try:
            fixture.start()
        except RuntimeError as exc:
            out(f"\nFAIL  report -> contentInstance readable in Mobius: {exc}")
            fixture.stop()
            return False
        started = time.monotonic() - t0
        emu = SerialEmulator(PMS5003Model(interval_s=1.0, warmup_s=0.0), d / "pms0")
        emu.start()
        mq = int(fixture.env["MOBIUS_MQTT_PORT"])
        reader = MobiusReader(int(fixture.env["MOBIUS_HTTP_PORT"]))
        wire = TopicCounter("127.0.0.1", mq, (REQUEST, RESPONSE, f"citynode/{NODE}/telemetry"),
                            keep=True)
        readable: dict[int, tuple[float, float]] = {}  # seq: (first listed, pack time)
        newest: dict[str, Any] = {}
        try:
            text = config_text(d / "state", broker=("127.0.0.1", mq), pms_port=str(emu.path),
                               interval_s=1, uplinks=("onem2m",), emulated=True)
            with daemon(text, d) as proc:
                deadline = time.monotonic() + 60
                known = None
                while not known and time.monotonic() < deadline and proc.poll() is None:
                    known = reader.instances(container)
                    time.sleep(0.05)
                if not known:
                    tail = (d / "agent.log").read_text(errors="replace")[-800:]
                    out(f"\nFAIL  report -> contentInstance readable in Mobius: nothing in "
                        f"{container} within 60 s:\n{tail}")
                    return False
                seen_set, since = set(known), time.time()
                t_end = time.monotonic() + seconds
                while time.monotonic() < t_end and proc.poll() is None:
                    uris = reader.instances(container) or []
                    seen = time.time()
                    for uri in uris:
                        if uri in seen_set:
                            continue
                        seen_set.add(uri)
                        con = reader.con(uri)
                        if con is None or con.get("historical") or con.get("unix", 0) < since:
                            continue  # spooled before the measurement began
                        readable[int(con["seq"])] = (seen, float(con["unix"]))
                        if con.get("seq", -1) > newest.get("seq", -1):
                            newest = con
                    time.sleep(0.02)
                la = reader.con(f"{container}/la")
        finally:
            wire.stop()
            reader.close()
            emu.stop()
            fixture.stop()
    senml, request = _arrivals(wire.messages, since)
    lat = sorted(t - senml[q] for q, (t, _) in readable.items() if q in senml)
    if not lat:
        out("\nFAIL  report -> contentInstance readable in Mobius: no report was read")
        return False
    p90 = lat[min(len(lat) - 1, int(0.9 * len(lat)))]
    out(f"\nReport -> contentInstance readable in Mobius (fixture up in {started:.1f} s; "
        f"reports every 1 s through a onem2m [[uplink]] and [mqtt], ~{seconds:g} s):")
    out(f"      n={len(lat)}, median {statistics.median(lat) * 1e3:.0f} ms, p90 "
        f"{p90 * 1e3:.0f} ms, max {lat[-1] * 1e3:.0f} ms  (from the report, i.e. its SenML-CBOR "
        f"copy at the broker, to the first discovery GET {container}?fu=1&ty=4 that lists "
        "it, polled every ~20 ms)")
    uplink = [request[q] - senml[q] for q in request if q in senml]
    cse = [t - request[q] for q, (t, _) in readable.items() if q in request]
    if uplink and cse:
        out(f"      of which: the oneM2M create at the broker median "
            f"{statistics.median(uplink) * 1e3:+.1f} ms after the SenML copy; create -> "
            f"readable median {statistics.median(cse) * 1e3:.0f} ms, max "
            f"{max(cse) * 1e3:.0f} ms (Mobius, and the poll's resolution)")
    packed = [t - at for t, at in readable.values()]
    out(f"      vs the pack's time instead: median {statistics.median(packed) * 1e3:.0f} ms, "
        f"max {max(packed) * 1e3:.0f} ms (telemetry times are rounded to the whole second "
        "and the report schedule is not aligned to it: a fixed offset of up to +-0.5 s per "
        "run)")
    sizes = [len(m[2]) for m in wire.messages if m[1] == RESPONSE]
    if sizes:
        out(f"      Mobius's responses to the node: {len(sizes)}, median "
            f"{statistics.median(sizes):.0f} B payload (each create is answered with the "
            "created resource)")
    if la is not None and newest and la.get("seq") != newest.get("seq"):
        out(f"      NOTE  {container}/la gives seq {la.get('seq')} while the newest there is "
            f"seq {newest.get('seq')}: Mobius's latest is the greatest resource name "
            "(mobius/sql_action.js select_latest_resource: ORDER BY ri DESC), and the "
            "contentInstances' names do not sort by time")
    return True


def main(out: Callable[[str], None] = print) -> int:
    with tempfile.TemporaryDirectory(prefix="citynode-bench-platforms-") as tmp:
        print_bytes(build_rows(Path(tmp)), out)
    ok = measure_memory(float(os.environ.get("BENCH_PLATFORM_S", "20")), out)
    ok &= measure_latency(float(os.environ.get("BENCH_MOBIUS_S", "30")), out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
