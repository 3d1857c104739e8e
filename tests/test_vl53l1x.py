"""VL53L1X: the ULD's values, ROI encoding, the register-level chip model, the driver's
register sequences over the fake I2C bus, counting mode, captures and the configuration."""

from __future__ import annotations

import json

import i2c_helpers as i2c
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from i2c_helpers import Clock, agent_built, attach, readings

from agent.core import config
from agent.tools.cli import main as cli
from drivers import catalogue
from drivers.base import DeviceError, DeviceGone
from drivers.emulation.i2c import FakeBus, Nack, parse_capture
from drivers.i2cdev import WrongChip
from drivers.readme import example_capture, sample_table
from drivers.vl53l1x import codec as c
from drivers.vl53l1x.device import VL53L1X, ZoneSample
from drivers.vl53l1x.doorway import Doorway, Walker, column_edges_deg
from drivers.vl53l1x.emulator import Flat, VL53L1XModel, model_for
from drivers.vl53l1x.emulator import attach as attach_model

ADDR = 0x29
SPEC = catalogue.get("vl53l1x")


def rig(model: VL53L1XModel | None = None, **kw):
    return attach(VL53L1X, ADDR, model or VL53L1XModel(Flat(1234)), **kw)


def run_for(dev: VL53L1X, clock: Clock, seconds: float) -> list:
    out: list = []
    end = clock.t + seconds
    while clock.t < end:
        out += dev.poll()
    return out


# -- the ULD's values ---------------------------------------------------------------------------
def test_default_configuration_block():
    block = c.DEFAULT_CONFIGURATION
    assert len(block) == 91 and c.DEFAULT_CONFIG_END == 0x87

    def at(reg: int, n: int = 1) -> int:
        return int.from_bytes(block[reg - 0x2D:reg - 0x2D + n], "big")

    assert at(c.GPIO_HV_MUX__CTRL) == 0x01  # interrupt active high
    assert at(c.SYSTEM__INTERRUPT_CONFIG_GPIO) == 0x20  # new sample ready
    assert c.mode_of_phasecal(at(c.PHASECAL_CONFIG__TIMEOUT_MACROP)) == "long"
    assert c.budget_of_words(at(c.RANGE_CONFIG__TIMEOUT_MACROP_A_HI, 2)) == 100
    assert at(c.SYSTEM__INTERMEASUREMENT_PERIOD, 4) == 0x0F89
    assert at(c.ROI_CONFIG__USER_ROI_CENTRE_SPAD) == 199
    assert c.decode_roi_size(at(c.ROI_CONFIG__USER_ROI_REQUESTED_GLOBAL_XY_SIZE)) == (16, 16)
    assert at(c.SYSTEM__MODE_START) == 0  # not ranging after init
    assert c.sensor_init_block() == b"\x00\x2d" + block


def test_distance_modes_and_timing_budgets():
    assert c.distance_mode_writes("short") == [
        bytes.fromhex("004b14"), bytes.fromhex("006007"), bytes.fromhex("006305"),
        bytes.fromhex("006938"), bytes.fromhex("00780705"), bytes.fromhex("007a0606")]
    assert c.distance_mode_writes("long")[0] == bytes.fromhex("004b0a")
    assert c.timing_budget_writes("long", 33) == [bytes.fromhex("005e0060"),
                                                  bytes.fromhex("0061006e")]
    assert c.timing_budget_words("short", 15) == (0x001D, 0x0027)
    assert c.timing_budget_words("short", 500) == (0x0591, 0x05C1)
    assert c.timing_budget_words("long", 200) == (0x02D9, 0x02F8)
    with pytest.raises(ValueError, match="20, 33, 50, 100, 200, 500"):
        c.timing_budget_words("long", 15)
    with pytest.raises(ValueError, match="distance mode"):
        c.distance_mode_writes("medium")
    for mode, table in c.TIMING_BUDGETS.items():
        for ms, (a, _b) in table.items():
            assert c.budget_of_words(a) == ms, (mode, ms)
    assert c.budget_of_words(0x1234) is None and c.mode_of_phasecal(0x33) is None


