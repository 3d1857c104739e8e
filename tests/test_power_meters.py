"""CSE7766 and PZEM-004T v3.0: reference frames, CRC vectors, stream robustness, pty round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serial_helpers import emulate_fixture, host_fixture, poll_until

from agent.tools.cli import main as cli_main
from drivers import registry
from drivers.base import DeviceError
from drivers.cse7766 import CSE7766, EnergyCounter
from drivers.cse7766 import codec as cse
from drivers.cse7766.emulator import CSE7766Model
from drivers.emulation import DeviceModel
from drivers.emulation.plug import builtin_kettle, load_trace, tracebase_source
from drivers.framing import Rejected
from drivers.pzem004t import PZEM004T, ModbusException
from drivers.pzem004t import codec as pz
from drivers.pzem004t.emulator import PZEM004TModel
from drivers.spec import FrameCodec

H = bytes.fromhex
LOAD = H("55 5A 02 E9 50 00 03 31 00 3E 9E 00 0D 30 4F 44 F8 00 12 65 F1 81 76 72")
NO_LOAD = H("F2 5A 02 E9 50 00 03 2B 00 3E 9E 02 D7 7C 4F 44 F8 CF A5 5D E1 B3 2A B4")
PZ_REQ = H("01 04 00 00 00 0A 70 0D")
PZ_RESP = H("01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34")


def _with_header(frame: bytes, header: int) -> bytes:
    return bytes([header]) + frame[1:]  # checksum covers bytes 2..22 only


# -- CSE7766 codec ------------------------------------------------------------------------
def test_cse_real_frame_with_load():
    (f,) = cse.FrameDecoder().feed(LOAD)
    assert f.state == "normal" and f.valid and not f.fault
    assert f.v == pytest.approx(233.537332, abs=5e-4)
    assert f.w == pytest.approx(1103.206626, abs=5e-4)
    assert f.a == pytest.approx(4.748223, abs=5e-4)
    assert f.adj == 0xF1 and f.cf == 33142


def test_cse_real_frame_without_load_power_cycle_out_of_range():
    (f,) = cse.FrameDecoder().feed(NO_LOAD)
    assert f.state == "error" and f.no_load and f.valid
    assert f.v == pytest.approx(235.265105, abs=5e-4)
    assert f.w == 0.0
    assert f.a_raw == pytest.approx(0.086074, abs=5e-4)
    assert f.a == 0.0  # Tasmota: forced to 0 when P = 0
    assert f.adj == 0xE1 and f.cf == 0xB32A


def test_cse_uncalibrated_uses_default_coefficients():
    (f,) = cse.FrameDecoder().feed(_with_header(LOAD, 0xAA))
    assert f.state == "uncalibrated" and f.valid
    assert f.coefficients == (191200, 16140, 5364000)
    assert f.v == pytest.approx(191200 / 817)
    assert f.w == pytest.approx(5364000 / 4709)


@pytest.mark.parametrize("header", [0xF8, 0xF4, 0xF1, 0xFC, 0xFD])
def test_cse_overflow_states_are_faults(header):
    (f,) = cse.FrameDecoder().feed(_with_header(LOAD, header))
    assert f.state == "error" and not f.valid and f.fault
    assert (f.v, f.a, f.w) == (0.0, 0.0, 0.0)


def test_cse_checksum_valid_garbage_rejected_by_range():
    # 10 W... at Pcycle 100: 51950 W, impossible; sum still valid
    bad = cse.encode_frame(0x55, 190800, 817, 16030, 3376, 5195000, 100, 0x70, 0)
    evs = cse.FrameDecoder().feed(bad + LOAD)
    assert isinstance(evs[0], Rejected) and "out of range" in evs[0].reason
    assert isinstance(evs[-1], cse.Frame) and evs[-1].cf == 33142
    zero = cse.encode_frame(0x55, 190800, 0, 16030, 3376, 5195000, 4709, 0x70, 0)
    assert "zero cycle" in cse.FrameDecoder().feed(zero)[0].reason


def test_cse_checksum_failure_resyncs_and_accounts_bytes():
    damaged = LOAD[:10] + bytes([LOAD[10] ^ 1]) + LOAD[11:]
    dec = cse.FrameDecoder()
    evs = dec.feed(b"\x00\x55" + damaged + NO_LOAD)
    assert sum(len(e.data) if isinstance(e, Rejected) else len(e.raw) for e in evs) == 2 + 48
    assert isinstance(evs[-1], cse.Frame) and evs[-1].raw == NO_LOAD
    assert any("checksum mismatch" in e.reason for e in evs if isinstance(e, Rejected))
    assert dec.counters.frames == 1 and dec.counters.bad_frames == 1


def test_cf_counter_wraps_at_65536():
    e = EnergyCounter()
    pc = 5195000
    e.update(65500, pc, 0.0)
    e.update(20, pc, 1.0)  # 56 pulses across the wrap
    assert e.pulses == 56
    assert e.wh == pytest.approx(56 * pc / 3.6e9)
    assert e.update(20, pc, 2.0) == pytest.approx(56 * pc / 3.6e9)  # no change, no pulses


def test_cf_implausible_jump_is_dropped():
    e = EnergyCounter()
    e.update(0, 5195000, 0.0)
    e.update(30000, 5195000, 0.05)  # ~43 Wh in 50 ms: megawatts
    assert e.wh == 0.0 and e.rejected == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_cse_arbitrary_bytes_never_crash(data, cuts):
    dec = cse.FrameDecoder()
    evs, i = [], 0
    for c in cuts:
        evs += dec.feed(data[i:i + c])
        i += c
    evs += dec.feed(data[i:]) + dec.flush()
    total = sum(len(e.data) if isinstance(e, Rejected) else len(e.raw) for e in evs)
    assert total == len(data)


# -- PZEM codec ---------------------------------------------------------------------------
@pytest.mark.parametrize("built, expected", [
    (pz.read_input_registers(0x01), "01 04 00 00 00 0A 70 0D"),
    (pz.read_input_registers(0xF8), "F8 04 00 00 00 0A 64 64"),
    (pz.reset_energy(0x01), "01 42 80 11"),
    (pz.reset_energy(0xF8), "F8 42 C2 41"),
    (pz.set_address(0x01), "F8 06 00 02 00 01 FD A3"),
    (pz.read_holding_registers(0x01, 0x0001), "01 03 00 01 00 01 D5 CA"),
])
def test_pzem_requests_match_reference_crc_vectors(built, expected):
    assert built == H(expected)


def test_pzem_calibration_crc_vector():
    assert pz.add_crc(H("F8 41 37 21")) == H("F8 41 37 21 B7 78")


def test_pzem_real_response_decodes_as_documented():
    m = pz.parse_response(PZ_REQ, PZ_RESP)
    assert isinstance(m, pz.Measurement)
    assert (m.address, m.v, m.a, m.w, m.wh, m.hz, m.pf, m.alarm) == (
        1, 225.7, 0.108, 24.4, 38, 50.0, 1.0, False)
    assert m.kwh == pytest.approx(0.038)


def test_pzem_32bit_values_low_word_first():
    raw = pz.encode_measurement(1, 230.0, 12.345, 2839.3, 123456, 50.0, 1.0)
    m = pz.parse_response(PZ_REQ, raw)
    assert (m.a, m.w, m.wh) == (12.345, 2839.3, 123456)
    assert raw[5:9] == H("30 39 00 00")  # 12345 = 0x3039 in the low word first


def test_pzem_echo_replies():
    assert isinstance(pz.parse_response(pz.reset_energy(1), H("01 42 80 11")), pz.Echo)
    e = pz.parse_response(pz.set_address(1), H("F8 06 00 02 00 01 FD A3"))
    assert (e.register, e.value) == (2, 1)


@pytest.mark.parametrize("code, message", [(1, "illegal function"), (2, "illegal data address"),
                                           (3, "illegal data value"), (4, "slave device failure")])
def test_pzem_exception_responses(code, message):
    with pytest.raises(ModbusException, match=message) as info:
        pz.parse_response(PZ_REQ, pz.encode_exception(1, 0x04, code))
    assert info.value.response.code == code
    reset_err = pz.encode_exception(1, 0x42, code)
    assert reset_err[1] == 0xC2 and len(reset_err) == 5
    with pytest.raises(ModbusException):
        pz.parse_response(pz.reset_energy(1), reset_err)


def test_pzem_bad_responses_raise_clear_errors():
    with pytest.raises(pz.ModbusError, match="CRC mismatch"):
        pz.parse_response(PZ_REQ, PZ_RESP[:-1] + b"\x00")
    with pytest.raises(pz.ModbusError, match="address"):
        pz.parse_response(PZ_REQ, pz.encode_measurement(2, 230, 0, 0, 0, 50, 1))
    with pytest.raises(pz.ModbusError, match="echo"):
        pz.parse_response(pz.set_address(1), pz.write_single_register(0xF8, 2, 3))


def test_pzem_stream_decodes_requests_responses_and_flags_crc():
    bad = PZ_RESP[:-1] + bytes([PZ_RESP[-1] ^ 0xFF])
    stream = PZ_REQ + PZ_RESP + bad + H("F8 06 00 02 00 01 FD A3") * 2 + PZ_REQ
    dec = pz.FrameDecoder()
    evs = [e for b in stream for e in dec.feed(bytes([b]))] + dec.flush()
    kinds = [type(e).__name__ for e in evs]
    assert kinds[:2] == ["Request", "Measurement"]
    assert kinds[-3:] == ["Request", "Echo", "Request"]
    assert any(isinstance(e, Rejected) and "CRC mismatch" in e.reason for e in evs)
    assert dec.counters.crc_errors >= 1
    assert sum(len(e.data) if isinstance(e, Rejected) else len(e.raw) for e in evs) == len(stream)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_pzem_arbitrary_bytes_never_crash(data, cuts):
    dec = pz.FrameDecoder()
    evs, i = [], 0
    for c in cuts:
        evs += dec.feed(data[i:i + c])
        i += c
    evs += dec.feed(data[i:]) + dec.expire() + dec.flush()
    total = sum(len(e.data) if isinstance(e, Rejected) else len(e.raw) for e in evs)
    assert total == len(data)


# -- emulators, sans I/O --------------------------------------------------------------------
def test_models_satisfy_device_model():
    assert isinstance(CSE7766Model(lambda t: 1.0), DeviceModel)
    assert isinstance(PZEM004TModel(lambda t: 1.0), DeviceModel)


def test_cse_model_frames_decode_to_source_and_cf_wraps():
    m = CSE7766Model(lambda t: 3000.0, cf_start=65500)
    dec = cse.FrameDecoder()
    frames = [f for t in range(40) for f in dec.feed(b"".join(m.tick(t * 0.05)))]
    assert all(f.w == pytest.approx(3000.0, rel=1e-3) for f in frames)
    assert any(f.adj & cse.ADJ_CF_OVERFLOW for f in frames)
    e = EnergyCounter()
    for i, f in enumerate(frames):
        e.update(f.cf, f.pcoef, i * 0.05)
    assert e.wh == pytest.approx(3000.0 * (len(frames) - 1) * 0.05 / 3600, abs=2e-3)


def test_cse_model_no_load_and_uncalibrated():
    (f,) = cse.FrameDecoder().feed(CSE7766Model(lambda t: 0.0).frame(0.0))
    assert f.no_load and f.w == 0.0 and f.v == pytest.approx(230.0, rel=1e-3)
    (g,) = cse.FrameDecoder().feed(CSE7766Model(lambda t: 500.0, calibrated=False).frame(0.0))
    assert g.state == "uncalibrated" and g.w == pytest.approx(500.0, rel=1e-3)


def test_pzem_model_answers_by_address_and_exceptions():
    m = PZEM004TModel(lambda t: 100.0, address=0x05)
    assert m.receive(pz.read_input_registers(0x01), 0.0) == []  # another meter's address
    (r,) = m.receive(pz.read_input_registers(0x05), 0.0)
    assert pz.parse_response(pz.read_input_registers(0x05), r).w == 100.0
    (r,) = m.receive(pz.read_input_registers(0xF8), 0.0)  # general address
    assert r[0] == 0x05
    (r,) = m.receive(pz.add_crc(H("05 07 00 00")), 0.0)
    assert r == pz.encode_exception(5, 0x07, 0x01)
    (r,) = m.receive(pz.read_input_registers(5, start=8, count=5), 0.0)
    assert r == pz.encode_exception(5, 0x04, 0x02)
    (r,) = m.receive(pz.write_single_register(5, 0x0009, 1), 0.0)
    assert r == pz.encode_exception(5, 0x06, 0x02)
    assert m.receive(PZ_REQ[:-1] + b"\x00", 0.0) == []  # bad CRC: ignored
    (r,) = m.receive(pz.set_address(0x07, 0x05), 0.0)
    assert r == pz.set_address(0x07, 0x05) and m.address == 0x07


def test_pzem_model_energy_accumulates_and_resets():
    m = PZEM004TModel(lambda t: 3600.0)
    m.tick(0.0)
    m.tick(10.0)
    (r,) = m.receive(PZ_REQ, 10.0)
    assert pz.parse_response(PZ_REQ, r).wh == 10
    assert m.receive(pz.reset_energy(1), 10.0) == [pz.reset_energy(1)]
    (r,) = m.receive(PZ_REQ, 10.0)
    assert pz.parse_response(PZ_REQ, r).wh == 0


def test_tracebase_source_and_fallback(tmp_path, monkeypatch):
    f = tmp_path / "day.csv"
    f.write_text("15/05/2012 00:00:00;0;0\n15/05/2012 00:02:00;2000;1000\n"
                 "15/05/2012 00:02:10;5;5\n")
    assert load_trace(f) == ([0.0, 120.0, 130.0], [0.0, 2000.0, 5.0])
    s = tracebase_source(f, speed=10.0)
    assert s(100.0) == 0.0  # starts a minute before the first activity
    assert s(106.5) == 2000.0 and s(108.0) == 5.0
    monkeypatch.setenv("CITYNODE_TRACEBASE", str(tmp_path / "none"))
    monkeypatch.setattr("drivers.emulation.plug.REPO_ROOT", tmp_path)
    k = tracebase_source("WaterKettle")
    assert "built-in" in k.description and k(0.0) == builtin_kettle()(0.0) == 2000.0


# -- over a real pty ------------------------------------------------------------------------
emulate = emulate_fixture("pwr")
cse_host = host_fixture(CSE7766)
pzem_host = host_fixture(PZEM004T, reply_timeout_s=0.3)


def test_cse7766_round_trip(emulate, cse_host):
    model = CSE7766Model(lambda t: 1234.5, interval_s=0.02)
    emu = emulate(model)
    dev = cse_host(emu.path, read_interval_s=0.1)
    dev.open()
    emu.start()
    got = poll_until(dev, lambda r: len(r) >= 5, timeout=5)
    for r in got:
        assert r.values["w"] == pytest.approx(1234.5, rel=1e-3)
        assert r.values["v"] == pytest.approx(230.0, rel=1e-3)
        assert r.values["a"] == pytest.approx(1234.5 / 230, rel=1e-3)
        assert not r.fault
    assert got[-1].values["kwh"] > 0
    st_ = dev.stats()
    assert st_["frames"] >= 5 and st_["bad_frames"] == 0


def test_pzem004t_round_trip_reset_and_set_address(emulate, pzem_host):
    model = PZEM004TModel(lambda t: 456.7, address=0x01, energy_wh=5000)
    emu = emulate(model)
    emu.start()
    dev = pzem_host(emu.path, read_interval_s=0.05)
    dev.open()
    got = poll_until(dev, lambda r: len(r) >= 3, timeout=5)
    for r in got:
        assert r.values["w"] == pytest.approx(456.7, abs=0.05)
        assert r.values["v"] == 230.0 and r.values["hz"] == 50.0 and r.values["pf"] == 1.0
        assert r.values["a"] == pytest.approx(456.7 / 230, abs=5e-4)
        assert r.values["kwh"] == pytest.approx(5.0, abs=0.002)
    dev.reset_energy()
    assert model.energy_wh < 1.0
    dev.set_address(0x22)
    assert model.address == 0x22 and dev.address == 0x22
    got = poll_until(dev, lambda r: len(r) >= 1, timeout=5)
    assert got[0].values["kwh"] < 0.002
    with pytest.raises(ModbusException, match="illegal data value"):
        dev._transact(pz.write_single_register(0x22, pz.REG_ADDRESS, 0))  # address 0: refused
    with pytest.raises(ValueError):
        dev.set_address(0)
    assert dev.stats()["crc_errors"] == 0


def test_pzem004t_wrong_address_times_out(emulate, pzem_host):
    emu = emulate(PZEM004TModel(lambda t: 1.0, address=0x02))
    emu.start()
    dev = pzem_host(emu.path, address=0x01)
    dev.open()
    with pytest.raises(DeviceError, match="did not answer"):
        dev.reset_energy()


# -- citynode frames ----------------------------------------------------------------------------
def test_cli_frames_cse7766(capsys):
    rc = cli_main(["frames", "cse7766", "--hex", (LOAD + NO_LOAD).hex(" ")])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0
    assert out[0]["type"] == "frame" and out[0]["w"] == pytest.approx(1103.207)
    assert out[1]["state"] == "error" and out[1]["w"] == 0.0 and out[1]["offset"] == 24


def test_cli_frames_pzem004t(capsys):
    rc = cli_main(["frames", "pzem004t", "--hex", (PZ_REQ + PZ_RESP).hex(" ")])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [d["type"] for d in out] == ["request", "frame"]
    assert out[1]["v"] == 225.7 and out[1]["wh"] == 38
    assert isinstance(registry.get("pzem004t"), FrameCodec)
