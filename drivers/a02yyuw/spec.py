"""DFRobot A02YYUW (SEN0311) ultrasonic ranger as the rest of citynode sees it (README.md
beside this file)."""

from __future__ import annotations

from typing import Any

from .. import quantities as q
from ..families.ranger import Ranger
from ..schema import Port
from ..spec import BuildContext, DeviceSpec, FrameCodec, describe_frames


class A02YYUWConfig(Ranger, tag="a02yyuw", kw_only=True):
    port: Port


def _build(cfg: A02YYUWConfig, ctx: BuildContext) -> Any:
    from .device import A02YYUW

    return A02YYUW(cfg.port, read_interval_s=cfg.read_interval_s)


def _emulator(cfg: A02YYUWConfig) -> Any:
    """A day of parking under the sensor, seeded by the sensor's name."""
    from ..emulation.scenes import scene_for
    from .emulator import A02YYUWModel

    return A02YYUWModel(scene_for(cfg.name))


def _frames() -> FrameCodec:
    from .codec import Frame, FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, describe_frames((Frame,)))


SPEC = DeviceSpec(
    type="a02yyuw",
    title="DFRobot A02YYUW ultrasonic distance, FF H L SUM in mm (UART 9600 8N1)",
    aliases=("sen0311",),
    kind="distance",
    bus="uart",
    config=A02YYUWConfig,
    quantities={"d": q.D.within(0.03, 4.5)},
    build=_build,
    frames=_frames,
    emulator=_emulator,
)
