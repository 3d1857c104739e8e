"""Relay driver on gpiozero's MockFactory, the over-power cut-off, the controller."""

from __future__ import annotations

import pytest
from gpiozero.pins.mock import MockFactory

from agent.detectors.protection import OverPowerCutoff
from agent.features.relays import RelayController
from drivers.base import DeviceError
from drivers.relay import Relay

PIN = 17


def level(factory: MockFactory) -> bool:
    return bool(factory.pin(PIN).state)


# -- the driver ----------------------------------------------------------------------
@pytest.mark.parametrize(("active_high", "safe_state", "safe_level"), [
    (True, "off", False), (True, "on", True), (False, "off", True), (False, "on", False)])
def test_safe_state_at_open_and_close(factory, active_high, safe_state, safe_level):
    relay = Relay(PIN, active_high=active_high, safe_state=safe_state)
    assert relay.safe_level() is safe_level
    relay.open()
    pin = factory.pin(PIN)
    assert pin.function == "output"
    assert bool(pin.state) is safe_level
    assert relay.state == safe_state
    # no glitch: claimed straight at the safe level (the mock pin starts low, floating)
    assert [bool(s.state) for s in pin.states] == ([False, True] if safe_level else [False])
    other = "on" if safe_state == "off" else "off"
    getattr(relay, other)()
    assert bool(pin.state) is not safe_level
    relay.close()
    assert bool(pin.state) is safe_level  # driven back before the pin was released
    assert pin.function == "input"
    assert not relay.is_open
    assert relay.state == safe_state
    relay.close()  # twice is fine


@pytest.mark.parametrize(("active_high", "on_level"), [(True, True), (False, False)])
def test_switching(factory, active_high, on_level):
    relay = Relay(PIN, active_high=active_high, pin_factory=factory)
    relay.open()
    relay.on()
    assert relay.state == "on" and level(factory) is on_level
    relay.on()
    relay.off()
    assert relay.state == "off" and level(factory) is not on_level
    assert relay.stats() == {"switches": 2}
    relay.close()


def test_closed_relay_refuses_switching(factory):
    relay = Relay(PIN)
    with pytest.raises(DeviceError):
        relay.on()
    relay.open()
    with pytest.raises(DeviceError):  # the pin is taken
        Relay(PIN).open()
    relay.close()


def test_bad_safe_state():
    with pytest.raises(ValueError):
        Relay(PIN, safe_state="closed")


# -- the cut-off ---------------------------------------------------------------------
def test_cutoff_after_hold_time_not_before():
    c = OverPowerCutoff("plug", limit_w=2000, hold_s=10)
    assert c.update(0, 1500) == []
    assert c.update(1, 2500) == []      # above since t=1
    assert c.update(5, 3000) == []
    assert c.update(10.9, 2600) == []   # 9.9 s above
    (event,) = c.update(11, 2600)
    assert event.event == "cutoff" and event.plug == "plug"
    assert event.to_dict() == {"t": 11, "plug": "plug", "event": "cutoff", "watts": 2600.0,
                               "limit_w": 2000.0, "hold_s": 10.0, "above_s": 10}


def test_short_peaks_restart_the_count():
    c = OverPowerCutoff("plug", limit_w=2000, hold_s=10)
    for t in range(0, 60, 2):  # 8 s above, then one reading at the limit, repeated
        w = 2000 if t % 10 == 8 else 2500
        assert c.update(t, w) == []
    assert c.update(60, None) == []        # a missing reading changes nothing
    assert c.update(61, float("nan")) == []


def test_rearm_hysteresis():
    c = OverPowerCutoff("plug", limit_w=100, hold_s=0)
    assert len(c.update(0, 150)) == 1
    assert not c.armed
    assert c.update(1, 150) == []          # still above: no second event
    assert c.update(2, 100) == []          # at the limit is not below it
    assert not c.armed
    assert c.update(3, 99) == []
    assert c.armed
    assert len(c.update(4, 101)) == 1


def test_rearm_w_below_limit():
    c = OverPowerCutoff("plug", limit_w=100, hold_s=0, rearm_w=50)
    c.update(0, 200)
    c.update(1, 80)
    assert not c.armed
    c.update(2, 49)
    assert c.armed


@pytest.mark.parametrize("kw", [{"limit_w": 0, "hold_s": 1}, {"limit_w": 10, "hold_s": -1},
                                {"limit_w": 10, "hold_s": 1, "rearm_w": 11}])
def test_cutoff_validation(kw):
    with pytest.raises(ValueError):
        OverPowerCutoff("plug", **kw)


# -- the controller ------------------------------------------------------------------
@pytest.fixture
def ctl(factory):
    c = RelayController("plug", Relay(PIN, active_high=False),
                        cutoff=OverPowerCutoff("plug", limit_w=2000, hold_s=5))
    c.open()
    yield c
    c.close()


def test_commands(ctl, factory):
    assert ctl.command("on", None) == (True, "relay on")
    assert level(factory) is False  # active low
    assert ctl.command("state", None) == (True, "relay on")
    assert ctl.command("off") == (True, "relay off")
    assert level(factory) is True
    assert ctl.command("relay", True) == (True, "relay on")
    assert ctl.command("relay", False) == (True, "relay off")


@pytest.mark.parametrize(("action", "value"), [
    ("reboot", None), ("ON", None), ("", None), ("relay", 1), ("relay", None), ("on", True)])
def test_command_validation(ctl, factory, action, value):
    ok, message = ctl.command(action, value)
    assert not ok and message
    assert ctl.relay.state == "off"


def test_cutoff_switches_off_and_latches(ctl, factory):
    assert ctl.command("on") == (True, "relay on")
    assert ctl.on_power(0, 2500) == []
    assert ctl.on_power(4.9, 2500) == []
    assert ctl.relay.state == "on"
    (event,) = ctl.on_power(5, 2500)
    assert event["event"] == "cutoff" and event["plug"] == "plug"
    assert event["relay"] == "off" and "error" not in event
    assert ctl.relay.state == "off" and level(factory) is True
    assert ctl.latched
    ok, message = ctl.command("on")
    assert not ok and "reset" in message
    assert ctl.relay.state == "off"
    assert ctl.command("state") == (True, "relay off, latched by cut-off")
    assert ctl.command("off")[0]  # off is always allowed
    ok, message = ctl.command("reset")
    assert ok and not ctl.latched and ctl.relay.state == "off"  # reset does not switch on
    assert ctl.command("on") == (True, "relay on")


def test_controller_without_cutoff(factory):
    c = RelayController("lamp", Relay(PIN), cutoff=None)
    c.open()
    assert c.on_power(0, 1e9) == []
    c.command("on")
    c.close()
    assert level(factory) is False  # safe "off", active high


def test_close_leaves_safe_level(factory):
    c = RelayController("plug", Relay(PIN, active_high=False, safe_state="off"))
    c.open()
    c.command("on")
    assert level(factory) is False
    c.close()
    pin = factory.pin(PIN)
    assert pin.function == "input" and pin.state is True
    ok, message = c.command("on")
    assert not ok and "not open" in message
