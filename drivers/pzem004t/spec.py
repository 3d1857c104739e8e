"""Peacefair PZEM-004T v3.0 power meter (Modbus RTU) as the rest of citynode sees it
(README.md beside this file)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .. import quantities as q
from ..families.meter import Meter
from ..spec import BuildContext, DeviceSpec, FrameCodec, rejected


class PZEM004TConfig(Meter, tag="pzem004t", kw_only=True):
    address: Annotated[int, msgspec.Meta(ge=1, le=0xF7)] = 1  # the meter's Modbus address


def _build(cfg: PZEM004TConfig, ctx: BuildContext) -> Any:
    from .device import PZEM004T

    return PZEM004T(cfg.port, address=cfg.address, read_interval_s=cfg.read_interval_s,
                    quantities=tuple(cfg.quantities))


def _emulator(cfg: PZEM004TConfig) -> Any:
    """A meter at the configured address with a kettle on it: a tracebase day when the data
    set is at hand, else a built-in kettle profile (drivers.emulation.plug)."""
    from ..emulation.plug import tracebase_source
    from .emulator import PZEM004TModel

    return PZEM004TModel(tracebase_source("WaterKettle"), address=cfg.address)


def _frames() -> FrameCodec:
    from .codec import Echo, ExceptionResponse, FrameDecoder, Measurement, Registers, Request

    def describe(ev: Any) -> tuple[dict[str, Any], int]:
        """Requests and responses of a sniffed Modbus bus; CRC failures are rejected spans
        (the codec's classes bound once: a noisy capture describes millions of events)."""
        if isinstance(ev, Request):
            return {"type": "request", **ev.as_dict()}, len(ev.raw)
        if isinstance(ev, (Measurement, Registers)):
            return {"type": "frame", **ev.as_dict()}, len(ev.raw)
        if isinstance(ev, Echo):
            return {"type": "ack", **ev.as_dict()}, len(ev.raw)
        if isinstance(ev, ExceptionResponse):
            return {"type": "exception", **ev.as_dict()}, len(ev.raw)
        return rejected(ev)

    return FrameCodec(SPEC.title, FrameDecoder, describe)


SPEC = DeviceSpec(
    type="pzem004t",
    title="Peacefair PZEM-004T v3.0 power meter, Modbus RTU requests and responses "
          "(UART 9600 8N1)",
    kind="power",
    bus="uart",
    config=PZEM004TConfig,
    quantities={
        "w": q.W.within(0, 23000),
        "v": q.V.within(80, 260),
        "a": q.A.within(0, 100),
        "kwh": q.KWH.any_range,
        "hz": q.HZ.any_range,
        "pf": q.PF.any_range,
    },
    build=_build,
    frames=_frames,
    emulator=_emulator,
    silent_hint="the PZEM-004T is powered from the mains side: no AC voltage, no answer; "
                "check sensor.address (its Modbus address)",
    doctor_values=("v",),
)
