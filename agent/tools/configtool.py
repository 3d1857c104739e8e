"""``citynode config check`` and ``citynode config show``: what the node will make of a file.

``check`` validates as the daemon does at start-up and, unless ``--no-devices``, against
this machine as the service user: device nodes, files, writable directories, security
files. Every problem is one line naming FILE:LINE and the key; exit 0 or 78 (EX_CONFIG).
``show`` prints the effective configuration: every default filled in, as TOML that
``config check`` accepts, or as JSON. ``--json`` output has the shape all citynode
commands share (agent/tools/machine.py, docs/doctor.md "Machine-readable output").
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.tools.machine import document, dumps

if TYPE_CHECKING:
    from agent.core.config import Config, ConfigError

EX_CONFIG = 78
HINT = "fix the key on that line (README.md, Configuration reference), then check again"


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def _row(exc: ConfigError, name: str, kind: str = "config") -> dict[str, Any]:
    target = f"{name}:{exc.line}" if exc.line else name
    detail = f"{exc.key}: {exc.message}" if exc.key else exc.message
    return {"name": kind, "target": target, "status": "FAIL", "detail": detail,
            "hint": exc.hint or HINT, "file": name, "line": exc.line, "key": exc.key}


class _Result(NamedTuple):
    config: Config | None
    rows: list[dict[str, Any]]  # the failed ones
    lines: list[str]  # for stderr
    code: int  # when rows: 78, or 66 for a file that cannot be read
    text: str = ""  # the file's text, once read (lines for the warnings)


def _validate(args: argparse.Namespace, *, machine: bool) -> _Result:
    """The configuration in ``args.file`` and what is wrong with it."""
    from agent.core import hostcheck
    from agent.core.config import ConfigError, check, locate, read_text

    name = _name(args.file)
    try:
        text = read_text(args.file)
    except ConfigError as exc:
        row = _row(exc, name)
        row["hint"] = "name the configuration file (or - for standard input)"
        return _Result(None, [row], [f"error: {exc}"], exc.code)
    user = hostcheck.service_user() if machine else None
    cfg, errors = check(text, name, check_devices=machine, user=user)
    # In file order, as a compiler lists them (those without a line first: the file).
    errors.sort(key=lambda e: e.line or 0)
    rows = [_row(e, name) for e in errors]
    lines = [f"error: {e}" for e in errors]
    if cfg is not None and not errors and machine and not cfg.local_mode:
        from agent.wire.security import SecurityError, validate_security

        try:
            for i, u in enumerate([cfg.mqtt] * bool(cfg.mqtt.host) + list(cfg.uplink)):
                where = "mqtt." if u is cfg.mqtt else f"uplink[{i - bool(cfg.mqtt.host)}]."
                try:
                    validate_security(u)
                except SecurityError as exc:
                    raise SecurityError(exc.what.replace("mqtt.", where), exc.path,
                                        exc.problem, exc.fix) from None
        except SecurityError as exc:
            key = exc.key
            err = ConfigError(str(exc), path=name, key=key, hint=exc.fix,
                              line=locate(text, key) if key else None)
            rows.append(_row(err, name, "security"))
            lines.append(f"error: {err}")
    return _Result(cfg, rows, lines, EX_CONFIG, text)


def _verdict(cfg: Config) -> str:
    mode = "local mode (no broker)" if cfg.local_mode else ", ".join(
        f"broker {u.host}:{u.port}" + (f" ({u.name}, {u.format})" if cfg.uplink else "")
        for u in cfg.uplinks())
    return (f"node {cfg.node.id}, {len(cfg.sensor)} sensor(s), {mode}, "
            f"report every {cfg.report.interval_s:g} s as {cfg.report.format}")


#: Control characters in a value quoted by an error ("\x1e" as a port) are written as
#: escapes: one problem stays one line, whatever the file holds.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def _failed(args: argparse.Namespace, command: str, result: _Result) -> int:
    name = _name(args.file)
    for line in result.lines:
        print(line.translate(_ESCAPES), file=sys.stderr)
    if args.json:
        n = len(result.rows)
        sys.stdout.write(dumps(document(command, result.code, f"{name}: {n} error"
                                        + ("s" if n != 1 else ""), rows=result.rows,
                                        file=name)))
    return result.code


def check_main(args: argparse.Namespace) -> int:
    """``citynode config check FILE|- [--no-devices] [--json]``: exit 0, 66 (the file cannot
    be read) or 78 (invalid)."""
    result = _validate(args, machine=not args.no_devices)
    cfg = result.config
    if result.rows or cfg is None:
        return _failed(args, "config check", result)
    name = _name(args.file)
    summary = f"{name}: OK - {_verdict(cfg)}"
    warnings = _warnings(cfg, name, result.text)
    if not args.no_devices:  # the machine: can an update ever verify here?
        warnings += _update_keys_warning(cfg, name, result.text)
    for w in warnings:  # accepted settings that do nothing: the file stays valid (exit 0)
        print(f"warning: {w['target']}: {w['detail']}", file=sys.stderr)
    if args.json:
        row = {"name": "config", "target": name, "status": "OK", "detail": _verdict(cfg),
               "hint": "", "file": name, "line": None, "key": ""}
        sys.stdout.write(dumps(document("config check", 0, summary, rows=[row, *warnings],
                                        file=name)))
    else:
        print(summary)
    return 0


def _warnings(cfg: Config, name: str, text: str) -> list[dict[str, Any]]:
    """WARN rows for the settings :func:`agent.core.config.notices` names, with their line."""
    from agent.core.config import locate, notices

    rows = []
    for key, why in notices(cfg):
        line = locate(text, key)
        rows.append({"name": "config", "target": f"{name}:{line}" if line else name,
                     "status": "WARN", "detail": why, "hint": f"remove {key} from the file",
                     "file": name, "line": line, "key": key})
    return rows


def _update_keys_warning(cfg: Config, name: str, text: str) -> list[dict[str, Any]]:
    """A WARN row when [update] is on but no fleet key is pinned: every update would be
    refused (agent/update/bundle.py)."""
    from agent.core.config import locate
    from agent.update.bundle import update_keys_problem

    why = update_keys_problem(cfg.update.enabled, cfg.update.keys_dir)
    if why is None:
        return []
    line = locate(text, "update.enabled")
    return [{"name": "config", "target": f"{name}:{line}" if line else name, "status": "WARN",
             "detail": why, "hint": "citynode provision --fleet-key FILE.pub (or [update] "
             "enabled = false)", "file": name, "line": line, "key": "update.keys_dir"}]


# -- show -----------------------------------------------------------------------------------
def effective(cfg: Config) -> dict[str, str]:
    """What empty settings stand for on this machine, by key."""
    state = cfg.node.resolved_state_dir()
    m = cfg.mqtt
    out = {"node.state_dir": str(state),
           "spool.path": cfg.spool.path or str(state / "spool.db"),
           "mqtt.client_id": m.client_id or f"{m.prefix.replace('/', '-')}-{cfg.node.id}"}
    if cfg.fall.model == "":  # [fire] model is unused: fire detection runs on rules
        out["fall.model"] = "the model shipped with citynode"
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _string(s: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, but for DEL)."""
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()
                               if x is not None) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _table(out: list[str], path: list[str], table: dict[str, Any], notes: dict[str, str],
           *, array: bool = False) -> None:
    """One table and the tables under it; None values (no TOML null) become comments."""
    dotted = ".".join(path)
    out.append("")
    out.append(f"[[{dotted}]]" if array else f"[{dotted}]")
    subs: list[tuple[str, Any]] = []
    for k, v in table.items():
        if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict)):
            subs.append((k, v))
        elif v is None:
            out.append(f"# {_key(k)}: not set")
        else:
            note = notes.get(f"{dotted}.{k}")
            out.append(f"{_key(k)} = {_value(v)}" + (f"  # effective: {note}" if note else ""))
    for k, v in subs:
        if isinstance(v, dict):
            _table(out, [*path, _key(k)], v, notes)
        else:
            for item in v:
                _table(out, [*path, _key(k)], item, notes, array=True)


