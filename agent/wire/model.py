"""The node's messages before any wire format: records, packs and what formats announce.

Features, the daemon, commands and health build :class:`Record` lists; the daemon
wraps them in a :class:`Pack`; a format in :mod:`agent.wire.formats` turns a pack
into bytes. Nothing here knows SenML, CBOR or JSON, so a new output format needs
no change outside its own module. Record names and their units and resolutions
are the catalogue in :mod:`agent.wire.quantities`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.wire.topics import Topics

#: What a message is for; the uplink spools events/alarms and telemetry/health by it,
#: and a format may pick a message type by it (a birth, a data message).
Kind = Literal["event", "alarm", "telemetry", "health", "state", "result"]

#: The biggest payload the node sends or decodes, in bytes (bounds memory on both sides).
MAX_PAYLOAD = 256 * 1024


@dataclass(slots=True)
class Record:
    """One reading or fact; exactly one of value, text or flag is set."""

    name: str
    value: float | None = None
    text: str | None = None
    flag: bool | None = None
    t: float | None = None  # seconds relative to the pack's base time

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.value, self.text, self.flag)) != 1:
            raise ValueError(f"record {self.name!r} needs exactly one of value, text, flag")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"record {self.name!r} has a non-finite value {self.value}")


@dataclass(slots=True)
class Pack:
    """A message: base time (Unix s), boot session, sequence number and records.

    ``historical`` marks a pack that waited through an outage; ``kind`` is what the
    daemon built it as (None when decoded from a payload that does not say).
    """

    time: float
    session: int
    seq: int | None  # None only for the last will, which may never be published
    records: list[Record] = field(default_factory=list)
    historical: bool = False
    kind: Kind | None = None
    #: Decoded packs only: the head fields the payload did not carry ("time", "session"),
    #: as generic SenML may not; they read 0 here and ``to_readable`` leaves them out.
    missing: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a format may announce when the node connects (discovery, births)."""

    topics: Topics
    session: int
    sensors: tuple[tuple[str, str], ...] = ()  # (name, device type), as the birth lists them


def to_readable(pack: Pack) -> dict[str, Any]:
    """A resolved, human-readable view for ``citynode decode``, simulate and local-mode logs."""
    from agent.wire import quantities  # the catalogue imports every device spec: only here

    recs = []
    for r in pack.records:
        d: dict[str, Any] = {"n": r.name}
        if r.value is not None:
            res = quantities.resolution(r.name)
            if res and res >= 1 and r.value.is_integer():
                d["v"] = int(r.value)
            elif res:
                d["v"] = round(r.value, max(0, -math.floor(math.log10(res))))
            else:
                d["v"] = int(r.value) if r.value.is_integer() else r.value
            unit = quantities.unit(r.name)
            if unit:
                d["u"] = unit
        elif r.text is not None:
            d["vs"] = r.text
        else:
            d["vb"] = r.flag
        if r.t:
            d["t"] = round(pack.time + r.t, 3)
        recs.append(d)
    out: dict[str, Any] = {}
    if "time" not in pack.missing:
        out["time"] = round(pack.time, 3)
    if "session" not in pack.missing:
        out["session"] = pack.session
    if pack.seq is not None:
        out["seq"] = pack.seq
    out["records"] = recs
    if pack.historical:
        out["historical"] = True
    return out
