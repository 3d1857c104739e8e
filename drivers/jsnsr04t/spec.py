"""JSN-SR04T V3 ultrasonic ranger in a UART mode as the rest of citynode sees it (README.md
beside this file)."""

from __future__ import annotations

from typing import Any

from .. import quantities as q
from ..families.ranger import Ranger
from ..schema import Port
from ..spec import BuildContext, DeviceSpec, FrameCodec, describe_frames


class JSNSR04TConfig(Ranger, tag="jsnsr04t", kw_only=True):
    port: Port


def _build(cfg: JSNSR04TConfig, ctx: BuildContext) -> Any:
    from .device import JSNSR04T

    return JSNSR04T(cfg.port, read_interval_s=cfg.read_interval_s)


def _emulator(cfg: JSNSR04TConfig) -> Any:
    """A board in the triggered mode (what the driver asks for) over a day of parking,
    seeded by the sensor's name."""
    from ..emulation.scenes import scene_for
    from .emulator import JSNSR04TModel

    return JSNSR04TModel(scene_for(cfg.name))


def _frames() -> FrameCodec:
    from .codec import Frame, FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, describe_frames((Frame,)))


SPEC = DeviceSpec(
    type="jsnsr04t",
    title="JSN-SR04T V3 ultrasonic distance, UART modes, FF H L SUM in mm (UART 9600 8N1)",
    aliases=("jsn-sr04t",),
    kind="distance",
    bus="uart",
    config=JSNSR04TConfig,
    quantities={"d": q.D.within(0.25, 6.0)},
    build=_build,
    frames=_frames,
    emulator=_emulator,
)
