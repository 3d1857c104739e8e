"""``citynode provision``: give a node its identity and broker credentials, safely.

An installer runs this once per node (docs/provision.md). In order:

1. check the arguments and every input file *before* writing anything: the node id
   pattern, certificates and key parse, the key belongs to the certificate and has no
   passphrase, the CA issued the client certificate, nothing has expired;
2. install CA, certificate, key and credentials into the secrets directory with the
   modes and owners agent/wire/security.py demands (a key or password: 0600, owned by the
   service user; certificates 0644), each atomically, and never over a different
   existing file without ``--force``; only ever over a regular file (a symlink is
   written through to its target, and said so); each ``--fleet-key`` (an Ed25519 public
   key that signs update bundles) goes to ``keys/NAME.pub``, 0644;
3. rewrite only ``[node] id`` and the broker keys of ``[mqtt]`` in the configuration,
   keeping every other section, key and comment; the new text is validated by
   agent.core.config and compared with the old one, table by table, before it atomically
   replaces the file, so a failure leaves the old configuration in place;
4. check the result as the service user with the daemon's own code
   (agent.wire.security.validate_security) and, unless ``--no-check``, connect once to the
   broker exactly as the uplink does and report the CONNACK; then each failover broker
   (a warning, not a failure, when one cannot be reached).

Exit codes (sysexits): 64 usage, 65 bad input data (a key that does not match its
certificate, a CA that did not issue it, an expired certificate), 66 an input file is
missing, 69 broker unavailable, 73 would overwrite existing secrets (use --force) or
a target is not a regular file (a device such as /dev/null, a FIFO, a socket, a directory,
a symlink leading to one, or a secret's symlink leading out of the secrets directory),
77 permission (not allowed to write or chown; the broker refused the credentials),
78 the resulting configuration is invalid.
"""

from __future__ import annotations

import argparse
import calendar
import errno
import grp
import json
import logging
import os
import pwd
import re
import ssl
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.files import NotRegularFile, kind_of, resolve_target, write_atomic

EX_OK, EX_USAGE, EX_DATAERR, EX_NOINPUT = 0, 64, 65, 66
EX_UNAVAILABLE, EX_CANTCREAT, EX_NOPERM, EX_CONFIG = 69, 73, 77, 78

SERVICE = "citynode"  # User= and Group= in deploy/citynode.service
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # as agent.core.config.NodeId
#: [mqtt] keys this command owns; every other key of the section is kept as it was.
#: ``failover`` is owned only when --failover is given (else a list there is kept).
MANAGED = ("host", "port", "tls", "ca_file", "cert_file", "key_file", "server_name",
           "credentials_file")
EXPIRY_WARN_DAYS = 30
MAX_INPUT_BYTES = 1 << 20  # a PEM file; the Debian CA bundle is about 220 KB
MAX_PASSWORD_BYTES = 4096
MAX_CONFIG_BYTES = 1 << 20  # a configuration is a few KB


