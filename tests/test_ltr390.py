"""LTR390: datasheet conversions, the chip model, the driver over the fake I2C bus, captures."""

from __future__ import annotations

import json

import i2c_helpers as i2c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import agent_built, attach, readings

from agent.tools.cli import main as cli
from drivers import catalogue
from drivers.base import DeviceError, DeviceGone
from drivers.emulation.i2c import FakeBus, parse_capture
from drivers.emulation.light import Daylight, Light
from drivers.ltr390 import LTR390, WrongChip, codec
from drivers.ltr390.emulator import LTR390Model
from drivers.readme import example_capture

ADDR = 0x53
SPEC = catalogue.get("ltr390")  # its folder set: the README's example capture
gains = st.sampled_from(sorted(codec.GAINS))
resolutions = st.sampled_from(sorted(codec.RESOLUTIONS))


def rig(model: LTR390Model | None = None, **kw):
    return attach(LTR390, ADDR, model or LTR390Model(Daylight(seed=3, start_hour=11)), **kw)


# -- datasheet conversions ------------------------------------------------------------------
def test_datasheet_formulas():
    # lux = 0.6 x ALS / (gain x int) x wfac, int = 4 at 20 bits ... 0.125 at 13 bits
    assert codec.als_to_lux(1000, 3, 18) == pytest.approx(200.0)
    assert codec.als_to_lux(1000, 18, 20) == pytest.approx(0.6 * 1000 / 72)
    assert codec.als_to_lux(1000, 1, 13) == pytest.approx(4800.0)
    assert codec.als_to_lux(1000, 3, 18, wfac=1.5) == pytest.approx(300.0)
    # UVI = UVS / sensitivity x wfac: 2300 counts per UVI at gain 18 and 20 bits
    assert codec.uv_sensitivity(18, 20) == 2300.0
    assert codec.uvs_to_uvi(2300, 18, 20) == pytest.approx(1.0)
    assert codec.uv_sensitivity(3, 18) == pytest.approx(2300 * 3 / 18 / 4)  # 95.83
    assert codec.uvs_to_uvi(11960, 18, 20, wfac=2) == pytest.approx(10.4)
    assert codec.full_scale(20) == 0xFFFFF and codec.full_scale(13) == 8191
    assert [codec.integration_s(b) for b in (20, 19, 18, 17, 16, 13)] == [
        0.4, 0.2, 0.1, 0.05, 0.025, 0.0125]


def test_register_values():
    assert codec.main_ctrl(True, False) == 0x02 and codec.main_ctrl(True, True) == 0x0A
    assert codec.meas_rate(18) == 0x22  # the power-on default: 18 bits, 100 ms
    assert codec.meas_rate(20) == 0x04  # 400 ms integration, 500 ms rate
    assert codec.meas_rate(13) == 0x50
    assert [codec.gain_code(g) for g in (1, 3, 6, 9, 18)] == [0, 1, 2, 3, 4]
    assert codec.decode_meas_rate(0x22) == (18, 0.1) and codec.decode_meas_rate(0x67)[0] is None
    assert codec.decode_gain(0x04) == 18 and codec.decode_gain(0x05) is None
    for bad in (lambda: codec.gain_code(2), lambda: codec.integration_s(14)):
        with pytest.raises(ValueError):
            bad()


def test_counts_and_status():
    assert codec.decode_count(b"\x50\xc3\x00") == 50000
    assert codec.decode_count(b"\xff\xff\x0f") == 0xFFFFF
    assert codec.encode_count(50000) == b"\x50\xc3\x00"
    with pytest.raises(ValueError, match="above the 20th"):
        codec.decode_count(b"\x00\x00\x10")
    with pytest.raises(ValueError, match="3 bytes"):
        codec.decode_count(b"\x00\x00")
    s = codec.Status(0x28)
    assert s.power_on and s.data_ready and not s.interrupt
    assert codec.DEFAULTS[codec.REG_PART_ID] == 0xB2


@given(st.integers(0, 0xFFFFF), gains, resolutions)
def test_emulator_encoding_round_trips_through_the_codec(count, gain, bits):
    count = min(count, codec.full_scale(bits))
    assert codec.decode_count(codec.encode_count(count)) == count
    assert codec.lux_to_als(codec.als_to_lux(count, gain, bits), gain, bits) == count
    assert codec.uvi_to_uvs(codec.uvs_to_uvi(count, gain, bits), gain, bits) == count


