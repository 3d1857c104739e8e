"""Downlink commands: strict, rate-limited, optionally signed, and sans-I/O.

The uplink hands :meth:`CommandProcessor.handle` the bytes of a message from
``<prefix>/<node>/command`` with its MQTT 5 correlation data and response topic;
it returns a :class:`CommandResult`, which the daemon publishes as SenML records
(:meth:`CommandResult.records`) to the response topic or ``<prefix>/<node>/result``.
What a command may do is the small :class:`NodeControl` protocol the daemon
implements: nothing here runs a program, opens a socket or reads a file named by
a command. docs/commands.md is the reference for platform engineers.

Wire format: one JSON object (UTF-8, first byte ``{``) or the same object as
CBOR (first byte anything else)::

    {"id": "c-123", "cmd": "ping", "args": {},
     "ts": 1763900000, "nonce": "k3J9x0Qa", "sig": "<64 hex digits>"}

* ``id``: 1-64 of ``A-Z a-z 0-9 . _ : -``, echoed in the result (on MQTT 3.1.1
  the only correlation); ``cmd``: a registered command; ``args``: an object
  checked against the command's schema (unknown arguments refused; optional);
* ``ts`` (integer Unix seconds), ``nonce`` (8-64 of ``A-Z a-z 0-9 _ -``) and
  ``sig`` (64 hex digits): required when the node has a key
  (``[commands] hmac_key_file``), ignored otherwise. ``sig`` is the hex
  HMAC-SHA256, under the key, of :func:`canonical_message`::

      f"{id}\\n{cmd}\\n{ts}\\n{nonce}\\n".encode() + json.dumps(
          args, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
          allow_nan=False).encode()

Nothing else is accepted: no other keys, no duplicate keys, no NaN or infinite
numbers, no integer outside int64, no nesting deeper than 4, no more than 32
members in an object or array, no object key longer than 64 characters, no CBOR
tags, byte strings, indefinite lengths or undefined, nothing after the object.
Every refusal leaves the node as it was and produces an error result whose text
is at most 200 characters and never quotes more than 64 characters of input.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import math
import os
import re
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

import msgspec

from agent.core.config import MAX_FAILOVER, CommandsConfig
from agent.wire.model import MAX_PAYLOAD, Record

__all__ = [
    "COMMANDS",
    "REASONS",
    "CommandError",
    "CommandProcessor",
    "CommandResult",
    "KeyFileError",
    "NodeControl",
    "canonical_args",
    "canonical_message",
    "load_hmac_key",
    "sign_command",
]

log = logging.getLogger("citynode.commands")

#: Bounds on what a command may contain (besides ``[commands] max_bytes``).
MAX_DEPTH = 4  # the command object is depth 1, its args depth 2
MAX_ITEMS = 32  # members of one object or array
MAX_KEY_CHARS = 64  # characters of one object key
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_ERROR = 200  # characters of an error text
MAX_MESSAGE = 1000  # characters of a control's message in a result
MAX_BUNDLE_BYTES = 512 * 1024 * 1024  # the largest bundle an update command may announce
MAX_CONFIG_TEXT = MAX_PAYLOAD // 2  # bytes of TOML get-config sends back
MAX_CORRELATION = 1024  # bytes of MQTT 5 correlation data echoed back
MAX_RESPONSE_TOPIC = 512  # characters of an MQTT 5 response topic
NONCE_CAP = 10_000  # nonces remembered at once; beyond, signed commands wait
MIN_KEY_BYTES, MAX_KEY_BYTES = 16, 4096
BURST_MAX = 10

#: Refusal reasons, about in the order the checks run; ``stats()`` has ``refused_<reason>``.
REASONS = ("disabled", "size", "schema", "unknown", "signature", "skew", "replay", "rate",
           "handler")
#: Keys of :meth:`CommandProcessor.stats`: every message lands in exactly one.
STAT_KEYS = ("accepted", "failed", *(f"refused_{r}" for r in REASONS))


# -- the control the daemon implements ---------------------------------------------------
Value = bool | int | float | str | None


class NodeControl(Protocol):
    """What commands may ask of the node; the daemon implements it.

    Actions return ``(ok, message)``; a plain ``str`` counts as ``(True, str)`` and
    ``None`` as ``(True, "")``. Raising :class:`CommandError` reports an expected
    failure with its message; any other exception becomes "internal error" (logged).
    """

    def uptime_s(self) -> float:
        """Seconds since the daemon started."""
        ...

    def config_text(self) -> str:
        """The running configuration as TOML text (it holds paths to secrets, never secrets)."""
        ...

    def set_config(self, text: str) -> tuple[bool, str]:
        """Validate a whole new TOML configuration, apply it atomically, roll back on failure."""
        ...

    def resend_state(self) -> str | None:
        """Publish the retained state (birth) again."""
        ...

    def sample_now(self, sensor: str | None) -> tuple[bool, str] | str:
        """Report now (one sensor, or all when None) instead of at the end of the window."""
        ...

    def device_command(self, sensor: str, action: str, value: Value) -> tuple[bool, str]:
        """A sensor's own action (e.g. a smart plug's relay); unknown sensor/action: not ok."""
        ...

    def update(self, url: str, sha256: str, size: int | None, version: str,
               command_id: str | None = None) -> tuple[bool, str]:
        """Start an over-the-air update (docs/updates.md); refused while one is under way."""
        ...

    def use_broker(self, uplink: str | None, index: int) -> tuple[bool, str]:
        """Move an uplink (every uplink with failover brokers when None) to broker
        ``index`` of its list (0: the primary, host:port)."""
        ...


class CommandError(Exception):
    """Raised by a :class:`NodeControl` method: an expected failure, its text for the platform."""


class KeyFileError(Exception):
    """The HMAC key file cannot be used (when agent.wire.security gives no SecurityError)."""


# -- schemas ------------------------------------------------------------------------------
def _pattern(regex: str) -> msgspec.Meta:
    return msgspec.Meta(pattern=rf"\A{regex}\Z")  # \Z: `$` would let a trailing newline in


CommandId = Annotated[str, _pattern(r"[A-Za-z0-9._:-]{1,64}")]
CommandName = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Nonce = Annotated[str, _pattern(r"[A-Za-z0-9_-]{8,64}")]
Signature = Annotated[str, _pattern(r"[0-9a-fA-F]{64}")]
Timestamp = Annotated[int, msgspec.Meta(ge=0, le=2**40)]
SensorName = Annotated[str, _pattern(r"[a-z][a-z0-9_]{0,15}")]
Action = Annotated[str, _pattern(r"[a-z0-9_-]{1,32}")]
ShortText = Annotated[str, msgspec.Meta(max_length=64)]
ConfigText = Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Command(_Strict):
    """The command object; ``args`` is checked against the command's own schema later."""

    id: CommandId
    cmd: CommandName
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    ts: Timestamp | None = None
    nonce: Nonce | None = None
    sig: Signature | None = None


