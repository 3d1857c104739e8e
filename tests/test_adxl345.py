"""ADXL345: datasheet scaling, the register/FIFO model, the streaming driver over the fake bus,
SisFall replay, captures, and the config table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from i2c_helpers import agent_built, attach, poll_until_gone

from agent.core import config
from agent.tools.cli import main as cli
from drivers.adxl345 import ADXL345, WrongChip, codec
from drivers.adxl345.emulator import ADXL345Model
from drivers.base import DeviceGone
from drivers.emulation.i2c import FakeBus, parse_capture
from drivers.emulation.motion import (
    RestSource,
    SisFallSource,
    sisfall_available,
    source_from_spec,
)

ADDR = 0x53
needs_sisfall = pytest.mark.skipif(not sisfall_available(),
                                   reason="SisFall data absent (/work/shared/data/sisfall)")


def table(rows) -> np.ndarray:
    """A :class:`drivers.emulation.motion.Rows` as an ``(n, 3)`` numpy array (no copy)."""
    return np.frombuffer(rows.data, dtype=rows.data.typecode).reshape(-1, 3)


def rig(model: ADXL345Model | None = None, **kw):
    return attach(ADXL345, ADDR, model or ADXL345Model(RestSource(seed=1)), **kw)


def run(rg, seconds: float) -> list:
    """Poll for ``seconds`` of the fake clock; the readings."""
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
@pytest.mark.parametrize("range_g", [2, 4, 8, 16])
def test_full_resolution_is_3_9_mg_per_lsb_at_every_range(range_g):
    fmt = codec.data_format(range_g, full_res=True)
    assert codec.g_per_lsb(fmt) == pytest.approx(0.0039, abs=0.00001)  # datasheet: 3.9 mg/LSB
    assert codec.decode_xyz(bytes.fromhex("0001 00ff 0000"), fmt) == (1.0, -1.0, 0.0)
    top = (1 << (9 + codec.RANGES.index(range_g))) - 1  # 10 bits at ±2 g ... 13 at ±16 g
    assert codec.counts_for(100.0, fmt) == top and codec.counts_for(-100.0, fmt) == -top - 1
    assert top * codec.g_per_lsb(fmt) == pytest.approx(range_g, rel=0.01)


@pytest.mark.parametrize(("range_g", "mg"), [(2, 3.9), (4, 7.8), (8, 15.6), (16, 31.2)])
def test_10_bit_mode_scales_with_the_range(range_g, mg):
    fmt = codec.data_format(range_g, full_res=False)
    assert codec.g_per_lsb(fmt) * 1000 == pytest.approx(mg, rel=0.005)  # datasheet, rounded
    assert codec.bits_of(fmt) == 10 and codec.counts_for(100.0, fmt) == 511


def test_left_justified_data():
    fmt = codec.data_format(16, full_res=True, justify=True)  # 13 bits, MSB-aligned
    raw = codec.encode_xyz((256, -256, 4095), fmt)
    assert raw[:2] == (256 << 3).to_bytes(2, "little")
    assert codec.counts_from(raw, fmt) == (256, -256, 4095)
    assert codec.decode_xyz(raw, fmt)[:2] == (1.0, -1.0)


def test_rate_codes_and_register_values():
    assert codec.rate_code(100) == 0x0A and codec.rate_code(3200) == 0x0F
    assert codec.rate_code(12.5) == 0x07 and codec.rate_code(400) == 0x0C
    assert codec.fifo_ctl(codec.FIFO_STREAM, 16) == 0x90
    assert codec.data_format(16) == 0x0B
    with pytest.raises(ValueError):
        codec.rate_code(60)
    with pytest.raises(ValueError):
        codec.data_format(3)


# -- the chip model -----------------------------------------------------------------------------
def test_model_powers_up_in_standby_reading_zeros():
    m = ADXL345Model(RestSource())
    assert rd(m, 0x00, 1) == b"\xe5"
    assert rd(m, 0x2C, 1) == b"\x0a" and rd(m, 0x30, 1) == b"\x02"
    assert rd(m, 0x2D, 1) == b"\x00"
    assert rd(m, 0x32, 6, now=5.0) == bytes(6)  # standby: nothing measured, however long
    assert rd(m, 0x39, 1, now=5.0) == b"\x00" and m.stats["samples"] == 0
    wr(m, 0x2D, 0x08, now=5.0)  # measure (bypass mode: the data registers hold the latest)
    x, y, z = codec.decode_xyz(rd(m, 0x32, 6, now=5.5), 0x00)
    assert m.stats["samples"] == 50 and abs(z - 1.0) < 0.05 and abs(x) < 0.05 and abs(y) < 0.05


def test_model_fifo_stream_mode_keeps_32_and_flags_overrun():
    m = ADXL345Model(RestSource(noise_g=0))
    wr(m, 0x31, 0x0B)
    wr(m, 0x38, 0x90)
    wr(m, 0x2D, 0x08)
    assert rd(m, 0x39, 1, now=0.1) == bytes([10])  # 100 Hz for 0.1 s
    assert not rd(m, 0x30, 1, now=0.1)[0] & 0x01
    assert rd(m, 0x39, 1, now=1.0) == bytes([32])
    assert rd(m, 0x30, 1, now=1.0)[0] & 0x01  # overrun
    assert codec.decode_xyz(rd(m, 0x32, 6, now=1.0), 0x0B) == (0.0, 0.0, 1.0)
    assert rd(m, 0x39, 1, now=1.0) == bytes([31])  # one burst popped one entry
    assert not rd(m, 0x30, 1, now=1.0)[0] & 0x01  # cleared by the data read


# -- the driver --------------------------------------------------------------------------------
def test_open_sequence_configures_in_standby_then_measures():
    rg = rig(rate_hz=100, range_g=8)
    log = rg.bus.start_log()
    rg.dev.open()
    assert log[:2] == ["53 W 00", "53 R e5"]
    writes = [line for line in log if line.startswith("53 W ") and len(line) == 10]
    assert writes == ["53 W 2d 00", "53 W 31 0a", "53 W 2c 0a", "53 W 38 00", "53 W 38 90",
                      "53 W 2d 08"]
    assert rg.model.measuring and rg.model.fifo_mode == codec.FIFO_STREAM


def test_wrong_chip_and_no_chip():
    rg = rig(ADXL345Model(devid=0x68))
    with pytest.raises(WrongChip, match="DEVID 0x68 is an MPU-6050, not an ADXL345"):
        rg.dev.open()
    bus = FakeBus({0x1D: ADXL345Model()})  # the chip answers at 0x1D, not 0x53
    with pytest.raises(DeviceGone, match="no answer"):
        ADXL345(bus, address=0x53).open()


@pytest.mark.parametrize("rate", [12.5, 50.0, 200.0, 400.0])
def test_fifo_stream_returns_every_sample_for_the_elapsed_time(rate):
    rg = rig(rate_hz=rate)
    rg.dev.open()
    t0 = rg.clock.t
    run(rg, 4.0)
    s = rg.dev.drain_samples()
    produced = rg.model.stats["samples"]
    assert len(s) == produced - len(rg.model.fifo)  # nothing lost, nothing invented
    assert abs(len(s) - (rg.clock.t - t0) * rate) <= rg.dev.fifo_interval_s * rate + 1
    gaps = np.diff([x.t for x in s])
    assert np.allclose(gaps, 1 / rate, atol=1 / rate)  # at most a period of correction
    assert abs(np.median(gaps) - 1 / rate) < 1e-9
    assert rg.dev.stats()["overruns"] == 0 and rg.dev.stats()["lost_samples"] == 0
    assert all(abs(x.az - 1.0) < 0.1 for x in s)


def test_readings_carry_the_latest_sample_and_the_peak():
    rg = rig(rate_hz=50, read_interval_s=1.0)
    batches: list = []
    rg.dev.open()
    rg.dev.on_samples = batches.append
    readings = run(rg, 3.05)
    assert len(readings) == 3
    s = [x for b in batches for x in b]
    assert len(s) >= 150 and rg.dev.drain_samples() == []  # handed over, not also kept
    last = readings[-1]
    before = [x for x in s if x.t <= last.t_mono]
    assert (last.values["ax"], last.values["ay"], last.values["az"]) == before[-1][1:]
    window = [x for x in before if x.t > readings[-2].t_mono]
    assert last.values["amag"] == max(x.magnitude for x in window)
    assert rg.dev.drain_samples() == []


def test_overrun_after_a_stall_is_counted_and_streaming_resumes():
    rg = rig(rate_hz=100)
    rg.dev.open()
    run(rg, 1.0)
    rg.dev.drain_samples()
    rg.clock.t += 1.0  # the node stalled for a second: 100 samples, room for 32
    run(rg, 1.0)
    st = rg.dev.stats()
    assert st["overruns"] == 1 and st["bad_frames"] == 1
    # 1 s stall + one FIFO interval at 100 Hz, less the 32 the FIFO kept
    assert st["lost_samples"] == round((1.0 + rg.dev.fifo_interval_s) * 100) - 32
    s = rg.dev.drain_samples()
    assert np.allclose(np.diff([x.t for x in s[-60:]]), 0.01, atol=0.0101)


def test_nacks_then_gone_then_recovery_after_a_brown_out():
    rg = rig()
    rg.dev.open()
    run(rg, 1.0)
    rg.bus.fault(ADDR, nack=1.0)
    assert poll_until_gone(rg.dev) == ["error", "error", "gone"]
    assert rg.dev.stats()["nacks"] == 3
    rg.bus.fault(ADDR, nack=0.0)
    rg.model.power_cycle(rg.clock.t)  # back in standby
    rg.dev.open()
    rg.dev.drain_samples()
    run(rg, 1.0)
    assert len(rg.dev.drain_samples()) >= 30 and rg.model.measuring


def test_brown_out_while_streaming_is_noticed_and_reconfigured():
    rg = rig()
    rg.dev.open()
    run(rg, 1.0)
    rg.model.power_cycle(rg.clock.t)  # standby, power-up format: no more samples
    rg.dev.drain_samples()
    run(rg, 3.0)
    assert rg.dev.stats()["reconfigured"] == 1 and rg.model.measuring
    assert len(rg.dev.drain_samples()) >= 50


@needs_sisfall
def test_sisfall_trial_replays_exactly_at_200_hz():
    src = SisFallSource("SA01", "F01_R01")
    rg = rig(ADXL345Model(src), rate_hz=200, range_g=16)
    rg.dev.open()
    run(rg, 3.0)
    s = rg.dev.drain_samples()
    got = np.array([x[1:] for x in s])
    # ±16 g full resolution is the data set's own format: the same counts come back.
    assert np.array_equal(got * 256, table(src.counts)[:len(s)].astype(float))
    assert len(s) >= 590


@needs_sisfall
def test_sisfall_fall_replays_at_50_hz_within_quantization():
    src = SisFallSource("SA01", "F01_R01")
    rg = rig(ADXL345Model(src), rate_hz=50, range_g=16)
    rg.dev.open()
    run(rg, 16.0)  # longer than the 15 s trial: it loops
    s = rg.dev.drain_samples()
    want = table(src.samples(50))
    assert len(want) == 750
    got = np.array([x[1:] for x in s])
    expect = want[np.arange(len(s)) % len(want)]
    assert np.abs(got - expect).max() <= 0.5 / 256 + 1e-12
    assert max(x.magnitude for x in s) > 3.0  # the impact survives the resampling
    assert np.allclose(np.diff([x.t for x in s]), 0.02, atol=0.0201)


def test_sisfall_spec_falls_back_to_rest_without_the_data(tmp_path):
    src = source_from_spec("sisfall:SA01/F01_R01", directory=tmp_path)
    assert isinstance(src, RestSource)
    with pytest.raises(ValueError, match="sisfall:SA01/F01_R01"):
        source_from_spec("sisfall:SA01")


# -- captures ----------------------------------------------------------------------------------
def test_capture_of_the_driver_decodes_to_its_samples():
    rg = rig(rate_hz=100, range_g=4)
    log = rg.bus.start_log()
    rg.dev.open()
    run(rg, 0.5)
    docs = list(codec.decode_capture(parse_capture(log)))
    assert docs[0]["type"] == "devid" and docs[0]["chip"] == "ADXL345"
    fmt = next(d for d in docs if d.get("name") == "data_format")
    assert fmt["range_g"] == 4 and fmt["full_res"] and fmt["mg_per_lsb"] == 3.906
    assert any(d.get("fifo_mode") == "stream" for d in docs)
    samples = [d for d in docs if d["type"] == "sample"]
    got = rg.dev.drain_samples()
    assert [(d["ax"], d["ay"], d["az"]) for d in samples] == [x[1:] for x in got]
    assert not [d for d in docs if d["type"] == "rejected"]


def test_capture_problems_are_explained():
    recs = [(0x53, "W", b"\x00"), (0x53, "R", b"\x68"), (0x53, "W", b"\x32"),
            (0x53, "R", b"\x00\x01"), (0x53, "W", b"\x00\x12"), (0x53, "W", b"\x32"),
            (0x53, "R", None), (0x44, "W", b"\x00")]
    docs = list(codec.decode_capture(recs))
    assert docs[0]["type"] == "devid" and "not an ADXL345" in docs[0]["note"]
    assert "6-byte burst" in docs[1]["reason"]
    assert "read-only" in docs[2]["reason"]
    assert "NACK" in docs[3]["reason"] and "0x44 (1)" in docs[4]["reason"]


def test_cli_frames_adxl345(capsys):
    capture = ["53 W 00", "53 R e5", "53 W 31 0b", "53 W 39", "53 R 02", "53 W 32",
               "53 R 00 01 80 ff 05 00"]
    rc = cli(["frames", "adxl345", "--hex", ";".join(capture)])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and ", 0 rejected" in err
    assert docs[-1]["type"] == "sample"
    assert (docs[-1]["ax"], docs[-1]["ay"], docs[-1]["az"]) == (1.0, -0.5, 5 / 256)
    assert any(d["type"] == "fifo_status" and d["entries"] == 2 for d in docs)


# -- the agent ----------------------------------------------------------------------------------
BASE = '[node]\nid = "n1"\n[[sensor]]\ntype = "adxl345"\nname = "acc"\nbus = "emulator"\n'


@pytest.mark.parametrize(("extra", "message"), [
    ("rate_hz = 60", "rate_hz: 60 is not one of 12.5, 25, 50, 100, 200, 400"),
    ("address = 0x68", "address: 0x68 is not one of 0x53, 0x1d"),
    ("range_g = 3", "3 is not one of 2, 4, 8, 16"),
    ('emulator_source = "sisfall:SA01"', "emulator_source: 'sisfall:SA01': expected"),
    ('quantities = ["ax", "g"]', "quantities"),
])
def test_config_errors(extra, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(")):
        config.parse(BASE + extra + "\n", "t.toml", check_devices=False)


def test_config_emulator_source_needs_the_emulator():
    text = BASE.replace('"emulator"', "1") + 'emulator_source = "sisfall:SA01/F01_R01"\n'
    with pytest.raises(config.ConfigError, match='only for bus = "emulator"'):
        config.parse(text, "t.toml", check_devices=False)
    cfg = config.parse(BASE + "rate_hz = 12.5\n", "t.toml", check_devices=False)
    assert (cfg.sensor[0].rate_hz, cfg.sensor[0].range_g, cfg.sensor[0].address) == (
        12.5, 16, 0x53)


def test_agent_builds_it_on_the_emulated_bus():
    with agent_built("adxl345", "acc", 0x1D) as dev:
        readings: list = []
        for _ in range(40):
            readings += dev.poll()
            if readings:
                break
        assert readings and set(readings[0].values) == {"ax", "ay", "az", "amag"}
        assert math.isclose(readings[0].values["az"], 1.0, abs_tol=0.1)
        assert dev.drain_samples()
