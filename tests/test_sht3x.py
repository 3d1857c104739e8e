"""SHT3x: reference vectors, the chip model, the driver over the fake I2C bus, captures."""

from __future__ import annotations

import json
import re

import i2c_helpers as i2c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock, agent_built, attach, readings

from agent.tools.cli import main as cli
from drivers.base import DeviceError, DeviceGone
from drivers.emulation.climate import Climate, DiurnalClimate, constant_climate, rh_at
from drivers.emulation.i2c import FakeBus, Nack, parse_capture
from drivers.sensirion import CRCError, crc8
from drivers.sht3x import SHT3x, codec
from drivers.sht3x.emulator import SHT3xModel

ADDR = 0x44


def rig(model: SHT3xModel | None = None, **kw):
    return attach(SHT3x, ADDR, model or SHT3xModel(DiurnalClimate(seed=3, start_hour=5)), **kw)


# -- reference vectors -----------------------------------------------------------------
def test_crc_vectors():
    assert crc8(b"\xbe\xef") == 0x92
    assert crc8(b"\xde\xad") == 0x98
    assert crc8(bytes.fromhex("BEEE")) != 0x92
    assert crc8(b"\x00\x00") == 0x81


def test_reference_frame():
    m = codec.decode_measurement(bytes.fromhex("DEAD98BEEF92"))
    assert (m.raw_t, m.raw_rh) == (0xDEAD, 0xBEEF)
    assert m.temp == pytest.approx(107.2221, abs=1e-4)
    assert m.rh == pytest.approx(74.5846, abs=1e-4)
    assert m.as_dict()["temp"] == 107.22 and m.as_dict()["rh"] == 74.58


def test_status_after_clear_and_power_up():
    assert codec.decode_status(b"\x00\x00\x81").word == 0
    s = codec.Status(codec.ST_POWER_UP)
    assert s.alert_pending and s.reset_detected and not s.heater
    assert codec.ST_POWER_UP == 0x8010


def test_bad_crc_and_length_raise_crc_error():
    with pytest.raises(CRCError, match="word 0"):
        codec.decode_measurement(bytes.fromhex("DEAD99BEEF92"))
    with pytest.raises(CRCError, match="word 1"):
        codec.decode_measurement(bytes.fromhex("DEAD98BEEE92"))
    with pytest.raises(CRCError):
        codec.decode_measurement(b"\xde\xad\x98")
    assert issubclass(CRCError, ValueError)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_raw_round_trip(raw_t, raw_rh):
    t, rh = codec.raw_to_temp(raw_t), codec.raw_to_rh(raw_rh)
    m = codec.decode_measurement(codec.encode_measurement(t, rh))
    assert (m.raw_t, m.raw_rh) == (raw_t, raw_rh)


def test_conversion_clamps():
    assert codec.temp_to_raw(-100) == 0 and codec.temp_to_raw(500) == 0xFFFF
    assert codec.rh_to_raw(-1) == 0 and codec.rh_to_raw(101) == 0xFFFF


@given(st.binary(max_size=12))
def test_arbitrary_bytes_decode_or_crc_error(data):
    for fn in (codec.decode_measurement, codec.decode_status, codec.decode_serial):
        try:
            fn(data)
        except CRCError:
            pass


@settings(max_examples=300)
@given(i2c.capture_records(
    [0x00, 0x44, 0x45, 0x76], [b"\x24\x00", b"\x2c\x06", b"\xf3\x2d", b"\x36\x82", b"\x06"],
    max_len=8))
def test_capture_decoder_never_raises(recs):
    i2c.check_capture_docs(codec.decode_capture(recs),
                           ("command", "measurement", "status", "serial", "probe", "rejected"))


