"""BH1750: datasheet vectors, the chip model, the driver over the fake I2C bus, captures."""

from __future__ import annotations

import json

import i2c_helpers as i2c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock, agent_built, attach, readings

from agent.tools.cli import main as cli
from drivers import catalogue
from drivers.base import DeviceError, DeviceGone
from drivers.bh1750 import BH1750, codec
from drivers.bh1750.emulator import BH1750Model
from drivers.emulation.i2c import FakeBus, Nack, parse_capture
from drivers.emulation.light import Daylight, Light
from drivers.readme import example_capture

ADDR = 0x23
SPEC = catalogue.get("bh1750")  # its folder set: the README's example capture
mtregs = st.integers(codec.MTREG_MIN, codec.MTREG_MAX)
resolutions = st.sampled_from(["high", "high2", "low"])


def rig(model: BH1750Model | None = None, **kw):
    return attach(BH1750, ADDR, model or BH1750Model(Daylight(seed=3, start_hour=10)), **kw)


def ops(*codes: int) -> list[str]:
    return [f"23 W {c:02x}" for c in codes]


# -- datasheet vectors ------------------------------------------------------------------------
def test_datasheet_example_and_modes():
    # Datasheet: high byte 1000_0011, low byte 1001_0000 -> (2^15+2^9+2^8+2^7+2^4) / 1.2
    m = codec.decode_measurement(bytes([0b1000_0011, 0b1001_0000]))
    assert m.raw == 33680 and m.lux == pytest.approx(28066.67, abs=0.01)
    assert m.mtreg == 69 and not m.saturated
    assert codec.raw_to_lux(33680, 69, "high2") == pytest.approx(28066.67 / 2, abs=0.01)
    assert codec.raw_to_lux(1, 254, "high2") == pytest.approx(0.1132, abs=1e-4)  # 0.11 lx
    assert codec.full_scale_lux(31) == pytest.approx(121556.9, abs=0.1)
    assert codec.full_scale_lux(69) == pytest.approx(54612.5, abs=0.1)
    assert codec.full_scale_lux(254, "high2") == pytest.approx(7417.8, abs=0.1)
    assert codec.decode_measurement(b"\xff\xff").saturated
    with pytest.raises(ValueError, match="2 bytes"):
        codec.decode_measurement(b"\x01")


def test_mtreg_opcodes():
    assert codec.mtreg_opcodes(69) == (0x42, 0x65)  # 0b01000_010, 0b011_00101
    assert codec.mtreg_opcodes(31) == (0x40, 0x7F)
    assert codec.mtreg_opcodes(254) == (0x47, 0x7E)
    for bad in (30, 255, 0):
        with pytest.raises(ValueError, match=r"31\.\.254"):
            codec.mtreg_opcodes(bad)
    with pytest.raises(ValueError):
        codec.apply_mtreg_opcode(69, 0x20)


def test_opcodes_and_times():
    assert codec.mode_opcode("high", False) == 0x20 and codec.mode_opcode("high2", False) == 0x21
    assert codec.mode_opcode("high", True) == 0x10 and codec.mode_opcode("low", True) == 0x13
    with pytest.raises(ValueError):
        codec.mode_opcode("max", False)  # type: ignore[arg-type]
    assert codec.measurement_time_s("high") == pytest.approx(0.180)
    assert codec.measurement_time_s("high", typical=True) == pytest.approx(0.120)
    assert codec.measurement_time_s("low") == pytest.approx(0.024)
    assert codec.measurement_time_s("high", 254) == pytest.approx(0.6626, abs=1e-4)
    assert codec.measurement_time_s("high2", 31) == pytest.approx(0.0809, abs=1e-4)


@given(st.integers(0, 0xFFFF), mtregs, resolutions)
def test_emulator_encoding_round_trips_through_the_codec(raw, mtreg, resolution):
    lux = codec.raw_to_lux(raw, mtreg, resolution)
    assert codec.lux_to_raw(lux, mtreg, resolution) == raw
    m = codec.decode_measurement(codec.encode_raw(raw), mtreg, resolution)
    assert m.raw == raw and m.lux == lux