@given(st.integers(0, 0xFFFFE), gains, gains, resolutions, resolutions)
def test_conversions_are_monotone(count, g1, g2, b1, b2):
    assert codec.als_to_lux(count + 1, g1, b1) > codec.als_to_lux(count, g1, b1)
    assert codec.uvs_to_uvi(count + 1, g1, b1) > codec.uvs_to_uvi(count, g1, b1)
    if count:  # more gain or a longer integration: more counts for the same light
        (lo_g, hi_g), (lo_b, hi_b) = sorted((g1, g2)), sorted((b1, b2))
        assert codec.als_to_lux(count, hi_g, hi_b) <= codec.als_to_lux(count, lo_g, lo_b)
        assert codec.uvs_to_uvi(count, hi_g, hi_b) <= codec.uvs_to_uvi(count, lo_g, lo_b)


@given(st.floats(0, 200_000), st.floats(0, 30), gains, resolutions)
def test_device_side_counts_clamp_to_full_scale(lux, uvi, gain, bits):
    als, uvs = codec.lux_to_als(lux, gain, bits), codec.uvi_to_uvs(uvi, gain, bits)
    assert 0 <= als <= codec.full_scale(bits) and 0 <= uvs <= codec.full_scale(bits)
    if als < codec.full_scale(bits):  # within half a count of the light
        half = codec.als_to_lux(1, gain, bits) / 2  # a tie rounds to even: exactly half
        assert abs(codec.als_to_lux(als, gain, bits) - lux) <= half * (1 + 1e-9)


# -- captures --------------------------------------------------------------------------------
def test_readme_capture_decodes():
    docs = list(codec.decode_capture(parse_capture(example_capture(SPEC).splitlines())))
    assert "rejected" not in {d["type"] for d in docs}
    meas = [d for d in docs if d["type"] == "measurement"]
    assert meas[0]["als"] == 50000 and meas[0]["lux"] == 30000.0 and meas[0]["gain"] == 1
    assert meas[1]["uvs"] == 11960 and meas[1]["uvi"] == 5.2 and meas[1]["resolution_bits"] == 20
    assert docs[0]["type"] == "part_id" and docs[0]["ltr390"]
    assert docs[1]["power_on"] and not docs[1]["data_ready"]


def test_capture_decoding_edge_cases():
    cap = parse_capture("""
        53 W
        53 R 00                 # no register address yet
        53 W 0d
        53 R 10 27 00 e8 03 00  # ALS and UVS in one read, power-on settings
        53 W 06 00
        53 W 30 01
        53 W 05 07
        53 W 10
        53 R 00 00 10
        53 W NACK
        53 R NACK
        53 W 00
        53 R 0a
        53 W 04 22 01
        53 W 19
        53 R 10 00
        1d W 00
    """.splitlines())
    docs = list(codec.decode_capture(cap))
    assert [d["type"] for d in docs] == [
        "probe", "rejected", "measurement", "rejected", "rejected", "write", "rejected",
        "rejected", "rejected", "read", "write", "write", "read", "rejected"]
    assert "no register address" in docs[1]["reason"]
    m = docs[2]
    assert (m["als"], m["uvs"], m["gain"], m["resolution_bits"]) == (10000, 1000, 3, 18)
    assert m["lux"] == pytest.approx(2000.0) and m["uvi"] == pytest.approx(1000 / 95.8333, 1e-4)
    assert "power-on values" in m["note"]
    assert "read-only" in docs[3]["reason"] and "not a register" in docs[4]["reason"]
    assert docs[5]["gain"] is None
    assert "above the 20th" in docs[6]["reason"]
    assert "NACKed" in docs[7]["reason"] and "NACKed" in docs[8]["reason"]
    assert docs[9]["name"] == "main_ctrl" and docs[9]["mode"] == "uvs" and docs[9]["enable"]
    assert docs[10]["resolution_bits"] == 18 and docs[11]["name"] == "gain"
    assert docs[11]["gain"] == 3  # auto-increment: 04 then 05
    assert docs[12]["name"] == "int_cfg" and docs[12]["bytes"] == "10 00"
    assert "0x1d (1)" in docs[13]["reason"]


@settings(max_examples=300)
@given(i2c.capture_records(
    [0x53, 0x1D], [b"\x0d", b"\x10", b"\x06", b"\x07", b"\x05\x04", b"\x04\x00"], max_len=7))
def test_capture_decoder_never_raises(recs):
    i2c.check_capture_docs(
        codec.decode_capture(recs),
        ("write", "read", "part_id", "status", "measurement", "probe", "rejected"))


def test_cli_frames_ltr390(capsys, tmp_path):
    path = tmp_path / "capture.txt"
    path.write_text(example_capture(SPEC))
    assert cli(["frames", "ltr390", str(path)]) == 0
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["uvi"] for d in docs if "uvi" in d] == [5.2]
    assert "20 transfers:" in err and " 0 rejected" in err


