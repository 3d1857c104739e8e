"""Downlink commands (agent/core/commands.py) and their reference, docs/commands.md.

Every example request in docs/commands.md is run here through a processor with
:class:`DocControl` and must produce the result printed under it, and the page's
signing snippet must agree with :func:`agent.core.commands.sign_command`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import sys
import types
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.wire
from agent.core import commands
from agent.core.commands import (
    COMMANDS,
    CommandError,
    CommandProcessor,
    CommandResult,
    KeyFileError,
    canonical_message,
    load_hmac_key,
    sign_command,
)
from agent.core.config import CommandsConfig
from agent.wire import formats, quantities
from agent.wire.model import Pack

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "commands.md"
NOW = 1_763_900_000
KEY = b"0123456789abcdef0123456789abcdef"
DOC_KEY = b"citynode-example-key-do-not-use!"


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t


class FakeControl:
    """Records every call; answers as configured."""

    def __init__(self, **answers: Any) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answers = answers

    def _answer(self, name: str, *args: Any, default: Any) -> Any:
        self.calls.append((name, args))
        answer = self.answers.get(name, default)
        if isinstance(answer, BaseException):
            raise answer
        return answer(*args) if callable(answer) else answer

    def uptime_s(self) -> float:
        return self._answer("uptime_s", default=123.4)

    def config_text(self) -> str:
        return self._answer("config_text", default='[node]\nid = "n1"\n')

    def set_config(self, text: str) -> tuple[bool, str]:
        return self._answer("set_config", text, default=(True, "applied"))

    def resend_state(self) -> str | None:
        return self._answer("resend_state", default="birth sent")

    def sample_now(self, sensor: str | None) -> tuple[bool, str] | str:
        return self._answer("sample_now", sensor, default=(True, "reported"))

    def device_command(self, sensor: str, action: str, value: Any) -> tuple[bool, str]:
        return self._answer("device_command", sensor, action, value, default=(True, "done"))

    def use_broker(self, uplink: str | None, index: int) -> tuple[bool, str]:
        return self._answer("use_broker", uplink, index, default=(True, "moving"))

    def update(self, url: str, sha256: str, size: int | None, version: str,
               command_id: str | None = None) -> tuple[bool, str]:
        return self._answer("update", url, sha256, size, version, command_id,
                            default=(True, f"downloading {version}"))


def make(control: Any = None, *, key: bytes | None = None, clock: Clock | None = None,
         **cfg: Any) -> tuple[CommandProcessor, FakeControl, Clock]:
    control = control or FakeControl()
    clock = clock or Clock()
    return CommandProcessor(control, CommandsConfig(**cfg), key=key, clock=clock), control, clock


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def senml(result: CommandResult, fmt: str = "senml-json") -> list[dict[str, Any]]:
    """What the platform reads: the records, decoded back from the wire."""
    raw = formats.get(fmt).encode(Pack(time=NOW, session=1, seq=0, records=result.records()))
    out = []
    for r in formats.decode(raw.payload).records:
        d: dict[str, Any] = {"n": r.name}
        if r.value is not None:
            d["v"] = int(r.value) if r.value.is_integer() else r.value
        elif r.text is not None:
            d["vs"] = r.text
        else:
            d["vb"] = r.flag
        out.append(d)
    return out


def refused(result: CommandResult, reason: str, control: FakeControl) -> None:
    assert not result.ok
    assert result.reason == reason
    assert result.error and len(result.error) <= 200
    assert result.data == {}
    assert control.calls == []
    names = [r["n"] for r in senml(result)]
    assert "status" in names and "error" in names


# -- each command ---------------------------------------------------------------------
def test_ping_answers_with_uptime() -> None:
    proc, control, _ = make()
    res = proc.handle(js({"id": "c-1", "cmd": "ping", "args": {}}))
    assert res.ok and res.error is None and res.reason is None
    assert (res.id, res.cmd) == ("c-1", "ping")
    assert res.data == {"pong": True, "uptime_s": 123}
    assert senml(res) == [
        {"n": "id", "vs": "c-1"}, {"n": "cmd", "vs": "ping"}, {"n": "status", "vs": "ok"},
        {"n": "pong", "vb": True}, {"n": "uptime_s", "v": 123},
    ]
    assert senml(res, "senml-cbor") == senml(res)
    assert control.calls == [("uptime_s", ())]


def test_args_may_be_omitted() -> None:
    proc, _, _ = make()
    assert proc.handle(b'{"id":"c-1","cmd":"ping"}').ok


def test_get_config_returns_the_toml_text() -> None:
    text = '[node]\nid = "n1"\n\n[commands]\nhmac_key_file = "/etc/citynode/command.key"\n'
    proc, _, _ = make(FakeControl(config_text=text))
    res = proc.handle(js({"id": "g", "cmd": "get-config"}))
    assert res.ok and res.data == {"toml": text}
    assert senml(res)[-1] == {"n": "toml", "vs": text}


def test_set_config_passes_the_text_and_reports() -> None:
    proc, control, _ = make(FakeControl(set_config=(True, "applied: 2 sensor(s)")))
    res = proc.handle(js({"id": "s", "cmd": "set-config", "args": {"toml": "[node]\nid='x'\n"}}))
    assert res.ok and res.data == {"message": "applied: 2 sensor(s)"}
    assert control.calls == [("set_config", ("[node]\nid='x'\n",))]

    proc, control, _ = make(FakeControl(set_config=(False, "x.toml:3: node.id: bad\n" * 50)))
    res = proc.handle(js({"id": "s", "cmd": "set-config", "args": {"toml": "junk"}}))
    assert not res.ok and res.reason == "failed" and res.data == {}
    assert res.error.startswith("x.toml:3: node.id: bad ") and len(res.error) == 200
    assert "\n" not in res.error
    assert proc.stats()["failed"] == 1


@pytest.mark.parametrize("args", [{}, {"toml": ""}, {"toml": 5}, {"toml": "x", "path": "/etc"}])
def test_set_config_args_are_checked(args: dict[str, Any]) -> None:
    proc, control, _ = make()
    refused(proc.handle(js({"id": "s", "cmd": "set-config", "args": args})), "schema", control)


@pytest.mark.parametrize("answer, data", [("birth sent", {"message": "birth sent"}), (None, {})])
def test_resend_state(answer: str | None, data: dict[str, Any]) -> None:
    proc, control, _ = make(FakeControl(resend_state=answer))
    res = proc.handle(js({"id": "r", "cmd": "resend-state"}))
    assert res.ok and res.data == data and control.calls == [("resend_state", ())]


def test_sample_now_with_and_without_a_sensor() -> None:
    proc, control, _ = make(FakeControl(
        sample_now=lambda s: (True, "reported") if s in (None, "pm") else (False, f"no {s}")))
    assert proc.handle(js({"id": "a", "cmd": "sample-now"})).data == {"message": "reported"}
    assert proc.handle(js({"id": "b", "cmd": "sample-now", "args": {"sensor": "pm"}})).ok
    res = proc.handle(js({"id": "c", "cmd": "sample-now", "args": {"sensor": "plug"}}))
    assert (res.ok, res.error, res.reason) == (False, "no plug", "failed")
    assert control.calls == [("sample_now", (None,)), ("sample_now", ("pm",)),
                             ("sample_now", ("plug",))]
    # A plain string from the control is a success message too.
    proc, _, _ = make(FakeControl(sample_now="window reported"))
    assert proc.handle(js({"id": "d", "cmd": "sample-now"})).data == {"message": "window reported"}


@pytest.mark.parametrize("value", [True, False, 0, -5, 2**63 - 1, 0.5, -1e300, "", "x" * 64, None])
def test_device_values(value: Any) -> None:
    proc, control, _ = make()
    res = proc.handle(js({"id": "d", "cmd": "device",
                          "args": {"sensor": "plug", "action": "relay_on", "value": value}}))
    assert res.ok, res.error
    assert control.calls == [("device_command", ("plug", "relay_on", value))]
    assert type(control.calls[0][1][2]) is type(value)


def test_device_value_is_optional_and_control_errors_are_reported() -> None:
    proc, control, _ = make(FakeControl(device_command=(False, "sensor 'plug' has no action 'x'")))
    res = proc.handle(js({"id": "d", "cmd": "device", "args": {"sensor": "plug", "action": "x"}}))
    assert (res.ok, res.reason, res.error) == (False, "failed", "sensor 'plug' has no action 'x'")
    assert control.calls == [("device_command", ("plug", "x", None))]
    assert senml(res)[-1] == {"n": "error", "vs": "sensor 'plug' has no action 'x'"}


@pytest.mark.parametrize("args", [
    {"action": "on"},  # sensor missing
    {"sensor": "plug"},  # action missing
    {"sensor": "Plug", "action": "on"},
    {"sensor": "a" * 17, "action": "on"},
    {"sensor": "plug", "action": "ON"},
    {"sensor": "plug", "action": "a" * 33},
    {"sensor": "plug", "action": "on\n"},
    {"sensor": "plug", "action": ""},
    {"sensor": "plug", "action": "on", "value": "x" * 65},
    {"sensor": "plug", "action": "on", "value": [1]},
    {"sensor": "plug", "action": "on", "value": {"a": 1}},
    {"sensor": "plug", "action": "on", "value": 2**63},
    {"sensor": "plug", "action": "on", "extra": 1},
])
def test_device_args_are_checked(args: dict[str, Any]) -> None:
    proc, control, _ = make()
    refused(proc.handle(js({"id": "d", "cmd": "device", "args": args})), "schema", control)


def test_command_error_from_the_control_is_a_failure() -> None:
    proc, _, _ = make(FakeControl(resend_state=CommandError("not connected")))
    res = proc.handle(js({"id": "r", "cmd": "resend-state"}))
    assert (res.ok, res.reason, res.error) == (False, "failed", "not connected")


@pytest.mark.parametrize("answer", [RuntimeError("boom"), ("yes", "x"), 5, (True,)])
def test_handler_exceptions_become_internal_error(answer: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    proc, _, _ = make(FakeControl(set_config=answer))
    with caplog.at_level(logging.ERROR, logger="citynode.commands"):
        res = proc.handle(js({"id": "s", "cmd": "set-config", "args": {"toml": "x"}}))
    assert (res.ok, res.reason, res.error) == (False, "handler", "internal error")
    assert (res.id, res.cmd) == ("s", "set-config")
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert proc.stats()["refused_handler"] == 1


@pytest.mark.parametrize("uptime", [float("nan"), "12", None, True])
def test_bad_uptime_is_an_internal_error(uptime: Any) -> None:
    proc, _, _ = make(FakeControl(uptime_s=uptime))
    assert proc.handle(js({"id": "p", "cmd": "ping"})).error == "internal error"


def test_not_bytes_never_raises() -> None:
    proc, control, _ = make()
    for junk in ("a string", None, 42):
        res = proc.handle(junk)  # type: ignore[arg-type]
        assert not res.ok and res.error
    assert control.calls == []


def test_data_names_are_not_quantities() -> None:
    """Result records must not be rounded as if they were measurements."""
    for name in ("id", "cmd", "status", "error", "pong", "uptime_s", "toml", "message"):
        assert quantities.lookup(name) is None


# -- refusals -------------------------------------------------------------------------
def test_disabled() -> None:
    proc, control, _ = make(enabled=False)
    refused(proc.handle(js({"id": "p", "cmd": "ping"})), "disabled", control)


def test_size_is_checked_before_parsing() -> None:
    proc, control, _ = make(max_bytes=64)
    ok = js({"id": "p", "cmd": "ping", "args": {}})
    assert proc.handle(ok + b" " * (64 - len(ok))).ok
    res = proc.handle(b"\xff" * 65)  # would be malformed, but is too large first
    refused(res, "size", FakeControl())
    assert res.error == "too large: 65 bytes (limit 64)"
    assert control.calls == [("uptime_s", ())]


def device_with(value: bytes) -> bytes:
    """A device command whose value is the given JSON text."""
    return b'{"id":"c","cmd":"device","args":{"sensor":"p","action":"a","value":' + value + b"}}"


BAD_JSON: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("not UTF-8", b'{"id":"\xff","cmd":"ping"}'),
    ("truncated", b'{"id":"c-1","cmd":"ping"'),
    ("trailing data", b'{"id":"c-1","cmd":"ping"} {}'),
    ("array", b"[1, 2]"),
    ("leading space", b' {"id":"c-1","cmd":"ping"}'),
    ("duplicate key", b'{"id":"c-1","cmd":"ping","cmd":"get-config"}'),
    ("duplicate arg", b'{"id":"c","cmd":"sample-now","args":{"sensor":"a","sensor":"b"}}'),
    ("NaN", device_with(b"NaN")),
    ("Infinity", device_with(b"-Infinity")),
    ("overflowing float", device_with(b"1e999")),
    ("huge integer", b'{"id":"c","cmd":"ping","ts":' + b"9" * 5000 + b"}"),
    ("int64 + 1", device_with(b"9223372036854775808")),
    ("deep", b'{"id":"c","cmd":"ping","args":{"a":' * 1 + b'[[[[1]]]]}}'),
    ("very deep", b'{"a":' * 3000 + b"1" + b"}" * 3000),
    ("many members", b"{" + b",".join(b'"k%d":1' % i for i in range(33)) + b"}"),
    ("long key", b'{"id":"c","cmd":"ping","' + b"k" * 65 + b'":1}'),
    ("lone surrogate", device_with(b'"\\ud800"')),
]


@pytest.mark.parametrize("raw", [r for _, r in BAD_JSON], ids=[n for n, _ in BAD_JSON])
def test_malformed_json(raw: bytes) -> None:
    proc, control, _ = make(max_bytes=65536)
    res = proc.handle(raw)
    refused(res, "schema", control)
    assert res.error.startswith("malformed: ")
    assert proc.stats()["refused_schema"] == 1


BAD_CBOR: list[tuple[str, bytes]] = [
    ("not a map", cbor2.dumps([1, 2])),
    ("text", cbor2.dumps("hello")),
    ("tag", cbor2.dumps({"id": "c", "cmd": "ping", "args": {"t": cbor2.CBORTag(1, 0)}})),
    ("datetime tag on id", bytes.fromhex("a2") + cbor2.dumps("id") + bytes.fromhex("c0")
     + cbor2.dumps("2025-01-01T00:00:00Z") + cbor2.dumps("cmd") + cbor2.dumps("ping")),
    ("byte string", cbor2.dumps({"id": b"c-1", "cmd": "ping"})),
    ("indefinite map", b"\xbf" + cbor2.dumps("id") + cbor2.dumps("c") + b"\xff"),
    ("indefinite text", b"\xa1" + cbor2.dumps("id") + b"\x7f\x61a\xff"),
    ("undefined", b"\xa1" + cbor2.dumps("id") + b"\xf7"),
    ("simple value", b"\xa1" + cbor2.dumps("id") + b"\xf0"),
    ("reserved info", b"\xa1" + cbor2.dumps("id") + b"\x1c"),
    ("float16 NaN", b"\xa1" + cbor2.dumps("id") + b"\xf9\x7e\x00"),
    ("float64 infinity", b"\xa1" + cbor2.dumps("id") + b"\xfb\x7f\xf0" + b"\x00" * 6),
    ("integer key", cbor2.dumps({1: "c", "cmd": "ping"})),
    ("duplicate key", b"\xa2" + cbor2.dumps("id") + cbor2.dumps("a")
     + cbor2.dumps("id") + cbor2.dumps("b")),
    ("truncated", cbor2.dumps({"id": "c-1", "cmd": "ping"})[:-2]),
    ("trailing bytes", cbor2.dumps({"id": "c-1", "cmd": "ping"}) + b"\x00"),
    ("huge declared map", b"\xbb" + b"\xff" * 8),
    ("huge declared text", b"\xa1\x7b" + b"\xff" * 8),
    ("bad UTF-8", b"\xa1\x62id\x62\xc3\x28"),
    ("uint64 max", cbor2.dumps({"id": "c", "cmd": "device",
                                "args": {"sensor": "p", "action": "a", "value": 2**64 - 1}})),
    ("deep", cbor2.dumps({"id": "c", "cmd": "ping", "args": {"a": [[[1]]]}})),
    ("very deep", b"\xa1\x61a" * 5000 + b"\x01"),
    ("many members", cbor2.dumps({f"k{i}": 1 for i in range(33)})),
]


@pytest.mark.parametrize("raw", [r for _, r in BAD_CBOR], ids=[n for n, _ in BAD_CBOR])
def test_malformed_cbor(raw: bytes) -> None:
    proc, control, _ = make(max_bytes=65536)
    res = proc.handle(raw)
    refused(res, "schema", control)
    assert res.error.startswith("malformed: ")


SCHEMA: list[tuple[str, Any]] = [
    ("missing id", {"cmd": "ping"}),
    ("missing cmd", {"id": "c"}),
    ("unknown key", {"id": "c", "cmd": "ping", "exec": "rm -rf /"}),
    ("empty id", {"id": "", "cmd": "ping"}),
    ("long id", {"id": "x" * 65, "cmd": "ping"}),
    ("id with space", {"id": "c 1", "cmd": "ping"}),
    ("id with newline", {"id": "c-1\n", "cmd": "ping"}),
    ("id not text", {"id": 7, "cmd": "ping"}),
    ("cmd not text", {"id": "c", "cmd": ["ping"]}),
    ("args null", {"id": "c", "cmd": "ping", "args": None}),
    ("args a list", {"id": "c", "cmd": "ping", "args": []}),
    ("unknown arg", {"id": "c", "cmd": "ping", "args": {"verbose": True}}),
    ("ts float", {"id": "c", "cmd": "ping", "ts": 1.5}),
    ("ts bool", {"id": "c", "cmd": "ping", "ts": True}),
    ("ts text", {"id": "c", "cmd": "ping", "ts": "1763900000"}),
    ("ts negative", {"id": "c", "cmd": "ping", "ts": -1}),
    ("short nonce", {"id": "c", "cmd": "ping", "nonce": "abc"}),
    ("nonce charset", {"id": "c", "cmd": "ping", "nonce": "abc/defgh"}),
    ("sig not hex", {"id": "c", "cmd": "ping", "sig": "z" * 64}),
    ("sig short", {"id": "c", "cmd": "ping", "sig": "ab" * 31}),
]


@pytest.mark.parametrize("obj", [o for _, o in SCHEMA], ids=[n for n, _ in SCHEMA])
@pytest.mark.parametrize("encode", [js, cbor2.dumps], ids=["json", "cbor"])
def test_schema(obj: Any, encode: Any) -> None:
    proc, control, _ = make()
    res = proc.handle(encode(obj))
    refused(res, "schema", control)
    assert res.error.startswith("schema: ")
    if isinstance(obj.get("id"), str) and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", obj["id"]):
        assert res.id == obj["id"]  # echoed so the platform can match the refusal
    else:
        assert res.id is None


def test_schema_errors_are_readable() -> None:
    proc, _, _ = make()
    assert proc.handle(js({"cmd": "ping"})).error == "schema: missing field 'id'"
    assert proc.handle(js({"id": "c", "cmd": "ping", "x": 1})).error == "schema: unknown field 'x'"
    assert proc.handle(js({"id": "c", "cmd": "ping", "ts": "1"})).error == \
        "schema: ts: expected int | null, got str"
    assert proc.handle(js({"id": "c", "cmd": "sample-now", "args": {"sensor": "PM"}})).error == \
        "schema: args.sensor must be a sensor name: 1-16 of a-z 0-9 _, starting with a letter"


def test_unknown_command() -> None:
    proc, control, _ = make()
    res = proc.handle(js({"id": "c-9", "cmd": "reboot"}))
    refused(res, "unknown", control)
    assert res.error.startswith("unknown command 'reboot'; known: ping, get-config")
    assert (res.id, res.cmd) == ("c-9", None)
    res = proc.handle(js({"id": "c-9", "cmd": "$(reboot)"}))
    assert res.error.startswith("unknown command; known:")  # odd names are not echoed
    assert proc.stats()["refused_unknown"] == 2


def test_errors_are_bounded_and_do_not_echo_input() -> None:
    proc, _, _ = make(max_bytes=65536)
    huge = "Z" * 30000
    for obj in ({"id": "c", "cmd": "ping", huge: 1}, {"id": huge, "cmd": "ping"},
                {"id": "c", "cmd": huge}, {"id": "c", "cmd": "device",
                                           "args": {"sensor": "p", "action": huge}},
                {"id": "c", "cmd": "ping", "k" * 64: 1, "\x1b[31m": 2}):
        for raw in (js(obj), cbor2.dumps(obj)):
            res = proc.handle(raw)
            assert not res.ok and len(res.error) <= 200 and "Z" * 65 not in res.error
            assert "\x1b" not in res.error


# -- correlation ----------------------------------------------------------------------
def test_correlation_and_response_topic_pass_through() -> None:
    proc, _, _ = make()
    res = proc.handle(js({"id": "c", "cmd": "ping"}), correlation=b"\x00\x01corr",
                      response_topic="platform/replies/7")
    assert (res.correlation, res.response_topic) == (b"\x00\x01corr", "platform/replies/7")
    res = proc.handle(b"junk", correlation=bytearray(b"k"), response_topic="r/t")
    assert (res.ok, res.correlation, res.response_topic, res.id) == (False, b"k", "r/t", None)
    res = proc.handle(js({"id": "c-3.1.1", "cmd": "ping"}))  # MQTT 3.1.1: the id correlates
    assert (res.correlation, res.response_topic) == (None, None)
    assert senml(res)[0] == {"n": "id", "vs": "c-3.1.1"}


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "", "$SYS/x", "a\x00b", "x" * 513])
def test_bad_response_topic_is_refused(topic: str) -> None:
    proc, control, _ = make()
    res = proc.handle(js({"id": "c", "cmd": "ping"}), correlation=b"c", response_topic=topic)
    refused(res, "schema", control)
    assert res.response_topic is None and res.correlation == b"c"


def test_long_correlation_is_refused() -> None:
    proc, control, _ = make()
    res = proc.handle(js({"id": "c", "cmd": "ping"}), correlation=b"x" * 1025)
    refused(res, "schema", control)
    assert res.correlation is None


def test_refusal_without_id_has_no_id_record() -> None:
    proc, _, _ = make()
    assert senml(proc.handle(b"\x00")) == [
        {"n": "status", "vs": "error"},
        {"n": "error", "vs": "malformed: neither a JSON object (first byte '{') nor a CBOR map"},
    ]


# -- CBOR form ------------------------------------------------------------------------
def test_cbor_commands_behave_like_json() -> None:
    obj = {"id": "c-7", "cmd": "device", "args": {"sensor": "plug", "action": "set", "value": 1.5}}
    proc, control, _ = make()
    a = proc.handle(js(obj))
    b = proc.handle(cbor2.dumps(obj))
    c = proc.handle(cbor2.dumps(obj, canonical=True))  # 1.5 as float16
    assert a == b == c and a.ok
    assert control.calls == [("device_command", ("plug", "set", 1.5))] * 3


# -- rate limiting --------------------------------------------------------------------
def test_rate_limit_burst_and_refill() -> None:
    proc, control, clock = make(rate_per_min=6)  # burst 6, one token every 10 s
    results = [proc.handle(js({"id": f"c{i}", "cmd": "ping"})) for i in range(7)]
    assert [r.ok for r in results] == [True] * 6 + [False]
    refused(results[-1], "rate", FakeControl())
    assert results[-1].error == "rate limited" and results[-1].id == "c6"
    assert len(control.calls) == 6
    clock.t += 9.9
    assert proc.handle(js({"id": "x", "cmd": "ping"})).reason == "rate"
    clock.t += 0.1
    assert proc.handle(js({"id": "y", "cmd": "ping"})).ok
    assert proc.handle(js({"id": "z", "cmd": "ping"})).reason == "rate"
    clock.t += 3600  # refills to the burst, not beyond
    assert sum(proc.handle(js({"id": "w", "cmd": "ping"})).ok for _ in range(20)) == 6
    assert proc.stats()["refused_rate"] == 2 + 14 + 1


def test_burst_is_at_most_ten_and_refusals_cost_nothing() -> None:
    proc, _, clock = make(rate_per_min=600)
    for _ in range(50):
        assert proc.handle(b"{bad").reason == "schema"
    assert sum(proc.handle(js({"id": "w", "cmd": "ping"})).ok for _ in range(20)) == 10
    clock.t -= 1000  # a clock set back refills nothing and breaks nothing
    assert proc.handle(js({"id": "w", "cmd": "ping"})).reason == "rate"
    clock.t += 0.15
    assert proc.handle(js({"id": "w", "cmd": "ping"})).ok


# -- signing --------------------------------------------------------------------------
def signed(obj: dict[str, Any], *, key: bytes = KEY, ts: int = NOW,
           nonce: str = "nonce-0001") -> dict[str, Any]:
    return sign_command(obj, key, ts=ts, nonce=nonce)


def test_canonical_message_is_exactly_as_documented() -> None:
    assert canonical_message("c-1", "device", 1763900000, "n0nce-42",
                             {"value": 1.0, "sensor": "plug", "action": "é"}) == (
        b'c-1\ndevice\n1763900000\nn0nce-42\n'
        b'{"action":"\xc3\xa9","sensor":"plug","value":1.0}')
    obj = signed({"id": "c", "cmd": "ping"})
    assert obj["sig"] == hmac.new(KEY, b'c\nping\n1763900000\nnonce-0001\n{}',
                                  hashlib.sha256).hexdigest()


def test_signed_command_is_accepted_in_json_and_cbor() -> None:
    proc, control, _ = make(key=KEY)
    assert proc.signed
    obj = signed({"id": "c", "cmd": "device",
                  "args": {"sensor": "plug", "action": "set", "value": 0.25}})
    assert proc.handle(js(obj)).ok
    obj2 = signed({"id": "c2", "cmd": "set-config", "args": {"toml": "[node]\nid = 'é'\n"}},
                  nonce="nonce-0002")
    assert proc.handle(cbor2.dumps(obj2)).ok
    obj3 = signed({"id": "c3", "cmd": "ping"}, nonce="nonce-0003")
    obj3["sig"] = obj3["sig"].upper()
    assert proc.handle(js(obj3)).ok
    assert [c[0] for c in control.calls] == ["device_command", "set_config", "uptime_s"]


@pytest.mark.parametrize("tamper", [
    lambda o: o.update(id="other"),
    lambda o: o["args"].update(value=2),
    lambda o: o["args"].update(value=1.0),  # 1 and 1.0 are different JSON
    lambda o: o.update(ts=o["ts"] + 1),
    lambda o: o.update(nonce="nonce-9999"),
    lambda o: o.update(sig="0" * 64),
])
def test_tampered_command_is_refused(tamper: Any) -> None:
    proc, control, _ = make(key=KEY)
    obj = signed({"id": "c", "cmd": "device", "args": {"sensor": "p", "action": "a", "value": 1}})
    tamper(obj)
    res = proc.handle(js(obj))
    refused(res, "signature", control)
    assert res.error == "bad signature"


def test_changed_command_is_refused() -> None:
    proc, control, _ = make(key=KEY)
    obj = signed({"id": "c", "cmd": "ping"})
    obj["cmd"] = "resend-state"
    refused(proc.handle(js(obj)), "signature", control)


def test_wrong_key_is_refused() -> None:
    proc, control, _ = make(key=KEY)
    refused(proc.handle(js(signed({"id": "c", "cmd": "ping"}, key=b"k" * 32))), "signature",
            control)


@pytest.mark.parametrize("drop", ["ts", "nonce", "sig"])
def test_unsigned_command_is_refused_when_a_key_is_set(drop: str) -> None:
    proc, control, _ = make(key=KEY)
    obj = signed({"id": "c", "cmd": "ping"})
    del obj[drop]
    res = proc.handle(js(obj))
    refused(res, "signature", control)
    assert res.error == "unsigned: this node requires ts, nonce and sig"
    refused(proc.handle(js({"id": "c", "cmd": "ping"})), "signature", control)
    assert proc.stats()["refused_signature"] == 2


def test_without_a_key_signing_fields_are_ignored() -> None:
    proc, _, _ = make()
    assert proc.handle(js({"id": "c", "cmd": "ping", "ts": 1, "nonce": "abcdefgh",
                           "sig": "0" * 64})).ok


def test_replayed_nonce_is_refused() -> None:
    proc, control, clock = make(key=KEY)
    obj = signed({"id": "c", "cmd": "ping"})
    assert proc.handle(js(obj)).ok
    clock.t += 100
    res = proc.handle(js(obj))
    refused(res, "replay", FakeControl())
    assert res.error == "replayed nonce"
    # The same nonce on another command, properly signed, is a replay too.
    res = proc.handle(js(signed({"id": "d", "cmd": "get-config"}, ts=NOW + 100)))
    assert res.reason == "replay"
    assert len(control.calls) == 1 and proc.stats()["refused_replay"] == 2


def test_skew() -> None:
    proc, control, _ = make(key=KEY, max_skew_s=300, clock=Clock(NOW + 1000))
    for ts, shown in ((NOW + 1000 - 301, "-301"), (NOW + 1000 + 301, "+301")):
        res = proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=ts)))
        refused(res, "skew", control)
        assert res.error == f"clock skew: ts is {shown} s from the node's clock (limit 300 s)"
    assert proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=NOW + 1300))).ok
    assert proc.stats()["refused_skew"] == 2


def test_signature_is_checked_before_time() -> None:
    """Without the key nobody learns the node's clock."""
    proc, _, _ = make(key=KEY)
    res = proc.handle(js(signed({"id": "c", "cmd": "ping"}, key=b"x" * 16, ts=5)))
    assert res.reason == "signature"


