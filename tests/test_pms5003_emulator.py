"""The PMS5003 emulator: the device model alone, then against the real driver over a pty."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serial_helpers import Limited, assert_run_of, emulate_fixture, host_fixture, poll_until
from serial_helpers import wait_until as _wait

from drivers.base import DeviceGone, Reading
from drivers.emulation import DeviceModel, FaultInjector, SerialEmulator
from drivers.pms5003 import PMS5003, QUANTITIES, codec, protocol
from drivers.pms5003.emulator import (
    CSV_ENV,
    CsvReplay,
    DiurnalProfile,
    PMS5003Model,
    PMValues,
    builtin_profile,
    counts_from_masses,
    default_source,
    find_csv,
    replay_csv,
)

# Datasheet / public-driver byte strings (sensor-protocols.md section 1).
ACK_PASSIVE = bytes.fromhex("424d0004e1000174")
ACK_ACTIVE = bytes.fromhex("424d0004e1010175")
ACK_SLEEP = bytes.fromhex("424d0004e4000177")


def counter() -> Iterator[PMValues]:
    """Every frame different, so a received value names the frame it came from."""
    for i in itertools.count(1):
        yield PMValues(i, i + 1, i + 2, i + 3, i + 4, i + 5, (i, i, i, 1, 1, 0))


def decode(chunks: list[bytes]) -> list[codec.Event]:
    dec = codec.FrameDecoder()
    return dec.feed(b"".join(chunks)) + dec.flush()


def only_frame(chunks: list[bytes]) -> codec.Frame:
    (event,) = decode(chunks)
    assert isinstance(event, codec.Frame)
    return event


# -- the model, sans I/O ----------------------------------------------------------------
def test_model_satisfies_the_device_model_protocol():
    assert isinstance(PMS5003Model(), DeviceModel)


def test_active_mode_after_power_up():
    m = PMS5003Model(counter(), interval_s=2.3)
    assert m.tick(100.0) == []  # power-up
    assert m.tick(102.0) == []
    frame = only_frame(m.tick(102.3))
    assert (frame.pm1_cf1, frame.pm25, frame.pm10) == (1, 5, 6)
    assert m.sent[-1].values == PMValues(1, 2, 3, 4, 5, 6, (1, 1, 1, 1, 1, 0))
    assert m.sent[-1].raw == frame.raw and not m.sent[-1].solicited
    assert m.tick(103.0) == []
    assert only_frame(m.tick(104.6)).pm1_cf1 == 2
    # A stalled caller gets one frame, not a burst, and the cadence restarts.
    assert len(m.tick(200.0)) == 1
    assert m.tick(201.0) == []
    assert len(m.tick(202.3)) == 1


def test_passive_mode_ack_and_read():
    m = PMS5003Model(counter(), interval_s=1.0)
    assert m.receive(codec.SET_PASSIVE, 0.0) == [ACK_PASSIVE]
    assert m.mode == "passive"
    assert m.tick(5.0) == []
    frame = only_frame(m.receive(codec.READ, 5.1))
    assert frame.pm1_cf1 == 1 and m.sent[-1].solicited
    assert m.receive(codec.SET_ACTIVE, 6.0) == [ACK_ACTIVE]
    assert m.tick(6.5) == []
    assert len(m.tick(7.0)) == 1
    # E2 in active mode is ignored, as on the real sensor.
    assert m.receive(codec.READ, 7.1) == []


def test_sleep_then_wake_returns_to_active_with_warm_up():
    m = PMS5003Model(counter(), interval_s=1.0, warmup_s=10.0, seed=3)
    m.receive(codec.SET_PASSIVE, 0.0)
    assert m.receive(codec.SLEEP, 1.0) == [ACK_SLEEP]
    assert m.asleep
    assert m.receive(codec.READ, 2.0) == []
    assert m.tick(50.0) == []
    assert m.receive(codec.WAKE, 60.0) == []  # no ack for a wake
    assert m.mode == "active" and not m.asleep
    assert m.warming_up(60.0)
    # Frames come unasked (active mode); zeros while the fan spins up...
    early = [only_frame(m.tick(60.0 + t)) for t in (1, 2, 3, 4)]
    assert all(f.pm25 == 0 and f.pm10_cf1 == 0 for f in early)
    assert all(s.warming_up for s in list(m.sent)[-4:])
    # ... then erratic values, then the source's values once warm.
    later = [m.tick(60.0 + t) for t in range(5, 11)]
    assert all(len(c) == 1 for c in later)
    warm = only_frame(m.tick(71.0))
    assert not m.sent[-1].warming_up
    assert warm.pm1_cf1 == m.sent[-1].values.pm1_cf1 > 0
    # The host must re-assert passive mode itself.
    assert m.receive(codec.SET_PASSIVE, 72.0) == [ACK_PASSIVE]


def test_wake_when_awake_also_falls_back_to_active():
    m = PMS5003Model(counter(), warmup_s=30.0)
    m.receive(codec.SET_PASSIVE, 0.0)
    m.receive(codec.WAKE, 1.0)
    assert m.mode == "active" and not m.warming_up(1.0)


def test_commands_split_glued_and_garbled():
    m = PMS5003Model(counter(), interval_s=1.0)
    out: list[bytes] = []
    for b in codec.SET_PASSIVE:  # one byte at a time
        out += m.receive(bytes([b]), 0.0)
    assert out == [ACK_PASSIVE]
    # Glued: two commands in one write give two chunks (ack, then frame).
    m.receive(codec.SET_ACTIVE, 0.1)
    chunks = m.receive(codec.SET_PASSIVE + codec.READ, 0.2)
    assert chunks[0] == ACK_PASSIVE and len(chunks) == 2 and len(chunks[1]) == 32
    # Bad checksum: ignored, no ack, no mode change.
    bad = bytearray(codec.SET_ACTIVE)
    bad[-1] ^= 1
    assert m.receive(bytes(bad), 0.3) == []
    assert m.mode == "passive" and m.stats["bad_commands"] == 1
    # Garbage full of start bytes before a good command; the command still works.
    assert m.receive(b"\x42\x42\x4d\x00\x42\x4d\x42" + codec.SET_ACTIVE, 0.4) == [ACK_ACTIVE]
    # A valid frame with a command byte it does not know is ignored.
    assert m.receive(codec.command(0xE7, 0), 0.5) == []
    assert m.mode == "active"


def test_reset_is_a_power_cycle():
    m = PMS5003Model(counter(), interval_s=1.0, warmup_s=5.0)
    m.receive(codec.SET_PASSIVE + codec.SLEEP, 0.0)
    m.receive(codec.SET_PASSIVE[:3], 0.1)  # half a command, then the power goes
    m.reset(1.0)
    assert m.mode == "active" and not m.asleep and m.warming_up(1.0)
    assert only_frame(m.tick(2.0)).pm25 == 0
    assert m.receive(codec.SET_PASSIVE, 2.1) == [ACK_PASSIVE]


def test_sources_accept_tuples_and_callables():
    m = PMS5003Model(iter([(1, 2, 3, 1, 2, 3)]), interval_s=1.0)
    m.receive(codec.SET_PASSIVE, 0.0)
    f = only_frame(m.receive(codec.READ, 0.1))
    assert (f.pm1, f.pm25, f.pm10) == (1, 2, 3) and f.n0_3 > f.n0_5 > 0
    m = PMS5003Model(lambda now: PMValues(7, 8, 9, 7, 8, 9), interval_s=1.0)
    m.receive(codec.SET_PASSIVE, 0.0)
    assert only_frame(m.receive(codec.READ, 0.1)).pm25 == 8
    counts = (60, 50, 40, 30, 20, 10)
    m = PMS5003Model(iter([(1, 2, 3, 4, 5, 6, counts), (1, 2, 3, 4, 5, 6, *counts)]))
    m.receive(codec.SET_PASSIVE, 0.0)
    for _ in range(2):
        f = only_frame(m.receive(codec.READ, 0.1))
        assert (f.pm10, f.n0_3, f.n10) == (6, 60, 10)
    m = PMS5003Model(iter([(1.4, 2, 3, 4, 5, 6.6), ("1", 2, 3, 4, 5, 6)]))
    m.receive(codec.SET_PASSIVE, 0.0)
    assert only_frame(m.receive(codec.READ, 0.1)).pm10 == 7
    with pytest.raises(ValueError, match="6 masses"):
        m.receive(codec.READ, 0.2)


def test_counts_look_like_a_real_sensor():
    # Real frame: CF=1 masses 3/4/7 gave 795, 249, 27, 6, 3, 3 per 0.1 L.
    n = counts_from_masses(3, 4, 7)
    assert 500 < n[0] < 1100 and 150 < n[1] < 400 and 10 < n[2] < 50
    assert list(n) == sorted(n, reverse=True)
    assert all(0 <= c <= 0xFFFF for c in counts_from_masses(5000, 6000, 9000))


# -- value sources ----------------------------------------------------------------
CSV_HEAD = "datetime_local,source_file,pm1_cf1,pm25_cf1,pm10_cf1,pm1_atm,pm25_atm,pm10_atm\n"


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    p = tmp_path / "pm.csv"
    p.write_text(
        CSV_HEAD
        + "2020-10-18T20:00:00,a.csv,1,2,3,1,2,3\n"
        + "2020-10-18T20:05:00,a.csv,4,5,6,4,5,6\n"
        + "2020-10-18T20:10:00,a.csv,bad,5,6,4,5,6\n"
        + "2020-10-21T09:00:00,b.csv,35,66,78,28,48,63\n"
    )
    return p


def test_replay_csv_row_per_frame_loops(small_csv):
    src = replay_csv(small_csv, speed=None)
    got = [src(0.0).pm25_cf1 for _ in range(4)]
    assert got == [2, 5, 66, 2]
    v = src(0.0)
    assert (v.pm1, v.pm25, v.pm10) == (4, 5, 6) and v.counts[0] > 0


def test_replay_csv_follows_recording_time_and_squeezes_gaps(small_csv):
    src = replay_csv(small_csv, speed=60.0)  # 5 recorded minutes in 5 s
    assert src(1000.0).pm25 == 2
    assert src(1004.9).pm25 == 2
    assert src(1005.0).pm25 == 5
    # The 2.5-day gap is replayed as one 5-minute step, not 2.5 days of one value.
    assert src(1010.0).pm25 == 48
    assert src(1015.0).pm25 == 2  # looped
    assert "3 rows" in src.description


def test_replay_csv_rejects_wrong_files(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        replay_csv(p)
    p.write_text(CSV_HEAD)
    with pytest.raises(ValueError, match="no usable rows"):
        replay_csv(p)


def test_builtin_profile_is_seeded_plausible_and_diurnal():
    a = builtin_profile(7, start_hour=0.0, speed=60.0)
    b = builtin_profile(7, start_hour=0.0, speed=60.0)
    times = [i * 2.3 for i in range(3000)]  # 2.3 s frames, 60x: about 4.6 days
    va, vb = [a(t) for t in times], [b(t) for t in times]
    assert va == vb
    for v in va:
        assert 0 <= v.pm1_cf1 <= v.pm25_cf1 <= v.pm10_cf1 < 2000
        assert v.pm25 <= v.pm25_cf1 and list(v.counts) == sorted(v.counts, reverse=True)

    def mean_at(hour_lo: float, hour_hi: float) -> float:
        hours = ((t * 60 / 3600) % 24 for t in times)
        sel = [v.pm25 for h, v in zip(hours, va, strict=True) if hour_lo <= h < hour_hi]
        return sum(sel) / len(sel)

    assert mean_at(19, 21) > 1.5 * mean_at(3, 5)
    assert isinstance(a, DiurnalProfile) and "seed 7" in a.description


def test_default_source_prefers_env_then_shared_data(monkeypatch, small_csv, tmp_path):
    monkeypatch.setenv(CSV_ENV, str(small_csv))
    src = default_source()
    assert isinstance(src, CsvReplay) and src.path == small_csv
    monkeypatch.setenv(CSV_ENV, str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match=CSV_ENV):
        default_source()
    monkeypatch.delenv(CSV_ENV)
    found = find_csv()
    if found is None:
        assert isinstance(default_source(), DiurnalProfile)
    else:
        assert found.name == "pms5003_tidy.csv"
        assert len(replay_csv(found).rows) > 1000


# -- against the real driver, over a real pty --------------------------------------------
def values(readings: list[Reading]) -> list[dict[str, int]]:
    return [{k: int(v) for k, v in r.values.items()} for r in readings]


def sent_values(emu: SerialEmulator, model: PMS5003Model) -> list[dict[str, int]]:
    with emu.lock:
        return [s.values.as_dict() for s in model.sent]


emulate = emulate_fixture("pms")
host = host_fixture(PMS5003, quantities=QUANTITIES)


def test_passive_round_trip(emulate, host):
    model = PMS5003Model(counter(), interval_s=0.2, warmup_s=0)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="passive", warmup_s=0, read_interval_s=0.1)
    dev.open()
    got = values(poll_until(dev, lambda r: len(r) >= 5))
    assert_run_of(got, sent_values(emu, model))
    assert model.mode == "passive"
    with emu.lock:
        asked = [s.solicited for s in model.sent]
    assert asked[-3:] == [True] * 3  # answers to E2, not active-mode frames
    assert dev.stats()["acks"] >= 1 and dev.stats()["bad_frames"] == 0


def test_active_round_trip(emulate, host):
    model = PMS5003Model(counter(), interval_s=0.05, warmup_s=0)
    emu = emulate(model)
    dev = host(emu.path, mode="active", warmup_s=0)
    dev.open()  # before the device talks: every frame it sends must arrive
    emu.start()
    got = values(poll_until(dev, lambda r: len(r) >= 10))
    sent = sent_values(emu, model)
    assert got == sent[: len(got)]
    assert model.mode == "active" and model.stats["reads"] == 0


def test_every_intact_frame_is_recovered_through_line_faults(emulate, host):
    """About 10 % of chunks damaged: the host gets exactly the frames the line spared."""
    model = PMS5003Model(counter(), interval_s=0.004, warmup_s=0)
    faults = FaultInjector(noise=0.04, checksum=0.03, truncate=0.03, drop=0.02, seed=11)
    limited = Limited(model, 250, filler=48)
    emu = emulate(limited, faults=faults, tick_s=0.002)
    dev = host(emu.path, mode="active", warmup_s=0)
    dev.open()
    emu.start()
    got = values(poll_until(dev, lambda r: limited.filler_sent and not emu.pending, 5.0))
    for _ in range(3):  # the last bytes may still be in flight
        got += values(dev.poll())
    events = [e for chunk in faults.intact for e in decode([chunk])]
    expected = [
        {q: getattr(e, q) for q in QUANTITIES} for e in events if isinstance(e, codec.Frame)
    ]
    c = faults.counts
    assert 0.06 < c.damaged / c.chunks < 0.2
    assert c.drop and c.checksum and c.truncate and c.noise_inside
    assert emu.stats.dropped_chunks == 0
    assert len(expected) > 200
    assert got == expected
    stats = dev.stats()
    assert stats["frames"] == len(expected)
    assert stats["acks"] == sum(isinstance(e, codec.Ack) for e in events)
    assert stats["bad_frames"] > 0 and stats["discarded_bytes"] > 0


def test_unplug_then_replug(emulate, host):
    model = PMS5003Model(counter(), interval_s=0.2, warmup_s=0)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="passive", warmup_s=0, read_interval_s=0.1)
    dev.open()
    poll_until(dev, lambda r: len(r) >= 2)
    emu.unplug()
    assert not os.path.lexists(emu.path)
    deadline = time.monotonic() + 2.0
    with pytest.raises(DeviceGone):
        while time.monotonic() < deadline:
            dev.poll()
    with pytest.raises(DeviceGone):
        dev.open()  # nothing at that path while unplugged
    emu.replug()
    dev.open()  # same path, new pty
    got = values(poll_until(dev, lambda r: len(r) >= 3))
    sent = sent_values(emu, model)
    assert_run_of(got, sent)
    assert model.stats["resets"] == 1 and model.mode == "passive"


def test_host_reasserts_passive_mode_after_a_wake_it_did_not_ask_for(
    emulate, host, monkeypatch
):
    """The SET pin wakes the sensor behind the host's back: it comes back in active mode."""
    monkeypatch.setattr(protocol, "REASSERT_HOLDOFF_S", 0.2)
    model = PMS5003Model(counter(), interval_s=0.05, warmup_s=0)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="passive", warmup_s=0, read_interval_s=1.0)
    dev.open()
    poll_until(dev, lambda r: len(r) >= 1)
    assert model.mode == "passive"
    with emu.lock:
        now = time.monotonic()
        model.sleep(now)
        model.wake(now)
    assert model.mode == "active"
    poll_until(dev, lambda r: dev.protocol.reasserts >= 1 and model.mode == "passive")
    with emu.lock:
        unasked = sum(not s.solicited for s in model.sent)
    assert unasked >= 1


def test_driver_sleep_and_wake_discards_warm_up_frames(emulate, host):
    model = PMS5003Model(counter(), interval_s=0.05, warmup_s=0.3)
    emu = emulate(model)
    emu.start()
    dev = host(emu.path, mode="passive", warmup_s=0.4, read_interval_s=0.05)
    dev.open()
    poll_until(dev, lambda r: len(r) >= 1)
    dev.sleep()
    assert _wait(lambda: model.asleep)
    with emu.lock:
        n_sent = model.stats["frames"]
    asleep: list[Reading] = []
    t_end = time.monotonic() + 0.3
    while time.monotonic() < t_end:
        asleep += dev.poll()
    assert asleep == [] and model.stats["frames"] == n_sent
    dev.wake()
    got = values(poll_until(dev, lambda r: len(r) >= 3))
    with emu.lock:
        by_value = {tuple(sorted(s.values.as_dict().items())): s for s in model.sent}
    assert all(not by_value[tuple(sorted(v.items()))].warming_up for v in got)
    assert any(s.warming_up for s in by_value.values())
    assert dev.stats()["warmup_discarded"] > 0
    assert model.mode == "passive"

