"""SDS011: datasheet bytes, corrupt streams, the host's habits, the emulator over a real pty."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serial_helpers import Limited, assert_run_of, emulate_fixture, host_fixture, poll_until

from agent.tools.cli import main as cli_main
from drivers.base import DeviceGone, Reading
from drivers.emulation import DeviceModel, FaultInjector, SerialEmulator
from drivers.pms5003.emulator import PMValues
from drivers.sds011 import SDS011, codec, protocol
from drivers.sds011.emulator import SDS011Model, SDSValues, WithTenths, coerce_values
from drivers.sds011.protocol import (
    Discarded,
    NoReply,
    ReplyMismatch,
    Sample,
    SDS011Protocol,
)

A160 = 0xA160


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def cmd_hex(cmd: int, d3: int, d4: int, dev: str, chk: int) -> bytes:
    """The reference's "…" shorthand: 12 data bytes, d3 and d4 first, the rest zero."""
    return bytes([0xAA, 0xB4, cmd, d3, d4]) + bytes(10) + h(dev) + bytes([chk, 0xAB])


# Nova "Laser Dust Sensor Control Protocol V1.3" examples (sensor-protocols.md section 2).
DOC_DATA = h("AA C0 D4 04 3A 0A A1 60 1D AB")  # PM2.5 123.6, PM10 261.8, id A160
DOC_COMMANDS = [
    (codec.query_reporting_mode(), "AA B4 02 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 00 AB"),
    (codec.set_reporting_mode("query", A160),
     "AA B4 02 01 01 00 00 00 00 00 00 00 00 00 00 A1 60 05 AB"),
    (codec.query_data(), "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
    (codec.query_data(A160), "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 05 AB"),
    (codec.set_device_id(0xA001, A160),
     "AA B4 05 00 00 00 00 00 00 00 00 00 00 A0 01 A1 60 A7 AB"),
    (codec.sleep(A160), "AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 A1 60 08 AB"),
    (codec.work(A160), "AA B4 06 01 01 00 00 00 00 00 00 00 00 00 00 A1 60 09 AB"),
    (codec.query_working(A160), "AA B4 06 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 07 AB"),
    (codec.set_working_period(1, A160),
     "AA B4 08 01 01 00 00 00 00 00 00 00 00 00 00 A1 60 0B AB"),
    (codec.set_working_period(0, A160),
     "AA B4 08 01 00 00 00 00 00 00 00 00 00 00 00 A1 60 0A AB"),
    (codec.query_working_period(A160),
     "AA B4 08 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 09 AB"),
    (codec.query_firmware(A160), "AA B4 07 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 08 AB"),
]
# The broadcast-id variants the reference computed with the same rule.
BROADCAST = [
    (codec.SET_QUERY, cmd_hex(0x02, 1, 1, "FF FF", 0x02)),
    (codec.SET_ACTIVE, cmd_hex(0x02, 1, 0, "FF FF", 0x01)),
    (codec.SLEEP, h("AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 05 AB")),
    (codec.WORK, cmd_hex(0x06, 1, 1, "FF FF", 0x06)),
    (codec.set_working_period(1), cmd_hex(0x08, 1, 1, "FF FF", 0x08)),
    (codec.set_working_period(0), cmd_hex(0x08, 1, 0, "FF FF", 0x07)),
    (codec.FIRMWARE, cmd_hex(0x07, 0, 0, "FF FF", 0x05)),
]
# Replies and what they mean (JSON as `citynode frames` prints it, less "cmd").
DOC_REPLIES = [
    ("AA C5 02 00 00 00 A1 60 03 AB", {"command": "reporting_mode", "op": "query",
                                       "mode": "active"}),
    ("AA C5 02 00 01 00 A1 60 04 AB", {"command": "reporting_mode", "op": "query",
                                       "mode": "query"}),
    ("AA C5 02 01 01 00 A1 60 05 AB", {"command": "reporting_mode", "op": "set",
                                       "mode": "query"}),
    # The datasheet captions it "Sensor with ID A160 response" and prints it oddly spaced;
    # by the rule it is the reply from the sensor under its *new* id A001, checksum
    # 05+A0+01 = A6, which is exactly these bytes.
    ("AA C5 05 00 00 00 A0 01 A6 AB", {"command": "set_device_id", "device_id": "a001"}),
    ("AA C5 06 01 00 00 A1 60 08 AB", {"command": "sleep_work", "op": "set", "state": "sleep"}),
    ("AA C5 06 01 01 00 A1 60 09 AB", {"command": "sleep_work", "op": "set", "state": "work"}),
    ("AA C5 06 00 01 00 A1 60 08 AB", {"command": "sleep_work", "op": "query", "state": "work"}),
    # The datasheet says "working" for this one too (a typo): byte 4 = 0 is sleeping.
    ("AA C5 06 00 00 00 A1 60 07 AB", {"command": "sleep_work", "op": "query", "state": "sleep"}),
    ("AA C5 08 01 01 00 A1 60 0B AB", {"command": "working_period", "op": "set",
                                       "period_min": 1}),
    ("AA C5 08 01 00 00 A1 60 0A AB", {"command": "working_period", "op": "set",
                                       "period_min": 0}),
    ("AA C5 08 00 02 00 A1 60 0B AB", {"command": "working_period", "op": "query",
                                       "period_min": 2}),
    ("AA C5 07 0F 07 0A A1 60 28 AB", {"command": "firmware", "firmware": "15-07-10"}),
]
SET_ID_REPLY = h("AA C5 05 00 00 00 A0 01 A6 AB")


def frames(events):
    return [e for e in events if isinstance(e, codec.Frame)]


# -- codec: the datasheet's bytes ------------------------------------------------------
def test_datasheet_data_frame_decodes_as_documented():
    (f,) = codec.FrameDecoder().feed(DOC_DATA)
    assert (f.pm25, f.pm10, f.device_id) == (123.6, 261.8, A160)
    assert f.as_dict() == {"pm25": 123.6, "pm10": 261.8, "device_id": "a160"}
    assert codec.encode_frame(123.6, 261.8, A160) == DOC_DATA
    # The checksum worked as in the Arduino sketch: D4+04+3A+0A+A1+60 = 0x021D -> 1D.
    assert sum(DOC_DATA[2:8]) == 0x021D


@pytest.mark.parametrize("built,expected", DOC_COMMANDS)
def test_datasheet_commands_built_byte_for_byte(built, expected):
    assert built == h(expected)
    c = codec.parse_command(built)
    assert c is not None and c.cmd == built[2] and c.data == built[3:15]
    assert c.device_id == int.from_bytes(built[15:17], "big")


@pytest.mark.parametrize("built,expected", BROADCAST)
def test_broadcast_commands_built_byte_for_byte(built, expected):
    assert built == expected and codec.parse_command(built).device_id == codec.ANY_ID


@pytest.mark.parametrize("raw,meaning", DOC_REPLIES)
def test_datasheet_replies_decode_and_encode(raw, meaning):
    data = h(raw)
    (r,) = codec.FrameDecoder().feed(data)
    assert isinstance(r, codec.Reply)
    d = r.as_dict()
    assert {k: d[k] for k in meaning} == meaning
    assert codec.encode_reply(r.cmd, r.data, r.device_id) == data


def test_set_id_reply_follows_the_rule_with_the_new_id():
    assert codec.encode_reply(codec.CMD_SET_ID, (0, 0, 0), 0xA001) == SET_ID_REPLY
    # Built from the old id, as the caption suggests, it would be different bytes.
    assert codec.encode_reply(codec.CMD_SET_ID, (0, 0, 0), A160) == h(
        "AA C5 05 00 00 00 A1 60 06 AB")


def test_firmware_reply_fields():
    (r,) = codec.FrameDecoder().feed(h("AA C5 07 0F 07 0A A1 60 28 AB"))
    assert r.firmware == (15, 7, 10) and r.op is None and r.device_id == A160


def test_command_builders_refuse_out_of_range():
    with pytest.raises(ValueError):
        codec.set_working_period(31)
    with pytest.raises(ValueError):
        codec.set_reporting_mode("passive")
    with pytest.raises(ValueError):
        codec.set_device_id(0x10000)
    with pytest.raises(ValueError):
        codec.command(0x02, bytes(13))
    assert codec.parse_command(DOC_COMMANDS[0][0][:-1] + b"\x00") is None  # bad tail
    bad = bytearray(codec.SLEEP)
    bad[17] ^= 1
    assert codec.parse_command(bad) is None


def test_encode_frame_rounds_and_clamps():
    (f,) = codec.FrameDecoder().feed(codec.encode_frame(12.34, 2000.0, 1))
    assert (f.pm25, f.pm10, f.device_id) == (12.3, 999.9, 1)


# -- codec: streams ------------------------------------------------------------------
def test_replies_interleaved_with_frames_byte_at_a_time():
    stream = b"\x00\xff" + DOC_DATA + h(DOC_REPLIES[0][0]) + SET_ID_REPLY + DOC_DATA
    dec = codec.FrameDecoder()
    one = [e for b in stream for e in dec.feed(bytes([b]))]
    assert [type(e) for e in one] == [codec.Rejected, codec.Rejected, codec.Frame, codec.Reply,
                                      codec.Reply, codec.Frame]
    assert [e.raw for e in frames(one)] == [e.raw for e in frames(codec.FrameDecoder().feed(
        stream))]
    assert dec.counters.frames == 2 and dec.counters.replies == 2
    assert dec.counters.discarded_bytes == 2 and dec.counters.bad_frames == 0


def test_checksum_failure_slides_by_one_and_finds_frame_inside():
    bad = bytearray(DOC_DATA)
    bad[8] ^= 0xFF
    other = codec.encode_frame(1.5, 2.5, 7)
    stream = bytes(bad[:6]) + other  # a frame cut short, the next one starts inside it
    dec = codec.FrameDecoder()
    events = dec.feed(stream)
    assert [f.raw for f in frames(events)] == [other]
    rejected = [e for e in events if isinstance(e, codec.Rejected)]
    assert sum(len(r.data) for r in rejected) == 6
    assert dec.counters.bad_frames == 1 and dec.counters.discarded_bytes == 6


@pytest.mark.parametrize("index,reason", [
    (8, "checksum mismatch: computed 1d, frame says 1c"),
    (3, "checksum mismatch: computed 1e, frame says 1d"),
    (9, "bad tail byte aa (expected ab)"),
])
def test_damaged_frame_reported_with_reason(index, reason):
    bad = bytearray(DOC_DATA)
    bad[index] ^= 0x01
    events = codec.FrameDecoder().feed(bytes(bad))
    assert not frames(events)
    assert events[0].reason == reason


def test_noise_with_header_bytes_does_not_lose_the_next_frame():
    # A lone AA, AA AA, a false AA C0 header and a host command (AA B4) before a frame.
    for noise in (b"\xaa", b"\xaa\xaa", b"\xaa\xc0\x01\xaa", codec.SLEEP, b"\xab\xaa\xc5"):
        events = codec.FrameDecoder().feed(noise + DOC_DATA)
        assert [f.raw for f in frames(events)] == [DOC_DATA], noise.hex()
        assert sum(len(e.data) for e in events if isinstance(e, codec.Rejected)) == len(noise)


def test_flush_and_expire():
    dec = codec.FrameDecoder()
    assert frames(dec.feed(DOC_DATA + DOC_DATA[:4])) and dec.buffered == 4
    (tail,) = dec.flush()
    assert tail.reason.startswith("truncated") and tail.data == DOC_DATA[:4]
    # A frame cut short, then silence: expire reports it now, the next frame is clean.
    assert dec.feed(DOC_DATA[:3]) == []
    (ev,) = dec.expire()
    assert ev.reason == "incomplete frame, then silence" and ev.data == DOC_DATA[:3]
    assert dec.expire() == [] and dec.buffered == 0 and dec.flush() == []
    # A false header in front of a frame never holds it back: every frame is 10 bytes.
    assert [f.raw for f in frames(dec.feed(b"\xaa\xc5\x00" + DOC_DATA))] == [DOC_DATA]
    # Cut short with a header-like byte at the end: only the part before it goes.
    assert dec.feed(b"\xaa\xc0\x01\xaa") == []
    (ev,) = dec.expire()
    assert ev.data == b"\xaa\xc0\x01" and dec.buffered == 1
    assert [f.raw for f in frames(dec.feed(DOC_DATA[1:]))] == [DOC_DATA]
    assert dec.counters.bad_frames == 4


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 32), max_size=20),
       st.booleans())