def test_bus_capture_is_decodable():
    got, docs = i2c.bus_capture(rig(), codec.decode_capture, 3)
    assert not [d for d in docs if d["type"] == "rejected"]
    lux = [d["lux"] for d in docs if "lux" in d]
    uvi = [d["uvi"] for d in docs if "uvi" in d]
    assert lux == [round(r.values["lux"], 3) for r in got]
    assert uvi == [round(r.values["uvi"], 4) for r in got]


# -- the chip model --------------------------------------------------------------------------
def wr(m: LTR390Model, now: float, reg: int, *vals: int) -> None:
    m.transfer([("w", bytes([reg, *vals]))], now)


def rd(m: LTR390Model, now: float, reg: int, n: int = 1) -> bytes:
    return m.transfer([("w", bytes([reg])), ("r", n)], now)[0]


def test_model_power_up_registers():
    m = LTR390Model((100.0, 1.0))
    assert rd(m, 0.0, 0x00, 8) == bytes([0x00, 0, 0, 0, 0x22, 0x01, 0xB2, 0x20])
    assert rd(m, 0.0, 0x07) == b"\x00"  # power-on flag cleared by the first read
    assert rd(m, 0.0, 0x21, 6) == b"\xff\xff\x0f\x00\x00\x00"
    assert m.mode is None
    wr(m, 0.0, 0x06, 0x12)  # read-only
    wr(m, 0.0, 0x05, 0xFF)  # reserved bits read 0
    assert rd(m, 0.0, 0x05, 2) == b"\x07\xb2" and m.stats["ignored_writes"] == 1
    m.transfer([("w", b"")], 0.0)  # an address probe is acknowledged


def test_model_measures_one_mode_with_its_settings():
    m = LTR390Model((1000.0, 3.0))
    assert rd(m, 0.0, 0x07) == b"\x20"  # the power-on flag, cleared by this read
    wr(m, 0.0, 0x04, 0x22)
    wr(m, 0.0, 0x05, 0x01)  # gain 3
    wr(m, 0.0, 0x00, 0x02)  # ALS
    assert m.mode == "als"
    assert rd(m, 0.0999, 0x07) == b"\x00" and rd(m, 0.0999, 0x0D, 3) == b"\x00\x00\x00"
    assert rd(m, 0.1, 0x07) == b"\x08"  # new data after the 100 ms integration
    assert rd(m, 0.1, 0x07) == b"\x00"  # ... cleared by reading the status
    assert codec.decode_count(rd(m, 0.1, 0x0D, 3)) == 5000  # 1000 x 3 x 1 / 0.6
    assert rd(m, 0.19, 0x07) == b"\x00" and rd(m, 0.2, 0x07) == b"\x08"  # every 100 ms
    wr(m, 0.25, 0x00, 0x0A)  # UVS: starts over, clears new data
    assert rd(m, 0.3, 0x07) == b"\x00" and m.mode == "uvs"
    assert rd(m, 0.35, 0x07) == b"\x08"
    assert codec.decode_count(rd(m, 0.35, 0x10, 3)) == 288  # 3 UVI x 95.83 = 287.5
    assert [(x.mode, x.gain, x.bits) for x in m.measured] == [("als", 3, 18)] * 2 + [
        ("uvs", 3, 18)]
    assert m.measured[-1].truth == Light(1000.0, 3.0)
    wr(m, 0.4, 0x00, 0x00)  # standby: nothing more
    assert rd(m, 2.0, 0x07) == b"\x00" and m.mode is None


def test_model_rate_resolution_and_saturation():
    m = LTR390Model((200_000.0, 0.0))
    rd(m, 0.0, 0x07)
    wr(m, 0.0, 0x04, 0x04)  # 20 bits, 500 ms rate
    wr(m, 0.0, 0x05, 0x04)  # gain 18
    wr(m, 0.0, 0x00, 0x02)
    assert rd(m, 0.4, 0x0D, 3) == b"\xff\xff\x0f"  # saturated at the 20-bit full scale
    assert len(m.measured) == 1 and rd(m, 0.89, 0x07) == b"\x08"
    rd(m, 0.9, 0x07)
    assert len(m.measured) == 2  # 0.4 + 0.5: the rate, longer than the integration
    wr(m, 1.0, 0x04, 0x50)  # 13 bits, 25 ms rate, 12.5 ms integration
    assert rd(m, 1.0125, 0x0D, 3) == b"\xff\x1f\x00"  # 8191
    wr(m, 2.0, 0x04, 0x70)  # a reserved resolution: nothing measured
    assert m.mode is None


