"""The generic emulator plumbing: pty links, the emulator thread, line faults."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable

import pytest
import serial

from drivers.emulation import (
    DeviceModel,
    FaultInjector,
    PtyLink,
    SerialEmulator,
    parse_fault_spec,
)
from drivers.pms5003 import codec


def wait_for(pred: Callable[[], bool], timeout: float = 2.0, step: float = 0.01) -> bool:
    """Poll ``pred`` until true or ``timeout``; tests then assert on the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def open_host(path: str) -> serial.Serial:
    """Open the emulated port the way the agent opens /dev/ttyAMA0."""
    return serial.Serial(path, baudrate=9600, timeout=0.2)


class Echo:
    """Replies to each write in upper case; emits ``tick_chunk`` on every tick."""

    def __init__(self, tick_chunk: bytes = b"") -> None:
        self.tick_chunk = tick_chunk
        self.received = bytearray()
        self.resets: list[float] = []

    def receive(self, data: bytes, now: float) -> bytes:
        self.received += data
        return data.upper()

    def tick(self, now: float) -> bytes:
        return self.tick_chunk

    def reset(self, now: float) -> None:
        self.resets.append(now)


# -- PtyLink ----------------------------------------------------------------------
def test_link_is_a_stable_symlink_to_a_raw_pty(tmp_path):
    with PtyLink(tmp_path / "dev" / "pms0") as link:
        assert os.path.islink(link.path)
        assert os.readlink(link.path).startswith("/dev/pts/")
        host = open_host(link.path)
        # Raw mode both ways: no echo, no CR/LF translation, all 256 byte values.
        os.write(link.master_fd, bytes(range(256)))
        assert host.read(256) == bytes(range(256))
        host.write(b"\r\n\x03\x42\x4d")
        assert wait_for(lambda: _readable(link.master_fd))
        assert os.read(link.master_fd, 100) == b"\r\n\x03\x42\x4d"
        host.close()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_unplug_is_a_cable_pull_and_replug_reuses_the_path(tmp_path):
    link = PtyLink(tmp_path / "pms0")
    first = link.slave_name
    host = open_host(link.path)
    link.unplug()
    assert not link.plugged
    assert not os.path.lexists(link.path)
    with pytest.raises(serial.SerialException):
        host.read(1)
    host.close()
    with pytest.raises(serial.SerialException):
        open_host(link.path)
    link.replug()
    assert os.readlink(link.path) == link.slave_name
    host = open_host(link.path)
    os.write(link.master_fd, b"again")
    assert host.read(5) == b"again"
    host.close()
    link.close()
    link.close()  # twice is fine
    assert not os.path.lexists(link.path)
    assert link.plugs == 2 and first is not None


def test_link_refuses_to_replace_a_real_file(tmp_path):
    real = tmp_path / "ttyAMA0"
    real.write_text("not a symlink")
    with pytest.raises(FileExistsError):
        PtyLink(real)
    assert real.read_text() == "not a symlink"
    udev_style = tmp_path / "serial0"
    udev_style.symlink_to(real)
    with pytest.raises(FileExistsError, match="not a pty"):
        PtyLink(udev_style)
    assert udev_style.is_symlink()


def test_link_replaces_a_stale_link_from_an_earlier_run(tmp_path):
    stale = tmp_path / "pms0"
    stale.symlink_to("/dev/pts/999")
    with PtyLink(stale) as link:
        assert os.readlink(stale) == link.slave_name


# -- SerialEmulator ---------------------------------------------------------------
def test_emulator_round_trip_and_clean_stop(tmp_path):
    model = Echo()
    assert isinstance(model, DeviceModel)
    with SerialEmulator(model, tmp_path / "echo") as emu:
        host = open_host(emu.path)
        host.write(b"hello")
        assert host.read(5) == b"HELLO"
        host.close()
    assert not os.path.lexists(emu.path)
    assert bytes(model.received) == b"hello"
    assert emu.stats.bytes_in == 5 and emu.stats.bytes_out == 5


