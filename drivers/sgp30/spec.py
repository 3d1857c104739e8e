"""Sensirion SGP30 gas sensor as the rest of citynode sees it (README.md beside this file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .. import quantities as q
from ..schema import I2CAddress, I2CSensor, Problem, ReadInterval
from ..spec import BuildContext, CaptureCodec, DeviceSpec, Ident, Sleep

ADDRESS = 0x58  # fixed in the chip

SGP30Quantity = Literal["eco2", "tvoc", "h2_raw", "ethanol_raw"]


class SGP30Config(I2CSensor, tag="sgp30", kw_only=True):
    """Sensirion SGP30 gas sensor (drivers/sgp30/README.md): eCO2, TVOC, raw H2 and ethanol."""

    address: I2CAddress = 0x58  # fixed in the chip; anything else is refused
    # The chip's baseline algorithm needs measure_iaq every second: only 1.0 is accepted.
    read_interval_s: ReadInterval = 1.0
    raw_every: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 1  # raw signals every N reads
    # Name of an sht3x or bme280 sensor in this file: its temp and rh compensate humidity.
    humidity_from: str = ""
    # Kept across restarts; default <state_dir>/sgp30-<name>-baseline.json (relative: in it).
    baseline_file: str = ""
    # Only with bus = "emulator": "smoke" replays the smoke dataset if ../shared is present.
    emulator_source: Literal["quiet", "smoke"] = "quiet"
    quantities: list[SGP30Quantity] = msgspec.field(
        default_factory=lambda: ["eco2", "tvoc", "h2_raw", "ethanol_raw"])

    def resolved_baseline_file(self, state_dir: Path) -> Path:
        return state_dir / (self.baseline_file or f"sgp30-{self.name}-baseline.json")

    def problems(self, sensors: Sequence[Any]) -> Iterator[Problem]:
        """The fixed address, the 1 Hz, and the climate sensor it takes humidity from."""
        if self.address != ADDRESS:
            yield "address", "the SGP30's address is fixed at 0x58"
        if self.read_interval_s != 1.0:
            yield "read_interval_s", ("must be 1.0: the SGP30's baseline algorithm needs a "
                                      "measurement every second")
        if self.emulator_source != "quiet" and self.bus != "emulator":
            yield "emulator_source", 'only for bus = "emulator"'
        if not self.humidity_from:
            return
        from ..catalogue import spec_of, specs

        # The device types that can compensate: climate sensors measuring temp and rh.
        climate = [s.type for s in specs().values()
                   if s.kind == "climate" and {"temp", "rh"} <= s.quantities.keys()]
        names = " or ".join([", ".join(climate[:-1]), climate[-1]] if len(climate) > 1
                            else climate)
        src = next((x for x in sensors if x.name == self.humidity_from), None)
        if src is None:
            yield "humidity_from", (f"no sensor named '{self.humidity_from}' in this file "
                                    f"(name an {names} sensor, or leave it empty)")
        elif spec_of(src).type not in climate:
            yield "humidity_from", (f"'{self.humidity_from}' is a {spec_of(src).type} sensor, "
                                    f"not a climate sensor ({names})")
        elif not {"temp", "rh"} <= set(src.quantities):
            yield "humidity_from", (f"'{self.humidity_from}' must measure both temp and rh "
                                    "(add them to its quantities)")


def _chip(cfg: SGP30Config) -> Any:
    from .emulator import SGP30Model, default_source

    return SGP30Model(default_source(cfg.emulator_source, seed=None))


def _humidity(ctx: BuildContext, name: str) -> Callable[[], tuple[float, float] | None]:
    """The latest (temp, rh) of sensor ``name``, or None while it has none."""
    def read() -> tuple[float, float] | None:
        v = ctx.latest(name)
        if v is None or "temp" not in v or "rh" not in v:
            return None
        return v["temp"], v["rh"]

    return read


def _build(cfg: SGP30Config, ctx: BuildContext) -> Any:
    """The baseline file lives in the state directory (None: kept in memory only, unless
    ``baseline_file`` is absolute); humidity comes from ``humidity_from``'s readings."""
    from ..i2cdev import bus_for
    from .device import SGP30

    path = None
    if ctx.state_dir is not None or Path(cfg.baseline_file).is_absolute():
        path = cfg.resolved_baseline_file(ctx.state_dir or Path("/"))
    humidity = _humidity(ctx, cfg.humidity_from) if cfg.humidity_from else None
    return SGP30(bus_for(cfg, lambda: _chip(cfg)), address=cfg.address,
                 read_interval_s=cfg.read_interval_s, quantities=tuple(cfg.quantities),
                 raw_every=cfg.raw_every, baseline_path=path, humidity_source=humidity)


def _identify(bus: Any, addr: int, sleep: Sleep) -> Ident | None:
    """The feature set, whose product type is 0 on an SGP30 (CRC-checked)."""
    from ..sensirion import read_after_command, unpack_words
    from .codec import GET_FEATURE_SET

    raw = read_after_command(bus, addr, GET_FEATURE_SET, 1, 0.010, sleep)
    if raw is None:
        return None
    try:
        (word,) = unpack_words(raw)
    except ValueError as exc:
        return Ident(None, f"feature set unreadable ({exc})")
    return Ident("SGP30" if word >> 12 == 0 else None, f"feature set 0x{word:04x}")


def _frames() -> CaptureCodec:
    from .codec import decode_capture

    return CaptureCodec(SPEC.title, (ADDRESS,), decode_capture)


SPEC = DeviceSpec(
    type="sgp30",
    title="Sensirion SGP30 gas sensor, eCO2/TVOC/raw H2+ethanol (I2C 0x58)",
    kind="gas",
    bus="i2c",
    addresses=(ADDRESS,),
    config=SGP30Config,
    quantities={"eco2": q.ECO2.within(400, 60000), "tvoc": q.TVOC.within(0, 60000),
                "h2_raw": q.H2_RAW.any_range, "ethanol_raw": q.ETHANOL_RAW.any_range},
    build=_build,
    chip="SGP30",
    identify=_identify,
    identify_by_command=True,
    frames=_frames,
    emulator=_chip,
)
