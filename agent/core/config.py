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
from typing import Annotated, Any, Literal, Union

import msgspec

from agent.wire import formats
from drivers import catalogue
from drivers.schema import Gpio

EX_CONFIG = 78
DEFAULT_PATH = "/etc/citynode/citynode.toml"

NodeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")]
TopicPrefix = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")]
#: The output formats agent/wire/formats registers ("senml-cbor", "senml-json").
PayloadFormat = Literal[formats.NAMES]  # type: ignore[valid-type]


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
    format: PayloadFormat = formats.DEFAULT
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


# The [[sensor]] tables: one per device in the catalogue (drivers/<device>/spec.py).
SENSOR_TYPES: dict[str, type] = {t: s.config for t, s in catalogue.specs().items()}
SensorConfig = Union[tuple(SENSOR_TYPES.values())]  # type: ignore[valid-type]  # noqa: UP007


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
    for cls in _tables():
        hint = typing.get_type_hints(cls).get(leaf)
        if hint is not None and typing.get_origin(hint) is Literal:
            return ", ".join(repr(a) for a in typing.get_args(hint))
    return "the documented values"


def _tables() -> list[type]:
    """Every table class a key can sit in: the node's tables, each device's, and the
    tables nested in them (a ranger's ``use``, a meter's ``plug``)."""
    import typing

    out: list[type] = []
    todo: list[type] = [*typing.get_args(typing.get_type_hints(Config)["sensor"])[0].__args__,
                        *(h for h in typing.get_type_hints(Config).values()
                          if isinstance(h, type) and issubclass(h, msgspec.Struct))]
    while todo:
        cls = todo.pop(0)
        if cls in out:
            continue
        out.append(cls)
        todo += [f.type for f in msgspec.structs.fields(cls)
                 if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct)]
    return out


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
        for key, message in s.problems(cfg.sensor):
            fail(f"sensor[{i}].{key}", message)
        for q in s.reported():  # bays and bins report states and fill levels, not distances
            rec = s.prefix + q
            if rec in records:
                fail(f"sensor[{i}].prefix",
                     f"'{rec}' is already reported by sensor '{records[rec]}': give one of them "
                     "a prefix such as \"b.\"")
            records[rec] = s.name
        spec = catalogue.spec_of(s)
        bus = spec.bus
        if bus == "i2c":
            if s.address not in spec.addresses:
                fail(f"sensor[{i}].address", f"0x{s.address:02x} is not an address a {spec.type} "
                     f"can take ({', '.join(f'0x{a:02x}' for a in spec.addresses)})")
            if s.emulator_faults:
                if s.bus != "emulator":
                    fail(f"sensor[{i}].emulator_faults", 'only for bus = "emulator"')
                from drivers.emulation.i2c import parse_i2c_faults

                try:
                    parse_i2c_faults(s.emulator_faults)
                except ValueError as exc:
                    fail(f"sensor[{i}].emulator_faults", str(exc))
            where = (s.bus, s.address)
            if where in i2c:
                fail(f"sensor[{i}].address", f"bus {s.bus} address 0x{where[1]:02x} is "
                     f"already used by sensor '{i2c[where]}'")
            i2c[where] = s.name
            if check_devices and s.bus != "emulator" and not os.path.exists(f"/dev/i2c-{s.bus}"):
                fail(f"sensor[{i}].bus", f"/dev/i2c-{s.bus} does not exist (enable I2C: "
                     "dtparam=i2c_arm=on in config.txt, or raspi-config)")
        elif bus == "uart" and check_devices and not os.path.exists(s.port):
            fail(f"sensor[{i}].port", f"device {s.port} does not exist (is the sensor wired "
                 "and the UART enabled?)")


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

