"""Sensirion SPS30: shared CRC framing, codec, emulator, and the driver over a fake I2C bus."""

from __future__ import annotations

import errno
import json
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock, attach
from smbus2 import i2c_msg

from agent.tools.cli import main as cli_main
from drivers import registry
from drivers.base import DeviceError, DeviceGone, Reading
from drivers.emulation.i2c import FakeBus, Nack, parse_capture
from drivers.sensirion import CRCError, crc8, pack_words, unpack_words
from drivers.spec import CaptureCodec
from drivers.sps30 import SPS30
from drivers.sps30 import codec as c
from drivers.sps30.codec import Measurement
from drivers.sps30.emulator import SPS30Model, measurement_from_pm

# -- the reference's vectors ---------------------------------------------------------------
CRC_VECTORS = [
    (0xBEEF, 0x92), (0x0300, 0xAC), (0x0500, 0xF6), (0x0000, 0x81), (0x0001, 0xB0),
    (0x8000, 0xA2), (0xDEAD, 0x98), (0x0190, 0x4C), (0x1234, 0x37), (0xFFFF, 0xAC),
]

#: sensor-protocols.md section 3: a real 60-byte read of 0x0300 (arduino-avr-legacy-i2c-sps30
#: issue #14), a degraded sensor reading zeros, -0.0 and a typical particle size of 1.63 µm.
REAL_FRAME = bytes.fromhex(
    "00 00 81 00 00 81  00 00 81 00 00 81  00 00 81 00 00 81  00 00 81 00 00 81"
    "80 00 A2 00 00 81  00 00 81 00 00 81  00 00 81 00 00 81  00 00 81 00 00 81"
    "00 00 81 00 00 81  3F D0 AE A3 D7 C0"
)
#: [SYNTHETIC] realistic frame from the reference.
SYNTHETIC_FRAME = bytes.fromhex(
    "40 20 8E 00 00 81 40 83 21 33 33 88 40 A0 F4 00 00 81 40 A6 52 66 66 93 41 88 3F 00 00 81"
    "41 A0 00 CC CD 94 41 A3 53 33 33 88 41 A4 C4 00 00 81 41 A4 C4 00 00 81 3F 0C D7 CC CD 94"
)


@pytest.mark.parametrize(("word", "crc"), CRC_VECTORS)
def test_crc8_reference_vectors(word, crc):
    assert crc8(word.to_bytes(2, "big")) == crc
    assert pack_words([word]) == word.to_bytes(2, "big") + bytes([crc])


def test_pack_and_unpack_words():
    data = pack_words([0x0300, 0xBEEF, 0x0001])
    assert data.hex(" ") == "03 00 ac be ef 92 00 01 b0"
    assert unpack_words(data) == [0x0300, 0xBEEF, 0x0001]
    assert unpack_words(b"") == []
    with pytest.raises(ValueError):
        pack_words([0x10000])


def test_unpack_words_names_the_bad_word():
    data = bytearray(pack_words([1, 2, 3]))
    data[7] ^= 0x01  # the second byte of word 2
    with pytest.raises(CRCError, match="word 2") as exc:
        unpack_words(bytes(data))
    assert exc.value.index == 2
    assert isinstance(exc.value, ValueError)
    with pytest.raises(CRCError):
        unpack_words(b"\x00\x00")  # not a whole word


def test_real_frame_decodes_to_documented_values():
    m = c.decode_measurement(REAL_FRAME)
    assert (m.pm1, m.pm25, m.pm4, m.pm10) == (0.0, 0.0, 0.0, 0.0)
    assert m.nc0_5 == 0.0 and math.copysign(1.0, m.nc0_5) == -1.0  # 0x80000000 = -0.0
    assert (m.nc1_0, m.nc2_5, m.nc4_0, m.nc10) == (0.0, 0.0, 0.0, 0.0)
    assert m.tps == 1.63  # 0x3FD0A3D7
    assert c.encode_measurement(m) == REAL_FRAME


def test_synthetic_frame_decodes():
    m = c.decode_measurement(SYNTHETIC_FRAME)
    assert m.as_tuple() == (2.5, 4.1, 5.0, 5.2, 17.0, 20.1, 20.4, 20.5, 20.5, 0.55)
    assert c.encode_measurement(m) == SYNTHETIC_FRAME