def test_nonces_are_forgotten_after_the_window_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "NONCE_CAP", 3)
    proc, _, clock = make(key=KEY, max_skew_s=60, rate_per_min=6000)
    for i in range(3):
        assert proc.handle(js(signed({"id": "c", "cmd": "ping"}, nonce=f"nonce-{i:04}"))).ok
    res = proc.handle(js(signed({"id": "c", "cmd": "ping"}, nonce="nonce-0003")))
    assert (res.reason, res.error) == ("replay", "too many recent commands to remember: try later")
    clock.t += 61  # the first three can no longer pass the skew check: forgotten
    assert proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=NOW + 61,
                                 nonce="nonce-0003"))).ok
    assert len(proc._nonces) == 1


def test_refusals_do_not_burn_nonces() -> None:
    proc, _, clock = make(key=KEY, rate_per_min=1)
    assert proc.handle(js(signed({"id": "a", "cmd": "ping"}, nonce="nonce-000a"))).ok
    obj = signed({"id": "b", "cmd": "ping"}, nonce="nonce-000b")
    assert proc.handle(js(obj)).reason == "rate"
    clock.t += 60
    assert proc.handle(js(obj)).ok  # the same signed command, once there is a token


def test_commands_signed_before_start_are_refused() -> None:
    """After a restart the nonces are forgotten; commands older than the start are refused."""
    proc, _, _ = make(key=KEY, clock=Clock(NOW + 0.9))
    assert proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=NOW))).ok  # same second
    res = proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=NOW - 1, nonce="nonce-0002")))
    assert (res.reason, res.error) == ("replay", "issued before the node started: sign it again")