class Fail(Exception):
    """One line for the installer and the exit code that goes with it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Owner:
    user: str
    group: str
    uid: int
    gid: int


@dataclass
class Plan:
    """What will be written, worked out and checked before anything is."""

    node_id: str
    host: str
    port: int
    tls: bool
    server_name: str = ""
    #: destination -> (contents, mode, private: owned by the service user)
    files: dict[str, tuple[bytes, int, bool]] = field(default_factory=dict)
    mqtt: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- arguments ------------------------------------------------------------------------------
def parse_broker(text: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [V6]:PORT; the port is None when not given."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\[\]\s]+)(?::(\d+))?", text.strip())
    if not m:
        raise Fail(EX_USAGE, f"--broker {text!r}: expected HOST or HOST:PORT ([IPV6]:PORT)")
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    if port is not None and not 1 <= int(port) <= 65535:
        raise Fail(EX_USAGE, f"--broker {text!r}: port must be 1..65535")
    return host, int(port) if port else None


def resolve_owner(spec: str | None) -> Owner:
    """USER:GROUP; default the service user (if it exists), else whoever runs this."""
    if spec is None:
        try:
            pw = pwd.getpwnam(SERVICE)
        except KeyError:
            pw = pwd.getpwuid(os.geteuid())
        try:
            gr = grp.getgrnam(SERVICE) if pw.pw_name == SERVICE else grp.getgrgid(pw.pw_gid)
        except KeyError:
            gr = grp.getgrgid(pw.pw_gid)
        return Owner(pw.pw_name, gr.gr_name, pw.pw_uid, gr.gr_gid)
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
    except KeyError:
        raise Fail(EX_USAGE, f"--owner: no user {user!r} on this machine "
                   "(create it first, e.g. by installing the package)") from None
    try:
        gr = (grp.getgrgid(pw.pw_gid) if not group else
              grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group))
    except KeyError:
        raise Fail(EX_USAGE, f"--owner: no group {group!r} on this machine") from None
    return Owner(pw.pw_name, gr.gr_name, pw.pw_uid, gr.gr_gid)


def _read_input(path: str, what: str, *, limit: int = MAX_INPUT_BYTES,
                regular: bool = True) -> bytes:
    """At most ``limit`` bytes of an input (more is refused: /dev/zero must not fill the
    memory). ``regular``: refuse anything but a regular file (certificates and keys are read
    again by OpenSSL, which a pipe cannot serve twice). Opening never blocks: a FIFO
    without a writer reads as empty."""
    if path == "-":
        if regular:
            raise Fail(EX_USAGE, f"{what} -: give a file (certificates and keys are read more "
                       "than once, standard input only once)")
        return sys.stdin.buffer.read(limit + 1)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if regular and not stat.S_ISREG(st.st_mode):
                raise Fail(EX_NOINPUT, f"{what} {path}: is {kind_of(st.st_mode)}, not a "
                           "regular file (certificates and keys are read more than once: "
                           "give a file)")
            os.set_blocking(fd, True)  # a pipe's writer may not have written yet
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise Fail(EX_NOINPUT, f"{what} {path}: no such file") from None
    except PermissionError:
        raise Fail(EX_NOPERM, f"{what} {path}: permission denied (run with sudo?)") from None
    except OSError as exc:
        raise Fail(EX_NOINPUT, f"{what} {path}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise Fail(EX_DATAERR, f"{what} {path}: larger than {limit} bytes, not a "
                   f"{'password' if limit == MAX_PASSWORD_BYTES else 'PEM file'}")
    return data


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:  # a pipe is fine: --password-file <(pass show node-7), or -
        raw = _read_input(args.password_file, "--password-file", limit=MAX_PASSWORD_BYTES,
                          regular=False)
    else:
        raw = sys.stdin.buffer.read(MAX_PASSWORD_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Fail(EX_DATAERR, "password: not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")  # what echo and editors append
    if not text:
        raise Fail(EX_DATAERR, "password: empty")
    if len(text) > 256 or "\x00" in text or "\n" in text:
        raise Fail(EX_DATAERR, "password: must be one line of at most 256 characters")
    return text


# -- certificates ---------------------------------------------------------------------------
def _openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=20)
    except FileNotFoundError:
        raise Fail(EX_UNAVAILABLE, "the openssl command is needed to check certificates "
                   "(apt-get install openssl)") from None


def _date(path: str, what: str, which: str) -> float:
    """notAfter or notBefore of the first certificate in ``path``, as a Unix time."""
    flag = "-enddate" if which == "notAfter" else "-startdate"
    res = _openssl("x509", "-in", path, "-noout", flag)
    text = res.stdout.decode(errors="replace").strip().removeprefix(f"{which}=")
    try:
        return calendar.timegm(time.strptime(text, "%b %d %H:%M:%S %Y %Z"))
    except ValueError:
        raise Fail(EX_DATAERR, f"{what} {path}: openssl cannot read its {which} date "
                   "(not a PEM certificate?)") from None


def _not_after(path: str, what: str = "certificate") -> float:
    return _date(path, what, "notAfter")


def _not_before(path: str, what: str = "certificate") -> float:
    return _date(path, what, "notBefore")


def _subject(path: str) -> str:
    res = _openssl("x509", "-in", path, "-noout", "-subject", "-nameopt", "oneline")
    return res.stdout.decode().strip().removeprefix("subject=").strip()


def check_dates(path: str, what: str, notes: list[str], now: float | None = None) -> None:
    """Expired: refuse. Not yet valid or expiring soon: say so (the clock may be wrong)."""
    now = time.time() if now is None else now
    end, start = _not_after(path, what), _not_before(path, what)
    day = time.strftime("%Y-%m-%d", time.gmtime(end))
    if end < now:
        raise Fail(EX_DATAERR, f"{what} {path}: expired on {day} (if that is wrong, check "
                   "this machine's clock: timedatectl)")
    if start > now:
        notes.append(f"warning: {what} {path} is not valid before "
                     f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(start))} UTC; the node "
                     "cannot connect until then (or its clock is wrong: timedatectl)")
    elif end - now < EXPIRY_WARN_DAYS * 86400:
        notes.append(f"warning: {what} {path} expires on {day}, in "
                     f"{int((end - now) // 86400)} days")


def check_ca(path: str) -> None:
    """The daemon loads it with load_verify_locations: do the same, and refuse keys."""
    what = "--ca"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise Fail(EX_DATAERR, f"{what} {path}: holds no PEM certificate ({exc}); use the "
                   "broker's CA certificate in PEM form (-----BEGIN CERTIFICATE-----)") from None
    if not ctx.get_ca_certs():
        raise Fail(EX_DATAERR, f"{what} {path}: holds no CA certificate (basicConstraints "
                   "CA:TRUE); is it the node's own certificate?")


def check_cert_and_key(cert: str, key: str) -> None:
    """Parse both and match them with the same OpenSSL call the daemon makes."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError):
        raise Fail(EX_DATAERR, f"--cert {cert}: holds no PEM certificate") from None
    encrypted = []

    def passphrase() -> str:
        encrypted.append(True)
        raise ValueError("encrypted")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(cert, key, password=passphrase)
    except (ssl.SSLError, OSError, ValueError) as exc:
        if encrypted:
            raise Fail(EX_DATAERR, f"--key {key}: is encrypted with a passphrase, which a "
                       "daemon cannot type; store it unencrypted (openssl pkey -in "
                       "ENCRYPTED.key -out node.key), it will be protected by mode 0600") from None
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise Fail(EX_DATAERR, f"--key {key}: does not belong to the certificate {cert} "
                       "(use the key the certificate was issued for)") from None
        raise Fail(EX_DATAERR, f"--key {key}: is not a usable PEM private key ({exc})") from None


