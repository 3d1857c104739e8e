"""MaxBotix I2CXL over the fake I2C bus, and the HC-SR04 on gpiozero's mock pins."""

from __future__ import annotations

import json
import time

import i2c_helpers as i2c
import pytest
from i2c_helpers import attach, readings

from agent.tools.cli import main as cli
from drivers.base import DeviceError, DeviceGone
from drivers.emulation.i2c import FakeBus, Nack
from drivers.hcsr04 import HCSR04
from drivers.hcsr04.emulator import echo_time_for, emulated_hcsr04
from drivers.maxbotix_i2c import I2CXL, codec
from drivers.maxbotix_i2c.emulator import I2CXLModel, constant_distance

ADDR = 0x70


def rig(model: I2CXLModel | None = None, **kw):
    return attach(I2CXL, ADDR, model or I2CXLModel(constant_distance(1234.0)), **kw)


# -- I2CXL ---------------------------------------------------------------------------------
def test_codec_vectors():
    assert codec.range_command() == b"\x51"
    assert codec.decode_range(b"\x00\xfa") == 250  # sensor-protocols.md 8.4 example
    assert codec.change_address_command(0x71) == b"\xaa\xa5\xe2"
    with pytest.raises(ValueError):
        codec.change_address_command(40)  # 8-bit 80 is refused by the chip
    with pytest.raises(ValueError):
        codec.decode_range(b"\x01")
    assert codec.is_no_target(765) and codec.is_no_target(0) and not codec.is_no_target(20)


def test_round_trip_over_fake_bus():
    t0 = 1000.0
    model = I2CXLModel(lambda now: 500.0 + 100.0 * (now - t0))  # receding 10 cm/s
    rg = rig(model)
    log = rg.bus.start_log()
    rg.dev.open()
    got = readings(rg.dev, 5)
    assert [r.values["d"] for r in got] == [m.cm / 100 for m in list(model.measured)[-5:]]
    assert got[-1].values["d"] > got[0].values["d"]
    assert rg.dev.quantities == ("d",)
    assert 0.1 in rg.clock.sleeps and rg.dev.stats()["readings"] == 5
    # what the bus saw: 51, then a separate 2-byte read, and no NACKs
    assert log[:2] == ["70 W 51", f"70 R {model.measured[0].cm.to_bytes(2, 'big').hex(' ')}"]
    assert rg.bus.nacks == 0


def test_early_read_is_nacked():
    m = I2CXLModel(constant_distance(2500.0))
    assert m.transfer([("r", 2)], 0.0) == [b"\x00\x00"]  # part info before any range
    m.transfer([("w", b"\x51")], 1.0)
    with pytest.raises(Nack):
        m.transfer([("r", 2)], 1.05)
    assert m.stats["nacks"] == 1
    assert m.transfer([("r", 2)], 1.1) == [b"\x00\xfa"]
    bus = FakeBus({ADDR: I2CXLModel(constant_distance(2500.0))}, clock=lambda: 5.0)
    bus.write_byte(ADDR, 0x51)
    with pytest.raises(OSError) as exc:
        bus.read_byte(ADDR)
    assert exc.value.errno == 121


def test_driver_retries_a_slow_range():
    rg = rig(I2CXLModel(constant_distance(800.0), ranging_time_s=0.115))
    rg.dev.open()
    assert readings(rg.dev, 2)[-1].values["d"] == 0.8
    assert rg.dev.stats()["nacks"] >= 2  # one retry per range


def test_no_target_and_max_range_give_no_reading():
    src = {"mm": None}
    rg = rig(I2CXLModel(lambda now: src["mm"]))
    rg.dev.open()
    out = []
    for _ in range(20):
        out += rg.dev.poll()
    assert out == [] and rg.dev.stats()["no_target"] >= 5
    src["mm"] = 9000.0  # beyond range: clamps to 765 cm
    for _ in range(10):
        out += rg.dev.poll()
    assert out == []
    src["mm"] = 100.0  # inside the blind zone: reported as the minimum, 20 cm
    assert readings(rg.dev, 1)[0].values["d"] == 0.2


def test_nacks_are_errors_then_gone_then_recovery():
    rg = rig()
    i2c.nacks_then_gone_then_back(rg, ADDR, brown_out=False)
    assert readings(rg.dev, 1)[0].values["d"] == 1.23


