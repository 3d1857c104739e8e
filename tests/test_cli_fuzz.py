"""Every ``citynode`` command under hostile input: the fuzz and property suite of issue 14.

Every subcommand is found by walking the parser (a new command is covered without a line
here; nested ones such as ``config check`` and ``detect fall`` too) and run with generated
arguments, files and configurations (hypothesis), each case in its own process
(tests/cli_forkserver.py: forked from a warm interpreter, 1 GiB of address space, a
timeout, no standard input unless the case gives one). Each case must:

- print no traceback on stderr (``CITYNODE_TRACEBACK=1`` is set, so an internal error that
  the command line turns into one line shows its traceback here: a bug cannot hide);
- exit with a code that README.md's exit-code table documents for that command;
- end within its timeout; commands that run until stopped (``run`` without ``--once``,
  ``simulate``, ``status --watch``) are stopped as systemd or a person would, and must end
  promptly then;
- leave every file it was not asked to write as it was: an input unchanged, a symlink
  still a symlink, a device node still a device node, a directory still a directory.

Every generated path lies in the case's own directory (``/dev/null`` is a copy made with
mknod when running as root, so a command that renames over it harms nothing); the
environment points the default configuration, state and runtime directories there too.
Configurations talk to 127.0.0.1 on a closed port only, I2C goes to the emulated bus,
GPIO to gpiozero's mock pins, serial ports are pseudo-terminals with nothing behind them:
nothing touches hardware or the network.

CITYNODE_FUZZ_EXAMPLES sets the examples per command (default 15: the whole file takes
about a minute on two cores); the examples are the same on every run unless
CITYNODE_FUZZ_RANDOM=1; CITYNODE_FUZZ_SHRINK=1 lets hypothesis shrink a failure to a
minimal case (slower). A failure prints the command line, the files and the
configuration it was given: the reproduction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agent.core import config as config_module
from agent.tools.cli import TRACEBACK_ENV, build_parser
from agent.wire import formats
from agent.wire.model import Pack, Record
from drivers import catalogue
from drivers.readme import example_capture, sample_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = int(os.environ.get("CITYNODE_FUZZ_EXAMPLES", "15"))
SHRINK = os.environ.get("CITYNODE_FUZZ_SHRINK", "") not in ("", "0")
#: CI runs the same examples every time (a failure is the code's, not the dice's);
#: CITYNODE_FUZZ_RANDOM=1 explores new ones.
RANDOM = os.environ.get("CITYNODE_FUZZ_RANDOM", "") not in ("", "0")
AS_LIMIT = 1 << 30
#: A case that has not ended by then hangs (unless it runs until stopped by design).
TIMEOUT_S = 20.0
#: Commands that run until stopped get this long before they are asked to stop.
SETTLE_S = 2.0
IS_ROOT = os.geteuid() == 0
SPECS = list(catalogue.specs().values())


# -- the commands, from the parser --------------------------------------------------------------
def _leaves(parser: argparse.ArgumentParser,
            path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    seen: set[int] = set()
    for name, sub in subs[0].choices.items():
        if id(sub) not in seen:  # an alias names the same parser
            seen.add(id(sub))
            yield from _leaves(sub, (*path, name))


COMMANDS: dict[tuple[str, ...], Any] = dict(_leaves(build_parser()))
NAMES = [" ".join(c) for c in COMMANDS]


@dataclass(frozen=True)
class Arg:
    """One option or positional of a command, as the parser declares it."""

    command: str
    dest: str
    flags: tuple[str, ...]
    nargs: Any
    type: Any
    choices: tuple[Any, ...] | None
    required: bool
    metavar: str | None
    const: Any
    append: bool

    @property
    def takes_value(self) -> bool:
        return self.nargs != 0


def args_of(command: str) -> list[Arg]:
    parser = COMMANDS[tuple(command.split())]
    out = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction | argparse._VersionAction):
            continue
        out.append(Arg(command, a.dest, tuple(a.option_strings), a.nargs,
                       getattr(a.type, "__wrapped__", a.type),
                       tuple(a.choices) if a.choices else None, bool(a.required),
                       a.metavar if isinstance(a.metavar, str) else None, a.const,
                       isinstance(a, argparse._AppendAction)))
    return out


# -- the documented exit codes, from README.md --------------------------------------------------
def documented_exit_codes() -> dict[str, set[int]]:
    """README.md's table "| command | exit codes |": command words to the codes it lists."""
    text = README.read_text(encoding="utf-8")
    head = text.find("| command | exit codes |")
    assert head >= 0, "README.md has no '| command | exit codes |' table"
    codes: dict[str, set[int]] = {}
    for line in text[head:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        words = re.findall(r"`([^`]*)`", cells[0])[0].split()
        name = " ".join(w for w in words if re.fullmatch(r"[a-z][a-z0-9-]*", w))
        # "0 ok; 64 usage; ...": the number that starts each clause
        found = {int(m) for m in re.findall(r"(?:^|;)\s*(\d+)\b", cells[-1])}
        codes.setdefault(name, set()).update(found)
    return codes


EXIT_CODES = documented_exit_codes()


def test_every_command_has_documented_exit_codes() -> None:
    missing = [n for n in NAMES if n not in EXIT_CODES]
    assert not missing, ("commands without a row in README.md's exit-code table "
                         f"(Commands section): {missing}")
    assert all(64 in EXIT_CODES[n] for n in NAMES), \
        "every command documents 64 (usage)"


# -- what a case is made of -------------------------------------------------------------------
CASE = "{CASE}"  # stands for the case's directory until the case is materialised
CLOSED = "{CLOSED}"  # a local TCP port nothing listens on
SPECIAL_KINDS = ("missing", "dir", "empty", "null", "loop", "dangling", "huge")


@dataclass
class FileSpec:
    """A file the case gives a command: ``kind`` is one of SPECIAL_KINDS, ``bytes``,
    ``text``, ``link`` (a symlink to the file ``target``) or ``pty`` (a silent
    pseudo-terminal, for serial ports)."""

    kind: str
    data: bytes = b""
    target: str = ""
    output: bool = False  # the command is asked to write here
    before: tuple[Any, ...] = ()  # what it was before the command ran

    def describe(self) -> str:
        if self.kind in ("bytes", "text"):
            shown = self.data[:600]
            more = f" ... ({len(self.data)} bytes)" if len(self.data) > 600 else ""
            return f"{self.kind}: {shown!r}{more}"
        return self.kind + (f" -> {self.target}" if self.target else "")


@dataclass
class Case:
    command: str
    argv: list[str]
    files: dict[str, FileSpec] = field(default_factory=dict)
    stdin: str | None = "devnull"  # a file name in ``files``, "devnull", or None (closed)
    interrupt: int | None = None  # a signal to stop it with after SETTLE_S
    tame: bool = False  # valid values, files of the right kind
    timeout: float = TIMEOUT_S
    values: dict[str, str] = field(default_factory=dict)  # hinted values drawn so far
    #: Inputs named on the command line that are not there to read: it must not exit 0.
    unreadable: list[str] = field(default_factory=list)

    def add(self, spec: FileSpec) -> str:
        name = f"f{len(self.files)}"
        self.files[name] = spec
        return f"{CASE}/{name}"

    def describe(self) -> str:
        lines = [f"citynode {' '.join(self._quote(a) for a in self.argv)}"]
        lines.append(f"  stdin: {self.stdin}; stop with: {self.interrupt}")
        for name, spec in self.files.items():
            lines.append(f"  {CASE}/{name}: {spec.describe()}"[:2000])
        return "\n".join(lines)

    @staticmethod
    def _quote(a: str) -> str:
        return a if re.fullmatch(r"[\w@%+=:,./{}-]+", a) else repr(a)


# -- value strategies ---------------------------------------------------------------------------
def _safe_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Text for an argument: no NUL (argv cannot hold one), never an absolute path."""
    return st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                   max_size=max_size).map(lambda s: "x" + s if s.startswith(("/", "~")) else s)


NUMBER_TEXT = st.one_of(
    st.sampled_from(["0", "-1", "1", "0.5", "nan", "inf", "-inf", "1e309", "1e-9", "abc", "",
                     "0x10", "1_000", " 1", "\u0661", "1e9", "-0"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**12, 10**12).map(str),
)
INT_TEXT = st.one_of(st.sampled_from(["0", "-1", "1", "2", "8", "9", "1.5", "abc", "", "1e3"]),
                     st.integers(-10**6, 10**6).map(str))
DEVICE_NAMES = sorted({n for s in SPECS for n in (s.type, *s.aliases)})


BROKERS = ([f"127.0.0.1:{CLOSED}", f"localhost:{CLOSED}", f"[::1]:{CLOSED}"],
           ["x", ":", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:abc", "", "[::1",
            "127.0.0.1:-1"])

#: (valid values, hostile ones) for options whose meaning a generic strategy cannot guess,
#: and bounds that keep a case short (a valid ``--listen-s 120`` listens two minutes a port).
HINTS: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    ("frames", "device"): (DEVICE_NAMES, ["", "nosuch", "PMS5003", "../x", "-"]),
    ("calibrate", "bay"): (["bay1", "kerb_sonar", "tank"], ["nosuch", "", "BAY"]),
    ("calibrate", "seconds"): (["1", "2"], ["0", "-1", "nan", "abc", "1e9", "3601"]),
    ("doctor", "listen_s"): (["0.2", "0.5"], ["0", "-1", "nan", "121", "abc", ""]),
    ("doctor", "only"): (["config", "disk,clock", "config,i2c,serial,gpio", "broker",
                          "journal"], ["bogus", "", ",", "config,config"]),
    ("run", "wait"): (["0.5", "1", "2"], ["0", "-1", "nan", "3601", "abc"]),
    ("status", "watch"): (["0.5", "1"], ["0", "-1", "nan", "abc", "1e9"]),
    ("simulate", "duration"): (["1", "2"], ["-1", "nan", "inf", "abc", "1e9"]),
    ("simulate", "sensors"): (["1", "2"], ["0", "9", "-1", "abc", "1.5"]),
    ("simulate", "interval"): (["1", "2"], ["0", "-1", "nan", "0.5", "86401"]),
    ("simulate", "unplug_every"): (["0", "5"], ["1", "-1", "nan", "abc"]),
    ("simulate", "speed"): (["60", "1"], ["0", "-1", "nan", "1e9"]),
    ("simulate", "broker"): BROKERS,
    ("simulate", "onem2m"): BROKERS,
    ("simulate", "sparkplug"): BROKERS,
    ("simulate", "homeassistant"): BROKERS,
    ("simulate", "cse_id"): (["Mobius2", "/Mobius2"], ["", "/", "a b", "a/b", "x" * 65]),
    ("simulate", "cse_name"): (["Mobius"], ["", "a b", "a/b", "x" * 65]),
    ("simulate", "group_id"): (["citynode", "site 1"], ["", "a/b", "a+b", "#", "x" * 65]),
    ("simulate", "discovery_prefix"): (["homeassistant", "ha/test"],
                                       ["", "/x", "a//b", "a+b", "#"]),
    ("simulate", "faults"): (["noise=0.05", "checksum=0.02,truncate=0.02"],
                             ["checksum=2", "bogus=1", "noise", "", "noise=nan", ",",
                              "noise=0.1,noise=0.2"]),
    ("provision", "broker"): BROKERS,
    ("provision", "node_id"): (["node-1", "n" * 64], ["", "bad id", "x" * 65, "-x",
                                                      "\u00fcn\u00ef", "a/b"]),
    ("provision", "owner"): (["root:root", "0:0"], ["nosuchuser:nogroup", "root", ":",
                                                    "root:", ":root", "a:b:c"]),
    ("sdcard-kit", "hostname"): (["node-1"], ["", "bad host!", "x" * 70, "-a"]),
    ("keys generate", "name"): (["fleet", "release-2026.12"], ["", "../x", "a/b", "x.pub",
                                                               "-x", "x" * 65]),
    ("detect occupancy", "baseline"): (["bay1=1500"], ["nobay=1500", "x", "=", "bay1=nan",
                                                       "bay1=-5", "bay1=1e309", "bay1=",
                                                       "=1500", "bay1=1500=2"]),
    ("detect inactivity", "utc_offset"): (["9", "-12", "14"], ["15", "nan", "abc", "-12.5",
                                                               "1e309"]),
    ("detect crossings", "line_x"): (["0", "0.5", "-2"], ["nan", "abc", "1e9", "10.5", "inf"]),
    ("detect crossings", "zone_y"): (["0.5:4", "0:10"], ["4:1", "1", ":", "a:b", "1:nan",
                                                         "-1:2", "0:11", "2:2"]),
    ("asyncapi", "format"): ([*formats.NAMES, ",".join(formats.NAMES)],
                             ["", "nosuch", ",", "SENML-CBOR", f"{formats.DEFAULT},"]),
    ("asyncapi", "prefix"): (["citynode", "city/air"], ["", "/x", "a//b", "a/", "a+b", "#"]),
    ("asyncapi", "node"): (["node-1", "n" * 64], ["", "-x", "a/b", "x" * 65, "\u00fcn"]),
    # fleet: the broker is a closed port (69 once the options parse); values that keep a
    # case short (the view's --once --wait, send's --discover and --timeout).
    ("fleet", "broker"): BROKERS,
    ("fleet", "wait"): (["0.5", "1"], ["0", "-1", "nan", "3601", "abc"]),
    ("fleet", "refresh"): (["0.5", "1"], ["0", "0.1", "nan", "abc"]),
    ("fleet", "silent_after"): (["0", "3"], ["-1", "nan", "abc", "1e9"]),
    ("fleet", "discover"): (["0.5", "1"], ["0", "-1", "nan", "601"]),
    ("fleet", "timeout"): (["1", "2"], ["0", "-1", "nan", "86401"]),
    ("fleet", "update_timeout"): (["1", "2"], ["0", "nan", "86401"]),
    ("fleet", "max_failure_rate"): (["0", "0.1", "1"], ["-0.1", "1.5", "nan", "abc"]),
    ("fleet", "ring"): (["1", "1,10,100", "2,5"], ["", "0", "1,,2", "-1", "a", "1,0",
                                                   ",".join(["1"] * 40)]),
    ("fleet", "ring_size"): (["1", "10"], ["0", "-1", "1.5", "abc"]),
    ("fleet", "max_nodes"): (["1", "50000"], ["0", "-1", "1e9", "abc"]),
    ("fleet", "cmd"): (["ping", "resend-state", "sample-now"], ["", "nosuch", "PING",
                                                                 "x" * 40]),
    ("fleet", "args"): (["{}", '{"sensor": "pm"}'], ["", "[", "[]", "1", "null",
                                                     '{"a": NaN}', '{"a": 1e999}',
                                                     "[" * 5000]),
    ("fleet", "nodes"): (["pole-*", "*", "n1"], ["", "[", "a/b", "+", "#", "[!"]),
    ("fleet", "version"): (["0.1.*", "*"], ["", "[", "\u00fc"]),
    ("fleet", "prefix"): (["citynode", "city/air"], ["", "/x", "a//b", "a/", "a+b", "#"]),
    ("fleet", "server_name"): (["broker.example.net"], ["", "-", "a b"]),
}
#: Examples per command relative to the others: a simulate case starts a broker, emulators
#: and an agent (seconds each).
SHARE = {"simulate": 0.3, "run": 0.7}
#: In a tame case, only these options of a command (the others exclude one another, e.g.
#: provision's --cert without --key, or --username without a password, exit 64).
TAME_ONLY = {"provision": {"node_id", "broker", "config", "secrets_dir", "no_check", "force",
                           "password_file", "owner"},
             # a platform's settings (--cse-id...) without its --onem2m HOST:PORT are 64
             "simulate": {a.dest for a in args_of("simulate")}
             - {"cse_id", "cse_name", "group_id", "discovery_prefix"},
             # the view's options (send's are a usage error there, and need a key file)
             "fleet": {"broker", "config", "prefix", "nodes", "version", "max_nodes", "json",
                       "once", "wait", "silent_after", "problems", "tls", "ca",
                       "credentials", "server_name"}}
#: The share of cases made of valid values (the rest mix in hostile ones): deep enough to
#: reach what a command does after parsing, hostile enough to find what breaks it.
TAME = 0.6

#: Options the harness always gives: without them a command would write outside the case
#: (provision's defaults are /etc/citynode) or run for long by design.
ALWAYS = {
    ("provision", "config"), ("provision", "secrets_dir"), ("simulate", "workdir"),
    ("simulate", "duration"), ("calibrate", "seconds"), ("doctor", "listen_s"),
    ("update install", "root"), ("update guard", "root"),
    ("fleet", "broker"),  # a closed port: without one, fleet stops at "no broker" (64)
}
#: Where a command is asked to write: a special file there must survive (refused, or
#: written through), a regular file may be replaced.
OUTPUTS = {("provision", "config"), ("provision", "secrets_dir"), ("sdcard-kit", "out"),
           ("config devices", "write"), ("simulate", "workdir"), ("asyncapi", "output"),
           ("keys generate", "out"),
           ("update install", "root"), ("update guard", "root")}
#: Inputs a command may do without: ``status`` works with a broken or missing configuration
#: (docs/status.md).
TOLERANT = {("status", "config")}
PATH_WORDS = ("file", "config", "input", "model", "path", "dir", "out", "workdir", "write",
              "bundle", "ca", "cert", "key", "credentials")


def is_path(arg: Arg) -> bool:
    mv = (arg.metavar or "").upper()
    if mv in ("FILE", "PATH", "DIR") or mv.endswith(("FILE", "DIR")):
        return True
    d = arg.dest
    return any(d == w or d.endswith("_" + w) or d.startswith(w + "_") for w in PATH_WORDS)


def is_dir(arg: Arg) -> bool:
    """A path that names a directory (``--out``, ``--secrets-dir``, ``--workdir``)."""
    return (arg.metavar or "").upper().endswith("DIR") or arg.dest.endswith(
        ("dir", "out", "workdir"))


def content_kind(arg: Arg) -> str:
    """What a realistic file for this argument holds."""
    c, d = arg.command, arg.dest
    if d == "config" or (c.startswith("config ") and d == "file"):
        return "config"
    if c.startswith("detect ") and d == "input":
        return "csv:" + c.split()[1]
    if c == "frames" and d == "file":
        return "capture"
    if c == "decode" and d == "file":
        return "payload"
    if c == "status" and d == "file":
        return "snapshot"
    if d in ("ca", "cert", "key"):
        return "pem"
    if d == "fleet_key" or c == "keys show":
        return "ed25519"
    return "any"


# -- contents -----------------------------------------------------------------------------------
def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + "}"
    if v is None:
        return '""'
    return json.dumps(str(v), ensure_ascii=False)


def toml_text(doc: dict[str, Any]) -> str:
    lines = []
    for table, body in doc.items():
        if isinstance(body, list):
            continue
        lines.append(f"[{table}]")
        lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in body.items()]
        lines.append("")
    for array in [k for k, v in doc.items() if isinstance(v, list)]:  # [[sensor]], [[uplink]]
        for entry in doc[array]:
            lines.append(f"[[{array}]]")
            subs = {k: v for k, v in entry.items() if isinstance(v, dict)}
            lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in entry.items() if k not in subs]
            for k, sub in subs.items():
                lines.append(f"[{array}.{k}]")
                lines += [f"{json.dumps(sk)} = {_toml(sv)}" for sk, sv in sub.items()]
            lines.append("")
    return "\n".join(lines)


HOSTILE = st.one_of(
    st.sampled_from(["", "x", -1, 0, 1, 10**30, -(10**30), 1.5, float("nan"), float("inf"),
                     True, False, [], [1, "a"], {"a": 1}, "1883", "false", "60", " ", "\n",
                     f"{CASE}/null", f"{CASE}/adir", f"{CASE}/nothere", "emulator",
                     "a\x00b", "\x00", "\ud7ff\U0010ffff", "x" * 5000]),
    _safe_text(20), st.integers(), st.floats(),
)
DEFAULTS: dict[str, Any] = msgspec.to_builtins(
    config_module.parse('[node]\nid = "n1"\n', "defaults", check_devices=False))


@st.composite
def _path_value(draw: st.DrawFn, case: Case) -> str:
    """A path a configuration names: a file of the case, of any kind."""
    kind = draw(st.sampled_from(["missing", "dir", "empty", "null", "loop", "dangling",
                                 "bytes", "text", "under-null", "proc"]))
    if kind == "proc":  # a file system nobody can create files in (as /proc/spool.db)
        return "/proc/citynode-fuzz/spool.db"
    if kind == "under-null":  # a path through a device node: ENOTDIR
        return case.add(FileSpec("null")) + "/spool.db"
    if kind == "bytes":
        return case.add(FileSpec("bytes", draw(st.binary(max_size=512))))
    if kind == "text":
        return case.add(FileSpec("text", draw(_safe_text(200)).encode()))
    return case.add(FileSpec(kind))


@st.composite
def _sensor(draw: st.DrawFn, case: Case, index: int) -> dict[str, Any]:
    spec = draw(st.sampled_from(SPECS))
    name = draw(st.sampled_from([f"s{index}", f"s{index}", "bay1", "kerb_sonar", "tank"]))
    table: dict[str, Any] = {**sample_table(spec), "name": name, "prefix": f"p{index}."}
    if spec.bus == "uart":
        table["port"] = draw(st.one_of(
            st.just(case.add(FileSpec("pty"))), _path_value(case)))
    elif spec.bus == "i2c":
        table["bus"] = draw(st.sampled_from(["emulator", "emulator", "emulator", 250]))
    else:
        table["pins"] = draw(st.sampled_from(["emulator", "gpio"]))
        table["trigger"] = draw(st.integers(0, 30))
        table["echo"] = draw(st.integers(0, 30))
    if "warmup_s" in table:
        table["warmup_s"] = draw(st.sampled_from([0, 1, 2, 30]))
    if "use" in table and draw(st.booleans()):
        table["use"] = {"role": draw(st.sampled_from(["bay", "bin", "distance", "tank", 3]))}
    return table


@st.composite
def _uplink(draw: st.DrawFn, case: Case, index: int) -> dict[str, Any]:
    """An [[uplink]] of any format, to a closed port on this machine, with its format's
    own table (every key at its default) or, now and then, another format's."""
    name = draw(st.sampled_from(formats.NAMES))
    table: dict[str, Any] = {"name": draw(st.sampled_from([f"u{index}", "main", "u0"])),
                             "format": name, "host": "127.0.0.1", "port": CLOSED,
                             "backoff_max_s": 1.0}
    for key in ("ca_file", "credentials_file"):
        if not case.tame and draw(st.integers(0, 5)) == 0:
            table[key] = draw(_path_value(case))
    own = draw(st.sampled_from(formats.NAMES)) if not case.tame else name
    options = formats.options(own)
    if options is not None:
        table[own.replace("-", "_")] = {k: v for k, v in msgspec.to_builtins(options()).items()
                                        if v is not None}
    return table


def _mutate(draw: st.DrawFn, table: dict[str, Any], protect: tuple[str, ...] = ()) -> None:
    """Change, delete or add one key of ``table`` (never those in ``protect``)."""
    keys = [k for k in table if k not in protect]
    how = draw(st.sampled_from(["set", "delete", "unknown"] if keys else ["unknown"]))
    if how == "unknown":
        table[draw(st.sampled_from(["oops", "Port", "interval", "typo_s"]))] = draw(HOSTILE)
        return
    key = draw(st.sampled_from(keys))
    if how == "delete":
        del table[key]
    else:
        table[key] = draw(HOSTILE)


@st.composite
def config_text(draw: st.DrawFn, case: Case) -> bytes:
    """A configuration: mostly valid, with hostile values, keys, paths and sensors."""
    shape = "config" if case.tame else draw(
        st.sampled_from(["config"] * 8 + ["text", "bytes", "toml-garbage"]))
    if shape == "text":
        return draw(_safe_text(300)).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=300))
    ids = ["n1", "node-7"] if case.tame else ["n1", "node-7", "", "bad id"]
    doc: dict[str, Any] = {"node": {"id": draw(st.sampled_from(ids)),
                                    "state_dir": f"{CASE}/state"}}
    if not case.tame and draw(st.integers(0, 9)) == 0:  # a file, a device, a loop
        doc["node"]["state_dir"] = draw(_path_value(case))
    for table in draw(st.lists(st.sampled_from([t for t in DEFAULTS if t not in
                                                ("node", "sensor", "uplink")]), max_size=4,
                               unique=True)):
        body = {k: v for k, v in DEFAULTS[table].items() if v is not None}
        for key in list(body):  # no file of the system, no host but this one
            if key.endswith(("_file", "path", "model")):
                body[key] = draw(st.one_of(st.just(""), _path_value(case)))
        if table == "mqtt":
            body["host"] = draw(st.sampled_from(["127.0.0.1", "localhost", ""]))
            body["port"] = CLOSED if case.tame else draw(
                st.sampled_from([CLOSED, CLOSED, 0, 70000, "1883"]))
            body["backoff_max_s"] = 1.0
        doc[table] = body
        if not case.tame and draw(st.integers(0, 3)) == 0:
            _mutate(draw, body, protect=("host", "port", "state_dir"))
    doc["sensor"] = [draw(_sensor(case, i)) for i in range(draw(st.integers(0, 3)))]
    doc["uplink"] = [draw(_uplink(case, i)) for i in range(draw(st.integers(0, 2)))]
    for table in doc["uplink"]:
        if not case.tame and draw(st.integers(0, 3)) == 0:
            _mutate(draw, table, protect=("host", "port"))
    for table in doc["sensor"]:
        if not case.tame and draw(st.integers(0, 4)) == 0:
            _mutate(draw, table, protect=("port", "bus", "pins"))
    if not case.tame and draw(st.integers(0, 5)) == 0:
        _mutate(draw, doc["node"], protect=("state_dir",))
    text = toml_text(doc).replace(f'"{CLOSED}"', CLOSED)
    if shape == "toml-garbage":  # a file cut short, a line pasted in the middle
        lines = text.splitlines()
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(["[node]", "[[sensor]]", "x = ", "= 1", "[",
                                               "id = 'a' 'b'", "\ufeff", "\x7f"])))
        text = "\n".join(lines)[:draw(st.integers(0, len(text) + 20))]
    return text.encode("utf-8", "surrogatepass")


