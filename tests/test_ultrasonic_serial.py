"""UART distance sensors (A02YYUW, JSN-SR04T, MaxBotix): reference frames, corrupt
streams, no echo, the emulators over a real pty, and ``citynode frames``."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serial_helpers import assert_run_of, emulate_fixture, poll_until

from agent.tools.cli import main as cli_main
from drivers import registry
from drivers.a02yyuw import A02YYUW, codec
from drivers.a02yyuw.emulator import A02YYUWModel, UltrasonicModel, constant
from drivers.emulation import DeviceModel, FaultInjector
from drivers.families.ranger_protocol import Discarded, DistanceProtocol, Sample, range_classifier
from drivers.jsnsr04t import JSNSR04T
from drivers.jsnsr04t.emulator import JSNSR04TModel
from drivers.maxbotix import MaxBotix
from drivers.maxbotix import codec as mb
from drivers.maxbotix.emulator import MaxBotixModel


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def accounted(events: list) -> int:
    return sum(len(e.data) if isinstance(e, codec.Rejected) else len(e.raw) for e in events)


def frames(events: list) -> list:
    return [e for e in events if not isinstance(e, codec.Rejected)]


# -- A02YYUW / JSN-SR04T codec ---------------------------------------------------------------
def test_reference_frame_decodes():
    (f,) = codec.FrameDecoder().feed(h("FF 07 A1 A7"))
    assert f.distance_mm == 1953 and f.d == pytest.approx(1.953) and f.raw == h("FF07A1A7")
    assert codec.encode_frame(1953) == h("FF 07 A1 A7")


def test_ff_as_data_byte_and_slide_by_one():
    # 255 mm and 511 mm carry 0xFF as data; a bad frame first, then a frame inside it.
    stream = h("FF 00 FF FE") + h("FF 01 FF FF") * 2 + h("FF 12 FF 07 A1 A7")
    dec = codec.FrameDecoder()
    events = dec.feed(stream)
    assert [f.distance_mm for f in frames(events)] == [255, 511, 511, 1953]
    rej = [e for e in events if isinstance(e, codec.Rejected)]
    assert rej[0].data == h("FF 12") and "checksum mismatch" in rej[0].reason
    assert accounted(events) == len(stream) and dec.counters.bad_frames == 1


def test_noise_passing_the_sum_does_not_hide_the_real_frame():
    dec = codec.FrameDecoder()
    assert dec.feed(h("FF 00 00") + h("FF 07 A1 A7")) == []  # ambiguous: wait for more
    events = dec.expire()  # a pause decides: the later frame
    assert [f.distance_mm for f in frames(events)] == [1953]
    assert "collision" in events[0].reason
    # The next frames decide at once; a real frame with 0xFF inside is kept.
    events = dec.feed(h("FF 02 FF 00 00") + h("FF 07 A1 A7") * 3)
    assert [f.distance_mm for f in frames(events)] == [767, 1953, 1953, 1953]


def test_cm_scale_and_aj_sr04m_checksum():
    (f,) = codec.FrameDecoder(scale_mm=10).feed(h("FF 01 A1 A1"))  # SEN0627: 417 cm
    assert f.distance_mm == 4170
    (g,) = codec.FrameDecoder(sum_header=False).feed(codec.encode_frame(1953, sum_header=False))
    assert g.distance_mm == 1953


def test_flush_and_expire():
    dec = codec.FrameDecoder()
    assert dec.feed(h("00 FF 07")) == [codec.Rejected(b"\x00", "no header ff")]
    (ev,) = dec.expire()
    assert ev.data == h("FF 07") and dec.buffered == 0
    assert dec.feed(h("FF 07")) == []
    (ev,) = dec.flush()
    assert "truncated" in ev.reason


def _check_accounting(dec, data: bytes, cuts: list[int], expire: bool, frame_len=None) -> None:
    events, pos = [], 0
    for c in cuts:
        events += dec.feed(data[pos:pos + c])
        pos += c
        if expire:
            events += dec.expire()
    events += dec.feed(data[pos:]) + dec.flush()
    assert accounted(events) == len(data)
    c = dec.counters
    if frame_len:
        assert c.discarded_bytes + frame_len * c.frames == len(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200).map(lambda b: bytes(x if x % 3 else 0xFF for x in b)),
       st.lists(st.integers(1, 16), max_size=12), st.booleans())
def test_arbitrary_bytes_never_crash_and_every_byte_is_accounted(data, cuts, expire):
    _check_accounting(codec.FrameDecoder(), data, cuts, expire, frame_len=4)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(b"R0123456789\r\rRx\xff"), max_size=200).map(bytes),
       st.lists(st.integers(1, 16), max_size=12), st.booleans(),
       st.sampled_from(["auto", "mm", "cm", "in"]))
def test_maxbotix_arbitrary_bytes_accounted(data, cuts, expire, units):
    _check_accounting(mb.FrameDecoder(units), data, cuts, expire)


def _corrupt_stream(rng: random.Random, make, garbage, corruption: float = 0.1):
    stream, intact = bytearray(), []
    for _ in range(40):
        if rng.random() < corruption:
            stream += bytes(garbage(rng) for _ in range(rng.randrange(1, 6)))
        f = make(rng)
        r = rng.random()
        if r < corruption / 2:
            f = f[: rng.randrange(1, len(f))]
        elif r < corruption:
            b = bytearray(f)
            b[rng.randrange(1, len(b))] ^= 1 << rng.randrange(8)
            f = bytes(b)
        else:
            intact.append(f)
        stream += f
    return bytes(stream), intact


def _decode_all(dec, stream: bytes) -> list:
    events = dec.feed(stream) + dec.expire() + dec.flush()
    assert accounted(events) == len(stream)
    return [e.raw for e in frames(events)]


def _ambiguous(dec) -> int:
    return getattr(dec.counters, "ambiguous", 0)


def _recovered(got: list[bytes], intact: list[bytes]) -> int:
    """How many intact frames appear in order in ``got``, extras allowed (longest
    common subsequence: repeated values make a greedy match undercount)."""
    prev = [0] * (len(got) + 1)
    for f in intact:
        row = [0]
        for j, g in enumerate(got):
            row.append(prev[j] + 1 if f == g else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


def _ff_noise(rng: random.Random) -> int:
    return 0xFF if rng.random() < 0.1 else rng.randrange(256)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32))
def test_every_intact_frame_recovered_from_corrupt_stream(seed):
    """A target moving about within 1.2 m (so 0xFF is often a data byte: 255, 511, 767 mm
    and sums of 0xFF) among 10 % damaged frames and line noise."""
    rng = random.Random(seed)
    walk = [rng.randrange(30, 1200)]

    def make(r: random.Random) -> bytes:
        walk[0] = max(30, min(1200, walk[0] + r.randrange(-40, 41)))
        return codec.encode_frame(walk[0])

    stream, intact = _corrupt_stream(rng, make, _ff_noise)
    dec = codec.FrameDecoder()
    got = _decode_all(dec, stream)
    # Every intact frame, except where a frame with 0xFF in it overlapped noise or a cut
    # frame so that both splits were good frames (the decoder counts those guesses).
    assert _recovered(got, intact) + _ambiguous(dec) >= len(intact)
    assert _ambiguous(dec) <= 2


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32))
def test_ff_heavy_stream_is_accounted_and_mostly_recovered(seed):
    """Every frame full of 0xFF and 0xFF-rich noise: some splits are truly ambiguous
    (``FF 01 FF FF 02 FF 00`` is 511 mm + 3 bytes of noise, or 3 bytes + 767 mm), so
    not every frame can be recovered; nearly all must be."""
    rng = random.Random(seed)
    stream, intact = _corrupt_stream(
        rng, lambda r: codec.encode_frame(r.choice([255, 511, 767, r.randrange(0x28) * 256 + 255])),
        lambda r: r.choice(b"\xff\xff\x00\x01\x02\xfe"))
    got = _decode_all(codec.FrameDecoder(), stream)
    assert _recovered(got, intact) >= 0.85 * len(intact)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32))
def test_maxbotix_every_intact_frame_recovered_from_corrupt_stream(seed):
    rng = random.Random(seed)

    def make(r: random.Random) -> bytes:
        if r.random() < 0.5:
            return mb.encode_frame(r.randrange(300, 5001), "mm")
        return mb.encode_frame(r.randrange(20, 766), "cm")

    stream, intact = _corrupt_stream(rng, make, lambda r: r.choice(b"RR0123\r\x00\xff"))
    got = _decode_all(mb.FrameDecoder(), stream)
    assert _recovered(got, intact) == len(intact)


# -- MaxBotix codec -----------------------------------------------------------------------
def test_maxbotix_reference_frames_and_units():
    events = mb.FrameDecoder().feed(b"R121\r" + h("52 31 32 33 34 0D"))
    assert [(f.value, f.units, f.d) for f in events] == [(121, "cm", 1.21), (1234, "mm", 1.234)]
    dec = mb.FrameDecoder("mm")
    ev = dec.feed(b"R121\rR1234\r")
    assert isinstance(ev[0], mb.Rejected) and "3 digits (expected 4)" in ev[0].reason
    assert ev[1].value == 1234
    (f,) = mb.FrameDecoder("in").feed(b"R100\r")
    assert f.d == pytest.approx(2.54)


def test_maxbotix_resyncs_on_r():
    data = b"\x2b\xc0R12R1234\r12\rR0300\r"
    events = mb.FrameDecoder().feed(data)
    assert [f.value for f in frames(events)] == [1234, 300]
    assert accounted(events) == len(data)


# -- no echo / range ---------------------------------------------------------------------
def test_no_echo_and_out_of_range_are_counted_not_read():
    p = DistanceProtocol(codec.FrameDecoder(), range_classifier(30, 4500))
    evs = p.receive(codec.encode_frame(0) + codec.encode_frame(30) + codec.encode_frame(31)
                    + codec.encode_frame(4501), 1.0)
    assert [type(e) for e in evs] == [Discarded, Discarded, Sample, Discarded]
    assert (p.no_echo, p.out_of_range, p.samples) == (2, 1, 1)


def test_maxbotix_max_range_is_no_target():
    from drivers.maxbotix.device import classifier
    p = DistanceProtocol(mb.FrameDecoder(), classifier())
    evs = p.receive(b"R5000\rR0300\rR765\rR764\r", 0.0)
    assert [type(e) for e in evs] == [Discarded, Sample, Discarded, Sample]
    assert p.no_echo == 2


def test_models_satisfy_device_model_and_encode_no_echo():
    for m in (A02YYUWModel(), JSNSR04TModel(), MaxBotixModel()):
        assert isinstance(m, DeviceModel)
    m = UltrasonicModel(constant(None), output="real-time", triggered=True)
    assert m.receive(b"\x55", 0.0) == [codec.encode_frame(0)]
    assert m.sent[-1].values is None and m.stats["no_echo"] == 1
    mx = MaxBotixModel(constant(None))
    mx.tick(0.0)
    assert mx.tick(1.0) == [b"R5000\r"]
    assert MaxBotixModel(constant(100.0), units="cm").measure(0) == 20  # closer: the minimum


def test_processed_output_is_a_median():
    vals = iter([1000.0, 3000.0, 1010.0, 1020.0])
    m = A02YYUWModel(lambda now: next(vals), noise_mm=0, triggered=True)
    out = [m.receive(b"\x00", 0.0)[0] for _ in range(4)]
    assert [codec.FrameDecoder().feed(o)[0].distance_mm for o in out] == [1000, 2000, 1010, 1020]


# -- over a real pty ---------------------------------------------------------------------------
emulate = emulate_fixture("sonar")


@pytest.fixture
def opened():
    devices = []

    def make(dev):
        devices.append(dev)
        dev.open()
        return dev

    yield make
    for d in devices:
        d.close()


def ramp(now: float) -> float:
    return 500.0 + (now * 1000) % 3000


def mm_of(readings) -> list[int]:
    return [round(r.values["d"] * 1000) for r in readings]


def sent_of(emu, model) -> list:
    with emu.lock:
        return [s.values for s in model.sent]


@pytest.mark.parametrize("output", ["processed", "real-time"])
def test_a02yyuw_round_trip(emulate, opened, output):
    model = A02YYUWModel(ramp, output=output, interval_s=0.02)
    emu = emulate(model)
    dev = opened(A02YYUW(emu.path, output=output))
    emu.start()
    got = poll_until(dev, lambda r: len(r) >= 8)
    assert_run_of(mm_of(got), sent_of(emu, model))
    assert all(set(r.values) == {"d"} and isinstance(r.values["d"], float) for r in got)
    assert dev.stats()["bad_frames"] == 0


def test_a02yyuw_no_echo_gives_no_readings_but_no_error(emulate, opened):
    state = {"mm": None}
    model = A02YYUWModel(lambda now: state["mm"], output="real-time", interval_s=0.02)
    emu = emulate(model)
    dev = opened(A02YYUW(emu.path, no_data_timeout_s=0.3))
    emu.start()
    poll_until(dev, lambda r: dev.stats()["no_echo"] >= 5)  # raises DeviceError if "silent"
    assert dev.stats()["readings"] == 0
    with emu.lock:
        state["mm"] = 1500.0
    got = poll_until(dev, lambda r: len(r) >= 2)
    assert all(abs(m - 1500) < 30 for m in mm_of(got))


def test_a02yyuw_with_faults_recovers_every_intact_frame(emulate, opened):
    faults = FaultInjector(noise=0.1, checksum=0.05, truncate=0.03, seed=3, header_len=1)
    model = A02YYUWModel(ramp, output="real-time", interval_s=0.01)
    emu = emulate(model, faults=faults)
    dev = opened(A02YYUW(emu.path))
    emu.start()
    got = poll_until(dev, lambda r: len(r) >= 40)
    with emu.lock:
        intact = list(faults.intact)
        sent = list(model.sent)
    raw_of = {s.raw: s.values for s in sent}
    expected = [raw_of[c] for c in intact if c in raw_of]
    got_mm = mm_of(got)
    # Every intact frame sent up to the last reading was decoded (but for counted guesses).
    upto = len(expected) - expected[::-1].index(got_mm[-1])
    missed = upto - _recovered(got_mm, expected[:upto])
    assert missed <= dev.stats()["ambiguous_splits"]
    assert faults.counts.damaged > 0 and dev.stats()["bad_frames"] > 0


def test_jsnsr04t_triggered_round_trip(emulate, opened):
    model = JSNSR04TModel(ramp, mode="triggered")
    emu = emulate(model)
    emu.start()
    dev = opened(JSNSR04T(emu.path, read_interval_s=0.02))
    got = poll_until(dev, lambda r: len(r) >= 5)
    assert_run_of(mm_of(got), sent_of(emu, model))
    assert model.stats["triggers"] >= 5 and all(s.solicited for s in model.sent)
    assert dev.stats()["triggers"] >= 5


def test_jsnsr04t_auto_round_trip_and_blind_zone(emulate, opened):
    vals = iter([200.0, 1800.0] * 1000)
    model = JSNSR04TModel(lambda now: next(vals), mode="auto", interval_s=0.02, noise_mm=0)
    emu = emulate(model)
    dev = opened(JSNSR04T(emu.path, mode="auto"))
    emu.start()
    got = poll_until(dev, lambda r: len(r) >= 3)
    assert set(mm_of(got)) == {1800} and dev.stats()["no_echo"] >= 2
    assert model.stats["triggers"] == 0


@pytest.mark.parametrize("units", ["mm", "cm"])
def test_maxbotix_round_trip_auto_detects_units(emulate, opened, units):
    model = MaxBotixModel(ramp, units=units, interval_s=0.02)
    emu = emulate(model)
    dev = opened(MaxBotix(emu.path))
    emu.start()
    got = poll_until(dev, lambda r: len(r) >= 5)
    scale = 1 if units == "mm" else 10
    assert_run_of([m // scale for m in mm_of(got)], sent_of(emu, model))
    assert dev.units == units


def test_maxbotix_no_target(emulate, opened):
    model = MaxBotixModel(constant(None), interval_s=0.02)
    emu = emulate(model)
    dev = opened(MaxBotix(emu.path))
    emu.start()
    assert poll_until(dev, lambda r: dev.stats()["no_echo"] >= 3) == []


# -- citynode frames -------------------------------------------------------------------------
@pytest.mark.parametrize("device, hex_text, expected", [
    ("a02yyuw", "FF 07 A1 A7", {"distance_mm": 1953, "d": 1.953}),
    ("jsnsr04t", "ff 07 a1 a7", {"distance_mm": 1953, "d": 1.953}),
    ("maxbotix", "52 31 32 33 34 0D", {"value": 1234, "units": "mm", "d": 1.234}),
])
def test_citynode_frames(capsys, device, hex_text, expected):
    assert cli_main(["frames", device, "--hex", hex_text + " 00"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["type"] == "frame" and expected.items() <= out[0].items()
    assert out[1]["type"] == "rejected"
    assert device in registry.known()
