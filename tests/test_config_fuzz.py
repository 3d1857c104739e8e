"""``citynode config check`` over generated configurations (hypothesis).

Valid configurations built from every device README's sample table, written in the layouts
TOML allows (tables, inline tables, dotted keys, arrays of tables, inline arrays of tables,
multi-line arrays), then mutated the ways an installer gets them wrong: a wrong type, a number
in quotes, out of range, an unknown key, a wrong enum value, a missing key, a duplicated
name, clashing pins, a missing file, a retired key (``[fire] model``: a warning, exit 0).
Whatever comes in: exit 0 or 78 (64 for usage), never a traceback, and every error or
warning names a key and a line that exists in the text.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.tools.cli import main as cli
from drivers import catalogue
from drivers.readme import sample_table

pytestmark = pytest.mark.timeout(300)

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_LINE = re.compile(r"^error: (?P<file>[^:]+)(?::(?P<line>\d+))?: (?P<rest>.*)$")
_WARNING = re.compile(r"^warning: (?P<file>[^:]+)(?::(?P<line>\d+))?: (?P<rest>.*)$")
_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_-]+(?:\[\d+\])*(?:\.[A-Za-z0-9_-]+(?:\[\d+\])*)*): ")


@pytest.fixture(scope="module")
def machine() -> Iterator[tuple[str, str]]:
    """A serial device that exists (a pseudo-terminal) and a writable state directory."""
    master, slave = os.openpty()
    state = tempfile.mkdtemp(prefix="citynode-fuzz-")
    yield os.ttyname(slave), state
    os.close(slave)
    os.close(master)
    shutil.rmtree(state, ignore_errors=True)


def _samples(tty: str) -> list[dict[str, Any]]:
    """Every device's README table, on this machine's devices: a tty, emulated I2C chips."""
    out = []
    for spec in catalogue.specs().values():
        table = sample_table(spec)
        if "port" in table:
            table["port"] = tty
        if spec.bus == "i2c":
            table["bus"] = "emulator"
        out.append(table)
    return out


# -- writing TOML in every layout ---------------------------------------------------------------
def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else _string(k)


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v: Any, multiline: bool = False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, list):
        if multiline and v:
            return "[\n" + "".join(f"    {_value(x)},\n" for x in v) + "]"
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _table(out: list[str], header: str, table: dict[str, Any], sub: str, multiline: bool,
           prefix: str) -> None:
    out.append(header)
    later: list[tuple[str, dict[str, Any]]] = []
    for k, v in table.items():
        if isinstance(v, dict) and sub == "table":
            later.append((k, v))
        elif isinstance(v, dict) and sub == "dotted" and v:
            out.extend(f"{_key(k)}.{_key(kk)} = {_value(vv)}" for kk, vv in v.items())
        else:
            out.append(f"{_key(k)} = {_value(v, multiline)}")
    for k, v in later:
        out.append("")
        _table(out, f"[{prefix}{_key(k)}]", v, "inline", multiline, f"{prefix}{_key(k)}.")


def to_toml(data: dict[str, Any], layout: dict[str, Any]) -> str:
    out: list[str] = ["# generated"]
    sensors = data.get("sensor")
    tables = {k: v for k, v in data.items() if k != "sensor"}
    if isinstance(sensors, list) and layout["sensors"] == "inline-array":
        out.append("sensor = [")
        out.extend(f"  {_value(s)}," for s in sensors)
        out.append("]")
    elif sensors is not None and not isinstance(sensors, list):
        out.append(f"sensor = {_value(sensors)}")
    for name, table in tables.items():
        out.append("")
        if isinstance(table, dict):
            _table(out, f"[{_key(name)}]", table, layout["sub"], layout["multiline"],
                   f"{_key(name)}.")
        else:
            out.insert(1, f"{_key(name)} = {_value(table)}")
    if isinstance(sensors, list) and layout["sensors"] == "tables":
        for s in sensors:
            out.append("")
            if isinstance(s, dict):
                _table(out, "[[sensor]]", s, layout["sub"], layout["multiline"], "sensor.")
    return "\n".join(out) + "\n"


# -- the configurations -------------------------------------------------------------------------
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
ANY_VALUE = st.one_of(
    TEXT, st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.dates(),
    st.lists(st.integers(-5, 5), max_size=3), st.builds(dict), st.builds(lambda: {"x": 1}))


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return [p for i, v in enumerate(node) for p in _leaves(v, (*path, i))]
    return [path] if path else []


def _tables(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [path, *(p for k, v in node.items() for p in _tables(v, (*path, k)))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _tables(v, (*path, i))]
    return []


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        data = data[p]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


@st.composite
def mutation(draw: st.DrawFn, data: dict[str, Any]) -> None:
    """Change ``data`` the way an installer might get it wrong."""
    kind = draw(st.sampled_from([
        "type", "quoted", "range", "unknown", "typo", "enum", "missing", "duplicate", "pins",
        "file", "reference", "retired"]))
    leaves = [p for p in _leaves(data) if p]
    sensors = [s for s in data.get("sensor", []) if isinstance(s, dict)] \
        if isinstance(data.get("sensor"), list) else []
    if kind in ("type", "quoted", "range", "enum", "missing") and leaves:
        path = draw(st.sampled_from(leaves))
        old = _get(data, path)
        if kind == "type":
            _set(data, path, draw(ANY_VALUE))
        elif kind == "quoted":
            _set(data, path, str(old).lower() if isinstance(old, bool) else str(old))
        elif kind == "range" and isinstance(old, int | float) and not isinstance(old, bool):
            _set(data, path, draw(st.sampled_from([-1, 0, -old, old * 1e6 + 1e6, 2**40])))
        elif kind == "enum" and isinstance(old, str):
            _set(data, path, draw(TEXT))
        elif kind == "missing":
            del _get(data, path[:-1])[path[-1]]
    elif kind in ("unknown", "typo"):
        tables = [p for p in _tables(data) if isinstance(_get(data, p), dict)]
        table = _get(data, draw(st.sampled_from(tables)))
        if kind == "typo" and table:
            near = draw(st.sampled_from(sorted(table)))
            name = near[:-1] or near + "x"
        else:
            name = draw(NAMES)
        if name not in table:
            table[name] = draw(ANY_VALUE)
    elif kind == "duplicate" and len(sensors) >= 2:
        i, j = draw(st.lists(st.integers(0, len(sensors) - 1), min_size=2, max_size=2,
                             unique=True))
        sensors[j]["name"] = sensors[i].get("name", "x")
    elif kind == "pins":
        pin = draw(st.integers(0, 27))
        where = draw(st.sampled_from(["hcsr04", "relay", "fall"]))
        if where == "hcsr04" and isinstance(data.get("sensor"), list):
            data["sensor"].append(
                {"type": "hcsr04", "name": "sonar", "trigger": pin, "echo": draw(
                    st.sampled_from([pin, 23, 24])), "use": {"role": "distance"},
                 "prefix": "zz."})
        elif where == "relay" and isinstance(data.get("sensor"), list):
            data["sensor"].append(
                {"type": "cse7766", "name": "plug", "port": "/dev/ttyAMA0", "prefix": "pl.",
                 "plug": {"relay_pin": pin}})
        elif isinstance(data.setdefault("fall", {}), dict):
            data["fall"][draw(st.sampled_from(["button_pin", "buzzer_pin", "led_pin"]))] = pin
    elif kind == "file":
        table, key = draw(st.sampled_from([
            ("fall", "model"), ("mqtt", "ca_file"),
            ("mqtt", "credentials_file"), ("commands", "hmac_key_file"),
            ("node", "state_dir"), ("spool", "path")]))
        if isinstance(data.setdefault(table, {}), dict):
            data[table][key] = draw(st.sampled_from([
                "/nonexistent/x.tflite", "/proc/spool.db", "/dev/null", "/", "relative/file"]))
    elif kind == "reference" and isinstance(data.setdefault("fire", {}), dict):
        data["fire"]["sensors"] = [draw(NAMES)]
    elif kind == "retired" and isinstance(data.setdefault("fire", {}), dict):
        # accepted and unused since 2026.12 (no fire model): whatever it names, no file check
        data["fire"]["model"] = draw(st.one_of(TEXT, st.sampled_from(
            ["none", "/nonexistent/x.tflite", "/dev/null", "/"])))


@st.composite
def configurations(draw: st.DrawFn, samples: list[dict[str, Any]], state: str
                   ) -> tuple[str, bool]:
    chosen = draw(st.lists(st.integers(0, len(samples) - 1), max_size=4, unique=True))
    sensors: list[dict[str, Any]] = []
    addresses: set[Any] = set()
    for n, i in enumerate(chosen):
        table = copy.deepcopy(samples[i])
        if "address" in table:
            if table["address"] in addresses:
                continue
            addresses.add(table["address"])
        table["name"] = f"s{n}"
        table["prefix"] = f"p{n}."
        sensors.append(table)
    data: dict[str, Any] = {"node": {"id": "fuzz-1", "state_dir": state}}
    if draw(st.booleans()):
        data["report"] = {"interval_s": draw(st.integers(1, 3600)),
                          "stats": ["mean", "max"], "format": "senml-json"}
    if draw(st.booleans()):
        data["mqtt"] = {"host": "", "port": 8883, "keepalive_s": 60}
    if draw(st.booleans()):
        data["spool"] = {"max_bytes": 1048576, "batch_s": 0.5}
    if draw(st.booleans()):
        data["fall"] = {"cancel_s": 30, "pins": "emulator"}
    if draw(st.booleans()):
        data["fire"] = {"threshold_scale": draw(st.floats(0.25, 4.0))}
    data["sensor"] = sensors
    mutations = draw(st.integers(0, 3))
    for _ in range(mutations):
        draw(mutation(data))
    layout = {"sensors": draw(st.sampled_from(["tables", "inline-array"])),
              "sub": draw(st.sampled_from(["table", "inline", "dotted"])),
              "multiline": draw(st.booleans())}
    text = to_toml(data, layout)
    edit = draw(st.sampled_from(["none"] * 8 + ["duplicate", "drop"]))
    if edit != "none":  # a line pasted twice or lost: often TOML's own errors
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, len(lines) - 1))
        lines[i:i + 1] = [lines[i]] * (2 if edit == "duplicate" else 0)
        text = "".join(lines)
    return text, mutations == 0 and edit == "none"


def _check(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli(["config", "check", *extra, str(path)])
    return rc, out.getvalue(), err.getvalue()


def _assert_errors_name_a_key_and_a_line(text: str, err: str, name: str) -> None:
    lines = text.splitlines()
    try:
        data: Any = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = None
    for row in err.splitlines():
        m = _LINE.match(row)
        assert m and m.group("file") == name, row
        rest = m.group("rest")
        if m.group("line"):
            assert 1 <= int(m.group("line")) <= len(lines), row
        if data is None:  # a syntax error: tomllib's line, no key
            assert "not valid TOML" in rest and m.group("line"), row
            continue
        k = _KEY.match(rest)
        assert k, f"no key: {row}"
        parts = re.findall(r"[^.\[\]]+|\[\d+\]", k.group("key"))
        if not m.group("line"):  # only a key whose table is not in the file has no line
            assert parts[0] not in data, row
            continue
        node: Any = data
        written = True
        for p in parts:
            if p.startswith("["):
                idx = int(p[1:-1])
                written = isinstance(node, list) and idx < len(node)
                node = node[idx] if written else None
            else:
                written = isinstance(node, dict) and p in node
                node = node[p] if written else None
            if not written:
                break
        if written and not parts[-1].startswith("["):
            # the key as written: bare, quoted, dotted or in an inline table
            at = lines[int(m.group("line")) - 1]
            assert parts[-1] in at or _string(parts[-1]) in at, f"{row}\n  line: {at!r}"


def _assert_warnings_name_a_line(text: str, err: str, name: str) -> None:
    """A valid file prints nothing on stderr but its warnings: ``[fire] model`` set."""
    lines = text.splitlines()
    for row in err.splitlines():
        m = _WARNING.match(row)
        assert m and m.group("file") == name, row
        assert m.group("rest").startswith("[fire] model is no longer used"), row
        assert m.group("line") and "model" in lines[int(m.group("line")) - 1], row


@settings(max_examples=250, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
@example(data=None)
def test_config_check_never_fails_badly(machine: tuple[str, str], data: Any) -> None:
    tty, state = machine
    samples = _samples(tty)
    if data is None:  # every device at once, as its README has it: valid
        seen: set[Any] = set()
        sensors = []
        for n, s in enumerate(samples):
            if s.get("address") in seen:
                continue
            seen.add(s.get("address"))
            sensors.append({**s, "name": f"s{n}", "prefix": f"p{n}."})
        text = to_toml({"node": {"id": "all", "state_dir": state}, "sensor": sensors},
                       {"sensors": "tables", "sub": "table", "multiline": False})
        valid = True
    else:
        text, valid = data.draw(configurations(samples, state))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(text, encoding="utf-8")
        for extra in ((), ("--no-devices",)):
            rc, out, err = _check(path, *extra)
            assert rc in (0, 78), f"exit {rc}\n{err}\n{text}"
            assert "Traceback" not in err and "internal error" not in err, err
            if rc == 0:
                assert out.startswith(f"{path}: OK")
                _assert_warnings_name_a_line(text, err, str(path))
            else:
                assert err and not out
                _assert_errors_name_a_key_and_a_line(text, err, str(path))
            if valid:
                assert rc == 0, f"{err}\n{text}"


@pytest.mark.parametrize("argv", [
    ["config", "check"], ["config", "check", "a", "b"], ["config", "check", "--bogus", "x"],
    ["config", "show"], ["config"],
])
def test_usage_errors(argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = cli(argv)
        except SystemExit as exc:
            rc = exc.code
    assert rc == 64 and "Traceback" not in err.getvalue()
