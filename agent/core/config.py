"""The node's one TOML file: schema, validation, and errors an installer can act on.

Everything is checked before any port or socket is opened: unknown keys, wrong
types, out-of-range values, duplicate names and missing device paths. A problem
raises :class:`ConfigError` naming the key and, where it can be found, the line;
the daemon then exits with 78 (EX_CONFIG), which the systemd unit treats as
"do not restart" (a restart cannot fix a typo).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

EX_CONFIG = 78
DEFAULT_PATH = "/etc/citynode/citynode.toml"

NodeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")]
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,15}\Z")]
Prefix = Annotated[str, msgspec.Meta(pattern=r"^([a-z][a-z0-9_]{0,7}\.)?\Z")]
TopicPrefix = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class NodeConfig(_Table):
    id: NodeId
    state_dir: str = ""

    def resolved_state_dir(self) -> Path:
        """The configured folder, else systemd's StateDirectory, else /var/lib/citynode."""
        if self.state_dir:
            return Path(self.state_dir)
        env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(env or "/var/lib/citynode")


class ReportConfig(_Table):
    interval_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0
    format: Literal["senml-cbor", "senml-json"] = "senml-cbor"
    stats: list[Literal["mean", "min", "max", "count"]] = msgspec.field(
        default_factory=lambda: ["mean", "min", "max", "count"]
    )
    # The window's central value ("mean" record): trimmed mean (10 % off each end),
    # median, or plain mean.
    aggregate: Literal["trimmed", "median", "mean"] = "trimmed"
    kr_band: bool = True  # add <sensor>:aq, the Korean PM2.5/PM10 bands


class MqttConfig(_Table):
    host: str = ""
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    prefix: TopicPrefix = "citynode"
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    client_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 60
    backoff_initial_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    backoff_max_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 300.0
    # Transport security (docs/security.md). tls = true verifies the server's
    # certificate and host name; cert_file + key_file add a client certificate.
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""  # name to verify instead of host (e.g. when host is an IP)
    credentials_file: str = ""  # TOML with username and password, mode 0600


class SpoolConfig(_Table):
    """The durable store-and-forward spool (SQLite, WAL)."""

    path: str = ""  # default <state_dir>/spool.db
    max_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024, le=16 * 1024**3)] = 32 * 1024**2
    batch_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    drain_rate: Annotated[float, msgspec.Meta(ge=0, le=100_000)] = 50.0  # msgs/s, 0 = unlimited
    # Telemetry may leave during its batch window; acknowledged by then, it is never
    # written (docs/spool.md). false: strictly on disk before it is sent.
    send_uncommitted: bool = True


class CommandsConfig(_Table):
    """Downlink commands on <prefix>/<node>/command (docs/commands.md)."""

    enabled: bool = True
    max_bytes: Annotated[int, msgspec.Meta(ge=64, le=65536)] = 8192
    rate_per_min: Annotated[int, msgspec.Meta(ge=1, le=6000)] = 30
    hmac_key_file: str = ""  # when set, unsigned commands are refused
    max_skew_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0


class HealthConfig(_Table):
    interval_s: Annotated[float, msgspec.Meta(ge=10, le=86400)] = 300.0


class LogConfig(_Table):
    level: Literal["debug", "info", "warning", "error"] = "info"
    target: Literal["auto", "journal", "stderr"] = "auto"


class _Sensor(_Table, tag_field="type", kw_only=True):
    name: Name
    prefix: Prefix = ""
    stale_after_s: Seconds = 60.0


ReadInterval = Annotated[float, msgspec.Meta(ge=0.2, le=3600)]
Warmup = Annotated[float, msgspec.Meta(ge=0, le=600)]
I2CBus = Annotated[int, msgspec.Meta(ge=0, le=255)] | Literal["emulator"]
I2CAddress = Annotated[int, msgspec.Meta(ge=0x03, le=0x77)]


class _SerialSensor(_Sensor, kw_only=True):
    port: Annotated[str, msgspec.Meta(min_length=1)]


class _I2CSensor(_Sensor, kw_only=True):
    # /dev/i2c-<bus>; "emulator": an emulated chip inside the agent (citynode simulate)
    bus: I2CBus = 1
    # Only with bus = "emulator": faults to rehearse, e.g. "nack=0.05,stuck_after=60".
    emulator_faults: str = ""


# Particulate sensors: the laser and fan wear out, so by default they sleep between
# reports and wake warmup_s + sample_s before each report is due.
SampleS = Annotated[float, msgspec.Meta(ge=1, le=3600)]