def test_arbitrary_bytes_never_crash_and_every_byte_is_accounted(data, cuts, expire):
    dec = codec.FrameDecoder()
    events, pos = [], 0
    for c in cuts:
        events += dec.feed(data[pos:pos + c])
        pos += c
        if expire:
            events += dec.expire()
    events += dec.feed(data[pos:])
    events += dec.flush()
    accounted = sum(len(e.data) if isinstance(e, codec.Rejected) else len(e.raw)
                    for e in events)
    assert accounted == len(data)
    c = dec.counters
    assert c.discarded_bytes + 10 * (c.frames + c.replies) == len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: bytes(x if x % 3 else 0xAA for x in b)))
def test_header_heavy_noise_is_accounted(data):
    dec = codec.FrameDecoder()
    events = dec.feed(data) + dec.flush()
    assert sum(len(e.data) if isinstance(e, codec.Rejected) else len(e.raw)
               for e in events) == len(data)


def _random_chunk(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return codec.encode_reply(rng.choice([2, 5, 6, 7, 8]),
                                  (rng.randrange(2), rng.randrange(31), 0), rng.randrange(65536))
    return codec.encode_frame(rng.randrange(10000) / 10, rng.randrange(10000) / 10,
                              rng.randrange(65536))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.floats(0.0, 0.4))
