"""``citynode simulate``: a whole node on one machine, with no hardware.

It starts a real mosquitto on a free loopback port, PMS5003 emulators behind
pseudo-terminals (replaying the recorded PM log when it is there), the real
agent as a separate process against them, and a subscriber that prints each
message as the platform would receive it. Installers use it to rehearse a site
(``--faults``, ``--unplug-every``); ``make demo`` runs it. Ctrl-C stops
everything and leaves nothing running.

Against a platform (``--onem2m``, ``--sparkplug``, ``--homeassistant HOST:PORT``) the
node gets one ``[[uplink]]`` more per platform, to the broker that platform uses, while
its native SenML uplink stays on the private broker (or ``--broker``): the rehearsal
shows several uplinks at once, as a city runs them, and the SenML printout still says
what the node measured. A watcher on each platform broker counts what the node sent
there (and, for oneM2M, the CSE's answers), so a run with ``--duration`` fails when the
platform never heard from it (docs/platforms.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.wire import formats
from agent.wire.model import to_readable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None)


class Mosquitto:
    """A private mosquitto on 127.0.0.1, configured by us, stopped by us."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 persistence: bool = False) -> None:
        self.binary = find_mosquitto()
        if self.binary is None:
            raise FileNotFoundError(
                "mosquitto is not installed: `apt-get install mosquitto` (make demo does this "
                "when run as root), or use --broker HOST:PORT or --no-broker")
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.extra_conf = extra_conf
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        # As root mosquitto drops to its own user before writing its store; our
        # work folder is private, so keep root for a persistent test broker.
        persist = (f"persistence true\npersistence_location {self.workdir}/\n"
                   + ("user root\n" if os.geteuid() == 0 else "")
                   if self.persistence else "persistence false\n")
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persist}"
            f"max_queued_messages 100000\n{self.extra_conf}")
        self._log = open(self.log_path, "wb")
        # Own session: a terminal's Ctrl-C reaches only `simulate`, which then stops
        # the agent first (so its last messages are delivered) and the broker last.
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


class Subscriber:
    """Subscribes to a node's topics and hands each decoded message to a callback."""

    def __init__(self, host: str, port: int, topic: str,
                 on_message: Callable[[str, dict, bool], None]) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{os.getpid()}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.host, self.port, self.topic = host, port, topic
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self._cb = on_message

    def _on_message(self, client, userdata, msg) -> None:
        try:
            ctype = getattr(getattr(msg, "properties", None), "ContentType", "") or ""
            doc = to_readable(formats.decode(msg.payload, ctype))
        except formats.PayloadError as exc:
            doc = {"error": str(exc), "bytes": msg.payload[:64].hex()}
        self._cb(msg.topic, doc, bool(msg.retain))

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise TimeoutError("subscriber could not subscribe")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, *, node_id: str, state_dir: Path, ports: list[str],
                 interval: float, fmt: str, broker: tuple[str, int] | None,
                 warmup_s: float = 5.0, read_interval_s: float = 1.0,
                 sensors: list[dict[str, object]] = (),
                 platforms: Sequence[Platform] = ()) -> None:
    """A configuration for emulated sensors: PMS5003s on ``ports`` plus ``sensors`` tables,
    and one ``[[uplink]]`` per platform."""
    lines = [
        "# Written by `citynode simulate`: emulated sensors, private broker.",
        "[node]", f'id = "{node_id}"', f'state_dir = "{state_dir}"', "",
        "[report]", f"interval_s = {interval:g}", f'format = "{fmt}"', "",
        "[log]", 'target = "stderr"', "",
    ]
    if broker:
        lines += ["[mqtt]", f'host = "{broker[0]}"', f"port = {broker[1]}",
                  "backoff_initial_s = 0.5", "backoff_max_s = 10", ""]
    for i, port in enumerate(ports):
        prefix = "" if i == 0 else f"s{i}."
        lines += ["[[sensor]]", 'type = "pms5003"', f'name = "pm{i}"', f'port = "{port}"',
                  f'prefix = "{prefix}"', 'mode = "passive"',
                  f"read_interval_s = {read_interval_s:g}", f"warmup_s = {warmup_s:g}", ""]
    for table in sensors:
        lines += ["[[sensor]]", *(f"{k} = {_toml_value(v)}" for k, v in table.items()
                                  if not isinstance(v, dict)), ""]
        for key, sub in table.items():  # a ranger's [sensor.use], a meter's [sensor.plug]
            if isinstance(sub, dict):
                lines += [f"[sensor.{key}]",
                          *(f"{k} = {_toml_value(v)}" for k, v in sub.items()), ""]
    for platform in platforms:
        lines += platform.table()
    path.write_text("\n".join(lines))