def test_inter_measurement_period():
    # The ULD: (OSC_CALIBRATE_VAL & 0x3FF) * ms * 1.075, truncated.
    assert c.inter_measurement_register(33, 0x01C5) == 0x3EC6 == int(453 * 33 * 1.075)
    assert c.inter_measurement_register(100, 0xFDC5) == int(453 * 100 * 1.075)  # 10 bits
    assert c.inter_measurement_ms(0x3EC6, 0x01C5) == pytest.approx(33, abs=0.01)
    assert c.inter_measurement_ms(1000, 0) is None
    with pytest.raises(ValueError):
        c.inter_measurement_register(0, 0x1C5)


@given(st.integers(15, 10_000), st.integers(1, 0x3FF))
def test_inter_measurement_round_trip(ms, osc):
    back = c.inter_measurement_ms(c.inter_measurement_register(ms, osc), osc)
    assert back is not None and ms - 1 / (osc * c.IM_FACTOR) - 1e-9 <= back <= ms + 1e-9


def test_range_status_mapping():
    # The ULD's status_rtn: the device's code -> the range status UM2510 documents.
    assert c.range_status(9) == c.VALID and c.range_status(0xE9) == c.VALID  # bits 4:0
    assert c.range_status(6) == c.SIGMA_FAIL and c.range_status(4) == c.SIGNAL_FAIL
    assert c.range_status(5) == c.OUT_OF_BOUNDS and c.range_status(7) == c.WRAPAROUND
    assert c.range_status(3) == c.HARDWARE_FAIL and c.range_status(19) == c.NO_WRAP_CHECK
    assert c.range_status(0) == c.range_status(31) == c.NO_UPDATE
    for status, code in c.DEVICE_CODE.items():
        assert c.range_status(code) == status


@given(st.sampled_from(sorted(c.DEVICE_CODE)), st.integers(0, 0xFFFF),
       st.integers(0, 255), st.integers(0, 255))
def test_result_block_round_trips(status, mm, count, spads):
    r = c.decode_result(c.encode_result(status, mm, stream_count=count, spads=spads,
                                        signal_kcps=800, ambient_kcps=80))
    assert (r.status, r.distance_mm, r.stream_count, r.spads) == (status, mm, count, spads)
    assert r.signal_kcps == 800 and r.ambient_kcps == 80
    assert r.trusted == (status in c.TRUSTED)
    json.dumps(r.as_dict())
    with pytest.raises(ValueError, match="17 bytes"):
        c.decode_result(b"\x09" * 16)


def test_data_ready_follows_the_polarity():
    assert c.interrupt_active_high(0x01) and not c.interrupt_active_high(0x11)
    assert c.data_ready(0x03, True) and not c.data_ready(0x02, True)
    assert c.data_ready(0x02, False) and not c.data_ready(0x03, False)


# -- region of interest (UM2555) ------------------------------------------------------------------
def test_spad_table():
    assert c.spad_number(0, 0) == 128 and c.spad_number(0, 15) == 248
    assert c.spad_number(7, 8) == 199 and c.spad_number(8, 0) == 127
    assert c.spad_number(15, 15) == 0 and c.spad_number(15, 0) == 120
    assert c.spad_position(167) == (7, 4) and c.spad_position(231) == (7, 12)
    assert sorted(c.spad_number(r, k) for r in range(16) for k in range(16)) == list(range(256))
    with pytest.raises(ValueError):
        c.spad_number(16, 0)
    with pytest.raises(ValueError):
        c.spad_position(256)


@given(st.integers(0, 255))
def test_spad_numbers_round_trip(spad):
    assert c.spad_number(*c.spad_position(spad)) == spad


@given(st.integers(4, 16), st.integers(4, 16))
def test_roi_size_register_round_trips(width, height):
    assert c.decode_roi_size(c.roi_size_byte(width, height)) == (width, height)


