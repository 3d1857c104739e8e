"""The ``citynode`` command: run the daemon, check a config, decode bytes and payloads."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66

_HEX_TEXT = re.compile(rb"^[0-9a-fA-Fx:,\s]*$")


def _hex_to_bytes(text: str | bytes) -> bytes:
    """Accept hex as installers paste it: spaces, colons, commas, 0x prefixes, newlines."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    cleaned = re.sub(r"0x", "", text, flags=re.IGNORECASE)
    cleaned = re.sub(r"[\s:,]", "", cleaned)
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise ValueError(f"not hex: {exc}") from None


def _read_input(path: str | None, hex_text: str | None, fmt: str) -> bytes:
    if hex_text is not None:
        return _hex_to_bytes(hex_text)
    if path in (None, "-"):
        data = sys.stdin.buffer.read()
    else:
        data = Path(path).read_bytes()
    if fmt == "hex" or (fmt == "auto" and data.strip() and _HEX_TEXT.match(data)):
        return _hex_to_bytes(data)
    return data


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")


# -- subcommands ---------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from agent.core.config import EX_CONFIG, ConfigError, load
    from agent.core.daemon import Node, install_signal_handlers
    from agent.core.journal import setup_logging
    from agent.wire.security import SecurityError

    try:
        cfg = load(args.config)
    except ConfigError as exc:
        # Logging is not set up yet: say it where systemd and a person both see it.
        print(f"citynode: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    node = Node(cfg, config_path=args.config,
                config_text=Path(args.config).read_text(encoding="utf-8"))
    try:
        node.validate_security()
    except SecurityError as exc:  # a key readable by others, an unreadable CA...
        print(f"citynode: refusing to start: {exc}", file=sys.stderr)
        return EX_CONFIG
    setup_logging(cfg.log.target, cfg.log.level, node_id=cfg.node.id)
    install_signal_handlers(node)
    return node.run()


def cmd_config_check(args: argparse.Namespace) -> int:
    from agent.core.config import EX_CONFIG, ConfigError, load

    try:
        cfg = load(args.file, check_devices=not args.no_devices)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if not cfg.local_mode and not args.no_devices:
        from agent.wire.security import SecurityError, validate_security

        try:
            validate_security(cfg.mqtt)
        except SecurityError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EX_CONFIG
    mode = "local mode (no broker)" if cfg.local_mode else f"broker {cfg.mqtt.host}:{cfg.mqtt.port}"
    print(f"{args.file}: OK - node {cfg.node.id}, {len(cfg.sensor)} sensor(s), {mode}, "
          f"report every {cfg.report.interval_s:g} s as {cfg.report.format}")
    return 0


def cmd_config_devices(args: argparse.Namespace) -> int:
    from agent.core.config import EX_CONFIG, ConfigError, load
    from agent.core.systemd import device_dropin
    from drivers.files import write_atomic

    try:
        cfg = load(args.file, check_devices=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    text = device_dropin(cfg)
    if args.write is None:
        sys.stdout.write(text)
        return 0
    target = Path(args.write)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text, fsync=False)
    except OSError as exc:
        print(f"error: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return 73
    print(f"wrote {target}; now: systemctl daemon-reload && systemctl restart citynode")
    return 0


def cmd_frames(args: argparse.Namespace) -> int:
    from drivers import registry
    from drivers.spec import CaptureCodec

    try:
        codec = registry.get(args.device)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EX_USAGE
    if isinstance(codec, CaptureCodec):
        return _frames_i2c(codec, args)
    try:
        data = _read_input(args.file, args.hex, args.format)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read input: {exc}", file=sys.stderr)
        return EX_NOINPUT
    counts = {"frame": 0, "ack": 0, "rejected": 0}
    for doc in registry.decode_stream(codec, [data]):
        counts[doc["type"]] = counts.get(doc["type"], 0) + 1
        _print_json(doc)
    print(f"{len(data)} bytes: {counts['frame']} frames, {counts['ack']} acks, "
          f"{counts['rejected']} rejected spans", file=sys.stderr)
    return 0 if counts["frame"] or counts["ack"] or not data else EX_DATAERR


def _frames_i2c(codec, args: argparse.Namespace) -> int:
    """I2C devices: decode a capture of transfers, one ``ADDR W|R HEX`` line each."""
    from drivers.emulation.i2c import parse_capture

    try:
        if args.hex is not None:
            text = args.hex.replace(";", "\n")
        elif args.file in (None, "-"):
            text = sys.stdin.read()
        else:
            text = Path(args.file).read_text()
        records = parse_capture(text.splitlines())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"error: cannot read capture: {exc}", file=sys.stderr)
        return EX_NOINPUT
    good = bad = 0
    for doc in codec.decode(records):
        good += doc.get("type") != "rejected"
        bad += doc.get("type") == "rejected"
        _print_json(doc)
    print(f"{len(records)} transfers: {good} decoded, {bad} rejected", file=sys.stderr)
    return 0 if good or not records else EX_DATAERR