def test_uint16_frame_decodes():
    m = c.decode_measurement(c.encode_measurement((3, 4, 5, 6, 20, 25, 26, 26, 27, 0.61),
                                                  c.FORMAT_UINT16))
    assert m.as_tuple() == (3, 4, 5, 6, 20, 25, 26, 26, 27, 0.61)


@pytest.mark.parametrize(("built", "wire"), [
    (c.start_measurement(), "00 10 03 00 ac"),
    (c.start_measurement(c.FORMAT_UINT16), "00 10 05 00 f6"),
    (c.stop_measurement(), "01 04"),
    (c.read_data_ready(), "02 02"),
    (c.read_measured_values(), "03 00"),
    (c.sleep(), "10 01"),
    (c.wake_up(), "11 03"),
    (c.start_fan_cleaning(), "56 07"),
    (c.read_auto_cleaning_interval(), "80 04"),
    (c.write_auto_cleaning_interval(604800), "80 04 00 09 09 3a 80 a7"),
    (c.write_auto_cleaning_interval(0), "80 04 00 00 81 00 00 81"),
    (c.read_product_type(), "d0 02"),
    (c.read_serial_number(), "d0 33"),
    (c.read_firmware_version(), "d1 00"),
    (c.read_device_status(), "d2 06"),
    (c.clear_device_status(), "d2 10"),
    (c.device_reset(), "d3 04"),
])
def test_command_builders(built, wire):
    assert built.hex(" ") == wire


def test_command_builders_reject_bad_arguments():
    with pytest.raises(ValueError):
        c.start_measurement(0x0001)
    with pytest.raises(ValueError):
        c.write_auto_cleaning_interval(2**32)
    assert c.parse_write(bytes.fromhex("80 04 00 09 09 3a 80 a7")) == (0x8004, [0x0009, 0x3A80])


def test_reply_decoders():
    assert c.decode_data_ready(bytes.fromhex("00 00 81")) is False
    assert c.decode_data_ready(bytes.fromhex("00 01 b0")) is True
    assert c.decode_string(c.encode_string("00080000", 8)) == "00080000"
    assert c.decode_string(c.encode_string("ABCDEF0123456789", 32)) == "ABCDEF0123456789"
    assert c.decode_firmware_version(bytes.fromhex("02 02") + bytes([crc8(b"\x02\x02")])) == (2, 2)
    assert c.decode_u32(c.encode_u32(604800)) == 604800
    # paulvha/sps30#18: firmware reply "02 FF" with CRC 0x69, computed 0xF4 -> rejected.
    assert crc8(b"\x02\xff") == 0xF4
    with pytest.raises(CRCError):
        c.decode_firmware_version(bytes.fromhex("02 ff 69"))
    with pytest.raises(CRCError):  # UART mode: FF bytes and CRC failures (issue #26)
        c.decode_string(b"\xff" * 48)
    with pytest.raises(ValueError):
        c.decode_measurement(REAL_FRAME[:57])


DECODERS = [c.decode_measurement, c.decode_data_ready, c.decode_string,
            c.decode_firmware_version, c.decode_u32]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(DECODERS), st.one_of(
    st.binary(max_size=64),
    # well-framed words (valid CRCs) with arbitrary content, of every interesting length
    st.lists(st.integers(0, 0xFFFF), max_size=20).map(pack_words),
))
def test_decoders_never_crash(decode, data):
    try:
        decode(data)
    except ValueError:  # CRCError is one
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0x69, 0x44]), st.sampled_from(["W", "R"]),
                          st.one_of(st.none(), st.binary(max_size=64))), max_size=12))
def test_capture_decoder_never_crashes(records):
    docs = list(c.decode_capture(records))
    json.dumps(docs, allow_nan=False)
    assert all(isinstance(d.get("type"), str) for d in docs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=10, max_size=10))
def test_float_values_round_trip(values):
    m = c.decode_measurement(c.encode_measurement(values))
    assert [struct.pack(">f", x) for x in m.as_tuple()] == [struct.pack(">f", x) for x in values]


# -- emulator and driver over the fake bus --------------------------------------------------
def ramp(now: float) -> Measurement:
    """Distinct, plausible values every second."""
    k = now % 50
    return measurement_from_pm(3.0 + 0.37 * k, 5.0 + 0.41 * k, 9.0 + 0.53 * k)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rig(clock):
    def make(model: SPS30Model | None = None, *, seed: int = 0, **kw):
        kw.setdefault("quantities", c.QUANTITIES)
        rg = attach(SPS30, 0x69, model or SPS30Model(ramp, strict_timing=True), clock=clock,
                    seed=seed, **kw)
        return rg.model, rg.bus, rg.dev

    return make