def test_roi_encoding_and_placement():
    assert c.roi_size_byte(16, 16) == 0xFF and c.roi_size_byte(8, 16) == 0xF7
    assert c.roi_size_byte(4, 4) == 0x33
    assert c.roi_span(199, 16, 16) == (range(0, 16), range(0, 16))
    assert c.roi_span(167, 8, 16) == (range(0, 16), range(0, 8))  # UM2600's two halves
    assert c.roi_span(231, 8, 16) == (range(0, 16), range(8, 16))
    assert c.roi_span(199, 5, 5) == (range(5, 10), range(6, 11))
    c.check_roi(8, 16, 175)  # ST's later zone-0 centre fits too
    for bad in ((3, 4), (4, 17)):
        with pytest.raises(ValueError, match=r"4\.\.16"):
            c.roi_size_byte(*bad)
    with pytest.raises(ValueError, match="does not fit"):
        c.check_roi(16, 16, 167)
    with pytest.raises(ValueError, match="does not fit"):
        c.check_roi(8, 16, 128)


# -- the chip model ---------------------------------------------------------------------------
def transfer(model: VL53L1XModel, parts, now: float) -> list[bytes]:
    return model.transfer(parts, now)


def test_model_power_up_registers_and_16_bit_addresses():
    m = VL53L1XModel()
    (mid,) = transfer(m, [("w", b"\x01\x0f"), ("r", 2)], 0.0)
    assert mid == b"\xea\xcc"
    (centre,) = transfer(m, [("w", b"\x01\x3e"), ("r", 1)], 0.0)
    assert centre == bytes([199])
    transfer(m, [("w", b"\x00")], 0.0)  # half a register address: ignored
    transfer(m, [("w", b"")], 0.0)  # an address probe
    transfer(m, [("w", b"\x01\x0f\x12\x34")], 0.0)  # the model id is read-only
    assert transfer(m, [("w", b"\x01\x0f"), ("r", 2)], 0.0) == [b"\xea\xcc"]
    assert m.stats["ignored"] == 3
    transfer(m, [("w", b"\x00\x7f\xa7\xf7")], 0.0)  # auto-increment: 0x7F, then 0x80
    assert m.roi == (167, 8, 16)


def test_model_boots_after_a_power_cycle():
    m = VL53L1XModel()
    m.power_cycle(10.0)
    with pytest.raises(Nack):
        transfer(m, [("w", b"\x00\xe5"), ("r", 1)], 10.0005)
    assert transfer(m, [("w", b"\x00\xe5"), ("r", 1)], 10.002) == [b"\x01"]


def test_model_measures_through_the_latched_roi_and_waits_for_the_clear():
    m = VL53L1XModel(Flat(900))
    transfer(m, [("w", c.sensor_init_block())], 0.0)
    transfer(m, [("w", c.write_byte(c.SYSTEM__MODE_START, c.START_RANGING))], 0.0)
    transfer(m, [("w", c.write_byte(c.ROI_CONFIG__USER_ROI_CENTRE_SPAD, 167))], 0.01)
    (status,) = transfer(m, [("w", b"\x00\x31"), ("r", 1)], 0.05)
    assert not c.data_ready(status[0])  # a 100 ms budget (the default block)
    (status,) = transfer(m, [("w", b"\x00\x31"), ("r", 1)], 0.11)
    assert c.data_ready(status[0])
    (block,) = transfer(m, [("w", b"\x00\x89"), ("r", 17)], 0.11)
    r = c.decode_result(block)
    assert (r.status, r.distance_mm) == (c.NO_WRAP_CHECK, 900)  # first range after a start
    assert m.measured[-1].centre == 199  # started before the centre was written
    transfer(m, [("w", b"\x00\x31"), ("r", 1)], 5.0)
    assert len(m.measured) == 1  # no clear, no new measurement
    transfer(m, [("w", c.write_byte(c.SYSTEM__INTERRUPT_CLEAR, 1))], 5.0)
    transfer(m, [("w", b"\x00\x31"), ("r", 1)], 5.2)
    assert len(m.measured) == 2 and m.measured[-1].centre == 167
    assert c.decode_result(transfer(m, [("w", b"\x00\x89"), ("r", 17)], 5.2)[0]).status == 0
    transfer(m, [("w", c.write_byte(c.SYSTEM__MODE_START, c.STOP_RANGING))], 5.2)
    transfer(m, [("w", c.write_byte(c.SYSTEM__INTERRUPT_CLEAR, 1))], 5.2)
    transfer(m, [("w", b"\x00\x31"), ("r", 1)], 9.0)
    assert len(m.measured) == 2 and not m.ranging


