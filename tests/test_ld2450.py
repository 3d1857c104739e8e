"""HLK-LD2450 radar: the manual's bytes, the sign-magnitude numbers, commands and the checks
on their ACKs, resynchronisation and fuzzing, the emulator's habits one knob at a time, the
driver over a real pty, and the scenes' truth."""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serial_helpers import assert_run_of, emulate_fixture, wait_until

from agent.core import config
from agent.tools.cli import main as cli_main
from drivers import catalogue
from drivers.base import DeviceError, DeviceGone
from drivers.emulation import FaultInjector
from drivers.ld2450 import codec
from drivers.ld2450 import scenes as scenes_module
from drivers.ld2450.codec import Ack, Command, FrameDecoder, Report, Target, Zone, ZoneFilter
from drivers.ld2450.device import LD2450
from drivers.ld2450.emulator import FRAME_PERIOD_S, Habits, LD2450Model, stream
from drivers.ld2450.protocol import (
    AckMismatch,
    CommandFailed,
    LD2450Protocol,
    NoReply,
    RadarSample,
    Settings,
)
from drivers.ld2450.scenes import (
    HARD_KINDS,
    KINDS,
    SCENE_KINDS,
    Scene,
    Walker,
    generate,
    in_view,
    walk,
)
from drivers.ld2450.spec import LD2450Config, settings_of
from drivers.spec import FrameCodec


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# HLK-LD2450 Serial Communication Protocol V1.03: the examples of sections 2.2 and 2.3.
MANUAL_REPORT = h("AA FF 03 00 0E 03 B1 86 10 00 40 01" + "00" * 16 + "55 CC")
MANUAL_COMMANDS = [
    (codec.enable_config(), "FD FC FB FA 04 00 FF 00 01 00 04 03 02 01"),
    (codec.end_config(), "FD FC FB FA 02 00 FE 00 04 03 02 01"),
    (codec.tracking("single"), "FD FC FB FA 02 00 80 00 04 03 02 01"),
    (codec.tracking("multi"), "FD FC FB FA 02 00 90 00 04 03 02 01"),
    (codec.command(codec.QUERY_TRACKING), "FD FC FB FA 02 00 91 00 04 03 02 01"),
    (codec.command(codec.READ_FIRMWARE), "FD FC FB FA 02 00 A0 00 04 03 02 01"),
    (codec.command(codec.RESTART), "FD FC FB FA 02 00 A3 00 04 03 02 01"),
    (codec.bluetooth(True), "FD FC FB FA 04 00 A4 00 01 00 04 03 02 01"),
    (codec.read_mac(), "FD FC FB FA 04 00 A5 00 01 00 04 03 02 01"),
    (codec.command(codec.QUERY_ZONE), "FD FC FB FA 02 00 C1 00 04 03 02 01"),
    (codec.set_zone(ZoneFilter("exclude", (Zone(1000, 1000, -1000, 5000),))),
     "FD FC FB FA 1C 00 C2 00 02 00 E803 E803 18FC 8813" + " 0000" * 8 + " 04 03 02 01"),
]
MANUAL_ACKS = [
    ("FD FC FB FA 08 00 FF 01 00 00 01 00 40 00 04 03 02 01",
     {"cmd": "00ff", "status": "ok", "protocol": 1, "buffer": 64}),
    ("FD FC FB FA 04 00 FE 01 00 00 04 03 02 01", {"cmd": "00fe", "status": "ok"}),
    ("FD FC FB FA 06 00 91 01 00 00 01 00 04 03 02 01",
     {"cmd": "0091", "status": "ok", "tracking": "single"}),
    ("FD FC FB FA 06 00 91 01 00 00 02 00 04 03 02 01",
     {"cmd": "0091", "status": "ok", "tracking": "multi"}),
    ("FD FC FB FA 0C 00 A0 01 00 00 00 00 02 01 16 24 06 22 04 03 02 01",
     {"cmd": "00a0", "status": "ok", "firmware": "V1.02.22062416"}),
    ("FD FC FB FA 0A 00 A5 01 00 00 8F 27 2E B8 0F 65 04 03 02 01",
     {"cmd": "00a5", "status": "ok", "bluetooth": True, "mac": "8f:27:2e:b8:0f:65"}),
    ("FD FC FB FA 0A 00 A5 01 00 00 08 05 04 03 02 01 04 03 02 01",
     {"cmd": "00a5", "status": "ok", "bluetooth": False}),
    ("FD FC FB FA 1E 00 C1 01 00 00 01 00 E803 E803 18FC 8813" + " 0000" * 8 + " 04 03 02 01",
     {"cmd": "00c1", "status": "ok", "zone_filter": "include",
      "zones": [[1000, 1000, -1000, 5000]]}),
    ("FD FC FB FA 04 00 C2 01 01 00 04 03 02 01", {"cmd": "00c2", "status": "failed (1)"}),
]


def decode_all(data: bytes, chunk: int | None = None) -> list[Any]:
    dec = FrameDecoder()
    if chunk is None:
        return dec.feed(data) + dec.flush()
    out: list[Any] = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    return out + dec.flush()


# -- the codec: the manual's bytes -------------------------------------------------------------
def test_the_manual_report_decodes_as_documented() -> None:
    (ev,) = decode_all(MANUAL_REPORT)
    assert isinstance(ev, Report) and ev.raw == MANUAL_REPORT
    assert ev.targets == (Target(0, -782, 1713, -16, 320),)
    assert codec.encode_report(ev.targets) == MANUAL_REPORT