# -- captures ------------------------------------------------------------------------------
def test_capture_decoding():
    cap = parse_capture("""
        44 W 30 a2
        44 W f3 2d
        44 R 80 10 e1
        44 W 24 00
        44 R NACK          # read too early
        44 R de ad 98 be ef 92
        44 W 24 00
        44 R de ad 99 be ef 92
        45 W 2c 06
        45 R de ad 98 be
        76 W f7
        44 W 12
    """.splitlines())
    docs = list(codec.decode_capture(cap))
    kinds = [d["type"] for d in docs]
    assert kinds == ["command", "command", "status", "command", "rejected", "measurement",
                     "command", "rejected", "command", "rejected", "rejected", "rejected"]
    assert docs[0]["name"] == "soft reset"
    assert docs[2]["alert_pending"] and docs[2]["reset_detected"] and not docs[2]["heater"]
    assert "not finished" in docs[4]["reason"]
    assert docs[5]["temp"] == 107.22 and docs[5]["rh"] == 74.58
    assert "CRC mismatch" in docs[7]["reason"] and docs[7]["bytes"] == "de ad 99 be ef 92"
    assert "expected 6" in docs[9]["reason"] and docs[9]["addr"] == "0x45"
    assert "not a 16-bit command" in docs[10]["reason"]
    assert "0x76 (1)" in docs[11]["reason"]


def test_capture_temperature_only_read():
    docs = list(codec.decode_capture([(ADDR, "W", b"\x24\x00"), (ADDR, "R", b"\xde\xad\x98")]))
    assert docs[1]["type"] == "measurement" and docs[1]["temp"] == 107.22 and "rh" not in docs[1]


def test_cli_frames_sht3x(capsys):
    rc = cli(["frames", "sht3x", "--hex", "44 W 24 00;44 R de ad 98 be ef 92"])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0
    assert docs[0]["type"] == "command" and docs[0]["cmd"] == "2400"
    assert docs[1]["type"] == "measurement" and docs[1]["temp"] == 107.22
    assert "2 transfers: 2 decoded, 0 rejected" in err


def test_cli_frames_sht31_alias_with_crc_error(capsys):
    rc = cli(["frames", "sht31", "--hex", "44 R de ad 99 be ef 92"])
    out, _ = capsys.readouterr()
    assert rc == 65
    assert json.loads(out)["type"] == "rejected"


def test_bus_capture_is_decodable():
    rg = rig()
    got, docs = i2c.bus_capture(rg, codec.decode_capture, 2)
    meas = [d for d in docs if d["type"] == "measurement"]
    assert [m["raw_t"] for m in meas] == [m.raw_t for m in list(rg.model.measured)[-2:]]
    assert meas[-1]["temp"] == round(got[-1].values["temp"], 2)
    assert not [d for d in docs if d["type"] == "rejected"]


# -- the chip model --------------------------------------------------------------------------
def single(model, now, code=codec.MEASURE_NO_STRETCH["high"]):
    model.transfer([("w", codec.command(code))], now)


def test_model_power_up_state():
    m = SHT3xModel(constant_climate(20, 50))
    m.transfer([("w", codec.command(codec.READ_STATUS))], 0.0)
    (data,) = m.transfer([("r", 3)], 0.0)
    assert codec.decode_status(data).word == 0x8010
    assert m.mode == "idle" and not m.heater
    with pytest.raises(Nack):  # nothing left to read
        m.transfer([("r", 3)], 0.0)


def test_model_no_stretch_read_too_early_is_nacked():
    m = SHT3xModel(constant_climate(21.5, 40))
    single(m, 0.0)
    for t in (0.0, 0.005, 0.0154):
        with pytest.raises(Nack):
            m.transfer([("r", 6)], t)
    with pytest.raises(Nack):  # any transfer while measuring
        m.transfer([("w", codec.command(codec.READ_STATUS))], 0.01)
    (data,) = m.transfer([("r", 6)], 0.016)
    v = codec.decode_measurement(data)
    assert v.temp == pytest.approx(21.5, abs=codec.T_STEP) and v.rh == pytest.approx(40, abs=0.01)
    assert m.stretch_s == 0
    with pytest.raises(Nack):  # read once
        m.transfer([("r", 6)], 0.02)


