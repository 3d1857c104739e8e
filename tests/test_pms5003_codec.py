"""PMS5003 codec and protocol: real frames, corrupt streams, the sensor's habits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.pms5003 import codec
from drivers.pms5003.protocol import Discarded, PMS5003Protocol, Sample

# Real frames from ../shared/reference/sensor-protocols.md section 1 (checksums verified there).
REAL_1 = bytes.fromhex("42 4d 00 1c 00 03 00 04 00 07 00 04 00 05 00 08"
                       "03 1b 00 f9 00 1b 00 06 00 03 00 03 9a 00 02 a2")
REAL_2 = bytes.fromhex("42 4D 00 1C 00 02 00 0A 00 0A 00 02 00 0A 00 0A"
                       "02 46 00 AF 00 31 00 16 00 00 00 00 97 00 02 AC")
ZERO = bytes.fromhex("42 4D 00 1C") + bytes(26) + bytes.fromhex("00 AB")
ZERO_VERSION = bytes.fromhex("42 4d 00 1c") + bytes(24) + bytes.fromhex("97 00 01 42")
ACK_PASSIVE = bytes.fromhex("42 4D 00 04 E1 00 01 74")
ACK_ACTIVE = bytes.fromhex("42 4D 00 04 E1 01 01 75")
ACK_SLEEP = bytes.fromhex("42 4D 00 04 E4 00 01 77")


def frames(events):
    return [e for e in events if isinstance(e, codec.Frame)]


def test_real_frame_1_decodes_as_documented():
    (f,) = codec.FrameDecoder().feed(REAL_1)
    assert (f.pm1_cf1, f.pm25_cf1, f.pm10_cf1) == (3, 4, 7)
    assert (f.pm1, f.pm25, f.pm10) == (4, 5, 8)
    assert (f.n0_3, f.n0_5, f.n1_0, f.n2_5, f.n5_0, f.n10) == (795, 249, 27, 6, 3, 3)
    assert (f.version, f.error) == (0x9A, 0)


def test_real_frame_2_decodes_as_documented():
    (f,) = codec.FrameDecoder().feed(REAL_2)
    assert (f.pm1_cf1, f.pm25_cf1, f.pm10_cf1, f.pm1, f.pm25, f.pm10) == (2, 10, 10, 2, 10, 10)
    assert (f.n0_3, f.n0_5, f.n1_0, f.n2_5, f.n5_0, f.n10) == (582, 175, 49, 22, 0, 0)
    assert f.version == 0x97


@pytest.mark.parametrize("raw", [ZERO, ZERO_VERSION])
def test_zero_frames(raw):
    dec = codec.FrameDecoder()
    # A frame ending in 0x42 waits for the next byte (a frame may start there): at the
    # end of input, flush() decides.
    (f,) = dec.feed(raw) + dec.flush()
    assert f.pm25 == 0 and f.n0_3 == 0


@pytest.mark.parametrize("raw,cmd,data", [(ACK_PASSIVE, 0xE1, 0), (ACK_ACTIVE, 0xE1, 1),
                                          (ACK_SLEEP, 0xE4, 0)])
def test_real_acks_interleaved_with_frames(raw, cmd, data):
    events = codec.FrameDecoder().feed(REAL_1 + raw + REAL_2)
    assert [type(e) for e in events] == [codec.Frame, codec.Ack, codec.Frame]
    assert (events[1].cmd, events[1].data) == (cmd, data)


@pytest.mark.parametrize("cmd,expected", [
    (codec.READ, "42 4D E2 00 00 01 71"),
    (codec.SET_PASSIVE, "42 4D E1 00 00 01 70"),
    (codec.SET_ACTIVE, "42 4D E1 00 01 01 71"),
    (codec.SLEEP, "42 4D E4 00 00 01 73"),
    (codec.WAKE, "42 4D E4 00 01 01 74"),
])
def test_command_bytes_match_datasheet(cmd, expected):
    assert cmd == bytes.fromhex(expected)


def test_encoders_reproduce_real_bytes():
    assert codec.encode_frame(3, 4, 7, 4, 5, 8, (795, 249, 27, 6, 3, 3), version=0x9A) == REAL_1
    assert codec.encode_ack(0xE1, 0) == ACK_PASSIVE
    assert codec.parse_command(codec.SET_PASSIVE) == (0xE1, 0)
    assert codec.parse_command(codec.SET_PASSIVE[:-1] + b"\x00") is None


def test_byte_at_a_time_equals_all_at_once():
    stream = b"\x00\xff" + REAL_1 + ACK_PASSIVE + REAL_2
    dec = codec.FrameDecoder()
    one = [e for b in stream for e in dec.feed(bytes([b]))]
    assert frames(one) == frames(codec.FrameDecoder().feed(stream))
    assert len(frames(one)) == 2


def test_checksum_failure_slides_by_one_and_finds_frame_inside():
    # A corrupt frame whose body contains a complete valid frame start: sliding by
    # one byte (not skipping the whole 32 bytes) finds it.
    bad = bytearray(REAL_1)
    bad[31] ^= 0xFF
    stream = bytes(bad[:6]) + REAL_2
    dec = codec.FrameDecoder()
    events = dec.feed(stream)
    assert frames(events) == [codec.FrameDecoder().feed(REAL_2)[0]]
    rejected = [e for e in events if isinstance(e, codec.Rejected)]
    assert sum(len(r.data) for r in rejected) == 6
    assert dec.counters.bad_frames == 1 and dec.counters.discarded_bytes == 6


def test_checksum_mismatch_is_reported_with_reason():
    bad = bytearray(REAL_1)
    bad[10] ^= 0x01
    events = codec.FrameDecoder().feed(bytes(bad))
    assert not frames(events)
    assert "checksum mismatch" in events[0].reason


def test_checksum_valid_but_impossible_frames_are_rejected():
    # pm1 > pm2.5: no real sensor says that, whatever the checksum.
    bad = codec.encode_frame(50, 10, 60, 5, 10, 20, (100, 50, 20, 5, 1, 0))
    good = codec.encode_frame(5, 10, 60, 5, 10, 20, (100, 50, 20, 5, 1, 0))
    dec = codec.FrameDecoder()
    events = dec.feed(bad + good) + dec.flush()
    assert [e.raw for e in events if isinstance(e, codec.Frame)] == [good]
    assert any("implausible" in e.reason for e in events if isinstance(e, codec.Rejected))
    growing = codec.encode_frame(1, 2, 3, 1, 2, 3, (10, 50, 20, 5, 1, 0))
    assert not frames(codec.FrameDecoder().feed(growing) + codec.FrameDecoder().flush())


def test_collision_is_decided_when_the_inner_frame_completes():
    """A frame cut one byte short whose missing checksum byte equals the next frame's
    0x42 passes the sum; the decoder waits for the inner frame, in any chunking."""
    inner = REAL_2
    cut = None
    for pm10 in range(400, 700):
        f = codec.encode_frame(1, 20, 400, 1, 20, pm10, (900, 500, 300, 100, 50, 10))
        if f[-1] == inner[0]:
            cut = f[:-1]
            break
    assert cut is not None
    stream = cut + inner
    for split in (32, 40, 63, 64):
        dec = codec.FrameDecoder()
        events = dec.feed(stream[:split]) + dec.feed(stream[split:]) + dec.flush()
        assert [e.raw for e in events if isinstance(e, codec.Frame)] == [inner], split


def test_bad_length_field_rejected():
    events = codec.FrameDecoder().feed(b"BM\x00\x99" + REAL_1)
    assert "bad length field 153" in events[0].reason
    assert len(frames(events)) == 1


def test_noise_ending_in_start_byte_does_not_lose_next_frame():
    # Line noise ending in 0x42 right before a frame: a one-byte-header parser would lose it.
    events = codec.FrameDecoder().feed(b"\x42\x42\x4d\x42" + REAL_1)
    assert len(frames(events)) == 1


def test_flush_reports_truncated_tail():
    dec = codec.FrameDecoder()
    assert frames(dec.feed(REAL_1 + REAL_2[:10])) and dec.buffered == 10
    (tail,) = dec.flush()
    assert tail.reason.startswith("truncated") and tail.data == REAL_2[:10]


def _random_frame(rng: random.Random) -> bytes:
    """A plausible frame: masses and counts are cumulative, as the sensor's are."""
    cf1 = sorted(rng.randrange(0, 1000) for _ in range(3))
    atm = sorted(rng.randrange(0, 1000) for _ in range(3))
    counts = tuple(sorted((rng.randrange(0, 65536) for _ in range(6)), reverse=True))
    return codec.encode_frame(*cf1, *atm, counts, version=rng.randrange(256))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(1, 64), max_size=20))