def test_clock_set_back_far_lowers_the_floor() -> None:
    proc, _, clock = make(key=KEY, max_skew_s=300)
    clock.t = NOW - 10_000
    assert proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=NOW - 10_000))).ok


def test_short_key_is_refused_by_the_processor() -> None:
    with pytest.raises(ValueError):
        make(key=b"short")


# -- the key file ---------------------------------------------------------------------
@pytest.fixture
def no_security(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend agent/wire/security.py does not exist: load_hmac_key checks the mode itself."""
    monkeypatch.setitem(sys.modules, "agent.wire.security", None)
    monkeypatch.delattr(agent.wire, "security", raising=False)


def write_key(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.usefixtures("no_security")
def test_key_file_fallback(tmp_path: Path) -> None:
    assert load_hmac_key(write_key(tmp_path / "k", b"a" * 32 + b"\n")) == b"a" * 32
    assert load_hmac_key(write_key(tmp_path / "k", b"a" * 32 + b"\r\n")) == b"a" * 32
    assert load_hmac_key(write_key(tmp_path / "k", b"\x00\xff" * 8)) == b"\x00\xff" * 8
    assert load_hmac_key(str(write_key(tmp_path / "k", b"b" * 16 + b"\n\n"))) == b"b" * 16 + b"\n"
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_hmac_key(write_key(tmp_path / "k", b"a" * 32, 0o640))
    with pytest.raises(KeyFileError, match="at least 16"):
        load_hmac_key(write_key(tmp_path / "k", b"a" * 15 + b"\n"))
    with pytest.raises(KeyFileError, match="longer than"):
        load_hmac_key(write_key(tmp_path / "k", b"a" * 5000))
    with pytest.raises(KeyFileError, match="cannot be opened"):
        load_hmac_key(tmp_path / "missing")
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="regular file"):
        load_hmac_key(tmp_path / "d")


def test_key_file_uses_agent_security(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str]] = []

    class SecurityError(Exception):
        def __init__(self, what: str, path: str, problem: str, fix: str = "") -> None:
            super().__init__(f"{what} {path}: {problem}")

    def check_private(path: str, what: str) -> None:
        seen.append((path, what))
        if "unsafe" in path:
            raise SecurityError(what, path, "unsafe")

    fake = types.ModuleType("agent.wire.security")
    fake.SecurityError = SecurityError  # type: ignore[attr-defined]
    fake.check_private = check_private  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agent.wire.security", fake)
    monkeypatch.setattr(agent.wire, "security", fake, raising=False)
    key = write_key(tmp_path / "k", b"c" * 20, 0o644)  # the mode is security's business now
    assert load_hmac_key(key) == b"c" * 20
    assert seen == [(str(key), "command HMAC key (commands.hmac_key_file)")]
    with pytest.raises(SecurityError):
        load_hmac_key(write_key(tmp_path / "unsafe", b"c" * 20))
    with pytest.raises(SecurityError, match="at least 16"):
        load_hmac_key(write_key(tmp_path / "short", b"c" * 4))


def test_key_file_with_the_real_agent_security(tmp_path: Path) -> None:
    security = pytest.importorskip("agent.wire.security")
    assert load_hmac_key(write_key(tmp_path / "k", b"d" * 32 + b"\n")) == b"d" * 32
    with pytest.raises(security.SecurityError, match="chmod 600"):
        load_hmac_key(write_key(tmp_path / "k", b"d" * 32, 0o644))
    with pytest.raises(security.SecurityError, match="at least 16"):
        load_hmac_key(write_key(tmp_path / "k", b"d" * 8))


# -- stats ----------------------------------------------------------------------------
def test_stats_count_every_message_once() -> None:
    proc, _, _ = make(key=KEY, rate_per_min=1, max_bytes=200)
    proc.handle(js(signed({"id": "a", "cmd": "ping"})))  # accepted
    proc.handle(js(signed({"id": "b", "cmd": "ping"}, nonce="nonce-0002")))  # rate
    proc.handle(js(signed({"id": "a", "cmd": "ping"})))  # replay
    proc.handle(b"x" * 201)  # size
    proc.handle(b"{")  # schema
    proc.handle(js({"id": "c", "cmd": "nope"}))  # unknown
    proc.handle(js({"id": "c", "cmd": "ping"}))  # signature
    proc.handle(js(signed({"id": "c", "cmd": "ping"}, ts=0, nonce="nonce-0003")))  # skew
    stats = proc.stats()
    assert set(stats) == {"accepted", "failed", *(f"refused_{r}" for r in commands.REASONS)}
    assert {k: v for k, v in stats.items() if v} == {
        "accepted": 1, "refused_rate": 1, "refused_replay": 1, "refused_size": 1,
        "refused_schema": 1, "refused_unknown": 1, "refused_signature": 1, "refused_skew": 1}


# -- fuzzing --------------------------------------------------------------------------
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,15}")
ACTION_RE = re.compile(r"[a-z0-9_-]{1,32}")
UPLINK_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=70))
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=10,
)
ids = st.sampled_from(["c-1", "a.b:c_d-E9", "x" * 64, "x" * 65, "", "c 1", "c\n"]) | json_like
cmds = st.sampled_from([*COMMANDS, "PING", "reboot", ""]) | json_like
arg_values = st.fixed_dictionaries({}, optional={
    "toml": st.text(max_size=20) | json_like,
    "sensor": st.sampled_from(["pm", "plug_1", "Pm", "a" * 17, "1a"]) | json_like,
    "action": st.sampled_from(["on", "set-level", "ON", "a" * 33, ""]) | json_like,
    "value": json_like,
})
random_commands = st.fixed_dictionaries(
    {}, optional={"id": ids, "cmd": cmds, "args": arg_values | json_like,
                  "ts": st.integers(-5, 2**41) | json_like,
                  "nonce": st.sampled_from(["abcdefgh", "short"]) | json_like,
                  "sig": st.sampled_from(["0" * 64, "x" * 64]) | json_like},
).flatmap(lambda d: st.dictionaries(st.text(max_size=6), json_like, max_size=2).map(
    lambda extra: {**extra, **d}))
VALID_ARGS = {
    "ping": st.builds(dict), "get-config": st.builds(dict), "resend-state": st.builds(dict),
    "set-config": st.fixed_dictionaries({"toml": st.text(min_size=1, max_size=30)}),
    "sample-now": st.fixed_dictionaries({}, optional={
        "sensor": st.none() | st.from_regex(NAME_RE, fullmatch=True)}),
    "device": st.fixed_dictionaries(
        {"sensor": st.from_regex(NAME_RE, fullmatch=True),
         "action": st.from_regex(ACTION_RE, fullmatch=True)},
        optional={"value": st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                  | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=64)}),
    "broker": st.fixed_dictionaries(
        {"use": st.just("primary") | st.integers(0, 8)},
        optional={"uplink": st.none() | st.from_regex(UPLINK_RE, fullmatch=True)}),
    "update": st.fixed_dictionaries(
        {"url": st.just("https://updates.example.net/citynode-bundle-0.2.0.tar.gz"),
         "sha256": st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
         "version": st.from_regex(r"[0-9][0-9a-z.]{0,8}", fullmatch=True)},
        optional={"size": st.none() | st.integers(1, 512 * 1024 * 1024)}),
}
valid_commands = st.sampled_from(COMMANDS).flatmap(lambda c: st.fixed_dictionaries(
    {"id": st.from_regex(ID_RE, fullmatch=True), "cmd": st.just(c), "args": VALID_ARGS[c]},
    optional={"ts": st.integers(0, 2**40), "nonce": st.sampled_from(["abcdefgh", "x-_" * 20])}))


@st.composite
def mutated_commands(draw: st.DrawFn) -> dict[str, Any]:
    """A valid command with one member of it, or of its args, replaced or removed."""
    obj = draw(valid_commands)
    target = obj["args"] if draw(st.booleans()) else obj
    key = draw(st.sampled_from([*target, "toml", "sensor", "value", "id", "extra"]))
    if draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = draw(json_like | ids | cmds)
    return obj


commands_st = st.one_of(valid_commands, mutated_commands(), random_commands)


def _opt(value: Any, check: Any) -> bool:
    return value is None or bool(check(value))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def expected_valid(obj: Any) -> bool:
    """An independent statement of the schema (no key configured)."""
    if not isinstance(obj, dict) or not set(obj) <= {"id", "cmd", "args", "ts", "nonce", "sig"}:
        return False
    if not (isinstance(obj.get("id"), str) and ID_RE.fullmatch(obj["id"])):
        return False
    if obj.get("cmd") not in COMMANDS or not isinstance(obj["cmd"], str):
        return False
    if not _opt(obj.get("ts"), lambda t: _is_int(t) and 0 <= t <= 2**40):
        return False
    if not _opt(obj.get("nonce"), lambda n: isinstance(n, str)
                and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", n)):
        return False
    if not _opt(obj.get("sig"), lambda s: isinstance(s, str)
                and re.fullmatch(r"[0-9a-fA-F]{64}", s)):
        return False
    args = obj.get("args", {})
    if not isinstance(args, dict):
        return False
    cmd = obj["cmd"]
    if cmd in ("ping", "get-config", "resend-state"):
        return args == {}
    if cmd == "set-config":  # (max_bytes bounds the text)
        return set(args) == {"toml"} and isinstance(args["toml"], str) and args["toml"] != ""
    if cmd == "update":
        return set(args) <= {"url", "sha256", "size", "version"} and isinstance(
            args.get("url"), str) and 0 < len(args["url"]) <= 1024 and isinstance(
            args.get("sha256"), str) and bool(re.fullmatch(r"[0-9a-fA-F]{64}", args["sha256"])
                                              ) and isinstance(args.get("version"), str) and \
            bool(re.fullmatch(r"[0-9][0-9A-Za-z.+_-]{0,39}", args["version"])) and _opt(
                args.get("size"), lambda n: _is_int(n) and 1 <= n <= 512 * 1024 * 1024)
    if cmd == "broker":
        use = args.get("use")
        return set(args) <= {"use", "uplink"} and (
            use == "primary" or (_is_int(use) and 0 <= use <= 8)) and _opt(
            args.get("uplink"), lambda u: isinstance(u, str) and UPLINK_RE.fullmatch(u))
    if cmd == "sample-now":
        return set(args) <= {"sensor"} and _opt(
            args.get("sensor"), lambda s: isinstance(s, str) and NAME_RE.fullmatch(s))
    value = args.get("value")
    value_ok = (value is None or isinstance(value, bool)
                or (_is_int(value) and -(2**63) <= value < 2**63)
                or (isinstance(value, float) and math.isfinite(value))
                or (isinstance(value, str) and len(value) <= 64))
    return (set(args) <= {"sensor", "action", "value"} and value_ok
            and isinstance(args.get("sensor"), str) and bool(NAME_RE.fullmatch(args["sensor"]))
            and isinstance(args.get("action"), str) and bool(ACTION_RE.fullmatch(args["action"])))


def check_invariants(res: CommandResult, control: FakeControl) -> None:
    assert isinstance(res, CommandResult)
    assert (res.error is None) == res.ok
    if not res.ok:
        assert 0 < len(res.error) <= 200
        assert res.data == {}
    if res.reason not in (None, "failed", "handler"):
        assert control.calls == []
    for fmt in formats.pack_formats():  # the result always encodes
        fmt.decode(fmt.encode(Pack(NOW, 1, 0, res.records())).payload)


def json_dumps_loose(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=commands_st, use_cbor=st.booleans())
def test_fuzz_objects_run_only_when_valid(obj: dict[str, Any], use_cbor: bool) -> None:
    proc, control, _ = make(max_bytes=65536, rate_per_min=6000)
    raw = cbor2.dumps(obj) if use_cbor else json_dumps_loose(obj)
    res = proc.handle(raw)
    check_invariants(res, control)
    valid = expected_valid(obj)
    assert res.ok == valid, (res.error, obj)
    assert bool(control.calls) == valid


def reference_load(raw: bytes) -> Any:
    """A lenient reading of the bytes: if even this fails, nothing may run."""
    if raw[:1] == b"{":
        def no_dups(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            out = dict(pairs)
            if len(out) != len(pairs):
                raise ValueError("duplicate")
            return out
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
    return cbor2.loads(raw)


def valid_bytes(raw: bytes) -> bool:
    try:
        return expected_valid(reference_load(raw))
    except Exception:
        return False


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_fuzz_bytes_never_raise(raw: bytes) -> None:
    proc, control, _ = make()
    res = proc.handle(raw, correlation=b"c")
    check_invariants(res, control)
    assert res.correlation == b"c"
    if control.calls:
        assert valid_bytes(raw)


VALID_SAMPLES = [
    js({"id": "c-1", "cmd": "device", "args": {"sensor": "plug", "action": "on", "value": 1}}),
    cbor2.dumps({"id": "c-1", "cmd": "device", "args": {"sensor": "plug", "action": "on",
                                                         "value": 1.5}}),
    js({"id": "c-2", "cmd": "set-config", "args": {"toml": "[node]\nid = 'n1'\n"}}),
    cbor2.dumps({"id": "c-3", "cmd": "sample-now", "args": {"sensor": "pm"}}),
]


@settings(max_examples=400, deadline=None)
@given(base=st.sampled_from(VALID_SAMPLES),
       edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255),
                                st.sampled_from(["set", "insert", "delete"])), max_size=4))
def test_fuzz_mutated_commands(base: bytes, edits: list[tuple[int, int, str]]) -> None:
    raw = bytearray(base)
    for pos, byte, op in edits:
        pos %= len(raw) + 1
        if op == "insert":
            raw.insert(pos, byte)
        elif pos < len(raw):
            if op == "set":
                raw[pos] = byte
            else:
                del raw[pos]
    proc, control, _ = make()
    res = proc.handle(bytes(raw))
    check_invariants(res, control)
    if control.calls:
        assert valid_bytes(bytes(raw)), bytes(raw)


# -- docs/commands.md -----------------------------------------------------------------
DOC_TOML = """\
[node]
id = "seoul-jongno-0001"

[mqtt]
host = "broker.example.net"
tls = true
credentials_file = "/etc/citynode/mqtt-credentials.toml"

[commands]
hmac_key_file = "/etc/citynode/command.key"

[[sensor]]
type = "pms5003"
name = "pm"
port = "/dev/ttyAMA0"
"""


class DocControl:
    """The node the examples in docs/commands.md were produced with."""

    def uptime_s(self) -> float:
        return 86400.4

    def config_text(self) -> str:
        return DOC_TOML

    def set_config(self, text: str) -> tuple[bool, str]:
        if "[node]" not in text:
            return False, "<set-config>: node: required key is missing"
        return True, "applied: 1 sensor(s)"

    def resend_state(self) -> str:
        return "birth sent"

    def sample_now(self, sensor: str | None) -> tuple[bool, str]:
        if sensor not in (None, "pm"):
            return False, f"no sensor named {sensor!r} (have: pm)"
        return True, "current window reported"

    def device_command(self, sensor: str, action: str, value: Any) -> tuple[bool, str]:
        if sensor != "plug":
            return False, f"sensor {sensor!r} has no device actions"
        return True, f"relay {'on' if value else 'off'}"


def doc_processors() -> tuple[dict[str, CommandProcessor], Clock]:
    """The examples run in page order, two seconds apart, on one clock."""
    clock = Clock(NOW)
    return {"": CommandProcessor(DocControl(), CommandsConfig(), clock=clock),
            "signed": CommandProcessor(DocControl(), CommandsConfig(), key=DOC_KEY,
                                       clock=clock)}, clock


def doc_result_pack(result: CommandResult, seq: int) -> list[dict[str, Any]]:
    raw = formats.get("senml-json").encode(Pack(NOW, 3, seq, result.records())).payload
    return json.loads(raw)


EXAMPLE = re.compile(r"<!-- request( signed)?( cbor)? -->\s*```\w*\n(.*?)```.*?"
                     r"<!-- result -->\s*```\w*\n(.*?)```", re.S)


def doc_examples() -> list[tuple[str, bool, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    return [(m[1] or "", bool(m[2]), m[3], m[4]) for m in EXAMPLE.finditer(text)]


def test_doc_examples_are_what_the_code_answers() -> None:
    examples = doc_examples()
    assert len(examples) >= 10
    procs, clock = doc_processors()
    for mode, is_cbor, request, result in examples:
        raw = bytes.fromhex(request) if is_cbor else request.strip().encode()
        got = procs[mode.strip()].handle(raw)
        clock.t += 2
        want = json.loads(result)
        strip = [{k: v for k, v in r.items() if k not in ("bt", "b", "q")} for r in want]
        have = [{k: v for k, v in r.items() if k not in ("bt", "b", "q")}
                for r in doc_result_pack(got, 0)]
        assert have == strip, request


def test_doc_result_hex_is_the_first_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    hex_block = re.search(r"<!-- result hex -->\s*```\n(.*?)```", text, re.S)
    assert hex_block, "docs/commands.md lost its CBOR result"
    pack = formats.decode(bytes.fromhex(hex_block[1]))
    assert json.loads(formats.get("senml-json").encode(pack).payload) == \
        json.loads(doc_examples()[0][3])


def test_doc_signing_snippet_matches_the_node() -> None:
    text = DOC.read_text(encoding="utf-8")
    snippet = re.search(r"<!-- signing snippet -->\s*```python\n(.*?)```", text, re.S)
    assert snippet, "docs/commands.md lost its signing snippet"
    namespace: dict[str, Any] = {}
    exec(compile(snippet[1], "docs/commands.md", "exec"), namespace)
    sign = namespace["sign"]
    cmd = {"id": "c-1", "cmd": "device", "args": {"sensor": "plug", "action": "on",
                                                  "value": True}}
    ours = sign_command(cmd, DOC_KEY, ts=NOW, nonce="abcdefgh12")
    theirs = sign(dict(cmd), DOC_KEY, ts=NOW, nonce="abcdefgh12")
    assert theirs == ours
    fresh = sign(dict(cmd), DOC_KEY)  # its own ts and nonce are accepted too
    proc = CommandProcessor(DocControl(), CommandsConfig(), key=DOC_KEY)
    assert proc.handle(json.dumps(fresh).encode()).ok


def test_doc_error_table_lists_every_reason() -> None:
    text = DOC.read_text(encoding="utf-8")
    for key in ("accepted", "failed", *(f"refused_{r}" for r in commands.REASONS)):
        assert f"`{key}`" in text, key