@pytest.mark.parametrize(("built", "manual"), MANUAL_COMMANDS)
def test_command_bytes_match_the_manual(built: bytes, manual: str) -> None:
    assert built == h(manual)
    (ev,) = decode_all(built)  # a capture of the host's line decodes as requests
    assert isinstance(ev, Command) and ev.raw == built


@pytest.mark.parametrize(("raw", "expected"), MANUAL_ACKS)
def test_acks_decode_with_what_they_return(raw: str, expected: dict[str, Any]) -> None:
    (ev,) = decode_all(h(raw))
    assert isinstance(ev, Ack)
    doc = ev.as_dict()
    assert {k: doc[k] for k in expected} == expected


@pytest.mark.parametrize(("raw", "value"), [
    (0x030E, -782), (0x86B1, 1713), (0x0010, -16), (0x8023, 35), (0x8000, 0), (0x0000, 0),
    (0xFFFF, 32767), (0x7FFF, -32767),
])
def test_sign_magnitude_both_signs(raw: int, value: int) -> None:
    """Top bit set = positive (section 2.3): the opposite of the usual sign bit."""
    assert codec.from_sign_magnitude(raw) == value
    if raw != 0x0000:  # zero is sent as positive zero
        assert codec.to_sign_magnitude(value) == raw


@given(st.integers(-0x7FFF, 0x7FFF))
def test_sign_magnitude_round_trips(v: int) -> None:
    raw = codec.to_sign_magnitude(v)
    assert 0 <= raw <= 0xFFFF and codec.from_sign_magnitude(raw) == v
    assert (raw >> 15) == (v >= 0)


def test_values_outside_15_bits_are_refused() -> None:
    with pytest.raises(ValueError):
        codec.to_sign_magnitude(0x8000)
    with pytest.raises(ValueError):
        codec.encode_report([Target(3, 0, 100, 0, 320)])


TARGET = st.builds(Target, slot=st.just(0), x_mm=st.integers(-0x7FFF, 0x7FFF),
                   y_mm=st.integers(1, 0x7FFF), speed_cms=st.integers(-0x7FFF, 0x7FFF),
                   resolution_mm=st.integers(0, 0xFFFF))


@given(st.lists(st.tuples(st.integers(0, 2), TARGET), max_size=3,
                unique_by=lambda p: p[0]))
def test_reports_round_trip(slotted: list[tuple[int, Target]]) -> None:
    targets = tuple(sorted((t._replace(slot=s) for s, t in slotted), key=lambda t: t.slot))
    raw = codec.encode_report(targets)
    assert len(raw) == codec.REPORT_LEN
    (ev,) = decode_all(raw)
    assert isinstance(ev, Report) and ev.targets == targets


ZONE = st.builds(Zone, *[st.integers(-0x8000, 0x7FFF)] * 4).filter(any)


@given(st.sampled_from(codec.ZONE_MODES), st.lists(ZONE, max_size=3))
def test_zone_filters_round_trip(mode: str, zones: list[Zone]) -> None:
    zf = ZoneFilter(mode, tuple(zones))
    assert len(zf.encode()) == 26
    assert ZoneFilter.decode(zf.encode()) == zf
    (ev,) = decode_all(codec.ack(codec.QUERY_ZONE, 0, zf.encode()))
    assert ev.as_dict()["zone_filter"] == mode


@given(st.integers(0, 0xFF), st.integers(0, 1), st.binary(max_size=40))
def test_acks_round_trip(word: int, status: int, value: bytes) -> None:
    (ev,) = decode_all(codec.ack(word, status, value))
    assert ev == Ack(word, status, value)


def test_an_ack_is_checked_against_the_command_sent() -> None:
    ok = Ack(codec.MULTI_TARGET, 0)
    assert codec.check_ack(codec.MULTI_TARGET, ok) is None
    wrong = codec.check_ack(codec.MULTI_TARGET, Ack(codec.READ_FIRMWARE, 0))
    assert wrong == ("ACK for 00a0 (read firmware version) while waiting for 0090 "
                     "(multi-target tracking)")
    refused = codec.check_ack(codec.MULTI_TARGET, Ack(codec.MULTI_TARGET, 1))
    assert refused == "the radar refused multi-target tracking (ACK status 1)"


# -- the codec: resynchronisation ------------------------------------------------------------------
def test_garbage_before_a_frame_is_one_rejected_span() -> None:
    events = decode_all(b"\x00\x55\xcc\xaa\xff" + MANUAL_REPORT)
    assert isinstance(events[0], codec.Rejected) and events[0].data == b"\x00\x55\xcc\xaa\xff"
    assert isinstance(events[1], Report)


def test_a_frame_without_its_tail_slides_one_byte_and_finds_the_next() -> None:
    broken = MANUAL_REPORT[:-1] + b"\x00"
    events = decode_all(broken + MANUAL_REPORT)
    assert [type(e).__name__ for e in events] == ["Rejected", "Report"]
    assert "tail 55 cc" in events[0].reason and events[0].data == broken


def test_a_truncated_frame_does_not_hide_the_next_one() -> None:
    for cut in range(1, codec.REPORT_LEN):
        events = decode_all(MANUAL_REPORT[:cut] + MANUAL_REPORT)
        assert isinstance(events[-1], Report), cut
        assert sum(len(e.data) for e in events if isinstance(e, codec.Rejected)) == cut