def cmd_detect(args: argparse.Namespace) -> int:
    """Offline replay through exactly the detectors the daemon runs."""
    from agent.tools.replay.common import parse_baseline_options, run_cli

    try:
        baselines = parse_baseline_options(args.baseline or [])
    except ValueError as exc:
        print(f"error: --baseline: {exc}", file=sys.stderr)
        return EX_USAGE
    return run_cli(args.input, baselines, sys.stdout)


def cmd_detect_inactivity(args: argparse.Namespace) -> int:
    from agent.features.household import activity_kwargs
    from agent.tools.replay.inactivity import run_cli

    offset = None if args.utc_offset is None else args.utc_offset * 3600.0
    if offset is not None and not -12 * 3600 <= offset <= 14 * 3600:
        print("error: --utc-offset must be between -12 and 14 hours", file=sys.stderr)
        return EX_USAGE
    return run_cli(args.input, sys.stdout, unattended=args.unattended or [],
                   **activity_kwargs(utc_offset_s=offset))


def cmd_detect_fall(args: argparse.Namespace) -> int:
    from agent.tools.replay.fall import run_cli

    return run_cli(args.input, sys.stdout, sys.stderr, model=args.model)


def cmd_detect_fire(args: argparse.Namespace) -> int:
    from agent.tools.replay.fire import run_cli

    return run_cli(args.input, sys.stdout, sys.stderr, model=args.model)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from agent.features.parking import calibrate_bay

    return calibrate_bay(args.config, args.bay, seconds=args.seconds)


def cmd_decode(args: argparse.Namespace) -> int:
    from agent.wire.formats import PayloadError, decode
    from agent.wire.model import to_readable

    try:
        data = _read_input(args.file, args.hex, args.format)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read input: {exc}", file=sys.stderr)
        return EX_NOINPUT
    try:
        pack = decode(data)
    except PayloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_DATAERR
    print(json.dumps(to_readable(pack), indent=None if args.compact else 2))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.tools.simulate import main as simulate_main

    return simulate_main(args)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"citynode {__version__}")
    return 0


# -- parser ------------------------------------------------------------------------------
FIELD_TOOLS = ("provision", "doctor", "status", "sdcard")