def check_issued_by(cert: str, ca: str) -> None:
    """The broker will check this too; finding out now names the file at fault."""
    res = _openssl("verify", "-no_check_time", "-CAfile", ca, cert)
    if res.returncode != 0:
        why = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()
        detail = next((ln for ln in why if "error" in ln), why[-1] if why else "")
        raise Fail(EX_DATAERR, f"--cert {cert}: was not issued by the CA in {ca} "
                   f"({detail.split(': ', 1)[-1] if detail else 'openssl verify failed'}); "
                   "the broker would refuse it: use the CA bundle that signed it")


# -- files ----------------------------------------------------------------------------------
def _toml_str(s: str) -> str:
    """A TOML basic string. Not json.dumps: JSON writes a character beyond U+FFFF as a
    surrogate pair, which TOML refuses (an emoji in a password broke the credentials file)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # control characters must be escaped
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_str(str(v))


def _open_brackets(line: str) -> int:
    """How many ``[`` a TOML line leaves open (outside strings and comments): a value
    that goes on on the next lines (a multi-line array)."""
    depth, quote, i = 0, "", 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        i += 1
    return depth


def credentials_toml(username: str, password: str) -> bytes:
    text = ("# MQTT credentials for citynode (docs/security.md); mode 0600, service user only\n"
            f"username = {_toml_str(username)}\npassword = {_toml_str(password)}\n")
    assert tomllib.loads(text) == {"username": username, "password": password}
    return text.encode()


# -- the configuration ----------------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*#?\s*([A-Za-z0-9_-]+)\s*=")


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(table name, first line, end) for each table; '' is the part before the first one.
    Lines inside multi-line strings are never taken for headers."""
    out: list[tuple[str, int, int]] = []
    name, start, in_str = "", 0, None
    for i, line in enumerate(lines):
        if in_str is None:
            m = _HEADER.match(line)
            if m:
                out.append((name, start, i))
                name, start = m.group(1).replace('"', "").replace("'", "").strip(), i
        for q in ('"""', "'''"):
            n = line.count(q)
            if n % 2 and (in_str is None or in_str == q):
                in_str = None if in_str == q else q
    out.append((name, start, len(lines)))
    return out


def managed_keys(mqtt: dict[str, Any]) -> tuple[str, ...]:
    """The [mqtt] keys a rewrite replaces: :data:`MANAGED`, and ``failover`` when given."""
    return MANAGED + (("failover",) if "failover" in mqtt else ())


def update_config(text: str, node_id: str, mqtt: dict[str, Any]) -> str:
    """Set [node] id and the managed [mqtt] keys; every other line stays as it was."""
    lines = text.splitlines()
    secs = _sections(lines)
    names = [s[0] for s in secs]
    for s in ("node", "mqtt"):
        if names.count(s) > 1:
            raise Fail(EX_CONFIG, f"[{s}] appears twice in the configuration")
    block = ["# Written by citynode provision (docs/provision.md)",
             *(f"{k} = {_toml_value(v)}" for k, v in mqtt.items())]
    new_mqtt = ["[mqtt]", *block, ""]
    managed = managed_keys(mqtt)
    if "mqtt" in names:
        _, a, b = secs[names.index("mqtt")]
        new_mqtt, at, depth = [lines[a]], None, 0
        for line in lines[a + 1:b]:
            if depth > 0:  # the rest of a multi-line value of ours
                depth += _open_brackets(line)
                continue
            m = _KEY.match(line)
            if m and m.group(1) in managed:
                # Ours go where the first of them was; commented-out examples of ours go
                # too, since they would contradict what is now set.
                at = len(new_mqtt) if at is None else at
                if not line.lstrip().startswith("#"):
                    depth = _open_brackets(line.split("=", 1)[1])
                continue
            new_mqtt.append(line)
        if at is None:
            while len(new_mqtt) > 1 and not new_mqtt[-1].strip():
                new_mqtt.pop()
            new_mqtt += [*block, ""]
        else:
            new_mqtt[at:at] = block
        _, a, b = secs[names.index("mqtt")]
        lines[a:b] = new_mqtt
    else:
        node_end = secs[names.index("node")][2] if "node" in names else 0
        lines[node_end:node_end] = [*([""] if node_end and lines[node_end - 1].strip() else []),
                                    *new_mqtt]
    secs = _sections(lines)
    names = [s[0] for s in secs]
    if "node" in names:
        _, a, b = secs[names.index("node")]
        for i in range(a + 1, b):
            m = re.match(r"^(\s*id\s*=\s*)(\"(?:[^\"\\]|\\.)*\"|'[^']*')(.*)$", lines[i])
            if m:
                lines[i] = f"{m.group(1)}{_toml_str(node_id)}{m.group(3)}"
                break
            if re.match(r"^\s*id\s*=", lines[i]):
                raise Fail(EX_CONFIG, f"[node] id on line {i + 1}: cannot be rewritten safely")
        else:
            lines.insert(a + 1, f"id = {_toml_str(node_id)}")
    else:
        lines[0:0] = ["[node]", f"id = {_toml_str(node_id)}", ""]
    return "\n".join(lines) + "\n"


def new_config(node_id: str, mqtt: dict[str, Any]) -> str:
    """A fresh configuration: identity and broker; sensors are added on site."""
    return update_config(
        "# citynode configuration (every key: README.md, \"Configuration reference\";\n"
        "# an annotated example: deploy/citynode.toml). Check it: citynode config check\n"
        "\n[node]\nstate_dir = \"\"\n\n"
        "# Sensors: one [[sensor]] table each; every device's README (drivers/<device>/\n"
        "# README.md, listed in docs/drivers.md) has its sample table, e.g.\n"
        + _sensor_example() + "\n[mqtt]\n", node_id, mqtt)


def _sensor_example() -> str:
    """The first catalogued device's sample table, commented out."""
    from drivers import catalogue
    from drivers.readme import ReadmeError, sample_text

    try:
        text = sample_text(next(iter(catalogue.specs().values())))
    except (OSError, ReadmeError):  # a README not shipped: the pointer above must do
        return ""
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())