def test_a_port_opened_with_parity_opens_again(tmp_path):
    """A pty keeps the last host's line settings and cannot take parity; Linux refuses a
    tcsetattr that changes nothing it can apply. The emulator puts the line back, so a
    CSE7766-style 4800 8E1 host (doctor, then the daemon) can open the port twice."""
    with SerialEmulator(Echo(), tmp_path / "plug") as emu:
        for _ in range(3):
            host = serial.Serial(emu.path, baudrate=4800, parity=serial.PARITY_EVEN, timeout=0.2)
            host.write(b"ok")
            assert host.read(2) == b"OK"
            host.close()
            time.sleep(0.6)  # past one line reset (LINE_RESET_S)


def test_models_may_return_several_chunks(tmp_path):
    class Two:
        def receive(self, data: bytes, now: float) -> list[bytes]:
            return [b"ab", b"", b"cd"]

        def tick(self, now: float) -> list[bytes]:
            return []

    seen: list[bytes] = []

    def spy(chunk: bytes) -> bytes:
        seen.append(chunk)
        return chunk

    with SerialEmulator(Two(), tmp_path / "two", faults=spy) as emu:
        host = open_host(emu.path)
        host.write(b"x")
        assert host.read(4) == b"abcd"
        host.close()
    assert seen == [b"ab", b"cd"]
    assert emu.stats.chunks_out == 2


def test_nobody_reading_never_blocks_the_emulator(tmp_path):
    """With no host on the port, output piles up in the pty and is then dropped."""
    emu = SerialEmulator(Echo(tick_chunk=b"x" * 1000), tmp_path / "busy", tick_s=0.001)
    emu.start()
    assert wait_for(lambda: emu.stats.dropped_chunks > 0, timeout=3.0)
    t0 = time.monotonic()
    emu.stop()
    assert time.monotonic() - t0 < 1.0
    assert emu.stats.dropped_bytes == 1000 * emu.stats.dropped_chunks


def test_host_opening_late_gets_fresh_data(tmp_path):
    with SerialEmulator(Echo(tick_chunk=b"."), tmp_path / "late", tick_s=0.001) as emu:
        assert wait_for(lambda: emu.stats.bytes_out > 100)
        host = open_host(emu.path)
        host.reset_input_buffer()
        host.write(b"q")
        data = host.read_until(b"Q", 20000)
        assert data.endswith(b"Q")
        host.close()


def test_manual_unplug_and_replug(tmp_path):
    model = Echo()
    with SerialEmulator(model, tmp_path / "m") as emu:
        host = open_host(emu.path)
        emu.unplug()
        assert not emu.plugged and not os.path.lexists(emu.path)
        with pytest.raises(serial.SerialException):
            host.read(1)
        host.close()
        emu.replug()
        assert emu.plugged and os.path.islink(emu.path)
        host = open_host(emu.path)
        host.write(b"up")
        assert host.read(2) == b"UP"
        host.close()
        assert len(model.resets) == 1  # re-plugging power-cycles the device
        assert emu.stats.unplugs == 1 and emu.stats.replugs == 1


def test_timed_unplug_replugs_by_itself(tmp_path):
    with SerialEmulator(Echo(), tmp_path / "t") as emu:
        emu.unplug(for_s=0.1)
        assert not emu.plugged
        assert wait_for(lambda: emu.plugged, timeout=1.0)


def test_scheduled_unplugs(tmp_path):
    model = Echo()
    with SerialEmulator(model, tmp_path / "s", unplug_every_s=0.15, unplug_for_s=0.05) as emu:
        assert wait_for(lambda: emu.stats.replugs >= 2, timeout=2.0)
        assert wait_for(lambda: emu.plugged)
        host = open_host(emu.path)
        host.close()
    assert emu.stats.unplugs >= 2
    assert len(model.resets) == emu.stats.replugs


def test_a_failing_model_unplugs_and_stop_reports_it(tmp_path):
    class Broken(Echo):
        def tick(self, now: float) -> bytes:
            raise ZeroDivisionError("model bug")

    emu = SerialEmulator(Broken(), tmp_path / "b")
    emu.start()
    assert wait_for(lambda: not emu.is_alive())
    assert not os.path.lexists(emu.path)
    with pytest.raises(RuntimeError) as info:
        emu.stop()
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_emulator_argument_checks(tmp_path):
    with pytest.raises(ValueError):
        SerialEmulator(Echo(), tmp_path / "x", tick_s=0)
    with pytest.raises(ValueError):
        SerialEmulator(Echo(), tmp_path / "x", unplug_every_s=-1)