def test_arbitrary_bytes_never_crash_and_every_byte_is_accounted(data, cuts):
    dec = codec.FrameDecoder()
    events, pos = [], 0
    for c in cuts:
        events += dec.feed(data[pos:pos + c])
        pos += c
    events += dec.feed(data[pos:])
    events += dec.flush()
    accounted = sum(len(e.raw) if not isinstance(e, codec.Rejected) else len(e.data)
                    for e in events)
    assert accounted == len(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.floats(0.0, 0.3))
def test_every_intact_frame_recovered_from_corrupt_stream(seed, corruption):
    """Frames separated by garbage and damaged frames: every undamaged frame comes out."""
    rng = random.Random(seed)
    stream = bytearray()
    intact = []
    for _ in range(30):
        if rng.random() < corruption:
            stream += bytes(rng.choice([0x42, 0x4D, 0x00, 0x1C, rng.randrange(256)])
                            for _ in range(rng.randrange(1, 10)))
        f = _random_frame(rng)
        r = rng.random()
        if r < corruption / 2:
            f = f[: rng.randrange(1, len(f))]  # truncated
        elif r < corruption:
            b = bytearray(f)
            b[rng.randrange(4, 30)] ^= 1 << rng.randrange(8)  # bit flip
            f = bytes(b)
        else:
            intact.append(f)
        stream += f
    dec = codec.FrameDecoder()
    got = [e.raw for e in dec.feed(bytes(stream)) + dec.flush() if isinstance(e, codec.Frame)]
    # Every intact frame appears, in order (a corrupt one can, very rarely, hide a
    # valid-looking frame: that one would show as an extra, never as a loss).
    it = iter(got)
    assert all(any(g == f for g in it) for f in intact)


