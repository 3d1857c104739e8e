"""The node's one TOML file: schema, validation, and errors an installer can act on.

Everything is checked before any port or socket is opened, in three steps:

1. the schema, strictly (``msgspec.convert(..., strict=True)``): TOML has real numbers and
   booleans, so ``interval_s = "60"`` or ``tls = "false"`` is an error, while a whole number
   where a number is expected stays fine; unknown keys ("did you mean"), out-of-range
   values and values outside a key's choices (listed) are errors;
2. what no single table can see: duplicate names and records, I2C addresses, references
   between tables, and every GPIO the file claims (:func:`pin_uses`: the devices' specs,
   the relays, the fall alarm's pins, and the header's I2C and UART pins when those buses
   are in use), one list that ``citynode doctor`` uses too;
3. unless ``check_devices`` is false (``config check --no-devices``): this machine
   (:mod:`agent.core.hostcheck`): serial ports are serial devices, I2C buses exist, the
   files the configuration names exist, and the state and spool directories are writable
   by the user who will write them.

A problem is a :class:`ConfigError` naming the key and the line it is written on (inside
inline tables, dotted keys and arrays of tables too: :mod:`agent.core.tomlkeys`). The
daemon exits with 78 (EX_CONFIG) on the first, which the systemd unit treats as "do not
restart" (a restart cannot fix a typo); ``citynode config check`` lists them all.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import msgspec

from agent.core import tomlkeys
from agent.wire import formats
from drivers import catalogue
from drivers.schema import Gpio

if TYPE_CHECKING:
    from agent.core import hostcheck

EX_CONFIG = 78
DEFAULT_PATH = "/etc/citynode/citynode.toml"

NodeId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")]
TopicPrefix = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")]
#: The output formats agent/wire/formats registers ("senml-cbor", "senml-json").
PayloadFormat = Literal[formats.PACK_NAMES]  # type: ignore[valid-type]


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


#: Most failover brokers per uplink ([mqtt] failover).
MAX_FAILOVER = 8


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
    # Other brokers of the same cluster ("host", "host:port", "[v6]:port"; port default
    # `port`), tried in order after host:port fails (docs/ops.md, broker failover).
    failover: Annotated[list[Annotated[str, msgspec.Meta(max_length=300)]],
                        msgspec.Meta(max_length=MAX_FAILOVER)] = msgspec.field(
                            default_factory=list)

    def brokers(self) -> list[tuple[str, int]]:
        """host:port, then each failover broker: the order the uplink tries them in
        (entries that do not parse are left out; the configuration check names them)."""
        out = [(self.host, self.port)]
        for text in self.failover:
            try:
                out.append(parse_broker(text, self.port))
            except ValueError:
                continue
        return out


def parse_broker(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port); ValueError says
    what is wrong in words for the person holding the file."""
    s = text.strip()
    if not s or s != text:
        raise ValueError("must be a host name or address with an optional :port, "
                         "without spaces (e.g. \"broker2.example.org:8883\")")
    if "://" in s or "/" in s:
        raise ValueError("must be host or host:port, not a URL (drop the scheme and path)")
    port_text = ""
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 address goes in brackets: \"[2001:db8::1]:1883\"")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError("has a ':' but no port after it")
    elif s.count(":") > 1:
        raise ValueError("an IPv6 address goes in brackets: \"[2001:db8::1]:1883\"")
    else:
        host, sep, port_text = s.partition(":")
        if sep and not port_text:
            raise ValueError("has a ':' but no port after it")
    if not host or not re.fullmatch(r"[A-Za-z0-9._:%-]+", host):
        raise ValueError("the host must be a name or an address (letters, digits, . - :)")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text[:8]!r} must be a number from 1 to 65535")
    return host, int(port_text)


UplinkName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}\Z")]
FormatName = Literal[formats.NAMES]  # type: ignore[valid-type]
#: The uplink [mqtt] makes, as status, health and the spool call it.
MAIN_UPLINK = "main"