#: An Ed25519 public key as ``citynode keys generate`` writes it.
ED25519_PUB = (b"-----BEGIN PUBLIC KEY-----\n"
               b"MCowBQYDK2VwAyEAF8pA3BnMSHh2yeeAcWPJedY8MGp7/+hWsJIPcl6f/4E=\n"
               b"-----END PUBLIC KEY-----\n")
DETECT_COLUMNS = {
    "occupancy": ("t", "bay", "distance_mm"),
    "inactivity": ("t", "plug", "watts"),
    "fall": ("t", "ax", "ay", "az"),
    "fire": ("t", "temperature_c", "humidity_pct", "eco2_ppm", "tvoc_ppb", "pm2_5"),
    "crossings": ("t", "target", "x_mm", "y_mm"),
}
ODD_FIELDS = st.sampled_from(["", "nan", "inf", "-1", "1e300", "1e309", "abc", " 1 ", "0x1",
                              "2026-01-01T00:00:00Z", "2026-13-45", "\"", "1,2"])


@st.composite
def csv_text(draw: st.DrawFn, detector: str, tame: bool = False) -> bytes:
    """A replay's CSV: tame, well-formed rows of plausible values (which still may be
    outside what a detector accepts); else columns missing, odd fields, huge times."""
    cols = list(DETECT_COLUMNS.get(detector, ("t", "value")))
    if not tame and draw(st.integers(0, 5)) == 0:
        del cols[draw(st.integers(0, len(cols) - 1))]
    if draw(st.booleans()):
        cols = draw(st.permutations(cols))
    t = draw(st.sampled_from([1.7e9, 0.0, 1.0] if tame else
                             [0.0, 1.0, 1.7e9, 1e300, -5.0, 1e10, 4.1e9]))
    step = draw(st.sampled_from([0.02, 1.0, 60.0] if tame else
                                [0.02, 1.0, 60.0, 3600.0, 1e10, 0.0, -1.0]))
    rows = []
    for _ in range(draw(st.integers(0, 80))):
        t += step if tame or draw(st.integers(0, 9)) else draw(st.floats(-1e12, 1e12))
        row = []
        for c in cols:
            if not tame and draw(st.integers(0, 14)) == 0:
                row.append(draw(ODD_FIELDS))
            elif c == "t":
                row.append(repr(t))
            elif c in ("bay", "plug"):
                row.append(draw(st.sampled_from(["bay1", "kettle", "tv", "fridge", ""])))
            elif c == "target":
                row.append(draw(st.sampled_from(["0", "1", "2"] if tame else
                                                ["0", "1", "2", "3", "-1", "1.0"])))
            elif tame:
                row.append(f"{draw(st.floats(0, 3000, allow_nan=False)):.3f}")
            else:
                row.append(repr(draw(st.floats(-1e7, 1e7, allow_nan=False))))
        rows.append(",".join(row))
    return ("\n".join([",".join(cols), *rows]) + "\n").encode()