def verify_rewrite(old: str, new: str, node_id: str, mqtt: dict[str, Any]) -> None:
    """The rewrite changed exactly what it should: refuse to write anything else."""
    try:
        before, after = tomllib.loads(old), tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise Fail(EX_CONFIG, f"the updated configuration would not be valid TOML ({exc}); "
                   "nothing was written: edit [node] and [mqtt] by hand") from None
    managed = managed_keys(mqtt)
    want_mqtt = {k: v for k, v in before.get("mqtt", {}).items() if k not in managed}
    want_mqtt.update(mqtt)
    want = {**before, "node": {**before.get("node", {}), "id": node_id}, "mqtt": want_mqtt}
    if after != want:
        raise Fail(EX_CONFIG, "cannot update the configuration safely (unusual layout, e.g. "
                   "dotted keys or inline tables for [node] or [mqtt]); nothing was written: "
                   "edit them by hand")


# -- the checks the daemon would make, as the daemon's user ---------------------------------
def _connect_once(m: Any, client_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """One connection with the uplink's client settings and security.apply()."""
    from agent.wire.mqtt import handshake

    try:
        answer = handshake(m, client_id, timeout)
    except (OSError, ValueError) as exc:
        return {"ok": False, "exit": EX_UNAVAILABLE,
                "error": f"cannot connect to {m.host}:{m.port}: {exc}"}
    name, code = answer.version, answer.code
    if code == 0:
        return {"ok": True, "connack": answer.text, "protocol": name}
    if code is None:
        why = answer.error or "the connection closed before CONNACK"
        return {"ok": False, "exit": EX_UNAVAILABLE,
                "error": f"{m.host}:{m.port}: no CONNACK ({why}); see docs/security.md, "
                "section 7, and the broker's log"}
    refused = code in (4, 5, 134, 135)  # bad user name or password, not authorised
    return {"ok": False, "exit": EX_NOPERM if refused else EX_UNAVAILABLE,
            "connack": answer.text, "protocol": name,
            "error": f"{m.host}:{m.port} refused the connection: CONNACK {answer.text} "
            "(MQTT " + name + ")"}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def verify(config_path: str, connect: bool) -> dict[str, Any]:
    """Load the configuration, validate its secrets, optionally connect; never raises."""
    from agent.core.config import ConfigError, load
    from agent.wire.mqtt import tool_client_id
    from agent.wire.security import SecurityError, validate_security

    sec_log = logging.getLogger("citynode.security")
    collect = _Collect()
    sec_log.addHandler(collect)  # the daemon's warnings (clear-text password...) as notes
    propagate, sec_log.propagate = sec_log.propagate, False
    try:
        cfg = load(config_path, check_devices=False)
        validate_security(cfg.mqtt, config_path=config_path)  # errors name the line
    except (ConfigError, SecurityError) as exc:
        return {"ok": False, "exit": EX_CONFIG, "error": str(exc)}
    finally:
        sec_log.removeHandler(collect)
        sec_log.propagate = propagate
    warnings = [f"warning: {line}" for line in collect.lines]
    if not connect:
        return {"ok": True, "warnings": warnings}
    import msgspec

    m = cfg.mqtt
    client_id = tool_client_id(m, cfg.node.id, "provision")
    try:
        result = {**_connect_once(m, client_id), "warnings": warnings}
        if result["ok"]:
            result["failover"] = [
                {"broker": f"[{h}]:{pt}" if ":" in h else f"{h}:{pt}",
                 **_connect_once(msgspec.structs.replace(m, host=h, port=pt), client_id)}
                for h, pt in m.brokers()[1:]]
        return result
    except SecurityError as exc:
        return {"ok": False, "exit": EX_CONFIG, "error": str(exc)}


def verify_as(owner: Owner, config_path: str, connect: bool) -> dict[str, Any]:
    """As root, check in a child running as the service user: root could read a key the
    service cannot, and agent.wire.security rightly refuses a key root does not own."""
    if os.geteuid() != 0 or owner.uid == 0:
        return verify(config_path, connect)
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = ("import json, sys; from agent.tools.provision import verify; "
            "print(json.dumps(verify(sys.argv[1], sys.argv[2] == '1')))")
    try:
        res = subprocess.run([sys.executable, "-c", code, config_path, "1" if connect else "0"],
                             user=owner.uid, group=owner.gid, extra_groups=[], cwd="/",
                             env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"ok": False, "exit": EX_NOPERM, "error": f"cannot run the check as user "
                f"{owner.user} ({exc})"}
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"ok": False, "exit": EX_CONFIG, "error": f"check as user {owner.user} "
                f"failed: {res.stderr.strip()[-300:]}"}