def test_a_target_behind_the_antenna_is_implausible() -> None:
    behind = bytearray(MANUAL_REPORT)
    behind[7] &= 0x7F  # y's sign bit flipped: -1713 mm
    events = decode_all(bytes(behind) + MANUAL_REPORT)
    assert isinstance(events[0], codec.Rejected) and "behind the antenna" in events[0].reason
    assert isinstance(events[-1], Report)


@pytest.mark.parametrize(("data", "reason"), [
    (h("FD FC FB FA FF 00") + b"\x00" * 300, "bad length field 255"),
    (h("FD FC FB FA 04 00 FE 01 00 00 04 03 02 02"), "without its tail 04 03 02 01"),
    (h("FD FC FB FA 02 00 FE 01 04 03 02 01"), "without its status"),
    (h("FD FC FB FA 02 00 FE 07 04 03 02 01"), "unknown command word 07fe"),
])
def test_bad_command_frames_are_rejected_with_their_reason(data: bytes, reason: str) -> None:
    events = decode_all(data)
    assert isinstance(events[0], codec.Rejected) and reason in events[0].reason
    assert sum(len(e.data) if isinstance(e, codec.Rejected) else len(e.raw)
               for e in events) == len(data)


def test_byte_at_a_time_equals_all_at_once() -> None:
    data = (b"\x13" + codec.ack(codec.ENABLE_CONFIG, 0, h("01 00 40 00")) + MANUAL_REPORT[:9]
            + MANUAL_REPORT + codec.ack(codec.END_CONFIG) + b"\xaa\xff\x03")
    assert decode_all(data, chunk=1) == decode_all(data)


def _accounted(events: list[Any]) -> int:
    return sum(len(e.data) if isinstance(e, codec.Rejected) else len(e.raw) for e in events)


TEMPTING = [codec.REPORT_HEADER, codec.CMD_HEADER, codec.REPORT_TAIL, codec.CMD_TAIL,
            MANUAL_REPORT[:12], b"\x04\x00", b"\x40\x00", b"\x00", b"\xff", b"\xaa"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.lists(st.sampled_from(TEMPTING), max_size=60).map(b"".join)),
       st.lists(st.integers(1, 64), max_size=20))
def test_any_bytes_never_raise_and_memory_stays_bounded(data: bytes, cuts: list[int]) -> None:
    """Every byte in exactly one event; the decoder never holds more than one frame."""
    dec = FrameDecoder()
    events: list[Any] = []
    pos = 0
    for n in cuts or [len(data) or 1]:
        events += dec.feed(data[pos:pos + n])
        pos += n
        assert dec.buffered <= codec.MAX_FRAME
    events += dec.feed(data[pos:]) + dec.flush()
    assert dec.buffered == 0
    assert _accounted(events) == len(data)


@pytest.mark.parametrize("seed", range(4))
def test_every_intact_frame_survives_a_damaged_line(seed: int) -> None:
    frames = [raw for _, raw in stream(generate("pairs", 120, seed), Habits.clean(), seed)]
    faults = FaultInjector(noise=0.1, checksum=0.05, truncate=0.05, drop=0.02, seed=seed,
                           header_len=4)
    wire = b"".join(faults(f) for f in frames)
    got = [e.raw for e in decode_all(wire, chunk=97) if isinstance(e, Report)]
    intact = list(faults.intact)
    it = iter(got)
    assert all(any(f == g for g in it) for f in intact), "an intact frame was lost"


# -- the protocol: configuration and the checks on every ACK ---------------------------------------
def still_scene(seconds: float = 60.0) -> Scene:
    """One person walking slowly to and fro in front of the radar."""
    return Scene("still", "test", seconds, [Walker(((0.0, -0.5, 2.0), (seconds, 0.5, 2.0)),
                                                   0.02)])


def converse(proto: LD2450Protocol, model: LD2450Model, seconds: float = 6.0,
             dt: float = 0.01) -> list[Any]:
    """The host and the radar on a virtual clock, bytes passed directly."""
    events: list[Any] = []
    now = 0.0
    proto.start(now)
    while now < seconds:
        out = proto.data_to_send()
        if out:
            for reply in model.receive(out, now):
                events += proto.receive(reply, now)
        events += proto.tick(now)
        frame = model.tick(now)
        if frame:
            events += proto.receive(frame, now)
        now += dt
    return events


def words(model: LD2450Model) -> list[int]:
    return [w for w, _ in model.commands]


def test_a_radar_already_set_up_is_only_read() -> None:
    model = LD2450Model(still_scene(), habits=Habits.clean())
    model.flash.bluetooth = False
    proto = LD2450Protocol(Settings(zone_filter=ZoneFilter()))
    events = converse(proto, model)
    assert words(model) == [codec.ENABLE_CONFIG, codec.READ_FIRMWARE, codec.READ_MAC,
                            codec.QUERY_TRACKING, codec.QUERY_ZONE, codec.END_CONFIG]
    assert proto.configured and str(proto.firmware) == "V2.02.23090617"
    assert not [e for e in events if isinstance(e, AckMismatch | CommandFailed | NoReply)]
    assert sum(isinstance(e, RadarSample) for e in events) > 40