def test_model_repeated_start_read_is_nacked_without_stretching():
    m = SHT3xModel(constant_climate())
    with pytest.raises(Nack):
        m.transfer([("w", b"\x24\x00"), ("r", 6)], 0.0)
    assert len(m.transfer([("r", 6)], 0.02)[0]) == 6


def test_model_clock_stretching_sets_stretch_s():
    m = SHT3xModel(constant_climate(), measure_time_s={"high": 0.0125})
    single(m, 0.0, codec.MEASURE_STRETCH["high"])
    (data,) = m.transfer([("r", 6)], 0.002)
    assert m.stretch_s == pytest.approx(0.0105)
    assert codec.decode_measurement(data).temp == pytest.approx(20, abs=codec.T_STEP)
    assert m.stats["stretches"] == 1
    m.transfer([("w", codec.command(codec.READ_STATUS))], 0.02)
    assert m.stretch_s == 0


def test_model_fake_bus_turns_stretch_into_time():
    clock = Clock()
    m = SHT3xModel(constant_climate())
    bus = FakeBus({ADDR: m}, clock=clock, sleep=clock.sleep)
    from smbus2 import i2c_msg

    bus.i2c_rdwr(i2c_msg.write(ADDR, [0x2C, 0x06]))
    t0 = clock.t
    msg = i2c_msg.read(ADDR, 6)
    bus.i2c_rdwr(msg)
    assert clock.t - t0 == pytest.approx(codec.MEASURE_TIME_S["high"])
    assert codec.decode_measurement(bytes(msg)).rh == pytest.approx(50, abs=0.01)


def test_model_heater_status_and_soft_reset():
    m = SHT3xModel(constant_climate(20, 60), heater_delta_c=3.0)
    m.transfer([("w", codec.command(codec.HEATER_ON))], 0.0)
    single(m, 0.0)
    hot = codec.decode_measurement(m.transfer([("r", 6)], 0.02)[0])
    assert hot.temp == pytest.approx(23, abs=0.01)
    assert hot.rh == pytest.approx(rh_at(60, 20, 23), abs=0.01) and hot.rh < 60
    m.transfer([("w", codec.command(codec.CLEAR_STATUS))], 0.03)
    m.transfer([("w", codec.command(codec.READ_STATUS))], 0.03)
    assert codec.decode_status(m.transfer([("r", 3)], 0.03)[0]).word == codec.ST_HEATER
    m.transfer([("w", codec.command(codec.SOFT_RESET))], 0.04)
    with pytest.raises(Nack):  # busy for 1.5 ms
        m.transfer([("w", codec.command(codec.READ_STATUS))], 0.041)
    m.transfer([("w", codec.command(codec.READ_STATUS))], 0.042)
    s = codec.decode_status(m.transfer([("r", 3)], 0.042)[0])
    assert s.reset_detected and s.alert_pending and not s.heater and not m.heater


def test_model_command_and_checksum_status_bits():
    m = SHT3xModel(constant_climate())
    m.transfer([("w", b"\x12\x34")], 0.0)  # unknown command
    m.transfer([("w", codec.command(codec.READ_STATUS))], 0.0)
    assert codec.decode_status(m.transfer([("r", 3)], 0.0)[0]).command_failed is False
    m.transfer([("w", b"\x12\x34")], 0.0)
    assert m.status & codec.ST_COMMAND
    m.transfer([("w", b"\x61\x1d\x12\x34\x00")], 0.0)  # argument with a bad CRC
    assert m.status & codec.ST_CHECKSUM and m.stats["bad_checksums"] == 1


