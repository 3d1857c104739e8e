"""Home Assistant MQTT discovery (agent/wire/formats/homeassistant), sans I/O.

The session is driven completely from here: no broker, no clock. What Home Assistant
accepts is encoded below from its own sources, so a configuration Home Assistant would
refuse fails here: the discovery topic and payload (home-assistant.io/integrations/mqtt,
"MQTT Discovery"), the required keys of sensor and event entities
(/integrations/sensor.mqtt, /integrations/event.mqtt), and the units and state classes each
sensor device class allows (core's homeassistant/components/sensor/const.py,
DEVICE_CLASS_UNITS and DEVICE_CLASS_STATE_CLASSES).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire import formats, quantities
from agent.wire.formats import PayloadError
from agent.wire.formats.homeassistant import FORMAT, Options
from agent.wire.formats.homeassistant import entities as ha
from agent.wire.formats.homeassistant.session import HomeAssistantSession
from agent.wire.model import Pack, Record
from agent.wire.session import Context, Item, SensorInfo
from agent.wire.topics import Topics
from drivers import catalogue

MU = "\u03bc"
ALL_STATE_CLASSES = {"measurement", "total", "total_increasing"}
#: DEVICE_CLASS_UNITS of Home Assistant core (sensor/const.py) for the classes this node
#: can use, and a few neighbours; None: no unit.
HA_UNITS: dict[str, set[str | None]] = {
    "pm1": {f"{MU}g/m\u00b3"},
    "pm25": {f"{MU}g/m\u00b3"},
    "pm10": {f"{MU}g/m\u00b3"},
    "temperature": {"\u00b0C", "\u00b0F", "K"},
    "humidity": {"%"},
    "moisture": {"%"},
    "atmospheric_pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
    "pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
    "power": {"mW", "W", "kW", "MW", "GW", "TW"},
    "voltage": {"V", "mV", f"{MU}V", "kV", "MV"},
    "current": {"A", "mA"},
    "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal",
               "Mcal", "Gcal"},
    "frequency": {"Hz", "kHz", "MHz", "GHz"},
    "power_factor": {"%", None},
    "distance": {"km", "m", "cm", "mm", "mi", "nmi", "yd", "in", "ft"},
    "carbon_dioxide": {"ppm"},
    "carbon_monoxide": {"ppm"},
    "volatile_organic_compounds_parts": {"ppm", "ppb"},
    "volatile_organic_compounds": {f"{MU}g/m\u00b3"},
    "illuminance": {"lx"},
    "duration": {"d", "h", "min", "s", "ms"},
    "data_size": {"bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB",
                  "ZB", "YB", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"},
    "aqi": {None},
    "enum": {None},
    "timestamp": {None},
}
#: DEVICE_CLASS_STATE_CLASSES of Home Assistant core for the same classes.
HA_STATE_CLASSES: dict[str, set[str]] = {
    **{c: {"measurement"} for c in (
        "pm1", "pm25", "pm10", "temperature", "humidity", "moisture", "atmospheric_pressure",
        "pressure", "power", "voltage", "current", "frequency", "power_factor",
        "carbon_dioxide", "carbon_monoxide", "volatile_organic_compounds_parts",
        "volatile_organic_compounds", "illuminance", "aqi")},
    "energy": {"total", "total_increasing"},
    "distance": ALL_STATE_CLASSES,
    "duration": ALL_STATE_CLASSES,
    "data_size": ALL_STATE_CLASSES,
    "enum": set(),
    "timestamp": set(),
}
#: Keys a discovery payload needs, by platform (Home Assistant's required options).
REQUIRED = {"sensor": {"state_topic"}, "event": {"state_topic", "event_types"}}
COMMON = {"name", "unique_id", "default_entity_id", "availability", "device", "origin"}
OBJECT_ID = re.compile(r"[a-zA-Z0-9_-]+\Z")
TEMPLATE = re.compile(r"\{\{ value_json\.([a-z0-9_]+) \}\}\Z")

JSON_CT = "application/senml+json"


def context(tmp_path: Path, sensors: tuple[tuple[str, ...], ...], *, node: str = "node-1",
            options: Options | None = None, boot: int = 3, uplink: str = "ha",
            info: tuple[SensorInfo, ...] = ()) -> Context:
    topics = Topics("citynode", node)
    return Context(node=node, topics=topics, home=topics, boot=boot, version="0.9.1",
                   sensors=sensors or tuple((i.name, i.type) for i in info),
                   state_dir=tmp_path, uplink=uplink, options=options, sensor_info=info)


def session(tmp_path: Path, sensors: tuple[tuple[str, ...], ...], **kw: Any
            ) -> HomeAssistantSession:
    s = FORMAT.session(context(tmp_path, sensors, **kw))
    assert isinstance(s, HomeAssistantSession)
    return s


def item(kind: str, records: list[Record], *, t: float = 1763900060.0, seq: int | None = 7,
         session_no: int = 3, historical: bool = False) -> Item:
    """A spooled message as the uplink hands it over (SenML JSON, the spool's format)."""
    fmt = formats.get("senml-json")
    pack = Pack(time=t, session=session_no, seq=seq, records=records, kind=kind)  # type: ignore[arg-type]
    return Item(kind, f"citynode/node-1/{kind}", fmt.encode(pack).payload,  # type: ignore[arg-type]
                fmt.content_type, historical=historical)


def configs(s: HomeAssistantSession) -> dict[str, dict[str, Any]]:
    return {o.topic: json.loads(o.payload) for o in s.opening() if o.topic.endswith("/config")
            and o.payload}


def one(outs: list[Any]) -> Any:
    assert len(outs) == 1, outs
    return outs[0]


# -- the format in the registry --------------------------------------------------------------
def test_registry_loads_the_package_as_a_platform_format() -> None:
    assert "homeassistant" in formats.PLATFORM_FORMATS
    assert "homeassistant" not in formats.PACK_NAMES
    assert formats.get("homeassistant") is FORMAT
    assert formats.options("homeassistant") is Options
    assert FORMAT.packs is False
    with pytest.raises(PayloadError):
        FORMAT.encode(Pack(time=0.0, session=1, seq=0))
    with pytest.raises(PayloadError):
        FORMAT.decode(b"{}")
    assert FORMAT.historical(b"abc", 1) == b"abc"
    assert FORMAT.on_connect(None) == []  # type: ignore[arg-type]


def test_options_are_a_strict_table() -> None:
    o = msgspec.convert({"discovery_prefix": "ha/disc", "node_name": "Pole 42",
                         "expire_after_s": 300}, Options)
    assert (o.discovery_prefix, o.node_name, o.expire_after_s) == ("ha/disc", "Pole 42", 300)
    assert Options() == msgspec.convert({}, Options)
    for bad in ({"discovery_prefix": "home/#"}, {"discovery_prefix": ""},
                {"status_topic": "a/+/b"}, {"expire_after_s": -1}, {"colour": "red"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, Options)


def test_the_module_top_level_stays_light() -> None:
    """The configuration imports every format's Options at start: no catalogue there."""
    import subprocess
    import sys

    code = ("import sys, agent.wire.formats.homeassistant as m; "
            "print(sorted(x for x in sys.modules if x.startswith(('drivers', 'paho', "
            "'agent.wire.formats.homeassistant.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


# -- what Home Assistant accepts ----------------------------------------------------------------
def check_config(topic: str, c: dict[str, Any], *, prefix: str = "homeassistant",
                 node: str = "node-1") -> None:
    parts = topic.split("/")
    assert topic.startswith(f"{prefix}/") and parts[-1] == "config", topic
    component, node_id, object_id = parts[-4:-1]
    assert component in REQUIRED and node_id == node
    assert OBJECT_ID.match(node_id) and OBJECT_ID.match(object_id), topic
    assert COMMON | REQUIRED[component] <= set(c), (topic, set(c))
    assert c["unique_id"] == f"citynode_{node}_{object_id}"
    assert re.fullmatch(rf"{component}\.[a-z0-9_]+", c["default_entity_id"])
    assert isinstance(c["name"], str) and c["name"]
    assert c["device"]["identifiers"] == [node]
    assert c["device"]["manufacturer"] == "citynode" and c["device"]["sw_version"] == "0.9.1"
    assert c["origin"] == {"name": "citynode", "sw_version": "0.9.1"}
    assert c["availability"] == [{"topic": f"citynode/{node}/ha/availability"}]
    assert "object_id" not in c  # refused by Home Assistant from 2026.4 (default_entity_id)
    if component == "event":
        types = c["event_types"]
        assert types and len(set(types)) == len(types) and ha.OTHER in types
        assert "device_class" not in c and "unit_of_measurement" not in c
        return
    assert TEMPLATE.match(c["value_template"]), c["value_template"]
    dc, unit, sc = c.get("device_class"), c.get("unit_of_measurement"), c.get("state_class")
    if dc is not None:
        assert dc in HA_UNITS, f"{topic}: device class {dc} not in the encoded table"
        assert unit in HA_UNITS[dc], f"{topic}: {dc} does not take the unit {unit!r}"
        if sc is not None:
            assert sc in HA_STATE_CLASSES[dc], f"{topic}: {dc} does not take {sc}"
    if sc is not None:
        assert sc in ALL_STATE_CLASSES
    if dc == "enum":
        assert c["options"] and unit is None and sc is None
    if "suggested_display_precision" in c:
        assert isinstance(c["suggested_display_precision"], int)
        assert c["suggested_display_precision"] >= 0
    if "entity_category" in c:
        assert c["entity_category"] == "diagnostic"


def full_report(sensors: list[tuple[str, str]]) -> list[Record]:
    """Every quantity of every sensor with its extremes and count, as the daemon names
    them (agent/core/aggregate.py): one report that fills every entity."""
    records: list[Record] = []
    for name, type_ in sensors:
        spec = catalogue.get(type_)
        for q, m in spec.quantities.items():
            lo, hi = m.range if m.range else (0.0, 10.0)
            v = lo + (hi - lo) / 3
            records += [Record(q, value=v), Record(f"{q}:min", value=lo),
                        Record(f"{q}:max", value=hi)]
        records.append(Record(f"{name}:n", value=30))
    return records


@pytest.mark.parametrize("device", list(catalogue.specs()))
def test_every_catalogued_device_is_valid_discovery(tmp_path: Path, device: str) -> None:
    s = session(tmp_path, (("s1", device),))
    cs = configs(s)
    assert cs, device
    uids = [c["unique_id"] for c in cs.values()]
    assert len(uids) == len(set(uids))
    for topic, c in cs.items():
        check_config(topic, c)
    spec = catalogue.get(device)
    objects = {t.split("/")[-2] for t in cs}
    assert {f"s1_{q}" for q in spec.quantities} <= objects
    assert {"events", "node_uptime", "node_spool", "s1_health"} <= objects
    # every sensor entity finds its value in the state a full report renders
    state = json.loads(one(s.render(item("telemetry", full_report([("s1", device)])))).payload)
    for c in cs.values():
        if c.get("state_topic", "").endswith("/ha/state") and c.get("device_class") != "timestamp":
            k = TEMPLATE.match(c["value_template"]).group(1)  # type: ignore[union-attr]
            assert state[k] is not None, (device, k)
            assert isinstance(state[k], int | float)


def test_all_devices_at_once_have_unique_ids_and_one_device(tmp_path: Path) -> None:
    sensors = tuple((f"s{i}", t) for i, t in enumerate(catalogue.specs()))
    s = session(tmp_path, sensors)
    cs = configs(s)
    uids = [c["unique_id"] for c in cs.values()]
    assert len(uids) == len(set(uids)) == len(s.layout.entities)
    assert len({json.dumps(c["device"], sort_keys=True) for c in cs.values()}) == 1
    device = next(iter(cs.values()))["device"]
    assert device["model"] == ", ".join(catalogue.specs())
    assert {f"alarm_{a}" for a in ha.ALARMS} <= {t.split("/")[-2] for t in cs}
    for topic, c in cs.items():
        check_config(topic, c)


def test_every_unit_of_the_catalogue_has_a_home_assistant_spelling() -> None:
    units = {q.unit for q in quantities.CATALOGUE.values()}
    assert units <= set(ha.UNITS), units - set(ha.UNITS)
    for q in ha.QUANTITIES:
        assert q in quantities.CATALOGUE, f"{q}: a row for a quantity the node does not have"
    for q in ha.NODE_DIAGNOSTICS:
        assert q in quantities.CATALOGUE
    # micro is the Greek letter mu, as Home Assistant's constants write it
    assert all("\u00b5" not in (u or "") for u in ha.UNITS.values())


def test_health_states_are_the_sensor_loop_s() -> None:
    from agent.core.sampling import Health

    assert set(ha.HEALTH_STATES) == {h.value for h in Health}


def test_precision_follows_resolution() -> None:
    assert [ha.precision(r) for r in (1, 0.1, 0.01, 0.001, 10, None, 0.0)] == \
        [0, 1, 2, 3, 0, None, None]


def test_options_shape_the_announcement(tmp_path: Path) -> None:
    opts = Options(discovery_prefix="ha/disc", node_name="Pole 42", expire_after_s=180,
                   status_topic="hass/status", suggested_area="Jongno")
    s = session(tmp_path, (("pm", "pms5003"),), options=opts)
    assert s.subscriptions() == ["hass/status", "ha/disc/+/node-1/+/config"]
    cs = configs(s)
    for topic, c in cs.items():
        check_config(topic, c, prefix="ha/disc")
        assert c["device"]["name"] == "Pole 42" and c["device"]["suggested_area"] == "Jongno"
    pm25 = cs["ha/disc/sensor/node-1/pm_pm25/config"]
    assert pm25["expire_after"] == 180 and pm25["device_class"] == "pm25"
    assert "expire_after" not in cs["ha/disc/sensor/node-1/node_uptime/config"]


# -- opening, will, removal ---------------------------------------------------------------------
def test_opening_is_configs_then_online_all_retained(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"),))
    outs = s.opening()
    assert all(o.retain and o.qos == 1 and o.token is None for o in outs)
    assert outs[-1].topic == "citynode/node-1/ha/availability" and outs[-1].payload == b"online"
    assert all(o.topic.endswith("/config") for o in outs[:-1])
    assert len(outs) == len(s.layout.entities) + 1
    will = s.will(Pack(time=0.0, session=3, seq=None))
    assert will is not None and (will.topic, will.payload, will.retain) == \
        ("citynode/node-1/ha/availability", b"offline", True)
    saved = json.loads((tmp_path / "homeassistant-ha.json").read_text())
    assert saved["announced"] == [o.topic for o in outs[:-1]]


def test_a_removed_sensor_gets_empty_retained_configs(tmp_path: Path) -> None:
    first = session(tmp_path, (("pm", "pms5003"), ("env", "bme280")))
    before = {o.topic for o in first.opening() if o.topic.endswith("/config")}
    second = session(tmp_path, (("pm", "pms5003"),))
    outs = second.opening()
    empties = [o for o in outs if not o.payload]
    assert {o.topic for o in empties} == {t for t in before if "/env_" in t}
    assert all(o.retain for o in empties)
    assert outs.index(empties[-1]) < min(i for i, o in enumerate(outs) if o.payload)
    assert second.removed == len(empties)
    # the file now holds the new set: the next start removes nothing
    assert not [o for o in session(tmp_path, (("pm", "pms5003"),)).opening() if not o.payload]


def test_each_uplink_keeps_its_own_file(tmp_path: Path) -> None:
    session(tmp_path, (("pm", "pms5003"),), uplink="a").opening()
    outs = session(tmp_path, (), uplink="b").opening()
    assert not [o for o in outs if not o.payload]
    assert (tmp_path / "homeassistant-a.json").exists()


@pytest.mark.parametrize("content", [
    "", "{", "[]", '{"announced": 5}', '{"announced": [1, null, {}]}',
    '{"announced": ["other/sensor/node-1/x/config", "homeassistant/sensor/node-2/x/config",'
    ' "homeassistant/sensor/node-1/#/config", "homeassistant/sensor/node-1/../config"]}',
])
def test_a_damaged_file_removes_nothing_foreign(tmp_path: Path, content: str) -> None:
    (tmp_path / "homeassistant-ha.json").write_text(content)
    s = session(tmp_path, (("pm", "pms5003"),))
    outs = s.opening()
    assert not [o for o in outs if not o.payload]
    assert json.loads((tmp_path / "homeassistant-ha.json").read_text())["announced"]


def test_an_unwritable_state_dir_still_opens(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    s = FORMAT.session(context(blocker, (("pm", "pms5003"),)))
    assert s.opening()[-1].payload == b"online"


def test_unknown_device_types_announce_nothing_of_theirs(tmp_path: Path) -> None:
    s = session(tmp_path, (("x", "no-such-device"), ("pm", "pms5003")))
    objects = {e.object for e in s.layout.entities}
    assert "x_health" in objects and not any(o.startswith("x_") and o != "x_health"
                                             for o in objects)


# -- inbound ------------------------------------------------------------------------------------
def test_home_assistant_online_reopens(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"),))
    assert s.receive("homeassistant/status", b"online").reopen
    assert s.receive("homeassistant/status", b"online\n").reopen
    assert not s.receive("homeassistant/status", b"online", retained=True).reopen  # old news
    for payload in (b"offline", b"", b"ONLINE", b"\xff\xfe", b"online!" * 1000):
        assert s.receive("homeassistant/status", payload) == \
            type(s.receive("x", b""))()


def test_the_sweep_removes_only_this_node_s_stale_entities(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"),))
    mine = json.dumps({"unique_id": "citynode_node-1_env_temp", "name": "x"}).encode()
    r = s.receive("homeassistant/sensor/node-1/env_temp/config", mine, retained=True)
    assert [(o.topic, o.payload, o.retain) for o in r.send] == \
        [("homeassistant/sensor/node-1/env_temp/config", b"", True)]
    short = json.dumps({"uniq_id": "citynode_node-1_old"}).encode()
    assert s.receive("homeassistant/binary_sensor/node-1/old/config", short).send
    for topic, payload in [
        ("homeassistant/sensor/node-1/pm_pm25/config", mine),  # announced now
        ("homeassistant/sensor/node-1/env_temp/config", b""),  # our own removal's echo
        ("homeassistant/sensor/node-1/env_temp/config",
         json.dumps({"unique_id": "someone_else"}).encode()),
        ("homeassistant/sensor/node-1/env_temp/config", b"[1,2]"),
        ("homeassistant/sensor/node-1/env_temp/config", b"{" * 100000),
        ("homeassistant/sensor/node-2/env_temp/config", mine),
    ]:
        assert not s.receive(topic, payload).send, (topic, payload[:40])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=st.one_of(st.text(max_size=80), st.sampled_from([
    "homeassistant/status", "homeassistant/sensor/node-1/x/config",
    "homeassistant/event/node-1/alarm_fire/config"])),
    payload=st.one_of(st.binary(max_size=300), st.builds(
        lambda d: json.dumps(d).encode(), st.recursive(
            st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(
                st.sampled_from(["unique_id", "uniq_id", "name", "x"]), c, max_size=4),
            max_leaves=12))),
    retained=st.booleans())
def test_hostile_inbound_never_raises(tmp_path: Path, topic: str, payload: bytes,
                                      retained: bool) -> None:
    s = session(tmp_path, (("pm", "pms5003"),))
    r = s.receive(topic, payload, retained=retained, correlation=b"c", response_topic="r")
    assert not r.commands and not r.confirmed and not r.refused
    assert not r.reopen or (topic == "homeassistant/status" and payload.strip() == b"online"
                            and not retained)
    for o in r.send:
        assert o.payload == b"" and o.retain and o.topic == topic
        assert re.fullmatch(r"homeassistant/[a-z_]+/node-1/[a-z0-9_]+/config", o.topic)


# -- rendering ----------------------------------------------------------------------------------
def test_a_report_is_one_retained_state_with_every_entity_key(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"), ("env", "bme280")))
    out = one(s.render(item("telemetry", [
        Record("pm25", value=12.4), Record("pm25:min", value=10), Record("pm25:max", value=15),
        Record("pm:n", value=29), Record("pm:q", value=4), Record("pm:aq", value=21),
        Record("temp", value=21.2345), Record("env:n", value=30)])))
    assert (out.topic, out.retain, out.content_type) == \
        ("citynode/node-1/ha/state", True, "application/json")
    doc = json.loads(out.payload)
    assert doc["time"] == "2025-11-23T12:14:20+00:00" and doc["session"] == 3 and doc["seq"] == 7
    assert doc["pm_pm25"] == 12 and doc["pm_pm25_min"] == 10 and doc["pm_pm25_max"] == 15
    assert doc["pm_n"] == 29 and doc["pm_q"] == 4 and doc["pm_aq"] == 21
    assert doc["env_temp"] == 21.23
    assert doc["pm_pm10"] is None and doc["env_rh"] is None  # unknown, not stale
    assert set(s.layout.state_keys) <= set(doc)


def test_late_reports_are_not_shown_as_current(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"),))
    assert s.render(item("telemetry", [Record("pm25", value=1)], historical=True)) == []
    assert s.render(item("telemetry", [Record("pm25", value=1)], t=2000.0))
    assert s.render(item("telemetry", [Record("pm25", value=1)], t=1000.0)) == []
    assert s.render(item("telemetry", [Record("pm25", value=1)], t=2000.0))
    assert s.render(item("health", [Record("uptime", value=5)], historical=True)) == []


def test_prefixed_sensors_find_their_entities(tmp_path: Path) -> None:
    """Two climate sensors, the second with prefix "x.": the prefix decides where the
    context gives it (sensor_info); the report's order does where it does not."""
    records = [Record("temp", value=20), Record("temp:min", value=19), Record("a:n", value=3),
               Record("x.temp", value=30), Record("x.temp:max", value=31),
               Record("b:n", value=3)]
    with_info = (SensorInfo("a", "sht3x", "", ("temp", "rh")),
                 SensorInfo("b", "bme280", "x.", ("temp", "rh", "pressure")))
    for kw in ({"sensors": (("a", "sht3x"), ("b", "bme280"))},
               {"sensors": (), "info": with_info}):
        s = session(tmp_path, **kw)
        doc = json.loads(one(s.render(item("telemetry", records))).payload)
        assert (doc["a_temp"], doc["a_temp_min"], doc["b_temp"], doc["b_temp_max"]) == \
            (20, 19, 30, 31), kw
    # with sensor_info, the order no longer matters
    doc = json.loads(one(s.render(item("telemetry", records[::-1], t=2e9))).payload)
    assert (doc["a_temp"], doc["b_temp"]) == (20, 30)


def test_only_what_a_sensor_reports_is_announced(tmp_path: Path) -> None:
    s = session(tmp_path, (), info=(SensorInfo("env", "bme280", "", ("temp",)),
                                    SensorInfo("bay", "a02yyuw", "", ())))
    objects = {e.object for e in s.layout.entities}
    assert "env_temp" in objects and "env_rh" not in objects and "env_pressure" not in objects
    assert "bay_d" not in objects and "bay_health" in objects  # a bay reports states


def test_ambiguous_records_are_never_guessed_onto_one_entity(tmp_path: Path) -> None:
    s = session(tmp_path, (("a", "sht3x"), ("b", "bme280")))
    # no count and no flags: nothing says whose "temp" is whose
    doc = json.loads(one(s.render(item("telemetry", [
        Record("temp", value=20), Record("b.temp", value=30)]))).payload)
    assert doc["a_temp"] is None and doc["b_temp"] is None  # "b.temp" is not b_temp here
    assert doc["temp"] == 20


def test_alarms_go_to_their_event_entities(tmp_path: Path) -> None:
    s = session(tmp_path, (("acc", "adxl345"), ("env", "bme280"), ("plug", "cse7766")))
    cases = [
        ([Record("fall:event", text="alarm"), Record("fall:score", value=0.93),
          Record("fall:confirm_t", text="12.5000")], "alarm_fall", "alarm"),
        ([Record("fire:event", text="fire"), Record("fire:score", value=0.8),
          Record("fire:reasons", text="pm25,temp")], "alarm_fire", "fire"),
        ([Record("home:event", text="inactivity_alarm"), Record("home:silent_s", value=3600)],
         "alarm_household", "inactivity_alarm"),
        ([Record("plug:event", text="cutoff"), Record("plug:watts", value=2500)],
         "alarm_household", "cutoff"),
        ([Record("fall:event", text="brand_new")], "alarm_fall", ha.OTHER),
        ([Record("mystery:event", text="x")], "events", ha.OTHER),
    ]
    for records, obj, event_type in cases:
        out = one(s.render(item("alarm", records, t=1763900061.25)))
        assert out.topic == f"citynode/node-1/ha/event/{obj}" and not out.retain
        doc = json.loads(out.payload)
        assert doc["event_type"] == event_type
        assert doc["time"] == "2025-11-23T12:14:21.250+00:00" and doc["historical"] is False
        if event_type == ha.OTHER:
            assert doc["event"] == records[0].text
    doc = json.loads(s.render(item("alarm", cases[0][0]))[0].payload)
    assert doc["score"] == 0.93 and doc["confirm_t"] == "12.5000" and doc["subject"] == "fall"
    late = json.loads(one(s.render(item("alarm", cases[1][0], historical=True))).payload)
    assert late["historical"] is True and late["reasons"] == "pm25,temp"


def test_events_and_health_feed_the_diagnostics(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"), ("bay", "a02yyuw")))
    outs = s.render(item("event", [Record("pm:health", text="errors")], t=100.0))
    assert [o.topic for o in outs] == ["citynode/node-1/ha/event/events",
                                      "citynode/node-1/ha/diagnostics"]
    assert json.loads(outs[0].payload)["event_type"] == "health"
    assert json.loads(outs[0].payload)["value"] == "errors"
    assert json.loads(outs[1].payload)["pm_health"] == "errors" and outs[1].retain
    bay = json.loads(one(s.render(item("event", [
        Record("bay:state", text="occupied"), Record("bay:fill", value=12.0)]))).payload)
    assert (bay["event_type"], bay["value"], bay["fill"]) == ("state", "occupied", 12)
    spool = json.loads(one(s.render(item("event", [Record("spool", text="quarantined")])))
                       .payload)
    assert (spool["event_type"], spool["value"]) == ("spool", "quarantined")
    diag = json.loads(one(s.render(item("health", [
        Record("uptime", value=86400), Record("cpu", value=1.72), Record("rss", value=3e7),
        Record("pm:health", text="ok"), Record("spool", value=0),
        Record("new_thing", value=1)], t=200.0))).payload)
    assert (diag["node_uptime"], diag["node_cpu"], diag["node_rss"], diag["pm_health"],
            diag["node_spool"], diag["new_thing"]) == (86400, 1.7, 30000000, "ok", 0, 1)
    assert diag["bay_health"] is None
    # a late health transition updates nothing current
    outs = s.render(item("event", [Record("pm:health", text="stale")], t=150.0))
    assert [o.topic for o in outs] == ["citynode/node-1/ha/event/events"]


def test_goodbye_of_this_session_is_offline_and_nothing_else_is(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"),), boot=3)
    bye = [Record("status", text="offline"), Record("reason", text="shutdown")]
    out = one(s.render(item("state", bye, session_no=3)))
    assert (out.topic, out.payload, out.retain) == \
        ("citynode/node-1/ha/availability", b"offline", True)
    assert s.render(item("state", bye, session_no=2)) == []  # an earlier boot's, late
    assert s.render(item("state", bye, session_no=3, historical=True)) == []
    assert s.render(item("state", [Record("status", text="online")])) == []
    assert s.render(item("result", [Record("id", text="c1"), Record("ok", flag=True)])) == []


def test_an_unreadable_spooled_row_renders_to_nothing(tmp_path: Path) -> None:
    s = session(tmp_path, (("pm", "pms5003"),))
    assert s.render(Item("telemetry", "t", b"\xff\x00garbage", JSON_CT)) == []


names = st.one_of(
    st.sampled_from(["pm25", "pm25:min", "pm:n", "temp", "b.temp", "pm:health", "fall:event",
                     "fire:score", "status", "uptime", "x.y.z:w:v", "home:event", "pm:aq"]),
    st.from_regex(r"[a-z][a-z0-9_.:]{0,20}", fullmatch=True))
records = st.lists(st.builds(
    lambda n, kind, v, txt: (Record(n, value=v) if kind == 0 else
                             Record(n, text=txt) if kind == 1 else Record(n, flag=bool(v))),
    names, st.integers(0, 2), st.floats(-1e12, 1e12, allow_nan=False), st.text(max_size=12)),
    min_size=1, max_size=12)  # a pack has a record at least (SenML)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["telemetry", "health", "event", "alarm", "state", "result"]),
       recs=records, t=st.floats(0, 4e9), historical=st.booleans())
def test_any_pack_renders_to_valid_json_on_known_topics(tmp_path: Path, kind: str,
                                                        recs: list[Record], t: float,
                                                        historical: bool) -> None:
    s = session(tmp_path, (("pm", "pms5003"), ("b", "bme280"), ("acc", "mpu6050")))
    for o in s.render(item(kind, recs, t=t, historical=historical)):
        assert o.topic.startswith("citynode/node-1/ha/")
        if o.topic.endswith("/availability"):
            assert o.payload in (b"online", b"offline")
            continue
        doc = json.loads(o.payload)
        assert isinstance(doc, dict) and "time" in doc
        assert all(isinstance(v, int | float | str | bool) or v is None for v in doc.values())
        assert all(not isinstance(v, float) or math.isfinite(v) for v in doc.values())
        if "/event/" in o.topic:
            types = ha.EVENT_TYPES if o.topic.endswith("/events") else \
                ha.ALARMS[o.topic.rsplit("_", 1)[1]].event_types
            assert doc["event_type"] in types


# -- channels (the AsyncAPI document) -----------------------------------------------------------
def validate(doc: Any, schema: dict[str, Any]) -> None:
    """The JSON Schema keywords the channels use, enough to hold real messages to them."""
    types = {"object": dict, "array": list, "string": str, "boolean": bool,
             "integer": int, "number": (int, float), "null": type(None)}
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(isinstance(doc, types[t]) and not (t in ("integer", "number")
                                                       and isinstance(doc, bool))
                   for t in allowed), (doc, allowed)
    if "enum" in schema:
        assert doc in schema["enum"], (doc, schema["enum"])
    if "const" in schema:
        assert doc == schema["const"]
    if "pattern" in schema:
        assert re.search(schema["pattern"], doc)
    if "minimum" in schema and isinstance(doc, int | float):
        assert doc >= schema["minimum"]
    if isinstance(doc, list):
        assert len(doc) >= schema.get("minItems", 0)
        for x in doc:
            validate(x, schema.get("items", {}))
    if isinstance(doc, dict):
        assert set(schema.get("required", ())) <= set(doc), (schema.get("required"), doc)
        props = schema.get("properties", {})
        for k, v in doc.items():
            if k in props:
                validate(v, props[k])
                continue
            pattern = next((p for p in schema.get("patternProperties", {}) if re.search(p, k)),
                           None)
            if pattern is not None:
                validate(v, schema["patternProperties"][pattern])
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(v, schema["additionalProperties"])


def test_channels_describe_every_topic_and_hold_real_messages(tmp_path: Path) -> None:
    chans = {c.name: c for c in FORMAT.channels()}
    assert len(chans) == len(FORMAT.channels())
    for c in chans.values():
        params = set(re.findall(r"\{([a-z_]+)\}", c.address))
        assert params <= {"prefix", "node"} | set(c.parameters), c.name
        for example in c.examples:
            validate(example, c.schema)
    s = session(tmp_path, (("pm", "pms5003"), ("acc", "adxl345")))
    for cfg in configs(s).values():
        validate(cfg, chans["config"].schema)
    validate("online", chans["availability"].schema)
    state = one(s.render(item("telemetry", full_report([("pm", "pms5003")]))))
    validate(json.loads(state.payload), chans["state"].schema)
    diag = one(s.render(item("health", [Record("uptime", value=1),
                                        Record("pm:health", text="ok")])))
    validate(json.loads(diag.payload), chans["diagnostics"].schema)
    ev = one(s.render(item("alarm", [Record("fall:event", text="alarm")])))
    validate(json.loads(ev.payload), chans["event"].schema)
    assert chans["status"].action == "receive" and chans["config_sweep"].action == "receive"
    assert {c.name for c in chans.values() if c.retain} == \
        {"config", "state", "diagnostics", "availability"}