def test_every_intact_frame_recovered_from_corrupt_stream(seed, corruption):
    """Frames and replies among garbage and damaged frames: every undamaged one comes out."""
    rng = random.Random(seed)
    stream = bytearray()
    intact = []
    for _ in range(30):
        if rng.random() < corruption:
            stream += bytes(rng.choice([0xAA, 0xAB, 0xC0, 0xC5, 0x00, rng.randrange(256)])
                            for _ in range(rng.randrange(1, 10)))
        f = _random_chunk(rng)
        r = rng.random()
        if r < corruption / 2:
            f = f[: rng.randrange(1, len(f))]  # truncated
        elif r < corruption:
            b = bytearray(f)
            b[rng.randrange(2, 10)] ^= 1 << rng.randrange(8)  # bit flip after the header
            f = bytes(b)
        else:
            intact.append(f)
        stream += f
    dec = codec.FrameDecoder()
    got = [e.raw for e in dec.feed(bytes(stream)) + dec.expire()
           if not isinstance(e, codec.Rejected)]
    # Every intact frame appears, in order (noise can, very rarely, look like a valid
    # frame: that would show as an extra, never as a loss).
    it = iter(got)
    assert all(any(g == f for g in it) for f in intact)


# -- protocol --------------------------------------------------------------------------
def reply(cmd: int, r3: int = 0, r4: int = 0, r5: int = 0, dev: int = A160) -> bytes:
    return codec.encode_reply(cmd, (r3, r4, r5), dev)


def started(mode: str = "query", warmup_s: float = 0.0, **kw) -> SDS011Protocol:
    """A protocol that has been through its start-up exchange with a sensor id A160."""
    p = SDS011Protocol(mode, warmup_s, **kw)
    p.start(0.0)
    p.data_to_send()
    p.receive(reply(6, 1, 1), 0.01)
    p.receive(reply(2, 1, codec.REPORT_MODES.index(mode)), 0.02)
    p.receive(reply(8, 1, p.period_min), 0.03)
    p.receive(reply(7, 15, 7, 10), 0.04)
    assert not p.busy and p.mismatches == 0
    p.data_to_send()
    return p


