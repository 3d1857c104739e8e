"""Fixtures: a real KETI Mobius (oneM2M IN-CSE) with its MariaDB and mosquitto on loopback
ports. Every test here is marked ``onem2m`` (``make test-onem2m``; ``make test`` leaves
them out) and skips with the reason when ../shared, node, mariadbd or mosquitto is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from onem2m_harness import Mobius, missing


@pytest.fixture(scope="module")
def mobius(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mobius]:
    """One Mobius for a module's tests (each test uses its own AE)."""
    why = missing()
    if why:
        pytest.skip(why)
    m = Mobius(tmp_path_factory.mktemp("mobius"))
    m.start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def own_mobius(tmp_path: Path) -> Iterator[Mobius]:
    """A Mobius of one test's own, for tests that restart or reset it."""
    why = missing()
    if why:
        pytest.skip(why)
    m = Mobius(tmp_path)
    m.start()
    try:
        yield m
    finally:
        m.stop()