# -- the command ----------------------------------------------------------------------------
def plan(args: argparse.Namespace, secrets: Path) -> Plan:
    """Validate everything and decide what to write; raises Fail, writes nothing."""
    if not args.node_id or not NODE_ID.fullmatch(args.node_id):
        raise Fail(EX_USAGE, f"--node-id {args.node_id!r}: must be 1-64 letters, digits, '-' "
                   "or '_', starting with a letter or digit (it becomes part of MQTT topics)")
    if bool(args.cert) != bool(args.key):
        raise Fail(EX_USAGE, "--cert and --key go together (a client certificate needs both)")
    if args.password_file and args.password_stdin:
        raise Fail(EX_USAGE, "--password-file or --password-stdin, not both")
    has_password = bool(args.password_file or args.password_stdin)
    if args.username and not has_password:
        raise Fail(EX_USAGE, "--username needs --password-file FILE or --password-stdin")
    if args.server_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:.]+",
                                             args.server_name):
        raise Fail(EX_USAGE, f"--server-name {args.server_name!r}: not a host name")
    host, port = parse_broker(args.broker)
    wants_tls = bool(args.ca or args.cert or args.server_name)
    if args.tls is False and wants_tls:
        raise Fail(EX_USAGE, "--ca, --cert/--key and --server-name need TLS: drop --no-tls")
    tls = args.tls if args.tls is not None else (wants_tls or port == 8883)
    port = port or (8883 if tls else 1883)
    p = Plan(args.node_id, host, port, tls, args.server_name or "")
    p.mqtt = {"host": host, "port": port, "tls": tls}
    if getattr(args, "failover", None):
        p.mqtt["failover"] = failover_list(args.failover, host, port)
    tls_dir = secrets / "tls"
    if args.ca:
        ca = _read_input(args.ca, "--ca")
        check_ca(args.ca)
        p.files[str(tls_dir / "ca.crt")] = (ca, 0o644, False)
        p.mqtt["ca_file"] = str(tls_dir / "ca.crt")
    if args.cert:
        cert, key = _read_input(args.cert, "--cert"), _read_input(args.key, "--key")
        check_cert_and_key(args.cert, args.key)
        if args.ca:
            check_issued_by(args.cert, args.ca)
        check_dates(args.cert, "--cert", p.notes)
        cn = _subject(args.cert)
        if f"CN = {args.node_id}" not in cn:
            p.notes.append(f"note: the certificate's subject is '{cn}', not CN = "
                           f"{args.node_id}; with use_identity_as_username the broker's ACL "
                           "sees that name, not the node id")
        p.files[str(tls_dir / "node.crt")] = (cert, 0o644, False)
        p.files[str(tls_dir / "node.key")] = (key, 0o600, True)
        p.mqtt["cert_file"] = str(tls_dir / "node.crt")
        p.mqtt["key_file"] = str(tls_dir / "node.key")
    if args.ca:
        check_dates(args.ca, "--ca", p.notes)
    if p.server_name:
        p.mqtt["server_name"] = p.server_name
    if has_password:
        username = args.username or args.node_id
        if len(username) > 256 or not username.isprintable():
            raise Fail(EX_DATAERR, "--username: at most 256 printable characters")
        cred = secrets / "mqtt-credentials.toml"
        p.files[str(cred)] = (credentials_toml(username, _read_password(args)), 0o600, True)
        p.mqtt["credentials_file"] = str(cred)
    for src in getattr(args, "fleet_key", None) or []:
        name, pem, fp = fleet_key(src)
        dest = str(secrets / "keys" / name)
        if dest in p.files:
            raise Fail(EX_USAGE, f"--fleet-key {src}: a second key named {name}; rename one")
        p.files[dest] = (pem, 0o644, False)
        p.notes.append(f"note: fleet key {name} pinned (ed25519 {fp}): updates signed with "
                       "it are accepted")
    return p


