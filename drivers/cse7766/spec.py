"""Chipsea CSE7766 power meter (Sonoff POW R2/S31) as the rest of citynode sees it
(README.md beside this file)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from .. import quantities as q
from ..families.meter import Meter
from ..spec import BuildContext, DeviceSpec, FrameCodec, describe_frames


class CSE7766Config(Meter, tag="cse7766", kw_only=True):
    """A CSE7766 plug: the keys every meter has; the chip measures no frequency or power
    factor, so those are refused here rather than when the daemon opens the port."""

    quantities: list[Literal["w", "v", "a", "kwh"]] = msgspec.field(  # type: ignore[assignment]
        default_factory=lambda: ["w", "kwh"])


def _build(cfg: CSE7766Config, ctx: BuildContext) -> Any:
    from .device import CSE7766

    return CSE7766(cfg.port, read_interval_s=cfg.read_interval_s,
                   quantities=tuple(cfg.quantities))


def _emulator(cfg: CSE7766Config) -> Any:
    """A kettle on the plug: a tracebase day when the data set is at hand, else a built-in
    kettle profile (drivers.emulation.plug)."""
    from ..emulation.plug import tracebase_source
    from .emulator import CSE7766Model

    return CSE7766Model(tracebase_source("WaterKettle"))


def _frames() -> FrameCodec:
    from .codec import Frame, FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, describe_frames((Frame,)))


SPEC = DeviceSpec(
    type="cse7766",
    title="Chipsea CSE7766 power meter, Sonoff POW R2/S31 (UART 4800 8E1)",
    kind="power",
    bus="uart",
    config=CSE7766Config,
    quantities={
        "w": q.W.within(0, 3600),
        "v": q.V.within(80, 280),
        "a": q.A.within(0, 16),
        "kwh": q.KWH.any_range,
    },
    build=_build,
    frames=_frames,
    emulator=_emulator,
    silent_hint="the CSE7766 runs at 4800 8E1 and only streams with mains connected",
    doctor_values=("v",),
)