def test_what_differs_is_set_and_bluetooth_needs_a_restart() -> None:
    model = LD2450Model(still_scene(), habits=Habits.clean())
    model.flash.tracking = "single"  # bluetooth on: the factory setting
    zf = ZoneFilter("include", (Zone(-3000, 300, 3000, 4000),))
    proto = LD2450Protocol(Settings(zone_filter=zf))
    converse(proto, model)
    assert words(model) == [codec.ENABLE_CONFIG, codec.READ_FIRMWARE, codec.READ_MAC,
                            codec.QUERY_TRACKING, codec.MULTI_TARGET, codec.QUERY_ZONE,
                            codec.SET_ZONE, codec.BLUETOOTH, codec.RESTART]
    assert model.flash.tracking == "multi" and model.flash.zone == zf
    assert model.flash.bluetooth is False and model.stats["restarts"] == 1
    assert proto.configured and proto.restarts == 1
    # A second open finds everything as wanted: nothing is written again.
    model.commands.clear()
    converse(proto, model)
    assert codec.SET_ZONE not in words(model) and codec.RESTART not in words(model)


def test_a_refused_command_stops_the_plan_and_ends_configuration() -> None:
    model = LD2450Model(still_scene(), habits=Habits.clean(),
                        ack_faults={codec.MULTI_TARGET: "refuse"})
    model.flash.tracking = "single"
    proto = LD2450Protocol(Settings(bluetooth=None))
    events = converse(proto, model)
    (failed,) = [e for e in events if isinstance(e, CommandFailed)]
    assert failed.reason == "the radar refused multi-target tracking (ACK status 1)"
    assert words(model)[-2:] == [codec.MULTI_TARGET, codec.END_CONFIG]
    assert not proto.configured and not proto.busy
    assert isinstance(events[-1], RadarSample)  # reporting again


def test_an_ack_for_another_command_is_a_mismatch_then_no_reply() -> None:
    model = LD2450Model(still_scene(), habits=Habits.clean(),
                        ack_faults={codec.QUERY_TRACKING: "wrong"})
    proto = LD2450Protocol(Settings(bluetooth=None), reply_timeout_s=0.5, retries=2)
    events = converse(proto, model)
    mismatches = [e for e in events if isinstance(e, AckMismatch)]
    assert len(mismatches) == 3  # one per try
    assert "while waiting for 0091 (query tracking mode)" in mismatches[0].reason
    (gave_up,) = [e for e in events if isinstance(e, NoReply)]
    assert gave_up.attempts == 3 and gave_up.request.word == codec.QUERY_TRACKING
    assert words(model).count(codec.QUERY_TRACKING) == 3
    assert words(model)[-1] == codec.END_CONFIG and not proto.configured
    assert isinstance(events[-1], RadarSample)


def test_a_radar_that_never_answers_times_out_with_a_wiring_hint() -> None:
    model = LD2450Model(still_scene(), habits=Habits.clean(),
                        ack_faults={codec.ENABLE_CONFIG: "mute"})
    proto = LD2450Protocol(reply_timeout_s=0.5, retries=2)
    events = converse(proto, model, seconds=3.0)
    (gave_up,) = [e for e in events if isinstance(e, NoReply)]
    assert "no ACK to enable configuration after 3 tries" in gave_up.reason
    assert "RX" in gave_up.reason
    assert words(model) == [codec.ENABLE_CONFIG] * 3  # never in configuration: no end
    assert not proto.warming_up(3.0)


def test_a_late_duplicate_ack_is_ignored_and_an_unasked_one_is_reported() -> None:
    proto = LD2450Protocol(Settings(tracking=None, bluetooth=None))
    proto.start(0.0)
    assert proto.data_to_send() == codec.enable_config()
    first = codec.ack(codec.ENABLE_CONFIG, 0, h("01 00 40 00"))
    assert proto.receive(first, 0.1) == [Ack(codec.ENABLE_CONFIG, 0, h("01 00 40 00"))]
    assert proto.receive(first, 0.2) == [] and proto.duplicates == 1
    (odd,) = proto.receive(codec.ack(codec.RESTART), 0.3)
    assert isinstance(odd, AckMismatch) and "waiting for 00a0" in odd.reason


def test_samples_are_spaced_one_frame_apart_and_gaps_count_as_dropped() -> None:
    proto = LD2450Protocol(configure=False)
    proto.start(0.0)
    burst = proto.receive(MANUAL_REPORT * 3, 10.0)
    assert [s.t for s in burst] == pytest.approx([9.8, 9.9, 10.0])
    (later,) = proto.receive(MANUAL_REPORT, 10.5)  # four frames missing
    assert later.t == 10.5 and proto.dropped == 4 and proto.samples == 4


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        Settings(tracking="many")
    with pytest.raises(ValueError):
        ZoneFilter("include", (Zone(0, 0, 0, 0),))
    with pytest.raises(ValueError):
        ZoneFilter("include", (Zone(1, 1, 2, 2),) * 4)


# -- the emulator's habits, one knob at a time -----------------------------------------------------
def play(scene: Scene, habits: Habits, seconds: float | None = None, seed: int = 0,
         **kw: Any) -> LD2450Model:
    model = LD2450Model(scene, habits=habits, seed=seed, keep_sent=100_000, **kw)
    end = scene.duration_s if seconds is None else seconds
    for k in range(int(end / FRAME_PERIOD_S)):
        model.step(k * FRAME_PERIOD_S)
    return model


def strollers(ys: list[float], starts: list[float] | None = None) -> Scene:
    """People strolling slowly to and fro across the middle of the field at distances ys."""
    starts = starts or [0.0] * len(ys)
    walkers = [walk(t0, [(-0.8, y), (0.8, y), (-0.8, y)], 0.3) for y, t0 in zip(ys, starts,
                                                                               strict=True)]
    return Scene("strollers", "test", 10.0, walkers)