def failover_list(texts: list[str], host: str, port: int) -> list[str]:
    """--failover values, checked as the configuration checks ``[mqtt] failover``."""
    from agent.core.config import MAX_FAILOVER, parse_broker

    if len(texts) > MAX_FAILOVER:
        raise Fail(EX_USAGE, f"--failover: at most {MAX_FAILOVER} brokers")
    seen = {(host.lower(), port)}
    for text in texts:
        try:
            h, pt = parse_broker(text, port)
        except ValueError as exc:
            raise Fail(EX_USAGE, f"--failover {text!r}: {exc}") from None
        if (h.lower(), pt) in seen:
            raise Fail(EX_USAGE, f"--failover {text!r}: {h}:{pt} is already named "
                       "(--broker or another --failover)")
        seen.add((h.lower(), pt))
    return list(texts)


FLEET_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def fleet_key(src: str) -> tuple[str, bytes, str]:
    """A fleet's public key to pin (docs/updates.md): its file name on the node
    (``<name>.pub``, from the given file's name), its PEM and its fingerprint."""
    base = Path(src).name
    stem = base.removesuffix(".pub")
    if not FLEET_KEY_NAME.fullmatch(stem):
        raise Fail(EX_USAGE, f"--fleet-key {src}: name the file NAME.pub with letters, "
                   "digits, '.', '_' or '-' (the name it gets in <secrets-dir>/keys/)")
    data = _read_input(src, "--fleet-key", limit=8192)
    from cryptography.hazmat.primitives import serialization

    from agent.update.bundle import BundleError, fingerprint, load_public_key

    try:
        key = load_public_key(data, f"--fleet-key {src}")
    except BundleError as exc:
        raise Fail(EX_DATAERR, f"{exc} (citynode keys generate writes NAME.pub)") from None
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"{stem}.pub", pem, fingerprint(key)


@dataclass
class Target:
    """A file provision will write: the path as named and the file the write replaces."""

    path: Path
    real: Path  # a regular file or missing; through a symlink, its final target
    link: bool  # ``path`` itself is a symlink (written through, and said so)

    def __str__(self) -> str:
        return f"{self.real} through the symlink {self.path}" if self.link else str(self.path)


def target(path: Path, what: str) -> Target:
    """Check, before anything is written, that ``path`` may be replaced: a regular file, or
    missing in a folder that exists or can be made; through a symlink, the same of its
    target, whose folder must exist. Anything else (a device such as /dev/null, a FIFO, a
    socket, a directory) is refused: the rename would put a file in its place."""
    lead = f"{what} {path}" if what else str(path)
    try:
        real = resolve_target(path)
    except NotRegularFile as exc:
        via = (f"is a symlink to {os.path.realpath(path)}, which "
               if os.path.islink(path) else "")
        raise Fail(EX_CANTCREAT, f"{lead}: {via}{exc.strerror}; nothing was written (name "
                   "a regular file)") from None
    except PermissionError:
        raise Fail(EX_NOPERM, f"{lead}: permission denied (run with sudo)") from None
    except OSError as exc:  # a symlink loop; a component that is a file
        raise Fail(EX_CANTCREAT, f"{lead}: cannot be written: {exc.strerror}; nothing was "
                   "written") from None
    link = os.path.islink(path)
    if link and not real.parent.is_dir():
        raise Fail(EX_CANTCREAT, f"{lead}: is a symlink to {real}, whose folder does not "
                   "exist; nothing was written")
    for up in real.parents:  # the nearest existing folder; missing ones are created
        if up.exists():
            if not up.is_dir():
                raise Fail(EX_CANTCREAT, f"{lead}: {up} is not a directory; nothing was "
                           "written")
            break
    return Target(path, real, link)


