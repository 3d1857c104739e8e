"""Fine dust done right: robust centres, duty cycling, humidity and fault flags, Korean bands."""

from __future__ import annotations

import time

import pytest

from agent.core.aggregate import Aggregator, Quality, centre
from agent.core.sampling import DutyCycle, Health, SensorLoop
from agent.features.airquality import band, band_record, describe
from drivers.base import DeviceError, Reading


def r(fault: bool = False, **values: float) -> Reading:
    return Reading(values, time.monotonic(), time.time(), fault=fault)


@pytest.mark.parametrize("q,value,expected", [
    ("pm25", 0, 1), ("pm25", 15, 1), ("pm25", 15.4, 1), ("pm25", 15.5, 2), ("pm25", 35, 2),
    ("pm25", 36, 3), ("pm25", 75, 3), ("pm25", 76, 4), ("pm25", 500, 4),
    ("pm10", 30, 1), ("pm10", 31, 2), ("pm10", 80, 2), ("pm10", 81, 3), ("pm10", 150, 3),
    ("pm10", 151, 4),
])
def test_korean_bands_match_the_ministry_thresholds(q, value, expected):
    assert band(q, value) == expected


def test_band_record_is_one_compact_integer():
    rec = band_record("pm", {"pm25": (20.0, 1, 2), "pm10": (90.0, 1, 2)})
    assert rec.name == "pm:aq" and rec.value == 23
    assert describe(23) == {"pm25": "moderate", "pm10": "bad"}
    assert band_record("pm", {"pm25": (5.0, 1, 2)}).value == 10
    assert band_record("t", {"temp": (5.0, 1, 2)}) is None


def test_trimmed_mean_ignores_a_spike_median_too():
    values = [10.0] * 18 + [11.0, 900.0]  # a bus passes the sensor once
    assert centre(values, "trimmed") == pytest.approx(10.0, abs=0.1)
    assert centre(values, "median") == 10.0
    assert centre(values, "mean") > 50
    assert centre([1.0, 2.0, 3.0], "trimmed") == 2.0  # too few to trim


def test_fault_and_warm_up_flags():
    agg = Aggregator("pm")
    agg.add(r(fault=True, pm25=5))
    assert Quality.FAULT in agg.close_window().flags
    # A window with no reading because the sensor was warming up says so (not "stale").
    agg.flag(Quality.WARMING_UP)
    assert agg.close_window().flags == Quality.WARMING_UP
    # Readings after the warm-up: the discarded ones do not taint the window.
    agg.flag(Quality.WARMING_UP)
    agg.add(r(pm25=5))
    assert agg.close_window().flags == Quality(0)


class FakeLoop:
    def __init__(self, name: str, **values: float) -> None:
        self.sensor = name
        self.aggregator = Aggregator(name)
        self.aggregator.add(r(**values))

    def carry_flags(self) -> Quality:
        return Quality(0)


def report_records(loops, **report) -> dict[str, float]:
    from agent.core import config
    from agent.core.daemon import Node
    from agent.features.base import FeatureContext
    from agent.features.registry import start_features
    from agent.wire import formats

    cfg = config.parse('[node]\nid = "n"\n[report]\n' +
                       "".join(f"{k} = {v}\n" for k, v in report.items()))
    node = Node(cfg)
    node.features = start_features(cfg, FeatureContext(cfg.node.resolved_state_dir(),
                                                       publish=lambda *a: None))
    node.loops = loops
    sent = []
    node.send = sent.append
    node.report()
    return {rec.name: rec.value for rec in formats.decode(sent[0].payload).records}


def test_humid_air_flags_pm_sensors_only_and_bands_are_reported():
    recs = report_records([FakeLoop("pm", pm25=20, pm10=40), FakeLoop("th", temp=20, rh=85)])
    assert int(recs["pm:q"]) & Quality.HUMID
    assert "th:q" not in recs  # the climate sensor's own data is fine
    assert recs["pm:aq"] == 22
    dry = report_records([FakeLoop("pm", pm25=20, pm10=40), FakeLoop("th", temp=20, rh=40)])
    assert "pm:q" not in dry
    off = report_records([FakeLoop("pm", pm25=20)], kr_band="false")
    assert "pm:aq" not in off