def test_model_software_reset_and_power_cycle():
    m = LTR390Model((10.0, 0.0))
    wr(m, 0.0, 0x05, 0x04)
    wr(m, 0.0, 0x00, 0x02)
    rd(m, 0.0, 0x07)
    wr(m, 0.5, 0x00, 0x10)  # software reset
    assert rd(m, 0.5, 0x00, 8) == bytes([0x00, 0, 0, 0, 0x22, 0x01, 0xB2, 0x20])
    assert m.mode is None
    wr(m, 1.0, 0x00, 0x02)
    m.power_cycle(1.05)
    assert rd(m, 1.2, 0x07) == b"\x20" and m.mode is None


def test_daylight_drives_both_channels():
    day = Daylight(seed=4, start_hour=12, day_of_year=172, cloudiness=0.0, noise=0.0)
    noon = day(0.0)
    assert 100_000 < noon.lux < 130_000 and 10 < noon.uvi < 12.5
    m = LTR390Model(day)
    wr(m, 0.0, 0x04, 0x04)
    wr(m, 0.0, 0x05, 0x04)
    wr(m, 0.0, 0x00, 0x0A)
    uvs = codec.decode_count(rd(m, 0.4, 0x10, 3))
    assert codec.uvs_to_uvi(uvs, 18, 20) == pytest.approx(m.measured[-1].truth.uvi, abs=1e-3)


# -- the driver over the fake bus --------------------------------------------------------------
def test_open_sequence_and_one_reading():
    rg = rig(LTR390Model((30_000.0, 5.2)))
    log = rg.bus.start_log()
    rg.dev.open()
    assert rg.dev.part_id == 0xB2
    rg.clock.sleeps.clear()
    (r,) = readings(rg.dev, 1)
    assert "\n".join(log) == example_capture(SPEC).strip()  # the README's example, byte for byte
    assert r.values == {"lux": 30_000.0, "uvi": 5.2} and not r.fault
    assert rg.clock.sleeps == [pytest.approx(0.105), pytest.approx(0.405)]
    assert rg.model.mode is None  # standby between readings
    assert rg.dev.stats() == {"readings": 1, "nacks": 0, "bus_errors": 0, "bad_data": 0,
                              "saturated": 0, "not_ready": 0, "resets": 0, "bad_frames": 0}


def test_settings_window_factor_and_one_quantity():
    rg = rig(LTR390Model((500.0, 2.0)), als_gain=18, als_resolution=20, window_factor=2.0,
             quantities=("lux",))
    log = rg.bus.start_log()
    rg.dev.open()
    (r,) = readings(rg.dev, 1)
    assert log[4:8] == ["53 W 00 00", "53 W 04 04", "53 W 05 04", "53 W 00 02"]
    assert "53 W 00 0a" not in log  # UVS is never switched on
    assert r.values == {"lux": pytest.approx(1000.0, abs=0.01)}  # wfac 2
    assert rg.model.measured[-1].count == 60_000  # 500 x 18 x 4 / 0.6


def test_uvi_only():
    rg = rig(LTR390Model((500.0, 7.0)), quantities=("uvi",))
    rg.dev.open()
    (r,) = readings(rg.dev, 1)
    assert r.values == {"uvi": pytest.approx(7.0, abs=1e-3)}
    assert {x.mode for x in rg.model.measured} == {"uvs"}


def test_saturated_reading_is_a_fault():
    rg = rig(LTR390Model((200_000.0, 1.0)))
    rg.dev.open()
    (r,) = readings(rg.dev, 1)
    assert r.fault and r.values["lux"] == pytest.approx(157285.8, abs=0.01)
    assert rg.dev.stats()["saturated"] == 1 and rg.dev.last.saturated == ("als",)


class SlowChip(LTR390Model):
    """An LTR390 whose integration takes ``factor`` times as long as the datasheet's."""

    def __init__(self, *a, factor: float = 1.0, **kw) -> None:
        super().__init__(*a, **kw)
        self.factor = factor

    def _start(self, now: float) -> None:
        super()._start(now)
        if self._cycle is not None:
            start, mode, gain, bits, period = self._cycle
            extra = codec.integration_s(bits) * (self.factor - 1)
            self._cycle = (start + extra, mode, gain, bits, period)