def to_toml(cfg: Config, name: str) -> str:
    """The configuration as TOML with every default written out."""
    import msgspec

    data = msgspec.to_builtins(cfg)
    notes = effective(cfg)
    out = [f"# citynode config show {name}: the effective configuration, every default "
           "filled in"]
    arrays = [(k, v) for k, v in data.items() if isinstance(v, list)]  # [[sensor]], [[uplink]]
    for k, v in data.items():
        if not isinstance(v, list):
            _table(out, [_key(k)], v, notes)
    for k, tables in arrays:
        for table in tables:
            _table(out, [_key(k)], table, notes, array=True)
    return "\n".join(out) + "\n"


def show_main(args: argparse.Namespace) -> int:
    """``citynode config show FILE|- [--json]``: exit 0, 66 (the file cannot be read) or
    78 (invalid)."""
    result = _validate(args, machine=False)
    cfg = result.config
    if result.rows or cfg is None:
        return _failed(args, "config show", result)
    name = _name(args.file)
    if args.json:
        import msgspec

        doc = document("config show", 0, f"{name}: {_verdict(cfg)}", file=name,
                       config=msgspec.to_builtins(cfg), effective=effective(cfg))
        sys.stdout.write(dumps(doc))
    else:
        sys.stdout.write(to_toml(cfg, name))
    return 0