def _payloads(tame: bool) -> st.SearchStrategy[bytes]:
    names = st.sampled_from(["pm25", "temp", "x:q", "pm:n", "a", ""])
    record = st.one_of(st.builds(Record, names, value=st.floats(-1e9, 1e9, allow_nan=False)),
                       st.builds(Record, names, text=_safe_text(20)),
                       st.builds(Record, names, flag=st.booleans()))

    def encode(args: tuple[str, float, int, list[Record]]) -> bytes:
        name, t, seq, records = args
        try:
            return formats.get(name).encode(
                Pack(time=t, session=1, seq=seq, records=records, kind="telemetry")).payload
        except Exception:  # a pack the encoder refuses: the fuzz wants bytes anyway
            return b"\xa0"

    valid = st.tuples(st.sampled_from(formats.NAMES), st.floats(0, 4e9),
                      st.integers(0, 2**31), st.lists(record, max_size=5)).map(encode)
    if tame:
        return valid
    return st.one_of(
        valid,
        valid.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda i: b[:i])),
        valid.flatmap(lambda b: st.binary(min_size=1, max_size=4).map(lambda x: x + b[len(x):])),
        st.sampled_from([b"{}", b"[]", b"[1,2]", b'"x"', b"null", b'{"a": 1}', b"[{}]",
                         b'[{"n": "temp", "v": 21.5}]', b'[{"bn": "x", "n": "t", "v": 1e999}]',
                         b"\xa0", b"\x80", b"\x9f", b"[" * 10000]),
        st.binary(max_size=512),
    )


