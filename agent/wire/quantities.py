"""The catalogue of record names: what each means, its unit and its resolution.

Payloads leave units implicit to stay small; this table (mirrored in
docs/payload.md) is the contract that makes them explicit. A record name is
``[prefix.]quantity[:stat]`` for measurements and ``sensor:n`` / ``sensor:q``
for a sensor's sample count and quality flags.
"""

from __future__ import annotations

from drivers import quantities as physical
from drivers import spec

Quantity = spec.Quantity

#: The node's own records (health, detectors); the sensors' quantities come from the
#: device specs (drivers/<device>/spec.py), defined once in :mod:`drivers.quantities`.
_NODE: dict[str, Quantity] = {
    "fall": Quantity("/", 0.01, "fall score, 0..1", ""),
    "uptime": Quantity("s", 1, "seconds since the daemon started"),
    "cpu": Quantity("%", 0.1, "daemon CPU use since the previous report (100 = one core)"),
    "rss": Quantity("B", 1, "daemon resident memory"),
    "disk_free": Quantity("B", 1, "free space where the spool lives"),
    "spool": Quantity("", 1, "messages waiting in the spool"),
    "spool_bytes": Quantity("B", 1, "bytes waiting in the spool"),
    "evicted_tele": Quantity("", 1, "telemetry messages evicted since the spool was created"),
    "evicted_ev": Quantity("", 1, "event messages evicted since the spool was created"),
    "reconnects": Quantity("", 1, "broker reconnects since start"),
    "historical": Quantity("", 1, "messages sent late (after an outage) since start"),
    "cmd_ok": Quantity("", 1, "downlink commands accepted since start"),
    "cmd_refused": Quantity("", 1, "downlink commands refused since start"),
    "backlog": Quantity("", 1, "messages an uplink has yet to deliver (<uplink>.backlog)"),
}


def _catalogue() -> dict[str, Quantity]:
    """The devices' vocabulary (every quantity of :mod:`drivers.quantities`, by its record
    name, whether or not a catalogued device measures it yet), then the node's own."""
    measured = {name.lower(): q for name, q in vars(physical).items()
                if isinstance(q, Quantity)}
    return {**measured, **_NODE}


#: Every record name's quantity: what the devices measure, then the node's own.
CATALOGUE: dict[str, Quantity] = _catalogue()
#: Per-sensor bookkeeping records.
COUNT = Quantity("", 1, "samples aggregated in the report window")
FLAGS = Quantity("", 1, "quality flags bitmask (docs/payload.md)")


BAY_MASK = Quantity("", 1, "parking bays bitmask: bit i = i-th configured bay (docs/parking.md)")
FILL = Quantity("%", 0.1, "bin fill level")
AQ_BAND = Quantity("", 1, "Korean air-quality bands: 10 x PM2.5 band + PM10 band (1-4)")
#: People counting (agent/features/counting.py): ``<sensor>:in`` and the others are the
#: catalogue's quantities of those names; ``<sensor>:cq`` the counts' quality flags.
COUNTING = ("in", "out", "ppl", "pres")
COUNTING_FLAGS = Quantity("", 1, "people-counting quality flags bitmask (docs/counting.md)")


def lookup(name: str) -> Quantity | None:
    """The quantity behind a record name, ignoring any prefix and stat suffix."""
    base, _, stat = name.partition(":")
    if stat == "n":
        return COUNT
    if stat == "q":
        return FLAGS
    if stat == "aq":
        return AQ_BAND
    if stat in ("occ", "fault"):
        return BAY_MASK
    if stat == "fill":
        return FILL
    if stat in COUNTING:
        return CATALOGUE[stat]
    if stat == "cq":
        return COUNTING_FLAGS
    return CATALOGUE.get(base.rsplit(".", 1)[-1])


def resolution(name: str) -> float | None:
    q = lookup(name)
    return q.resolution if q else None


def unit(name: str) -> str:
    q = lookup(name)
    return q.unit if q else ""