PMSQuantity = Literal[
    "pm1", "pm25", "pm10", "pm1_cf1", "pm25_cf1", "pm10_cf1",
    "n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10",
]


class PMS5003Config(_SerialSensor, tag="pms5003", kw_only=True):
    mode: Literal["active", "passive"] = "passive"
    duty_cycle: bool = True
    sample_s: SampleS = 20.0
    read_interval_s: ReadInterval = 2.0
    warmup_s: Warmup = 30.0
    quantities: list[PMSQuantity] = msgspec.field(default_factory=lambda: ["pm1", "pm25", "pm10"])


class SDS011Config(_SerialSensor, tag="sds011", kw_only=True):
    mode: Literal["active", "query"] = "query"
    duty_cycle: bool = True
    sample_s: SampleS = 20.0
    read_interval_s: ReadInterval = 2.0
    warmup_s: Warmup = 15.0
    quantities: list[Literal["pm25", "pm10"]] = msgspec.field(
        default_factory=lambda: ["pm25", "pm10"])


SPS30Quantity = Literal["pm1", "pm25", "pm4", "pm10", "nc0_5", "nc1_0", "nc2_5", "nc4_0",
                        "nc10", "tps"]


class SPS30Config(_I2CSensor, tag="sps30", kw_only=True):
    address: I2CAddress = 0x69
    duty_cycle: bool = True
    sample_s: SampleS = 20.0
    read_interval_s: ReadInterval = 1.0
    warmup_s: Warmup = 15.0
    quantities: list[SPS30Quantity] = msgspec.field(
        default_factory=lambda: ["pm1", "pm25", "pm10"])


class SHT3xConfig(_I2CSensor, tag="sht3x", kw_only=True):
    address: I2CAddress = 0x44
    read_interval_s: ReadInterval = 2.0
    quantities: list[Literal["temp", "rh"]] = msgspec.field(
        default_factory=lambda: ["temp", "rh"])


class BME280Config(_I2CSensor, tag="bme280", kw_only=True):
    address: I2CAddress = 0x76
    read_interval_s: ReadInterval = 2.0
    quantities: list[Literal["temp", "rh", "pressure"]] = msgspec.field(
        default_factory=lambda: ["temp", "rh", "pressure"])


SGP30Quantity = Literal["eco2", "tvoc", "h2_raw", "ethanol_raw"]


class SGP30Config(_I2CSensor, tag="sgp30", kw_only=True):
    """Sensirion SGP30 gas sensor (docs/drivers.md): eCO2, TVOC, raw H2 and ethanol."""

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


# -- accelerometers (fall detection; docs/drivers.md, ADXL345 and MPU-6050) ------------------
AccelQuantity = Literal["ax", "ay", "az", "amag"]
#: type -> (addresses, output rates in Hz) the driver accepts.
ACCEL_CHOICES: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "adxl345": ((0x53, 0x1D), (12.5, 25.0, 50.0, 100.0, 200.0, 400.0)),
    "mpu6050": ((0x68, 0x69), (10.0, 20.0, 25.0, 40.0, 50.0, 100.0, 125.0, 200.0, 250.0,
                               500.0)),
}


class _Accelerometer(_I2CSensor, kw_only=True):
    """A FIFO-streamed accelerometer: every sample goes to the fall detector, a reading
    (latest sample, peak magnitude) every read_interval_s goes to the report."""

    range_g: Literal[2, 4, 8, 16] = 16
    rate_hz: float = 50.0
    read_interval_s: ReadInterval = 1.0
    # Only with bus = "emulator": "rest", or a SisFall trial such as "sisfall:SA01/F01_R01"
    # replayed in a loop.
    emulator_source: str = "rest"
    quantities: list[AccelQuantity] = msgspec.field(
        default_factory=lambda: ["ax", "ay", "az", "amag"])

    def __post_init__(self) -> None:
        # msgspec reports these at the sensor's table, so each message names its key.
        addresses, rates = ACCEL_CHOICES[type(self).__struct_config__.tag]  # type: ignore
        if self.address not in addresses:  # type: ignore[attr-defined]
            raise ValueError(f"address: {self.address:#04x} is not one of "  # type: ignore
                             f"{', '.join(f'{a:#04x}' for a in addresses)}")
        if self.rate_hz not in rates:
            raise ValueError(f"rate_hz: {self.rate_hz:g} is not one of "
                             f"{', '.join(f'{r:g}' for r in rates)}")
        from drivers.emulation.motion import check_spec

        try:
            check_spec(self.emulator_source)
        except ValueError as exc:
            raise ValueError(f"emulator_source: {exc}") from None
        if self.emulator_source != "rest" and self.bus != "emulator":
            raise ValueError('emulator_source: only for bus = "emulator"')


