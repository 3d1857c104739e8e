"""The walk over captured I2C transfers that every chip's capture decoder shares."""

from __future__ import annotations

from drivers.i2ccapture import CaptureWalk
from drivers.sht3x.codec import decode_capture as sht3x_capture


def test_walk_keeps_the_chips_transfers_and_reports_the_rest_once() -> None:
    records = [(0x44, "W", b"\x24\x00"), (0x50, "R", b"\x01"), (0x44, "R", None),
               (0x50, "W", b""), (0x68, "R", b"\x02")]
    walk = CaptureWalk((0x44, 0x45))
    seen = list(walk(records))
    assert seen == [(0x44, "W", b"\x24\x00", {"transfer": 0, "addr": "0x44"}),
                    (0x44, "R", None, {"transfer": 2, "addr": "0x44"})]
    assert list(walk.summary()) == [{
        "type": "rejected",
        "reason": "transfers to addresses other than 0x44/0x45 ignored: 0x50 (2), 0x68 (1)",
        "ignored": {"0x50": 2, "0x68": 1}}]
    assert list(CaptureWalk((0x44,)).summary()) == []


def test_general_call_reset_is_decoded_and_other_general_calls_are_not() -> None:
    events = list(sht3x_capture([(0x00, "W", b"\x06"), (0x00, "W", b"\x09"),
                                 (0x77, "W", b"\xd0")], (0x44,)))
    assert events[0] == {"transfer": 0, "type": "command", "addr": "0x00", "cmd": "06",
                         "name": "general call reset"}
    assert events[-1]["type"] == "rejected"
    assert events[-1]["reason"].endswith("ignored: 0x00 (1), 0x77 (1)")
    assert "other than 0x44 " in events[-1]["reason"]