# -- FaultInjector ----------------------------------------------------------------
def frames(n: int) -> list[bytes]:
    return [codec.encode_frame(i, i + 1, i + 2, i, i + 1, i + 2) for i in range(n)]


def test_no_faults_is_a_pass_through():
    inj = FaultInjector(seed=1)
    assert not inj.active
    chunks = frames(20)
    assert [inj(c) for c in chunks] == chunks
    assert inj.counts.intact == inj.counts.chunks == 20
    assert inj(b"") == b""


def test_each_fault_kind_does_what_it_says():
    f = codec.encode_frame(1, 2, 3, 4, 5, 6)
    drop = FaultInjector(drop=1.0, seed=1)
    assert drop(f) == b"" and drop.counts.drop == 1
    cut = FaultInjector(truncate=1.0, seed=1)
    out = cut(f)
    assert 1 <= len(out) < len(f) and f.startswith(out)
    flip = FaultInjector(checksum=1.0, seed=1)
    out = flip(f)
    assert len(out) == len(f) and out[:2] == codec.START
    diff = [a ^ b for a, b in zip(out, f, strict=True) if a != b]
    assert len(diff) == 1 and bin(diff[0]).count("1") == 1
    noisy = FaultInjector(noise=1.0, seed=3)
    outs = [noisy(f) for _ in range(50)]
    assert all(len(o) > len(f) for o in outs)
    assert noisy.counts.noise == 50 and 0 < noisy.counts.noise_inside < 50
    assert noisy.counts.intact == 50 - noisy.counts.noise_inside
    garbage = b"".join(o[: -len(f)] for o in outs if o.endswith(f))
    assert b"\x42\x4d" in garbage  # noise tempts decoders that resync on one byte


def test_same_seed_same_faults():
    spec = "noise=0.1,checksum=0.05,truncate=0.05,drop=0.05"
    a = FaultInjector.from_spec(spec, seed=42)
    b = FaultInjector.from_spec(spec, seed=42)
    chunks = frames(200)
    assert [a(c) for c in chunks] == [b(c) for c in chunks]
    assert a.counts == b.counts


def test_every_intact_frame_survives_the_decoder():
    """Sans-I/O version of the end-to-end check: what the injector spared, the codec finds."""
    inj = FaultInjector(noise=0.08, checksum=0.04, truncate=0.04, drop=0.02, seed=5)
    chunks = frames(500)
    wire = b"".join(inj(c) for c in chunks) + bytes(64)  # filler ends any half frame
    dec = codec.FrameDecoder()
    got = [e.raw for e in dec.feed(wire) if isinstance(e, codec.Frame)]
    assert got == list(inj.intact)
    c = inj.counts
    assert c.chunks == 500 and c.drop and c.checksum and c.truncate and c.noise_inside
    assert dec.counters.frames == c.intact


def test_injector_rejects_bad_rates():
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        FaultInjector(noise=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        FaultInjector(drop=0.6, checksum=0.6)


# -- fault specs ------------------------------------------------------------------
def test_parse_fault_spec():
    assert parse_fault_spec("noise=0.05,checksum=0.02,truncate=0.02,drop=0.01") == {
        "noise": 0.05, "checksum": 0.02, "truncate": 0.02, "drop": 0.01,
    }
    assert parse_fault_spec(" Noise = 0.1 , ") == {"noise": 0.1}
    assert parse_fault_spec("") == {}
    assert parse_fault_spec("none") == {}
    inj = FaultInjector.from_spec("drop=0.5,seed=9")
    assert inj.seed == 9 and inj.drop == 0.5
    assert FaultInjector.from_spec(inj.spec()).drop == 0.5
    assert FaultInjector.from_spec("none").spec() == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("jitter=0.1", "unknown fault 'jitter'"),
        ("noise", "is not KEY=RATE"),
        ("noise=lots", "'lots' is not a number"),
        ("noise=1.2", r"outside 0\.\.1"),
        ("drop=-0.1", r"outside 0\.\.1"),
        ("noise=0.1,noise=0.2", "given twice"),
        ("drop=0.5,truncate=0.3,checksum=0.3", "at most 1"),
        ("seed=1.5", "seed must be an integer"),
    ],
)
def test_parse_fault_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_fault_spec(spec)