class ADXL345Config(_Accelerometer, tag="adxl345", kw_only=True):
    address: I2CAddress = 0x53  # 0x1D with ALT ADDRESS high


class MPU6050Config(_Accelerometer, tag="mpu6050", kw_only=True):
    address: I2CAddress = 0x68  # 0x69 with AD0 high
    range_g: Literal[2, 4, 8, 16] = 8
# -- end of accelerometers -------------------------------------------------------------------


class RangerUse(_Table):
    """What a distance sensor watches (docs/parking.md): a parking bay or a bin."""

    role: Literal["bay", "bin", "distance"] = "bay"
    # Bay: the empty-bay distance from `citynode calibrate`; unset: read from the state
    # directory (calibrate writes it there), else learned from the first readings.
    baseline_mm: Annotated[float, msgspec.Meta(gt=0, le=20000)] | None = None
    # Bin: sensor to bin bottom.
    depth_mm: Annotated[float, msgspec.Meta(gt=0, le=20000)] | None = None
    debounce_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    full_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] = 80.0


class _Ranger(_Sensor, kw_only=True):
    read_interval_s: ReadInterval = 0.5
    use: RangerUse = msgspec.field(default_factory=RangerUse)
    quantities: list[Literal["d"]] = msgspec.field(default_factory=lambda: ["d"])


class A02YYUWConfig(_Ranger, tag="a02yyuw", kw_only=True):
    port: Annotated[str, msgspec.Meta(min_length=1)]


class JSNSR04TConfig(_Ranger, tag="jsnsr04t", kw_only=True):
    port: Annotated[str, msgspec.Meta(min_length=1)]


class MaxBotixConfig(_Ranger, tag="maxbotix", kw_only=True):
    port: Annotated[str, msgspec.Meta(min_length=1)]


class I2CXLConfig(_Ranger, tag="i2cxl", kw_only=True):
    bus: I2CBus = 1
    address: I2CAddress = 0x70


Gpio = Annotated[int, msgspec.Meta(ge=0, le=27)]


class HCSR04Config(_Ranger, tag="hcsr04", kw_only=True):
    trigger: Gpio = 23
    echo: Gpio = 24
    # "emulator": gpiozero's mock pins with a scripted parking scene (citynode simulate)
    pins: Literal["gpio", "emulator"] = "gpio"
    max_distance_m: Annotated[float, msgspec.Meta(gt=0, le=10)] = 4.0


class PlugUse(_Table):
    """What a power meter's plug does for the household (docs/inactivity.md, docs/relay.md)."""

    # Counted as the household's activity (kettle, TV, rice cooker); false for loads
    # that run by themselves (a fridge).
    activity: bool = True
    relay_pin: Gpio | None = None
    relay_active_high: bool = True
    relay_safe_state: Literal["on", "off"] = "off"
    cutoff_w: Annotated[float, msgspec.Meta(gt=0, le=4000)] | None = None
    cutoff_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0


PowerQuantity = Literal["w", "v", "a", "kwh", "hz", "pf"]


class _Meter(_Sensor, kw_only=True):
    port: Annotated[str, msgspec.Meta(min_length=1)]
    read_interval_s: ReadInterval = 1.0
    plug: PlugUse = msgspec.field(default_factory=PlugUse)


class CSE7766Config(_Meter, tag="cse7766", kw_only=True):
    quantities: list[PowerQuantity] = msgspec.field(default_factory=lambda: ["w", "kwh"])


class PZEM004TConfig(_Meter, tag="pzem004t", kw_only=True):
    address: Annotated[int, msgspec.Meta(ge=1, le=0xF7)] = 1
    quantities: list[PowerQuantity] = msgspec.field(default_factory=lambda: ["w", "kwh"])


