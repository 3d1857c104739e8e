"""SGP30: datasheet vectors, the chip model, the driver over the fake I2C bus (warm-up,
baseline kept across restarts, humidity compensation, errors), config, captures."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock, poll_until_gone, readings

from agent.core import config
from agent.core.sensors import build_device, latest_values
from agent.tools.cli import main as cli
from drivers import registry
from drivers.base import DeviceError, DeviceGone
from drivers.emulation.i2c import FakeBus, Nack, parse_capture
from drivers.sensirion import CRCError, crc8
from drivers.sgp30 import SGP30, Baseline, codec
from drivers.sgp30 import emulator as emu
from drivers.sgp30.emulator import GasSample, SGP30Model, SmokeReplay
from drivers.sgp30.spec import SGP30Config
from drivers.spec import CaptureCodec

ADDR = 0x58
WALL0 = 1_750_000_000.0
AIR = GasSample(eco2=612, tvoc=187, h2=12890, ethanol=19560)
LEARNED = Baseline(eco2=0x8973, tvoc=0x8AAE)


def constant(sample: GasSample = AIR):
    return lambda now: sample


def rig(model: SGP30Model | None = None, *, clock: Clock | None = None, wall_offset=WALL0,
        **kw):
    """An SGP30 driver on a fake bus with the chip model, a fake monotonic clock and a wall
    clock ``wall_offset`` ahead of it."""
    clock = clock or Clock()
    model = model or SGP30Model(constant())
    bus = FakeBus({ADDR: model}, clock=clock, sleep=clock.sleep, seed=0)
    dev = SGP30(bus, clock=clock, wall_clock=lambda: wall_offset + clock.t, sleep=clock.sleep,
                **kw)
    return SimpleNamespace(clock=clock, model=model, bus=bus, dev=dev)


def one_second(rg, n: int = 1) -> None:
    """Poll for ``n`` seconds of the fake clock (one measurement a second)."""
    end = rg.clock.t + n
    while rg.clock.t < end:
        rg.dev.poll()


def past_warmup(rg) -> None:
    """Poll through the 15 s warm-up (its readings are discarded)."""
    while rg.dev.warming_up:
        assert rg.dev.poll() == []


# -- datasheet vectors and the codec -----------------------------------------------------------
@pytest.mark.parametrize(("word", "crc"), [(0xBEEF, 0x92), (0x0190, 0x4C), (0x0000, 0x81),
                                           (0xD400, 0xC6), (0x1234, 0x37), (0xFFFF, 0xAC),
                                           (0x8000, 0xA2)])
def test_crc_vectors(word, crc):
    assert crc8(word.to_bytes(2, "big")) == crc


def test_command_encoding():
    assert codec.command(codec.IAQ_INIT) == b"\x20\x03"
    assert codec.command(codec.MEASURE_IAQ) == b"\x20\x08"
    assert codec.command(codec.GET_SERIAL_ID) == b"\x36\x82"
    # set_iaq_baseline takes TVOC first, then eCO2: the reverse of get_iaq_baseline's reply
    wire = codec.set_iaq_baseline(LEARNED)
    assert wire == bytes([0x20, 0x1E, 0x8A, 0xAE, crc8(b"\x8a\xae"),
                          0x89, 0x73, crc8(b"\x89\x73")])
    assert codec.parse_write(wire) == (codec.SET_IAQ_BASELINE, [0x8AAE, 0x8973])
    assert codec.set_absolute_humidity(0x0F80) == bytes([0x20, 0x61, 0x0F, 0x80,
                                                        crc8(b"\x0f\x80")])
    with pytest.raises(ValueError, match="all-zero"):
        codec.set_iaq_baseline(Baseline(0, 0))
    with pytest.raises(CRCError, match="argument word 0"):
        codec.parse_write(b"\x20\x61\x0f\x80\x00")


def test_reply_decoding():
    aq = codec.decode_air_quality(bytes.fromhex("01904c000081"))  # the warm-up reply
    assert (aq.eco2, aq.tvoc) == (400, 0) and aq.is_warmup_pattern
    b = codec.decode_baseline(codec.encode_words(0x8973, 0x8AAE))
    assert (b.eco2, b.tvoc) == (0x8973, 0x8AAE)  # eCO2 word first
    fs = codec.decode_feature_set(codec.encode_words(0x0022))
    assert (fs.product_type, fs.version, fs.is_sgp30) == (0, 0x22, True)
    assert not codec.FeatureSet(0x1022).is_sgp30  # product type 1 is an SGPC3
    assert not codec.FeatureSet(0x0010).is_sgp30
    assert codec.decode_serial_id(codec.encode_words(0x0000, 0x0D4A, 0x71F2)) == 0x0D4A71F2
    assert codec.decode_test_result(bytes.fromhex("d400c6")) == codec.MEASURE_TEST_OK
    raw = codec.decode_raw_signals(codec.encode_words(13000, 19800))
    assert (raw.h2, raw.ethanol) == (13000, 19800)


def test_bad_crc_is_a_clear_decode_error():
    with pytest.raises(CRCError, match=r"measure_iaq reply: CRC mismatch in word 1") as exc:
        codec.decode_air_quality(bytes.fromhex("01904c000082"))
    assert exc.value.index == 1
    with pytest.raises(CRCError, match="expected 6 bytes"):
        codec.decode_air_quality(bytes.fromhex("01904c"))


def test_absolute_humidity_datasheet_examples():
    # 8.8 fixed point: 0x0F80 is 15.50 g/m3; the chip's default 0x0B92 is 11.57 g/m3
    assert codec.humidity_word(15.5) == 0x0F80
    assert codec.humidity_from_word(0x0F80) == 15.5
    assert codec.humidity_from_word(codec.DEFAULT_HUMIDITY_WORD) == pytest.approx(11.57, abs=0.005)
    assert codec.humidity_word(1 / 256) == 0x0001  # the minimum
    assert codec.humidity_word(255 + 255 / 256) == 0xFFFF  # the maximum
    assert codec.humidity_word(0) == 0  # compensation off
    assert codec.humidity_word(0.0001) == 1  # dry air must not switch compensation off
    # the datasheet's formula against saturation vapour densities (g/m3) from steam tables
    assert codec.absolute_humidity(0, 100) == pytest.approx(4.85, rel=0.01)
    assert codec.absolute_humidity(20, 100) == pytest.approx(17.3, rel=0.01)
    assert codec.absolute_humidity(25, 50) == pytest.approx(23.0 / 2, rel=0.01)
    assert codec.absolute_humidity(30, 100) == pytest.approx(30.4, rel=0.01)
    with pytest.raises(ValueError):
        codec.absolute_humidity(float("nan"), 50)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from([0x58, 0x44]), st.sampled_from(["W", "R"]),
                          st.one_of(st.none(), st.binary(max_size=9),
                                    st.sampled_from([b"\x20\x08", b"\x20\x15", b"\x20\x2f",
                                                     b"\x36\x82", b"\x20\x50"]))),
                max_size=20))
def test_capture_decoder_never_raises(recs):
    for doc in codec.decode_capture(recs):
        json.dumps(doc)
        if doc["type"] == "rejected":
            assert doc["reason"]


# -- the chip model ------------------------------------------------------------------------------
def ask(model: SGP30Model, now: float, code: int, *args: int) -> bytes:
    model.transfer([("w", codec.command(code, *args))], now)
    info = codec.COMMANDS[code]
    if not info.reply:
        return b""
    return model.transfer([("r", 3 * info.reply)], now + info.duration_s)[0]


def test_model_warmup_then_source_values():
    m = SGP30Model(constant())
    ask(m, 0.0, codec.IAQ_INIT)
    for t in (1.0, 8.0, 14.9):
        aq = codec.decode_air_quality(ask(m, t, codec.MEASURE_IAQ))
        assert (aq.eco2, aq.tvoc) == (400, 0)
    aq = codec.decode_air_quality(ask(m, 15.1, codec.MEASURE_IAQ))
    assert (aq.eco2, aq.tvoc) == (612, 187)
    raw = codec.decode_raw_signals(ask(m, 16.0, codec.MEASURE_RAW))
    assert (raw.h2, raw.ethanol) == (12890, 19560)


def test_model_baseline_round_trip_in_wire_order():
    m = SGP30Model(constant())
    ask(m, 0.0, codec.IAQ_INIT)
    assert codec.decode_baseline(ask(m, 0.1, codec.GET_IAQ_BASELINE)) == emu.FRESH_BASELINE
    m.transfer([("w", codec.set_iaq_baseline(LEARNED))], 0.2)
    assert m.baseline == LEARNED and m.baseline_restored
    reply = ask(m, 0.3, codec.GET_IAQ_BASELINE)
    assert reply[:2] == b"\x89\x73" and reply[3:5] == b"\x8a\xae"  # eCO2 word first


def test_model_timing_ids_humidity_and_self_test():
    m = SGP30Model(constant())
    m.transfer([("w", codec.command(codec.MEASURE_IAQ))], 0.0)
    with pytest.raises(Nack):  # read before the 12 ms are up
        m.transfer([("r", 6)], 0.005)
    assert len(m.transfer([("r", 6)], 0.013)[0]) == 6
    with pytest.raises(Nack):  # write and read in one transaction
        m.transfer([("w", b"\x20\x08"), ("r", 6)], 0.1)
    with pytest.raises(Nack):  # bad argument CRC
        m.transfer([("w", b"\x20\x61\x0f\x80\x00")], 0.2)
    assert codec.decode_feature_set(ask(m, 0.3, codec.GET_FEATURE_SET)).word == 0x0022
    assert codec.decode_serial_id(ask(m, 0.4, codec.GET_SERIAL_ID)) == emu.SERIAL_ID
    ask(m, 0.5, codec.SET_ABSOLUTE_HUMIDITY, 0x0F80)
    assert m.humidity_word == 0x0F80 and m.humidity_compensation
    ask(m, 0.6, codec.SET_ABSOLUTE_HUMIDITY, 0)
    assert m.humidity_word == codec.DEFAULT_HUMIDITY_WORD and not m.humidity_compensation
    ask(m, 0.7, codec.IAQ_INIT)
    assert codec.decode_test_result(ask(m, 0.8, codec.MEASURE_TEST)) == 0xD400
    assert m.iaq_started is None  # the self-test stops the IAQ algorithm


# -- the driver -----------------------------------------------------------------------------------
def test_open_sequence_and_warmup_discards_fixed_output():
    rg = rig()
    log = rg.bus.start_log()
    rg.dev.open()
    assert log == ["58 W 20 2f", "58 R 00 22 65", "58 W 36 82",
                   "58 R 00 00 81 0d 4a 27 71 f2 ae", "58 W 20 03"]
    assert rg.dev.serial == "00000d4a71f2" and rg.dev.feature_set.version == 0x22
    assert rg.dev.warming_up
    started = rg.clock.t
    past_warmup(rg)
    assert rg.clock.t - started == pytest.approx(15, abs=1.1)
    warm = [s for s in rg.model.sent if s.warming_up]
    assert len(warm) >= 14 and all(s.words == (400, 0) for s in warm)  # measured at 1 Hz
    assert rg.dev.stats()["warmup_discarded"] == len(warm)
    r1, r2 = readings(rg.dev, 2)
    assert r1.values == {"eco2": 612.0, "tvoc": 187.0, "h2_raw": 12890.0,
                         "ethanol_raw": 19560.0}
    assert r2.t_mono - r1.t_mono == pytest.approx(1.0, abs=0.05)


def test_raw_every_and_quantities_subset():
    rg = rig(quantities=("eco2", "h2_raw"), raw_every=3)
    rg.dev.open()
    past_warmup(rg)
    got = readings(rg.dev, 6)
    assert [set(r.values) for r in got].count({"eco2", "h2_raw"}) == 2
    assert all(set(r.values) in ({"eco2"}, {"eco2", "h2_raw"}) for r in got)
    with pytest.raises(ValueError):
        SGP30(1, quantities=("pm25",))
    with pytest.raises(ValueError, match="0x58"):
        SGP30(1, address=0x59)


def run_until_reliable(rg) -> None:
    """Open, let the chip "learn" LEARNED, and run past the 12 h after a fresh start."""
    rg.dev.open()
    past_warmup(rg)
    rg.model.baseline = LEARNED  # what its algorithm learned meanwhile
    rg.clock.t += 12 * 3600
    readings(rg.dev, 1)


def test_baseline_saved_hourly_and_restored_after_a_restart(tmp_path):
    path = tmp_path / "state" / "sgp30-gas-baseline.json"
    rg = rig(baseline_path=path)
    run_until_reliable(rg)
    assert rg.dev.baseline_reliable and rg.dev.stats()["baseline_saves"] == 1
    saved = json.loads(path.read_text())
    assert (saved["eco2"], saved["tvoc"], saved["serial"]) == (0x8973, 0x8AAE, "00000d4a71f2")
    assert saved["saved_at"] == pytest.approx(WALL0 + rg.clock.t, abs=1)
    rg.dev.close()  # saves again at close
    assert rg.dev.stats()["baseline_saves"] == 2
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over

    # restart: a new driver object (and a power-cycled chip), the same file, 2 h later
    clock2 = Clock(rg.clock.t + 7200)
    rg2 = rig(SGP30Model(constant()), clock=clock2, baseline_path=path)
    log = rg2.bus.start_log()
    rg2.dev.open()
    assert rg2.model.baseline == LEARNED and rg2.model.baseline_restored
    assert "58 W " + codec.set_iaq_baseline(LEARNED).hex(" ") in log
    assert rg2.dev.baseline_restored and rg2.dev.baseline_reliable  # no new 12 h wait
    assert rg2.dev.stats()["baseline_restores"] == 1
    assert rg2.dev.warming_up  # the 15 s fixed output still comes after iaq_init


def test_no_baseline_saved_before_12_hours(tmp_path):
    path = tmp_path / "b.json"
    rg = rig(baseline_path=path)
    rg.dev.open()
    past_warmup(rg)
    rg.clock.t += 11 * 3600  # hourly saves are due, but the baseline is not reliable yet
    readings(rg.dev, 1)
    assert rg.dev.save_baseline() is None
    rg.dev.close()
    assert not path.exists() and rg.dev.stats()["baseline_saves"] == 0


def test_baseline_older_than_7_days_is_not_restored(tmp_path, caplog):
    path = tmp_path / "b.json"
    rg = rig(baseline_path=path)
    run_until_reliable(rg)
    rg.dev.close()
    rg2 = rig(SGP30Model(constant()), clock=Clock(rg.clock.t + 8 * 86400), baseline_path=path)
    with caplog.at_level(logging.INFO, logger="drivers.sgp30.device"):
        rg2.dev.open()
    assert not rg2.model.baseline_restored and rg2.model.baseline == emu.FRESH_BASELINE
    assert not rg2.dev.baseline_reliable
    assert "8.0 days old (limit 7); not restored" in caplog.text


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"chip": "SGP30"}',
                                     b'{"chip": "SGP30", "eco2": 0, "tvoc": 0, "saved_at": 1,'
                                     b' "serial": "00000d4a71f2", "reliable": true}', b"[]"])
def test_corrupt_baseline_file_is_ignored_with_a_clear_log(tmp_path, caplog, content):
    path = tmp_path / "b.json"
    path.write_bytes(content)
    rg = rig(baseline_path=path)
    with caplog.at_level(logging.WARNING, logger="drivers.sgp30.device"):
        rg.dev.open()  # no crash
    assert not rg.model.baseline_restored
    assert f"baseline file {path} is unusable" in caplog.text
    assert rg.dev.stats()["baseline_file_errors"] == 1
    past_warmup(rg)
    assert readings(rg.dev, 1)[0].values["eco2"] == 612.0


def test_baseline_of_another_chip_is_not_restored(tmp_path, caplog):
    path = tmp_path / "b.json"
    rg = rig(baseline_path=path)
    run_until_reliable(rg)
    rg.dev.close()
    rg2 = rig(SGP30Model(constant(), serial=0x1234), clock=Clock(rg.clock.t + 60),
              baseline_path=path)
    with caplog.at_level(logging.WARNING, logger="drivers.sgp30.device"):
        rg2.dev.open()
    assert not rg2.model.baseline_restored
    assert "belongs to SGP30 00000d4a71f2" in caplog.text


def test_reopen_without_file_restores_the_baseline_from_memory():
    rg = rig()
    run_until_reliable(rg)
    rg.dev.close()
    rg.model.power_cycle(rg.clock.t)
    rg.clock.t += 1
    rg.dev.open()
    assert rg.model.baseline == LEARNED and rg.dev.baseline_restored


def test_humidity_compensation_word_sent_from_the_source():
    climate: list[tuple[float, float] | None] = [None]
    rg = rig(humidity_source=lambda: climate[0])
    rg.dev.open()
    assert rg.dev.stats()["humidity_sets"] == 0 and not rg.model.humidity_compensation
    climate[0] = (25.0, 50.0)
    log = rg.bus.start_log()
    rg.dev.poll()
    want = codec.humidity_word(codec.absolute_humidity(25.0, 50.0))
    assert abs(want / 256 - 11.5) < 0.15  # 25 °C, 50 %RH: about 11.5 g/m3
    assert rg.model.humidity_word == want and rg.model.humidity_compensation
    w = want.to_bytes(2, "big")
    assert f"58 W 20 61 {w.hex(' ')} {crc8(w):02x}" in log
    one_second(rg, 5)  # unchanged: not sent again
    assert rg.dev.stats()["humidity_sets"] == 1
    climate[0] = (30.0, 80.0)
    one_second(rg, 2)
    assert rg.model.humidity_word == codec.humidity_word(codec.absolute_humidity(30.0, 80.0))
    assert rg.dev.stats()["humidity_sets"] == 2
    sent = rg.dev.set_humidity(20.0, 100.0)
    assert sent == rg.model.humidity_word == codec.humidity_word(codec.absolute_humidity(20, 100))
    assert rg.dev.set_absolute_humidity(0) == 0 and not rg.model.humidity_compensation


def test_a_failing_humidity_source_does_not_stop_sampling(caplog):
    def broken():
        raise RuntimeError("climate loop exploded")

    rg = rig(humidity_source=broken)
    with caplog.at_level(logging.ERROR, logger="drivers.sgp30.device"):
        rg.dev.open()
        past_warmup(rg)
        assert readings(rg.dev, 1)[0].values["tvoc"] == 187.0
    assert "humidity_source failed" in caplog.text


class FlipOnce:
    """Wraps a model: corrupts the CRC of the next reply of ``code``."""

    def __init__(self, model: SGP30Model, code: int) -> None:
        self.model, self.code, self.armed, self.last = model, code, False, None
        self.stretch_s = 0.0

    def transfer(self, parts, now):
        if parts[0][0] == "w":
            self.last = int.from_bytes(bytes(parts[0][1])[:2], "big")
        out = self.model.transfer(parts, now)
        if self.armed and parts[0][0] == "r" and self.last == self.code:
            self.armed = False
            out = [out[0][:-1] + bytes([out[0][-1] ^ 0x01])]
        return out


def test_crc_error_on_a_reply_is_counted_and_recovered():
    model = SGP30Model(constant())
    flip = FlipOnce(model, codec.MEASURE_IAQ)
    rg = rig(model)
    rg.bus.attach(ADDR, flip)
    rg.dev.open()
    past_warmup(rg)
    flip.armed = True
    with pytest.raises(DeviceError, match="CRC mismatch in word 1") as exc:
        readings(rg.dev, 1)
    assert not isinstance(exc.value, DeviceGone)
    stats = rg.dev.stats()
    assert stats["crc_errors"] == 1 and stats["bad_frames"] == 1
    assert readings(rg.dev, 1)[0].values["eco2"] == 612.0  # the next poll is fine


def test_crc_error_on_open_is_retried():
    model = SGP30Model(constant())
    flip = FlipOnce(model, codec.GET_FEATURE_SET)
    flip.armed = True
    rg = rig(model)
    rg.bus.attach(ADDR, flip)
    rg.dev.open()
    assert rg.dev.feature_set.version == 0x22 and rg.dev.stats()["crc_errors"] == 1


def test_nacks_error_error_gone_then_recovery():
    rg = rig()
    rg.dev.open()
    past_warmup(rg)
    readings(rg.dev, 1)
    rg.bus.fault(ADDR, nack=1.0)
    assert poll_until_gone(rg.dev) == ["error", "error", "gone"]
    rg.dev.close()
    with pytest.raises(DeviceGone, match="no answer"):
        rg.dev.open()
    rg.bus.fault(ADDR, nack=0.0)
    rg.model.power_cycle(rg.clock.t - 1)  # came back after a brown-out
    rg.dev.open()
    past_warmup(rg)
    assert readings(rg.dev, 1)[0].values["tvoc"] == 187.0
    assert rg.dev.stats()["nacks"] >= 3


def test_wrong_chip_at_0x58_is_refused():
    rg = rig(SGP30Model(constant(), feature_set=0x1022))  # an SGPC3's product type
    with pytest.raises(DeviceError, match="is not an SGP30"):
        rg.dev.open()


def test_self_test_restarts_the_algorithm_and_restores():
    rg = rig()
    run_until_reliable(rg)
    assert rg.dev.self_test() is True
    assert rg.model.iaq_started is not None and rg.model.baseline == LEARNED
    assert rg.dev.warming_up


# -- values from the smoke dataset ------------------------------------------------------------
def test_emulator_replays_the_smoke_dataset(shared_dir):
    path = shared_dir / "data" / "smoke" / emu.SMOKE_CSV_NAME
    if not path.is_file():
        pytest.skip(f"smoke dataset not found at {path}")
    replay = SmokeReplay(path, start_row=3178)  # the start of the fire test
    assert replay.n_rows == 10081
    rg = rig(SGP30Model(replay))
    rg.dev.open()
    past_warmup(rg)
    got = readings(rg.dev, 30)
    for i, r in enumerate(got):
        row = replay.row(3178 + i)
        assert r.values == {"eco2": row.eco2, "tvoc": row.tvoc, "h2_raw": row.h2,
                            "ethanol_raw": row.ethanol}
    assert max(r.values["tvoc"] for r in got) > 0


def test_smoke_source_falls_back_to_quiet_room_without_shared(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CITYNODE_SHARED", raising=False)
    monkeypatch.delenv(emu.SMOKE_CSV_ENV, raising=False)
    monkeypatch.setattr(emu, "REPO_ROOT", tmp_path / "repo")
    with caplog.at_level(logging.WARNING, logger="drivers.sgp30.emulator"):
        src = emu.default_source("smoke", seed=1)
    assert "smoke dataset not found" in caplog.text
    samples = [src(t) for t in range(0, 7200, 60)]
    assert all(400 <= s.eco2 < 440 and 0 <= s.tvoc < 60 for s in samples)
    assert all(12900 < s.h2 < 13100 and 19800 < s.ethanol < 20050 for s in samples)


# -- config and the agent ---------------------------------------------------------------------
BASE = '[node]\nid = "n1"\n'
SHT = '[[sensor]]\ntype = "sht3x"\nname = "air"\nbus = "emulator"\n'
GAS = '[[sensor]]\ntype = "sgp30"\nname = "gas"\nbus = "emulator"\n'


def parse(text: str) -> config.Config:
    return config.parse(BASE + text, "t.toml", check_devices=False)


def test_config_valid_with_humidity_from_and_defaults(tmp_path):
    cfg = parse(SHT + GAS + 'humidity_from = "air"\nemulator_source = "smoke"\n')
    gas = cfg.sensor[1]
    assert isinstance(gas, SGP30Config)
    assert gas.address == 0x58 and gas.read_interval_s == 1.0
    assert gas.quantities == ["eco2", "tvoc", "h2_raw", "ethanol_raw"]
    assert gas.resolved_baseline_file(tmp_path) == tmp_path / "sgp30-gas-baseline.json"


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('humidity_from = "pm"\n', "sensor[2].humidity_from", "is a pms5003 sensor, not a climate"),
    ('humidity_from = "nope"\n', "sensor[2].humidity_from", "no sensor named 'nope'"),
    ("read_interval_s = 2.0\n", "sensor[2].read_interval_s", "must be 1.0"),
    ("address = 0x59\n", "sensor[2].address", "fixed at 0x58"),
])
def test_config_rejects(extra, key, message):
    pm = '[[sensor]]\ntype = "pms5003"\nname = "pm"\nport = "/dev/null"\n'
    with pytest.raises(config.ConfigError) as exc:
        parse(SHT + pm + GAS + extra)
    assert exc.value.key == key and message in exc.value.message
    assert exc.value.line is not None


def test_config_rejects_smoke_source_on_a_real_bus_and_climate_without_rh():
    with pytest.raises(config.ConfigError, match='only for bus = "emulator"'):
        parse('[[sensor]]\ntype = "sgp30"\nname = "gas"\nbus = 1\nemulator_source = "smoke"\n')
    sht_t = SHT + 'quantities = ["temp"]\n'
    with pytest.raises(config.ConfigError, match="must measure both temp and rh"):
        parse(sht_t + GAS + 'humidity_from = "air"\n')


def test_build_device_wires_state_dir_and_humidity(tmp_path):
    cfg = parse(SHT + GAS + 'raw_every = 5\nhumidity_from = "air"\n')
    dev = build_device(cfg.sensor[1], state_dir=tmp_path,
                       latest={"air": {"temp": 21.0, "rh": 40.0}}.get)
    assert isinstance(dev, SGP30)
    assert dev.baseline_path == tmp_path / "sgp30-gas-baseline.json"
    assert dev.raw_every == 5 and dev.humidity_source() == (21.0, 40.0)
    dev.open()
    try:
        assert dev.warming_up and dev.humidity_word == codec.humidity_word(
            codec.absolute_humidity(21.0, 40.0))
    finally:
        dev.close()
    assert build_device(cfg.sensor[1]).baseline_path is None  # no state dir: memory only


def test_latest_values_are_the_loops_young_readings(monkeypatch):
    import agent.core.sensors as sensors

    monkeypatch.setattr(sensors.time, "monotonic", lambda: 1000.0)
    loop = SimpleNamespace(sensor="air", last_reading_at=None, last_values={})
    latest = latest_values(lambda: [loop], max_age_s=300)
    assert latest("air") is None  # no reading yet
    loop.last_reading_at, loop.last_values = 990.0, {"temp": 22.5, "rh": 41.0}
    assert latest("air") == {"temp": 22.5, "rh": 41.0}
    loop.last_reading_at = 600.0
    assert latest("air") is None  # too old
    assert latest_values(lambda: [])("air") is None


# -- captures and `citynode frames sgp30` -----------------------------------------------------
def test_registry_entry():
    c = registry.get("sgp30")
    assert isinstance(c, CaptureCodec) and c.addresses == (0x58,)


def test_cli_frames_sgp30_decodes_a_capture(capsys):
    base = codec.set_iaq_baseline(LEARNED).hex(" ")
    reply = codec.encode_words(LEARNED.eco2, LEARNED.tvoc).hex(" ")
    cap = ("58 W 20 03;58 W " + base + ";58 W 20 08;58 R NACK;58 R 01 90 4c 00 00 81;"
           "58 W 20 08;58 R 02 64 ff 00 bb 00;58 W 20 15;58 R " + reply + ";44 W 24 00")
    rc = cli(["frames", "sgp30", "--hex", cap])
    out, err = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0
    kinds = [d["type"] for d in docs]
    assert kinds == ["command", "command", "command", "rejected", "air_quality", "command",
                     "rejected", "command", "baseline", "rejected"]
    assert docs[1]["name"] == "set_iaq_baseline"
    assert (docs[1]["tvoc_baseline"], docs[1]["eco2_baseline"]) == ("8aae", "8973")
    assert "not finished" in docs[3]["reason"]
    assert docs[4]["eco2"] == 400 and "first 15 s" in docs[4]["note"]
    assert "CRC mismatch" in docs[6]["reason"]
    assert (docs[8]["eco2_baseline"], docs[8]["tvoc_baseline"]) == ("8973", "8aae")
    assert "0x44 (1)" in docs[9]["reason"]
    assert "10 transfers: 7 decoded, 3 rejected" in err


def test_bus_capture_of_a_driver_run_decodes_completely(tmp_path):
    rg = rig(humidity_source=lambda: (24.0, 55.0), baseline_path=tmp_path / "b.json")
    log = rg.bus.start_log()
    run_until_reliable(rg)
    rg.dev.close()
    docs = list(codec.decode_capture(parse_capture(log)))
    assert not [d for d in docs if d["type"] == "rejected"]
    types = {d["type"] for d in docs}
    assert {"feature_set", "serial", "air_quality", "raw_signals", "baseline"} <= types
    hum = [d for d in docs if d.get("name") == "set_absolute_humidity"]
    assert hum and hum[0]["absolute_humidity"] == pytest.approx(
        codec.absolute_humidity(24.0, 55.0), abs=1 / 256)
    last = [d for d in docs if d["type"] == "air_quality"][-1]
    assert (last["eco2"], last["tvoc"]) == (612, 187)


def test_doctor_identifies_the_emulated_chip():
    from agent.tools.doctor import check_i2c_bus

    clock = Clock()
    bus = FakeBus({ADDR: SGP30Model(constant())}, clock=clock, sleep=clock.sleep)
    checks = list(check_i2c_bus("emulator", bus, {ADDR: ("gas", "SGP30")}, clock.sleep))
    target = [c for c in checks if "(gas)" in c.target]
    assert target and target[0].status == "OK" and "SGP30" in target[0].detail


def test_daemon_gives_the_sgp30_its_state_dir_and_live_humidity(tmp_path) -> None:
    """The node wires humidity_from to the named climate sensor's latest reading."""
    import time as _time
    from types import SimpleNamespace

    from agent.core import config as _config
    from agent.core.daemon import Node

    cfg = _config.parse(f"""
[node]
id = "gas-1"
state_dir = "{tmp_path}"
[[sensor]]
type = "sgp30"
name = "gas"
bus = "emulator"
humidity_from = "sht"
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
""", check_devices=False)
    node = Node(cfg)
    gas = next(s for s in cfg.sensor if s.name == "gas")
    dev = build_device(gas, **node._device_kwargs(cfg))
    assert dev.baseline_path == cfg.node.resolved_state_dir() / "sgp30-gas-baseline.json"
    assert dev.humidity_source() is None  # no climate reading yet
    node.loops = [SimpleNamespace(sensor="sht", last_values={"temp": 21.5, "rh": 40.0},
                                  last_reading_at=_time.monotonic())]
    assert dev.humidity_source() == (21.5, 40.0)
