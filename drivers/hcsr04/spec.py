"""HC-SR04 ultrasonic ranger on two GPIOs as the rest of citynode sees it (README.md beside
this file)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..families.ranger import Ranger
from ..schema import Gpio
from ..spec import BuildContext, DeviceSpec, PinUse


class HCSR04Config(Ranger, tag="hcsr04", kw_only=True):
    trigger: Gpio = 23
    echo: Gpio = 24
    # "emulator": gpiozero's mock pins with a scripted parking scene (citynode simulate)
    pins: Literal["gpio", "emulator"] = "gpio"
    max_distance_m: Annotated[float, msgspec.Meta(gt=0, le=10)] = 4.0


def _build(cfg: HCSR04Config, ctx: BuildContext) -> Any:
    """With ``pins = "emulator"``: gpiozero's mock pins answering pings from a day of
    parking under the sensor, seeded by the sensor's name."""
    from .device import HCSR04

    factory = None
    if cfg.pins == "emulator":
        from ..emulation.scenes import scene_for
        from .emulator import emulated_hcsr04

        factory, _ = emulated_hcsr04(scene_for(cfg.name), trigger=cfg.trigger, echo=cfg.echo)
    return HCSR04(cfg.trigger, cfg.echo, max_distance_m=cfg.max_distance_m,
                  read_interval_s=cfg.read_interval_s, pin_factory=factory)


def _pins(cfg: HCSR04Config) -> list[PinUse]:
    emulated = cfg.pins == "emulator"
    return [PinUse(cfg.trigger, "trigger", "output", emulated),
            PinUse(cfg.echo, "echo", "input", emulated)]


SPEC = DeviceSpec(
    type="hcsr04",
    title="HC-SR04 ultrasonic distance (GPIO trigger/echo)",
    kind="distance",
    bus="gpio",
    config=HCSR04Config,
    quantities={"d": q.D.within(0.02, 4.0)},
    build=_build,
    pins=_pins,
)
