"""MaxBotix MaxSonar rangers with serial output as the rest of citynode sees them (README.md
beside this file)."""

from __future__ import annotations

from typing import Any

from .. import quantities as q
from ..families.ranger import Ranger
from ..schema import Port
from ..spec import BuildContext, DeviceSpec, FrameCodec, describe_frames


class MaxBotixConfig(Ranger, tag="maxbotix", kw_only=True):
    port: Port


def _build(cfg: MaxBotixConfig, ctx: BuildContext) -> Any:
    from .device import MaxBotix

    return MaxBotix(cfg.port, read_interval_s=cfg.read_interval_s)


def _emulator(cfg: MaxBotixConfig) -> Any:
    """A free-running HRXL (R####, mm) over a day of parking, seeded by the sensor's name."""
    from ..emulation.scenes import scene_for
    from .emulator import MaxBotixModel

    return MaxBotixModel(scene_for(cfg.name))


def _frames() -> FrameCodec:
    from .codec import Frame, FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, describe_frames((Frame,)))


SPEC = DeviceSpec(
    type="maxbotix",
    title="MaxBotix MaxSonar serial R####\\r (mm) / R###\\r (cm) (UART 9600 8N1)",
    aliases=("maxsonar",),
    kind="distance",
    bus="uart",
    config=MaxBotixConfig,
    quantities={"d": q.D.within(0.3, 10.0)},
    build=_build,
    frames=_frames,
    emulator=_emulator,
)