class ActivityConfig(_Table):
    """The inactivity alarm for people living alone (docs/inactivity.md)."""

    enabled: bool = True
    # Never alarm before this much silence, whatever the routine says.
    min_inactivity_s: Annotated[float, msgspec.Meta(ge=600, le=7 * 86400)] = 3 * 3600.0
    # Alarm at margin x the usual quiet spell for this household at this time...
    margin: Annotated[float, msgspec.Meta(ge=1.0, le=10.0)] = 2.0
    # ...but no later than this after the last use, unless such spells are usual.
    max_wait_s: Annotated[float, msgspec.Meta(ge=600, le=7 * 86400)] = 11 * 3600.0
    # Hours of the week in this time zone (hours east of UTC); default: the node's.
    utc_offset_h: Annotated[float, msgspec.Meta(ge=-12, le=14)] | None = None


METERS = (CSE7766Config, PZEM004TConfig)
RANGERS = (A02YYUWConfig, JSNSR04TConfig, MaxBotixConfig, I2CXLConfig, HCSR04Config)
SensorConfig = (PMS5003Config | SDS011Config | SPS30Config | SHT3xConfig | BME280Config
                | SGP30Config | A02YYUWConfig | JSNSR04TConfig | MaxBotixConfig | I2CXLConfig
                | HCSR04Config | CSE7766Config | PZEM004TConfig)
SENSOR_TYPES = {"pms5003": PMS5003Config, "sds011": SDS011Config, "sps30": SPS30Config,
                "sht3x": SHT3xConfig, "bme280": BME280Config, "sgp30": SGP30Config,
                "a02yyuw": A02YYUWConfig, "jsnsr04t": JSNSR04TConfig, "maxbotix": MaxBotixConfig,
                "i2cxl": I2CXLConfig, "hcsr04": HCSR04Config, "cse7766": CSE7766Config,
                "pzem004t": PZEM004TConfig}

# Accelerometers (ADXL345Config, MPU6050Config above), added here to leave the lines above alone.
SensorConfig = SensorConfig | ADXL345Config | MPU6050Config  # type: ignore[misc]
SENSOR_TYPES.update({"adxl345": ADXL345Config, "mpu6050": MPU6050Config})


class FallConfig(_Table):
    """Fall detection on every accelerometer (docs/fall.md)."""

    enabled: bool = True
    # "" = the model shipped with citynode; a path = another .tflite (with its .json);
    # "none" = the physical rules alone.
    model: str = ""
    # The local "I'm OK" window before the alarm goes upstream; 0 = no local window.
    cancel_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0
    button_pin: Gpio | None = None  # "I'm OK" button (to ground; internal pull-up)
    buzzer_pin: Gpio | None = None  # sounds while the alarm can be cancelled
    led_pin: Gpio | None = None     # lit while the alarm can be cancelled
    # "emulator": gpiozero's mock pins (citynode simulate, rehearsals)
    pins: Literal["gpio", "emulator"] = "gpio"


class FireConfig(_Table):
    """Fire detection over the climate, particulate and gas sensors (docs/fire.md)."""

    enabled: bool = True
    model: str = ""  # as for [fall]
    # Sensors whose readings feed the detector; empty = every climate, PM and gas sensor.
    sensors: list[str] = msgspec.field(default_factory=list)