class NoArgs(_Strict):
    pass


class SetConfigArgs(_Strict):
    toml: ConfigText


class SampleNowArgs(_Strict):
    sensor: SensorName | None = None


class DeviceArgs(_Strict):
    sensor: SensorName
    action: Action
    value: bool | int | float | ShortText | None = None


class BrokerArgs(_Strict):
    use: Literal["primary"] | Annotated[int, msgspec.Meta(ge=0, le=MAX_FAILOVER)]
    uplink: Annotated[str, _pattern(r"[a-z0-9][a-z0-9_-]{0,31}")] | None = None


class UpdateArgs(_Strict):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    sha256: Annotated[str, _pattern(r"[0-9a-fA-F]{64}")]
    version: Annotated[str, _pattern(r"[0-9][0-9A-Za-z.+_-]{0,39}")]
    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_BUNDLE_BYTES)] | None = None


_FRIENDLY = {  # path -> what to say instead of "Expected `str` matching regex ..."
    "id": "id must be 1-64 characters of A-Z a-z 0-9 . _ : -",
    "nonce": "nonce must be 8-64 characters of A-Z a-z 0-9 _ -",
    "sig": "sig must be 64 hex digits (HMAC-SHA256)",
    "args.sensor": "args.sensor must be a sensor name: 1-16 of a-z 0-9 _, starting with a letter",
    "args.action": "args.action must be 1-32 characters of a-z 0-9 _ -",
    "args.sha256": "args.sha256 must be 64 hex digits (the bundle's SHA-256)",
    "args.version": "args.version must be 1-40 characters of 0-9 A-Z a-z . + _ -, "
                    "starting with a digit",
    "args.uplink": "args.uplink must be an uplink name: 1-32 of a-z 0-9 _ -",
}