def run(dev: SPS30, clock: Clock, seconds: float) -> tuple[list[Reading], dict[str, int]]:
    """Drive the device the way agent.core.sampling does: errors counted, DeviceGone re-opens."""
    out: list[Reading] = []
    events = {"errors": 0, "gone": 0}
    end = clock() + seconds
    is_open = True
    while clock() < end:
        if not is_open:
            try:
                dev.open()
                is_open = True
            except DeviceError:
                events["gone"] += 1
                clock.sleep(1.0)
                continue
        try:
            out += dev.poll()
        except DeviceGone:
            events["gone"] += 1
            dev.close()
            is_open = False
        except DeviceError:
            events["errors"] += 1
    return out, events


def sent_after_warmup(model: SPS30Model, dev: SPS30) -> list[dict[str, float]]:
    return [s.values.as_dict() for s in model.sent if s.t - dev._started >= dev.warmup_s]


def assert_readings_match(readings: list[Reading], model: SPS30Model) -> None:
    """Every accepted reading is one the model sent (to float32 precision), in order."""
    sent = [s.values.as_dict() for s in model.sent]
    i = 0
    for r in readings:
        while i < len(sent) and r.values != pytest.approx(
                {k: sent[i][k] for k in r.values}, rel=1e-6, abs=1e-6):
            i += 1
        assert i < len(sent), f"reading {r.values} was never sent"
        i += 1


def test_model_satisfies_i2c_model_protocol():
    from drivers.emulation.i2c import I2CModel

    assert isinstance(SPS30Model(ramp), I2CModel)
    assert SPS30Model.stretch_s == 0.0


def test_round_trip_info_values_and_warm_up(rig, clock):
    model, _bus, dev = rig()
    dev.open()
    assert dev.info == {"product": "00080000", "serial": model.serial_number, "firmware": "2.2"}
    assert model.mode == "measuring" and model.fmt == c.FORMAT_FLOAT
    assert dev.warming_up
    t0 = clock()
    readings, events = run(dev, clock, 30.0)
    assert events == {"errors": 0, "gone": 0}
    assert not dev.warming_up
    # One measurement a second; the first ~15 s are discarded.
    assert 14 <= len(readings) <= 16
    assert all(r.t_mono - t0 >= 15.0 for r in readings)
    assert dev.stats()["warmup_discarded"] in (14, 15)
    assert set(readings[0].values) == set(c.QUANTITIES)
    assert_readings_match(readings, model)
    expected = sent_after_warmup(model, dev)
    assert len(readings) == len(expected)
    for r, s in zip(readings, expected, strict=True):
        assert r.values == pytest.approx(s, rel=1e-6)
    assert model.stats["early"] == 0  # the driver waited every execution time
    assert model.stats["repeated_starts"] == 0
    assert dev.stats()["bad_frames"] == 0


def test_default_quantities_and_validation(rig, clock):
    _, _, dev = rig(quantities=("pm1", "pm25", "pm10"), warmup_s=0)
    dev.open()
    readings, _ = run(dev, clock, 3.0)
    assert readings and set(readings[0].values) == {"pm1", "pm25", "pm10"}
    with pytest.raises(ValueError):
        SPS30(FakeBus(), quantities=("pm2",))


def test_driver_uses_separate_transfers_and_full_length_reads(rig, clock):
    _model, bus, dev = rig(warmup_s=0)
    calls: list[list[tuple[bool, int]]] = []
    real = bus.i2c_rdwr

    def spy(*msgs: i2c_msg) -> None:
        calls.append([(bool(m.flags & 1), m.len) for m in msgs])
        real(*msgs)

    bus.i2c_rdwr = spy  # type: ignore[method-assign]
    dev.open()
    run(dev, clock, 3.0)
    assert calls and all(len(call) == 1 for call in calls)  # never a repeated start
    assert [(True, 60)] in calls  # the whole 60-byte frame in one i2c_msg.read