def test_model_periodic_mode_and_fetch():
    m = SHT3xModel(constant_climate(10, 80))
    m.transfer([("w", codec.command(codec.PERIODIC[2.0]))], 0.0)
    m.transfer([("w", codec.command(codec.FETCH_DATA))], 0.1)
    with pytest.raises(Nack):  # no data yet
        m.transfer([("r", 6)], 0.1)
    m.transfer([("w", codec.command(codec.FETCH_DATA))], 0.6)
    assert codec.decode_measurement(m.transfer([("r", 6)], 0.6)[0]).temp == pytest.approx(
        10, abs=0.01)
    single(m, 0.7)  # refused in periodic mode
    assert m.status & codec.ST_COMMAND
    m.transfer([("w", codec.command(codec.BREAK))], 0.8)
    assert m.mode == "idle"


def test_model_general_call_and_power_cycle():
    m = SHT3xModel(constant_climate())
    m.transfer([("w", codec.command(codec.HEATER_ON))], 0.0)
    m.transfer([("w", codec.command(codec.CLEAR_STATUS))], 0.0)
    m.power_cycle(1.0)
    assert m.status == 0x8010 and not m.heater
    with pytest.raises(Nack):
        m.transfer([("w", b"")], 1.0005)
    m.transfer([("w", b"")], 1.002)  # a probe is acknowledged


def test_diurnal_climate_is_plausible_and_seeded():
    a, b = DiurnalClimate(seed=7, start_hour=0), DiurnalClimate(seed=7, start_hour=0)
    days = [a(t * 600.0) for t in range(145)]  # a day in 10-minute steps
    assert days == [b(t * 600.0) for t in range(145)]
    temps = [c.temp for c in days]
    rhs = [c.rh for c in days]
    assert 4 < max(temps) - min(temps) < 16
    assert all(0 <= r <= 100 for r in rhs)
    warmest = temps.index(max(temps)) / 6  # hour of the day
    assert 11 <= warmest <= 18
    assert rhs[temps.index(max(temps))] < rhs[temps.index(min(temps))]
    assert all(990 < c.pressure < 1040 for c in days)


# -- the driver over the fake bus --------------------------------------------------------------
@pytest.mark.parametrize("stretch", [False, True])
def test_round_trip_values_equal_source(stretch):
    rg = rig(clock_stretching=stretch)
    rg.dev.open()
    got = readings(rg.dev, 10)
    sent = list(rg.model.measured)[-10:]
    for r, s in zip(got, sent, strict=True):
        assert r.values["temp"] == s.temp and r.values["rh"] == s.rh
        # ...and the source's values within the sensor's resolution
        assert abs(r.values["temp"] - s.truth.temp) <= codec.T_STEP / 2 + 1e-9
        assert abs(r.values["rh"] - s.truth.rh) <= codec.RH_STEP / 2 + 1e-9
    assert got[1].t_mono - got[0].t_mono == pytest.approx(2.0, abs=0.05)
    assert rg.dev.stats() == {"readings": 10, "crc_errors": 0, "nacks": 0, "bus_errors": 0,
                              "bad_frames": 0}
    assert rg.model.stats["nacks"] == 0
    assert rg.model.stats["stretches"] == (10 if stretch else 0)


def test_driver_open_sequence_and_capture():
    rg = rig()
    log = rg.bus.start_log()
    rg.dev.open()
    assert log[:5] == ["44 W 30 93", "44 W 30 a2", "44 W f3 2d", "44 R 80 10 e1", "44 W 30 41"]
    assert rg.dev.last_status is not None and rg.dev.last_status.reset_detected
    assert rg.model.status == 0
    rg.dev.poll()
    assert log[5] == "44 W 24 00" and re.fullmatch(r"44 R( [0-9a-f]{2}){6}", log[6])


def test_driver_waits_the_measurement_time_without_stretching():
    rg = rig()
    rg.dev.open()
    rg.clock.sleeps.clear()
    rg.dev.poll()
    assert rg.clock.sleeps == [pytest.approx(codec.MEASURE_TIME_S["high"] + 0.0005)]