def test_waits_for_a_slow_chip_then_gives_up():
    rg = rig(SlowChip((100.0, 1.0), factor=1.5))
    rg.dev.open()
    (r,) = readings(rg.dev, 1)
    assert r.values["lux"] == pytest.approx(100.0, abs=0.6)
    rg2 = rig(SlowChip((100.0, 1.0), factor=5.0))
    rg2.dev.open()
    with pytest.raises(DeviceError, match="no ALS data") as exc:
        rg2.dev.poll()
    assert not isinstance(exc.value, DeviceGone) and rg2.dev.stats()["not_ready"] == 1


def test_power_up_during_a_reading_is_noticed():
    rg = rig(LTR390Model((100.0, 1.0)))
    rg.dev.open()
    readings(rg.dev, 1)
    rg.model.power_cycle(rg.clock.t)
    with pytest.raises(DeviceError, match="power-up"):
        while not rg.dev.poll():
            pass
    assert rg.dev.stats()["resets"] == 1
    assert readings(rg.dev, 1)[0].values["lux"] == pytest.approx(100.0, abs=0.6)


class CorruptData(LTR390Model):
    """An LTR390 whose ALS data read with bits above the 20th set (a noisy bus)."""

    def _read(self, reg: int, now: float) -> int:
        val = super()._read(reg, now)
        return val | 0x30 if reg == codec.REG_ALS_DATA + 2 else val


def test_corrupt_data_is_bad_data():
    rg = rig(CorruptData((100.0, 1.0)))
    rg.dev.open()
    with pytest.raises(DeviceError, match="above the 20th") as exc:
        while not rg.dev.poll():
            pass
    assert not isinstance(exc.value, DeviceGone)
    assert rg.dev.stats()["bad_data"] == rg.dev.stats()["bad_frames"] == 1


def test_wrong_chip_at_0x53():
    from drivers.adxl345.emulator import ADXL345Model

    rg = attach(LTR390, ADDR, ADXL345Model())
    with pytest.raises(WrongChip, match="ADXL345"):
        rg.dev.open()


def test_identify_tells_it_from_an_adxl345():
    from drivers.adxl345.emulator import ADXL345Model
    from drivers.adxl345.spec import SPEC as ADXL

    sleep = lambda s: None  # noqa: E731
    ltr = FakeBus({ADDR: LTR390Model((1.0, 0.0))})
    adxl = FakeBus({ADDR: ADXL345Model()})
    assert SPEC.identify(ltr, ADDR, sleep).chip == "LTR390"
    assert "PART_ID 0xb2" in SPEC.identify(ltr, ADDR, sleep).evidence
    assert ADXL.identify(ltr, ADDR, sleep).chip is None
    assert SPEC.identify(adxl, ADDR, sleep).chip is None
    assert ADXL.identify(adxl, ADDR, sleep).chip == "ADXL345"
    assert SPEC.identify(FakeBus(), ADDR, sleep) is None


def test_repeated_nacks_then_gone_then_recovery():
    rg = rig()
    i2c.nacks_then_gone_then_back(rg, ADDR)
    (r,) = readings(rg.dev, 1)
    als, uvs = [x for x in rg.model.measured][-2:]
    assert r.values["lux"] == codec.als_to_lux(als.count, 1, 18)
    assert r.values["uvi"] == codec.uvs_to_uvi(uvs.count, 18, 20)


def test_a_failed_measurement_between_good_ones_is_an_error_not_gone():
    rg = rig()
    rg.dev.open()
    for _ in range(4):
        rg.bus.fault(ADDR, nack=1.0)
        with pytest.raises(DeviceError) as exc:
            while not rg.dev.poll():
                pass
        assert not isinstance(exc.value, DeviceGone)
        rg.bus.fault(ADDR, nack=0.0)
        assert len(readings(rg.dev, 1)) == 1
    assert rg.dev.stats()["nacks"] == 4


def test_bad_arguments_and_missing_bus():
    with pytest.raises(DeviceGone):
        LTR390(1).poll()
    with pytest.raises(ValueError, match="0x53"):
        LTR390(1, address=0x1D)
    with pytest.raises(ValueError, match="gain"):
        LTR390(1, als_gain=2)
    with pytest.raises(ValueError, match="resolution"):
        LTR390(1, uvs_resolution=14)
    with pytest.raises(ValueError, match="window_factor"):
        LTR390(1, window_factor=0.5)
    with pytest.raises(ValueError):
        LTR390(1, quantities=("temp",))
    i2c.missing_bus_is_gone(LTR390)


def test_agent_builds_it_on_the_emulated_bus():
    with agent_built("ltr390", "sky", ADDR) as dev:
        (r,) = dev.poll()
        assert 0 <= r.values["lux"] < 160_000 and 0 <= r.values["uvi"] < 13