def test_data_ready_flag_and_stop(clock):
    model = SPS30Model(ramp)
    bus = FakeBus({0x69: model}, clock=clock, sleep=clock.sleep)

    def query(cmd: bytes, n: int) -> bytes:
        bus.i2c_rdwr(i2c_msg.write(0x69, cmd))
        msg = i2c_msg.read(0x69, n)
        bus.i2c_rdwr(msg)
        return bytes(msg)

    with pytest.raises(OSError):  # idle mode: no data-ready flag
        query(c.read_data_ready(), 3)
    bus.i2c_rdwr(i2c_msg.write(0x69, c.start_measurement()))
    clock.sleep(0.5)
    assert query(c.read_data_ready(), 3).hex(" ") == "00 00 81"
    clock.sleep(0.6)
    assert query(c.read_data_ready(), 3).hex(" ") == "00 01 b0"
    first = c.decode_measurement(query(c.read_measured_values(), 60))
    assert first.as_tuple() == (0.0,) * 10  # the first values after start are zeros
    assert query(c.read_data_ready(), 3).hex(" ") == "00 00 81"  # reading cleared it
    clock.sleep(1.0)
    assert c.decode_data_ready(query(c.read_data_ready(), 3))
    bus.i2c_rdwr(i2c_msg.write(0x69, c.stop_measurement()))
    assert model.mode == "idle" and not model.data_ready and model.latest is None
    bus.i2c_rdwr(i2c_msg.write(0x69, c.start_measurement()))
    assert not c.decode_data_ready(query(c.read_data_ready(), 3))


def test_emulator_refuses_bad_writes_and_repeated_starts(clock):
    model = SPS30Model(ramp)
    bus = FakeBus({0x69: model}, clock=clock, sleep=clock.sleep)
    for bad in (bytes.fromhex("00 10 03 00 ad"),  # argument CRC wrong
                bytes.fromhex("00 10 03 00"),  # argument without CRC
                bytes.fromhex("12 34"),  # unknown command
                bytes.fromhex("00 10 00 01 b0")):  # unknown output format
        with pytest.raises(OSError) as exc:
            bus.i2c_rdwr(i2c_msg.write(0x69, bad))
        assert exc.value.errno == errno.EREMOTEIO
    assert model.stats["bad_crc"] == 2 and model.mode == "idle"
    # A combined write + read (repeated start) is NACKed, as by the real chip.
    with pytest.raises(OSError) as exc:
        bus.i2c_rdwr(i2c_msg.write(0x69, c.read_product_type()), i2c_msg.read(0x69, 12))
    assert exc.value.errno == errno.EREMOTEIO
    with pytest.raises(OSError):
        bus.read_i2c_block_data(0x69, 0xD0, 12)
    assert model.stats["repeated_starts"] == 2
    # Reading after a command that returns nothing is NACKed too.
    bus.i2c_rdwr(i2c_msg.write(0x69, c.stop_measurement()))
    with pytest.raises(OSError):
        bus.i2c_rdwr(i2c_msg.read(0x69, 3))


def test_emulator_strict_timing_nacks_early_transfers(clock):
    model = SPS30Model(ramp, strict_timing=True)
    bus = FakeBus({0x69: model}, clock=clock, sleep=clock.sleep)
    bus.i2c_rdwr(i2c_msg.write(0x69, c.start_measurement()))
    with pytest.raises(OSError):  # within the 20 ms execution time
        bus.i2c_rdwr(i2c_msg.write(0x69, c.read_data_ready()))
    clock.sleep(0.02)
    bus.i2c_rdwr(i2c_msg.write(0x69, c.read_data_ready()))
    assert model.stats["early"] == 1


def test_emulator_default_source_is_plausible():
    clock = Clock()
    model = SPS30Model(zeros_s=0, unsteady_s=0)
    bus = FakeBus({0x69: model}, clock=clock, sleep=clock.sleep)
    bus.i2c_rdwr(i2c_msg.write(0x69, c.start_measurement()))
    clock.sleep(1.5)
    bus.i2c_rdwr(i2c_msg.write(0x69, c.read_measured_values()))
    msg = i2c_msg.read(0x69, 60)
    bus.i2c_rdwr(msg)
    m = c.decode_measurement(bytes(msg))
    # embedded-sps's hardware test: cumulative values never decrease with size.
    assert 0 <= m.pm1 <= m.pm25 <= m.pm4 <= m.pm10 <= 1000
    assert 0 <= m.nc0_5 <= m.nc1_0 <= m.nc2_5 <= m.nc4_0 <= m.nc10 <= 3000
    assert 0.3 <= m.tps <= 1.0