@given(st.integers(0, 0xFFFE), mtregs, mtregs, resolutions)
def test_conversion_is_monotone(raw, mt1, mt2, resolution):
    assert codec.raw_to_lux(raw + 1, mt1, resolution) > codec.raw_to_lux(raw, mt1, resolution)
    lo, hi = sorted((mt1, mt2))
    if raw:  # more measurement time: more counts for the same light
        assert codec.raw_to_lux(raw, hi, resolution) <= codec.raw_to_lux(raw, lo, resolution)
    assert codec.raw_to_lux(raw, mt1, "high2") == codec.raw_to_lux(raw, mt1, "high") / 2


@given(st.integers(0, 255), st.integers(0, 255))
def test_mtreg_halves_round_trip(start, mtreg):
    if codec.MTREG_MIN <= mtreg <= codec.MTREG_MAX:
        hi, lo = codec.mtreg_opcodes(mtreg)
        assert codec.is_mtreg_opcode(hi) and codec.is_mtreg_opcode(lo)
        assert codec.apply_mtreg_opcode(codec.apply_mtreg_opcode(start, hi), lo) == mtreg
    assert not any(codec.is_mtreg_opcode(op) for op in codec.OPCODE_NAMES)


@given(st.integers(0, 0xFFFF), mtregs)
def test_auto_mtreg_stays_in_range_and_aims_at_the_band(raw, mtreg):
    nxt = codec.auto_mtreg(raw, mtreg)
    assert codec.MTREG_MIN <= nxt <= codec.MTREG_MAX
    if codec.AUTO_LOW <= raw <= codec.AUTO_HIGH:
        assert nxt == mtreg
    elif raw == codec.SATURATED:
        assert nxt == codec.MTREG_MIN
    elif codec.MTREG_MIN < nxt < codec.MTREG_MAX:  # not clamped: the count lands in the band
        assert codec.AUTO_LOW <= raw * nxt / mtreg <= codec.AUTO_HIGH


# -- captures --------------------------------------------------------------------------------
def test_readme_capture_decodes():
    docs = list(codec.decode_capture(parse_capture(example_capture(SPEC).splitlines())))
    assert {d["type"] for d in docs} == {"command", "measurement"}
    meas = [d for d in docs if d["type"] == "measurement"]
    assert [(m["raw"], m["mtreg"], m["lux"]) for m in meas] == [(15, 69, 12.5), (55, 254, 12.45)]
    assert "note" not in meas[0]


def test_capture_decoding_edge_cases():
    cap = parse_capture("""
        23 W
        23 R 12 34            # before any mode or MTreg
        23 W 11
        23 R 12 34
        23 W 42 65
        23 W 05
        23 W NACK
        23 R NACK
        23 R 12
        23 W 40
        5c W 23
        5c R 00 64
        44 W 24 00
    """.splitlines())
    docs = list(codec.decode_capture(cap))
    kinds = [d["type"] for d in docs]
    assert kinds == ["probe", "measurement", "command", "measurement", "rejected", "rejected",
                     "rejected", "rejected", "rejected", "command", "command", "measurement",
                     "rejected"]
    assert "assumed H-resolution" in docs[1]["note"] and "assumed 69" in docs[1]["note"]
    assert docs[1]["lux"] == pytest.approx(0x1234 / 1.2, abs=0.01)
    assert docs[3]["resolution"] == "high2" and docs[3]["lux"] == pytest.approx(
        0x1234 / 2.4, abs=0.01)
    assert "one-byte opcodes" in docs[4]["reason"]
    assert "unknown opcode 0x05" in docs[5]["reason"]
    assert "NACKed" in docs[6]["reason"] and "NACKed" in docs[7]["reason"]
    assert "1 bytes" in docs[8]["reason"]
    assert docs[9]["mtreg"] == 5 and "outside" in docs[9]["note"]  # 000_00101
    assert docs[10]["name"] == "one-time L-resolution" and docs[10]["addr"] == "0x5c"
    assert docs[11]["lux"] == pytest.approx(100 / 1.2, abs=0.01)
    assert "0x44 (1)" in docs[12]["reason"]


@settings(max_examples=300)
@given(i2c.capture_records([0x23, 0x5C, 0x44],
                           [b"\x20", b"\x10", b"\x47", b"\x7e", b"\x07", b"\x21"], max_len=4))
def test_capture_decoder_never_raises(recs):
    i2c.check_capture_docs(codec.decode_capture(recs),
                           ("command", "measurement", "probe", "rejected"))