def test_change_address_moves_the_chip():
    clock = [100.0]
    bus = FakeBus(clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    I2CXLModel(constant_distance(3000.0)).attach_to(bus, ADDR)
    dev = I2CXL(bus, clock=lambda: clock[0], wall_clock=lambda: clock[0],
                sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    dev.open()
    dev.change_address(0x71)
    assert set(bus.devices) == {0x71} and dev.address == 0x71
    assert readings(dev, 1)[0].values["d"] == 3.0


def test_bad_arguments_and_not_open():
    with pytest.raises(DeviceGone):
        I2CXL(1).poll()
    with pytest.raises(ValueError):
        I2CXL(1, read_interval_s=0.05)
    with pytest.raises(ValueError):
        I2CXL(1, address=0x100)


def test_cli_frames_i2cxl(capsys):
    rc = cli(["frames", "i2cxl", "--hex", "70 W 51;70 R NACK;70 R 00 fa;70 W aa a5 e2;70 R 02 fd"])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0
    assert [d["type"] for d in docs] == ["command", "rejected", "range", "command", "range"]
    assert docs[2]["cm"] == 250 and docs[2]["d"] == 2.5 and not docs[2]["no_target"]
    assert docs[3]["new_address"] == "0x71"
    assert docs[4]["no_target"] is True
    assert "5 transfers: 4 decoded, 1 rejected" in err


def test_bus_capture_is_decodable():
    got, docs = i2c.bus_capture(rig(), codec.decode_capture, 2)
    ranges = [d for d in docs if d["type"] == "range"]
    assert ranges[-1]["d"] == got[-1].values["d"]
    assert not [d for d in docs if d["type"] == "rejected"]


def test_capture_decoder_never_raises():
    recs = [(0x70, "W", b"\x12\x34"), (0x70, "R", b"\x01"), (0x70, "W", None),
            (0x70, "W", b""), (0x71, "R", b"\x00\x10"), (0x70, "R", b"\x00\x10"),
            (0x70, "W", b"\xaa\xa5\xa4")]
    docs = list(codec.decode_capture(recs))
    assert docs[-1]["type"] == "rejected" and "0x71" in docs[-1]["reason"]
    assert "note" in docs[4]
    assert docs[5]["type"] == "rejected"  # address 164 is ignored by the chip


# -- HC-SR04 ---------------------------------------------------------------------------------
def collect(dev: HCSR04, n: int, timeout: float = 2.0) -> list:
    out: list = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        out += dev.poll()
    return out


def test_echo_time_matches_gpiozero():
    assert echo_time_for(1000.0) == pytest.approx(0.005826, abs=1e-6)


def test_hcsr04_constant_distance(factory):
    _, pin = emulated_hcsr04(lambda now: 1200.0, factory=factory)
    dev = HCSR04(23, 24, read_interval_s=0.05)
    dev.open()
    try:
        got = collect(dev, 3)
        assert len(got) == 3
        assert all(r.values["d"] == pytest.approx(1.2, abs=0.1) for r in got)
        assert pin.triggers >= 5 and dev.stats()["readings"] == 3
    finally:
        dev.close()
    assert not any(factory._reservations.values())  # both pins released
    dev.close()


def test_hcsr04_changing_distance(factory):
    t0 = time.monotonic()
    src = {"mm": 600.0}
    emulated_hcsr04(lambda now: src["mm"], trigger=5, echo=6, factory=factory)
    dev = HCSR04(trigger=5, echo=6, queue_len=3, read_interval_s=0.05)
    dev.open()
    try:
        assert collect(dev, 1)[0].values["d"] == pytest.approx(0.6, abs=0.1)
        src["mm"] = 2000.0
        end = t0 + 2.5
        d = 0.0
        while time.monotonic() < end and abs(d - 2.0) > 0.1:
            for r in dev.poll():
                d = r.values["d"]
        assert d == pytest.approx(2.0, abs=0.1)
    finally:
        dev.close()


def test_hcsr04_no_echo(factory):
    src = {"mm": 1000.0}
    emulated_hcsr04(lambda now: src["mm"], factory=factory)
    dev = HCSR04(23, 24, max_distance_m=2.0, queue_len=3, read_interval_s=0.05)
    dev.open()
    try:
        assert collect(dev, 1)
        src["mm"] = None  # nothing in range: the module's ~38 ms echo, beyond max_distance
        time.sleep(0.3)
        assert collect(dev, 1, timeout=0.4) == []
        assert dev.stats()["no_target"] >= 2
    finally:
        dev.close()


def test_hcsr04_dead_echo_pin(factory):
    emulated_hcsr04(lambda now: None, factory=factory, no_echo_time_s=None)
    dev = HCSR04(23, 24, queue_len=1, read_interval_s=0.05)
    dev.open()
    try:
        with pytest.warns(Warning):  # gpiozero: DistanceSensorNoEcho('no echo received')
            out = collect(dev, 1, timeout=0.5)
        assert out == [] and dev.warming_up
    finally:
        dev.close()


def test_hcsr04_pins_in_use_and_not_open(factory):
    with pytest.raises(DeviceGone):
        HCSR04().poll()
    emulated_hcsr04(lambda now: 1000.0, factory=factory)
    a, b = HCSR04(23, 24), HCSR04(23, 24)
    a.open()
    try:
        with pytest.raises(DeviceError, match="cannot claim"):
            b.open()
    finally:
        a.close()
    b.open()  # released by a.close()
    b.close()
    with pytest.raises(ValueError):
        HCSR04(max_distance_m=0)
