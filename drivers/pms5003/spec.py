"""Plantower PMS5003 (PMS7003, PMSA003) as the rest of citynode sees it (README.md beside
this file)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .. import quantities as q
from ..schema import ReadInterval, SampleS, SerialSensor, Warmup
from ..spec import BuildContext, DeviceSpec, FrameCodec, rejected

PMSQuantity = Literal[
    "pm1", "pm25", "pm10", "pm1_cf1", "pm25_cf1", "pm10_cf1",
    "n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10",
]


class PMS5003Config(SerialSensor, tag="pms5003", kw_only=True):
    mode: Literal["active", "passive"] = "passive"
    # The laser and fan wear out, so by default the sensor sleeps between reports and
    # wakes warmup_s + sample_s before each report is due.
    duty_cycle: bool = True
    sample_s: SampleS = 20.0
    read_interval_s: ReadInterval = 2.0
    warmup_s: Warmup = 30.0
    quantities: list[PMSQuantity] = msgspec.field(default_factory=lambda: ["pm1", "pm25", "pm10"])


def _build(cfg: PMS5003Config, ctx: BuildContext) -> Any:
    from .device import PMS5003

    return PMS5003(cfg.port, mode=cfg.mode, warmup_s=cfg.warmup_s,
                   read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities),
                   no_data_timeout_s=max(10.0, 3 * cfg.read_interval_s))


def _emulator(cfg: PMS5003Config) -> Any:
    """The recorded PMS5003 log (else a made-up urban day, seeded by the sensor's name); the
    emulated fan settles within the warm-up the configuration allows, so the readings the
    driver keeps are settled ones."""
    import zlib

    from .emulator import WARMUP_S, PMS5003Model, default_source

    seed = zlib.crc32(cfg.name.encode())
    return PMS5003Model(default_source(seed), seed=seed, warmup_s=min(cfg.warmup_s, WARMUP_S))


def _describe(ev: Any) -> tuple[dict[str, Any], int]:
    from .codec import Ack, Frame

    if isinstance(ev, Frame):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, Ack):
        return {"type": "ack", "cmd": f"{ev.cmd:02x}", "data": ev.data}, len(ev.raw)
    return rejected(ev)


def _frames() -> FrameCodec:
    from .codec import FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, _describe)


_PM_RANGE = (0, 1000)

SPEC = DeviceSpec(
    type="pms5003",
    title="Plantower PMS5003/PMS7003 (UART 9600 8N1)",
    aliases=("pms7003", "pmsa003"),
    kind="particulate",
    bus="uart",
    config=PMS5003Config,
    quantities={
        "pm1": q.PM1.within(*_PM_RANGE),
        "pm25": q.PM25.within(*_PM_RANGE),
        "pm10": q.PM10.within(*_PM_RANGE),
        "pm1_cf1": q.PM1_CF1.within(*_PM_RANGE),
        "pm25_cf1": q.PM25_CF1.within(*_PM_RANGE),
        "pm10_cf1": q.PM10_CF1.within(*_PM_RANGE),
        "n0_3": q.N0_3.any_range,
        "n0_5": q.N0_5.any_range,
        "n1_0": q.N1_0.any_range,
        "n2_5": q.N2_5.any_range,
        "n5_0": q.N5_0.any_range,
        "n10": q.N10.any_range,
    },
    build=_build,
    frames=_frames,
    emulator=_emulator,
    silent_hint="the PMS5003 needs 5 V for its fan (3.3 V logic)",
)
