"""PIR motion sensor: the HC-SR501's output over presence spells, the driver on gpiozero's mock
pins (real threads, short waits), the spec and the configuration."""

from __future__ import annotations

import itertools
import time

import msgspec
import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock

from agent.core import config
from drivers import catalogue
from drivers import quantities as q
from drivers.base import DeviceError, DeviceGone
from drivers.pir import PIR
from drivers.pir.emulator import (
    BLOCK_S,
    HOLD_S,
    EndlessPresence,
    PirScript,
    ScriptedPin,
    emulated_pir,
    output_spells,
)
from drivers.readme import sample_table

SPEC = catalogue.get("pir")


# -- the module's output ----------------------------------------------------------------------
def test_repeatable_trigger_holds_and_extends():
    assert output_spells([(10, 14)], hold_s=3) == [(10, 17)]
    assert output_spells([(10, 12), (14, 15)], hold_s=3) == [(10, 18)]  # motion in the hold
    assert output_spells([(14, 15), (10, 12)], hold_s=3) == [(10, 18)]  # any order


def test_block_time_ignores_motion_then_triggers_again():
    assert output_spells([(10, 11), (14.5, 15)], hold_s=3, block_s=2.5) == [(10, 14)]
    assert output_spells([(10, 11), (15, 20)], hold_s=3, block_s=2.5) == [(10, 14),
                                                                          (16.5, 23)]


def test_single_trigger_drops_after_the_hold():
    assert output_spells([(10, 20)], hold_s=3, block_s=2.5, retrigger=False) == [
        (10, 13), (15.5, 18.5)]
    assert output_spells([(10, 11), (12, 13)], hold_s=3, block_s=2.5, retrigger=False) == [
        (10, 13)]


spells = st.lists(st.tuples(st.floats(0, 500), st.floats(0.1, 30)).map(
    lambda p: (p[0], p[0] + p[1])), max_size=15)


@settings(max_examples=300)
@given(spells, st.floats(0.3, 20), st.floats(0, 5), st.booleans())
def test_output_follows_motion_and_never_during_a_block(presence, hold, block, retrigger):
    out = output_spells(presence, hold_s=hold, block_s=block, retrigger=retrigger)
    for (_, off), (on, _) in itertools.pairwise(out):
        assert on >= off + block - 1e-9  # nothing triggers during the block
    for on, off in out:
        assert off > on
        assert any(a <= on < b for a, b in presence)  # it rises only on motion
    script = PirScript(presence, hold_s=hold, block_s=block, retrigger=retrigger)
    for a, b in presence:
        if b - a > hold + block + 1e-6:  # long enough to get past any block
            assert any(on < b and off > a for on, off in out)
        if retrigger and not any(on <= a < off + block for on, off in out):
            assert script(a + 1e-9) or b - a < 1e-6  # motion after a quiet spell: high


def test_script_and_endless_presence():
    script = PirScript([(5.0, 6.0)], hold_s=3.0)
    assert [script(t) for t in (4.9, 5.0, 8.9, 9.0)] == [False, True, True, False]
    people = EndlessPresence(7, rate_per_min=6.0)
    assert (people.hold_s, people.block_s) == (HOLD_S, BLOCK_S) == (3.0, 2.5)
    levels = [people(1000.0 + 0.5 * k) for k in range(2400)]  # 20 minutes
    assert any(levels) and not all(levels)
    assert [people(1000.0 + 0.5 * k) for k in range(2400)] == levels  # deterministic
    with pytest.raises(ValueError):
        PirScript([], hold_s=0)


# -- the driver on mock pins ----------------------------------------------------------------------
def collect(dev: PIR, n: int, timeout: float = 3.0) -> list[float]:
    out: list[float] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        out += [r.values["motion"] for r in dev.poll()]
    return out


def test_motion_between_readings_is_latched(factory):
    state = {"on": False}
    _, pin = emulated_pir(lambda t: state["on"], pin=17, factory=factory)
    dev = PIR(17, warmup_s=0, read_interval_s=0.2, sample_rate_hz=100)
    dev.open()
    try:
        assert collect(dev, 1) == [0.0]
        state["on"] = True  # a short trigger, between two readings (none is taken meanwhile)
        time.sleep(0.3)
        state["on"] = False
        time.sleep(0.2)
        assert collect(dev, 2) == [1.0, 0.0]
        state["on"] = True
        time.sleep(0.2)
        assert collect(dev, 2) == [1.0, 1.0]  # still high: motion at every reading
        stats = dev.stats()
        assert stats["readings"] == 5 and stats["with_motion"] == 3
        assert stats["activations"] == 2 and stats["bad_frames"] == 0 and pin.reads > 10
    finally:
        dev.close()
    assert not any(factory._reservations.values())  # the pin is released
    dev.close()


