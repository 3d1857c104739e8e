"""bench/platforms.py part 1 (bytes on the wire per report): its table has the right shape.
No timings and no daemon: the memory and Mobius parts run only in ``make bench``."""

from __future__ import annotations

import math
from pathlib import Path

from agent.wire import formats
from bench import platforms


def test_every_format_has_a_row_and_the_reference_is_first(tmp_path: Path) -> None:
    rows = platforms.build_rows(tmp_path)
    assert rows[0].fmt == platforms.REFERENCE
    assert sorted(r.fmt for r in rows) == sorted(formats.NAMES)


def test_available_rows_are_positive_and_senml_cbor_is_one(tmp_path: Path) -> None:
    rows = platforms.build_rows(tmp_path)
    ref = rows[0]
    assert ref.report is not None, ref.note
    assert ref.ratio == 1.0
    assert ref.report.messages == 1
    for r in rows:
        if r.report is None:  # a format still being written says why
            assert r.note.startswith("not available"), r.fmt
            continue
        c = r.report
        assert c.messages > 0 and c.payload > 0 and c.topic > 0, r.fmt
        assert c.total == c.payload + c.topic + platforms.MQTT_OVERHEAD * c.messages
        assert math.isfinite(r.ratio) and r.ratio > 0, r.fmt
        assert r.opening.messages >= 0 and r.opening.total >= 0 and r.will >= 0


def test_senml_cbor_row_is_the_spooled_pack(tmp_path: Path) -> None:
    """The reference row forwards the spooled bytes: payload = the SenML-CBOR pack."""
    rows = platforms.build_rows(tmp_path)
    item = platforms.spooled(platforms.Topics("citynode", platforms.NODE), platforms.SEQ,
                             platforms.REPORT_TIME)
    assert rows[0].report is not None
    assert rows[0].report.payload == len(item.payload)
    assert rows[0].report.topic == len(item.topic)


def test_the_printed_table_names_every_format(tmp_path: Path) -> None:
    lines: list[str] = []
    platforms.print_bytes(platforms.build_rows(tmp_path), lines.append)
    text = "\n".join(lines)
    for name in formats.NAMES:
        assert f"\n{name} " in text
    assert f"{platforms.MQTT_OVERHEAD} B per PUBLISH" in text