def test_at_most_three_targets_the_nearest_first() -> None:
    model = play(strollers([4.0, 2.0, 1.2, 3.0, 2.5]), Habits.clean())
    assert all(len(s.targets) <= 3 for s in model.sent)
    first = model.sent[0]
    assert sorted(w for w in first.slots if w is not None) == [1, 2, 4]  # y = 2.0, 1.2, 2.5


def test_a_tracked_person_keeps_the_slot_when_a_nearer_one_arrives() -> None:
    model = play(strollers([2.0, 3.0, 3.5, 1.0], starts=[0, 0, 0, 3.0]), Habits.clean())
    later = [s for s in model.sent if s.t >= 4.0]
    assert later and all(set(s.slots) == {0, 1, 2} for s in later)


def test_single_target_mode_reports_one() -> None:
    model = LD2450Model(strollers([2.0, 3.0]), habits=Habits.clean(), keep_sent=1000)
    model.flash.tracking = "single"
    for k in range(50):
        model.step(k * FRAME_PERIOD_S)
    assert all(len(s.targets) == 1 and s.targets[0].slot == 0 for s in model.sent)


def passing() -> Scene:
    """Two people walking towards each other 30 cm apart: they pass at t = 2 s."""
    return Scene("passing", "test", 4.0, [walk(0.0, [(-2.0, 2.0), (2.0, 2.0)], 1.0),
                                          walk(0.0, [(2.0, 2.3), (-2.0, 2.3)], 1.0)])


def test_slots_swap_when_people_pass_each_other() -> None:
    swapped = play(passing(), replace_habits(swap_prob=1.0))
    assert swapped.sent[0].slots[:2] == (0, 1) and swapped.sent[-1].slots[:2] == (1, 0)
    assert swapped.stats["swaps"] == 1  # one chance per encounter
    kept = play(passing(), replace_habits(swap_prob=0.0))
    assert all(s.slots[:2] == (0, 1) for s in kept.sent)


def replace_habits(**kw: Any) -> Habits:
    from dataclasses import replace

    return replace(Habits.clean(), **kw)


def test_ghosts_appear_at_the_mirror_image_and_last_their_frames() -> None:
    scene = strollers([2.5])
    model = play(scene, replace_habits(ghost_rate=1.0, ghost_frames=(3, 3), mirror_y_m=4.0,
                                       max_targets=2))
    frames = len(model.sent)
    assert model.stats["ghosts"] == math.ceil(frames / 3)  # each lives exactly three frames
    for s in model.sent:
        real, ghost = s.targets
        assert s.slots == (0, "ghost", None)
        assert ghost.x_mm == real.x_mm and ghost.y_mm == 8000 - real.y_mm
    assert play(scene, replace_habits(ghost_rate=0.0)).stats["ghosts"] == 0


def test_someone_standing_still_fades_out_and_comes_back_moving() -> None:
    scene = Scene("stop", "test", 30.0, [walk(0.0, [(-1.0, 2.0), (0.0, 2.0), (1.0, 2.0)], 0.5,
                                              waits={1: 20.0})])
    model = play(scene, replace_habits(fade_after_s=5.0))
    seen = {round(s.t, 1): bool(s.targets) for s in model.sent}
    assert seen[1.5] and seen[6.5]          # walking, then standing under 5 s
    assert not seen[8.0] and not seen[21.5]  # faded
    assert seen[23.0]                        # walking on
    assert model.stats["faded"] == 1
    never = play(scene, Habits.clean())
    assert all(s.targets for s in never.sent if s.t < 24.0)


def test_noise_has_the_configured_spread_and_clean_is_exact() -> None:
    scene = strollers([2.0])
    clean = play(scene, Habits.clean())
    for s in clean.sent:
        p = scene.walkers[0].at(s.t)
        assert p is not None and (s.targets[0].x_mm, s.targets[0].y_mm) == (
            round(p[0] * 1000), round(p[1] * 1000))
    noisy = play(scene, replace_habits(noise_mm=40.0))
    errors = [n.targets[0].x_mm - c.targets[0].x_mm for n, c in zip(noisy.sent, clean.sent,
                                                                    strict=True)]
    assert 30 < statistics.pstdev(errors) < 50


def test_dropped_frames_leave_a_gap_and_the_other_habits_do_not_change() -> None:
    scene = generate("pairs", 300, 3)
    whole = dict(stream(scene, Habits(drop_rate=0.0), seed=5))
    lossy = dict(stream(scene, Habits(drop_rate=0.3), seed=5))
    assert 0.25 < 1 - len(lossy) / len(whole) < 0.35
    assert all(whole[t] == raw for t, raw in lossy.items())  # same noise, swaps, ghosts


def test_the_zone_filter_hides_targets_outside() -> None:
    model = LD2450Model(strollers([1.5, 3.0]), habits=Habits.clean(), keep_sent=100)
    model.flash.zone = ZoneFilter("include", (Zone(-2000, 1000, 2000, 2000),))
    for k in range(30):
        model.step(k * FRAME_PERIOD_S)
    assert all([t.y_mm for t in s.targets] == [1500] for s in model.sent)


