"""The one shape of machine-readable output (``--json``) shared by ``config check``,
``doctor`` and ``status`` (docs/doctor.md "Machine-readable output").

Every such command prints exactly one JSON object on stdout, whatever its exit code
(only a usage error, exit 64, prints nothing there)::

    {"command": "doctor", "ok": false, "exit": 1, "summary": "18 results: ...",
     "counts": {"OK": 15, "WARN": 2, "FAIL": 1},
     "rows": [{"name": ..., "target": ..., "status": "FAIL", "detail": ..., "hint": ...}]}

``command``, ``ok`` (``exit == 0``), ``exit`` (the process's exit code) and ``summary``
(one line) are always there; a command made of findings adds ``counts`` and ``rows``; a
command about one object puts that object's fields beside them (``status``: the snapshot).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

#: The row verdicts, best first.
STATUSES = ("OK", "WARN", "FAIL")
#: The keys every document has, and every row has.
ENVELOPE_KEYS = ("command", "ok", "exit", "summary")
ROW_KEYS = ("name", "target", "status", "detail", "hint")


def document(command: str, exit_code: int, summary: str, *,
             rows: Iterable[Mapping[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """The object for one run: the envelope, then ``fields``, then (if given) the rows.

    ``fields`` may not reuse an envelope key: a consumer relies on those meaning the same
    for every command.
    """
    clash = sorted(set(fields) & {*ENVELOPE_KEYS, "counts", "rows"})
    if clash:
        raise ValueError(f"fields reuse envelope keys: {clash}")
    doc: dict[str, Any] = {"command": command, "ok": exit_code == 0, "exit": exit_code,
                           "summary": summary, **fields}
    if rows is not None:
        listed = [dict(r) for r in rows]
        doc["counts"] = {s: sum(r.get("status") == s for r in listed) for s in STATUSES}
        doc["rows"] = listed
    return doc


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None: strict JSON parsers (jq, browsers)
    refuse Python's ``NaN`` literal."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(doc: Mapping[str, Any]) -> str:
    """The text to print: strict JSON (no NaN), indented, UTF-8 kept, one trailing newline."""
    try:
        text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(doc), indent=1, ensure_ascii=False, allow_nan=False)
    return text + "\n"