def test_cli_frames_bh1750(capsys, tmp_path):
    path = tmp_path / "capture.txt"
    path.write_text(example_capture(SPEC))
    assert cli(["frames", "bh1750", str(path)]) == 0
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[-1]["type"] == "measurement" and docs[-1]["lux"] == 12.45
    assert "11 transfers: 11 decoded, 0 rejected" in err
    assert cli(["frames", "gy-30", "--hex", "23 R 83 90"]) == 0
    assert json.loads(capsys.readouterr().out)["lux"] == 28066.67


def test_bus_capture_is_decodable():
    got, docs = i2c.bus_capture(rig(mode="continuous"), codec.decode_capture, 3)
    meas = [d for d in docs if d["type"] == "measurement"]
    assert [m["lux"] for m in meas] == [round(r.values["lux"], 2) for r in got]
    assert not [d for d in docs if d["type"] == "rejected"]


# -- the chip model --------------------------------------------------------------------------
def w(model: BH1750Model, now: float, *codes: int) -> None:
    for c in codes:
        model.transfer([("w", bytes([c]))], now)


def r(model: BH1750Model, now: float) -> int:
    return int.from_bytes(model.transfer([("r", 2)], now)[0], "big")


def test_model_power_up_and_one_time_measurement():
    m = BH1750Model(100.0)
    assert not m.powered and m.mtreg == 69 and r(m, 0.0) == 0
    w(m, 0.0, codec.ONE_H)
    assert m.powered
    assert r(m, 0.119) == 0  # still measuring: the previous result, no NACK
    assert r(m, 0.120) == 120  # 100 lx x 1.2
    assert not m.powered and m.mode is None  # one-time: powered down after
    assert r(m, 5.0) == 120  # the result stays
    assert m.stats["measurements"] == 1 and m.measured[-1].truth == Light(100.0)
    assert m.transfer([("r", 3)], 5.0) == [b"\x00\x78\xff"]
    m.transfer([("w", b"")], 5.0)  # an address probe is acknowledged


def test_model_reset_only_when_powered_and_power_down():
    m = BH1750Model(100.0)
    w(m, 0.0, codec.ONE_H)
    assert r(m, 0.2) == 120
    w(m, 0.3, codec.RESET)  # powered down: refused
    assert r(m, 0.3) == 120 and m.stats["ignored"] == 1
    w(m, 0.3, codec.POWER_ON, codec.RESET)
    assert r(m, 0.3) == 0
    w(m, 0.4, codec.CONT_H)
    w(m, 0.45, codec.POWER_DOWN)  # stops the measurement under way
    assert r(m, 1.0) == 0 and m.mode is None


def test_model_continuous_mtreg_and_resolutions():
    level = {"lux": 50.0}
    m = BH1750Model(lambda now: level["lux"])
    w(m, 0.0, codec.CONT_H2)
    assert r(m, 0.12) == 120  # 50 lx x 1.2 x 2
    level["lux"] = 60.0
    assert r(m, 0.2) == 120 and r(m, 0.24) == 144  # the next one, back to back
    w(m, 0.25, *codec.mtreg_opcodes(138))  # restarts with twice the time and counts
    assert m.mtreg == 138
    assert r(m, 0.25 + 0.239) == 144 and r(m, 0.25 + 0.24) == 288
    w(m, 1.0, codec.ONE_L)  # L-resolution at MTreg 138: 32 ms, 4-count steps
    level["lux"] = 61.0
    assert r(m, 1.0 + 0.0319) == 288
    assert r(m, 1.0 + 0.032) == 144  # round(61 x 1.2 x 2) = 146 -> 144
    assert m.measured[-1].resolution == "low" and m.measured[-1].mtreg == 138


def test_model_saturates_and_ignores_junk():
    m = BH1750Model(200_000.0)
    w(m, 0.0, codec.ONE_H)
    assert r(m, 1.0) == 0xFFFF
    m.transfer([("w", b"\x20\x21")], 1.0)
    w(m, 1.0, 0x55)
    assert m.stats["ignored"] == 2 and m.mode is None


def test_model_power_cycle():
    m = BH1750Model(100.0)
    w(m, 0.0, *codec.mtreg_opcodes(200), codec.CONT_H)
    m.power_cycle(1.0)
    assert m.mtreg == 69 and not m.powered and r(m, 1.5) == 0