def catalogue_site(workdir: Path, emulators: list[Any]) -> list[dict[str, object]]:
    """Every catalogued device on its emulator, from its README's sample configuration,
    set for a quick rehearsal: short warm-ups, no duty cycle, rangers reporting distances."""
    import msgspec

    from drivers import catalogue
    from drivers.emulation.catalogue import EmulatedSite
    from drivers.readme import sample_table

    site = EmulatedSite()
    try:
        for i, spec in enumerate(catalogue.specs().values()):
            keys = {f.name for f in msgspec.structs.fields(spec.config)}
            table: dict[str, Any] = {**sample_table(spec), "name": spec.type,
                                     "prefix": f"d{i}."}
            if "warmup_s" in keys:
                table["warmup_s"] = min(float(table.get("warmup_s", 3.0)), 3.0)
            if "duty_cycle" in keys:
                table["duty_cycle"] = False
            if "use" in keys:
                table["use"] = {"role": "distance"}
            site.add(spec, table, workdir)
    finally:
        emulators.extend(site.emulators)
    return site.tables


def street_site(workdir: Path, emulators: list[Any]) -> list[dict[str, object]]:
    """A street pole (issue 16): an HLK-LD2450 radar over the pavement, counting passers-by
    (its emulator plays pedestrian scenes from drivers/ld2450/scenes.py through the real
    protocol, with the radar's habits), and an SHT3x for the climate; the PMS5003s come
    from ``--sensors``. Each report then carries ``radar:in``, ``radar:out`` and
    ``radar:ppl`` (docs/counting.md)."""
    from drivers import catalogue
    from drivers.emulation.catalogue import EmulatedSite

    specs = catalogue.specs()
    site = EmulatedSite()
    try:
        site.add(specs["ld2450"], {"name": "radar", "emulator_scene": "mixed",
                                   "read_interval_s": 1.0, "counting": {"line_x_m": 0.0}},
                 workdir)
        site.add(specs["sht3x"], {"name": "climate"}, workdir)
    finally:
        emulators.extend(site.emulators)
    return site.tables


def _pump(stream: TextIO, out: TextIO, tag: str) -> None:
    for line in stream:
        out.write(f"{tag} {line}")
        out.flush()


EX_USAGE = 64
EX_CANTCREAT = 73
#: What ``simulate`` leaves in a work directory it made, so it may reuse it later and never
#: writes into (or over the citynode.toml of) a directory that is someone else's.
WORKDIR_MARK = ".citynode-simulate"
#: Ranges of the numeric options: (option, attribute, low, high, low included).
RANGES = (
    ("--duration", "duration", 0.0, 7 * 86400.0, True),  # 0: until Ctrl-C
    ("--interval", "interval", 1.0, 86400.0, True),  # what [report] interval_s accepts
    ("--unplug-every", "unplug_every", 0.0, 7 * 86400.0, True),  # 0: never
    ("--speed", "speed", 0.0, 100_000.0, False),
)
UNPLUG_FOR_S = 3.0


