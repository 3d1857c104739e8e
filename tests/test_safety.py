"""Fall and fire alarms in the daemon (agent/features/safety.py): samples and readings in,
alarms out."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
from gpiozero.pins.mock import MockFactory

from agent.core import config
from agent.features.base import FeatureContext, attach_samples
from drivers.families.accel import Sample

BASE = """
[node]
id = "home-9"
state_dir = "{state}"
{extra}
[[sensor]]
type = "adxl345"
name = "wear"
bus = "emulator"
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
"""


def context(tmp_path, sent: list, health: list | None = None, **kw) -> FeatureContext:
    return FeatureContext(tmp_path, publish=lambda kind, recs: sent.append(recs),
                          on_model_health=None if health is None else
                          lambda *a: health.append(a), **kw)


def make(tmp_path, extra: str = "", **kw):
    """The node's features for BASE (fall and fire, and the button when configured);
    the safety feature, what it sent, and the model health it reported."""
    from agent.features.registry import start_features
    from agent.features.safety import Safety

    cfg = config.parse(BASE.format(state=tmp_path, extra=extra), check_devices=False)
    sent: list[list] = []
    health: list[tuple] = []
    features = start_features(cfg, context(tmp_path, sent, health, **kw))
    s = next(f for f in features if isinstance(f, Safety))
    return s, sent, health


def fall_samples(t0: float, rate: float = 100.0) -> list[Sample]:
    """Standing (gravity on -y), a 4.5 g impact, then lying still on the side (gravity on x)."""
    out = []
    n_stand, n_lie = int(3 * rate), int(6 * rate)
    for i in range(n_stand):
        out.append(Sample(t0 + i / rate, 0.0, -1.0, 0.02 * math.sin(i)))
    ti = t0 + n_stand / rate
    for i in range(int(0.1 * rate)):
        out.append(Sample(ti + i / rate, 3.0, -3.0, 1.0))
    tl = ti + 0.1
    for i in range(n_lie):
        out.append(Sample(tl + i / rate, 1.0, 0.01, 0.0))
    return out


def records(sent, subject):
    return [{r.name: (r.text if r.text is not None else r.value) for r in recs}
            for recs in sent if any(r.name == f"{subject}:event" for r in recs)]


def test_fall_on_samples_goes_upstream_at_once_without_a_button(tmp_path) -> None:
    s, sent, _ = make(tmp_path, '[fall]\nmodel = "none"\n')
    hook = SimpleNamespace(on_samples=None, read_samples_within=lambda s: None)
    wear = next(c for c in config.parse(BASE.format(state=tmp_path, extra=""),
                                        check_devices=False).sensor if c.name == "wear")
    attach_samples([s], wear, hook)
    assert hook.on_samples is not None
    batch = fall_samples(1000.0)
    for i in range(0, len(batch), 16):  # FIFO-sized batches, as the driver delivers them
        hook.on_samples(batch[i:i + 16])
    events = [r["fall:event"] for r in records(sent, "fall")]
    assert events == ["fall_pending", "alarm"], events
    alarm = records(sent, "fall")[-1]
    assert alarm["fall:score"] > 0 and alarm["fall:peak_g"] >= 3.0
    assert s.counts["alarms"] == 1


def test_button_cancels_the_pending_alarm(tmp_path) -> None:
    factory = MockFactory()
    now = [0.0]
    s, sent, _ = make(tmp_path, '[fall]\nmodel = "none"\ncancel_s = 30\nbutton_pin = 5\n'
                      'buzzer_pin = 6\nled_pin = 13\n', pin_factory=factory,
                      clock=lambda: now[0])
    det_hook = s.samples("wear").handler
    det_hook(fall_samples(50.0))
    assert [r["fall:event"] for r in records(sent, "fall")] == ["fall_pending"]
    assert s.alarm.pending and factory.pin(6).state == 1 and factory.pin(13).state == 1
    now[0] = 10.0
    factory.pin(5).drive_low()  # the button (pull-up): pressed
    time.sleep(0.1)
    s.tick()
    assert [r["fall:event"] for r in records(sent, "fall")] == ["fall_pending", "cancelled"]
    assert factory.pin(6).state == 0 and not s.alarm.pending
    s.close()


def test_unanswered_alarm_goes_upstream_after_the_window(tmp_path) -> None:
    now = [0.0]
    s, sent, _ = make(tmp_path, '[fall]\nmodel = "none"\ncancel_s = 20\nbutton_pin = 5\n'
                      'pins = "emulator"\n', clock=lambda: now[0])
    s.samples("wear").handler(fall_samples(50.0))
    now[0] = 19.0
    s.tick()
    assert [r["fall:event"] for r in records(sent, "fall")] == ["fall_pending"]
    now[0] = 20.5
    s.tick()
    assert [r["fall:event"] for r in records(sent, "fall")] == ["fall_pending", "alarm"]
    s.close()


def test_fire_from_a_heat_ramp_on_climate_readings(tmp_path) -> None:
    s, sent, _ = make(tmp_path)
    on_reading = s.handler("sht")
    assert on_reading is not None and s.handler("wear") is None
    t = 0.0
    for i in range(240):  # 20 °C, then +12 °C per minute
        temp = 20.0 + max(0.0, (i - 60) * 0.2)
        s.fire_values({"temperature_c": temp, "humidity_pct": 40.0}, t=t)
        t += 1.0
    fires = records(sent, "fire")
    states = [r["fire:event"] for r in fires]
    assert states and states[0] == "fire", states
    assert s.counts["fire"] == 1 and s.status()["fire_alarms"] == 1
    # the payload: the state as "event", the rest of the event's dict beside it
    assert "fire:state" not in fires[0] and fires[0]["fire:score"] >= 1.0
    # the handler maps reading quantities to the detector's names
    on_reading(SimpleNamespace(values={"temp": 21.0, "rh": 40.0, "bogus": 1.0}))


def gas_fire(t: float) -> dict[str, float]:
    """A quiet room for 30 min, then TVOC and eCO2 rising fast together (a fire's gas)."""
    s = max(0.0, t - 1800.0)
    return {"tvoc_ppb": 100.0 + 20.0 * s, "eco2_ppm": 450.0 + 5.0 * s,
            "temperature_c": 21.0, "humidity_pct": 45.0}


def first_fire(scale: float | None, tmp_path) -> float | None:
    """When the daemon's detector (``[fire] threshold_scale``) first alarms on gas_fire."""
    s, sent, _ = make(tmp_path, "" if scale is None else f"[fire]\nthreshold_scale = {scale}\n")
    for i in range(3600):
        s.fire_values(gas_fire(float(i)), t=float(i))
        if any(r["fire:event"] == "fire" for r in records(sent, "fire")):
            return float(i)
    return None


def test_fire_runs_the_rules_at_the_configured_threshold_scale(tmp_path) -> None:
    """The daemon builds the shipped thresholds times [fire] threshold_scale: a higher
    scale alarms later on the same trace, and the default is the shipped point."""
    from agent.detectors.fire import SHIPPED_SCALE

    s, _, health = make(tmp_path)
    assert s.fire.cfg.scale == pytest.approx(SHIPPED_SCALE)
    assert health == [] or all(task == "fall" for task, *_ in health)  # no fire model
    s2, _, _ = make(tmp_path, "[fire]\nthreshold_scale = 2.5\n")
    assert s2.fire.cfg.scale == pytest.approx(SHIPPED_SCALE * 2.5)
    default, later = first_fire(None, tmp_path), first_fire(2.5, tmp_path)
    assert default is not None and default > 1800
    assert later is None or later > default


def test_a_fire_alarm_says_why_in_its_records(tmp_path) -> None:
    """The platform sees the rule (``fire:reasons``) and each signal's level and learned
    baseline (``fire:<quantity>``, ``fire:<quantity>_baseline``), not only a score."""
    s, sent, _ = make(tmp_path)
    for i in range(2400):
        s.fire_values(gas_fire(float(i)), t=float(i))
    (alarm,) = [r for r in records(sent, "fire") if r["fire:event"] == "fire"]
    assert alarm["fire:reasons"] == "gas"
    for q, base in (("tvoc_ppb", 100.0), ("eco2_ppm", 450.0)):
        assert alarm[f"fire:{q}_baseline"] == pytest.approx(base, rel=0.1)  # learned slowly
        assert alarm[f"fire:{q}"] > alarm[f"fire:{q}_baseline"]
    assert not any(isinstance(v, list | dict) for v in alarm.values())


def test_fire_status_has_no_model(tmp_path) -> None:
    """The fire detector has no model: no "fire" in the models map, no fire_model_ok."""
    s, _, _ = make(tmp_path, '[fall]\nmodel = "none"\n[fire]\nmodel = "/nowhere.tflite"\n')
    st = s.status()
    assert "fire" not in st["models"] and "fire_model_ok" not in st
    assert st["fire_alarms"] == 0


def test_broken_model_is_a_health_fault_and_rules_still_run(tmp_path) -> None:
    """A broken fall model is a fall_model fault; a [fire] model, whatever it names, is
    not read at all (no fire model since 2026.12)."""
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    s, sent, health = make(tmp_path, f'[fall]\nmodel = "{bad}"\n[fire]\nmodel = "{bad}"\n')
    tasks = {(task, ok) for task, ok, _ in health}
    assert ("fall", False) in tasks and not any(task == "fire" for task, _ in tasks)
    assert s.fire is not None
    s.samples("wear").handler(fall_samples(10.0))
    assert "alarm" in [r["fall:event"] for r in records(sent, "fall")]


def test_no_accelerometer_no_fall_detector(tmp_path) -> None:
    from agent.features.safety import Safety

    cfg = config.parse(f'[node]\nid = "n"\nstate_dir = "{tmp_path}"\n[[sensor]]\n'
                       'type = "sht3x"\nname = "sht"\nbus = "emulator"\n', check_devices=False)
    s = Safety(cfg, context(tmp_path, []))
    assert s.falls == {} and s.alarm is None and s.fire is not None


@pytest.mark.parametrize("extra, msg", [
    ('[fire]\nsensors = ["nope"]\n', "no sensor named 'nope'"),
    ("[fall]\nbutton_pin = 5\nbuzzer_pin = 5\n", "must be different GPIOs"),
])
def test_config_errors(tmp_path, extra, msg) -> None:
    with pytest.raises(config.ConfigError, match=msg):
        config.parse(BASE.format(state=tmp_path, extra=extra), check_devices=False)


SISFALL = __import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" / \
    "data" / "sisfall"


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_real_fall_replayed_by_the_emulated_adxl345_reaches_the_broker(tmp_path, mosquitto):
    """The whole path: SisFall trial -> emulated ADXL345 FIFO -> driver -> fall detector
    with the shipped model -> alarm message at a real broker, decoded."""
    import subprocess
    import sys

    from test_end_to_end import wait_for

    from agent.tools.simulate import Subscriber

    if not (SISFALL / "SA01.npz").exists():
        pytest.skip(f"SisFall recordings not found at {SISFALL} (../shared absent)")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""
[node]
id = "fall-e2e"
state_dir = "{tmp_path / 'state'}"
[report]
interval_s = 5
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
[fall]
cancel_s = 0
[[sensor]]
type = "adxl345"
name = "wear"
bus = "emulator"
rate_hz = 100
emulator_source = "sisfall:SA01/F05_R01"
""")
    got: list = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "citynode/fall-e2e/event",
                     lambda t, d, r: got.append(d))
    sub.start()
    with open(tmp_path / "agent.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                                cwd=__import__("pathlib").Path(__file__).resolve().parents[1],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            def alarms():
                return [d for d in got for r in d["records"]
                        if r["n"] == "fall:event" and r.get("vs") == "alarm"]
            wait_for(lambda: alarms(), 60, "a fall alarm at the broker")
            recs = {r["n"]: r.get("v", r.get("vs")) for r in alarms()[0]["records"]}
            assert recs["fall:score"] >= 0.5
        finally:
            proc.terminate()
            proc.wait(20)
            sub.stop()
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