def test_driver_uses_stretching_not_sleep():
    rg = rig(clock_stretching=True)
    rg.dev.open()
    rg.clock.sleeps.clear()
    log = rg.bus.start_log()
    rg.dev.poll()
    assert log[0] == "44 W 2c 06"
    # the only time spent is the stretch, slept by the bus on the chip's behalf
    assert rg.clock.sleeps == [pytest.approx(codec.MEASURE_TIME_S["high"])]
    assert rg.model.stats["stretches"] == 1


def test_driver_retries_a_read_nacked_by_a_slow_chip():
    rg = rig(SHT3xModel(constant_climate(), measure_time_s={"high": 0.026}))
    rg.dev.open()
    (r,) = readings(rg.dev, 1)
    assert r.values["temp"] == pytest.approx(20, abs=0.01)
    assert rg.dev.stats()["nacks"] == 2 and rg.model.stats["nacks"] == 2


def test_driver_gives_up_on_a_chip_that_never_finishes():
    rg = rig(SHT3xModel(constant_climate(), measure_time_s={"high": 1.0}))
    rg.dev.open()
    with pytest.raises(DeviceError, match="measurement") as exc:
        rg.dev.poll()
    assert not isinstance(exc.value, DeviceGone)


def test_bit_flips_are_crc_errors():
    rg = rig()
    rg.dev.open()
    rg.bus.fault(ADDR, flip=0.05)
    good = errors = 0
    for _ in range(1000):
        try:
            rs = rg.dev.poll()
        except DeviceError as exc:
            assert not isinstance(exc, DeviceGone)
            assert "CRC mismatch" in str(exc)
            errors += 1
            continue
        for r in rs:
            good += 1
            assert r.values["temp"] == rg.model.measured[-1].temp
            assert r.values["rh"] == rg.model.measured[-1].rh
    assert errors > 3 and good > 50
    assert rg.dev.stats()["crc_errors"] == rg.dev.stats()["bad_frames"] == errors


def test_repeated_nacks_then_gone_then_recovery():
    rg = rig()
    i2c.nacks_then_gone_then_back(rg, ADDR)
    assert readings(rg.dev, 2)[1].values["temp"] == rg.model.measured[-1].temp


def test_not_open_and_bad_arguments():
    with pytest.raises(DeviceGone):
        SHT3x(1).poll()
    with pytest.raises(ValueError, match="0x44"):
        SHT3x(1, address=0x40)
    with pytest.raises(ValueError):
        SHT3x(1, quantities=("temp", "pm25"))


def test_missing_bus_is_gone():
    i2c.missing_bus_is_gone(SHT3x)


def test_commands_heater_serial_status():
    rg = rig(SHT3xModel(constant_climate(15, 70), serial=0x12345678))
    rg.dev.open()
    assert rg.dev.read_serial() == 0x12345678
    rg.dev.set_heater(True)
    assert rg.dev.read_status().heater and rg.model.heater
    assert rg.dev.measure().temp == pytest.approx(18, abs=0.01)
    rg.dev.soft_reset()
    assert not rg.model.heater and not rg.dev.heater
    assert rg.dev.read_status().reset_detected
    rg.dev.clear_status()
    assert rg.dev.read_status().word == 0


def test_quantities_subset():
    rg = rig(quantities=("rh",))
    rg.dev.open()
    assert set(readings(rg.dev, 1)[0].values) == {"rh"}
    assert not rg.dev.warming_up


def test_agent_builds_it_on_the_emulated_bus():
    with agent_built("sht3x", "air", 0x45) as dev:
        (r,) = dev.poll()
        assert -40 < r.values["temp"] < 60 and 0 <= r.values["rh"] <= 100


def test_climate_tuple_sources():
    m = SHT3xModel([(1.0, 2.0), (3.0, 4.0)])
    assert m.source(0) == Climate(1.0, 2.0) and m.source(1) == Climate(3.0, 4.0)
    assert m.source(2) == Climate(3.0, 4.0)  # the last value repeats
    m2 = SHT3xModel(lambda now: (5.0, 6.0, 900.0))
    assert m2.source(0) == Climate(5.0, 6.0, 900.0)