def test_start_sends_one_command_at_a_time_and_tracks_what_the_sensor_says():
    p = SDS011Protocol("query", warmup_s=15)
    p.start(0.0)
    assert p.data_to_send() == codec.WORK
    assert p.receive(reply(6, 1, 1), 0.1) == [codec.FrameDecoder().feed(reply(6, 1, 1))[0]]
    assert p.data_to_send() == codec.SET_QUERY
    p.receive(reply(2, 1, 1), 0.2)
    assert p.data_to_send() == codec.set_working_period(0)
    p.receive(reply(8, 1, 0), 0.3)
    assert p.data_to_send() == codec.FIRMWARE
    p.receive(reply(7, 15, 7, 10), 0.4)
    assert p.data_to_send() == b"" and not p.busy
    assert p.firmware == (15, 7, 10) and p.sensor_id == A160
    assert (p.sensor_mode, p.sensor_working, p.sensor_period) == ("query", True, 0)
    assert p.confirmed == 4 and p.mismatches == 0
    p.request_read()
    assert p.data_to_send() == codec.QUERY_DATA


def test_active_mode_start_sets_active_mode_and_period():
    p = SDS011Protocol("active", warmup_s=0, period_min=5)
    p.start(0.0)
    p.receive(reply(6, 1, 1), 0.1)
    p.data_to_send()
    p.receive(reply(2, 1, 0), 0.2)
    assert p.data_to_send() == codec.set_working_period(5)
    p.request_read()  # active mode: the sensor reports by itself
    assert p.data_to_send() == b""


def test_warmup_readings_discarded():
    p = SDS011Protocol("query", warmup_s=15)
    p.start(now=0)
    p.request_read()
    (ev,) = p.receive(DOC_DATA, now=10)
    assert isinstance(ev, Discarded) and ev.reason == "warming up"
    p.request_read()
    (ev,) = p.receive(DOC_DATA, now=15.5)
    assert isinstance(ev, Sample) and (ev.frame.pm25, ev.frame.pm10) == (123.6, 261.8)
    assert p.discarded_warmup == 1
    p.sleep(20)
    (ev,) = p.receive(DOC_DATA, now=21)
    assert isinstance(ev, Discarded) and ev.reason == "sensor should be asleep"
    p.wake(30)
    assert p.warming_up(44.9) and not p.warming_up(45.0)
    (ev,) = p.receive(DOC_DATA, now=31)
    assert ev.reason == "warming up"


def test_zero_frames_are_no_data_yet():
    p = started()
    p.request_read()
    (ev,) = p.receive(codec.encode_frame(0, 0, A160), 1.0)
    assert isinstance(ev, Discarded) and "no data yet" in ev.reason and p.discarded_zero == 1
    (ev,) = p.receive(codec.encode_frame(0, 0.1, A160), 1.1)
    assert isinstance(ev, Sample)


def test_reply_with_another_value_is_a_mismatch():
    p = SDS011Protocol("query", warmup_s=0)
    p.start(0.0)
    p.receive(reply(6, 1, 1), 0.1)
    assert p.data_to_send() == codec.WORK + codec.SET_QUERY
    (ev,) = p.receive(reply(2, 1, 0), 0.2)  # "set query mode" answered with "active"
    assert isinstance(ev, ReplyMismatch) and ev.expected.cmd == codec.CMD_REPORT_MODE
    assert ev.reason == "set query mode: sensor says active"
    assert p.mismatches == 1 and p.sensor_mode == "active"
    # The sensor did answer this command: the next one goes out.
    assert p.data_to_send() == codec.set_working_period(0)


def test_reply_to_another_command_is_a_mismatch_and_the_command_stays_in_flight():
    p = started()
    p.set_working_period(3, now=1.0)
    assert p.data_to_send() == codec.set_working_period(3)
    (ev,) = p.receive(reply(2, 1, 0), 1.1)
    assert isinstance(ev, ReplyMismatch) and ev.reason.startswith(
        "reply to command 02 while waiting for 08")
    assert p.busy
    (ev,) = p.receive(reply(8, 1, 3), 1.2)
    assert isinstance(ev, codec.Reply) and not p.busy and p.sensor_period == 3
    (ev,) = p.receive(reply(6, 1, 1), 1.3)  # nothing in flight
    assert isinstance(ev, ReplyMismatch) and ev.expected is None
    assert p.mismatches == 2
    with pytest.raises(ValueError):  # out of range: never sent
        p.set_working_period(31, now=2.0)


def test_reply_from_another_device_is_a_mismatch():
    p = SDS011Protocol("query", warmup_s=0, device_id=A160)
    p.start(0.0)
    assert p.data_to_send() == codec.work(A160)
    (ev,) = p.receive(reply(6, 1, 1, dev=0x1234), 0.1)
    assert isinstance(ev, ReplyMismatch) and "reply from device 1234, expected a160" in ev.reason
    # Its frames are not ours either.
    p.request_read()
    evs = [e for e in p.receive(codec.encode_frame(1, 2, 0x1234), 0.2) if isinstance(e, Discarded)]
    assert evs and evs[0].reason == "frame from device 1234, expected a160"