def _uplink_table() -> type:
    """``[[uplink]]``: every [mqtt] key, a name, a format, its own drain rate, and one
    sub-table per format that takes settings (``[uplink.onem2m]``...), from the formats'
    own ``Options``: a new format adds its table here without an edit."""
    fields: list[tuple[str, Any, Any]] = [
        ("name", UplinkName, msgspec.field(default="")),
        ("format", FormatName, msgspec.field(default=formats.DEFAULT)),
        # Messages a second when a backlog drains (0 = unlimited); default [spool] drain_rate.
        ("drain_rate", Annotated[float, msgspec.Meta(ge=0, le=100_000)] | None,
         msgspec.field(default=None)),
    ]
    for name in formats.NAMES:
        options = formats.options(name)
        if options is not None:
            fields.append((name.replace("-", "_"), options,
                           msgspec.field(default_factory=options)))
    return msgspec.defstruct("UplinkConfig", fields, bases=(MqttConfig,), kw_only=True,
                             forbid_unknown_fields=True)


UplinkConfig: Any = _uplink_table()


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


class UpdateConfig(_Table):
    """Over-the-air updates through the ``update`` command (docs/updates.md)."""

    enabled: bool = True
    gate_s: Annotated[float, msgspec.Meta(ge=10, le=3600)] = 120.0  # health gate
    max_starts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3  # starts allowed in the gate
    keep_releases: Annotated[int, msgspec.Meta(ge=3, le=20)] = 3  # releases kept on the card
    bandwidth_kbps: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0  # 0: unlimited
    ca_file: str = ""  # CA for the bundle's HTTPS server; empty: [mqtt] ca_file or the system's
    keys_dir: str = "/etc/citynode/keys"  # the fleet's pinned Ed25519 public keys (*.pub)
    download_dir: str = ""  # empty: <state_dir>/update
    allow_http: bool = False  # tests only: plain http:// bundle URLs


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
    # Multiplies the shipped gas and particle thresholds: > 1 fewer alarms and later,
    # < 1 earlier and more false alarms (docs/fire.md has the curve).
    threshold_scale: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] = 1.0
    # Accepted, unused: the fire detector has had no model since 2026.12. A fleet's files
    # written before must still start; :func:`notices` says so.
    model: str = ""
    # Sensors whose readings feed the detector; empty = every climate, PM and gas sensor.
    sensors: list[str] = msgspec.field(default_factory=list)


#: What the daemon logs and ``config check`` prints when ``[fire] model`` is set.
FIRE_MODEL_UNUSED = "[fire] model is no longer used: fire detection runs on rules, docs/fire.md"