def _snapshot() -> dict[str, Any]:
    from agent.core import status_file
    from agent.core.daemon import Node

    cfg = config_module.parse('[node]\nid = "loc"\n', "x", check_devices=False)
    return json.loads(json.dumps(status_file.build_snapshot(Node(cfg))))


SNAPSHOT = _snapshot()


def _leaves_of(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [path] + [p for k, v in doc.items() for p in _leaves_of(v, (*path, k))]
    if isinstance(doc, list):
        return [path] + [p for i, v in enumerate(doc) for p in _leaves_of(v, (*path, i))]
    return [path]


@st.composite
def snapshot_text(draw: st.DrawFn) -> bytes:
    doc = json.loads(json.dumps(SNAPSHOT))
    doc["pid"] = os.getpid()  # a live process: the verdict code runs, not "not running"
    doc["written_at"] = time.time()
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_leaves_of(doc)[1:] or [("x",)]))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.integers(0, 3)) == 0 and isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(st.sampled_from(
                [None, "", "x", -1, 0, 1e300, float("nan"), True, [], {}, [1], {"a": 1},
                 2**70, "running", "ok"]))
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def file_content(draw: st.DrawFn, kind: str, case: Case) -> bytes:
    if kind == "config":
        return draw(config_text(case))
    if kind.startswith("csv:"):
        return draw(csv_text(kind[4:], case.tame))
    if kind == "capture":
        specs = [s for s in SPECS if s.frames is not None]
        device = [s for s in specs if case.values.get("device") in (s.type, *s.aliases)]
        spec = device[0] if case.tame and device else draw(st.sampled_from(specs))
        capture = example_capture(spec).encode()
        if case.tame:
            return draw(st.sampled_from([capture, capture * 3, b"\x00\x11" + capture]))
        return draw(st.one_of(st.just(capture), st.binary(max_size=2048),
                              st.binary(max_size=256).map(lambda b: b.hex(" ").encode()),
                              st.just(capture * 50),
                              st.integers(0, len(capture)).map(lambda i: capture[:i])))
    if kind == "payload":
        return draw(_payloads(case.tame))
    if kind == "snapshot":
        return draw(st.one_of(snapshot_text(), st.binary(max_size=200)))
    if kind == "ed25519":  # a fleet key (citynode keys generate), or one that is not
        return draw(st.sampled_from([
            ED25519_PUB, ED25519_PUB.replace(b"MCow", b"MCox"), ED25519_PUB[:60],
            b"R2zzvBbTHfYgqgJ30gDaPWVXFxvhZkuUV3gAtvgJnXo=\n", b"", b"\x00" * 64,
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n"]))
    if kind == "pem":
        return draw(st.sampled_from([
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            b"-----BEGIN PRIVATE KEY-----\n\n-----END PRIVATE KEY-----\n", b"", b"\x00" * 64,
            b"-----BEGIN CERTIFICATE-----\n" + b"A" * 5000]))
    return draw(st.one_of(st.binary(max_size=4096), _safe_text(400).map(str.encode)))


@st.composite
def path_arg(draw: st.DrawFn, arg: Arg, case: Case) -> str:
    """A path for ``arg``: a special file, or contents a command of its kind reads."""
    output = (arg.command, arg.dest) in OUTPUTS
    choice = "content" if case.tame else draw(
        st.sampled_from(["content"] * 6 + list(SPECIAL_KINDS) + ["link", "stdin"]))
    if choice == "stdin" and not output:
        case.stdin = case.add(FileSpec("bytes", draw(file_content(content_kind(arg), case))))
        return "-"
    if choice == "content" or choice == "stdin":
        if output and (case.tame or draw(st.booleans())):  # the usual case: a new one,
            kinds = ["missing", "emptydir"] if is_dir(arg) else ["missing"]  # or empty
            return case.add(FileSpec(draw(st.sampled_from(kinds)), output=True))
        data = draw(file_content(content_kind(arg), case))
        return case.add(FileSpec("bytes", data, output=output))
    if choice == "link":
        target = case.add(FileSpec("bytes", draw(file_content(content_kind(arg), case))))
        return case.add(FileSpec("link", target=target.rsplit("/", 1)[1], output=output))
    if choice in ("missing", "dir", "loop", "dangling") and not output \
            and (arg.command, arg.dest) not in TOLERANT:
        case.unreadable.append(f"{arg.flags[0] if arg.flags else arg.dest}: {choice}")
    return case.add(FileSpec(choice, output=output))


def value_for(draw: st.DrawFn, arg: Arg, case: Case) -> str:
    hint = HINTS.get((arg.command, arg.dest))
    if hint is not None:
        value = draw(st.sampled_from(hint[0] if case.tame else hint[0] + hint[1]))
        case.values[arg.dest] = value
        return value
    if is_path(arg):
        return draw(path_arg(arg, case))
    if arg.choices:
        valid = st.sampled_from([str(c) for c in arg.choices])
        return draw(valid if case.tame else
                    st.one_of(valid, st.sampled_from(["", "nosuch", "AUTO"])))
    if arg.type in (float, int):
        return draw(st.sampled_from(["1", "2"]) if case.tame else
                    NUMBER_TEXT if arg.type is float else INT_TEXT)
    if case.tame:
        return draw(st.sampled_from(["42 4d 00 1c", "0a0b"] if arg.dest == "hex" else
                                    ["x", "node-1"]))
    if arg.dest == "hex":
        return draw(st.one_of(st.binary(max_size=80).map(lambda b: b.hex(" ")),
                              st.sampled_from(["42 4d 00", "0x42,0x4d", "4", "zz", "", ";",
                                               "44 W 24 00;44 R 66 21 39 71 48 ca"]),
                              _safe_text(40)))
    return draw(st.one_of(_safe_text(30), st.sampled_from(["-", "--", "x", ""])))


#: Junk a person might type: an unknown option, an extra argument, a lone dash.
JUNK = st.sampled_from(["--no-such-option", "extra", "-", "--", "-x", "--=", "-1"])


@st.composite
def cases(draw: st.DrawFn, command: str) -> Case:
    case = Case(command, [], tame=draw(st.floats(0, 1)) < TAME)
    words = command.split()
    groups: list[list[str]] = []
    positionals: list[str] = []
    for arg in args_of(command):
        if case.tame and arg.dest not in TAME_ONLY.get(command, {arg.dest}):
            continue
        forced = (command, arg.dest) in ALWAYS or (arg.required and case.tame)
        if not forced and not (arg.required and draw(st.integers(0, 9))) \
                and not draw(st.booleans()):
            continue
        if not arg.flags:
            if arg.takes_value:
                positionals.append(value_for(draw, arg, case))
            continue
        for _ in range(draw(st.integers(1, 3)) if arg.append else 1):
            flag = draw(st.sampled_from(arg.flags))
            if not arg.takes_value:
                groups.append([flag])
                continue
            # An option whose value may be left out would then write to its default
            # outside the case (config devices --write): always give one.
            value = value_for(draw, arg, case)
            if (value.startswith("-") and value != "-") or draw(st.integers(0, 4)) == 0:
                groups.append([f"{flag}={value}"] if flag.startswith("--") else [flag, value])
            else:
                groups.append([flag, value])
    # Options anywhere among the positionals (the grammar allows any order).
    order = draw(st.permutations(groups)) if groups else []
    argv: list[str] = []
    pos = iter(positionals)
    for g in order:
        if draw(st.booleans()):
            argv += [p for p in [next(pos, None)] if p is not None]
        argv += g
    argv += list(pos)
    if not case.tame and draw(st.integers(0, 7)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(JUNK))
    case.argv = words + argv
    if command == "run":
        if draw(st.integers(0, 6)):
            if "--once" not in case.argv:
                case.argv.append("--once")
            if not any(a.startswith("--wait") for a in case.argv):
                case.argv += ["--wait", draw(st.sampled_from(["0.5", "1", "2"]))]
        else:
            case.interrupt = signal.SIGTERM
    if command == "simulate":
        case.interrupt = signal.SIGINT
    if command == "status" and any(a.startswith("--watch") for a in case.argv):
        case.interrupt = signal.SIGINT
    if command == "fleet" and "send" not in case.argv and "--once" not in case.argv:
        case.interrupt = signal.SIGINT  # the live view runs until Ctrl-C
    if not case.tame and draw(st.integers(0, 9)) == 0:
        case.stdin = None  # no standard input at all (a service, nohup)
    # The default configuration ($CITYNODE_CONFIG) of a command given no --config.
    case.files["default.toml"] = FileSpec("bytes", draw(config_text(case)))
    return case


# -- running a case -----------------------------------------------------------------------------
class Server:
    """The fork server (tests/cli_forkserver.py) and the sandbox its cases live in."""

    def __init__(self, sandbox: Path) -> None:
        self.sandbox = sandbox
        self.count = 0
        self.case_dir = sandbox
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.closed_port = s.getsockname()[1]  # nothing listens there once closed
        huge = sandbox / "huge.bin"
        with open(huge, "wb") as f:
            f.write(os.urandom(2 << 20))
        self.huge = huge
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "cli_forkserver.py"), str(req_r), str(ans_w)],
            pass_fds=(req_r, ans_w), cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=None, preexec_fn=_limit_memory)
        os.close(req_r)
        os.close(ans_w)
        self.requests = os.fdopen(req_w, "w")
        self.answers = os.fdopen(ans_r, "r")
        hello = json.loads(self.answers.readline())
        self.base_rss_kb = hello["base_rss_kb"]

    def close(self) -> None:
        self.requests.close()
        self.answers.close()
        self.proc.wait(10)

    def run(self, case: Case) -> tuple[dict[str, Any], str, str, Path]:
        """Run the case's command line: (answer, stdout, stderr, the case's directory)."""
        (answer, out, err), = self.run_steps(case, [(case.argv, case.interrupt)])
        return answer, out, err, self.case_dir

    def run_steps(self, case: Case, steps: list[tuple[list[str], int | None]],
                  ) -> list[tuple[dict[str, Any], str, str]]:
        """Run several command lines, one after the other, on the same files."""
        self.count += 1
        case_dir = self.case_dir = self.sandbox / f"case{self.count}"
        case_dir.mkdir()
        results = []
        with materialised(case, case_dir, self) as (resolve, stdin, env):
            for argv, interrupt in steps:
                req = {"argv": [resolve(a) for a in argv], "cwd": str(case_dir), "env": env,
                       "stdin": stdin, "stdout": str(case_dir / ".stdout"),
                       "stderr": str(case_dir / ".stderr"), "timeout": case.timeout}
                if interrupt is not None:
                    req.update(interrupt_after=SETTLE_S, interrupt_signal=int(interrupt),
                               grace=25.0)
                self.requests.write(json.dumps(req) + "\n")
                self.requests.flush()
                answer = json.loads(self.answers.readline())
                _kill_leftovers(case_dir)
                answer["changed"] = changed_files(case, case_dir)
                results.append((answer, _head(case_dir / ".stdout"),
                                _head(case_dir / ".stderr")))
        return results