def test_sleep_and_wake(rig, clock):
    model, bus, dev = rig(warmup_s=5.0)
    dev.open()
    run(dev, clock, 8.0)
    assert not dev.warming_up
    dev.sleep()
    assert model.mode == "sleep" and dev.asleep
    with pytest.raises(OSError):  # the interface is off while asleep
        bus.i2c_rdwr(i2c_msg.write(0x69, c.read_product_type()))
    clock.sleep(1.0)
    assert dev.poll() == []  # nothing to read while asleep, and no I/O
    with pytest.raises(DeviceError):
        dev.get_auto_cleaning_interval()
    dev.wake()
    assert model.mode == "measuring" and not dev.asleep
    assert model.stats["wakes"] == 1
    assert dev.warming_up  # a fresh warm-up after every wake
    readings, events = run(dev, clock, 10.0)
    assert readings and events == {"errors": 0, "gone": 0}
    assert all(r.t_mono - dev._started >= 5.0 for r in readings)
    assert model.stats["early"] == 0


def test_open_wakes_a_sleeping_chip(rig, clock):
    model, _bus, dev = rig()
    dev.open()
    dev.sleep()
    dev.close()
    dev.open()  # e.g. the daemon restarted while the sensor slept
    assert model.mode == "measuring"


def test_old_firmware_duty_cycles_with_stop_and_start(rig, clock):
    model, _bus, dev = rig(SPS30Model(ramp, firmware=(1, 0), strict_timing=True))
    dev.open()
    assert not dev.supports_sleep
    dev.sleep()
    assert model.mode == "idle" and model.stats["sleeps"] == 0
    dev.wake()
    assert model.mode == "measuring"


def test_auto_cleaning_interval(rig, clock):
    model, _bus, dev = rig()
    dev.open()
    assert dev.get_auto_cleaning_interval() == 604800
    dev.set_auto_cleaning_interval(3600)
    assert model.auto_cleaning_interval_s == 3600  # effective at once...
    assert dev.get_auto_cleaning_interval() == 604800  # ...but reads back old until reset
    dev.reset()
    assert dev.get_auto_cleaning_interval() == 3600
    assert model.mode == "measuring" and dev.warming_up
    with pytest.raises(ValueError):
        dev.set_auto_cleaning_interval(-1)
    dev.start_fan_cleaning()
    assert model.stats["fan_cleanings"] == 1
    assert dev.read_device_status() == 0


def test_nacks_are_retried(rig, clock):
    model, bus, dev = rig(warmup_s=2.0, seed=3)
    dev.open()
    bus.fault(0x69, nack=0.3)
    readings, events = run(dev, clock, 40.0)
    assert dev.stats()["nacks"] > 20
    assert len(readings) >= 30
    assert events["errors"] == 0
    assert_readings_match(readings, model)


def test_bit_flips_are_caught_and_never_accepted(rig, clock):
    model, bus, dev = rig(warmup_s=2.0, seed=5)
    dev.open()
    bus.fault(0x69, flip=0.01)
    readings, events = run(dev, clock, 60.0)
    stats = dev.stats()
    assert stats["crc_errors"] > 3
    assert stats["bad_frames"] >= stats["crc_errors"]
    assert events["errors"] == stats["bad_frames"]  # each one surfaced as a DeviceError
    assert len(readings) >= 30
    assert_readings_match(readings, model)


def test_detached_device_is_gone_then_recovers(rig, clock):
    model, bus, dev = rig(warmup_s=0.0)
    dev.open()
    assert run(dev, clock, 3.0)[0]
    bus.fault(0x69, detached=True)
    with pytest.raises(DeviceGone):
        for _ in range(5):
            dev.poll()
    dev.close()
    with pytest.raises(DeviceGone):
        dev.open()
    # Re-attached after a brown-out: the chip powered up idle.
    bus.fault(0x69, detached=False)
    model.power_cycle(clock())
    clock.sleep(0.2)
    dev.open()
    readings, events = run(dev, clock, 4.0)
    assert readings and events == {"errors": 0, "gone": 0}
    assert dev.stats()["opens"] == 2


