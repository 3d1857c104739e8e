"""Shared fixtures: a real mosquitto, the project root, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CITYNODE_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository; tests that need it skip clearly without it."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (set CITYNODE_SHARED)")
    return SHARED


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A private mosquitto on a free loopback port, stopped after the test."""
    from agent.tools.simulate import Mosquitto, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it when run as root)")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def factory():
    """gpiozero's mock pins for one test (the driver's pins behave like hardware), then the
    pin factory the test found."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    f = MockFactory()
    Device.pin_factory = f
    yield f
    f.reset()
    Device.pin_factory = old


@pytest.fixture
def simulate_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``citynode simulate`` may check its options but start no broker and make no
    folder: either fails the test."""
    from agent.tools import simulate

    def no(*a: object, **k: object) -> None:
        raise AssertionError("started something")

    monkeypatch.setattr(simulate, "Mosquitto", no)
    monkeypatch.setattr(simulate.tempfile, "mkdtemp", no)