def test_the_radar_ignores_commands_until_configuration_is_enabled() -> None:
    model = LD2450Model(strollers([2.0]), habits=Habits.clean())
    assert model.receive(codec.command(codec.READ_FIRMWARE), 0.0) == []
    assert model.receive(codec.enable_config(), 0.0) != []
    assert model.tick(0.0) == b"" and model.tick(0.5) == b""  # no reports while configuring
    (reply,) = model.receive(codec.bluetooth(False) + codec.command(codec.RESTART), 0.6)[1:]
    assert decode_all(reply) == [Ack(codec.RESTART, 0)]
    assert model.tick(1.0) == b""          # booting
    assert model.tick(1.7) != b""          # reporting again
    assert model.flash.bluetooth is False  # the setting took effect at the restart


def test_the_same_seed_makes_the_same_frames() -> None:
    scene = generate("both_ways", 120, 7)
    assert list(stream(scene, seed=1)) == list(stream(scene, seed=1))
    assert list(stream(scene, seed=1)) != list(stream(scene, seed=2))


def test_stream_decodes_cleanly_and_follows_the_scene() -> None:
    scene = generate("single_walkers", 600, 2)
    frames = list(stream(scene, Habits.clean()))
    events = decode_all(b"".join(raw for _, raw in frames))
    assert len(events) == len(frames) == 6000 and all(isinstance(e, Report) for e in events)
    for (t, _), ev in zip(frames, events, strict=True):
        visible = [p for p in scene.at(t) if in_view(p.x, p.y)]
        assert len(ev.targets) == len(visible)


# -- the driver over a real pty --------------------------------------------------------------------
emulate = emulate_fixture("ld2450-")


@pytest.fixture
def radars() -> Iterator[list[LD2450]]:
    made: list[LD2450] = []
    yield made
    for r in made:
        r.close()


def poll_for(radar: LD2450, seconds: float) -> tuple[list[Any], list[RadarSample]]:
    readings: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readings += radar.poll()
    return readings, radar.drain_samples()


def test_the_driver_configures_the_radar_and_streams_every_frame(emulate: Any,
                                                                 radars: list[LD2450]) -> None:
    model = LD2450Model(strollers([1.5, 2.5]), habits=Habits(drop_rate=0.0), loop=True)
    emu = emulate(model)
    emu.start()
    cfg = msgspec.convert({"name": "radar", "port": emu.path, "zone_filter": "include",
                           "zones": [[-5.0, 0.2, 5.0, 5.0]]}, LD2450Config)
    radar = LD2450(emu.path, settings=settings_of(cfg), read_interval_s=0.5)
    radars.append(radar)
    got: list[RadarSample] = []
    radar.on_samples = got.extend
    radar.open()
    assert radar.warming_up
    readings, buffered = poll_for(radar, 3.5)
    assert not buffered  # handed over, not kept
    assert radar.configured and not radar.warming_up
    assert words(model) == [codec.ENABLE_CONFIG, codec.READ_FIRMWARE, codec.READ_MAC,
                            codec.QUERY_TRACKING, codec.QUERY_ZONE, codec.SET_ZONE,
                            codec.BLUETOOTH, codec.RESTART]
    assert model.flash.zone.mode == "include" and not model.flash.bluetooth
    with emu.lock:
        sent = [s.targets for s in model.sent if s.raw]
    assert len(got) >= 10 and all(len(s.targets) == 2 for s in got)
    assert_run_of([s.targets for s in got], sent)
    assert all(a.t <= b.t for a, b in itertools.pairwise(got))
    assert 2 <= len(readings) <= 8  # one per 0.5 s once frames flow (after the restart)
    assert all(set(r.values) == {"targets"} and 0 <= r.values["targets"] <= 3
               for r in readings)
    stats = radar.stats()
    assert stats["frames"] == len(got) and stats["bad_frames"] == 0
    assert stats["restarts"] == 1 and stats["config_errors"] == 0


def test_a_refused_command_is_a_device_error_and_the_radar_goes_on(emulate: Any,
                                                                   radars: list[LD2450]) -> None:
    model = LD2450Model(generate("single_walkers", 600, 1), habits=Habits.clean(),
                        ack_faults={codec.SINGLE_TARGET: "refuse"})
    emu = emulate(model)
    emu.start()
    radar = LD2450(emu.path, settings=Settings(tracking="single", bluetooth=None))
    radars.append(radar)
    radar.open()
    deadline = time.monotonic() + 3.0
    with pytest.raises(DeviceError, match="refused single-target tracking"):
        while time.monotonic() < deadline:
            radar.poll()
    _, samples = poll_for(radar, 1.0)
    assert len(samples) >= 5 and not radar.configured
    assert radar.stats()["config_errors"] == 1


def test_a_silent_radar_and_a_pulled_cable(emulate: Any, radars: list[LD2450]) -> None:
    model = LD2450Model(still_scene(), habits=Habits.clean())
    emu = emulate(model)
    emu.start()
    radar = LD2450(emu.path, configure=False, no_data_timeout_s=1.0)
    radars.append(radar)
    radar.open()
    poll_for(radar, 0.5)
    with emu.lock:
        model.ack_faults = {}
        model.receive(codec.enable_config(), time.monotonic())  # stuck in configuration
    with pytest.raises(DeviceError, match="no report frame"):
        poll_for(radar, 2.5)
    emu.unplug()
    assert wait_until(lambda: not emu.plugged)
    with pytest.raises(DeviceGone):
        poll_for(radar, 1.0)


