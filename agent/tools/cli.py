"""The ``citynode`` command: run the daemon, check a config, decode bytes and payloads."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from agent import __version__

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70

#: ``citynode frames`` prints the first this many rejected spans (transfers) in full, then
#: counts the rest in one ``omitted`` line: a noisy capture must not flood the terminal.
REJECTED_SHOWN = 100
#: The most bytes of one rejected span printed (as hex); ``length`` says how many it had.
BYTES_SHOWN = 64


def _capped(doc: dict[str, Any]) -> dict[str, Any]:
    """A rejected entry with at most :data:`BYTES_SHOWN` of its bytes, saying so."""
    shown = doc.get("bytes")
    if isinstance(shown, str) and len(shown) > 3 * BYTES_SHOWN:
        doc = {**doc, "bytes": shown[:3 * BYTES_SHOWN - 1], "bytes_shown": BYTES_SHOWN}
    return doc


def _mostly_rejected(good: int, total: int) -> bool:
    """Exit 65 for a capture that is empty or has under 1 % of it decoded."""
    return good == 0 or good * 100 < total


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")


# -- subcommands ---------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """``citynode run``: whatever fails ends in one line and a documented code (78 for an
    unusable path, file or permission, 75 for what may pass, 70 for a bug), never a
    traceback and exit 1, which systemd would restart forever."""
    try:
        return _in_gate(_run(args), args)
    except Exception as exc:
        import logging

        try:
            from agent.core.daemon import exit_for

            code, line = exit_for(exc)
        except Exception:  # the daemon's own modules cannot load: a broken installation
            code, line = EX_SOFTWARE, f"internal error: {type(exc).__name__}: {exc}"
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        logger = logging.getLogger("citynode")
        if logger.handlers:  # logging is set up: the journal gets it with its fields
            logger.error("citynode stopped: %s", line, extra={"EVENT": "fatal_error"})
        else:
            print(f"citynode: {line}", file=sys.stderr)
        return code


def _in_gate(code: int, args: argparse.Namespace) -> int:
    """A new release in its update health gate that cannot start (78, which systemd does
    not restart) exits 70 instead: restarted, the guard counts it and rolls back
    (docs/updates.md)."""
    if code != 78 or getattr(args, "once", False):
        return code
    from agent.update.state import gate_pending

    if not gate_pending():
        return code
    print("citynode: exit 70, not 78: a new release in its update health gate failed to "
          "start; the guard rolls back", file=sys.stderr)
    return EX_SOFTWARE


def _run(args: argparse.Namespace) -> int:
    from agent.core.config import EX_CONFIG, ConfigError, load
    from agent.core.daemon import Node, install_signal_handlers
    from agent.core.journal import setup_logging
    from agent.wire.security import SecurityError

    wait = getattr(args, "wait", None)
    if wait is not None and not (args.once and 0 < wait <= 3600):
        print("citynode run: error: --wait needs --once and 0 < S <= 3600", file=sys.stderr)
        return EX_USAGE
    if args.config == "-" and not getattr(args, "once", False):
        print("citynode run: error: the daemon needs a configuration FILE (a set-config "
              "command rewrites it); '-' (standard input) works with --once", file=sys.stderr)
        return EX_USAGE
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        # Logging is not set up yet: say it where systemd and a person both see it.
        print(f"citynode: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if getattr(args, "once", False):
        from agent.tools.once import run_once

        return run_once(cfg, wait_s=wait)
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
    from agent.tools.configtool import check_main

    return check_main(args)


def cmd_config_show(args: argparse.Namespace) -> int:
    from agent.tools.configtool import show_main

    return show_main(args)


def cmd_config_devices(args: argparse.Namespace) -> int:
    from agent.core.config import ConfigError, load
    from agent.core.systemd import device_dropin
    from drivers.files import write_atomic

    try:
        cfg = load(args.file, check_devices=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code  # 78, or 66 when FILE cannot be read
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
    """Decode a capture as it streams: memory does not grow with it (docs: README)."""
    from agent.core.inputs import InputError
    from agent.tools.captures import byte_chunks
    from drivers import registry
    from drivers.spec import CaptureCodec

    if args.hex is not None and args.file is not None:
        print("citynode frames: error: give FILE or --hex, not both", file=sys.stderr)
        return EX_USAGE
    try:
        codec = registry.get(args.device)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EX_USAGE
    if isinstance(codec, CaptureCodec):
        return _frames_i2c(codec, args)
    counts: dict[str, int] = {"frame": 0, "ack": 0, "rejected": 0}
    total = good = rejected_bytes = omitted = omitted_bytes = 0
    try:
        for doc in registry.decode_stream(codec, byte_chunks(args.file, args.hex, args.format)):
            kind, n = doc["type"], doc["length"]
            counts[kind] = counts.get(kind, 0) + 1
            total += n
            if kind != "rejected":
                good += n
            else:
                rejected_bytes += n
                if counts["rejected"] > REJECTED_SHOWN:
                    omitted, omitted_bytes = omitted + 1, omitted_bytes + n
                    continue
                doc = _capped(doc)
            _print_json(doc)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    if omitted:
        _print_json({"type": "omitted", "spans": omitted, "bytes": omitted_bytes,
                     "reason": f"rejected spans after the first {REJECTED_SHOWN} not shown"})
    others = "".join(f", {n} {k}s" for k, n in counts.items()
                     if k not in ("frame", "ack", "rejected"))
    print(f"{total} bytes: {counts['frame']} frames, {counts['ack']} acks, "
          f"{counts['rejected']} rejected spans ({rejected_bytes} bytes){others}",
          file=sys.stderr)
    if _mostly_rejected(good, total):
        why = "an empty capture" if not total else (
            f"under 1 % of the bytes decode as {args.device}: is it the right device type, "
            "baud rate and wiring?")
        print(f"error: {why}", file=sys.stderr)
        return EX_DATAERR
    return 0


def _frames_i2c(codec: Any, args: argparse.Namespace) -> int:
    """I2C devices: decode a capture of transfers, one ``ADDR W|R HEX`` line each."""
    from agent.core.inputs import InputError
    from agent.tools.captures import capture_lines
    from drivers import registry

    tally = registry.CaptureTally()
    shown = 0
    try:
        for doc in registry.decode_capture_stream(codec, capture_lines(args.file, args.hex),
                                                  tally, keep_bad_lines=REJECTED_SHOWN):
            if doc.get("type") == "rejected":
                shown += 1
                if shown > REJECTED_SHOWN:
                    continue
                doc = _capped(doc)
            _print_json(doc)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    omitted = max(0, shown - REJECTED_SHOWN) + tally.unreported
    if omitted:
        _print_json({"type": "omitted", "entries": omitted,
                     "reason": f"rejected entries after the first {REJECTED_SHOWN} not shown"})
    bad_lines = "" if not tally.bad_lines else (
        f"; {tally.bad_lines} line{'s are' if tally.bad_lines > 1 else ' is'} not a transfer")
    print(f"{tally.transfers} transfers: {tally.decoded} decoded, {tally.rejected} rejected"
          f"{bad_lines}", file=sys.stderr)
    if _mostly_rejected(tally.decoded, tally.transfers + tally.bad_lines):
        if not tally.transfers:
            why = ("an empty capture" if not tally.bad_lines else
                   "no 'ADDR W|R HEX' lines: an I2C capture has one per transfer")
        else:
            why = (f"under 1 % of the transfers decode as {args.device}: is it the right "
                   "device type and address?")
        print(f"error: {why}", file=sys.stderr)
        return EX_DATAERR
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Offline replay through exactly the detectors the daemon runs."""
    from agent.tools.replay.common import parse_baseline_options, run_cli

    try:
        baselines = parse_baseline_options(args.baseline or [])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)   # names the --baseline value
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
    if args.model is not None:  # parsed (scripts written before), answered, not in --help
        print("error: detect fire: --model: the fire detector has no model since 2026.12 "
              "(docs/fire.md)", file=sys.stderr)
        return EX_USAGE
    from agent.tools.replay.fire import run_cli

    return run_cli(args.input, sys.stdout, sys.stderr, threshold_scale=args.threshold_scale)