def secret_target(dest: Path, secrets: Path) -> Target:
    """A secret's destination; a symlink may only lead to a file inside the secrets
    directory (a link to /etc/shadow must not turn it into a key owned by the service)."""
    t = target(dest, "")
    inside = Path(os.path.realpath(secrets))
    if t.link and not t.real.is_relative_to(inside):
        raise Fail(EX_CANTCREAT, f"{dest}: is a symlink to {t.real}, outside {secrets}; "
                   "refusing to write a secret through it (remove the link); nothing was "
                   "written")
    return t


def _read_regular(path: Path, limit: int) -> bytes | None:
    """Contents of a regular file (None if missing), at most ``limit`` bytes plus one;
    never blocks on a FIFO swapped in since :func:`target` looked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EEXIST, f"is {kind_of(st.st_mode)}, not a regular file",
                                 str(path))
        return fh.read(limit + 1)


def _existing_differs(dest: Path, data: bytes) -> bool:
    try:
        old = _read_regular(dest, len(data))
    except OSError:
        return True
    return old is not None and old != data


def _mode_owner(owner: Owner, private: bool) -> tuple[int, int]:
    """Private files belong to the service user; public ones to root (or whoever runs this)."""
    if private:
        return owner.uid, owner.gid
    return os.geteuid(), os.getegid()


def _read_config(cfg: Target) -> str | None:
    """The existing configuration's text, None if there is none; refuses what cannot be one."""
    try:
        raw = _read_regular(cfg.real, MAX_CONFIG_BYTES)
    except PermissionError:
        raise Fail(EX_NOPERM, f"{cfg.path}: permission denied (run with sudo)") from None
    except OSError as exc:
        raise Fail(EX_CANTCREAT, f"--config {cfg.path}: cannot read: {exc.strerror}; nothing "
                   "was written") from None
    if raw is None:
        return None
    if len(raw) > MAX_CONFIG_BYTES:
        raise Fail(EX_CONFIG, f"{cfg.path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, not a "
                   "citynode configuration; nothing was written")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Fail(EX_CONFIG, f"{cfg.path}: is not UTF-8 text (byte {exc.start}); fix it "
                   "first or move it away; nothing was written") from None


def provision(args: argparse.Namespace, out: Any = None) -> int:
    out = out or sys.stdout
    secrets = Path(args.secrets_dir).absolute()  # the daemon runs in /: no relative paths
    owner = resolve_owner(args.owner)
    p = plan(args, secrets)
    if os.geteuid() != 0 and owner.uid != os.geteuid():
        raise Fail(EX_NOPERM, f"files must belong to {owner.user}, and only root can give "
                   "them away: run with sudo (or --owner yourself for a test)")
    cfg_path = Path(args.config)
    cfg = target(cfg_path, "--config")
    dests = {d: secret_target(Path(d), secrets) for d in p.files}
    for d, t in dests.items():
        if t.real == cfg.real:
            raise Fail(EX_USAGE, f"--config {cfg_path} is where {d} goes: name another "
                       "configuration or --secrets-dir")
    clash = [d for d, (data, _, _) in p.files.items() if _existing_differs(dests[d].real, data)]
    if clash and not args.force:
        raise Fail(EX_CANTCREAT, f"{clash[0]} exists with other contents; refusing to replace "
                   "a node's secrets (use --force to replace them)")
    old = _read_config(cfg)
    if old is not None:
        try:
            tomllib.loads(old)
        except tomllib.TOMLDecodeError as exc:
            raise Fail(EX_CONFIG, f"{cfg_path}: is not valid TOML ({exc}); fix it first "
                       "(citynode config check) or move it away") from None
        text = update_config(old, p.node_id, p.mqtt)
        verify_rewrite(old, text, p.node_id, p.mqtt)
    else:
        text = new_config(p.node_id, p.mqtt)
    from agent.core.config import ConfigError, parse

    try:
        parse(text, str(cfg_path), check_devices=False)
    except ConfigError as exc:
        raise Fail(EX_CONFIG, f"the updated configuration would be invalid, nothing was "
                   f"written: {exc}") from None

    print(f"citynode provision: node {p.node_id}, broker {p.host}:{p.port} "
          f"({'TLS' if p.tls else 'no TLS'}"
          + (", client certificate" if "cert_file" in p.mqtt else "")
          + (", user name and password" if "credentials_file" in p.mqtt else "") + ")", file=out)
    try:
        for dest, (data, mode, private) in p.files.items():
            t = dests[dest]
            if not t.real.parent.exists():
                t.real.parent.mkdir(mode=0o755, parents=True)
                os.chmod(t.real.parent, 0o755)
            uid, gid = _mode_owner(owner, private)
            # Identical contents too: modes and owners. Set before the rename, so a secret is
            # never readable by others meanwhile.
            write_atomic(t.real, data, mode=mode, owner=(uid, gid))
            print(f"  installed {t} (mode {mode:04o}, {pwd.getpwuid(uid).pw_name}:"
                  f"{grp.getgrgid(gid).gr_name})", file=out)
        cfg.real.parent.mkdir(parents=True, exist_ok=True)
        st = cfg.real.stat() if old is not None else None
        write_atomic(cfg.real, text, mode=st.st_mode & 0o7777 if st else 0o644,
                     owner=(st.st_uid, st.st_gid) if st else None)
    except PermissionError as exc:
        raise Fail(EX_NOPERM, f"{exc.filename}: permission denied (run with sudo)") from None
    except OSError as exc:
        raise Fail(EX_CANTCREAT, f"{exc.filename or ''}: cannot write: {exc.strerror}") from None
    print(f"  {'updated' if old is not None else 'created'} {cfg}: [node] id, [mqtt]"
          + (" (other sections unchanged)" if old is not None else ""), file=out)

    result = verify_as(owner, str(cfg_path), connect=not args.no_check)
    if not result["ok"]:
        raise Fail(result["exit"], result["error"] + " (the files above were written; fix "
                   "this and re-run with --force, or check with: citynode doctor)")
    print(f"  config check as user {owner.user}: OK", file=out)
    if args.no_check:
        print("  broker: not contacted (--no-check)", file=out)
    else:
        print(f"  broker {p.host}:{p.port}: CONNACK {result['connack']} "
              f"(MQTT {result['protocol']})", file=out)
        for fo in result.get("failover", []):
            if fo["ok"]:
                print(f"  failover broker {fo['broker']}: CONNACK {fo['connack']} "
                      f"(MQTT {fo['protocol']})", file=out)
            else:  # the node works on its primary: a warning, not a failure
                p.notes.append(f"warning: failover broker {fo['broker']}: {fo['error']}; the "
                               "node cannot move there while this lasts (citynode doctor "
                               "checks it again)")
    for note in p.notes + result.get("warnings", []):
        print(f"  {note}", file=out)
    print("Next:\n"
          "  citynode doctor                    # sensors, devices, clock, broker: on site\n"
          "  sudo systemctl enable --now citynode\n"
          "  journalctl -u citynode -f          # then: citynode status", file=out)
    return EX_OK