def test_frames_on_a_capture_prints_frames_acks_and_reasons(capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    data = MANUAL_REPORT + b"\x01\x02" + h(MANUAL_ACKS[4][0])
    assert cli_main(["frames", "hlk-ld2450", "--hex", data.hex()]) == 0
    out = [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["type"] for d in out] == ["frame", "rejected", "ack"]
    assert out[0]["slots"][0]["x_mm"] == -782 and out[2]["firmware"] == "V1.02.22062416"


# -- configuration ---------------------------------------------------------------------------------
def test_zones_in_metres_become_the_radars_millimetres() -> None:
    cfg = msgspec.convert({"name": "r", "port": "/dev/x", "zone_filter": "exclude",
                           "zones": [[-1.0, 1.0, 1.0, 5.0]]}, LD2450Config)
    s = settings_of(cfg)
    assert s.zone_filter == ZoneFilter("exclude", (Zone(-1000, 1000, 1000, 5000),))
    assert s.tracking == "multi" and s.bluetooth is False


@pytest.mark.parametrize(("table", "key"), [
    ({"zone_filter": "include"}, "zones"),
    ({"zones": [[-1.0, 1.0, 1.0, 5.0]]}, "zone_filter"),
    ({"zone_filter": "include", "zones": [[1.0, 1.0, 1.0, 5.0]]}, "zones[0]"),
    ({"configure": False, "tracking": "single"}, "configure"),
])
def test_zone_settings_that_disagree_are_configuration_errors(table: dict[str, Any],
                                                              key: str) -> None:
    cfg = msgspec.convert({"name": "r", "port": "/dev/x", **table}, LD2450Config)
    assert key in [k for k, _ in cfg.problems([cfg])]


def test_fall_detection_leaves_the_radars_sample_stream_alone() -> None:
    from agent.features.safety import fall_sensors

    text = ('[node]\nid = "n1"\n[[sensor]]\ntype = "ld2450"\nname = "radar"\n'
            'port = "/dev/ttyAMA0"\n[[sensor]]\ntype = "adxl345"\nname = "acc"\n')
    cfg = config.parse(text, "c.toml", check_devices=False)
    assert [s.name for s in fall_sensors(cfg)] == ["acc"]


def test_the_spec_names_a_sample_stream_of_people() -> None:
    spec = catalogue.get("hlk-ld2450")
    assert spec.samples and spec.kind == "presence" and spec.bus == "uart"
    assert isinstance(spec.frames(), FrameCodec)
    model = spec.emulator(msgspec.convert({"name": "radar", "port": "/dev/null"}, spec.config))
    assert isinstance(model, LD2450Model) and model.loop


# -- scenes and their truth ------------------------------------------------------------------------
def test_a_walker_crossing_the_line_at_a_known_time() -> None:
    w = walk(10.0, [(-3.0, 2.0), (3.0, 2.0)], 1.5)  # at x = 0 after 2 s
    back = walk(20.0, [(1.0, 1.0), (-1.0, 1.0)], 1.0)
    scene = Scene("known", "test", 30.0, [back, w])
    assert scene.truth() == [(pytest.approx(12.0), "in", 0), (pytest.approx(21.0), "out", 1)]
    assert [c.t for c in scene.truth(line_x=1.5)] == [pytest.approx(13.0)]
    assert [c.direction for c in scene.truth(zone_y=(0.5, 1.5))] == ["out"]
    x, y, vx, vy = w.at(12.0) or (None,) * 4
    assert (x, y, vx, vy) == (pytest.approx(0.0), 2.0, pytest.approx(1.5), 0.0)
    assert w.at(9.0) is None and w.at(14.1) is None


def test_standing_still_is_two_waypoints_at_one_place() -> None:
    w = walk(0.0, [(-1.0, 2.0), (0.5, 2.0), (1.0, 2.0)], 1.5, waits={1: 10.0})
    assert w.at(5.0) == (0.5, 2.0, 0.0, 0.0)
    assert w.crossings() == [(pytest.approx(2 / 3), "in")]


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_generated_scenes_keep_to_three_people_and_their_seed(kind: str) -> None:
    scene = generate(kind, 1800, 11)
    assert scene.max_in_field() <= (1 if kind == "single_walkers" else 3)
    assert scene.truth() and all(c.t <= 1800 for c in scene.truth())
    assert generate(kind, 1800, 11).truth() == scene.truth()
    assert generate(kind, 1800, 12).truth() != scene.truth()
    assert {c.direction for c in scene.truth()} == {"in", "out"}


def test_loiterers_wait_beside_the_line_without_crossing_it() -> None:
    scene = generate("loiterers", 3600, 5)
    loiterers = [(i, w) for i, w in enumerate(scene.walkers) if w.kind == "loiterer"]
    assert len(loiterers) >= 10
    for i, w in loiterers:
        crossings = [c for c in scene.truth() if c.walker == i]
        assert len(crossings) <= 2  # arriving from the far side, leaving back to it
        still = [a[0] for a, b in itertools.pairwise(w.waypoints)
                 if a[1:] == b[1:]]
        assert still and not [c for c in crossings if still[0] < c.t < still[-1]]


def test_pairs_cross_together_and_opposed_walkers_at_once() -> None:
    for kind, same_way in (("pairs", True), ("both_ways", False)):
        truth = generate(kind, 3600, 9).truth()
        together = [(a, b) for a, b in itertools.pairwise(truth) if b.t - a.t < 1.0]
        assert len(together) > 20, kind
        assert any((a.direction == b.direction) == same_way for a, b in together), kind


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(KINDS), st.integers(0, 2**32 - 1))
def test_any_seed_keeps_the_field_to_three(kind: str, seed: int) -> None:
    scene = generate(kind, 900, seed)
    assert scene.max_in_field() <= 3
    rng = random.Random(seed)
    for t in (rng.uniform(0, 900) for _ in range(20)):
        assert len(scene.at(t)) <= 3


