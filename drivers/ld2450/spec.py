"""Hi-Link HLK-LD2450 24 GHz radar as the rest of citynode sees it (README.md beside this
file)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..families.counting import CountingLine
from ..schema import Problem, ReadInterval, SerialSensor
from ..spec import BuildContext, DeviceSpec, FrameCodec, rejected

#: A zone corner coordinate in metres: the radar stores signed 16-bit millimetres.
Coord = Annotated[float, msgspec.Meta(ge=-32.767, le=32.767)]
#: A rectangle by two opposite corners: [x1, y1, x2, y2] in metres, the radar's frame.
Rect = Annotated[list[Coord], msgspec.Meta(min_length=4, max_length=4)]
#: The scenes the emulator can play (drivers/ld2450/scenes.py SCENE_KINDS).
SceneKind = Literal["commuter_peak", "single_walkers", "pairs", "joggers", "cyclists",
                    "loiterers", "both_ways", "stop_on_line", "u_turns", "along_line",
                    "groups", "edge_entries", "fast_slow", "range_limits", "mixed"]


class LD2450Config(SerialSensor, tag="ld2450", kw_only=True):
    # What the driver sets on open (only what differs is written to the radar's flash).
    configure: bool = True
    tracking: Literal["multi", "single"] = "multi"
    # Off by default: anyone within Bluetooth range could reconfigure a radar in a public
    # place with Hi-Link's app.
    bluetooth: bool = False
    zone_filter: Literal["off", "include", "exclude"] = "off"
    zones: Annotated[list[Rect], msgspec.Meta(max_length=3)] = msgspec.field(
        default_factory=list)
    read_interval_s: ReadInterval = 1.0
    quantities: list[Literal["targets"]] = msgspec.field(default_factory=lambda: ["targets"])
    # citynode simulate: the scene the emulated radar plays (in a loop).
    emulator_scene: SceneKind = "mixed"
    # The counting line and the tracker (docs/counting.md): only counts leave the node.
    counting: CountingLine = msgspec.field(default_factory=CountingLine)

    def problems(self, sensors: Sequence[Any]) -> Iterator[Problem]:
        """The zone filter's rectangles agree with its mode."""
        if self.zone_filter != "off" and not self.zones:
            yield "zones", f'zone_filter = "{self.zone_filter}" needs at least one zone'
        if self.zone_filter == "off" and self.zones:
            yield "zone_filter", 'zones are given but zone_filter is "off": "include" or ' \
                                 '"exclude" them'
        for i, (x1, y1, x2, y2) in enumerate(self.zones):
            if round(x1 * 1000) == round(x2 * 1000) or round(y1 * 1000) == round(y2 * 1000):
                yield f"zones[{i}]", "a zone is two opposite corners [x1, y1, x2, y2] with " \
                                     "x1 != x2 and y1 != y2"
        if not self.configure and (self.zones or self.tracking != "multi"):
            yield "configure", "tracking and zones are set only with configure = true"
        yield from self.counting.problems()


def settings_of(cfg: LD2450Config) -> Any:
    """The radar settings a configuration asks for (the driver's :class:`Settings`)."""
    from .codec import Zone, ZoneFilter
    from .protocol import Settings

    zones = tuple(Zone(*(round(v * 1000) for v in r)) for r in cfg.zones)
    return Settings(tracking=cfg.tracking, bluetooth=cfg.bluetooth,
                    zone_filter=ZoneFilter(cfg.zone_filter, zones))


def _build(cfg: LD2450Config, ctx: BuildContext) -> Any:
    from .device import LD2450

    return LD2450(cfg.port, settings=settings_of(cfg), configure=cfg.configure,
                  read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))


def _emulator(cfg: LD2450Config) -> Any:
    """An hour of ``emulator_scene`` in a loop, seeded by the sensor's name, with the radar's
    habits."""
    import zlib

    from .emulator import LD2450Model
    from .scenes import generate

    seed = zlib.crc32(cfg.name.encode())
    return LD2450Model(generate(cfg.emulator_scene, 3600.0, seed), seed=seed, loop=True,
                       keep_sent=64)


def _describe(ev: Any) -> tuple[dict[str, Any], int]:
    from .codec import Ack, Command, Report

    if isinstance(ev, Report):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, Ack):
        return {"type": "ack", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, Command):
        return {"type": "request", **ev.as_dict()}, len(ev.raw)
    return rejected(ev)


def _frames() -> FrameCodec:
    from .codec import FrameDecoder

    return FrameCodec(SPEC.title, FrameDecoder, _describe)


SPEC = DeviceSpec(
    type="ld2450",
    title="Hi-Link HLK-LD2450 24 GHz radar, three tracked targets (UART 256000 8N1)",
    aliases=("hlk-ld2450",),
    kind="presence",
    bus="uart",
    config=LD2450Config,
    quantities={"targets": q.TARGETS.within(0, 3)},
    build=_build,
    frames=_frames,
    emulator=_emulator,
    silent_hint="the LD2450 needs 5 V and talks at 256000 baud",
    samples=True,
)
