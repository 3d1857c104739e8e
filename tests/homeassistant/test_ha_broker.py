"""The Home Assistant session against a real mosquitto, seen as Home Assistant sees the
broker: retained discovery configurations, the JSON state, events, availability, removal
with empty retained payloads, announcing again on ``homeassistant/status`` ``online``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ha_harness import Harness, Watcher, retained, wait_for

from agent.wire import formats
from agent.wire.model import Pack, Record
from agent.wire.session import Context, Item
from agent.wire.topics import Topics

pytestmark = pytest.mark.homeassistant

NODE = "pole-42"
AVAILABILITY = f"citynode/{NODE}/ha/availability"
STATE = f"citynode/{NODE}/ha/state"


def make_session(state_dir: Path, sensors: tuple[tuple[str, str], ...]):
    topics = Topics("citynode", NODE)
    return formats.get("homeassistant").session(Context(
        node=NODE, topics=topics, home=topics, boot=5, version="0.9.1", sensors=sensors,
        state_dir=state_dir, uplink="ha"))


def item(kind: str, records: list[Record], t: float | None = None) -> Item:
    fmt = formats.get("senml-cbor")
    pack = Pack(time=t or float(round(time.time())), session=5, seq=1, records=records,
                kind=kind)  # type: ignore[arg-type]
    return Item(kind, f"citynode/{NODE}/{kind}", fmt.encode(pack).payload,  # type: ignore[arg-type]
                fmt.content_type)


def config_topics(kept: dict[str, bytes]) -> set[str]:
    return {t for t, p in kept.items() if t.startswith("homeassistant/") and
            t.endswith("/config") and p}


def test_configs_state_events_and_availability_on_the_broker(tmp_path: Path, mosquitto) -> None:
    s = make_session(tmp_path, (("pm", "pms5003"), ("acc", "adxl345")))
    events = Watcher(mosquitto.port, f"citynode/{NODE}/ha/event/#")
    try:
        with Harness(mosquitto.port, s) as h:
            h.render(item("telemetry", [Record("pm25", value=12), Record("pm10", value=20),
                                        Record("pm:n", value=29)]))
            h.render(item("alarm", [Record("fall:event", text="alarm"),
                                    Record("fall:score", value=0.9)]))
            h.flush()
            kept = retained(mosquitto.port)
            assert config_topics(kept) == set(s.configs)
            for topic, payload in s.configs.items():
                assert kept[topic] == payload
                config = json.loads(kept[topic])
                assert config["state_topic"].startswith(f"citynode/{NODE}/ha/")
            assert kept[AVAILABILITY] == b"online"
            state = json.loads(kept[STATE])
            assert (state["pm_pm25"], state["pm_pm10"], state["pm_n"]) == (12, 20, 29)
            fall = wait_for(lambda: events.on(f"citynode/{NODE}/ha/event/alarm_fall"),
                            what="the fall event")
            assert json.loads(fall[0])["event_type"] == "alarm"
            assert not any(t.startswith(f"citynode/{NODE}/ha/event/") for t in kept)
        # a clean stop leaves the availability as the last opening said
        assert retained(mosquitto.port, AVAILABILITY)[AVAILABILITY] == b"online"
    finally:
        events.close()


def test_the_will_says_offline_when_the_node_vanishes(tmp_path: Path, mosquitto) -> None:
    s = make_session(tmp_path, (("pm", "pms5003"),))
    h = Harness(mosquitto.port, s).__enter__()
    h.vanish()
    wait_for(lambda: retained(mosquitto.port, AVAILABILITY, 0.3).get(AVAILABILITY) == b"offline",
             what="the will")


def test_the_goodbye_says_offline(tmp_path: Path, mosquitto) -> None:
    s = make_session(tmp_path, (("pm", "pms5003"),))
    with Harness(mosquitto.port, s) as h:
        h.render(item("state", [Record("status", text="offline"),
                                Record("reason", text="shutdown")]))
    assert retained(mosquitto.port, AVAILABILITY)[AVAILABILITY] == b"offline"


def test_a_sensor_removed_between_runs_is_removed_from_home_assistant(tmp_path: Path,
                                                                      mosquitto) -> None:
    with Harness(mosquitto.port, make_session(tmp_path, (("pm", "pms5003"),
                                                         ("env", "bme280")))):
        pass
    before = config_topics(retained(mosquitto.port))
    gone = {t for t in before if f"/{NODE}/env_" in t}
    assert gone and len(gone) >= 4  # temp, rh, pressure, health
    watcher = Watcher(mosquitto.port, "homeassistant/#")
    try:
        s = make_session(tmp_path, (("pm", "pms5003"),))
        with Harness(mosquitto.port, s):
            pass
        wait_for(lambda: all(watcher.on(t) and watcher.on(t)[-1] == b"" for t in gone),
                 what="empty configurations for the removed sensor")
    finally:
        watcher.close()
    after = config_topics(retained(mosquitto.port))
    assert after == set(s.configs) == before - gone


def test_home_assistant_online_announces_again(tmp_path: Path, mosquitto) -> None:
    s = make_session(tmp_path, (("pm", "pms5003"),))
    with Harness(mosquitto.port, s):
        watcher = Watcher(mosquitto.port, f"homeassistant/+/{NODE}/+/config")
        try:
            wait_for(lambda: len(watcher.messages) >= len(s.configs), what="retained configs")
            watcher.clear()
            w = Watcher(mosquitto.port, "x/none")
            w.client.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
            w.client.publish("homeassistant/status", b"offline", qos=1).wait_for_publish(5)
            w.close()
            wait_for(lambda: {t for t, p, r in watcher.messages if p and not r}
                     == set(s.configs), what="the configurations announced again")
            assert s.reopened == 1
        finally:
            watcher.close()


def test_a_stale_retained_config_of_this_node_is_swept(tmp_path: Path, mosquitto) -> None:
    stale = f"homeassistant/sensor/{NODE}/old_temp/config"
    foreign = f"homeassistant/sensor/{NODE}/theirs/config"
    w = Watcher(mosquitto.port, "x/none")
    w.client.publish(stale, json.dumps({"unique_id": f"citynode_{NODE}_old_temp",
                                        "state_topic": "x"}), qos=1, retain=True
                     ).wait_for_publish(5)
    w.client.publish(foreign, json.dumps({"unique_id": "someone_else", "state_topic": "x"}),
                     qos=1, retain=True).wait_for_publish(5)
    w.close()
    s = make_session(tmp_path, (("pm", "pms5003"),))
    with Harness(mosquitto.port, s):
        wait_for(lambda: stale not in retained(mosquitto.port, "homeassistant/#", 0.3),
                 what="the stale configuration removed")
    kept = retained(mosquitto.port, "homeassistant/#")
    assert foreign in kept and stale not in kept
