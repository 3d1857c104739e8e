"""Smart plugs in the daemon: relay safe states, cut-off events, commands, the routine kept."""

from __future__ import annotations

import time

import pytest

from agent.core import config
from agent.features.base import FeatureContext, event_records
from agent.features.household import Household, activity_kwargs
from agent.wire.model import Record
from drivers.base import Reading

CFG = """
[node]
id = "home-1"
state_dir = "{state}"
[activity]
min_inactivity_s = 3600
[[sensor]]
type = "cse7766"
name = "kettle"
port = "/dev/null"
prefix = "k."
[sensor.plug]
relay_pin = 17
cutoff_w = 2500
cutoff_s = 5
[[sensor]]
type = "pzem004t"
name = "fridge"
port = "/dev/null"
prefix = "f."
[sensor.plug]
activity = false
"""


def make(tmp_path):
    cfg = config.parse(CFG.format(state=tmp_path), check_devices=False)  # /dev/null ports
    sent: list[list[Record]] = []
    return Household(cfg, context(tmp_path, sent.append)), sent


def context(tmp_path, publish) -> FeatureContext:
    return FeatureContext(tmp_path, publish=lambda kind, recs: publish(recs))


def r(w: float, t: float) -> Reading:
    return Reading({"w": w}, time.monotonic(), t)


def test_relay_safe_state_cutoff_and_commands(tmp_path, factory):
    home, sent = make(tmp_path)
    home.open()
    pin = factory.pin(17)
    assert pin.state == 0  # the safe state (off) from the start
    assert home.command("kettle", "on", None) == (True, "relay on") and pin.state == 1
    feed = home.handler("kettle")
    for t in range(0, 8):
        feed(r(3000, 1000 + t))  # above the limit for longer than cutoff_s
    assert pin.state == 0
    cut = [rec for recs in sent for rec in recs if rec.name == "kettle:event"]
    assert cut and cut[0].text == "cutoff"
    ok, msg = home.command("kettle", "on", None)
    assert not ok and "reset" in msg  # latched until someone decides
    assert home.command("fridge", "on", None) is None  # no relay there
    home.close()
    assert pin.state == 0


def test_routine_survives_a_restart(tmp_path, factory):
    home, _ = make(tmp_path)
    feed = home.handler("kettle")
    for t in range(0, 600, 5):
        feed(r(2000 if t < 120 else 0.5, 1_700_000_000 + t))
    home.close()
    assert (tmp_path / "activity.json").exists()
    again, _ = make(tmp_path)
    assert again.activity.last_activity is not None


def test_damaged_routine_file_does_not_stop_the_node(tmp_path, factory):
    (tmp_path / "activity.json").write_text("{broken")
    home, _ = make(tmp_path)
    assert home.activity is not None
    assert list(tmp_path.glob("activity.json.corrupt-*"))


def test_event_records_keep_numbers_and_name():
    recs = event_records("home", {"t": 5, "event": "inactivity_alarm", "inactive_s": 36000.0,
                                  "usual_s": 20000, "flag": True})
    assert [(x.name, x.text or x.value) for x in recs] == [
        ("home:event", "inactivity_alarm"), ("home:inactive_s", 36000.0),
        ("home:usual_s", 20000.0)]


def test_activity_settings_reach_the_detector(tmp_path, factory):
    text = CFG.format(state=tmp_path).replace(
        "min_inactivity_s = 3600\n", "min_inactivity_s = 7200\nmargin = 1.5\n"
        "max_wait_s = 36000\nutc_offset_h = 9\n")
    cfg = config.parse(text, check_devices=False)
    hh = Household(cfg, context(tmp_path, lambda recs: None))
    det = hh.activity
    assert det is not None
    assert (det.min_inactivity_s, det.margin, det.max_wait_s) == (7200, 1.5, 36000)
    assert det.routine.utc_offset_s == 9 * 3600
    assert "fridge" not in det.plugs  # activity = false: never evidence of life


def test_activity_defaults_use_the_node_time_zone():
    kw = activity_kwargs()
    assert kw["routine"].utc_offset_s == time.localtime().tm_gmtoff
    assert kw["max_wait_s"] >= kw["min_inactivity_s"]
    assert activity_kwargs(utc_offset_s=0.0)["routine"].utc_offset_s == 0.0


def test_max_wait_below_min_inactivity_is_a_config_error():
    with pytest.raises(config.ConfigError, match=r"activity\.max_wait_s"):
        config.parse('[node]\nid = "n1"\n[activity]\nmin_inactivity_s = 20000\n'
                     "max_wait_s = 10000\n")