# -- results ------------------------------------------------------------------------------
@dataclass(slots=True)
class CommandResult:
    """What became of one command; :meth:`records` is what the platform receives."""

    id: str | None
    ok: bool
    error: str | None = None
    data: dict[str, str | int | float | bool] = field(default_factory=dict)
    correlation: bytes | None = None
    response_topic: str | None = None
    cmd: str | None = None
    #: None when ok; "failed" when the control refused; else one of :data:`REASONS`.
    reason: str | None = None

    def records(self) -> list[Record]:
        """SenML records: ``id``, ``cmd``, ``status``, ``error``, then one per data item.

        ``id`` and ``cmd`` are present when known, ``error`` only when failing; data
        items keep their names (``pong``, ``uptime_s``, ``toml``, ``message``): ``v``
        for numbers, ``vs`` for text, ``vb`` for booleans.
        """
        out: list[Record] = []
        if self.id is not None:
            out.append(Record("id", text=self.id))
        if self.cmd is not None:
            out.append(Record("cmd", text=self.cmd))
        out.append(Record("status", text="ok" if self.ok else "error"))
        if not self.ok:
            out.append(Record("error", text=self.error or "error"))
        for name, value in self.data.items():
            if isinstance(value, bool):
                out.append(Record(name, flag=value))
            elif isinstance(value, int | float):
                out.append(Record(name, value=value))
            else:
                out.append(Record(name, text=str(value)))
        return out


class _Refused(Exception):
    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason, self.error = reason, error


_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd]")