class Config(_Table):
    node: NodeConfig
    report: ReportConfig = msgspec.field(default_factory=ReportConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    commands: CommandsConfig = msgspec.field(default_factory=CommandsConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    activity: ActivityConfig = msgspec.field(default_factory=ActivityConfig)
    fall: FallConfig = msgspec.field(default_factory=FallConfig)
    fire: FireConfig = msgspec.field(default_factory=FireConfig)
    sensor: list[SensorConfig] = msgspec.field(default_factory=list)

    @property
    def local_mode(self) -> bool:
        """No broker configured: messages go to the log instead."""
        return not self.mqtt.host


class ConfigError(Exception):
    """A configuration problem, phrased for the person holding the file."""

    def __init__(self, message: str, *, path: str = "", key: str = "", line: int | None = None):
        self.message, self.path, self.key, self.line = message, path, key, line
        where = path + (f":{line}" if line else "")
        lead = ": ".join(p for p in (where, key) if p)
        super().__init__(f"{lead}: {message}" if lead else message)


# -- locating keys in the TOML text -------------------------------------------------
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")
_KEYLINE = re.compile(r"^\s*([A-Za-z0-9_\"-]+)\s*=")


def _locate(text: str, key: str) -> int | None:
    """Line number of ``key`` (like ``sensor[1].port``) in TOML text, or of its table."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    want: list[str] = [p for p in parts]
    table: list[str] = []
    arrays: dict[str, int] = {}
    table_line: dict[str, int] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0]
        m = _HEADER.match(line)
        if m:
            name = m.group(2).replace('"', "")
            table = name.split(".")
            if m.group(1) == "[[":
                idx = arrays.get(name, -1) + 1
                arrays[name] = idx
                table = [*table, f"[{idx}]"]
            table_line[".".join(table)] = no
            continue
        m = _KEYLINE.match(line)
        if m and [*table, m.group(1).replace('"', "")] == want:
            return no
    # Fall back to the closest enclosing table that exists.
    for n in range(len(want), 0, -1):
        hit = table_line.get(".".join(want[:n]))
        if hit:
            return hit
    return None


def _key_from_msgspec(path: str) -> str:
    # msgspec says `$.sensor[0].port`; people say sensor[0].port
    return path.removeprefix("$").removeprefix(".")


def _friendly(msg: str, key: str, data: Any) -> tuple[str, str]:
    """Turn a msgspec validation message into (key, sentence)."""
    m = re.match(r"Object contains unknown field `([^`]+)`", msg)
    if m:
        key = f"{key}.{m.group(1)}" if key else m.group(1)
        return key, "unknown key (see the configuration reference in README.md)"
    m = re.match(r"Object missing required field `([^`]+)`", msg)
    if m:
        key = f"{key}.{m.group(1)}" if key else m.group(1)
        return key, "required key is missing"
    if key.endswith(".type") and msg.startswith("Invalid value"):
        return key, f"{msg.split(' - ')[0].lower()}: known sensor types are {sorted(SENSOR_TYPES)}"
    if msg.startswith("Expected `str` matching regex"):
        if key.startswith("node.id"):
            return key, "must be 1-64 letters, digits, '-' or '_' (it becomes part of MQTT topics)"
        if key.endswith(".name"):
            return key, "must be 1-16 lower-case letters, digits or '_', starting with a letter"
        if key.endswith(".prefix") and key.startswith("sensor"):
            return key, "must be empty or up to 8 lower-case letters/digits followed by '.'"
        if key.endswith("prefix"):
            return key, "must be topic levels of letters, digits, '-' or '_' separated by '/'"
    m = re.match(r"Invalid enum value (.+)", msg)
    if m:
        return key, f"{m.group(1)} is not one of {_allowed(key)}"
    text = msg.replace("Expected", "must be").replace("`", "")
    return key, text


def _allowed(key: str) -> str:
    """The choices for a Literal-typed key, for error messages."""
    import typing

    leaf = key.rsplit(".", 1)[-1]
    for cls in (NodeConfig, ReportConfig, MqttConfig, LogConfig, SpoolConfig, CommandsConfig,
                HealthConfig, ActivityConfig, PlugUse, RangerUse, *SENSOR_TYPES.values()):
        hint = typing.get_type_hints(cls).get(leaf)
        if hint is not None and typing.get_origin(hint) is Literal:
            return ", ".join(repr(a) for a in typing.get_args(hint))
    return "the documented values"


def parse(text: str, path: str = "<config>", *, check_devices: bool = True) -> Config:
    """Validate TOML text into a :class:`Config`, or raise :class:`ConfigError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        raise ConfigError(f"not valid TOML: {exc}", path=path,
                          line=int(m.group(1)) if m else None) from None
    try:
        cfg = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        msg, _, where = str(exc).partition(" - at ")
        key, sentence = _friendly(msg, _key_from_msgspec(where.strip("`")), data)
        raise ConfigError(sentence, path=path, key=key, line=_locate(text, key)) from None
    _check_semantics(cfg, text, path, check_devices)
    return cfg


def _check_semantics(cfg: Config, text: str, path: str, check_devices: bool) -> None:
    def fail(key: str, message: str) -> None:
        raise ConfigError(message, path=path, key=key, line=_locate(text, key))

    if cfg.mqtt.backoff_max_s < cfg.mqtt.backoff_initial_s:
        fail("mqtt.backoff_max_s", "must not be smaller than mqtt.backoff_initial_s")
    names_all = {x.name for x in cfg.sensor}
    for i, n in enumerate(cfg.fire.sensors):
        if n not in names_all:
            fail(f"fire.sensors[{i}]", f"no sensor named {n!r}")
    pins = [(k, getattr(cfg.fall, k)) for k in ("button_pin", "buzzer_pin", "led_pin")]
    used = [(k, v) for k, v in pins if v is not None]
    if len({v for _, v in used}) != len(used):
        fail("fall", "button_pin, buzzer_pin and led_pin must be different GPIOs")
    if cfg.activity.max_wait_s < cfg.activity.min_inactivity_s:
        fail("activity.max_wait_s", "must not be smaller than activity.min_inactivity_s")
    names: dict[str, int] = {}
    records: dict[str, str] = {}
    i2c: dict[tuple[object, int], str] = {}
    for i, s in enumerate(cfg.sensor):
        if s.name in names:
            fail(f"sensor[{i}].name", f"'{s.name}' is already used by sensor[{names[s.name]}]")
        names[s.name] = i
        if len(set(s.quantities)) != len(s.quantities):
            fail(f"sensor[{i}].quantities", "lists a quantity twice")
        reported = s.quantities
        if isinstance(s, _Ranger) and s.use.role != "distance":
            reported = []  # bays and bins report states and fill levels, not distances
            if s.use.role == "bin" and s.use.depth_mm is None:
                fail(f"sensor[{i}].use.depth_mm", "a bin needs its depth (sensor to bottom)")
        for q in reported:
            rec = s.prefix + q
            if rec in records:
                fail(f"sensor[{i}].prefix",
                     f"'{rec}' is already reported by sensor '{records[rec]}': give one of them "
                     "a prefix such as \"b.\"")
            records[rec] = s.name
        if isinstance(s, HCSR04Config):
            continue  # GPIO pins: checked when the pin factory opens them
        if hasattr(s, "bus"):
            if s.emulator_faults:  # type: ignore[attr-defined]
                if s.bus != "emulator":  # type: ignore[attr-defined]
                    fail(f"sensor[{i}].emulator_faults", 'only for bus = "emulator"')
                from drivers.emulation.i2c import parse_i2c_faults

                try:
                    parse_i2c_faults(s.emulator_faults)  # type: ignore[attr-defined]
                except ValueError as exc:
                    fail(f"sensor[{i}].emulator_faults", str(exc))
            where = (s.bus, s.address)  # type: ignore[attr-defined]
            if where in i2c:
                fail(f"sensor[{i}].address", f"bus {s.bus} address 0x{where[1]:02x} is "
                     f"already used by sensor '{i2c[where]}'")
            i2c[where] = s.name
            if check_devices and s.bus != "emulator" and not os.path.exists(f"/dev/i2c-{s.bus}"):
                fail(f"sensor[{i}].bus", f"/dev/i2c-{s.bus} does not exist (enable I2C: "
                     "dtparam=i2c_arm=on in config.txt, or raspi-config)")
        elif check_devices and not os.path.exists(s.port):
            fail(f"sensor[{i}].port",
                 f"device {s.port} does not exist (is the sensor wired and the UART enabled?)")
    for i, s in enumerate(cfg.sensor):
        if isinstance(s, SGP30Config):
            _check_sgp30(s, i, cfg.sensor, fail)


def _check_sgp30(s: SGP30Config, i: int, sensors: list[Any], fail: Any) -> None:
    """The SGP30's fixed address, its 1 Hz, and the climate sensor it takes humidity from."""
    if s.address != 0x58:
        fail(f"sensor[{i}].address", "the SGP30's address is fixed at 0x58")
    if s.read_interval_s != 1.0:
        fail(f"sensor[{i}].read_interval_s", "must be 1.0: the SGP30's baseline algorithm "
             "needs a measurement every second")
    if s.emulator_source != "quiet" and s.bus != "emulator":
        fail(f"sensor[{i}].emulator_source", 'only for bus = "emulator"')
    if s.humidity_from:
        src = next((x for x in sensors if x.name == s.humidity_from), None)
        if src is None:
            fail(f"sensor[{i}].humidity_from", f"no sensor named '{s.humidity_from}' in this "
                 "file (name an sht3x or bme280 sensor, or leave it empty)")
        elif not isinstance(src, SHT3xConfig | BME280Config):
            kind = type(src).__name__.removesuffix("Config").lower()
            fail(f"sensor[{i}].humidity_from", f"'{s.humidity_from}' is a {kind} sensor, not "
                 "a climate sensor (sht3x or bme280)")
        elif not {"temp", "rh"} <= set(src.quantities):
            fail(f"sensor[{i}].humidity_from", f"'{s.humidity_from}' must measure both temp "
                 "and rh (add them to its quantities)")


def load(path: str | os.PathLike[str], *, check_devices: bool = True) -> Config:
    """Read and validate a configuration file."""
    p = os.fspath(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found (use --config to name another)", path=p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=p) from None
    return parse(text, p, check_devices=check_devices)

