"""Nova Fitness SDS011 as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .. import quantities as q
from ..schema import ReadInterval, SampleS, SerialSensor, Warmup
from ..spec import BuildContext, DeviceSpec, FrameCodec, rejected


class SDS011Config(SerialSensor, tag="sds011", kw_only=True):
    mode: Literal["active", "query"] = "query"
    # The laser and fan wear out, so by default the sensor sleeps between reports and
    # wakes warmup_s + sample_s before each report is due.
    duty_cycle: bool = True
    sample_s: SampleS = 20.0
    read_interval_s: ReadInterval = 2.0
    warmup_s: Warmup = 15.0
    quantities: list[Literal["pm25", "pm10"]] = msgspec.field(
        default_factory=lambda: ["pm25", "pm10"])


def _build(cfg: SDS011Config, ctx: BuildContext) -> Any:
    from .device import SDS011

    return SDS011(cfg.port, mode=cfg.mode, warmup_s=cfg.warmup_s,
                  read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))


def _emulator(cfg: SDS011Config) -> Any:
    """The recorded PMS5003 log in the SDS011's tenths (else a made-up urban day, seeded by
    the sensor's name); the emulated fan settles within the configured warm-up."""
    import zlib

    from .emulator import WARMUP_S, SDS011Model, default_source

    seed = zlib.crc32(cfg.name.encode())
    return SDS011Model(default_source(seed), seed=seed, warmup_s=min(cfg.warmup_s, WARMUP_S))


def _describe(ev: Any) -> tuple[dict[str, Any], int]:
    from .codec import Frame, Reply

    if isinstance(ev, Frame):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, Reply):
        return {"type": "ack", "cmd": f"{ev.cmd:02x}", **ev.as_dict()}, len(ev.raw)
    return rejected(ev)


def _frames() -> FrameCodec:
    from .codec import FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, _describe)


SPEC = DeviceSpec(
    type="sds011",
    title="Nova Fitness SDS011 (UART 9600 8N1)",
    kind="particulate",
    bus="uart",
    config=SDS011Config,
    quantities={"pm25": q.PM25.within(0, 999.9), "pm10": q.PM10.within(0, 999.9)},
    build=_build,
    frames=_frames,
    emulator=_emulator,
    silent_hint="the SDS011 needs 5 V",
)