def _bounded(text: str, limit: int = MAX_ERROR) -> str:
    """One line of printable text, at most ``limit`` characters."""
    text = _UNPRINTABLE.sub(lambda m: " " if m.group() in "\t\r\n" else "?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(text: str, limit: int = 64) -> str:
    return repr(_bounded(text, limit))


# -- decoding: JSON and a strict CBOR subset ----------------------------------------------
def _malformed(detail: str) -> _Refused:
    return _Refused("schema", f"malformed: {detail}")


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_ITEMS:
        raise _malformed(f"an object has more than {MAX_ITEMS} members")
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _malformed(f"duplicate key {_quote(key)}")
        out[key] = value
    return out


def _json_int(text: str) -> int:
    if len(text) > 20:  # int64 has at most 19 digits; refuse before converting
        raise _malformed("integer out of range")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > 64:
        raise _malformed("number too long")
    value = float(text)
    if not math.isfinite(value):
        raise _malformed("number out of range")
    return value


def _json_constant(name: str) -> Any:
    raise _malformed(f"{name} is not a number JSON allows")


def _decode_json(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("JSON is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_json_pairs, parse_int=_json_int,
                          parse_float=_json_float, parse_constant=_json_constant)
    except RecursionError:
        raise _malformed(f"nested deeper than {MAX_DEPTH}") from None
    except ValueError as exc:  # json.JSONDecodeError: says where, never what
        raise _malformed(f"not valid JSON: {str(exc)[:80]}") from None


_CBOR_WIDTH = {24: 1, 25: 2, 26: 4, 27: 8}
_CBOR_FLOAT = {25: ">e", 26: ">f", 27: ">d"}
_CBOR_SIMPLE = {20: False, 21: True, 22: None}


class _Cbor:
    """A CBOR decoder for the JSON data model only: no tags, byte strings, indefinite
    lengths or undefined; every length is checked against the bytes left before use."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _malformed("CBOR ends early")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def _argument(self, info: int) -> int:
        if info < 24:
            return info
        if info in _CBOR_WIDTH:
            return int.from_bytes(self._take(_CBOR_WIDTH[info]), "big")
        raise _malformed("CBOR indefinite lengths are not allowed" if info == 31
                         else "CBOR reserved additional information")

    def item(self, depth: int = 1) -> Any:
        if depth > MAX_DEPTH:
            raise _malformed(f"nested deeper than {MAX_DEPTH}")
        head = self._take(1)[0]
        major, info = head >> 5, head & 31
        if major == 7:
            if info in _CBOR_SIMPLE:
                return _CBOR_SIMPLE[info]
            if info in _CBOR_FLOAT:
                fmt = _CBOR_FLOAT[info]
                value = struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]
                if not math.isfinite(value):
                    raise _malformed("NaN and infinity are not allowed")
                return value
            raise _malformed("CBOR simple values other than true, false and null")
        if major == 6:
            raise _malformed("CBOR tags are not allowed")
        if major == 2:
            raise _malformed("CBOR byte strings are not allowed")
        n = self._argument(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 3:
            try:
                return self._take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed("CBOR text is not valid UTF-8") from None
        if n > MAX_ITEMS:
            raise _malformed(f"an array or map has more than {MAX_ITEMS} members")
        if major == 4:
            return [self.item(depth + 1) for _ in range(n)]
        out: dict[str, Any] = {}  # major 5: map
        for _ in range(n):
            key = self.item(depth + 1)
            if not isinstance(key, str):
                raise _malformed("CBOR map keys must be text")
            if key in out:
                raise _malformed(f"duplicate key {_quote(key)}")
            out[key] = self.item(depth + 1)
        return out


def _decode_cbor(payload: bytes) -> Any:
    if payload[0] >> 5 != 5:
        raise _malformed("neither a JSON object (first byte '{') nor a CBOR map")
    dec = _Cbor(payload)
    value = dec.item()
    if dec.pos != len(payload):
        raise _malformed(f"{len(payload) - dec.pos} bytes after the CBOR object")
    return value


def _check_bounds(value: Any, depth: int = 1) -> None:
    """The limits both decoders share, on the decoded value."""
    if depth > MAX_DEPTH:
        raise _malformed(f"nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _malformed("integer out of range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _malformed("NaN and infinity are not allowed")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape
            raise _malformed("text with an unpaired surrogate") from None
    elif isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise _malformed(f"an object has more than {MAX_ITEMS} members")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _malformed("object keys must be text")
            if len(key) > MAX_KEY_CHARS:
                raise _malformed(f"an object key is longer than {MAX_KEY_CHARS} characters")
            _check_bounds(key, depth + 1)
            _check_bounds(item, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise _malformed(f"an array has more than {MAX_ITEMS} members")
        for item in value:
            _check_bounds(item, depth + 1)
    else:
        raise _malformed(f"unexpected {type(value).__name__}")


def _decode(payload: bytes) -> Any:
    value = _decode_json(payload) if payload[:1] == b"{" else _decode_cbor(payload)
    _check_bounds(value)
    return value


def _schema_error(exc: msgspec.ValidationError, prefix: str = "") -> _Refused:
    msg, _, where = str(exc).partition(" - at ")
    path = where.strip("`").removeprefix("$").removeprefix(".")
    path = f"{prefix}.{path}" if prefix and path else (prefix or path)
    m = re.fullmatch(r"Object (contains unknown|missing required) field `(.*)`", msg, re.S)
    if m:
        what = "unknown" if m.group(1).startswith("contains") else "missing"
        name = f"{path}.{m.group(2)}" if path else m.group(2)
        return _Refused("schema", f"schema: {what} field {_quote(name, 80)}")
    if path in _FRIENDLY and msg.startswith("Expected `str` matching"):
        return _Refused("schema", f"schema: {_FRIENDLY[path]}")
    msg = msg.replace("`", "").replace("Expected", "expected")
    return _Refused("schema", _bounded(f"schema: {path}: {msg}" if path else f"schema: {msg}"))


# -- signing ------------------------------------------------------------------------------
def canonical_args(args: Mapping[str, Any]) -> bytes:
    """The args as signed: JSON, sorted keys, no spaces, UTF-8 (not \\u-escaped)."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def canonical_message(id: str, cmd: str, ts: int, nonce: str,
                      args: Mapping[str, Any]) -> bytes:
    """The bytes ``sig`` authenticates (docs/commands.md, "Signing")."""
    return f"{id}\n{cmd}\n{ts}\n{nonce}\n".encode() + canonical_args(args)


def sign_command(command: Mapping[str, Any], key: bytes, *, ts: int | None = None,
                 nonce: str | None = None) -> dict[str, Any]:
    """A copy of ``command`` with ``ts``, ``nonce`` and ``sig`` set (for platforms and tests)."""
    out = dict(command)
    out["ts"] = int(time.time()) if ts is None else ts
    out["nonce"] = os.urandom(12).hex() if nonce is None else nonce
    msg = canonical_message(out["id"], out["cmd"], out["ts"], out["nonce"],
                            out.get("args", {}))
    out["sig"] = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return out


KEY_WHAT = "command HMAC key (commands.hmac_key_file)"


def _key_error(security: Any, path: str, problem: str, fix: str = "") -> Exception:
    """agent.wire.security's SecurityError(what, path, problem, fix) when it exists."""
    message = f"{KEY_WHAT} {path}: {problem}" + (f". Fix: {fix}" if fix else "")
    cls = getattr(security, "SecurityError", None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        for args in ((KEY_WHAT, path, problem, fix), (message,)):
            try:
                return cls(*args)
            except TypeError:
                continue
    return KeyFileError(message)


def load_hmac_key(path: str | os.PathLike[str]) -> bytes:
    """The command-signing key: the file's bytes less one trailing newline (16 or more).

    Ownership and mode are checked by ``agent.wire.security.check_private`` when that
    module exists; otherwise here: a regular file, owned by root or this user, with
    no group or other permissions. Problems raise ``agent.wire.security.SecurityError``
    (:class:`KeyFileError` without that module), for the daemon to exit 78.
    """
    p = os.fspath(path)
    try:
        from agent.wire import security
    except ModuleNotFoundError as exc:
        if exc.name != "agent.wire.security":
            raise
        security = None
    if security is not None:
        security.check_private(p, KEY_WHAT)
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise _key_error(security, p, f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _key_error(security, p, "is not a regular file",
                             "point the setting at the file itself")
        if security is None:
            if st.st_mode & 0o077:
                raise KeyFileError(f"{KEY_WHAT} {p}: is accessible by group or others (mode "
                                   f"{stat.S_IMODE(st.st_mode):04o}). Fix: chmod 600 {p}")
            if st.st_uid not in (0, os.geteuid()):
                raise KeyFileError(f"{KEY_WHAT} {p}: is owned by uid {st.st_uid}, not by "
                                   f"this user or root. Fix: chown citynode: {p}")
        data = os.read(fd, MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise _key_error(security, p, f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_BYTES:
        raise _key_error(security, p, f"is longer than {MAX_KEY_BYTES} bytes",
                         "point the setting at the key file")
    data = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(data) < MIN_KEY_BYTES:
        raise _key_error(security, p, f"holds {len(data)} bytes; at least {MIN_KEY_BYTES} "
                         "are needed",
                         f"umask 077; openssl rand -hex 32 > {p}; chown citynode: {p}")
    return data


# -- rate and replay ----------------------------------------------------------------------
class _TokenBucket:
    def __init__(self, rate_per_min: int, now: float) -> None:
        self.capacity = float(min(rate_per_min, BURST_MAX))
        self.per_s = rate_per_min / 60.0
        self.tokens, self.last = self.capacity, now

    def take(self, now: float) -> bool:
        elapsed = max(0.0, now - self.last)  # a clock set back refills nothing
        self.last = now
        self.tokens = min(self.capacity, self.tokens + elapsed * self.per_s)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Nonces:
    """Nonces of accepted commands until their ts leaves the skew window; at most ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def expire(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            until, nonce = heapq.heappop(self._heap)
            if self._until.get(nonce) == until:
                del self._until[nonce]

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._until

    def __len__(self) -> int:
        return len(self._until)

    def add(self, nonce: str, until: float) -> None:
        self._until[nonce] = until
        heapq.heappush(self._heap, (until, nonce))


# -- the commands -------------------------------------------------------------------------
Data = dict[str, str | int | float | bool]


def _outcome(raw: Any) -> tuple[bool, str]:
    if raw is None:
        return True, ""
    if isinstance(raw, str):
        return True, raw
    if (isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[0], bool)
            and isinstance(raw[1], str)):
        return raw
    raise TypeError(f"control returned {type(raw).__name__}, not (bool, str), str or None")


def _action(raw: Any) -> tuple[bool, str, Data]:
    ok, message = _outcome(raw)
    if not ok:
        return False, _bounded(message or "failed"), {}
    return True, "", ({"message": _bounded(message, MAX_MESSAGE)} if message else {})


def _ping(control: NodeControl, _: NoArgs) -> tuple[bool, str, Data]:
    uptime = control.uptime_s()
    if isinstance(uptime, bool) or not isinstance(uptime, int | float) \
            or not math.isfinite(uptime):
        raise TypeError(f"uptime_s returned {uptime!r:.40}")
    return True, "", {"pong": True, "uptime_s": round(uptime)}


def _get_config(control: NodeControl, _: NoArgs) -> tuple[bool, str, Data]:
    text = control.config_text()
    if not isinstance(text, str):
        raise TypeError(f"config_text returned {type(text).__name__}")
    size = len(text.encode("utf-8"))  # and refuse unencodable text (an internal error)
    if size > MAX_CONFIG_TEXT:
        return False, f"configuration too large to send ({size} bytes)", {}
    return True, "", {"toml": text}


def _set_config(control: NodeControl, args: SetConfigArgs) -> tuple[bool, str, Data]:
    return _action(control.set_config(args.toml))


def _resend_state(control: NodeControl, _: NoArgs) -> tuple[bool, str, Data]:
    return _action(control.resend_state())


def _sample_now(control: NodeControl, args: SampleNowArgs) -> tuple[bool, str, Data]:
    return _action(control.sample_now(args.sensor))


def _device(control: NodeControl, args: DeviceArgs) -> tuple[bool, str, Data]:
    return _action(control.device_command(args.sensor, args.action, args.value))


def _broker(control: NodeControl, args: BrokerArgs) -> tuple[bool, str, Data]:
    return _action(control.use_broker(args.uplink, 0 if args.use == "primary" else args.use))


def _update(control: NodeControl, args: UpdateArgs, command_id: str | None = None
            ) -> tuple[bool, str, Data]:
    return _action(control.update(args.url, args.sha256.lower(), args.size, args.version,
                                  command_id))


@dataclass(frozen=True, slots=True)
class _Spec:
    args: type[_Strict]
    run: Callable[..., tuple[bool, str, Data]]
    with_id: bool = False  # run(control, args, command_id): the update's progress names it


_COMMANDS: dict[str, _Spec] = {
    "ping": _Spec(NoArgs, _ping),
    "get-config": _Spec(NoArgs, _get_config),
    "set-config": _Spec(SetConfigArgs, _set_config),
    "resend-state": _Spec(NoArgs, _resend_state),
    "sample-now": _Spec(SampleNowArgs, _sample_now),
    "device": _Spec(DeviceArgs, _device),
    "broker": _Spec(BrokerArgs, _broker),
    "update": _Spec(UpdateArgs, _update, with_id=True),
}
#: The registered command names.
COMMANDS = tuple(_COMMANDS)


def _valid_topic(topic: str) -> bool:
    return (0 < len(topic) <= MAX_RESPONSE_TOPIC and not topic.startswith("$")
            and not any(c in topic for c in "+#\x00")
            and _UNPRINTABLE.search(topic) is None)


# -- the processor ------------------------------------------------------------------------
class CommandProcessor:
    """Validates, authenticates, rate-limits and runs commands; never raises from handle()."""

    def __init__(self, control: NodeControl, cfg: CommandsConfig, *, key: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ValueError(f"an HMAC key needs at least {MIN_KEY_BYTES} bytes")
        self._control = control
        self._cfg = cfg
        self._key = bytes(key) if key is not None else None
        self._clock = clock
        now = clock()
        self._bucket = _TokenBucket(cfg.rate_per_min, now)
        self._nonces = _Nonces(NONCE_CAP)
        # Signed commands must not be older than this processor (to the second): a command
        # captured before a restart, whose nonce is forgotten, cannot be replayed after it.
        self._floor = float(math.floor(now))
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_KEYS, 0)

    @property
    def signed(self) -> bool:
        """Whether commands must be signed."""
        return self._key is not None

    def stats(self) -> dict[str, int]:
        """Counters since start: ``accepted``, ``failed`` and ``refused_<reason>``."""
        with self._stats_lock:
            return dict(self._counts)

    def handle(self, payload: bytes, *, correlation: bytes | None = None,
               response_topic: str | None = None) -> CommandResult:
        """One message from the command topic -> its result (never raises)."""
        result = CommandResult(None, False)
        with self._lock:
            try:
                self._handle(payload, correlation, response_topic, result)
            except _Refused as exc:
                result.ok, result.error, result.reason = False, _bounded(exc.error), exc.reason
                result.data = {}
            except Exception:
                log.exception("command %s (id %s) failed", result.cmd, result.id,
                              extra={"EVENT": "command_error"})
                result.ok, result.error, result.reason = False, "internal error", "handler"
                result.data = {}
        self._account(result)
        return result

    def _handle(self, payload: bytes, correlation: bytes | None, response_topic: str | None,
                result: CommandResult) -> None:
        if correlation is not None:
            correlation = bytes(correlation)
            if len(correlation) > MAX_CORRELATION:
                raise _Refused("schema", f"correlation data longer than {MAX_CORRELATION} bytes")
            result.correlation = correlation
        if response_topic is not None:
            if not isinstance(response_topic, str) or not _valid_topic(response_topic):
                raise _Refused("schema", "invalid response topic")
            result.response_topic = response_topic
        if not self._cfg.enabled:
            raise _Refused("disabled", "commands are disabled on this node")
        payload = bytes(payload)
        if len(payload) > self._cfg.max_bytes:
            raise _Refused("size", f"too large: {len(payload)} bytes (limit {self._cfg.max_bytes})")
        if not payload:
            raise _malformed("empty payload")

        obj = _decode(payload)
        if not isinstance(obj, dict):
            raise _malformed("not an object")
        # Echo what can be trusted to be an id and a command name even if the rest is refused.
        ident, name = obj.get("id"), obj.get("cmd")
        if isinstance(ident, str) and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", ident):
            result.id = ident
        if isinstance(name, str) and name in _COMMANDS:
            result.cmd = name
        try:
            command = msgspec.convert(obj, Command, strict=True)
        except msgspec.ValidationError as exc:
            raise _schema_error(exc) from None
        spec = _COMMANDS.get(command.cmd)
        if spec is None:
            shown = f" {command.cmd!r}" if re.fullmatch(r"[a-z0-9_-]{1,32}", command.cmd) else ""
            raise _Refused("unknown", f"unknown command{shown}; known: {', '.join(COMMANDS)}")
        try:
            args = msgspec.convert(command.args, spec.args, strict=True)
        except msgspec.ValidationError as exc:
            raise _schema_error(exc, "args") from None

        now = self._clock()
        if self._key is not None:
            self._authenticate(command, now)
        if not self._bucket.take(now):
            raise _Refused("rate", "rate limited")
        if self._key is not None:
            assert command.nonce is not None and command.ts is not None
            self._nonces.add(command.nonce, command.ts + self._cfg.max_skew_s)

        # Accepted: from here on the command runs; a failure cannot be taken back.
        try:
            ok, error, data = (spec.run(self._control, args, command.id) if spec.with_id
                               else spec.run(self._control, args))
        except CommandError as exc:
            ok, error, data = False, _bounded(str(exc) or "failed"), {}
        result.ok, result.data = ok, data
        if not ok:
            result.error, result.reason = error, "failed"

    def _authenticate(self, command: Command, now: float) -> None:
        """Signature, then time, then replay; changes nothing (the nonce is kept on accept)."""
        assert self._key is not None
        if command.ts is None or command.nonce is None or command.sig is None:
            raise _Refused("signature", "unsigned: this node requires ts, nonce and sig")
        message = canonical_message(command.id, command.cmd, command.ts, command.nonce,
                                    command.args)
        expected = hmac.new(self._key, message, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, bytes.fromhex(command.sig)):
            raise _Refused("signature", "bad signature")
        skew = command.ts - now
        if abs(skew) > self._cfg.max_skew_s:
            raise _Refused("skew", f"clock skew: ts is {skew:+.0f} s from the node's clock "
                                   f"(limit {self._cfg.max_skew_s:g} s)")
        if now + self._cfg.max_skew_s < self._floor:  # the clock was set back a long way
            log.warning("clock set back by %.0f s: resetting the command replay floor",
                        self._floor - now, extra={"EVENT": "command_clock_back"})
            self._floor = now - self._cfg.max_skew_s
        if command.ts < self._floor:
            raise _Refused("replay", "issued before the node started: sign it again")
        self._nonces.expire(now)
        if command.nonce in self._nonces:
            raise _Refused("replay", "replayed nonce")
        if len(self._nonces) >= self._nonces.cap:
            raise _Refused("replay", "too many recent commands to remember: try later")

    def _account(self, result: CommandResult) -> None:
        key = "accepted" if result.reason is None else (
            "failed" if result.reason == "failed" else f"refused_{result.reason}")
        with self._stats_lock:
            self._counts[key] += 1
        fields = {"EVENT": "command", "COMMAND": result.cmd, "COMMAND_ID": result.id,
                  "COMMAND_STATUS": key}
        if result.reason is None:
            log.info("command %s (id %s): ok", result.cmd, result.id, extra=fields)
        elif result.reason == "rate":  # a flood must not flood the journal too
            log.debug("command %s (id %s): %s", result.cmd, result.id, result.error,
                      extra=fields)
        else:
            log.warning("command %s (id %s): %s", result.cmd, result.id, result.error,
                        extra=fields)