class Config(_Table):
    node: NodeConfig
    report: ReportConfig = msgspec.field(default_factory=ReportConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    commands: CommandsConfig = msgspec.field(default_factory=CommandsConfig)
    update: UpdateConfig = msgspec.field(default_factory=UpdateConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    activity: ActivityConfig = msgspec.field(default_factory=ActivityConfig)
    fall: FallConfig = msgspec.field(default_factory=FallConfig)
    fire: FireConfig = msgspec.field(default_factory=FireConfig)
    sensor: list[SensorConfig] = msgspec.field(default_factory=list)
    uplink: list[UplinkConfig] = msgspec.field(default_factory=list)

    @property
    def local_mode(self) -> bool:
        """No broker configured: messages go to the log instead."""
        return not self.mqtt.host and not self.uplink

    def uplinks(self) -> list[Any]:
        """Every uplink: [mqtt] as "main" (in [report] format) when it names a host, then
        each [[uplink]]; the spool keeps one delivery position for each, by name."""
        out: list[Any] = []
        if self.mqtt.host:
            fields = {f: getattr(self.mqtt, f) for f in self.mqtt.__struct_fields__}
            out.append(UplinkConfig(name=MAIN_UPLINK, format=self.report.format,
                                    drain_rate=None, **fields))
        return out + list(self.uplink)


class ConfigError(Exception):
    """A configuration problem, phrased for the person holding the file."""

    def __init__(self, message: str, *, path: str = "", key: str = "", line: int | None = None,
                 hint: str = "", code: int = EX_CONFIG) -> None:
        self.message, self.path, self.key, self.line = message, path, key, line
        self.hint = hint
        #: The exit code a tool gives: 78 (EX_CONFIG), or 66 (EX_NOINPUT) when the file
        #: itself is missing or unreadable (``run`` exits 78 for both: do not restart).
        self.code = code
        where = path + (f":{line}" if line else "")
        lead = ": ".join(p for p in (where, key) if p)
        super().__init__(f"{lead}: {message}" if lead else message)


#: Largest configuration file read (a real one is a few KiB; /dev/zero is not one).
MAX_BYTES = 1 << 20
_README = "see the configuration reference in README.md"


# -- the types behind a key ---------------------------------------------------------------
def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` constraints and without ``| None``."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            if len(rest) == 1:
                tp = rest[0]
                continue
        return tp


def _struct(tp: Any, node: Any) -> type | None:
    """The table class ``tp`` stands for; for the ``[[sensor]]`` union, the one the
    table's ``type`` selects."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    if get_origin(tp) in (Union, types.UnionType) and isinstance(node, dict):
        return SENSOR_TYPES.get(str(node.get("type")))
    return None


def _value_at(parts: tomlkeys.Path, data: Any) -> Any:
    """The value the file gave key ``parts`` (None if absent)."""
    node = data
    for p in parts:
        if isinstance(p, int):
            node = node[p] if isinstance(node, list) and p < len(node) else None
        else:
            node = node.get(p) if isinstance(node, dict) else None
    return node


def _resolve(parts: tomlkeys.Path, data: Any) -> tuple[Any, Any]:
    """The declared type at key ``parts`` (None if unknown) and the value the file gave it."""
    tp: Any = Config
    node: Any = data
    for p in parts:
        if tp is None:
            break
        if isinstance(p, int):
            inner = _unwrap(tp)
            ok = get_origin(inner) in (list, tuple) and get_args(inner)
            tp = get_args(inner)[0] if ok else None
            node = node[p] if isinstance(node, list) and p < len(node) else None
            continue
        cls = _struct(tp, node)
        field = {f.encode_name: f for f in msgspec.structs.fields(cls)}.get(p) if cls else None
        tp = field.type if field is not None else None
        node = node.get(p) if isinstance(node, dict) else None
    return tp, _value_at(parts, data)


def _keys_of(parts: tomlkeys.Path, data: Any) -> list[str]:
    """The keys a table may have (for "did you mean")."""
    tp, node = _resolve(parts, data)
    cls = _struct(tp, node)
    if cls is None:
        return []
    names = [f.encode_name for f in msgspec.structs.fields(cls)]
    return ["type", *names] if cls in SENSOR_TYPES.values() else names


def _choices(tp: Any) -> list[Any]:
    """The values a ``Literal`` (inside lists and unions) allows."""
    tp = _unwrap(tp)
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    if get_origin(tp) in (list, tuple, Union, types.UnionType):
        return [c for a in get_args(tp) for c in _choices(a)]
    return []


def _describe(tp: Any) -> str:
    """What a declared type accepts, in words."""
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp) if a is not type(None))
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "a table"
    return "another type"


def _what(value: Any) -> str:
    """A TOML value, as the person sees it in the file."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the whole number {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"the date/time {value}"


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    if not text.isprintable():  # NEL, LINE SEPARATOR...: a one-line error stays one line
        text = json.dumps(value) if isinstance(value, str) else ascii(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unquoted(value: str, tp: Any) -> str | None:
    """``value`` as it should be written, when the string holds what ``tp`` wants."""
    tp = _unwrap(tp)
    v = value.strip()
    if tp is bool and v in ("true", "false"):
        return v
    if tp is int and re.fullmatch(r"[+-]?\d+", v):
        return v
    if tp is float and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", v):
        return v
    return None


def _did_you_mean(word: Any, choices: list[Any]) -> str:
    """The closest of ``choices`` to ``word`` (ignoring case), as a hint, or ""."""
    import difflib

    names = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(names), n=1, cutoff=0.7)
    return f"; did you mean {names[close[0]]!r}?" if close else ""


def _friendly(msg: str, key: str, data: Any) -> tuple[str, str]:
    """A msgspec validation message as (key, sentence) for the person with the file."""
    parts = tomlkeys.split_key(key)
    leaf = str(parts[-1]) if parts and isinstance(parts[-1], str) else key
    m = re.match(r"Object contains unknown field `([^`]+)`", msg)
    if m:
        name = m.group(1)
        full = f"{key}.{name}" if key else name
        return full, f"unknown key{_did_you_mean(name, _keys_of(parts, data))} ({_README})"
    m = re.match(r"Object missing required field `([^`]+)`", msg)
    if m:
        name = m.group(1)
        return (f"{key}.{name}" if key else name), "required key is missing"
    tp, value = _resolve(parts, data)
    if leaf == "type" and msg.startswith("Invalid value"):
        known = sorted(SENSOR_TYPES)
        return key, (f"unknown sensor type {_short(value)}"
                     f"{_did_you_mean(str(value), [*known, *catalogue.aliases()])}: "
                     f"known sensor types are {', '.join(known)}")
    if msg.startswith("Invalid enum value"):
        allowed = _choices(tp)
        listed = ", ".join(repr(a) for a in allowed) or "the documented values"
        shown = repr(value) if len(repr(value)) <= 40 else _short(value)
        return key, f"{shown} is not one of {listed}{_did_you_mean(value, allowed)}"
    if msg.startswith("Expected `str` matching regex"):
        if key.startswith("node.id"):
            return key, "must be 1-64 letters, digits, '-' or '_' (it becomes part of MQTT " \
                "topics)"
        if leaf == "name":
            return key, "must be 1-16 lower-case letters, digits or '_', starting with a " \
                "letter"
        if leaf == "prefix" and key.startswith("sensor"):
            return key, "must be empty or up to 8 lower-case letters/digits followed by '.'"
        if leaf == "prefix":
            return key, "must be topic levels of letters, digits, '-' or '_' separated by '/'"
    m = re.match(r"Expected `([^`]+)`, got `([^`]+)`", msg)
    if m:
        want = _describe(tp) if tp is not None else m.group(1)
        if m.group(1) == "array" and m.group(2) == "object" and leaf == "sensor":
            return key, "must be an array of tables: write [[sensor]] (two brackets) for " \
                "each sensor"
        sentence = f"must be {want}, not {_what(value)}"
        fixed = _unquoted(value, tp) if isinstance(value, str) and tp is not None else None
        if fixed is not None:
            sentence += f" (write {leaf} = {fixed}, without quotes)"
        return key, sentence
    m = re.match(r"Expected `[^`]+` (>=|<=|>|<) (\S+)", msg)
    if m:
        return key, f"must be {m.group(1)} {m.group(2)}, not {_short(value)}"
    text = msg.replace("Expected", "must be").replace("`", "")
    return key, text


# -- GPIO pins: one list for config check, doctor and the daemon --------------------------
#: GPIOs the buses use; a sensor or relay there clashes with the bus when the bus is in use.
BUS_PINS = {2: ("i2c", "I2C1 SDA"), 3: ("i2c", "I2C1 SCL"),
            14: ("uart", "UART TX"), 15: ("uart", "UART RX")}
#: The Pi's primary UART (GPIO 14/15) under its usual names.
PRIMARY_UARTS = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0")


class PinClaim(NamedTuple):
    """A GPIO the configuration claims, and where it says so."""

    pin: int
    owner: str  # the sensor's name, or "fall"
    role: str  # "trigger", "echo", "relay", "button", "buzzer", "led"
    key: str  # the configuration key: sensor[0].trigger, sensor[2].plug.relay_pin, ...
    direction: str  # "input" or "output"
    emulated: bool  # gpiozero mock pins of this owner alone: they clash only with its own
    table: Any  # the table the pin is set in (the plug's for a relay)


class PinClash(NamedTuple):
    """Uses of one GPIO that cannot coexist: two or more uses, or one on a bus in use."""

    pin: int
    uses: list[PinClaim]
    bus: str  # "I2C1 SDA" when the clash is with a bus in use, else ""
    bus_user: str  # who uses that bus


def pin_uses(cfg: Config) -> list[PinClaim]:
    """Every GPIO the configuration claims: what each device's spec declares (``pins``),
    the relays of ``[sensor.plug]`` and the fall alarm's button, buzzer and LED."""
    uses: list[PinClaim] = []
    for i, s in enumerate(cfg.sensor):
        pins = catalogue.spec_of(s).pins
        names = {f.encode_name for f in msgspec.structs.fields(type(s))}
        for p in pins(s) if pins is not None else ():
            key = f"sensor[{i}].{p.role}" if p.role in names else f"sensor[{i}]"
            uses.append(PinClaim(p.pin, s.name, p.role, key, p.direction, p.emulated, s))
        plug = getattr(s, "plug", None)
        if plug is not None and getattr(plug, "relay_pin", None) is not None:
            uses.append(PinClaim(plug.relay_pin, s.name, "relay", f"sensor[{i}].plug.relay_pin",
                                 "output", False, plug))
    f = cfg.fall
    if f.enabled:
        for role, direction in (("button", "input"), ("buzzer", "output"), ("led", "output")):
            pin = getattr(f, f"{role}_pin")
            if pin is not None:
                uses.append(PinClaim(pin, "fall", role, f"fall.{role}_pin", direction,
                                     f.pins == "emulator", f))
    return uses


def buses_in_use(cfg: Config) -> dict[str, str]:
    """The header buses a configured sensor uses ("i2c", "uart") and who uses them."""
    out: dict[str, str] = {}
    for s in cfg.sensor:
        if getattr(s, "bus", None) == 1:
            out.setdefault("i2c", f"sensor '{s.name}' (bus = 1)")
        if getattr(s, "port", None) in PRIMARY_UARTS:
            out.setdefault("uart", f"sensor '{s.name}' ({s.port})")
    return out


def pin_clashes(cfg: Config, uses: list[PinClaim] | None = None) -> list[PinClash]:
    """Pins claimed twice (emulated pins only within their owner) or on a bus in use,
    by pin number."""
    uses = pin_uses(cfg) if uses is None else uses
    groups: dict[tuple[str, int], list[PinClaim]] = {}
    for u in uses:
        groups.setdefault((u.owner if u.emulated else "", u.pin), []).append(u)
    buses = buses_in_use(cfg)
    out: list[PinClash] = []
    for (domain, pin), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        bus = BUS_PINS.get(pin)
        if len(group) > 1:
            out.append(PinClash(pin, group, "", ""))
        elif not domain and bus and bus[0] in buses:
            out.append(PinClash(pin, group, bus[1], buses[bus[0]]))
    return out


def notices(cfg: Config) -> list[tuple[str, str]]:
    """(key, sentence) for settings that are accepted but do nothing any more: warnings,
    never errors (a node upgraded with an old file keeps running)."""
    return [("fire.model", FIRE_MODEL_UNUSED)] if cfg.fire.model else []


# -- the checks after the schema's ---------------------------------------------------------
Problem = tuple[str, str]  # (key, sentence)


def _semantics(cfg: Config, locate: Callable[[str], int | None]) -> Iterator[Problem]:
    """What one table's schema cannot see: consistency across keys and tables."""
    if cfg.mqtt.backoff_max_s < cfg.mqtt.backoff_initial_s:
        yield "mqtt.backoff_max_s", "must not be smaller than mqtt.backoff_initial_s"
    yield from _failover_problems("mqtt", cfg.mqtt)
    yield from _uplink_problems(cfg)
    names_all = [x.name for x in cfg.sensor]
    for i, n in enumerate(cfg.fire.sensors):
        if n not in names_all:
            yield f"fire.sensors[{i}]", f"no sensor named {n!r}{_did_you_mean(n, names_all)}"
    if cfg.activity.max_wait_s < cfg.activity.min_inactivity_s:
        yield "activity.max_wait_s", "must not be smaller than activity.min_inactivity_s"
    names: dict[str, int] = {}
    records: dict[str, str] = {}
    i2c: dict[tuple[object, int], str] = {}
    for i, s in enumerate(cfg.sensor):
        if s.name in names:
            yield f"sensor[{i}].name", f"'{s.name}' is already used by sensor[{names[s.name]}]"
        names.setdefault(s.name, i)
        if len(set(s.quantities)) != len(s.quantities):
            yield f"sensor[{i}].quantities", "lists a quantity twice"
        for key, message in s.problems(cfg.sensor):
            yield f"sensor[{i}].{key}", message
        for q in s.reported():  # bays and bins report states and fill levels, not distances
            rec = s.prefix + q
            if rec in records:
                yield (f"sensor[{i}].prefix",
                       f"'{rec}' is already reported by sensor '{records[rec]}': give one of "
                       "them a prefix such as \"b.\"")
            records.setdefault(rec, s.name)
        spec = catalogue.spec_of(s)
        if spec.bus != "i2c":
            continue
        if s.address not in spec.addresses:
            yield (f"sensor[{i}].address", f"0x{s.address:02x} is not an address a {spec.type} "
                   f"can take ({', '.join(f'0x{a:02x}' for a in spec.addresses)})")
        if s.emulator_faults:
            if s.bus != "emulator":
                yield f"sensor[{i}].emulator_faults", 'only for bus = "emulator"'
            from drivers.emulation.i2c import parse_i2c_faults

            try:
                parse_i2c_faults(s.emulator_faults)
            except ValueError as exc:
                yield f"sensor[{i}].emulator_faults", str(exc)
        where = (s.bus, s.address)
        if where in i2c:
            yield (f"sensor[{i}].address", f"bus {s.bus} address 0x{where[1]:02x} is already "
                   f"used by sensor '{i2c[where]}'")
        i2c.setdefault(where, s.name)
    for clash in pin_clashes(cfg):
        # The use written last is the one at fault: it names the first.
        uses = sorted(clash.uses, key=lambda u: locate(u.key) or 0)
        first = uses[0]
        if clash.bus:
            yield (first.key, f"GPIO {clash.pin} is the {clash.bus} pin, and "
                   f"{clash.bus_user} uses that bus")
            continue
        at = locate(first.key)
        for u in uses[1:]:
            also = ": button_pin, buzzer_pin and led_pin must be different GPIOs" \
                if u.owner == first.owner == "fall" else ""
            yield (u.key, f"GPIO {clash.pin} is already {_pin_owner(first)} "
                   f"({first.key}{f', line {at}' if at else ''}){also}")


def _uplink_problems(cfg: Config) -> Iterator[Problem]:
    """Each [[uplink]]: a host, a name of its own, settings only for its own format."""
    taken = {MAIN_UPLINK: "[mqtt]"} if cfg.mqtt.host else {}
    for i, u in enumerate(cfg.uplink):
        key = f"uplink[{i}]"
        if not u.name:
            yield f"{key}.name", "is required: a short name for status and health, e.g. \"mobius\""
        elif u.name in taken:
            yield f"{key}.name", f"'{u.name}' is already used by {taken[u.name]}"
        else:
            taken[u.name] = key
        if not u.host:
            yield f"{key}.host", "is required: the broker this uplink connects to"
        if u.backoff_max_s < u.backoff_initial_s:
            yield f"{key}.backoff_max_s", f"must not be smaller than {key}.backoff_initial_s"
        yield from _failover_problems(key, u)
        own = u.format.replace("-", "_")
        for name in formats.NAMES:
            table = name.replace("-", "_")
            if table != own and formats.options(name) is not None and \
                    getattr(u, table) != formats.options(name)():
                yield f"{key}.{table}", (f"is for format = \"{name}\"; this uplink's format is "
                                         f"\"{u.format}\"")


def _failover_problems(key: str, m: MqttConfig) -> Iterator[Problem]:
    """``failover``: each entry a broker, none twice, none the primary, and a primary."""
    if m.failover and not m.host:
        yield f"{key}.failover", f"needs {key}.host: the primary broker, tried first"
        return
    seen = {(m.host.lower(), m.port): f"{key}.host"}
    for i, text in enumerate(m.failover):
        try:
            host, port = parse_broker(text, m.port)
        except ValueError as exc:
            yield f"{key}.failover[{i}]", f"{text[:64]!r}: {exc}"
            continue
        where = seen.setdefault((host.lower(), port), f"{key}.failover[{i}]")
        if where != f"{key}.failover[{i}]":
            yield f"{key}.failover[{i}]", f"{host}:{port} is already {where}"


def _pin_owner(u: PinClaim) -> str:
    return f"the fall {u.role}" if u.owner == "fall" else f"the {u.role} of sensor '{u.owner}'"


def _model_files(setting: str) -> list[str]:
    """The files a ``[fall] model`` setting needs: the model and its .json."""
    if setting in ("",) or setting.lower() == "none":
        return []
    p = Path(setting)
    return [str(p), str(p.with_suffix(".json"))] if p.name else [setting]  # "/" has no name


def _machine(cfg: Config, user: hostcheck.User | None) -> Iterator[Problem]:
    """What the configuration needs from this machine (``--no-devices`` skips it)."""
    from agent.core import hostcheck

    user = hostcheck.current_user() if user is None else user
    buses: set[object] = set()
    for i, s in enumerate(cfg.sensor):
        bus = catalogue.spec_of(s).bus
        if bus == "i2c" and s.bus != "emulator" and s.bus not in buses:
            buses.add(s.bus)
            why = hostcheck.i2c_bus_problem(s.bus)
            if why:
                yield f"sensor[{i}].bus", why
        elif bus == "uart":
            why = hostcheck.serial_port_problem(s.port)
            if why:
                yield f"sensor[{i}].port", why
    # [fire] model is unused (no fire model since 2026.12): no file to check for it
    files = [("fall.model", path) for path in _model_files(cfg.fall.model)
             if cfg.fall.enabled]
    files += [(f"mqtt.{k}", getattr(cfg.mqtt, k))
              for k in ("ca_file", "cert_file", "key_file", "credentials_file")]
    files += [(f"uplink[{i}].{k}", getattr(u, k)) for i, u in enumerate(cfg.uplink)
              for k in ("ca_file", "cert_file", "key_file", "credentials_file")]
    files.append(("commands.hmac_key_file", cfg.commands.hmac_key_file))
    failed: set[str] = set()
    for key, path in files:
        why = hostcheck.file_problem(path) if path and key not in failed else None
        if why:
            failed.add(key)  # a missing model: its missing .json says nothing more
            yield key, why
    state = cfg.node.resolved_state_dir()
    # An empty state_dir is systemd's StateDirectory=, which systemd creates for the
    # service user at start: a missing one is fine then.
    state_given = bool(cfg.node.state_dir) or state.exists()
    state_ok = True
    if state_given:
        why = hostcheck.dir_problem(str(state), user)
        if why:
            state_ok = False
            yield "node.state_dir", why
    if cfg.spool.path:
        spool = Path(cfg.spool.path)
        why = hostcheck.dir_problem(str(spool.parent), user) \
            or hostcheck.writable_file_problem(str(spool), user)
        if why:
            yield "spool.path", why
    elif state_given and state_ok:  # <state_dir>/spool.db
        why = hostcheck.writable_file_problem(str(state / "spool.db"), user)
        if why:
            yield "spool.path", why


# -- parsing ----------------------------------------------------------------------------------
class Checked(NamedTuple):
    """The result of :func:`check`: the configuration (None when the schema refused it)
    and every problem found, in the order the checks found them."""

    config: Config | None
    errors: list[ConfigError]


def _normalise(data: dict[str, Any]) -> None:
    """Sensor types by alias or in capitals (``pms7003``, ``PMS5003``) as their type."""
    sensors = data.get("sensor")
    if not isinstance(sensors, list):
        return
    for table in sensors:
        if isinstance(table, dict) and isinstance(table.get("type"), str):
            name = table["type"].lower()
            name = catalogue.aliases().get(name, name)
            if name in SENSOR_TYPES:
                table["type"] = name


def check(text: str, path: str = "<config>", *, check_devices: bool = True,
          user: hostcheck.User | None = None) -> Checked:
    """Validate TOML text; every problem found, each naming its key and line.

    The schema stops at its first problem (the rest may hang on it); the checks after it
    report all they find. ``check_devices``: also ask this machine (device nodes, files,
    writable directories) as ``user`` (default: the current user).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        return Checked(None, [ConfigError(f"not valid TOML: {exc}", path=path,
                                          line=int(m.group(1)) if m else None)])
    except RecursionError:
        return Checked(None, [ConfigError("not valid TOML: nested too deeply", path=path)])
    lines: dict[tomlkeys.Path, int] = {}

    def line_of(key: str) -> int | None:  # scanned only when there is something to say
        if not lines:
            lines.update(tomlkeys.key_lines(text))
        return tomlkeys.locate(lines, key)

    nul = _nul_key(data)
    if nul is not None:  # no key takes one, and paths with it crash os calls
        return Checked(None, [ConfigError("contains a NUL character (\\u0000)", path=path,
                                          key=nul, line=line_of(nul))])
    _normalise(data)
    try:
        cfg = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        msg, _, where = str(exc).partition(" - at ")
        key, sentence = _friendly(msg, _key_from_msgspec(where.strip("`")), data)
        return Checked(None, [ConfigError(sentence, path=path, key=key, line=line_of(key))])
    found = list(_semantics(cfg, line_of))
    if check_devices:
        found += _machine(cfg, user)
    errors = [ConfigError(message, path=path, key=key, line=line_of(key)) for key, message in found]
    return Checked(cfg, errors)


def _nul_key(value: Any, key: str = "") -> str | None:
    """The first key (``sensor[0].port``) whose string value contains a NUL character."""
    if isinstance(value, str):
        return key if "\x00" in value else None
    items = (value.items() if isinstance(value, dict)
             else ((f"[{i}]", v) for i, v in enumerate(value)) if isinstance(value, list)
             else ())
    for k, v in items:
        sub = f"{key}{k}" if k.startswith("[") else f"{key}.{k}" if key else k
        found = _nul_key(v, sub)
        if found is not None:
            return found
    return None


def locate(text: str, key: str) -> int | None:
    """The line of ``key`` (like ``sensor[1].plug.relay_pin``) in TOML text, else of the
    nearest enclosing key or table that is written there."""
    return tomlkeys.locate(tomlkeys.key_lines(text), key)


_locate = locate  # the name agent/wire/security.py knows


def _key_from_msgspec(path: str) -> str:
    # msgspec says `$.sensor[0].port`; people say sensor[0].port
    return path.removeprefix("$").removeprefix(".")


def parse(text: str, path: str = "<config>", *, check_devices: bool = True,
          user: hostcheck.User | None = None) -> Config:
    """Validate TOML text into a :class:`Config`, or raise its first :class:`ConfigError`."""
    cfg, errors = check(text, path, check_devices=check_devices, user=user)
    if errors:
        raise errors[0]
    assert cfg is not None
    return cfg


def read_text(path: str | os.PathLike[str]) -> str:
    """A configuration file's text (``-``: standard input), UTF-8, at most :data:`MAX_BYTES`
    (agent.core.inputs: a directory is refused by name, /dev/zero or a pipe never read
    beyond the limit)."""
    from agent.core import inputs

    p = os.fspath(path)
    try:
        return inputs.read_text(p, limit=MAX_BYTES)
    except inputs.InputError as exc:
        code = exc.code if exc.code == inputs.EX_NOINPUT else EX_CONFIG
        if exc.message == "no such file":
            raise ConfigError("file not found (use --config to name another)", path=p,
                              code=code) from None
        raise ConfigError(f"cannot read: {exc.message}", path=exc.name, code=code) from None


def load(path: str | os.PathLike[str], *, check_devices: bool = True,
         user: hostcheck.User | None = None) -> Config:
    """Read and validate a configuration file (``-``: standard input)."""
    p = os.fspath(path)
    name = "<stdin>" if p == "-" else p
    return parse(read_text(p), name, check_devices=check_devices, user=user)