def parse_broker(text: str, option: str = "--broker") -> tuple[str, int]:
    """``HOST:PORT`` (``[IPV6]:PORT``; no host: 127.0.0.1) to (host, port); ValueError
    naming ``option``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{option} {text!r}: expected HOST:PORT with a port 1..65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(f"{option} {text!r}: {host!r} is not a host name or address")
    return host or "127.0.0.1", int(port)


#: The platforms to rehearse against: option -> (format, its qualifying options as
#: (option, the format's ``Options`` field, what a value must look like)).
PLATFORMS: dict[str, tuple[str, tuple[tuple[str, str, str], ...]]] = {
    "--onem2m": ("onem2m", (
        ("--cse-id", "cse_id", "a CSE-ID: up to 64 letters, digits and . _ ~ -, with or "
                               "without its leading / (e.g. Mobius2)"),
        ("--cse-name", "cse_name", "a CSEBase resource name: up to 64 letters, digits and "
                                   ". _ ~ - (e.g. Mobius)"))),
    "--sparkplug": ("sparkplug", (
        ("--group-id", "group_id", "a Sparkplug group id: 1 to 64 characters, none of them "
                                   "+ / # or a control character"),)),
    "--homeassistant": ("homeassistant", (
        ("--discovery-prefix", "discovery_prefix", "topic levels of letters, digits, _ and "
                                                   "- (e.g. homeassistant)"),)),
}


@dataclass(frozen=True)
class Platform:
    """One platform uplink simulate adds: the format, the broker the platform listens on,
    and the settings given for the format's ``[uplink.<format>]`` table."""

    format: str
    host: str
    port: int
    options: dict[str, str] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        """oneM2M's MQTT binding runs on the 3.1.1 broker Mobius is set up with
        (TS-0010; ../shared/reference/onem2m-mobius.md); the others negotiate."""
        return "3.1.1" if self.format == "onem2m" else "auto"

    def resolved(self) -> Any:
        """The format's Options, as the daemon will read them (msgspec.ValidationError)."""
        import msgspec

        return msgspec.convert(self.options, formats.options(self.format), strict=True)

    def table(self) -> list[str]:
        """Its ``[[uplink]]`` table, with the format's options written out in full for
        the settings simulate has options for (an installer can read them off)."""
        opts = self.resolved()
        lines = ["[[uplink]]", f'name = "{self.format}"', f'format = "{self.format}"',
                 f"host = {_toml_value(self.host)}", f"port = {self.port}",
                 f'protocol = "{self.protocol}"',
                 "backoff_initial_s = 0.5", "backoff_max_s = 10", ""]
        keys = [attr for _, attr, _ in PLATFORMS[f"--{self.format}"][1]]
        return [*lines, f"[uplink.{self.format}]",
                *(f"{k} = {_toml_value(getattr(opts, k))}" for k in keys), ""]

    @property
    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def watch(self, node: str) -> list[str]:
        """Topic filters on which the platform's broker carries this node's messages
        (for oneM2M also the CSE's responses to it)."""
        opts = self.resolved()
        if self.format == "onem2m":
            from agent.wire.formats.onem2m.primitives import Topics

            topics = Topics(opts.originator or f"S{opts.ae or node}", opts.cse_id)
            return [topics.request, topics.response]
        if self.format == "sparkplug":
            base = f"spBv1.0/{opts.group_id}/+/{opts.edge_node or node}"
            return [base, f"{base}/+"]
        return [f"{opts.discovery_prefix}/+/{node}/+/config", f"citynode/{node}/ha/#"]

    def hint(self, node: str) -> str:
        """Where a person sees the node arrive on the platform."""
        opts = self.resolved()
        at = f"{self.url_host}:{self.port}"
        if self.format == "onem2m":
            ae = opts.ae or node
            return (f"# oneM2M: AE {ae!r} registers with {opts.cse_id} through the broker {at} "
                    f"(MQTT 3.1.1); see it in Mobius (7579: its default HTTP port): "
                    f"curl -H 'X-M2M-RI: 1' -H 'X-M2M-Origin: S' "
                    f"http://{self.url_host}:7579/{opts.cse_name}/{ae}?rcn=4")
        if self.format == "sparkplug":
            return (f"# Sparkplug B: edge node {opts.edge_node or node!r} in group "
                    f"{opts.group_id!r} on {at}, each sensor a device; a host application "
                    f"subscribed to spBv1.0/{opts.group_id}/# decodes it "
                    f"(mosquitto_sub -h {self.host} -p {self.port} -v -t "
                    f"'spBv1.0/{opts.group_id}/#' shows the topics)")
        return (f"# Home Assistant: device {node!r} announced under "
                f"{opts.discovery_prefix}/ on {at}; with Home Assistant's MQTT integration "
                f"on that broker it shows in Settings > Devices & services > MQTT "
                f"(mosquitto_sub -h {self.host} -p {self.port} -v -t "
                f"'{opts.discovery_prefix}/+/{node}/#' -t 'citynode/{node}/ha/#')")

    def leftover(self, node: str) -> str | None:
        """What stays on the platform after the run, and how to remove it."""
        if self.format != "homeassistant":
            return None
        prefix = self.resolved().discovery_prefix
        return (f"# Home Assistant keeps the device: its discovery is retained on "
                f"{self.url_host}:{self.port}; remove it with mosquitto_sub -h {self.host} "
                f"-p {self.port} -t '{prefix}/+/{node}/+/config' -t 'citynode/{node}/ha/#' "
                "--remove-retained -W 2")