def cmd_detect_crossings(args: argparse.Namespace) -> int:
    from agent.tools.replay.crossings import run_cli

    return run_cli(args.input, sys.stdout, sys.stderr, line_x_m=args.line_x,
                   zone_y_m=args.zone_y)


def span_m(text: str) -> tuple[float, float]:
    """An option type: ``MIN:MAX`` metres, 0 <= MIN < MAX <= 10 (``detect crossings
    --zone-y``; agent/tools/replay/crossings.ZONE_RANGE_M, not imported here: --help stays
    light)."""
    a, sep, b = text.partition(":")
    try:
        low, high = float(a), float(b)
    except ValueError:
        low = high = math.nan
    if not sep or not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high <= 10):
        raise argparse.ArgumentTypeError(f"expected MIN:MAX in metres with 0 <= MIN < MAX <= "
                                         f"10, got {text!r}")
    return low, high


def cmd_calibrate(args: argparse.Namespace) -> int:
    from agent.features.parking import calibrate_bay

    return calibrate_bay(args.config, args.bay, seconds=args.seconds)


def cmd_decode(args: argparse.Namespace) -> int:
    from agent.core.inputs import InputError
    from agent.tools.captures import read_payload
    from agent.wire.formats import PayloadError, decode
    from agent.wire.model import MAX_PAYLOAD, to_readable

    if args.hex is not None and args.file is not None:
        print("citynode decode: error: give FILE or --hex, not both", file=sys.stderr)
        return EX_USAGE
    try:  # never more than a payload's worth is read, whatever the input's size
        data = read_payload(args.file, args.hex, args.format, MAX_PAYLOAD)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    try:
        pack = decode(data)
    except PayloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_DATAERR
    print(json.dumps(to_readable(pack), indent=None if args.compact else 2))
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from agent.tools.asyncapi import main as asyncapi_main

    return asyncapi_main(args)