def test_unanswered_command_is_resent_then_given_up():
    p = SDS011Protocol("query", warmup_s=0, reply_timeout_s=1.0, retries=2)
    p.start(0.0)
    assert p.data_to_send() == codec.WORK
    assert p.tick(0.9) == [] and p.data_to_send() == b""
    assert p.tick(1.0) == [] and p.data_to_send() == codec.WORK  # the MCU was asleep
    assert p.tick(2.0) == [] and p.data_to_send() == codec.WORK
    (ev,) = p.tick(3.0)
    assert isinstance(ev, NoReply) and ev.attempts == 3 and ev.request.description == "work"
    assert p.data_to_send() == codec.SET_QUERY  # on with the next command
    assert (p.resends, p.no_replies) == (2, 1)


def test_late_duplicate_reply_is_not_a_mismatch():
    p = SDS011Protocol("query", warmup_s=0, reply_timeout_s=0.5)
    p.start(0.0)
    p.data_to_send()
    p.tick(0.5)  # resent: both tries will be answered
    assert p.data_to_send() == codec.WORK
    p.receive(reply(6, 1, 1), 0.6)
    assert p.data_to_send() == codec.SET_QUERY
    assert p.receive(reply(6, 1, 1), 0.7) == []
    assert p.duplicates == 1 and p.mismatches == 0 and p.busy


def test_sleep_and_wake_replace_each_other_in_the_queue():
    p = started()
    p.set_working_period(2, now=1.0)
    p.sleep(1.0)
    p.wake(1.1)
    p.sleep(1.2)
    assert p.data_to_send() == codec.set_working_period(2)
    p.receive(reply(8, 1, 2), 1.3)
    assert p.data_to_send() == codec.SLEEP and p.asleep
    p.receive(reply(6, 1, 0), 1.4)
    assert not p.busy and p.sensor_working is False
    p.request_read()
    assert p.data_to_send() == b""  # no queries while asleep


def test_set_device_id_then_commands_go_to_the_new_id():
    p = started(device_id=A160)
    p.set_device_id(0xA001, now=1.0)
    assert p.data_to_send() == h(DOC_COMMANDS[4][1])
    (ev,) = p.receive(SET_ID_REPLY, 1.1)
    assert isinstance(ev, codec.Reply) and p.device_id == 0xA001 and p.sensor_id == 0xA001
    p.request_read()
    assert p.data_to_send() == codec.query_data(0xA001)


def test_unasked_frames_in_query_mode_reassert_query_mode_once_per_holdoff():
    p = started()
    p.receive(DOC_DATA, now=10)  # nobody asked: the sensor is in active mode
    assert p.data_to_send() == codec.SET_QUERY
    p.receive(reply(2, 1, 1), 10.1)
    p.receive(DOC_DATA, now=11)  # within the hold-off: not again
    assert p.data_to_send() == b""
    p.receive(DOC_DATA, now=20)
    assert p.data_to_send() == codec.SET_QUERY and p.reasserts == 2


def test_protocol_rejects_bad_arguments():
    for kw in ({"mode": "passive"}, {"warmup_s": -1}, {"period_min": 31},
               {"device_id": 0x10000}, {"reply_timeout_s": 0}):
        with pytest.raises(ValueError):
            SDS011Protocol(**kw)


# -- the emulator, sans I/O ---------------------------------------------------------------
def counter() -> Iterator[SDSValues]:
    """Every frame different, so a received value names the frame it came from."""
    for i in itertools.count(1):
        yield SDSValues(i / 10, i / 10 + 1.5)


def only_frame(chunks: list[bytes]) -> codec.Frame:
    (event,) = codec.FrameDecoder().feed(b"".join(chunks))
    assert isinstance(event, codec.Frame)
    return event


def test_model_satisfies_the_device_model_protocol():
    assert isinstance(SDS011Model(), DeviceModel)


def test_active_mode_after_power_up_one_frame_per_second():
    m = SDS011Model(counter(), warmup_s=0)
    assert m.tick(100.0) == []  # power-up
    assert m.tick(100.9) == []
    f = only_frame(m.tick(101.0))
    assert (f.pm25, f.pm10, f.device_id) == (0.1, 1.6, A160)
    assert m.sent[-1].values == SDSValues(0.1, 1.6) and not m.sent[-1].solicited
    assert only_frame(m.tick(102.0)).pm25 == 0.2
    assert len(m.tick(200.0)) == 1 and m.tick(200.5) == []  # no burst after a stall


