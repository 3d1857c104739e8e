"""Shared scaffolding for the I2C driver tests (SHT3x, BME280, SPS30): a fake clock, a
driver attached to a chip model on a :class:`FakeBus`, and polling loops."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from drivers.base import DeviceError, DeviceGone
from drivers.emulation.i2c import FakeBus


class Clock:
    """A fake monotonic clock; ``sleep`` moves it (the bus and the driver share it)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += max(s, 0.0)


def attach(device_cls: type, address: int, model: Any, *, clock: Clock | None = None,
           seed: int | None = 0, **kw: Any) -> SimpleNamespace:
    """``device_cls`` driving ``model`` at ``address`` on a fake bus, all on one fake clock:
    a namespace with ``clock``, ``model``, ``bus`` and ``dev`` (not opened)."""
    clock = clock or Clock()
    bus = FakeBus({address: model}, clock=clock, sleep=clock.sleep, seed=seed)
    dev = device_cls(bus, clock=clock, wall_clock=clock, sleep=clock.sleep, **kw)
    return SimpleNamespace(clock=clock, model=model, bus=bus, dev=dev)


def readings(dev: Any, n: int) -> list:
    """Poll until ``n`` readings came (errors propagate)."""
    out: list = []
    for _ in range(100 * n):
        out += dev.poll()
        if len(out) >= n:
            return out
    raise AssertionError(f"only {len(out)} readings")


def poll_until_gone(dev: Any, tries: int = 200) -> list[str]:
    """Poll a failing device: the outcomes in order, "error" for each DeviceError, then
    "gone" for the DeviceGone that ends it."""
    kinds: list[str] = []
    for _ in range(tries):
        try:
            dev.poll()
        except DeviceGone:
            kinds.append("gone")
            break
        except DeviceError:
            kinds.append("error")
    return kinds


@contextmanager
def agent_built(sensor_type: str, name: str, address: int) -> Iterator[Any]:
    """The driver the agent builds for a ``bus = "emulator"`` sensor, opened (and closed)."""
    from agent.core import config
    from agent.core.sensors import build_device

    cfg = config.parse(f'[node]\nid = "n1"\n[[sensor]]\ntype = "{sensor_type}"\n'
                       f'name = "{name}"\nbus = "emulator"\naddress = {address:#04x}\n',
                       "t.toml", check_devices=False)
    dev = build_device(cfg.sensor[0])
    dev.open()
    try:
        yield dev
    finally:
        dev.close()