def test_model_polarity_address_change_and_soft_reset():
    clock = Clock(0.0)
    bus = FakeBus(clock=clock)
    m = attach_model(bus, VL53L1XModel(Flat(700)))

    def tio() -> int:
        w, r = _write_read(ADDR if ADDR in bus.devices else 0x31, c.GPIO__TIO_HV_STATUS, 1)
        bus.i2c_rdwr(w, r)
        return bytes(r)[0]

    assert c.data_ready(tio(), True) is False  # nothing measured yet: bit 0 low
    bus.write_i2c_block_data(ADDR, 0x00, [0x30, 0x11])  # GPIO_HV_MUX__CTRL: active low
    assert tio() & 1 and c.data_ready(tio(), False) is False  # idle level is high
    m.pending = True
    assert c.data_ready(tio(), False) is True
    bus.write_i2c_block_data(ADDR, 0x00, [0x01, 0x31])  # I2C_SLAVE__DEVICE_ADDRESS
    assert 0x31 in bus.devices and ADDR not in bus.devices
    bus.write_i2c_block_data(0x31, 0x00, [0x00, 0x00])  # SOFT_RESET low...
    bus.write_i2c_block_data(0x31, 0x00, [0x00, 0x01])  # ...and released: reboot
    assert bus.devices == {ADDR: m} and m.stats["resets"] == 1
    with pytest.raises(OSError):
        tio()  # still booting
    clock.sleep(0.002)
    assert c.data_ready(tio(), True) is False  # power-up registers: active high, idle


def _write_read(addr: int, reg: int, n: int):
    from smbus2 import i2c_msg

    return i2c_msg.write(addr, reg.to_bytes(2, "big")), i2c_msg.read(addr, n)