def test_model_answers_the_datasheet_commands_byte_for_byte():
    m = SDS011Model(iter([(123.6, 261.8)]), warmup_s=0)
    doc = {raw: h(x) for raw, x in DOC_COMMANDS}
    assert m.receive(codec.query_reporting_mode(), 0.0) == [h(DOC_REPLIES[0][0])]
    assert m.receive(codec.set_reporting_mode("query", A160), 0.1) == [h(DOC_REPLIES[2][0])]
    assert m.receive(codec.query_reporting_mode(), 0.2) == [h(DOC_REPLIES[1][0])]
    assert m.tick(5.0) == []  # query mode: silent until asked
    assert m.receive(doc[codec.query_data(A160)], 5.1) == [DOC_DATA]
    assert m.receive(codec.sleep(A160), 6.0) == [h("AA C5 06 01 00 00 A1 60 08 AB")]
    assert m.receive(codec.query_data(A160), 6.1) == []  # only wakes the MCU: lost
    assert m.receive(codec.query_working(A160), 6.2) == [h("AA C5 06 00 00 00 A1 60 07 AB")]
    assert m.receive(codec.work(A160), 6.3) == [h("AA C5 06 01 01 00 A1 60 09 AB")]
    assert m.receive(codec.query_working(A160), 6.4) == [h("AA C5 06 00 01 00 A1 60 08 AB")]
    assert m.receive(codec.set_working_period(1, A160), 7.0) == [
        h("AA C5 08 01 01 00 A1 60 0B AB")]
    assert m.receive(codec.set_working_period(0, A160), 7.1) == [
        h("AA C5 08 01 00 00 A1 60 0A AB")]
    m.receive(codec.set_working_period(2, A160), 7.2)
    assert m.receive(codec.query_working_period(A160), 7.3) == [
        h("AA C5 08 00 02 00 A1 60 0B AB")]
    assert m.receive(codec.query_firmware(A160), 7.4) == [h("AA C5 07 0F 07 0A A1 60 28 AB")]
    assert m.receive(codec.set_device_id(0xA001, A160), 8.0) == [SET_ID_REPLY]
    assert m.device_id == 0xA001
    assert m.stats["lost_commands"] == 1 and m.stats["bad_commands"] == 0


def test_model_ignores_other_ids_bad_checksums_and_unknown_commands():
    m = SDS011Model(counter(), warmup_s=0)
    assert m.receive(codec.set_reporting_mode("query", 0x1234), 0.0) == []
    assert m.stats["other_id"] == 1 and m.mode == "active"
    bad = bytearray(codec.SET_QUERY)
    bad[17] ^= 1
    assert m.receive(bytes(bad), 0.1) == [] and m.stats["bad_commands"] == 1
    bad = bytearray(codec.SET_QUERY)
    bad[18] = 0x00
    assert m.receive(bytes(bad), 0.1) == [] and m.stats["bad_commands"] == 2
    assert m.receive(codec.command(0x0A, [1, 1]), 0.2) == []
    assert m.receive(codec.command(0x02, [1, 7]), 0.2) == []  # no such mode
    assert m.mode == "active"
    # Garbage full of header bytes, then commands split byte by byte and glued together.
    out: list[bytes] = []
    for b in b"\xaa\xaa\xb4\x00\xab\xaa" + codec.SET_QUERY + codec.QUERY_DATA:
        out += m.receive(bytes([b]), 0.3)
    assert out[0] == codec.encode_reply(2, (1, 1, 0), A160) and len(out) == 2
    assert only_frame(out[1:]).pm25 == 0.1 and m.sent[-1].solicited
    # An out-of-range period is not taken: the reply says what is in force.
    assert m.receive(codec.command(0x08, [1, 31]), 0.4) == [codec.encode_reply(8, (1, 0, 0),
                                                                               A160)]


def test_working_period_sleeps_between_reports():
    m = SDS011Model(counter(), warmup_s=0, minute_s=1.0, work_s=0.3)
    m.tick(0.0)
    m.receive(codec.set_working_period(2), 10.0)  # a cycle starts now: 2 "minutes" = 2 s
    assert m.fan_on(10.1) and m.tick(10.2) == []
    assert only_frame(m.tick(10.3)).pm25 == 0.1  # after work_s of work
    assert not m.fan_on(10.5) and m.tick(11.9) == []
    assert m.fan_on(12.0) and m.tick(12.2) == []
    assert only_frame(m.tick(12.3)).pm25 == 0.2
    assert [s.t for s in m.sent] == [10.3, 12.3]
    # Query mode: the measurement is kept, and a query between reports gets it.
    m.receive(codec.SET_QUERY, 12.4)
    assert m.tick(14.3) == []
    assert only_frame(m.receive(codec.QUERY_DATA, 14.5)).pm25 == 0.3
    assert only_frame(m.receive(codec.QUERY_DATA, 14.6)).pm25 == 0.3
    # Back to continuous.
    m.receive(codec.set_working_period(0), 15.0)
    assert m.fan_on(15.5) and only_frame(m.receive(codec.QUERY_DATA, 15.5)).pm25 == 0.4


def test_working_period_reports_after_30_s_of_work_by_default():
    m = SDS011Model(counter(), warmup_s=15)
    m.tick(0.0)
    m.receive(codec.set_working_period(1), 0.0)
    assert m.tick(29.9) == []
    f = only_frame(m.tick(30.0))
    assert f.pm25 == 0.1 and not m.sent[-1].warming_up  # 30 s of work > 15 s warm-up
    assert m.tick(89.9) == [] and len(m.tick(90.0)) == 1