def _asyncapi_type(name: str) -> Callable[[str], Any]:
    """An option type of agent/tools/asyncapi.py, imported only when the option is given
    (``--help`` and ``run`` stay light)."""
    def convert(text: str) -> Any:
        return getattr(importlib.import_module("agent.tools.asyncapi"), name)(text)

    convert.__name__ = name
    return convert


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.tools.simulate import main as simulate_main

    return simulate_main(args)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"citynode {__version__}")
    return 0


# -- parser ------------------------------------------------------------------------------
FIELD_TOOLS = ("provision", "doctor", "status", "sdcard", "fleet", "update", "keys")
#: With this set (to anything but "" or 0), an unexpected error prints its traceback too
#: (tests/test_cli_fuzz.py sets it, so a bug cannot hide behind the one-line message).
TRACEBACK_ENV = "CITYNODE_TRACEBACK"
_PY_NUMBER_ERRORS = ("could not convert string to float", "invalid literal for int()",
                     "complex() arg is a malformed string")


def _type_message(convert: Callable[[str], Any], text: str, exc: Exception) -> str:
    """What a type conversion's failure means to a person, not to Python."""
    if convert is int:
        return f"expected a whole number, got {text!r}"
    if convert is float or str(exc).startswith(_PY_NUMBER_ERRORS):
        return f"expected a number, got {text!r}"
    detail = str(exc).strip()
    return f"invalid value {text!r}" + (f": {detail}" if detail else "")