def _limit_memory() -> None:
    """preexec_fn: the address-space limit of every command the suite runs."""
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def _head(path: Path, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_leftovers(case_dir: Path) -> None:
    """Kill processes a case started in sessions of their own (simulate's broker and agent)
    and left behind: those whose command line names the case's directory."""
    mark = str(case_dir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if mark in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def _environment(case_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "USER", "LOGNAME")}
    env.update({
        "HOME": str(case_dir), "TMPDIR": str(case_dir / "tmp"),
        "CITYNODE_CONFIG": str(case_dir / "default.toml"),
        "STATE_DIRECTORY": str(case_dir / "state-default"),
        "RUNTIME_DIRECTORY": str(case_dir / "run"),
        "CITYNODE_JOURNAL_SOCKET": str(case_dir / "no-journal.sock"),
        "GPIOZERO_PIN_FACTORY": "mock",
        # glibc reserves 64 MiB of address space per thread arena: a daemon with twenty
        # sensor threads would reach the address-space limit with 50 MB resident.
        "MALLOC_ARENA_MAX": "2",
        TRACEBACK_ENV: "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@contextlib.contextmanager
def materialised(case: Case, case_dir: Path,
                 server: Server,
                 ) -> Iterator[tuple[Callable[[str], str], str | None, dict[str, str]]]:
    """Create the case's files; yield how to resolve a path in an argument, the standard
    input and the environment."""
    (case_dir / "tmp").mkdir()
    ptys: list[int] = []

    def resolve(text: str) -> str:
        return text.replace(CASE, str(case_dir)).replace(CLOSED, str(server.closed_port))

    try:
        for name, spec in case.files.items():
            p = case_dir / name
            if spec.kind == "bytes":
                p.write_bytes(resolve(spec.data.decode("utf-8", "surrogateescape")).encode(
                    "utf-8", "surrogateescape"))
            elif spec.kind == "text":
                p.write_bytes(spec.data)
            elif spec.kind == "dir":
                p.mkdir()
                (p / "inside").write_text("x")
            elif spec.kind == "empty":
                p.write_bytes(b"")
            elif spec.kind == "emptydir":
                p.mkdir()
            elif spec.kind == "null":
                if IS_ROOT:
                    os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
                else:  # not root: nothing can replace the real one
                    p.symlink_to("/dev/null")
            elif spec.kind == "loop":
                p.symlink_to(p.name + ".loop")
                (case_dir / (p.name + ".loop")).symlink_to(p.name)
            elif spec.kind == "dangling":
                p.symlink_to("nothere-" + name)
            elif spec.kind == "huge":
                shutil.copyfile(server.huge, p)
            elif spec.kind == "link":
                p.symlink_to(spec.target)
            elif spec.kind == "pty":
                master, slave = os.openpty()
                ptys += [master, slave]
                p.symlink_to(os.ttyname(slave))
            # "missing": nothing
        for name, spec in case.files.items():
            spec.before = _fingerprint(case_dir / name)
        stdin = os.devnull if case.stdin == "devnull" else (
            None if case.stdin is None else resolve(case.stdin))
        yield resolve, stdin, _environment(case_dir)
    finally:
        for fd in ptys:
            os.close(fd)


def _fingerprint(path: Path) -> tuple[Any, ...]:
    """What a file is: its type, and for a regular file its contents' size and hash; for a
    symlink its target; for a directory its entries."""
    try:
        st_ = os.lstat(path)
    except FileNotFoundError:
        return ("missing",)
    if stat.S_ISLNK(st_.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(st_.st_mode):
        import hashlib

        return ("file", st_.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    if stat.S_ISDIR(st_.st_mode):
        return ("dir", tuple(sorted(os.listdir(path))))
    if stat.S_ISCHR(st_.st_mode):
        return ("chr", st_.st_rdev)
    return ("other", stat.S_IFMT(st_.st_mode))


def changed_files(case: Case, case_dir: Path) -> list[str]:
    """Files the command was not asked to write and changed anyway, and special files it
    was asked to write that are no longer what they were."""
    out = []
    for name, spec in case.files.items():
        before, now = spec.before, _fingerprint(case_dir / name)
        if now == before:
            continue
        if spec.output and (spec.kind in ("bytes", "text", "empty", "missing")
                            or (spec.kind in ("dir", "emptydir") and now[0] == "dir")):
            continue  # a regular file, a new one or a directory it may fill: its to write
        if spec.output and spec.kind == "link" and now == before:
            continue
        out.append(f"{CASE}/{name} ({spec.kind}{', an output' if spec.output else ''}): "
                   f"{before[0]} became {now[0]}")
    return out


def check(case: Case, answer: dict[str, Any], out: str, err: str, case_dir: Path) -> None:
    allowed = set(EXIT_CODES.get(case.command, set()))
    if answer["interrupted"]:
        allowed |= {0, 130}
    problems = []
    if "Traceback (most recent call last)" in err:
        problems.append("a traceback on stderr")
    # systemd counts a service ended by the SIGTERM it sent as stopped cleanly: the daemon
    # may be stopped while its interpreter is still starting, before it could install its
    # handlers. What it must not do then is hang or print a traceback.
    stopped = answer["interrupted"] and answer["signal"] == case.interrupt == signal.SIGTERM
    if answer["timed_out"]:
        problems.append(f"still running after {case.timeout:g} s" + (
            " and after being asked to stop" if answer["interrupted"] else ""))
    elif stopped:
        pass
    elif answer["signal"] is not None:
        problems.append(f"killed by signal {answer['signal']}"
                        + (" (file size limit: unbounded output?)"
                           if answer["signal"] == signal.SIGXFSZ else ""))
    elif answer["code"] not in allowed:
        problems.append(f"exit {answer['code']}, not one of {sorted(allowed)} "
                        f"(README.md, exit codes of `{case.command}`)")
    elif answer["code"] == 0 and case.unreadable and not answer["interrupted"]:
        problems.append(f"exit 0 although an input cannot be read ({'; '.join(case.unreadable)})")
    if answer["changed"]:
        problems.append("files changed that were not its to change: "
                        + "; ".join(answer["changed"]))
    if problems:
        at = err.find("Traceback (most recent call last)")
        shown = f"--- stderr from the traceback\n{err[at:at + 4000]}" if at >= 0 else \
            f"--- stderr (end)\n{err[-3000:]}"
        raise AssertionError(
            f"citynode {case.command}: {', '.join(problems)}\n--- reproduction\n"
            f"{case.describe()}\n--- exit {answer['code']} signal {answer['signal']} "
            f"in {answer['elapsed']} s\n{shown}\n--- stdout (start)\n{out[:1000]}")


# -- the tests ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("cli-fuzz"))
    try:
        yield srv
    finally:
        srv.close()


PHASES = tuple(p for p in Phase if SHRINK or p is not Phase.shrink)


@pytest.mark.parametrize("command", NAMES)
def test_every_command_under_hostile_input(command: str, server: Server) -> None:
    """Generated arguments, files and configurations for one command (see the module)."""
    seen: dict[int | None, int] = {}
    said: dict[int | None, str] = {}
    examples = max(3, round(EXAMPLES * SHARE.get(command, 1.0)))

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not RANDOM,
              phases=PHASES, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=cases(command))
    def one(case: Case) -> None:
        answer, out, err, case_dir = server.run(case)
        seen[answer["code"]] = seen.get(answer["code"], 0) + 1
        said.setdefault(answer["code"], (err.strip().splitlines() or [""])[-1][:160])
        try:
            check(case, answer, out, err, case_dir)
        finally:
            shutil.rmtree(case_dir, ignore_errors=True)

    one()
    # How deep the cases went: mostly 64 would mean the arguments rarely parse.
    print(f"citynode {command}: exit codes {dict(sorted(seen.items(), key=str))}")
    for code, line in sorted(said.items(), key=str):
        print(f"    {code}: {line}")


# -- what config check accepts, the daemon accepts ----------------------------------------------
@st.composite
def config_cases(draw: st.DrawFn) -> Case:
    case = Case("config check", [], tame=draw(st.booleans()))
    case.files["default.toml"] = FileSpec("missing")
    path = case.add(FileSpec("bytes", draw(config_text(case))))
    case.argv = ["config", "check", path]
    return case


@settings(max_examples=max(3, EXAMPLES // 2), deadline=None, database=None,
          derandomize=not RANDOM, phases=PHASES, suppress_health_check=list(HealthCheck),
          print_blob=True)
@given(case=config_cases())
def test_what_config_check_accepts_run_and_doctor_accept(case: Case, server: Server) -> None:
    """A configuration ``config check`` passes is not refused as a configuration by ``run
    --once``, by ``doctor`` or by the daemon at start-up (issue 14, items 1 and 8): an
    installer's check must mean something."""
    path = case.argv[-1]
    steps: list[tuple[list[str], int | None]] = [
        (case.argv, None),
        (["run", "--once", "--wait", "0.5", "--config", path], None),
        (["doctor", "--config", path, "--only", "config,disk", "--listen-s", "0.2"], None),
        (["run", "--config", path], signal.SIGTERM),
    ]
    names = ["config check", "run", "doctor", "run"]
    results = server.run_steps(case, steps)
    try:
        for (argv, interrupt), name, (answer, out, err) in zip(steps, names, results,
                                                               strict=True):
            check(Case(name, argv, case.files, interrupt=interrupt), answer, out, err,
                  server.case_dir)
        if results[0][0]["code"] == 0:
            for (argv, interrupt), (answer, _, err) in zip(steps[1:], results[1:],
                                                           strict=True):
                # The daemon, stopped after SETTLE_S, must have been running: it ends 0.
                daemon_failed = interrupt is not None and answer["code"] not in (0, None)
                refused = answer["code"] in (73, 78) or daemon_failed
                assert not refused, (
                    f"config check passed {path} but `citynode {' '.join(argv)}` exit "
                    f"{answer['code']}\n--- reproduction\n{case.describe()}\n"
                    f"--- stderr (end)\n{err[-2000:]}")
    finally:
        shutil.rmtree(server.case_dir, ignore_errors=True)


# -- each FILE option with each kind of special file, in a fresh interpreter ---------------------
def _fresh_cases() -> list[tuple[str, str, str]]:
    """(command, option, kind): every path option of every command with a directory and a
    device node, the first also with a symlink loop, a missing file and ``-`` without any
    standard input, run by ``python -m agent`` itself (the real entry point and imports;
    the fuzz above covers every kind for every option, in forked children)."""
    out = []
    for name in NAMES:
        paths = [a for a in args_of(name)
                 if a.takes_value and is_path(a) and (name, a.dest) not in HINTS]
        for i, arg in enumerate(paths):
            kinds = ("dir", "null") + (("loop", "missing", "stdin-closed") if i == 0 else ())
            out += [(name, arg.flags[0] if arg.flags else "", kind) for kind in kinds]
    return out


FRESH = _fresh_cases()


def _minimal_argv(command: str, option: str, value: str) -> list[str]:
    """The command with ``option`` (or its positional) set to ``value`` and every other
    required argument given a plain value (paths: a new file in the case)."""
    argv = command.split()
    for arg in args_of(command):
        target = (option and option in arg.flags) or (not option and not arg.flags and
                                                      is_path(arg))
        if target:
            argv += [option, value] if option else [value]
        elif (command, arg.dest) in ALWAYS or arg.required or (not arg.flags and
                                                              arg.nargs is None):
            plain = {("provision", "node_id"): "n1", ("provision", "broker"): "127.0.0.1:1",
                     ("frames", "device"): "pms5003", ("calibrate", "bay"): "bay1",
                     ("calibrate", "seconds"): "1", ("doctor", "listen_s"): "0.2",
                     ("simulate", "duration"): "1"}.get((command, arg.dest))
            if plain is None:
                plain = "{CASE}/new-" + arg.dest if is_path(arg) else "x"
            argv += [arg.flags[0], plain] if arg.flags else [plain]
    if command == "provision":
        argv.append("--no-check")
    if command == "run":
        argv += ["--once", "--wait", "1"]
    return argv


@pytest.mark.parametrize(("command", "option", "kind"), FRESH,
                         ids=[f"{c}{' ' + o if o else ''}-{k}" for c, o, k in FRESH])
def test_special_files_in_a_fresh_interpreter(command: str, option: str, kind: str,
                                              tmp_path: Path) -> None:
    """A directory, a symlink loop, a device node, a missing file, and ``-`` with no
    standard input at all, for every path option: one line and a documented code."""
    if kind == "null" and IS_ROOT:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "null":
        (tmp_path / "null").symlink_to("/dev/null")
    elif kind == "dir":
        (tmp_path / "dir").mkdir()
    elif kind == "loop":
        (tmp_path / "loop").symlink_to("loop2")
        (tmp_path / "loop2").symlink_to("loop")
    value = {"dir": "{CASE}/dir", "loop": "{CASE}/loop", "null": "{CASE}/null",
             "missing": "{CASE}/missing", "stdin-closed": "-"}[kind]
    output = any((command, a.dest) in OUTPUTS for a in args_of(command)
                 if option in a.flags or (not option and not a.flags))
    if kind == "stdin-closed" and output:
        pytest.skip("an output option: '-' is not standard input there")
    before = {p.name: _fingerprint(p) for p in tmp_path.iterdir()}
    argv = [a.replace("{CASE}", str(tmp_path)) for a in _minimal_argv(command, option, value)]
    env = {**_environment(tmp_path), "PYTHONPATH": str(ROOT)}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = _fresh(argv, tmp_path, env, stdin_closed=kind == "stdin-closed")
    _kill_leftovers(tmp_path)
    where = f"citynode {' '.join(argv)}".replace(str(tmp_path), "$CASE")
    assert "Traceback" not in proc.stderr, f"{where}\n{proc.stderr[-3000:]}"
    assert proc.returncode in EXIT_CODES[command], \
        f"{where}: exit {proc.returncode}, not in {sorted(EXIT_CODES[command])}\n" \
        f"{proc.stderr[-2000:]}"
    after = {p.name: _fingerprint(p) for p in tmp_path.iterdir() if p.name in before}
    # An output directory may be filled; nothing may become something else.
    special = {n: (before[n], after.get(n)) for n in before if before[n] != after.get(n)
               and not (output and before[n][0] == "dir" == (after.get(n) or ("",))[0])}
    assert not special, f"{where}: changed {special}"


def _fresh(argv: list[str], cwd: Path, env: dict[str, str], *,
           stdin_closed: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m agent ...`` in a fresh interpreter with the suite's memory limit and no
    standard input: /dev/null, or (``stdin_closed``) file descriptor 0 closed, as under a
    service manager or nohup."""
    def preexec() -> None:
        _limit_memory()
        if stdin_closed:
            os.close(0)

    return subprocess.run([sys.executable, "-m", "agent", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S + 30,
                          preexec_fn=preexec,
                          stdin=None if stdin_closed else subprocess.DEVNULL)


# -- input size: memory and output independent of it ----------------------------------------------
STREAMING = [
    ["frames", "pms5003", "{FILE}"], ["frames", "pzem004t", "{FILE}"],
    ["frames", "cse7766", "{FILE}"], ["frames", "a02yyuw", "{FILE}"],
    ["frames", "bme280", "{FILE}"], ["decode", "{FILE}"],
    ["detect", "occupancy", "--input", "{FILE}"], ["detect", "inactivity", "--input", "{FILE}"],
    ["detect", "fall", "--input", "{FILE}"], ["detect", "fire", "--input", "{FILE}"],
    ["detect", "crossings", "--input", "{FILE}"],
    ["config", "check", "--no-devices", "{FILE}"], ["status", "--file", "{FILE}"],
    ["doctor", "--config", "{FILE}", "--only", "config"],
    ["run", "--once", "--wait", "1", "--config", "{FILE}"],
]
SMALL, LARGE = 1 << 20, 8 << 20
#: Smaller inputs for replays that run a model on every row (a few thousand rows a second):
#: time grows with the rows, which is right, but CI has minutes, not hours.
SIZES = {"detect fire": (SMALL // 4, LARGE // 4), "detect fall": (SMALL // 2, LARGE // 2),
         "detect occupancy": (SMALL // 2, LARGE // 2),
         "detect inactivity": (SMALL // 2, LARGE // 2),
         "detect crossings": (SMALL // 2, LARGE // 2)}
#: Time for the larger input (the small one takes an eighth of it).
STREAM_TIMEOUT_S = 60.0
#: Growth of peak memory from the small to the large input beyond which a command is taken
#: to hold its input (8 MiB more input; a streaming reader grows by far less).
GROWTH_KB = 6 * 1024


def _random_input(argv: list[str], size: int) -> bytes:
    """Input that a command of this kind must read to the end: random bytes for decoders,
    well-formed rows for replays (each valid, so none stops the replay early)."""
    if argv[0] == "detect":
        cols = DETECT_COLUMNS[argv[1]]
        rows, t, i = [",".join(cols)], 1.7e9, 0
        size_now = 0
        while size_now < size:
            i += 1
            t += {"fall": 0.02, "crossings": 0.1}.get(argv[1], 30.0)
            fields = {"t": f"{t:.2f}", "bay": "bay1", "plug": "kettle",
                      "distance_mm": str(1500 + i % 7), "watts": str(i % 3),
                      "target": "0", "x_mm": str((i * 130) % 8000 - 4000),
                      "y_mm": str(1500 + i % 7)}
            row = ",".join(fields.get(c, f"{(i % 17) / 10:.2f}") for c in cols)
            rows.append(row)
            size_now += len(row) + 1
        return ("\n".join(rows) + "\n").encode()
    rnd = __import__("random").Random(size)
    return rnd.randbytes(size)


@pytest.mark.parametrize("template", STREAMING, ids=[" ".join(t[:2]) for t in STREAMING])
def test_memory_and_output_do_not_grow_with_the_input(template: list[str],
                                                      server: Server) -> None:
    """Eight times the input (8 MiB instead of 1; less for slow replays): peak memory grows
    by less than GROWTH_KB and the output by less than the input did (rejected bytes
    summarised, never echoed whole)."""
    results = []
    command = max((n for n in NAMES if template[:len(n.split())] == n.split()), key=len)
    small, large = SIZES.get(command, (SMALL, LARGE))
    for size in (small, large):
        case = Case(command, [], timeout=STREAM_TIMEOUT_S)
        name = case.add(FileSpec("bytes", _random_input(template, size)))
        case.argv = [name if w == "{FILE}" else w for w in template]
        case.files["default.toml"] = FileSpec("missing")
        answer, out, err, case_dir = server.run(case)
        out_size = (case_dir / ".stdout").stat().st_size
        try:
            check(case, answer, out, err, case_dir)
        finally:
            shutil.rmtree(case_dir, ignore_errors=True)
        results.append((answer["maxrss_kb"], out_size, answer["elapsed"]))
    (rss1, out1, _), (rss2, out2, _) = results
    print(f"{' '.join(template)}: peak {rss1} -> {rss2} KiB, output {out1} -> {out2} bytes, "
          f"{results[0][2]} -> {results[1][2]} s")
    where = f"citynode {' '.join(template)}"
    assert rss2 - rss1 < GROWTH_KB, (
        f"{where}: peak memory {rss1 // 1024} MiB with {small >> 10} KiB of input, "
        f"{rss2 // 1024} MiB with {large >> 10} KiB: it holds its input (or output) in memory")
    assert out2 - out1 < large - small, (
        f"{where}: output {out1} bytes for {small} bytes of input, {out2} for {large}")