def test_active_low_sensor_uses_the_pull_up(factory):
    state = {"on": False}
    emulated_pir(lambda t: state["on"], pin=27, factory=factory, active_high=False)
    dev = PIR(27, active_high=False, warmup_s=0, read_interval_s=0.1, sample_rate_hz=100)
    dev.open()
    try:
        assert dev._sensor is not None and dev._sensor.pull_up is True
        assert collect(dev, 1) == [0.0]  # the line is high: idle
        state["on"] = True  # the module pulls it low
        time.sleep(0.2)
        assert collect(dev, 1) == [1.0]
    finally:
        dev.close()


def test_readings_are_discarded_while_the_module_settles(factory):
    emulated_pir(lambda t: True, pin=4, factory=factory)  # false triggers meanwhile
    clock = Clock()
    dev = PIR(4, warmup_s=30, read_interval_s=1.0, sample_rate_hz=100, clock=clock,
              wall_clock=clock, sleep=clock.sleep)
    dev.open()
    try:
        out = []
        for _ in range(20):
            out += dev.poll()
        assert out == [] and dev.warming_up and dev.stats()["discarded"] > 0
        clock.sleep(30)
        end = time.monotonic() + 2.0
        while not out and time.monotonic() < end:
            out += dev.poll()
            time.sleep(0.01)
        assert [r.values for r in out[:1]] == [{"motion": 1.0}] and not dev.warming_up
    finally:
        dev.close()


def test_pin_in_use_not_open_and_bad_arguments(factory):
    with pytest.raises(DeviceGone, match="not open"):
        PIR().poll()
    emulated_pir(lambda t: False, pin=4, factory=factory)
    a, b = PIR(4), PIR(4)
    a.open()
    try:
        with pytest.raises(DeviceError, match="cannot claim"):
            b.open()
    finally:
        a.close()
    b.open()
    b.close()
    for bad in ({"threshold": 1.0}, {"threshold": 0.0}, {"queue_len": 0},
                {"sample_rate_hz": 0}, {"read_interval_s": 0}, {"warmup_s": -1}):
        with pytest.raises(ValueError):
            PIR(**bad)
    with pytest.raises(ValueError, match="already"):
        factory.pin(5)
        emulated_pir(lambda t: False, pin=5, factory=factory)
    assert isinstance(factory.pin(4), ScriptedPin)


# -- the spec and the configuration -------------------------------------------------------------
def test_quantity_and_spec():
    assert q.MOTION.unit == "/" and q.MOTION.ipso == "3302/5500"
    assert SPEC.kind == "presence" and SPEC.bus == "gpio" and not SPEC.samples
    assert SPEC.quantities["motion"].range == (0.0, 1.0)
    cfg = msgspec.convert(sample_table(SPEC), SPEC.config)
    (use,) = SPEC.pins(cfg)
    assert (use.pin, use.role, use.direction, use.emulated) == (4, "pin", "input", False)


def test_the_agent_builds_an_emulated_pir():
    from agent.core.sensors import build_device

    cfg = config.parse('[node]\nid = "n1"\n[[sensor]]\ntype = "pir"\nname = "porch"\n'
                       'pins = "emulator"\npin = 22\nwarmup_s = 0\nread_interval_s = 0.2\n',
                       "t.toml", check_devices=False)
    dev = build_device(cfg.sensor[0])
    assert isinstance(dev, PIR) and isinstance(dev.pin_factory, MockFactory)
    dev.open()
    try:
        got = collect(dev, 2)
        assert len(got) == 2 and set(got) <= {0.0, 1.0}
    finally:
        dev.close()


def test_configuration_checks():
    base = '[node]\nid = "n1"\n[[sensor]]\ntype = "hc-sr501"\nname = "p"\n'
    cfg = config.parse(base, "t.toml", check_devices=False)
    assert cfg.sensor[0].pin == 4 and cfg.sensor[0].threshold == 0.5
    for bad in ("threshold = 1.0\n", "pin = 28\n", "queue_len = 0\n", "warmup_s = 601\n"):
        with pytest.raises(config.ConfigError):
            config.parse(base + bad, "t.toml", check_devices=False)