def build_parser(field_tools: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="citynode", description=(
        "Agent for Raspberry Pi smart-city sensor nodes. See README.md and docs/."))
    p.add_argument("--version", action="version", version=f"citynode {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    default_cfg = os.environ.get("CITYNODE_CONFIG", "/etc/citynode/citynode.toml")
    r = sub.add_parser("run", help="run the node daemon (what the systemd unit starts)")
    r.add_argument("--config", "-c", default=default_cfg, help=f"TOML file (default {default_cfg})")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    ck = csub.add_parser("check", help="validate a configuration file (exit 78 on error)")
    ck.add_argument("file")
    ck.add_argument("--no-devices", action="store_true",
                    help="do not require device paths to exist (checking on a laptop)")
    ck.set_defaults(func=cmd_config_check)
    dv = csub.add_parser("devices", help="a systemd drop-in allowing exactly the devices the "
                         "configuration uses (DeviceAllow=)")
    dv.add_argument("file")
    dv.add_argument("--write", metavar="PATH", nargs="?",
                    const="/etc/systemd/system/citynode.service.d/devices.conf",
                    help="write the drop-in (default path if none given) instead of printing it")
    dv.set_defaults(func=cmd_config_devices)

    def add_input(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("file", nargs="?", help="file to read (default: standard input)")
        sp.add_argument("--hex", help='bytes as hex text, e.g. "42 4d 00 1c ..."')
        sp.add_argument("--format", choices=("auto", "raw", "hex"), default="auto",
                        help="how to read the file or stdin (auto: hex text if it looks like it)")

    f = sub.add_parser("frames", help="decode captured raw sensor bytes, one JSON line per frame")
    f.add_argument("device", help="device type, as in [[sensor]] type (an unknown name lists "
                   "them); for I2C devices the input is a "
                   "capture of transfers, one 'ADDR W|R HEX' line each (--hex: ';' separates)")
    add_input(f)
    f.set_defaults(func=cmd_frames)

    from agent.wire import formats

    d = sub.add_parser("decode", help=f"decode a citynode payload ({', '.join(formats.NAMES)}) "
                       "to JSON")
    add_input(d)
    d.add_argument("--compact", action="store_true", help="one line of JSON")
    d.set_defaults(func=cmd_decode)

    s = sub.add_parser("simulate", help="run a whole node on emulated sensors and a local broker")
    s.add_argument("--duration", type=float, default=0,
                   help="stop after this many seconds (default: until Ctrl-C)")
    s.add_argument("--sensors", type=int, default=1, help="number of emulated PMS5003 (1-8)")
    s.add_argument("--site", choices=("pm", "full", "parking", "catalogue"), default="pm",
                   help="pm: PMS5003s only; full: also an SDS011, an SPS30, an SHT3x and a "
                        "BME280 (the I2C chips emulated inside the agent); parking: eight "
                        "bays on A02YYUW, I2CXL and HC-SR04 rangers playing parking scenes; "
                        "catalogue: every device citynode knows, each on its emulator")
    s.add_argument("--interval", type=float, default=10, help="report interval in seconds")
    s.add_argument("--faults", default="",
                   help='fault injection, e.g. "noise=0.05,checksum=0.02,truncate=0.02"')
    s.add_argument("--unplug-every", type=float, default=0,
                   help="pull a sensor's cable every N seconds (0: never)")
    s.add_argument("--broker", default="",
                   help="use this broker HOST:PORT instead of starting mosquitto")
    s.add_argument("--no-broker", action="store_true", help="local mode: messages to the log")
    s.add_argument("--format", choices=formats.NAMES, default=formats.DEFAULT)
    s.add_argument("--speed", type=float, default=60.0,
                   help="replay the recorded PM log this many times faster than real time")
    s.add_argument("--workdir", default="", help="where to keep config, state and logs")
    s.set_defaults(func=cmd_simulate)

    det = sub.add_parser("detect", help="replay recorded data through a detector")
    dsub = det.add_subparsers(dest="detector", metavar="DETECTOR", required=True)
    occ = dsub.add_parser("occupancy", help="parking bays: CSV with t, bay, distance_mm; one "
                          "JSON line per state change")
    occ.add_argument("--input", required=True, help="CSV file ('-' for stdin)")
    occ.add_argument("--baseline", action="append", metavar="BAY=MM",
                     help="empty-bay distance; default: the median of each bay's first minute")
    occ.set_defaults(func=cmd_detect)

    ina = dsub.add_parser("inactivity", help="smart plugs: CSV with t, plug, watts; one JSON "
                          "line per event (inactivity alarm, activity resumed, unusual use)")
    ina.add_argument("--input", required=True, help="CSV file ('-' for stdin)")
    ina.add_argument("--unattended", action="append", metavar="PLUG",
                     help="a plug that runs by itself (fridge): never counted as activity")
    ina.add_argument("--utc-offset", type=float, metavar="HOURS",
                     help="the household's time zone, hours east of UTC (Seoul: 9); "
                     "default: this machine's")
    ina.set_defaults(func=cmd_detect_inactivity)

    fall = dsub.add_parser("fall", help="accelerometer: CSV with t (s), ax, ay, az (g), at "
                           ">= 50 Hz; one JSON line per detected fall")
    fall.add_argument("--input", required=True, help="CSV file ('-' for stdin)")
    fall.add_argument("--model", help="another fall model (.tflite with its .json)")
    fall.set_defaults(func=cmd_detect_fall)

    fire = dsub.add_parser("fire", help="climate, gas and PM: CSV with t and any of "
                           "temperature_c, humidity_pct, eco2_ppm, tvoc_ppb, pressure_hpa, pm1_0, "
                           "pm2_5, pm10, nc0_5, nc1_0, nc2_5; one JSON line per change of state")
    fire.add_argument("--input", required=True, help="CSV file ('-' for stdin)")
    fire.add_argument("--model", help="another fire model (.tflite with its .json)")
    fire.set_defaults(func=cmd_detect_fire)

    cal = sub.add_parser("calibrate", help="measure an empty parking bay's baseline and store it")
    cal.add_argument("bay", help="the sensor name of the bay, as in the configuration")
    cal.add_argument("--config", "-c", default=default_cfg)
    cal.add_argument("--seconds", type=float, default=30.0, help="how long to measure")
    cal.set_defaults(func=cmd_calibrate)

    # Installer and operator tools, each in its own module with register(sub, default_cfg).
    for name in FIELD_TOOLS if field_tools else ():
        importlib.import_module(f"agent.tools.{name}").register(sub, default_cfg)

    v = sub.add_parser("version", help="print the version")
    v.set_defaults(func=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    # The daemon does not need the installer tools' modules in its memory (about 3 MiB).
    parser = build_parser(field_tools=args_in[:1] != ["run"])
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
