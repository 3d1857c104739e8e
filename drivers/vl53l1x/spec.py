"""ST VL53L1X time-of-flight ranger as the rest of citynode sees it (README.md beside this
file): a plain distance sensor, or UM2600's two-zone people counter over a doorway."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..families.ranger import Ranger, RangerUse
from ..schema import I2CAddress, I2CBus, Problem, Table
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESS = 0x29
#: The chip always starts at 0x29; the driver can move it (change_address), but only until
#: it is powered down, so the configuration takes 0x29 alone.
ADDRESSES = (ADDRESS,)
Spad = Annotated[int, msgspec.Meta(ge=0, le=255)]
RoiSide = Annotated[int, msgspec.Meta(ge=4, le=16)]
Mm = Annotated[int, msgspec.Meta(ge=0, le=4000)]


class CountingZones(Table):
    """UM2600's two zones and the thresholds of the passage detector
    (:class:`agent.detectors.passage.PassageCounter`, same names)."""

    # SPAD numbers of the zones' centres (UM2555 table): zone 0, then zone 1. A walker from
    # zone 0 to zone 1 is "in". UM2600: 167 and 231 (ST's later example: 175 for zone 0).
    centres: Annotated[list[Spad], msgspec.Meta(min_length=2, max_length=2)] = (
        msgspec.field(default_factory=lambda: [167, 231]))
    roi_width: RoiSide = 8
    roi_height: RoiSide = 16
    # Someone is in a zone when its nearest range of the last `window` is under this
    # (UM2600's 2.4 m door jamb profile: 1600 mm, people taller than 0.8 m).
    threshold_mm: Mm = 1600
    # Ranges at or under this are not a person (the wraparound case of ST's reference).
    min_mm: Mm = 0
    window: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    # Nearer than this is something on the cover glass: "blind", not a person.
    blind_mm: Mm = 100
    # Swap "in" and "out" (the sensor mounted the other way round).
    reverse: bool = False


class VL53L1XConfig(Ranger, tag="vl53l1x", kw_only=True):
    # msgspec takes fields from one base only, so these are I2CSensor's keys, declared here.
    bus: I2CBus = 1
    # Only with bus = "emulator": faults to rehearse, e.g. "nack=0.05,stuck_after=60".
    emulator_faults: str = ""
    address: I2CAddress = ADDRESS
    # A doorway sensor reports distances (or counts): not a parking bay by default.
    use: RangerUse = msgspec.field(default_factory=lambda: RangerUse(role="distance"))
    # "ranging": distance d; "counting": UM2600's two zones, passages from the sample stream.
    mode: Literal["ranging", "counting"] = "ranging"
    distance_mode: Literal["short", "long"] = "long"
    timing_budget_ms: Literal[15, 20, 33, 50, 100, 200, 500] = 50
    # Start to start of measurements, at least the timing budget; unset: the budget when
    # counting, at least 100 ms when ranging.
    inter_measurement_ms: Annotated[int, msgspec.Meta(ge=15, le=10_000)] | None = None
    # Ranging mode's region of interest: width x height SPADs around a centre (UM2555).
    roi_width: RoiSide = 16
    roi_height: RoiSide = 16
    roi_centre: Spad = 199
    counting: CountingZones = msgspec.field(default_factory=CountingZones)
    # Only with bus = "emulator": "doorway" (people passing), "empty" or "covered".
    emulator_scene: Literal["doorway", "empty", "covered"] = "doorway"

    def problems(self, sensors: Sequence[Any]) -> Iterator[Problem]:
        """What the schema cannot see: the mode's budgets, the ROI fitting the array."""
        from .codec import check_roi

        yield from super().problems(sensors)
        if self.mode == "counting" and self.use.role != "distance":
            yield "use.role", 'a counting sensor watches a doorway: use.role = "distance"'
        if self.timing_budget_ms == 15 and self.distance_mode != "short":
            yield "timing_budget_ms", "15 ms exists in short distance mode only (UM2510)"
        im = self.inter_measurement_ms
        if im is not None and im < self.timing_budget_ms:
            yield "inter_measurement_ms", f"at least the timing budget ({self.timing_budget_ms} " \
                                          "ms)"
        z = self.counting
        rois: list[tuple[str, int, int, int]] = []
        if self.mode == "counting":
            if z.centres[0] == z.centres[1]:
                yield "counting.centres", "the two zones need different centres"
            rois += [("counting.centres", z.roi_width, z.roi_height, s) for s in z.centres]
            if z.threshold_mm <= max(z.min_mm, z.blind_mm):
                yield "counting.threshold_mm", "must be over min_mm and blind_mm"
        else:
            rois.append(("roi_centre", self.roi_width, self.roi_height, self.roi_centre))
        for key, width, height, centre in rois:
            try:
                check_roi(width, height, centre)
            except ValueError as exc:
                yield key, str(exc)


def _chip(cfg: VL53L1XConfig) -> Any:
    """The chip over ``emulator_scene``, seeded by the sensor's name. keep: the emulator's
    history is for tests; a day of 30 Hz measurements would not fit the daemon."""
    import zlib

    from .emulator import model_for

    return model_for(cfg.emulator_scene, zlib.crc32(cfg.name.encode()), keep=64)


def _build(cfg: VL53L1XConfig, ctx: BuildContext) -> Any:
    from ..i2cdev import bus_for
    from .device import VL53L1X

    z = cfg.counting
    return VL53L1X(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address, mode=cfg.mode,
                   distance_mode=cfg.distance_mode, timing_budget_ms=cfg.timing_budget_ms,
                   inter_measurement_ms=cfg.inter_measurement_ms,
                   roi=(cfg.roi_width, cfg.roi_height), roi_centre=cfg.roi_centre,
                   zone_centres=(z.centres[0], z.centres[1]),
                   zone_roi=(z.roi_width, z.roi_height),
                   read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities))


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """IDENTIFICATION__MODEL_ID, a 16-bit register: 0xEACC on a VL53L1X. A chip with 8-bit
    registers at 0x29 takes the address's second byte (0x0F) as a write to its register 1."""
    from smbus2 import i2c_msg

    w, r = i2c_msg.write(addr, b"\x01\x0f"), i2c_msg.read(addr, 2)
    try:
        bus.i2c_rdwr(w, r)
    except OSError:
        return None
    model = int.from_bytes(bytes(r), "big")
    return Ident("VL53L1X" if model == 0xEACC else None, f"model id 0x{model:04x} at 0x010f")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, ADDRESSES, decode_capture)


SPEC = DeviceSpec(
    type="vl53l1x",
    title="ST VL53L1X time-of-flight distance, two-zone people counting (I2C 0x29)",
    aliases=("vl53l1",),
    kind="distance",
    bus="i2c",
    addresses=ADDRESSES,
    config=VL53L1XConfig,
    # Datasheet: 40 mm to 4 m (long distance mode, in the dark).
    quantities={"d": q.D.within(0.04, 4.0)},
    build=_build,
    chip="VL53L1X",
    identify=_identify,
    frames=_frames,
    emulator=_chip,
    samples=True,
)