def _readable_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert`` with failures as one readable line, and no NaN or infinity for numbers
    (an ``interval`` of NaN passes every ``<=`` check and then breaks ``sleep``)."""
    def readable(text: str) -> Any:
        try:
            value = convert(text)
        except argparse.ArgumentTypeError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise argparse.ArgumentTypeError(_type_message(convert, text, exc)) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    readable.__name__ = getattr(convert, "__name__", "value")
    readable.__doc__ = getattr(convert, "__doc__", None)
    readable.__wrapped__ = convert  # type: ignore[attr-defined]  # what tests generate for
    return readable


def number_between(low: float, high: float) -> Callable[[str], float]:
    """An option type: a finite number from ``low`` to ``high`` (refused before anything
    starts, e.g. ``calibrate --seconds 1e9``, which would measure for 31 years)."""
    def between(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, "
                                             f"got {text!r}")
        return value

    between.__name__ = "number"
    return between


class CliParser(argparse.ArgumentParser):
    """One grammar for every command and subcommand (those of the field tools' register()
    too: add_subparsers makes parsers of this class):

    - a usage error is one line on stderr and exit 64 (EX_USAGE), not argparse's usage
      block and exit 2;
    - a value that does not convert says what was expected (``expected a number, got
      'abc'``), never the name of a Python function, and a number is finite;
    - a command's options and positionals may come in any order (``frames DEVICE --format
      hex FILE``), as the intermixed parsing of the standard library does it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._has_commands = False
        self._intermixing = False

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if callable(kwargs.get("type")):
            kwargs["type"] = _readable_type(kwargs["type"])
        return super().add_argument(*args, **kwargs)

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        """A group whose options convert as this parser's do (readable, finite)."""
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def add_argument(*a: Any, **kw: Any) -> argparse.Action:
            if callable(kw.get("type")):
                kw["type"] = _readable_type(kw["type"])
            return add(*a, **kw)

        group.add_argument = add_argument  # type: ignore[method-assign]
        return group

    def add_subparsers(self, **kwargs: Any) -> argparse._SubParsersAction:  # type: ignore[type-arg]
        self._has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None,
                         ) -> tuple[argparse.Namespace, list[str]]:
        if self._has_commands or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into this method
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(EX_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser(field_tools: bool = True) -> argparse.ArgumentParser:
    p = CliParser(prog="citynode", description=(
        "Agent for Raspberry Pi smart-city sensor nodes. See README.md and docs/."))
    p.add_argument("--version", action="version", version=f"citynode {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    default_cfg = os.environ.get("CITYNODE_CONFIG", "/etc/citynode/citynode.toml")
    r = sub.add_parser("run", help="run the node daemon (what the systemd unit starts)")
    r.add_argument("--config", "-c", default=default_cfg, help=f"TOML file (default {default_cfg})")
    r.add_argument("--once", action="store_true",
                   help="read every sensor once, print the pack that would be sent and exit "
                   "(0: every sensor gave a reading, 1: not); no broker, spool or systemd")
    r.add_argument("--wait", type=float, metavar="S",
                   help="with --once: how long to wait for the sensors (default: the longest "
                   "warm-up plus a few reads)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    ck = csub.add_parser("check", help="validate a configuration file (exit 78 on error)")
    ck.add_argument("file", help="the TOML file ('-' for stdin)")
    ck.add_argument("--no-devices", action="store_true",
                    help="check the file alone, not this machine: device nodes, files and "
                    "writable directories are not looked at (checking on a laptop)")
    ck.add_argument("--json", action="store_true",
                    help="one JSON object on stdout (docs/doctor.md, machine-readable output)")
    ck.set_defaults(func=cmd_config_check)
    sh = csub.add_parser("show", help="the effective configuration, every default filled in")
    sh.add_argument("file", help="the TOML file ('-' for stdin)")
    sh.add_argument("--json", action="store_true", help="as JSON instead of TOML")
    sh.set_defaults(func=cmd_config_show)
    dv = csub.add_parser("devices", help="a systemd drop-in allowing exactly the devices the "
                         "configuration uses (DeviceAllow=)")
    dv.add_argument("file", help="the TOML file ('-' for stdin)")
    dv.add_argument("--write", metavar="PATH", nargs="?",
                    const="/etc/systemd/system/citynode.service.d/devices.conf",
                    help="write the drop-in (default path if none given) instead of printing it")
    dv.set_defaults(func=cmd_config_devices)

    def add_input(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("file", nargs="?", help="file to read ('-' or none: standard input)")
        sp.add_argument("--hex", help='bytes as hex text, e.g. "42 4d 00 1c ..." (instead of '
                        "FILE)")
        sp.add_argument("--format", choices=("auto", "raw", "hex"), default="auto",
                        help="how to read the file or stdin (auto: hex text if it looks like it)")

    f = sub.add_parser("frames", help="decode captured raw sensor bytes, one JSON line per frame "
                       "and rejected span, a summary on stderr (exit 65: empty, or under 1 %% "
                       "decodes)")
    f.add_argument("device", help="device type, as in [[sensor]] type (an unknown name lists "
                   "them); for I2C devices the input is a "
                   "capture of transfers, one 'ADDR W|R HEX' line each (--hex: ';' separates)")
    add_input(f)
    f.set_defaults(func=cmd_frames)

    from agent.wire import formats

    d = sub.add_parser("decode", help=f"decode a citynode payload "
                       f"({', '.join(formats.PACK_NAMES)}) "
                       "to JSON")
    add_input(d)
    d.add_argument("--compact", action="store_true", help="one line of JSON")
    d.set_defaults(func=cmd_decode)

    aa = sub.add_parser("asyncapi", help="the node's MQTT interface as an AsyncAPI 3.0 document "
                        "(YAML, or JSON with --json), generated from every format's channels "
                        "(docs/asyncapi.yaml)")
    aa.add_argument("--format", action="append", type=_asyncapi_type("format_names"),
                    metavar="NAME", help=f"only these formats ({', '.join(formats.NAMES)}); "
                    "repeat it or separate names with commas (default: every format)")
    aa.add_argument("--prefix", type=_asyncapi_type("topic_prefix"), metavar="PREFIX",
                    help="the {prefix} parameter's default (default citynode, as [mqtt] prefix)")
    aa.add_argument("--node", type=_asyncapi_type("node_id"), metavar="ID",
                    help="the {node} parameter's default (default: none, an example id)")
    aa.add_argument("--json", action="store_true", help="JSON instead of YAML")
    aa.add_argument("-o", "--output", metavar="FILE",
                    help="write FILE (atomically) instead of printing; an existing file is "
                    "replaced only if citynode asyncapi wrote it, or with --force")
    aa.add_argument("--force", action="store_true",
                    help="with -o: replace FILE even if citynode asyncapi did not write it")
    aa.set_defaults(func=cmd_asyncapi)

    s = sub.add_parser("simulate", help="run a whole node on emulated sensors and a local broker")
    s.add_argument("--duration", type=float, default=0,
                   help="stop after this many seconds (default: until Ctrl-C)")
    s.add_argument("--sensors", type=int, default=1, help="number of emulated PMS5003 (1-8)")
    s.add_argument("--site", choices=("pm", "full", "parking", "street", "catalogue"),
                   default="pm",
                   help="pm: PMS5003s only; full: also an SDS011, an SPS30, an SHT3x and a "
                        "BME280 (the I2C chips emulated inside the agent); parking: eight "
                        "bays on A02YYUW, I2CXL and HC-SR04 rangers playing parking scenes; "
                        "street: a pole counting passers-by with an LD2450 radar, beside "
                        "PMS5003s and an SHT3x (docs/counting.md); "
                        "catalogue: every device citynode knows, each on its emulator")
    s.add_argument("--interval", type=float, default=10, help="report interval in seconds")
    s.add_argument("--faults", default="",
                   help='fault injection, e.g. "noise=0.05,checksum=0.02,truncate=0.02"')
    s.add_argument("--unplug-every", type=float, default=0,
                   help="pull a sensor's cable every N seconds (0: never)")
    s.add_argument("--broker", default="",
                   help="use this broker HOST:PORT instead of starting mosquitto")
    s.add_argument("--no-broker", action="store_true", help="local mode: messages to the log")
    s.add_argument("--format", choices=formats.PACK_NAMES, default=formats.DEFAULT,
                   help="the node's payload format ([report] format)")
    s.add_argument("--speed", type=float, default=60.0,
                   help="replay the recorded PM log this many times faster than real time")
    s.add_argument("--workdir", default="", help="where to keep config, state and logs")
    # Rehearse against a platform: one [[uplink]] more each, to the broker HOST:PORT the
    # platform uses; SenML stays on the private broker (or --broker). docs/platforms.md.
    s.add_argument("--onem2m", default=None, metavar="HOST:PORT",
                   help="also register the node as a oneM2M AE with a Mobius whose MQTT "
                        "broker is HOST:PORT (MQTT 3.1.1)")
    s.add_argument("--cse-id", default=None, metavar="ID",
                   help="with --onem2m: the CSE-ID (default Mobius2)")
    s.add_argument("--cse-name", default=None, metavar="NAME",
                   help="with --onem2m: the CSEBase name (default Mobius)")
    s.add_argument("--sparkplug", default=None, metavar="HOST:PORT",
                   help="also speak Sparkplug B to the broker HOST:PORT a host application "
                        "(Ignition, SCADA) listens on")
    s.add_argument("--group-id", default=None, metavar="ID",
                   help="with --sparkplug: the Sparkplug group id (default citynode)")
    s.add_argument("--homeassistant", default=None, metavar="HOST:PORT",
                   help="also announce the node to Home Assistant through its MQTT broker "
                        "HOST:PORT (MQTT discovery)")
    s.add_argument("--discovery-prefix", default=None, metavar="PREFIX",
                   help="with --homeassistant: its discovery prefix (default homeassistant)")
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
    # as [fire] threshold_scale (agent/tools/replay/fire.THRESHOLD_SCALE_RANGE; not
    # imported here: --help stays light)
    fire.add_argument("--threshold-scale", type=number_between(0.25, 4.0), default=1.0,
                      metavar="X", help="the shipped thresholds times X, 0.25 to 4 (default "
                      "1): > 1 fewer alarms and later, < 1 earlier and more false alarms")
    fire.add_argument("--model", help=argparse.SUPPRESS)  # no fire model since 2026.12
    fire.set_defaults(func=cmd_detect_fire)

    cross = dsub.add_parser("crossings", help="HLK-LD2450 radar frames: CSV with t (s), "
                            "target (slot 0-2), x_mm, y_mm; one JSON line per crossing of "
                            "the counting line (docs/counting.md)")
    cross.add_argument("--input", required=True, help="CSV file ('-' for stdin)")
    # as [sensor.counting] line_x_m and zone_y_m (drivers/families/counting.py)
    cross.add_argument("--line-x", type=number_between(-10, 10), default=0.0, metavar="M",
                       help="the counting line x = M, metres along the pavement (-10 to 10, "
                       "default 0); in = towards +x")
    cross.add_argument("--zone-y", type=span_m, metavar="MIN:MAX",
                       help="count only crossings MIN to MAX metres out from the radar "
                       "(0 to 10; default: the whole field)")
    cross.set_defaults(func=cmd_detect_crossings)

    cal = sub.add_parser("calibrate", help="measure an empty parking bay's baseline and store it")
    cal.add_argument("bay", help="the sensor name of the bay, as in the configuration")
    cal.add_argument("--config", "-c", default=default_cfg)
    cal.add_argument("--seconds", type=number_between(1, 3600), default=30.0,
                     help="how long to measure (1 to 3600, default 30)")
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
    try:
        args = parser.parse_args(args_in)
    except SystemExit as exc:  # --help, --version (0) and usage errors (64) end here
        return exc.code if isinstance(exc.code, int) else EX_USAGE
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say, and nothing to flush.
        _silence_stdout()
        return 0
    except Exception as exc:  # a bug: one line for people, the traceback on request
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        print(f"citynode {args_in[0] if args_in else ''}: internal error: "
              f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]} (a bug: please "
              f"report it; {TRACEBACK_ENV}=1 shows where)", file=sys.stderr)
        return EX_SOFTWARE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