def test_duty_cycle_wakes_before_each_report():
    t = [0.0]
    nxt = [300.0]
    duty = DutyCycle(50.0, lambda: nxt[0], lambda: 300.0)
    assert not duty.awake(0.0) and not duty.awake(249.0)
    assert duty.awake(250.0) and duty.awake(299.0)
    assert duty.next_wake() == 250.0
    short = DutyCycle(50.0, lambda: 60.0, lambda: 60.0)
    assert short.awake(0.0)  # a 60 s interval: sleeping 10 s would save nothing
    del t


class SleepyDevice:
    """Counts sleep and wake calls; readings only while awake."""

    quantities = ("pm25",)

    def __init__(self) -> None:
        self.awake = True
        self.sleeps = self.wakes = 0

    def open(self) -> None:
        self.awake = True

    def close(self) -> None:
        pass

    def sleep(self) -> None:
        self.sleeps += 1
        self.awake = False

    def wake(self) -> None:
        self.wakes += 1
        self.awake = True

    def poll(self):
        if not self.awake:
            raise DeviceError("polled while asleep")
        time.sleep(0.01)
        return [r(pm25=7)]

    @property
    def warming_up(self) -> bool:
        return False

    def stats(self):
        return {}


def test_sampling_loop_sleeps_and_wakes_with_the_schedule():
    now = time.monotonic()
    nxt = [now + 0.6]
    dev = SleepyDevice()
    seen: list[Health] = []
    duty = DutyCycle(0.3, lambda: nxt[0], lambda: 60.0)
    loop = SensorLoop("pm", dev, Aggregator("pm"), duty=duty,
                      on_health=lambda s, o, n, d: seen.append(n))
    loop.start()
    time.sleep(0.2)
    assert loop.asleep and dev.sleeps == 1  # more than 0.3 s before the report
    time.sleep(0.6)
    assert dev.wakes == 1 and not loop.asleep
    nxt[0] = time.monotonic() + 5  # the report went out; the next one is far away
    time.sleep(0.4)
    assert loop.asleep and dev.sleeps == 2
    loop.stop()
    assert Health.SLEEPING in seen and loop.errors == 0


def test_duty_cycle_puts_a_real_pms5003_to_sleep_and_discards_its_warm_up(tmp_path):
    """Over a pty: the emulated sensor's laser is off between reports, and after each
    wake the driver discards readings until the warm-up has passed."""
    import itertools

    from drivers.emulation import SerialEmulator
    from drivers.pms5003 import PMS5003
    from drivers.pms5003.emulator import PMS5003Model

    model = PMS5003Model(itertools.cycle([(5, 8, 11, 5, 8, 11)]), interval_s=0.1,
                         warmup_s=0.0)
    with SerialEmulator(model, tmp_path / "pms0") as emu:
        dev = PMS5003(emu.path, mode="passive", warmup_s=0.3, read_interval_s=0.1)
        agg = Aggregator("pm")
        nxt = [time.monotonic() + 1.5]
        loop = SensorLoop("pm", dev, agg, duty=DutyCycle(0.8, lambda: nxt[0], lambda: 60.0))
        loop.start()
        try:
            time.sleep(0.4)
            assert loop.asleep and model.asleep  # far from the report: laser off
            n_asleep = agg.close_window().samples
            time.sleep(1.2)  # woken 0.8 s before the report: 0.3 s warm-up, then samples
            assert not model.asleep and not loop.asleep
            window = agg.close_window()
            assert window.samples >= 3 and window.stats["pm25"][0] == 8
            assert dev.stats()["warmup_discarded"] >= 1
            assert n_asleep == 0
        finally:
            loop.stop()
