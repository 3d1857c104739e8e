"""Scaffolding the UART driver tests share: an emulated sensor on a real pty, the driver
on the other end, and helpers to poll it and compare what arrived with what was sent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from drivers.base import Reading
from drivers.emulation import SerialEmulator

T = TypeVar("T")


class Pollable(Protocol):
    def poll(self) -> list[Reading]: ...


def poll_until(
    dev: Pollable, done: Callable[[list[Reading]], bool], timeout: float = 3.0
) -> list[Reading]:
    """Poll the driver like the agent's loop does, until ``done(readings)``."""
    readings: list[Reading] = []
    deadline = time.monotonic() + timeout
    while not done(readings):
        assert time.monotonic() < deadline, f"timed out with {len(readings)} readings"
        readings += dev.poll()
    return readings


def assert_run_of(got: list[T], sent: list[T]) -> None:
    """``got`` must be consecutive frames the model sent: nothing lost, altered or invented."""
    assert got, "no readings"
    start = sent.index(got[0])
    assert got == sent[start: start + len(got)]


def wait_until(pred: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Wait for ``pred()``; False if it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def emulate_fixture(prefix: str) -> Any:
    """A fixture making :class:`SerialEmulator` s on ptys named ``<prefix><n>`` in tmp_path,
    all stopped after the test."""

    @pytest.fixture
    def emulate(tmp_path: Path) -> Iterator[Callable[..., SerialEmulator]]:
        started: list[SerialEmulator] = []

        def make(model: Any, **kw: Any) -> SerialEmulator:
            emu = SerialEmulator(model, tmp_path / f"{prefix}{len(started)}", **kw)
            started.append(emu)
            return emu

        yield make
        for emu in started:
            emu.stop()

    return emulate


def host_fixture(driver: Callable[..., Any], **defaults: Any) -> Any:
    """A fixture making drivers (``driver(path, **defaults, **kw)``), all closed after the test."""

    @pytest.fixture
    def host() -> Iterator[Callable[..., Any]]:
        devices: list[Any] = []

        def make(path: str, **kw: Any) -> Any:
            dev = driver(path, **{**defaults, **kw})
            devices.append(dev)
            return dev

        yield make
        for dev in devices:
            dev.close()

    return host


class Limited:
    """A :class:`DeviceModel` wrapper that falls silent after ``frames`` data frames."""

    def __init__(self, model: Any, frames: int, filler: int) -> None:
        self.model = model
        self.frames = frames
        self.filler = filler
        self.filler_sent = False

    def receive(self, data: bytes, now: float) -> list[bytes]:
        return self.model.receive(data, now)

    def tick(self, now: float) -> list[bytes]:
        if self.model.stats["frames"] < self.frames:
            return self.model.tick(now)
        if not self.filler_sent:
            # Bytes that are no frame: they complete any false header the noise left.
            self.filler_sent = True
            return [bytes(self.filler)]
        return []