def cmd_provision(args: argparse.Namespace) -> int:
    try:
        return provision(args)
    except Fail as exc:
        print(f"citynode provision: error: {exc}", file=sys.stderr)
        return exc.code


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:
    p = sub.add_parser("provision", help="write this node's identity and broker credentials "
                       "(installers; see docs/provision.md)")
    p.add_argument("--node-id", required=True, help="unique node id, e.g. seoul-jongno-0001")
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]",
                   help="the MQTT broker; port default 8883 with TLS, else 1883")
    p.add_argument("--failover", action="append", metavar="HOST[:PORT]",
                   help="another broker of the same cluster, tried in order when --broker "
                   "fails (same TLS and credentials; port default --broker's); repeat for "
                   "several; replaces [mqtt] failover (kept as it is when not given)")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=None,
                   help="TLS with broker verification (default: on with --ca, --cert or "
                   "port 8883)")
    p.add_argument("--ca", metavar="FILE", help="CA certificate(s) of the broker (PEM); "
                   "default with TLS: the system's CAs")
    p.add_argument("--cert", metavar="FILE", help="this node's client certificate (PEM)")
    p.add_argument("--key", metavar="FILE", help="its private key (PEM, unencrypted)")
    p.add_argument("--username", help="MQTT user name (default: the node id)")
    p.add_argument("--password-file", metavar="FILE",
                   help="read the MQTT password from FILE ('-': standard input)")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the MQTT password from standard input")
    p.add_argument("--server-name", help="name in the broker's certificate, when --broker is "
                   "an IP address or an alias")
    p.add_argument("--config", "-c", default=default_cfg,
                   help=f"configuration to create or update (default {default_cfg})")
    p.add_argument("--secrets-dir", default="/etc/citynode",
                   help="where certificates, key and credentials go (default /etc/citynode)")
    p.add_argument("--owner", metavar="USER:GROUP", help="owner of the key and credentials "
                   f"(default: {SERVICE}:{SERVICE} if that user exists, else you)")
    p.add_argument("--fleet-key", action="append", metavar="FILE",
                   help="pin a fleet public key (NAME.pub, citynode keys generate) in "
                   "<secrets-dir>/keys/: the node installs updates signed with it; repeat "
                   "for several")
    p.add_argument("--no-check", action="store_true",
                   help="do not connect to the broker (offline bench)")
    p.add_argument("--force", action="store_true",
                   help="replace existing secrets that differ")
    p.set_defaults(func=cmd_provision)