def test_daylight_is_plausible_and_seeded():
    a = Daylight(seed=7, start_hour=0, day_of_year=172)  # midsummer in Seoul
    b = Daylight(seed=7, start_hour=0, day_of_year=172)
    day = [a(t * 600.0) for t in range(145)]
    assert day == [b(t * 600.0) for t in range(145)]
    lux = [x.lux for x in day]
    assert max(lux) > 20_000 and min(lux) < 30
    assert 9 <= lux.index(max(lux)) / 6 <= 15  # the brightest near noon
    assert all(x.uvi == 0 for x in day[:24])  # midnight to 4 am: dark, street lights on
    assert all(10 <= x.lux <= 20 for x in day[:24])
    assert 4 < max(x.uvi for x in day) < 12.5
    winter = Daylight(seed=7, start_hour=12, day_of_year=355, cloudiness=0.0, noise=0.0)
    assert winter(0).uvi < 3 < Daylight(seed=7, start_hour=12, day_of_year=172,
                                        cloudiness=0.0, noise=0.0)(0).uvi
    with pytest.raises(ValueError):
        Daylight(cloudiness=2)


# -- the driver over the fake bus --------------------------------------------------------------
def test_open_sequence_and_one_time_reading():
    rg = rig(BH1750Model(400.0), mtreg=69)
    log = rg.bus.start_log()
    rg.dev.open()
    assert log == ops(0x01, 0x07, 0x42, 0x65, 0x00)
    rg.clock.sleeps.clear()
    (rd,) = rg.dev.poll()
    assert log[5:] == [*ops(0x20), "23 R 01 e0"]  # 480 counts
    assert rd.values == {"lux": 400.0} and not rd.fault
    assert rg.clock.sleeps == [pytest.approx(0.185)]  # 180 ms maximum + 5 ms
    assert not rg.model.powered  # one-time: the chip sleeps between readings
    assert rg.dev.stats() == {"readings": 1, "nacks": 0, "bus_errors": 0, "saturated": 0,
                              "mtreg_changes": 0, "bad_frames": 0}


def test_fixed_mtreg_and_mode2():
    rg = rig(BH1750Model(100.0), mtreg=138, resolution="high2")
    log = rg.bus.start_log()
    rg.dev.open()
    assert log[2:4] == ops(0x44, 0x6A)  # 138 = 0b100_01010
    rg.clock.sleeps.clear()
    (rd,) = rg.dev.poll()
    assert log[5] == "23 W 21" and rd.values["lux"] == 100.0
    assert rg.model.measured[-1].raw == 480  # 100 x 1.2 x 2 x 2
    assert rg.clock.sleeps == [pytest.approx(0.365)]
    assert len(readings(rg.dev, 3)) == 3 and rg.model.mtreg == 138  # never changed


def test_auto_mtreg_at_night_and_in_the_sun():
    level = {"lux": 12.5}
    rg = rig(BH1750Model(lambda now: level["lux"]))
    log = rg.bus.start_log()
    rg.dev.open()
    first, second = readings(rg.dev, 2)
    assert "\n".join(log) == example_capture(SPEC).strip()  # the README's example, byte for byte
    assert first.values["lux"] == 12.5 and second.values["lux"] == pytest.approx(12.45, 0.01)
    assert rg.dev.mtreg == 254 and rg.dev.stats()["mtreg_changes"] == 1
    rg.clock.sleeps.clear()
    level["lux"] = 40_000.0  # the sun comes out: 65535 at MTreg 254, measured again at 31
    log.clear()
    (rd,) = readings(rg.dev, 1)
    assert log == [*ops(0x20), "23 R ff ff", *ops(0x40, 0x7f, 0x20), "23 R 54 3d"]
    assert rd.values["lux"] == pytest.approx(40_000, abs=2) and not rd.fault
    assert rg.clock.sleeps[-2:] == [pytest.approx(0.18 * 254 / 69 + 0.005),
                                    pytest.approx(0.18 * 31 / 69 + 0.005)]
    assert rg.dev.mtreg == 31 and rg.dev.stats()["saturated"] == 0


def test_saturated_reading_is_a_fault():
    rg = rig(BH1750Model(80_000.0), mtreg=69)
    rg.dev.open()
    (rd,) = readings(rg.dev, 1)
    assert rd.fault and rd.values["lux"] == pytest.approx(54612.5, abs=0.1)
    assert rg.dev.stats()["saturated"] == 1
    rg2 = rig(BH1750Model(200_000.0))  # beyond even MTreg 31
    rg2.dev.open()
    (rd2,) = readings(rg2.dev, 1)
    assert rd2.fault and rd2.values["lux"] == pytest.approx(121556.9, abs=0.1)