def test_warm_up_after_work_then_reset_keeps_stored_settings():
    m = SDS011Model(counter(), interval_s=0.5, warmup_s=2.0)
    m.tick(0.0)
    m.receive(codec.SLEEP, 0.25)
    assert m.asleep and m.tick(3.0) == []
    m.receive(codec.WORK, 4.0)  # lost: wakes the MCU
    assert m.asleep
    m.receive(codec.WORK, 4.5)
    assert not m.asleep and m.warming_up(4.5)
    f = only_frame(m.tick(5.0))
    assert (f.pm25, f.pm10) == (0, 0) and m.sent[-1].warming_up  # the fan spins up
    f = only_frame(m.tick(5.5))
    assert m.sent[-1].warming_up and (f.pm25, f.pm10) != (0.2, 1.7)  # erratic
    only_frame(m.tick(6.0))
    assert not m.warming_up(6.5)
    assert only_frame(m.tick(6.5)).pm25 == 0.4 and not m.sent[-1].warming_up
    m.receive(codec.SET_QUERY + codec.set_working_period(3) + codec.set_device_id(7), 7.0)
    m.receive(codec.SLEEP, 7.1)
    m.reset(8.0)  # power cycle: awake, warming, settings kept
    assert not m.asleep and m.warming_up(8.0)
    assert (m.mode, m.period_min, m.device_id) == ("query", 3, 7)
    assert m.receive(codec.query_firmware(7), 8.1) == [codec.encode_reply(7, (15, 7, 10), 7)]


def test_sources_accept_pms_values_pairs_and_add_tenths():
    assert coerce_values(PMValues(1, 2, 3, 4, 5, 6)) == SDSValues(5.0, 6.0)
    assert coerce_values((1, 2.5)) == SDSValues(1.0, 2.5)
    with pytest.raises(ValueError, match="pm25, pm10"):
        coerce_values((1, 2, 3))
    src = WithTenths(iter([PMValues(1, 12, 15, 1, 12, 15)] * 50), seed=3)
    vals = [src(0.0) for _ in range(50)]
    assert all(11.5 <= v.pm25 <= 12.5 and v.pm10 >= v.pm25 for v in vals)
    assert len({v.pm25 for v in vals}) > 5 and all(round(v.pm25, 1) == v.pm25 for v in vals)
    m = SDS011Model(lambda now: PMValues(7, 8, 9, 7, 8, 9), warmup_s=0)
    m.receive(codec.SET_QUERY, 0.0)
    assert only_frame(m.receive(codec.QUERY_DATA, 0.1)).pm10 == 9.0


# -- against the real driver, over a real pty -------------------------------------------
def values(readings: list[Reading]) -> list[tuple[float, float]]:
    return [(r.values["pm25"], r.values["pm10"]) for r in readings]


def sent_values(emu: SerialEmulator, model: SDS011Model) -> list[tuple[float, float]]:
    with emu.lock:
        return [tuple(s.values) for s in model.sent]


emulate = emulate_fixture("sds")
host = host_fixture(SDS011, reply_timeout_s=0.2)


def test_query_mode_round_trip(emulate, host):
    model = SDS011Model(counter(), interval_s=0.05, warmup_s=0)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="query", warmup_s=0, read_interval_s=0.05)
    dev.open()
    got = values(poll_until(dev, lambda r: len(r) >= 5))
    assert_run_of(got, sent_values(emu, model))
    assert model.mode == "query" and model.period_min == 0
    with emu.lock:
        asked = [s.solicited for s in model.sent]
    assert asked[-3:] == [True] * 3  # answers to query data, not active-mode frames
    poll_until(dev, lambda r: not dev.protocol.busy)
    assert dev.firmware == "15-07-10" and dev.sensor_id == A160
    stats = dev.stats()
    assert stats["replies_confirmed"] == 4 and stats["reply_mismatches"] == 0
    assert stats["bad_frames"] == 0
    assert all(isinstance(v, float) for r in got for v in r)


def test_active_mode_round_trip(emulate, host):
    model = SDS011Model(counter(), interval_s=0.05, warmup_s=0)
    emu = emulate(model)
    dev = host(emu.path, mode="active", warmup_s=0)
    dev.open()  # before the device talks: every frame it sends must arrive
    emu.start()
    got = values(poll_until(dev, lambda r: len(r) >= 8))
    assert got == sent_values(emu, model)[: len(got)]
    assert model.mode == "active" and model.stats["queries"] == 0


def test_driver_sleep_and_wake_retries_the_lost_command_and_discards_warm_up(emulate, host):
    model = SDS011Model(counter(), interval_s=0.05, warmup_s=0.15)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="query", warmup_s=0.2, read_interval_s=0.05)
    dev.open()
    poll_until(dev, lambda r: len(r) >= 1)
    dev.sleep()
    poll_until(dev, lambda r: model.asleep)
    with emu.lock:
        n_sent = model.stats["frames"]
    asleep: list[Reading] = []
    t_end = time.monotonic() + 0.1
    while time.monotonic() < t_end:
        asleep += dev.poll()
    assert asleep == [] and model.stats["frames"] == n_sent
    dev.wake()
    got = values(poll_until(dev, lambda r: len(r) >= 2))
    assert model.stats["lost_commands"] == 1 and dev.stats()["resends"] >= 1
    assert not model.asleep
    with emu.lock:
        by_value = {tuple(s.values): s for s in model.sent}
    assert all(not by_value[v].warming_up for v in got)
    assert any(s.warming_up for s in by_value.values())
    assert dev.stats()["warmup_discarded"] > 0
    assert dev.stats()["reply_mismatches"] == 0


