"""``citynode simulate``: a whole node on one machine, with no hardware.

It starts a real mosquitto on a free loopback port, PMS5003 emulators behind
pseudo-terminals (replaying the recorded PM log when it is there), the real
agent as a separate process against them, and a subscriber that prints each
message as the platform would receive it. Installers use it to rehearse a site
(``--faults``, ``--unplug-every``); ``make demo`` runs it. Ctrl-C stops
everything and leaves nothing running.
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
from collections.abc import Callable
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
                 sensors: list[dict[str, object]] = ()) -> None:
    """A configuration for emulated sensors: PMS5003s on ``ports`` plus ``sensors`` tables."""
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


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPV6]:PORT``; no host: 127.0.0.1) to (host, port); ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--broker {text!r}: expected HOST:PORT with a port 1..65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(f"--broker {text!r}: {host!r} is not a host name or address")
    return host or "127.0.0.1", int(port)


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
        write_config(cfg, node_id=node_id, state_dir=workdir / "state", ports=ports,
                     interval=args.interval, fmt=args.format, broker=target, sensors=extra)
        if target:
            sub = Subscriber(target[0], target[1], f"citynode/{node_id}/#", show)
            sub.start()
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
    return 0 if code in (0, None) else 1