def test_continuous_mode():
    rg = rig(BH1750Model(300.0), mode="continuous", mtreg=69)
    log = rg.bus.start_log()
    rg.dev.open()
    assert log == ops(0x01, 0x07, 0x42, 0x65, 0x10)
    rg.clock.sleeps.clear()
    rd = readings(rg.dev, 3)
    assert [x.values["lux"] for x in rd] == [300.0] * 3
    assert log[5:] == ["23 R 01 68"] * 3  # no more opcodes: the chip keeps measuring
    assert rg.clock.sleeps[0] == pytest.approx(0.185)  # the first result after opening
    assert rg.model.powered


def test_continuous_auto_mtreg_restarts_the_mode():
    rg = rig(BH1750Model(5.0), mode="continuous")
    log = rg.bus.start_log()
    rg.dev.open()
    readings(rg.dev, 1)
    log.clear()
    rg.clock.sleeps.clear()
    (rd,) = readings(rg.dev, 1)
    assert log[:3] == ops(0x47, 0x7e, 0x10)
    assert rd.values["lux"] == pytest.approx(5.0, abs=0.12)
    assert rg.clock.sleeps[-1] == pytest.approx(0.18 * 254 / 69 + 0.005)


class FlakyReads:
    """A chip whose first ``n`` reads are NACKed (a glitch on a long cable)."""

    def __init__(self, model: BH1750Model, n: int) -> None:
        self.model, self.n = model, n

    def transfer(self, parts, now):
        if any(kind == "r" for kind, _ in parts) and self.n > 0:
            self.n -= 1
            raise Nack()
        return self.model.transfer(parts, now)


def test_a_nacked_read_is_read_again():
    rg = attach(BH1750, ADDR, FlakyReads(BH1750Model(100.0), 1), mtreg=69)
    rg.dev.open()
    (rd,) = readings(rg.dev, 1)
    assert rd.values["lux"] == 100.0 and rg.dev.stats()["nacks"] == 1
    rg.model.n = 2  # twice: the measurement is given up, the next poll tries again
    with pytest.raises(DeviceError, match="measurement") as exc:
        while not rg.dev.poll():
            pass
    assert not isinstance(exc.value, DeviceGone)
    assert readings(rg.dev, 1)[0].values["lux"] == 100.0


def test_repeated_nacks_then_gone_then_recovery():
    rg = rig()
    i2c.nacks_then_gone_then_back(rg, ADDR)
    assert readings(rg.dev, 2)[1].values["lux"] == pytest.approx(
        codec.raw_to_lux(rg.model.measured[-1].raw, rg.model.measured[-1].mtreg), abs=1e-9)


def test_bad_arguments_and_missing_bus():
    with pytest.raises(DeviceGone):
        BH1750(1).poll()
    with pytest.raises(ValueError, match="0x5C"):
        BH1750(1, address=0x24)
    with pytest.raises(ValueError, match=r"31\.\.254"):
        BH1750(1, mtreg=300)
    with pytest.raises(ValueError, match="mode"):
        BH1750(1, mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution"):
        BH1750(1, resolution="ultra")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BH1750(1, quantities=("uvi",))
    i2c.missing_bus_is_gone(BH1750)


def test_fake_bus_with_daylight_follows_the_sun():
    clock = Clock()
    model = BH1750Model(Daylight(seed=2, start_hour=4.0, day_of_year=172, speed=3600))
    bus = FakeBus({ADDR: model}, clock=clock, sleep=clock.sleep)
    dev = BH1750(bus, read_interval_s=1.0, clock=clock, wall_clock=clock, sleep=clock.sleep)
    dev.open()
    got = readings(dev, 8)  # 04:00 ... 11:00 solar time, one reading an (emulated) hour
    lux = [x.values["lux"] for x in got]
    assert lux[0] < 30 < 1000 < lux[-1]
    used = [m for m in model.measured if m.raw < codec.SATURATED][-8:]  # not the re-measured
    for x, m in zip(got, used, strict=True):
        step = codec.raw_to_lux(1, m.mtreg)  # within half a count of the light's truth
        assert abs(x.values["lux"] - m.truth.lux) <= step / 2 + 1e-9


def test_agent_builds_it_on_the_emulated_bus():
    with agent_built("bh1750", "light", 0x5C) as dev:
        (rd,) = dev.poll()
        assert 0 <= rd.values["lux"] < 130_000
        assert dev.address == 0x5C and dev.auto