def test_working_period_with_a_short_fake_minute(emulate, host):
    """Active mode, period 1 "minute" of 0.25 s: one report per period, after 0.1 s of work."""
    model = SDS011Model(counter(), interval_s=0.05, warmup_s=0, minute_s=0.25, work_s=0.1)
    emu = emulate(model)
    dev = host(emu.path, mode="active", warmup_s=0, period_min=1)
    dev.open()
    emu.start()
    poll_until(dev, lambda r: dev.protocol.sensor_period == 1)
    readings = poll_until(dev, lambda r: len(r) >= 4)
    assert model.period_min == 1
    with emu.lock:
        periodic = [s for s in model.sent if s.t >= readings[0].t_mono - 0.05]
    assert_run_of(values(readings), [tuple(s.values) for s in periodic])
    gaps = [b.t - a.t for a, b in itertools.pairwise(periodic[:4])]
    assert all(0.2 < g < 0.35 for g in gaps), gaps
    assert dev.no_data_timeout_s >= 120


def test_every_intact_frame_is_recovered_through_line_faults(emulate, host):
    """About 10 % of chunks damaged: the host gets exactly the frames the line spared."""
    model = SDS011Model(counter(), interval_s=0.003, warmup_s=0)
    faults = FaultInjector(noise=0.04, checksum=0.03, truncate=0.03, drop=0.02, seed=5,
                           header_len=2)
    limited = Limited(model, 250, filler=24)
    emu = emulate(limited, faults=faults, tick_s=0.002)
    dev = host(emu.path, mode="active", warmup_s=0)
    dev.open()
    emu.start()
    got = values(poll_until(
        dev, lambda r: limited.filler_sent and not emu.pending and not dev.protocol.busy, 5.0))
    for _ in range(3):  # the last bytes may still be in flight
        got += values(dev.poll())
    events = [e for chunk in faults.intact for e in codec.FrameDecoder().feed(chunk)]
    expected = [(e.pm25, e.pm10) for e in events if isinstance(e, codec.Frame)]
    c = faults.counts
    assert 0.06 < c.damaged / c.chunks < 0.2
    assert c.drop and c.checksum and c.truncate and c.noise_inside
    assert emu.stats.dropped_chunks == 0
    assert len(expected) > 200
    assert got == expected
    stats = dev.stats()
    assert stats["frames"] == len(expected)
    assert stats["replies"] == sum(isinstance(e, codec.Reply) for e in events)
    assert stats["bad_frames"] > 0 and stats["discarded_bytes"] > 0


def test_unplug_then_replug(emulate, host):
    model = SDS011Model(counter(), interval_s=0.05, warmup_s=0)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="query", warmup_s=0, read_interval_s=0.05)
    dev.open()
    poll_until(dev, lambda r: len(r) >= 2)
    emu.unplug()
    assert not os.path.lexists(emu.path)
    deadline = time.monotonic() + 1.0
    with pytest.raises(DeviceGone):
        while time.monotonic() < deadline:
            dev.poll()
    with pytest.raises(DeviceGone):
        dev.open()  # nothing at that path while unplugged
    emu.replug()
    dev.open()  # same path, new pty
    got = values(poll_until(dev, lambda r: len(r) >= 3))
    assert_run_of(got, sent_values(emu, model))
    assert model.stats["resets"] == 1 and model.mode == "query"


def test_host_reasserts_query_mode(emulate, host, monkeypatch):
    """Someone else put the sensor in active mode: frames arrive unasked."""
    monkeypatch.setattr(protocol, "REASSERT_HOLDOFF_S", 0.1)
    model = SDS011Model(counter(), interval_s=0.05, warmup_s=0)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="query", warmup_s=0, read_interval_s=1.0)
    dev.open()
    poll_until(dev, lambda r: not dev.protocol.busy)
    assert model.mode == "query"
    with emu.lock:
        model.mode = "active"
    poll_until(dev, lambda r: dev.protocol.reasserts >= 1 and model.mode == "query")


# -- citynode frames sds011 -----------------------------------------------------------------
def test_citynode_frames_sds011(capsys):
    text = ("00 " + DOC_DATA.hex(" ") + " aa c0 d4 04 3a 0a a1 60 1c ab "
            + SET_ID_REPLY.hex(" ") + " AA C5 07 0F 07 0A A1 60 28 AB aa c0 01")
    assert cli_main(["frames", "sds011", "--hex", text]) == 0
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [d["type"] for d in lines] == ["rejected", "frame", "rejected", "ack", "ack",
                                          "rejected"]
    assert lines[0] == {"offset": 0, "length": 1, "type": "rejected",
                        "reason": "no header aa c0 / aa c5", "bytes": "00"}
    assert lines[1] == {"offset": 1, "length": 10, "type": "frame", "pm25": 123.6,
                        "pm10": 261.8, "device_id": "a160"}
    assert lines[2]["reason"] == "checksum mismatch: computed 1d, frame says 1c"
    assert lines[3] == {"offset": 21, "length": 10, "type": "ack", "cmd": "05",
                        "command": "set_device_id", "device_id": "a001"}
    assert lines[4]["firmware"] == "15-07-10"
    assert lines[5]["reason"].startswith("truncated") and lines[5]["length"] == 3
    assert sum(d["length"] for d in lines) == len(bytes.fromhex(text))
    assert "1 frames, 2 acks, 3 rejected spans" in out.err