def test_doorway_geometry_and_truth():
    assert column_edges_deg(0, 16) == (-13.5, 13.5) and column_edges_deg(8, 16) == (0.0, 13.5)
    w = Walker(10.0, "out", speed_mps=1.0)
    assert w.x(10.0) == 0.0 and w.x(9.0) == 1.0 and w.x(7.0) is None
    hesitant = Walker(5.0, "in", turn_at_m=-0.2, pause_s=1.0, speed_mps=1.0)
    assert hesitant.x(5.5) == -0.2 and hesitant.x(6.5) == pytest.approx(-0.7)
    scene = Doorway([w, hesitant], noise_mm=0.0)
    assert scene.truth() == [(10.0, "out")]
    floor, _, _ = scene.measure(0.0, 167, 8, 16)
    assert floor == 2400
    # At 10.1 s the walker's shoulders are under zone 0 only (going out: towards x < 0).
    assert scene.measure(10.1, 167, 8, 16)[0] < 1000 and scene.measure(10.3, 231, 8, 16)[0] == 2400
    assert scene.measure(0.0, 199, 16, 16, mode="short")[1] == c.SIGNAL_FAIL  # 2.4 m > 1.3 m
    with pytest.raises(ValueError):
        Walker(0.0, "sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        model_for("fog", 1)


# -- the driver ---------------------------------------------------------------------------------
def test_open_runs_the_uld_sequence_and_ranges():
    rg = rig()
    log = rg.bus.start_log()
    rg.dev.open()
    got = readings(rg.dev, 3)
    assert [r.values["d"] for r in got] == [1.234] * 3
    assert log[:4] == ["29 W 01 0f", "29 R ea cc", "29 W 00 e5", "29 R 01"]
    assert log[4] == "29 W " + c.sensor_init_block().hex(" ")  # the default block, one write
    i = log.index("29 W 00 87 40")
    assert log[i + 1:i + 2] == ["29 W 00 31"]  # sensor init waits for its first ranging
    assert log.index("29 W 00 86 01") < log.index("29 W 00 87 00") < log.index("29 W 00 08 09")
    assert "29 W 00 0b 00" in log
    regs = rg.model.regs
    assert regs[c.VHV_CONFIG__TIMEOUT_MACROP_LOOP_BOUND] == 0x09
    assert regs[0x2D:0x30] == c.DEFAULT_CONFIGURATION[:3]
    assert rg.model.ranging and rg.dev.stats()["readings"] == 3


@pytest.mark.parametrize("mode", ["short", "long"])
@pytest.mark.parametrize("budget", c.BUDGETS_MS)
def test_distance_mode_and_timing_budget_registers(mode, budget):
    if budget not in c.TIMING_BUDGETS[mode]:
        with pytest.raises(ValueError):
            VL53L1X(FakeBus(), distance_mode=mode, timing_budget_ms=budget)
        return
    rg = rig(VL53L1XModel(Flat(1000)), distance_mode=mode, timing_budget_ms=budget,
             inter_measurement_ms=max(budget, 100))
    rg.dev.open()
    m = rg.model
    want = c.DISTANCE_MODES[mode]
    assert (m.regs[0x4B], m.regs[0x60], m.regs[0x63], m.regs[0x69]) == want[:4]
    assert (m.word(0x78), m.word(0x7A)) == want[4:]
    assert (m.word(0x5E), m.word(0x61)) == c.TIMING_BUDGETS[mode][budget]
    assert (m.mode, m.budget_ms) == (mode, budget)
    im = int.from_bytes(m.regs[0x6C:0x70], "big")
    assert im == c.inter_measurement_register(max(budget, 100), m.osc_calibrate)
    run_for(rg.dev, rg.clock, 1.2)
    last = m.measured[-1]
    assert last.end - last.start == pytest.approx(budget / 1000)
    assert m.period_s == pytest.approx(max(budget, 100) / 1000, rel=0.01)


def test_ranging_roi_is_written():
    rg = rig(roi=(4, 6), roi_centre=c.spad_number(3, 12))
    rg.dev.open()
    readings(rg.dev, 1)
    assert rg.model.roi == (c.spad_number(3, 12), 4, 6)
    assert {(m.centre, m.width, m.height) for m in list(rg.model.measured)[1:]} == {
        (c.spad_number(3, 12), 4, 6)}
    with pytest.raises(ValueError, match="does not fit"):
        VL53L1X(FakeBus(), roi=(16, 16), roi_centre=167)


def test_a_wrong_chip_is_refused_and_nothing_there_is_gone():
    for model_id, what in ((0xEBAA, "VL53L4CD"), (0x1234, "unknown chip")):
        rg = rig(VL53L1XModel(model_id=model_id))
        with pytest.raises(WrongChip, match=what):
            rg.dev.open()
        assert rg.model.stats["writes"] == 0  # nothing written to a chip that is not ours
    rg = rig()
    rg.bus.fault(ADDR, detached=True)
    with pytest.raises(DeviceGone, match="no answer"):
        rg.dev.open()
    i2c.missing_bus_is_gone(VL53L1X)


def test_counting_alternates_the_zones_each_measurement():
    scene = Doorway([Walker(1.5, "in")], seed=5)
    rg = rig(VL53L1XModel(scene), mode="counting", timing_budget_ms=33, clock=Clock(0.0))
    got: list[ZoneSample] = []
    rg.dev.on_samples = got.extend
    rg.dev.open()
    run_for(rg.dev, rg.clock, 4.0)
    measured = [m for m in rg.model.measured if m.centre in (167, 231)]
    assert len(got) == len(measured) >= 100  # 33 ms each: about 30 a second
    assert [m.centre for m in measured[:4]] == [167, 231, 167, 231]
    for sample, m in zip(got, measured, strict=True):
        assert c.COUNTING_CENTRES[sample.zone] == m.centre
        assert sample.distance_mm == m.distance_mm and sample.status == m.status
    assert {m.width for m in measured} == {8} and {m.height for m in measured} == {16}
    near = {s.zone for s in got if s.distance_mm is not None and s.distance_mm < 1600}
    assert near == {0, 1}  # the walker was seen in both zones


def test_a_failed_clear_reads_the_result_again_without_mixing_up_the_zones():
    class ClearNacked(VL53L1XModel):
        fail = 1

        def _write_part(self, data: bytes, now: float) -> None:
            if data[:2] == b"\x00\x86" and self.stats["measurements"] > 5 and self.fail:
                self.fail -= 1
                raise Nack()
            super()._write_part(data, now)

    rg = rig(ClearNacked(Doorway([Walker(1.0, "in")], seed=2)), mode="counting",
             timing_budget_ms=33, clock=Clock(0.0))
    got: list[ZoneSample] = []
    rg.dev.on_samples = got.extend
    rg.dev.open()
    errors = 0
    while rg.clock.t < 3.0:
        try:
            rg.dev.poll()
        except DeviceError:
            errors += 1
    measured = [m for m in rg.model.measured if m.centre in (167, 231)]
    assert errors == 1 and rg.dev.stats()["nacks"] == 1
    assert len(got) == len(measured)  # the result of the failed clear was taken once
    assert all(c.COUNTING_CENTRES[s.zone] == m.centre for s, m in zip(got, measured,
                                                                       strict=True))


def test_counting_readings_are_the_background_never_a_person():
    scene = Doorway([Walker(0.5 + 3 * k, "in" if k % 2 else "out") for k in range(5)],
                    seed=6)
    rg = rig(VL53L1XModel(scene), mode="counting", timing_budget_ms=33, read_interval_s=1.0,
             clock=Clock(0.0))
    rg.dev.open()
    values = [r.values["d"] for r in run_for(rg.dev, rg.clock, 15.0)]
    assert len(values) >= 12 and all(2.3 < d < 2.5 for d in values)
    assert len(rg.dev.drain_samples()) > 300 and rg.dev.drain_samples() == []


def test_range_errors_are_counted_and_give_no_reading():
    rg = rig(VL53L1XModel(Flat(3000, status=c.SIGNAL_FAIL)), read_interval_s=0.5)
    rg.dev.open()
    assert run_for(rg.dev, rg.clock, 2.0) == []
    stats = rg.dev.stats()
    assert stats["signal_fail"] >= 10 and stats["no_target"] >= 3 and stats["bad_frames"] == 0
    rg.model.scene = Flat(2000, status=c.WRAPAROUND)
    run_for(rg.dev, rg.clock, 0.5)
    assert rg.dev.stats()["wraparound"] > 0


def test_counting_samples_carry_a_distance_only_for_the_statuses_st_counts_with():
    for status, usable in ((c.VALID, True), (c.OUT_OF_BOUNDS, True), (c.WRAPAROUND, True),
                           (c.SIGNAL_FAIL, False), (c.SIGMA_FAIL, False),
                           (c.HARDWARE_FAIL, False)):
        rg = rig(VL53L1XModel(Flat(1500, status=status)), mode="counting",
                 timing_budget_ms=33)
        rg.dev.open()
        run_for(rg.dev, rg.clock, 0.3)
        got = rg.dev.drain_samples()[1:]  # the first after a start is status 6 when valid
        assert got and all((s.distance_mm == 1500) == usable for s in got), status
        assert {s.status for s in got} == {status}


def test_a_brown_out_is_noticed_and_the_chip_set_up_again():
    rg = rig()
    rg.dev.open()
    readings(rg.dev, 1)
    rg.model.power_cycle(rg.clock.t)  # back to power-up registers, not ranging
    got = run_for(rg.dev, rg.clock, 3.0)
    assert rg.dev.stats()["stalls"] == 1 and rg.model.ranging
    assert got and got[-1].values["d"] == 1.234


def test_nacks_are_errors_then_gone_then_recovery():
    rg = rig()
    i2c.nacks_then_gone_then_back(rg, ADDR)
    assert readings(rg.dev, 1)[0].values["d"] == 1.234


def test_change_address_moves_the_chip_and_the_driver_follows():
    clock = Clock()
    bus = FakeBus(clock=clock, sleep=clock.sleep)
    model = attach_model(bus, VL53L1XModel(Flat(800)))
    dev = VL53L1X(bus, clock=clock, wall_clock=clock, sleep=clock.sleep)
    dev.open()
    dev.change_address(0x30)
    assert bus.devices == {0x30: model} and dev.address == 0x30
    assert readings(dev, 1)[0].values["d"] == 0.8
    with pytest.raises(ValueError):
        dev.change_address(0x80)


def test_bad_arguments_and_not_open():
    with pytest.raises(ValueError, match="mode"):
        VL53L1X(FakeBus(), mode="tracking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inter_measurement_ms"):
        VL53L1X(FakeBus(), timing_budget_ms=50, inter_measurement_ms=33)
    with pytest.raises(ValueError, match="two different"):
        VL53L1X(FakeBus(), mode="counting", zone_centres=(167, 167))
    with pytest.raises(ValueError, match="address"):
        VL53L1X(FakeBus(), address=0x80)
    with pytest.raises(DeviceGone, match="not open"):
        VL53L1X(FakeBus()).poll()


def test_a_chip_that_never_finishes_its_first_ranging_is_an_error():
    class Stuck(VL53L1XModel):
        def _start(self, t: float) -> None:  # never measures
            self.last_start, self.next_start = t, None

    rg = rig(Stuck())
    with pytest.raises(DeviceError, match="no ranging"):
        rg.dev.open()


# -- captures -----------------------------------------------------------------------------------
def test_readme_capture_decodes():
    docs = list(c.decode_capture(parse_capture(example_capture(SPEC).splitlines())))
    i2c.check_capture_docs(docs)
    assert "rejected" not in {d["type"] for d in docs}
    by_type = {d["type"]: d for d in docs}
    assert by_type["model_id"]["chip"] == "VL53L1X"
    whats = [d.get("what") for d in docs if d["type"] == "write"]
    assert "default configuration (ULD)" in whats and "start ranging" in whats
    budget = next(d for d in docs if d.get("what") == "timing budget (A)")
    assert budget["timing_budget_ms"] == 33
    im = next(d for d in docs if d.get("what") == "inter-measurement period")
    assert im["inter_measurement_ms"] == pytest.approx(33.0, abs=0.1)
    results = [d for d in docs if d["type"] == "result"]
    assert [(r["status"], r["distance_mm"]) for r in results] == [(6, 848), (0, 2403), (0, 846)]
    centres = [d["spad"] for d in docs if d.get("what") == "ROI centre"]
    assert centres == [167, 231, 167, 231]


def test_capture_edge_cases():
    recs = [(ADDR, "W", None), (ADDR, "W", b""), (ADDR, "W", b"\x00"), (ADDR, "R", b"\x01"),
            (ADDR, "W", b"\x01\x0f"), (ADDR, "R", b"\xeb\xaa"), (ADDR, "R", None),
            (ADDR, "W", b"\x00\x2d" + bytes(91)), (0x23, "W", b"\x01")]
    docs = list(c.decode_capture(recs))
    assert [d["type"] for d in docs] == ["rejected", "probe", "rejected", "rejected", "select",
                                         "model_id", "rejected", "write", "rejected"]
    assert docs[5]["chip"] == "a VL53L4CD"
    assert "differs" in docs[7]["what"]


@settings(max_examples=300)
@given(i2c.capture_records([ADDR, 0x52], [b"\x01\x0f", b"\x00\x89", b"\x00\x31",
                                          b"\x00\x87\x40", b"\x00\x6c\x00\x00\x3e\xc6",
                                          b"\x00\xde", b"\x00\x7f\xff\x00"], max_len=20))
def test_capture_decoder_never_raises(recs):
    i2c.check_capture_docs(c.decode_capture(recs))


def test_bus_capture_is_decodable():
    rg = rig(VL53L1XModel(Doorway([Walker(0.6, "in")], seed=1)), mode="counting",
             timing_budget_ms=20)
    _, docs = i2c.bus_capture(rg, c.decode_capture, 1)
    i2c.check_capture_docs(docs)
    assert "rejected" not in {d["type"] for d in docs}
    assert len([d for d in docs if d["type"] == "result"]) >= 10


def test_cli_frames_vl53l1x(capsys, tmp_path):
    path = tmp_path / "capture.txt"
    path.write_text(example_capture(SPEC))
    assert cli(["frames", "vl53l1x", str(path)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(d["type"] == "result" for d in docs) == 3


# -- the spec and the agent --------------------------------------------------------------------
def test_identify_reads_the_model_id():
    bus = FakeBus(clock=lambda: 0.0)
    bus.attach(ADDR, VL53L1XModel())
    got = SPEC.identify(bus, ADDR, lambda s: None)
    assert got is not None and got.chip == "VL53L1X" and "0xeacc" in got.evidence
    bus.attach(ADDR, VL53L1XModel(model_id=0xEBAA))
    assert SPEC.identify(bus, ADDR, lambda s: None).chip is None
    assert SPEC.identify(bus, 0x30, lambda s: None) is None


def test_the_agent_builds_the_emulated_sensor():
    with agent_built("vl53l1x", "door", ADDR) as dev:
        assert isinstance(dev, VL53L1X) and dev.mode == "ranging"
        got = []
        for _ in range(400):
            got += dev.poll()
            if got:
                break
        assert got and 0.3 < got[0].values["d"] <= 2.5


def parse(table: str) -> config.Config:
    return config.parse('[node]\nid = "n1"\n[[sensor]]\ntype = "vl53l1x"\nname = "door"\n'
                        + table, "t.toml", check_devices=False)


def test_configuration_checks():
    cfg = parse('mode = "counting"\n[sensor.counting]\ncentres = [175, 231]\n')
    s = cfg.sensor[0]
    assert s.use.role == "distance" and list(s.reported()) == ["d"]
    assert s.counting.threshold_mm == 1600
    for table, key in (
            ('mode = "counting"\n[sensor.use]\nrole = "bay"\n', "use.role"),
            ("timing_budget_ms = 15\n", "timing_budget_ms"),
            ("timing_budget_ms = 100\ninter_measurement_ms = 50\n", "inter_measurement_ms"),
            ("roi_width = 16\nroi_centre = 167\n", "roi_centre"),
            ('mode = "counting"\n[sensor.counting]\ncentres = [231, 231]\n', "counting.centres"),
            ('mode = "counting"\n[sensor.counting]\ncentres = [128, 231]\n', "counting.centres"),
            ('mode = "counting"\n[sensor.counting]\nthreshold_mm = 90\n',
             "counting.threshold_mm")):
        with pytest.raises(config.ConfigError) as err:
            parse(table)
        assert key in err.value.key or key in str(err.value), (table, str(err.value))
    with pytest.raises(config.ConfigError):
        parse("timing_budget_ms = 40\n")


def test_sample_configuration_is_counting_with_the_manual_zones():
    table = sample_table(SPEC)
    cfg = msgspec.convert(table, SPEC.config)
    assert cfg.mode == "counting" and tuple(cfg.counting.centres) == c.COUNTING_CENTRES
    assert (cfg.counting.roi_width, cfg.counting.roi_height) == c.COUNTING_ROI


def test_fall_detection_leaves_the_counting_stream_alone():
    from agent.features.safety import fall_sensors

    cfg = parse('mode = "counting"\n')
    assert SPEC.samples and fall_sensors(cfg) == []
