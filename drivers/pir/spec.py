"""PIR motion sensor on one GPIO as the rest of citynode sees it (README.md beside this
file): presence only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..schema import Gpio, ReadInterval, Sensor, Warmup
from ..spec import BuildContext, DeviceSpec, PinUse


class PIRConfig(Sensor, tag="pir", kw_only=True):
    pin: Gpio = 4
    # True: output high on motion (HC-SR501, AM312), read with the pull-down; False: an
    # open-collector output pulled low on motion, read with the pull-up (gpiozero's pull_up).
    active_high: bool = True
    # gpiozero MotionSensor: samples per second into a queue of queue_len; active while the
    # queue's mean exceeds threshold (0..1 exclusive).
    queue_len: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    sample_rate_hz: Annotated[float, msgspec.Meta(gt=0, le=100)] = 10.0
    threshold: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    # Readings discarded after opening while the module settles (HC-SR501: about 1 min).
    warmup_s: Warmup = 60.0
    read_interval_s: ReadInterval = 1.0
    # "emulator": gpiozero's mock pins with people passing by (citynode simulate)
    pins: Literal["gpio", "emulator"] = "gpio"
    quantities: list[Literal["motion"]] = msgspec.field(default_factory=lambda: ["motion"])


def _build(cfg: PIRConfig, ctx: BuildContext) -> Any:
    """With ``pins = "emulator"``: a mock pin whose level follows people passing by, seeded
    by the sensor's name."""
    from .device import PIR

    factory = None
    if cfg.pins == "emulator":
        import zlib

        from .emulator import EndlessPresence, emulated_pir

        factory, _ = emulated_pir(EndlessPresence(zlib.crc32(cfg.name.encode())),
                                  pin=cfg.pin, active_high=cfg.active_high)
    return PIR(cfg.pin, active_high=cfg.active_high, queue_len=cfg.queue_len,
               sample_rate_hz=cfg.sample_rate_hz, threshold=cfg.threshold,
               warmup_s=cfg.warmup_s, read_interval_s=cfg.read_interval_s,
               pin_factory=factory)


def _pins(cfg: PIRConfig) -> list[PinUse]:
    return [PinUse(cfg.pin, "pin", "input", cfg.pins == "emulator")]


SPEC = DeviceSpec(
    type="pir",
    title="PIR motion sensor, presence only (GPIO)",
    aliases=("hc-sr501", "am312"),
    kind="presence",
    bus="gpio",
    config=PIRConfig,
    quantities={"motion": q.MOTION.within(0, 1)},
    build=_build,
    pins=_pins,
)
