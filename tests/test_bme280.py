"""BME280: the reference example exactly, the register model, the driver over the fake bus."""

from __future__ import annotations

import dataclasses
import json

import i2c_helpers as i2c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock, agent_built, attach, readings

from agent.tools.cli import main as cli
from drivers.base import DeviceError, DeviceGone
from drivers.bme280 import BME280, REFERENCE_CALIBRATION, WrongChip, codec
from drivers.bme280.codec import Calibration, Raw
from drivers.bme280.emulator import BME280Model, adc_bits, raw_for
from drivers.emulation.climate import Climate, DiurnalClimate, constant_climate
from drivers.emulation.i2c import parse_capture

ADDR = 0x76
REF_TP = bytes.fromhex("706B436718FC7D8E43D6D00B270B8C00F9FF8C3CF8C67017") + b"\x00\x4b"
REF_H = bytes.fromhex("6A0100140D001E")
REF_DATA = bytes.fromhex("655AC07EED0061A8")


def rig(model: BME280Model | None = None, **kw):
    return attach(BME280, ADDR, model or BME280Model(DiurnalClimate(seed=5, start_hour=14)),
                  **kw)


# -- the reference example -------------------------------------------------------------------
def test_reference_calibration_parses():
    cal = Calibration.from_registers(REF_TP, REF_H)
    assert (cal.T1, cal.T2, cal.T3) == (27504, 26435, -1000)
    assert (cal.P1, cal.P2, cal.P3, cal.P4, cal.P5, cal.P6, cal.P7, cal.P8, cal.P9) == (
        36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
    assert (cal.H1, cal.H2, cal.H3, cal.H4, cal.H5, cal.H6) == (75, 362, 0, 333, 0, 30)
    assert cal == REFERENCE_CALIBRATION and not cal.problems()
    assert cal.to_registers() == (REF_TP, REF_H)


def test_reference_example_exactly():
    raw = Raw.from_bytes(REF_DATA)
    assert (raw.adc_p, raw.adc_t, raw.adc_h) == (415148, 519888, 25000)
    assert raw.to_bytes() == REF_DATA
    cal = REFERENCE_CALIBRATION
    assert codec.compensate_temperature(519888, cal) == (2508, 128422)
    assert codec.compensate_pressure(415148, cal, 128422) == 25767233
    assert codec.compensate_humidity(25000, cal, 128422) == 21277
    m = codec.decode_data(REF_DATA, cal)
    assert m.temp == 25.08
    assert m.pressure * 100 == 25767233 / 256 == 100653.25390625
    assert m.rh == 21277 / 1024 == pytest.approx(20.78, abs=0.005)
    assert m.skipped == ()


def test_h4_h5_are_sign_extended():
    # E4 = 0xFF, E5 = 0x8F, E6 = 0xFE: H4 = (-1 << 4) | 0xF = -1, H5 = (-2 << 4) | 0x8 = -24
    cal = Calibration.from_registers(REF_TP, bytes([0x6A, 0x01, 0x00, 0xFF, 0x8F, 0xFE, 0x1E]))
    assert (cal.H4, cal.H5) == (-1, -24)
    assert Calibration.from_registers(*cal.to_registers()) == cal


def test_c_division_truncates():
    assert codec._cdiv(-7, 2) == -3 and codec._cdiv(7, -2) == -3 and codec._cdiv(7, 2) == 3


def test_skipped_and_degenerate_values():
    cal = REFERENCE_CALIBRATION
    m = codec.decode_data(bytes.fromhex("8000007EED008000"), cal)
    assert m.temp == 25.08 and m.pressure is None and m.rh is None
    assert m.skipped == ("pressure", "rh")
    assert codec.decode_data(codec.RESET_DATA, cal).skipped == ("temp", "pressure", "rh")
    zero_p1 = dataclasses.replace(REFERENCE_CALIBRATION, P1=0)
    assert codec.compensate_pressure(415148, zero_p1, 128422) is None
    assert zero_p1.problems()


def test_oversampling_codes_and_times():
    assert codec.ctrl_meas(1, 1, codec.MODE_FORCED) == 0x25
    assert codec.ctrl_meas(16, 16, codec.MODE_NORMAL) == 0xB7
    assert codec.ctrl_hum(1) == 1 and codec.ctrl_hum(16) == 5
    with pytest.raises(ValueError):
        codec.ctrl_hum(3)
    assert codec.measurement_time_s(1, 1, 1) == pytest.approx(0.0093, abs=1e-6)
    assert codec.measurement_time_s(1, 1, 1, typical=True) == pytest.approx(0.008)
    assert codec.measurement_time_s(1, 0, 0) == pytest.approx(0.00355)


i16 = st.integers(-32768, 32767)
cal_st = st.builds(Calibration, st.integers(0, 0xFFFF), i16, i16, st.integers(0, 0xFFFF),
                   i16, i16, i16, i16, i16, i16, i16, i16, st.integers(0, 255), i16,
                   st.integers(0, 255), st.integers(-2048, 2047), st.integers(-2048, 2047),
                   st.integers(-128, 127))


@given(cal_st)
def test_calibration_register_round_trip(cal):
    assert Calibration.from_registers(*cal.to_registers()) == cal


@settings(max_examples=300)
@given(st.binary(min_size=26, max_size=26), st.binary(min_size=7, max_size=7),
       st.binary(min_size=8, max_size=8))
def test_arbitrary_bytes_never_crash_compensation(tp, h, data):
    m = codec.decode_data(data, Calibration.from_registers(tp, h))
    for v in (m.temp, m.pressure, m.rh):
        assert v is None or isinstance(v, float)
    if m.rh is not None:
        assert 0 <= m.rh <= 100


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_wrong_sizes_are_value_errors(a, b):
    try:
        Calibration.from_registers(a, b)
    except ValueError:
        assert len(a) != 26 or len(b) != 7
    try:
        Raw.from_bytes(a)
    except ValueError:
        assert len(a) != 8


@settings(max_examples=300)
@given(i2c.capture_records([0x76, 0x77, 0x44],
                           [b"\x88", b"\xe1", b"\xf7", b"\xd0", b"\xf2\x01\xf4\x25"],
                           max_len=30, max_size=25))
def test_capture_decoder_never_raises(recs):
    i2c.check_capture_docs(codec.decode_capture(recs))


# -- captures ---------------------------------------------------------------------------------
REF_CAPTURE = f"""
76 W d0
76 R 60
76 W e0 b6
76 W 88
76 R {REF_TP.hex(' ')}
76 W e1
76 R {REF_H.hex(' ')}
76 W f2 01
76 W f4 25
76 W f3
76 R 08
76 W f3
76 R 00
76 W f7
76 R {REF_DATA.hex(' ')}
"""


def test_capture_with_calibration_compensates_exactly():
    docs = list(codec.decode_capture(parse_capture(REF_CAPTURE.splitlines())))
    kinds = [d["type"] for d in docs]
    assert kinds == ["chip_id", "write", "calibration", "calibration", "write", "write",
                     "status", "status", "measurement"]
    assert docs[0]["chip"] == "BME280"
    assert docs[2]["complete"] is False and docs[3]["complete"] is True
    assert docs[3]["dig_T1"] == 27504 and docs[3]["dig_H2"] == 362
    assert docs[4]["osrs_h"] == 1 and "next ctrl_meas" in docs[4]["note"]
    assert docs[5]["mode"] == "forced" and docs[5]["osrs_t"] == 1
    assert docs[6]["measuring"] and not docs[7]["measuring"]
    m = docs[-1]
    assert (m["temp"], m["pressure"], m["rh"]) == (25.08, 1006.5325, 20.778)
    assert (m["temp_centi"], m["pressure_q24_8"], m["rh_q22_10"], m["t_fine"]) == (
        2508, 25767233, 21277, 128422)


def test_capture_without_calibration_reports_raw():
    docs = list(codec.decode_capture(parse_capture(["76 W f7", f"76 R {REF_DATA.hex()}"])))
    (m,) = docs
    assert m["type"] == "measurement" and "temp" not in m
    assert (m["adc_T"], m["adc_P"], m["adc_H"]) == (519888, 415148, 25000)
    assert "no calibration" in m["note"]


def test_capture_explains_late_ctrl_hum_and_problems():
    lines = REF_CAPTURE.splitlines()
    i = lines.index("76 W f2 01")
    lines[i], lines[i + 1] = lines[i + 1], lines[i]  # ctrl_meas first, then ctrl_hum
    lines[-1] = "76 R 65 5a c0 7e ed 00 80 00"
    lines += ["76 R NACK", "77 R 00", "44 W 24 00", "76 W d0 12"]
    docs = list(codec.decode_capture(parse_capture(lines)))
    m = next(d for d in docs if d["type"] == "measurement")
    assert m["rh"] is None and m["skipped"] == ["rh"] and "after the last ctrl_meas" in m["note"]
    rejected = [d["reason"] for d in docs if d["type"] == "rejected"]
    assert "read NACKed" in rejected[0]
    assert "no register address" in rejected[1]
    assert "read-only" in rejected[2]
    assert "0x44 (1)" in rejected[3]


def test_capture_bmp280_chip_id():
    (doc,) = codec.decode_capture([(0x77, "W", b"\xd0"), (0x77, "R", b"\x58")])
    assert doc["chip"] == "BMP280" and "no humidity" in doc["note"]


def test_cli_frames_bme280(capsys):
    rc = cli(["frames", "bme280", "--hex", ";".join(REF_CAPTURE.strip().splitlines())])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0
    assert docs[-1]["type"] == "measurement" and docs[-1]["temp"] == 25.08
    assert docs[-1]["pressure"] == 1006.5325 and docs[-1]["rh"] == 20.778
    # every transfer accounted for: the six register-address writes count with their reads
    assert "15 transfers: 15 decoded, 0 rejected" in err


def test_bus_capture_of_the_driver_is_decodable():
    (r,), docs = i2c.bus_capture(rig(), codec.decode_capture, 1)
    m = [d for d in docs if d["type"] == "measurement"][-1]
    assert m["temp"] == r.values["temp"] and m["rh"] == round(r.values["rh"], 3)
    assert not [d for d in docs if d["type"] == "rejected"]


# -- the chip model -----------------------------------------------------------------------------
def rd(model, reg, n, now=0.0):
    return model.transfer([("w", bytes([reg])), ("r", n)], now)[0]


def wr(model, reg, val, now=0.0):
    model.transfer([("w", bytes([reg, val]))], now)


def test_model_power_up_defaults():
    m = BME280Model(constant_climate())
    assert rd(m, 0xD0, 1) == b"\x60"
    assert rd(m, 0x88, 26) == REF_TP and rd(m, 0xE1, 7) == REF_H
    assert rd(m, 0xF2, 4) == b"\x00\x00\x00\x00"  # ctrl_hum, status, ctrl_meas, config
    assert rd(m, 0xF7, 8) == codec.RESET_DATA
    assert m.mode == "sleep"


def test_model_forced_mode_timing():
    m = BME280Model(constant_climate(18.0, 55.0, 1001.0))
    wr(m, 0xF2, 0x01)
    wr(m, 0xF4, 0x25, now=1.0)
    t_conv = codec.measurement_time_s(1, 1, 1, typical=True)
    assert rd(m, 0xF3, 1, 1.0)[0] & codec.STATUS_MEASURING
    assert rd(m, 0xF3, 1, 1.0 + t_conv - 1e-4)[0] & codec.STATUS_MEASURING
    assert rd(m, 0xF7, 8, 1.0 + t_conv - 1e-4) == codec.RESET_DATA  # old values meanwhile
    assert rd(m, 0xF3, 1, 1.0 + t_conv)[0] == 0
    assert m.mode == "sleep" and rd(m, 0xF4, 1, 1.0 + t_conv) == b"\x24"
    v = codec.decode_data(rd(m, 0xF7, 8, 1.1), REFERENCE_CALIBRATION)
    assert v.temp == pytest.approx(18.0, abs=0.01)
    assert v.pressure == pytest.approx(1001.0, abs=0.02) and v.rh == pytest.approx(55, abs=0.01)
    assert m.converted[-1].t == pytest.approx(1.0 + t_conv)


def test_model_ctrl_hum_applies_only_at_the_next_ctrl_meas_write():
    m = BME280Model(constant_climate(20, 50))
    wr(m, 0xF4, 0x25, 0.0)  # a driver that writes ctrl_meas first...
    wr(m, 0xF2, 0x01, 0.0)  # ...and ctrl_hum after it
    assert rd(m, 0xF2, 1, 0.0) == b"\x01"  # stored (reads back) but not in effect
    v = codec.decode_data(rd(m, 0xF7, 8, 0.1), REFERENCE_CALIBRATION)
    assert v.rh is None and v.raw.adc_h == codec.SKIPPED_H and v.temp == pytest.approx(20, abs=.01)
    wr(m, 0xF4, 0x25, 0.2)  # the next ctrl_meas write latches it
    v = codec.decode_data(rd(m, 0xF7, 8, 0.3), REFERENCE_CALIBRATION)
    assert v.rh == pytest.approx(50, abs=0.01)


def test_model_reset_restores_power_up_state():
    m = BME280Model(constant_climate())
    wr(m, 0xF2, 0x05)
    wr(m, 0xF5, 0x10)
    wr(m, 0xF4, 0xB5, 0.0)
    rd(m, 0xF3, 1, 0.5)
    wr(m, 0xE0, 0x12, 0.5)  # not the reset word: ignored
    assert rd(m, 0xF2, 1, 0.5) == b"\x05"
    wr(m, 0xE0, 0xB6, 1.0)
    assert rd(m, 0xF3, 1, 1.001)[0] & codec.STATUS_IM_UPDATE
    assert rd(m, 0x88, 2, 1.001) == b"\x00\x00"  # NVM copy still running
    assert rd(m, 0xF3, 1, 1.002)[0] == 0
    assert rd(m, 0x88, 26, 1.002) == REF_TP
    assert rd(m, 0xF2, 4, 1.002) == bytes(4) and rd(m, 0xF7, 8, 1.002) == codec.RESET_DATA


def test_model_pairs_pointer_and_read_only():
    m = BME280Model(constant_climate())
    m.transfer([("w", bytes([0xF2, 0x03, 0xF5, 0x08, 0xD0]))], 0.0)  # two pairs, then a pointer
    assert m.transfer([("r", 1)], 0.0) == [b"\x60"]
    assert rd(m, 0xF2, 1) == b"\x03" and rd(m, 0xF5, 1) == b"\x08"
    wr(m, 0xD0, 0x99)
    assert rd(m, 0xD0, 1) == b"\x60" and m.stats["ignored_writes"] == 1


def test_model_normal_mode_keeps_converting():
    m = BME280Model(constant_climate(30, 40, 990))
    wr(m, 0xF5, 0x00)  # t_sb 0.5 ms
    wr(m, 0xF2, 0x01)
    wr(m, 0xF4, 0x27, 0.0)
    wr(m, 0xF5, 0xA0, 0.0)  # ignored in normal mode
    assert rd(m, 0xF5, 1, 0.0) == b"\x00"
    rd(m, 0xF3, 1, 0.1)
    period = codec.measurement_time_s(1, 1, 1, typical=True) + 0.0005
    assert m.mode == "normal" and 0.1 - period <= m.converted[-1].t <= 0.1
    rd(m, 0xF3, 1, 0.2)
    assert m.stats["conversions"] == 2 and 0.2 - period <= m.converted[-1].t <= 0.2
    v = codec.decode_data(rd(m, 0xF7, 8, 0.1), REFERENCE_CALIBRATION)
    assert v.temp == pytest.approx(30, abs=0.01) and v.pressure == pytest.approx(990, abs=0.02)


@pytest.mark.parametrize("osrs", [(1, 1, 1), (2, 4, 8), (16, 16, 16)])
@pytest.mark.parametrize("truth", [Climate(25.08, 20.78, 1006.5325), Climate(-20.0, 95.0, 950.0),
                                   Climate(41.3, 5.0, 1045.0)])
def test_inverted_compensation_within_resolution(osrs, truth):
    raw = raw_for(truth, REFERENCE_CALIBRATION, osrs)
    assert raw.adc_t % (1 << (20 - adc_bits(osrs[0]))) == 0
    m = codec.compensate(raw, REFERENCE_CALIBRATION)
    res_pa = 2.62 / 2 ** (adc_bits(osrs[1]) - 16)  # datasheet: 2.62 Pa at 16 bits
    assert abs(m.temp - truth.temp) <= 0.0051 + 0.0051 / 2 ** (adc_bits(osrs[0]) - 16)
    assert abs(m.pressure * 100 - truth.pressure * 100) <= res_pa
    assert abs(m.rh - truth.rh) <= 0.01


def test_inversion_lands_on_the_reference_raw_values():
    raw = raw_for(Climate(25.08, 21277 / 1024, 25767233 / 25600), REFERENCE_CALIBRATION,
                  (1, 1, 1))
    assert abs(raw.adc_t - 519888) <= 16 and abs(raw.adc_p - 415148) <= 32
    assert abs(raw.adc_h - 25000) <= 1


# -- the driver over the fake bus ---------------------------------------------------------------
@pytest.mark.parametrize("osrs", [(1, 1, 1), (16, 16, 16)])
def test_round_trip_values_equal_source(osrs):
    rg = rig(oversampling=osrs)
    rg.dev.open()
    got = readings(rg.dev, 8)
    conv = list(rg.model.converted)[-8:]
    for r, c in zip(got, conv, strict=True):
        assert r.values == {"temp": c.expected.temp, "rh": c.expected.rh,
                            "pressure": c.expected.pressure}
        assert abs(r.values["temp"] - c.truth.temp) <= 0.0076
        assert abs(r.values["pressure"] - c.truth.pressure) <= 0.0132
        assert abs(r.values["rh"] - c.truth.rh) <= 0.01
        assert c.osrs == osrs
    assert rg.dev.stats()["readings"] == 8 and rg.model.stats["conversions"] == 8


def test_driver_open_and_measurement_sequence():
    rg = rig()
    log = rg.bus.start_log()
    rg.dev.open()
    assert log[:5] == ["76 W d0", "76 R 60", "76 W e0 b6", "76 W f3", "76 R 00"]
    assert rg.dev.calibration == REFERENCE_CALIBRATION and rg.dev.chip_id == 0x60
    del log[:]
    rg.clock.sleeps.clear()
    rg.dev.poll()
    # ctrl_hum BEFORE ctrl_meas, wait the maximum conversion time, check status, burst read
    assert log[:4] == ["76 W f2 01", "76 W f4 25", "76 W f3", "76 R 00"]
    assert log[4] == "76 W f7" and len(bytes.fromhex(log[5][5:].replace(" ", ""))) == 8
    assert rg.clock.sleeps == [pytest.approx(0.0093)]
    assert rg.model.osrs_h_active == 1


def test_driver_waits_for_the_nvm_copy():
    clock = Clock()
    dev = attach(BME280, ADDR, BME280Model(constant_climate(), powered_at=clock.t),
                 clock=clock).dev
    dev.open()
    assert dev.calibration == REFERENCE_CALIBRATION


def test_quantities_subset_skips_the_rest():
    rg = rig(quantities=("temp", "pressure"))
    rg.dev.open()
    assert set(readings(rg.dev, 1)[0].values) == {"temp", "pressure"}
    assert rg.model.converted[-1].osrs == (1, 1, 0)


def test_bmp280_is_refused_clearly():
    rg = rig(BME280Model(constant_climate(), chip_id=0x58))
    with pytest.raises(WrongChip, match=r"0x58 is BMP280.*no humidity.*not a BME280"):
        rg.dev.open()
    assert isinstance(WrongChip("x"), DeviceError) and not issubclass(WrongChip, DeviceGone)
    with pytest.raises(DeviceGone):
        rg.dev.poll()  # not open


def test_bad_calibration_is_an_error():
    model = BME280Model(constant_climate(),
                        calibration=Calibration(*([0] * 18)))
    rg = rig(model)
    with pytest.raises(DeviceError, match="bad calibration"):
        rg.dev.open()


def test_repeated_nacks_then_gone_then_recovery():
    rg = rig()
    i2c.nacks_then_gone_then_back(rg, ADDR)  # brown-out: ctrl registers back to 0
    r = readings(rg.dev, 1)[0]
    assert r.values["rh"] == rg.model.converted[-1].expected.rh


def test_chip_reset_between_measurements_is_harmless():
    rg = rig()
    rg.dev.open()
    readings(rg.dev, 1)
    rg.model.power_cycle(rg.clock.t - 1)  # ctrl_hum lost: the driver rewrites it each time
    assert readings(rg.dev, 1)[0].values["rh"] == rg.model.converted[-1].expected.rh


def test_garbage_data_registers_are_an_error():
    rg = rig()
    rg.dev.open()
    rg.model.regs[0xF7:0xFF] = b"\xff" * 8
    rg.model._convert = lambda *a: None  # a chip whose conversions never land
    with pytest.raises(DeviceError, match="bus fault"):
        readings(rg.dev, 1)
    assert rg.dev.stats()["bad_data"] == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="0x76"):
        BME280(1, address=0x44)
    with pytest.raises(ValueError):
        BME280(1, oversampling=(1, 3, 1))
    with pytest.raises(ValueError):
        BME280(1, iir_filter=5)


def test_agent_builds_it_on_the_emulated_bus():
    with agent_built("bme280", "baro", 0x77) as dev:
        (r,) = dev.poll()
        assert 900 < r.values["pressure"] < 1100 and 0 <= r.values["rh"] <= 100