def test_bus_factory_opens_lazily_and_failures_are_gone(clock):
    model = SPS30Model(ramp)
    bus = FakeBus({0x69: model}, clock=clock, sleep=clock.sleep)
    closed = []
    bus.close = lambda: closed.append(True)  # type: ignore[method-assign]
    opened = []

    def factory(n: int) -> FakeBus:
        opened.append(n)
        return bus

    dev = SPS30(1, bus_factory=factory, clock=clock, sleep=clock.sleep)
    assert opened == []
    dev.open()
    assert opened == [1]
    dev.close()
    dev.close()
    assert closed == [True]

    def missing(n: int) -> FakeBus:
        raise FileNotFoundError(2, "No such file or directory", f"/dev/i2c-{n}")

    with pytest.raises(DeviceGone, match="i2c-1"):
        SPS30(1, bus_factory=missing).open()
    with pytest.raises(DeviceGone):
        SPS30(FakeBus(), clock=clock, sleep=clock.sleep).open()  # nobody at 0x69


def test_no_new_data_is_an_error(rig, clock):
    _model, _bus, dev = rig(SPS30Model(ramp, interval_s=60.0), no_data_timeout_s=10.0)
    dev.open()
    with pytest.raises(DeviceError, match="no new measurement"):
        for _ in range(200):
            dev.poll()


# -- captures -------------------------------------------------------------------------------
def test_registry_entry():
    codec = registry.get("sps30")
    assert isinstance(codec, CaptureCodec)
    assert codec.addresses == (0x69,)


def test_cli_frames_decodes_real_frame(capsys):
    rc = cli_main(["frames", "sps30", "--hex", f"69 W 03 00;69 R {REAL_FRAME.hex(' ')}"])
    out, err = capsys.readouterr()
    assert rc == 0
    (line,) = out.splitlines()
    doc = json.loads(line)
    assert doc["type"] == "read_measured_values" and doc["format"] == "float"
    assert doc["tps"] == 1.63 and doc["pm25"] == 0.0
    assert "2 transfers: 2 decoded, 0 rejected" in err  # the command write with its read


def test_cli_frames_rejects_bad_crc_and_nack(capsys):
    bad = bytearray(REAL_FRAME)
    bad[3] ^= 0x40
    capture = (f"69 W 00 10 03 00 ac;69 W 03 00;69 R {bad.hex(' ')};"
               "69 W 02 02;69 R NACK;69 W 12 34")
    rc = cli_main(["frames", "sps30", "--hex", capture])
    out, _err = capsys.readouterr()
    docs = [json.loads(x) for x in out.splitlines()]
    assert rc == 0
    assert docs[0] == {"type": "start_measurement", "code": "0010", "format": "float",
                       "transfer": 1}
    assert [d["type"] for d in docs[1:]] == ["rejected"] * 3
    assert "word 1" in docs[1]["reason"]
    assert "NACK" in docs[2]["reason"]
    assert "unknown command 0x1234" in docs[3]["reason"]


def test_capture_of_a_round_trip_decodes_completely(rig, clock):
    model, bus, dev = rig(warmup_s=2.0)
    log = bus.start_log()
    dev.open()
    run(dev, clock, 6.0)
    dev.set_auto_cleaning_interval(86400)
    dev.sleep()
    dev.wake()
    run(dev, clock, 3.0)
    assert dev.get_auto_cleaning_interval() == 86400  # wake is a restart
    records = parse_capture(log)
    docs = list(c.decode_capture(records))
    assert [d for d in docs if d["type"] == "rejected"] == []
    types = [d["type"] for d in docs]
    for expected in ("read_product_type", "read_serial_number", "read_firmware_version",
                     "stop_measurement", "start_measurement", "read_data_ready",
                     "read_measured_values", "write_auto_cleaning_interval", "sleep",
                     "wake_up", "auto_cleaning_interval"):
        assert expected in types, expected
    values = [{k: d[k] for k in c.QUANTITIES} for d in docs if d["type"] == "read_measured_values"]
    sent = [s.values.as_dict() for s in model.sent]
    assert len(values) == len(sent)
    for got, want in zip(values, sent, strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    # every transfer is accounted for
    used = sum(1 + ("reply_transfer" in d) for d in docs)
    assert used == len(records)


def test_emulator_nack_is_the_bus_nack():
    model = SPS30Model(ramp)
    with pytest.raises(Nack):
        model.transfer([("r", 3)], 0.0)  # no pointer yet
