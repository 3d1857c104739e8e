"""The catalogue of record names: what each means, its unit and its resolution.

Payloads leave units implicit to stay small; this table (mirrored in
docs/payload.md) is the contract that makes them explicit. A record name is
``[prefix.]quantity[:stat]`` for measurements and ``sensor:n`` / ``sensor:q``
for a sensor's sample count and quality flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quantity:
    unit: str  # SenML unit (RFC 8428 section 12.1), "" where none is registered
    resolution: float
    description: str
    ipso: str = ""  # LwM2M/IPSO object/resource with the same meaning


CATALOGUE: dict[str, Quantity] = {
    "pm1": Quantity("ug/m3", 1, "PM1.0 mass concentration (atmospheric)", "3428/5"),
    "pm25": Quantity("ug/m3", 1, "PM2.5 mass concentration (atmospheric)", "3428/3"),
    "pm10": Quantity("ug/m3", 1, "PM10 mass concentration (atmospheric)", "3428/1"),
    "pm1_cf1": Quantity("ug/m3", 1, "PM1.0, Plantower CF=1 'standard particle'"),
    "pm25_cf1": Quantity("ug/m3", 1, "PM2.5, Plantower CF=1 'standard particle'"),
    "pm10_cf1": Quantity("ug/m3", 1, "PM10, Plantower CF=1 'standard particle'"),
    "n0_3": Quantity("", 1, "particles > 0.3 um per 0.1 L"),
    "n0_5": Quantity("", 1, "particles > 0.5 um per 0.1 L"),
    "n1_0": Quantity("", 1, "particles > 1.0 um per 0.1 L"),
    "n2_5": Quantity("", 1, "particles > 2.5 um per 0.1 L"),
    "n5_0": Quantity("", 1, "particles > 5.0 um per 0.1 L"),
    "n10": Quantity("", 1, "particles > 10 um per 0.1 L"),
    "pm4": Quantity("ug/m3", 1, "PM4.0 mass concentration (SPS30)"),
    "nc0_5": Quantity("/cm3", 0.01, "particles 0.3-0.5 um per cm3 (SPS30)"),
    "nc1_0": Quantity("/cm3", 0.01, "particles 0.3-1.0 um per cm3 (SPS30)"),
    "nc2_5": Quantity("/cm3", 0.01, "particles 0.3-2.5 um per cm3 (SPS30)"),
    "nc4_0": Quantity("/cm3", 0.01, "particles 0.3-4.0 um per cm3 (SPS30)"),
    "nc10": Quantity("/cm3", 0.01, "particles 0.3-10 um per cm3 (SPS30)"),
    "tps": Quantity("um", 0.001, "typical particle size (SPS30)"),
    "temp": Quantity("Cel", 0.01, "air temperature", "3303/5700"),
    "rh": Quantity("%RH", 0.1, "relative humidity", "3304/5700"),
    "pressure": Quantity("hPa", 0.01, "barometric pressure (hPa = 100 Pa; not a SenML unit)",
                         "3323/5700"),
    "w": Quantity("W", 0.1, "active power", "3328/5700"),
    "v": Quantity("V", 0.1, "mains voltage", "3316/5700"),
    "a": Quantity("A", 0.001, "current", "3317/5700"),
    "kwh": Quantity("kWh", 0.001, "energy since the meter's counter started", "3331/5805"),
    "hz": Quantity("Hz", 0.1, "mains frequency"),
    "pf": Quantity("", 0.01, "power factor, 0..1"),
    "d": Quantity("m", 0.001, "distance", "3330/5700"),
    "fall": Quantity("/", 0.01, "fall score, 0..1", ""),
    "ax": Quantity("g", 0.001,
                   "acceleration along x in g (9.80665 m/s2; not SenML's g, the gram)",
                   "3313/5702"),
    "ay": Quantity("g", 0.001,
                   "acceleration along y in g (9.80665 m/s2; not SenML's g, the gram)",
                   "3313/5703"),
    "az": Quantity("g", 0.001,
                   "acceleration along z in g (9.80665 m/s2; not SenML's g, the gram)",
                   "3313/5704"),
    "amag": Quantity("g", 0.001, "peak acceleration magnitude since the previous reading, in g"),
    "eco2": Quantity("ppm", 1, "CO2 equivalent, estimated from H2 (SGP30)"),
    "tvoc": Quantity("ppb", 1, "total volatile organic compounds (SGP30; ppb is not a SenML unit)"),
    "h2_raw": Quantity("", 1, "SGP30 raw H2 signal in ticks (lower = more gas)"),
    "ethanol_raw": Quantity("", 1, "SGP30 raw ethanol signal in ticks (lower = more gas)"),
    # Health report (topic .../health)
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
}
#: Per-sensor bookkeeping records.
COUNT = Quantity("", 1, "samples aggregated in the report window")
FLAGS = Quantity("", 1, "quality flags bitmask (docs/payload.md)")


BAY_MASK = Quantity("", 1, "parking bays bitmask: bit i = i-th configured bay (docs/parking.md)")
FILL = Quantity("%", 0.1, "bin fill level")
AQ_BAND = Quantity("", 1, "Korean air-quality bands: 10 x PM2.5 band + PM10 band (1-4)")


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
    return CATALOGUE.get(base.rsplit(".", 1)[-1])


def resolution(name: str) -> float | None:
    q = lookup(name)
    return q.resolution if q else None


def unit(name: str) -> str:
    q = lookup(name)
    return q.unit if q else ""
