"""MPU-6050 (accelerometer): datasheet scaling, the register/FIFO model, the streaming driver
over the fake bus, SisFall replay, captures, and the config table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from i2c_helpers import agent_built, attach, poll_until_gone

from agent.core import config
from agent.tools.cli import main as cli
from drivers.base import DeviceGone
from drivers.emulation.i2c import FakeBus, parse_capture
from drivers.emulation.motion import RestSource, SisFallSource, sisfall_available
from drivers.mpu6050 import MPU6050, WrongChip, codec
from drivers.mpu6050.emulator import MPU6050Model

ADDR = 0x68
needs_sisfall = pytest.mark.skipif(not sisfall_available(),
                                   reason="SisFall data absent (/work/shared/data/sisfall)")


def rig(model: MPU6050Model | None = None, **kw):
    return attach(MPU6050, ADDR, model or MPU6050Model(RestSource(seed=2)), **kw)


def run(rg, seconds: float) -> list:
    out: list = []
    end = rg.clock.t + seconds
    while rg.clock.t < end:
        out += rg.dev.poll()
    return out


def rd(model, reg, n, now=0.0):
    return model.transfer([("w", bytes([reg])), ("r", n)], now)[0]


def wr(model, reg, val, now=0.0):
    model.transfer([("w", bytes([reg, val]))], now)


# -- codec: datasheet numbers ----------------------------------------------------------------
@pytest.mark.parametrize(("range_g", "lsb"), [(2, 16384), (4, 8192), (8, 4096), (16, 2048)])
def test_scaling_per_range(range_g, lsb):
    cfg = codec.accel_config(range_g)
    assert cfg == codec.RANGES.index(range_g) << 3 and codec.lsb_per_g(cfg) == lsb
    raw = lsb.to_bytes(2, "big", signed=True) + (-lsb // 2).to_bytes(2, "big", signed=True) + (
        b"\x00\x00")
    assert codec.decode_xyz(raw, cfg) == (1.0, -0.5, 0.0)  # big-endian, two's complement
    assert codec.counts_for(100.0, cfg) == 32767 and codec.counts_for(-100.0, cfg) == -32768


def test_sample_rate_divider_and_dlpf():
    assert codec.sample_rate_hz(0, 0) == 8000.0  # DLPF off: 8 kHz gyro rate
    assert codec.sample_rate_hz(7, 0) == 1000.0
    assert codec.sample_rate_hz(9, 3) == 100.0  # DLPF on: 1 kHz / (1 + 9)
    assert codec.smplrt_div_for(50) == 19 and codec.smplrt_div_for(125) == 7
    assert codec.dlpf_for(50) == 4 and codec.DLPF_ACCEL_HZ[4] == 21  # below the 25 Hz Nyquist
    assert codec.dlpf_for(200) == 2 and codec.dlpf_for(10) == 6
    with pytest.raises(ValueError):
        codec.smplrt_div_for(30)
    with pytest.raises(ValueError):
        codec.accel_config(3)


# -- the chip model -----------------------------------------------------------------------------
def test_model_powers_up_asleep_reading_zeros():
    m = MPU6050Model(RestSource())
    assert rd(m, 0x75, 1) == b"\x68" and rd(m, 0x6B, 1) == b"\x40"
    assert rd(m, 0x3B, 14, now=3.0) == bytes(14) and m.stats["samples"] == 0
    wr(m, 0x6A, 0x40, now=3.0)
    wr(m, 0x23, 0x08, now=3.0)
    assert rd(m, 0x72, 2, now=4.0) == b"\x00\x00"  # asleep: the FIFO does not fill either
    wr(m, 0x6B, 0x00, now=4.0)  # wake: 8 kHz with SMPLRT_DIV 0 and the DLPF off
    ax, ay, az = codec.decode_xyz(rd(m, 0x3B, 6, now=4.01), 0)
    assert m.stats["samples"] == 80 and abs(az - 1.0) < 0.05 and abs(ax) < 0.05 > abs(ay)
    assert int.from_bytes(rd(m, 0x72, 2, now=4.01), "big") == 80 * 6


def test_model_fifo_overflow_and_reset():
    m = MPU6050Model(RestSource(noise_g=0))
    for reg, val in ((0x6B, 0x01), (0x19, 9), (0x1A, 3), (0x23, 0x08), (0x6A, 0x40)):
        wr(m, reg, val)
    assert int.from_bytes(rd(m, 0x72, 2, now=1.0), "big") == 600  # 100 Hz x 6 bytes
    assert not rd(m, 0x3A, 1, now=1.0)[0] & 0x10
    assert codec.decode_fifo(rd(m, 0x74, 12, now=1.0), 0) == [(0.0, 0.0, 1.0)] * 2
    assert int.from_bytes(rd(m, 0x72, 2, now=3.0), "big") == 1024
    assert rd(m, 0x3A, 1, now=3.0)[0] & 0x10  # FIFO_OFLOW, cleared by this read
    assert not rd(m, 0x3A, 1, now=3.0)[0] & 0x10
    wr(m, 0x6A, 0x44, now=3.0)  # FIFO_RESET together with FIFO_EN: ignored
    assert int.from_bytes(rd(m, 0x72, 2, now=3.0), "big") == 1024
    wr(m, 0x6A, 0x04, now=3.0)
    assert rd(m, 0x72, 2, now=3.0) == b"\x00\x00"


# -- the driver --------------------------------------------------------------------------------
def test_open_wakes_and_configures():
    rg = rig(rate_hz=100, range_g=4)
    log = rg.bus.start_log()
    rg.dev.open()
    assert log[:2] == ["68 W 75", "68 R 68"]
    writes = [line for line in log if line.startswith("68 W ") and len(line) == 10]
    assert writes == ["68 W 6b 80", "68 W 6b 01", "68 W 19 09", "68 W 1a 03", "68 W 1c 08",
                      "68 W 38 10", "68 W 23 08", "68 W 6a 04", "68 W 6a 40"]
    assert not rg.model.asleep and rg.model.rate_hz == 100.0
    assert 0.1 in rg.clock.sleeps  # DEVICE_RESET needs 100 ms


def test_who_am_i_mismatch_and_no_chip():
    rg = rig(MPU6050Model(who_am_i=0x70))
    with pytest.raises(WrongChip, match="WHO_AM_I 0x70 is an MPU-6500, not an MPU-6050"):
        rg.dev.open()
    ok = MPU6050(FakeBus({0x69: MPU6050Model()}), address=0x69, sleep=lambda s: None)
    ok.open()  # AD0 high: WHO_AM_I still reads 0x68
    assert ok.who_am_i == 0x68
    with pytest.raises(DeviceGone, match="no answer"):
        MPU6050(FakeBus({0x69: MPU6050Model()}), address=0x68).open()


@pytest.mark.parametrize("rate", [10.0, 50.0, 125.0, 500.0])
def test_fifo_returns_every_sample_for_the_elapsed_time(rate):
    rg = rig(rate_hz=rate, range_g=2)
    rg.dev.open()
    t0 = rg.clock.t
    run(rg, 4.0)
    s = rg.dev.drain_samples()
    into_fifo = sum(1 for p in rg.model.produced if p.t > t0)  # since the FIFO reset
    assert len(s) == into_fifo - len(rg.model.fifo) // 6  # nothing lost, nothing invented
    assert abs(len(s) - (rg.clock.t - t0) * rate) <= rg.dev.fifo_interval_s * rate + 1
    gaps = np.diff([x.t for x in s])
    assert abs(np.median(gaps) - 1 / rate) < 1e-9 and gaps.min() > 0
    assert rg.dev.stats()["overruns"] == 0
    assert all(abs(x.az - 1.0) < 0.1 for x in s)


def test_overflow_resets_the_fifo_and_counts_what_was_lost():
    rg = rig(rate_hz=100)
    rg.dev.open()
    run(rg, 1.0)
    rg.dev.drain_samples()
    rg.clock.t += 3.0  # a stall: 300 samples for a FIFO of 170
    run(rg, 1.0)
    st = rg.dev.stats()
    assert st["overruns"] == 1 and st["bad_frames"] == 1
    assert st["lost_samples"] == round((3.0 + rg.dev.fifo_interval_s) * 100)
    assert rg.model.stats["fifo_resets"] == 2  # on open, and after the overflow
    s = rg.dev.drain_samples()
    assert len(s) >= 70 and all(abs(x.az - 1.0) < 0.1 for x in s)  # frames aligned again


def test_nacks_then_gone_then_recovery_after_a_brown_out():
    rg = rig()
    rg.dev.open()
    run(rg, 1.0)
    rg.bus.fault(ADDR, nack=1.0)
    assert poll_until_gone(rg.dev) == ["error", "error", "gone"]
    rg.bus.fault(ADDR, nack=0.0)
    rg.model.power_cycle(rg.clock.t)  # asleep again
    rg.dev.open()
    rg.dev.drain_samples()
    run(rg, 1.0)
    assert len(rg.dev.drain_samples()) >= 35 and not rg.model.asleep


def test_brown_out_while_streaming_is_noticed_and_reconfigured():
    rg = rig()
    rg.dev.open()
    run(rg, 1.0)
    rg.model.power_cycle(rg.clock.t)
    rg.dev.drain_samples()
    run(rg, 3.0)
    assert rg.dev.stats()["reconfigured"] == 1
    assert len(rg.dev.drain_samples()) >= 50


def test_readings_are_small_and_samples_complete():
    rg = rig(rate_hz=200, read_interval_s=0.5)
    rg.dev.open()
    readings = run(rg, 2.02)
    assert len(readings) == 4 and all(len(r.values) == 4 for r in readings)
    assert len(rg.dev.drain_samples()) > 350


@needs_sisfall
@pytest.mark.parametrize(("rate", "range_g"), [(100.0, 16), (50.0, 8), (200.0, 2)])
def test_sisfall_trial_replays_within_quantization(rate, range_g):
    src = SisFallSource("SA01", "F01_R01")
    rg = rig(MPU6050Model(src), rate_hz=rate, range_g=range_g)
    rg.dev.open()
    run(rg, 5.0)
    s = rg.dev.drain_samples()
    want = np.frombuffer(src.samples(rate).data).reshape(-1, 3)
    expect = np.clip(want[:len(s)], -range_g, range_g - 1 / codec.lsb_per_g(
        codec.accel_config(range_g)))
    got = np.array([x[1:] for x in s])
    assert np.abs(got - expect).max() <= 0.5 / codec.lsb_per_g(codec.accel_config(range_g))
    assert len(s) >= 4.5 * rate


# -- captures ----------------------------------------------------------------------------------
def test_capture_of_the_driver_decodes_to_its_samples():
    rg = rig(rate_hz=50, range_g=8)
    log = rg.bus.start_log()
    rg.dev.open()
    run(rg, 1.0)
    docs = list(codec.decode_capture(parse_capture(log)))
    assert docs[0]["type"] == "who_am_i" and docs[0]["chip"] == "MPU-6050"
    assert any(d.get("name") == "accel_config" and d["lsb_per_g"] == 4096 for d in docs)
    assert any(d.get("name") == "fifo_en" and d["bytes_per_sample"] == 6 for d in docs)
    fifo = [tuple(v) for d in docs if d["type"] == "fifo" for v in d["samples"]]
    got = [tuple(x[1:]) for x in rg.dev.drain_samples()]
    assert fifo == got and len(got) > 30
    assert not [d for d in docs if d["type"] == "rejected"]


def test_cli_frames_mpu6050(capsys):
    capture = ["68 W 75", "68 R 68", "68 W 6b", "68 R 40", "68 W 1c 18", "68 W 72",
               "68 R 00 06", "68 W 74", "68 R 08 00 f8 00 00 10"]
    rc = cli(["frames", "mpu6050", "--hex", ";".join(capture)])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and ", 0 rejected" in err
    assert docs[1]["type"] == "pwr_mgmt_1" and "asleep" in docs[1]["note"]
    assert any(d["type"] == "fifo_count" and d["bytes"] == 6 for d in docs)
    assert docs[-1]["type"] == "fifo" and docs[-1]["samples"] == [[1.0, -1.0, 0.0078125]]


# -- the agent ----------------------------------------------------------------------------------
BASE = '[node]\nid = "n1"\n[[sensor]]\ntype = "mpu6050"\nname = "imu"\nbus = "emulator"\n'


@pytest.mark.parametrize(("extra", "message"), [
    ("rate_hz = 30", "rate_hz: 30 is not one of 10, 20, 25, 40, 50, 100, 125, 200, 250, 500"),
    ("address = 0x53", "address: 0x53 is not one of 0x68, 0x69"),
    ("range_g = 32", "32 is not one of 2, 4, 8, 16"),
    ('emulator_source = "walk"', "emulator_source: 'walk': expected"),
])
def test_config_errors(extra, message):
    with pytest.raises(config.ConfigError, match=message):
        config.parse(BASE + extra + "\n", "t.toml", check_devices=False)


@needs_sisfall
def test_agent_builds_it_replaying_sisfall():
    from agent.core.sensors import build_device
    from drivers.emulation.i2c import shared_bus as emulated_bus

    cfg = config.parse(BASE + 'address = 0x69\nrate_hz = 100\nemulator_source = '
                       '"sisfall:SA02/F05_R01"\n', "t.toml", check_devices=False)
    dev = build_device(cfg.sensor[0])
    assert isinstance(dev, MPU6050) and dev.rate_hz == 100.0
    model = emulated_bus().devices[0x69]
    assert isinstance(model.source, SisFallSource) and model.source.trial == "F05_R01"


def test_agent_builds_it_on_the_emulated_bus():
    with agent_built("mpu6050", "imu", 0x68) as dev:
        readings: list = []
        for _ in range(40):
            readings += dev.poll()
            if readings:
                break
        assert readings and abs(readings[0].values["az"] - 1.0) < 0.1