# -- the protocol state machine ---------------------------------------------------
def test_passive_start_wakes_and_sets_passive():
    p = PMS5003Protocol("passive", warmup_s=30)
    p.start(now=0)
    assert p.data_to_send() == codec.WAKE + codec.SET_PASSIVE
    p.request_read()
    assert p.data_to_send() == codec.READ


def test_warmup_readings_discarded():
    p = PMS5003Protocol("passive", warmup_s=30)
    p.start(now=0)
    p.data_to_send()
    p.request_read()
    (ev,) = p.receive(REAL_1, now=10)
    assert isinstance(ev, Discarded) and ev.reason == "warming up"
    p.request_read()
    (ev,) = p.receive(REAL_1, now=31)
    assert isinstance(ev, Sample)
    assert p.discarded_warmup == 1


def test_passive_reasserted_after_every_wake():
    p = PMS5003Protocol("passive", warmup_s=0)
    p.start(0)
    p.data_to_send()
    p.sleep()
    assert p.data_to_send() == codec.SLEEP
    p.wake(100)
    assert p.data_to_send() == codec.WAKE + codec.SET_PASSIVE


def test_unasked_frames_in_passive_mode_reassert_passive_once_per_holdoff():
    p = PMS5003Protocol("passive", warmup_s=0)
    p.start(0)
    p.data_to_send()
    p.receive(REAL_1, now=10)  # nobody asked: the sensor is in active mode again
    assert p.data_to_send() == codec.SET_PASSIVE
    p.receive(REAL_1, now=11)  # within the hold-off: not again
    assert p.data_to_send() == b""
    p.receive(REAL_1, now=20)
    assert p.data_to_send() == codec.SET_PASSIVE
    assert p.reasserts == 2


def test_active_mode_start_sends_active():
    p = PMS5003Protocol("active", warmup_s=0)
    p.start(0)
    assert p.data_to_send() == codec.WAKE + codec.SET_ACTIVE
    (ev,) = p.receive(REAL_2, now=1)
    assert isinstance(ev, Sample) and ev.frame.pm25 == 10


def test_protocol_rejects_bad_arguments():
    with pytest.raises(ValueError):
        PMS5003Protocol("sleepy")
    with pytest.raises(ValueError):
        PMS5003Protocol("passive", warmup_s=-1)


def test_noise_that_looks_like_a_long_frame_start_is_expired_on_silence():
    # "BM 00 24" announces a 40-byte PMS5003ST frame; a real 32-byte frame follows,
    # then the line goes quiet (passive mode). The decoder must not sit on it.
    dec = codec.FrameDecoder()
    assert frames(dec.feed(b"BM\x00\x24" + REAL_1)) == []
    events = dec.expire()
    assert events[0].reason == "incomplete frame, then silence"
    assert [f.raw for f in frames(events)] == [REAL_1]
    assert dec.expire() == [] and dec.buffered == 0


def test_protocol_line_idle_yields_the_frame_as_a_sample():
    p = PMS5003Protocol("active", warmup_s=0)
    p.start(0)
    assert not [e for e in p.receive(b"BM\x00\x24" + REAL_2, now=1) if isinstance(e, Sample)]
    samples = [e for e in p.line_idle(now=2) if isinstance(e, Sample)]
    assert samples and samples[0].frame.pm25 == 10