def platforms(args: argparse.Namespace) -> list[Platform]:
    """The platforms the options name, validated: ValueError with a one-line reason."""
    import msgspec

    out: list[Platform] = []
    for option, (fmt, qualifiers) in PLATFORMS.items():
        target = getattr(args, fmt, None)
        given = [(opt, attr, shape, getattr(args, attr, None)) for opt, attr, shape in qualifiers]
        if target is None:
            for opt, _, _, value in given:
                if value is not None:
                    raise ValueError(f"{opt} is a setting of {option} HOST:PORT, which is "
                                     "not given")
            continue
        host, port = parse_broker(target, option)
        options: dict[str, str] = {}
        for opt, attr, shape, value in given:
            if value is None:
                continue
            value = f"/{value}" if attr == "cse_id" and not value.startswith("/") else value
            try:
                msgspec.convert({attr: value}, formats.options(fmt), strict=True)
            except msgspec.ValidationError:
                raise ValueError(f"{opt} {getattr(args, attr)!r}: expected {shape}") from None
            options[attr] = value
        out.append(Platform(fmt, host, port, options))
    return out


class PlatformWatch:
    """Counts, on a platform's broker, the messages of the node (and, for oneM2M, the
    CSE's responses): what the platform heard, reported when simulate ends. It only
    subscribes: it never speaks for a host application or Home Assistant."""

    def __init__(self, platform: Platform, node: str) -> None:
        self.platform = platform
        self.node = node
        self.filters = platform.watch(node)
        self.counts: dict[str, int] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"sim-watch-{platform.format}-{os.getpid()}",
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.reconnect_delay_set(0.5, 5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._lock = threading.Lock()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if not rc.is_failure:
            client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        key = self.kind(msg.topic)
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def kind(self, topic: str) -> str:
        """What a message is: a Sparkplug verb, a oneM2M request or response, a Home
        Assistant discovery config or state."""
        if self.platform.format == "onem2m":
            return "responses" if topic == self.filters[1] else "requests"
        if self.platform.format == "sparkplug":
            return topic.split("/")[2]
        return "configs" if topic.endswith("/config") else "states"

    def start(self) -> None:
        """Connects in the background: a broker that is not up yet is tried again."""
        self.client.connect_async(self.platform.host, self.platform.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def from_node(self) -> int:
        with self._lock:
            return sum(n for k, n in self.counts.items() if k != "responses")

    def summary(self) -> str:
        p = self.platform
        with self._lock:
            counts = dict(self.counts)
        return f"# {p.format} on {p.url_host}:{p.port}: received {counts}"

    def problem(self) -> str | None:
        """Why the rehearsal failed on this platform, or None."""
        p = self.platform
        if not self.from_node():
            return (f"nothing from the node reached the {p.format} broker "
                    f"{p.url_host}:{p.port}")
        if p.format == "onem2m" and not self.counts.get("responses"):
            opts = p.resolved()
            return (f"the CSE {opts.cse_id} never answered on {p.url_host}:{p.port}: is "
                    f"Mobius running with this broker, and is its CSE-ID "
                    f"{opts.cse_id.lstrip('/')} (--cse-id)?")
        return None


def check_args(args: argparse.Namespace) -> tuple[int, str] | None:
    """Every option checked before anything starts: (exit code, message) or None."""
    if not isinstance(args.sensors, int) or not 1 <= args.sensors <= 8:
        return EX_USAGE, "--sensors must be 1..8"
    for option, attr, lo, hi, lo_ok in RANGES:
        value = getattr(args, attr)
        if not isinstance(value, int | float) or not math.isfinite(value) \
                or not (lo <= value if lo_ok else lo < value) or value > hi:
            low = f"{lo:g} <=" if lo_ok else f"{lo:g} <"
            shown = f"{value:g}" if isinstance(value, int | float) else repr(value)
            return EX_USAGE, f"{option} {shown}: must be a number, {low} S <= {hi:g}"
    if 0 < args.unplug_every <= UNPLUG_FOR_S:
        return EX_USAGE, (f"--unplug-every {args.unplug_every:g}: the cable stays out "
                          f"{UNPLUG_FOR_S:g} s, so pull it less often than that (or 0: never)")
    if args.broker and args.no_broker:
        return EX_USAGE, "--broker and --no-broker exclude each other"
    if args.broker:
        try:
            parse_broker(args.broker)
        except ValueError as exc:
            return EX_USAGE, str(exc)
    try:
        platforms(args)
    except ValueError as exc:
        return EX_USAGE, str(exc)
    if args.workdir:
        work = Path(args.workdir)
        try:
            if work.exists() or work.is_symlink():
                if not work.is_dir():
                    return EX_CANTCREAT, f"--workdir {work}: exists and is not a directory"
                if not (work / WORKDIR_MARK).exists() and any(work.iterdir()):
                    return EX_CANTCREAT, (f"--workdir {work}: not empty and not made by "
                                          "citynode simulate; name a new or empty directory")
        except OSError as exc:
            return EX_CANTCREAT, f"--workdir {work}: {exc.strerror or exc}"
    return None


def main(args: argparse.Namespace) -> int:
    from drivers.emulation import FaultInjector, SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model, default_source

    problem = check_args(args)
    if problem is not None:
        print(f"citynode simulate: error: {problem[1]}", file=sys.stderr)
        return problem[0]
    try:
        faults = [FaultInjector.from_spec(args.faults, seed=i) if args.faults else None
                  for i in range(args.sensors)]
    except ValueError as exc:
        print(f"citynode simulate: error: --faults: {exc}", file=sys.stderr)
        return EX_USAGE
    own_dir = not args.workdir
    try:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="citynode-sim-"))
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / WORKDIR_MARK).touch()
        (workdir / "run").mkdir(exist_ok=True)
    except OSError as exc:
        print(f"citynode simulate: error: --workdir: {exc.strerror or exc}", file=sys.stderr)
        return EX_CANTCREAT
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    broker: Mosquitto | None = None
    emulators: list[SerialEmulator] = []
    agent: subprocess.Popen[str] | None = None
    sub: Subscriber | None = None
    watches: list[PlatformWatch] = []
    received = {"telemetry": 0, "event": 0, "state": 0}
    out = sys.stdout

    def show(topic: str, doc: dict, retained: bool) -> None:
        leaf = topic.rsplit("/", 1)[-1]
        received[leaf] = received.get(leaf, 0) + 1
        out.write(json.dumps({"topic": topic, "retained": retained, **doc},
                             separators=(",", ":")) + "\n")
        out.flush()

    try:
        target: tuple[str, int] | None = None
        if args.broker:
            target = parse_broker(args.broker)
        elif not args.no_broker:
            broker = Mosquitto(workdir)
            broker.start()
            target = (broker.host, broker.port)
            print(f"# mosquitto {broker.binary} listening on {broker.host}:{broker.port}",
                  file=sys.stderr)
        ports = []
        extra: list[dict[str, object]] = []
        if args.site == "full":
            # Every fine-dust and climate sensor at once: an SDS011 on its own pty, the
            # I2C chips emulated inside the agent on bus "emulator".
            from drivers.sds011.emulator import SDS011Model

            sds = SerialEmulator(SDS011Model(default_source(seed=99, speed=args.speed),
                                             interval_s=1.0, warmup_s=3.0, seed=99),
                                 workdir / "dev" / "sds0", faults=faults[0])
            sds.start()
            emulators.append(sds)
            extra = [
                {"type": "sds011", "name": "sds", "port": sds.path, "prefix": "sds.",
                 "warmup_s": 3.0, "read_interval_s": 1.0},
                {"type": "sps30", "name": "sps", "bus": "emulator", "prefix": "sps.",
                 "warmup_s": 2.0},
                {"type": "sht3x", "name": "sht", "bus": "emulator"},
                {"type": "bme280", "name": "bme", "bus": "emulator", "prefix": "bme."},
            ]
            print(f"# SDS011 emulator at {sds.path}; SPS30, SHT3x and BME280 emulated on "
                  "I2C inside the agent", file=sys.stderr)
        if args.site == "parking":
            # Eight bays: two A02YYUW on ptys, five I2CXL on the agent's emulated I2C bus,
            # one HC-SR04 on gpiozero's mock pins; each plays its own 24 h parking scene.
            import zlib

            from drivers.a02yyuw.emulator import A02YYUWModel
            from drivers.emulation.scenes import random_day

            for n in (1, 2):
                day = random_day(zlib.crc32(f"bay{n}".encode()), f"bay{n}",
                                 start=time.monotonic())
                emu = SerialEmulator(A02YYUWModel(day.scene), workdir / "dev" / f"bay{n}",
                                     faults=faults[0])
                emu.start()
                emulators.append(emu)
                extra.append({"type": "a02yyuw", "name": f"bay{n}", "port": emu.path})
            extra += [{"type": "i2cxl", "name": f"bay{n}", "bus": "emulator",
                       "address": 0x6D + n} for n in range(3, 8)]
            extra.append({"type": "hcsr04", "name": "bay8", "pins": "emulator"})
            print("# parking site: bay1-2 A02YYUW on ptys, bay3-7 I2CXL emulated on I2C, "
                  "bay8 HC-SR04 on mock GPIO; scenes run in real time", file=sys.stderr)
        if args.site == "catalogue":
            extra = catalogue_site(workdir, emulators)
            print(f"# every catalogued device on its emulator: {len(extra)} sensors",
                  file=sys.stderr)
        if args.site == "street":
            extra = street_site(workdir, emulators)
            print(f"# street pole: an LD2450 radar at {extra[0]['port']} counting passers-by "
                  "(pedestrian scenes through the real protocol), an SHT3x emulated on I2C "
                  "and PMS5003s; counts in each report as radar:in, radar:out, radar:ppl",
                  file=sys.stderr)
        for i in range(args.sensors if args.site in ("pm", "full", "street") else 0):
            model = PMS5003Model(default_source(seed=i, speed=args.speed), seed=i,
                                 interval_s=1.0, warmup_s=3.0)
            emu = SerialEmulator(model, workdir / "dev" / f"pms{i}", faults=faults[i],
                                 unplug_every_s=(args.unplug_every or None) if i == 0 else None,
                                 unplug_for_s=UNPLUG_FOR_S)
            emu.start()
            emulators.append(emu)
            ports.append(emu.path)
            print(f"# PMS5003 emulator {i} at {emu.path}"
                  + (f" with faults {faults[i].spec()}" if faults[i] else ""), file=sys.stderr)
        node_id = "sim-node-1"
        cfg = workdir / "citynode.toml"
        targets = platforms(args)
        write_config(cfg, node_id=node_id, state_dir=workdir / "state", ports=ports,
                     interval=args.interval, fmt=args.format, broker=target, sensors=extra,
                     platforms=targets)
        if target:
            # The native topics are one level under the node; a platform uplink to the
            # same broker (Home Assistant's citynode/<node>/ha/...) is not SenML.
            sub = Subscriber(target[0], target[1], f"citynode/{node_id}/+", show)
            sub.start()
        for platform in targets:
            watch = PlatformWatch(platform, node_id)
            watch.start()
            watches.append(watch)
            print(platform.hint(node_id), file=sys.stderr)
        # The agent's status snapshot goes to the work directory every 5 s, as under systemd.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RUNTIME_DIRECTORY": str(workdir / "run")}
        env.pop("NOTIFY_SOCKET", None)
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                                 cwd=Path(__file__).resolve().parents[2])
        threading.Thread(target=_pump, args=(agent.stdout, sys.stderr, "agent |"),
                         daemon=True).start()
        print(f"# agent pid {agent.pid}, config {cfg}; Ctrl-C to stop", file=sys.stderr)
        print(f"# its health, from another terminal: citynode status --file "
              f"{workdir / 'run' / 'status.json'}"
              + (" (this directory is removed at the end: --workdir DIR keeps it)"
                 if own_dir else ""), file=sys.stderr)
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if agent.poll() is not None:
                print(f"# agent exited with {agent.returncode}", file=sys.stderr)
                break
            if deadline and time.monotonic() >= deadline:
                break
            stop.wait(0.2)
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        code = None
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(5)
        elif agent is not None:
            code = agent.returncode
        time.sleep(0.3)  # let the goodbye reach the subscriber
        if sub is not None:
            sub.stop()
        for watch in watches:
            watch.stop()
            print(watch.summary(), file=sys.stderr)
            left = watch.platform.leftover(watch.node)
            if left:
                print(left, file=sys.stderr)
        for emu in emulators:
            try:
                emu.stop()
            except RuntimeError as exc:
                print(f"# {exc}", file=sys.stderr)
        if broker is not None:
            broker.stop()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"# stopped cleanly: received {received}; agent exit code {code}",
              file=sys.stderr)
    if args.duration and target and not received.get("telemetry"):
        print("error: no telemetry reached the broker", file=sys.stderr)
        return 1
    if args.duration:
        problems = [why for why in (w.problem() for w in watches) if why]
        for why in problems:
            print(f"error: {why}", file=sys.stderr)
        if problems:
            return 1
    return 0 if code in (0, None) else 1