# -- the harder scenes ---------------------------------------------------------------------------
def test_the_config_offers_every_scene_kind() -> None:
    from typing import get_args

    from drivers.ld2450.spec import SceneKind

    assert set(get_args(SceneKind)) == set(SCENE_KINDS)
    assert set(HARD_KINDS) <= set(KINDS)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(HARD_KINDS), st.integers(0, 2**32 - 1))
def test_every_true_crossing_happens_in_view_and_alternates(kind: str, seed: int) -> None:
    """Truth is what the radar could see: each crossing at x = 0 inside the field, and each
    walker's crossings alternate in direction (one side to the other, then back)."""
    scene = generate(kind, 900, seed)
    assert scene.max_in_field() <= 3
    for i, _ in enumerate(scene.walkers):
        mine = [c for c in scene.truth() if c.walker == i]
        assert all(a.direction != b.direction for a, b in itertools.pairwise(mine))
    for w in scene.walkers:
        for (_, x0, y0), (_, x1, y1) in itertools.pairwise(w.waypoints):
            if (x0 >= 0) != (x1 >= 0):
                y = y0 + (0 - x0) / (x1 - x0) * (y1 - y0)
                assert in_view(0.0, y), (kind, w.waypoints)


def _stands(w: Walker) -> list[tuple[float, float, float]]:
    """(start, end, x) of each time the walker stands still."""
    return [(a[0], b[0], a[1]) for a, b in itertools.pairwise(w.waypoints)
            if a[1:] == b[1:] and b[0] > a[0]]


def test_people_stop_on_the_line_swaying_on_their_side_of_it() -> None:
    scene = generate("stop_on_line", 3600, 21)
    stoppers = [(i, w) for i, w in enumerate(scene.walkers) if w.kind == "stopper"]
    assert len(stoppers) >= 20
    sides = set()
    for i, w in stoppers:
        stands = _stands(w)
        assert stands and all(abs(x) <= 0.6 for _, _, x in stands)
        assert 5.0 <= stands[-1][1] - stands[0][0] <= 95.0
        assert len({x > 0 for _, _, x in stands}) == 1  # a sway is not a passage
        sides.add(stands[0][2] > 0)
        crossed = [c for c in scene.truth() if c.walker == i]
        assert len(crossed) <= 2
        assert not [c for c in crossed if stands[0][0] < c.t < stands[-1][1]]
    assert sides == {True, False}  # before the line and past it


def test_u_turns_before_the_line_are_none_and_past_it_two() -> None:
    counts = set()
    for k in range(200):
        (w,) = scenes_module._u_turn(random.Random(k))
        first, tip = w.waypoints[0][1], w.waypoints[2][1]  # the far end of the turn
        assert abs(tip) <= 1.6 and w.waypoints[-1][1] * first > 0  # back where they came from
        crossed = [d for _, d in w.crossings()]
        assert len(crossed) == (2 if tip * first < 0 else 0)
        counts.add(len(crossed))
    assert counts == {0, 2}
    assert len(generate("u_turns", 3600, 22).walkers) >= 60


def test_walks_along_the_line_stay_inside_the_band() -> None:
    for k in range(200):
        (w,) = scenes_module._along(random.Random(k))
        (_, x1, y1), (_, x2, y2) = w.waypoints[1], w.waypoints[2]
        assert abs(x1) <= 0.25 and abs(x2) <= 0.33 and x1 * x2 > 0 and abs(y2 - y1) >= 3.0
        enter, leave = w.waypoints[0][1], w.waypoints[-1][1]
        assert len(w.crossings()) == (enter * x1 < 0) + (leave * x1 < 0)


def test_groups_of_three_and_people_passing_on_the_line() -> None:
    truth = generate("groups", 3600, 24).truth()
    trios = [(a, b, c) for a, b, c in zip(truth, truth[1:], truth[2:], strict=False)
             if c.t - a.t < 1.0 and a.direction == b.direction == c.direction]
    passing = [(a, b) for a, b in itertools.pairwise(truth)
               if b.t - a.t <= 0.35 and a.direction != b.direction]
    assert len(trios) >= 10 and len(passing) >= 20


def test_edges_steep_crossings_and_people_near_the_line_at_the_edge() -> None:
    scene = generate("edge_entries", 3600, 25)
    ends = [wp for w in scene.walkers for wp in (w.waypoints[0], w.waypoints[-1])]
    near_line = [(x, y) for _, x, y in ends if abs(x) <= 0.6 and (y <= 0.1 or y >= 6.4)]
    assert len(near_line) >= 30
    steep = [w for w in scene.walkers if len(w.waypoints) == 3
             and abs(w.waypoints[-1][2] - w.waypoints[0][2])
             > 1.1 * abs(w.waypoints[-1][1] - w.waypoints[0][1])]
    assert len(steep) >= 20


def test_fast_and_slow_and_the_edges_of_the_range() -> None:
    speeds = [w.speed_mps for w in generate("fast_slow", 3600, 26).walkers]
    assert sum(6.0 <= v <= 9.0 for v in speeds) >= 40 and sum(v <= 0.5 for v in speeds) >= 15
    lanes = [w.waypoints[0][2] for w in generate("range_limits", 3600, 27).walkers]
    assert sum(y >= 5.0 for y in lanes) >= 30 and sum(y <= 0.9 for y in lanes) >= 30
