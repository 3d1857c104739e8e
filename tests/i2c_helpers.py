"""Shared scaffolding for the I2C driver tests (SHT3x, BME280, SPS30, BH1750, LTR390, I2CXL...):
a fake clock, a driver attached to a chip model on a :class:`FakeBus`, polling loops, and the
checks every I2C driver and capture decoder must pass."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import strategies as st

from drivers.base import DeviceError, DeviceGone
from drivers.emulation.i2c import FakeBus, parse_capture


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


def nacks_then_gone_then_back(rg: SimpleNamespace, address: int, *,
                              brown_out: bool = True) -> None:
    """The failure path of an I2C driver: a chip that NACKs everything is an error, an error,
    then gone; reopened while nothing answers at ``address``, gone at once ("no answer");
    answering again (after a brown-out, the model's ``power_cycle``, with ``brown_out``), it
    opens. Leaves ``rg.dev`` open for the caller's look at the next readings."""
    rg.dev.open()
    readings(rg.dev, 1)
    rg.bus.fault(address, nack=1.0)
    assert poll_until_gone(rg.dev) == ["error", "error", "gone"]
    rg.dev.close()
    rg.bus.fault(address, nack=0.0, detached=True)
    with pytest.raises(DeviceGone, match="no answer"):
        rg.dev.open()
    rg.bus.fault(address, detached=False)
    if brown_out:
        rg.model.power_cycle(rg.clock.t - 1)  # came back after a brown-out
    rg.dev.open()


def bus_capture(rg: SimpleNamespace, decode: Callable[[Any], Iterable[dict]],
                n: int) -> tuple[list, list[dict]]:
    """Open ``rg.dev`` on a bus that logs its transfers and take ``n`` readings: them, and
    what ``decode`` (the codec's ``decode_capture``) makes of the log."""
    log = rg.bus.start_log()
    rg.dev.open()
    got = readings(rg.dev, n)
    return got, list(decode(parse_capture(log)))


def capture_records(addresses: list[int], commands: list[bytes], *, max_len: int,
                    max_size: int = 20) -> st.SearchStrategy:
    """Captures to throw at a decoder: ``(address, "W"|"R", bytes or None)`` records at
    ``addresses``, carrying nothing (a NACK), up to ``max_len`` random bytes, or one of the
    chip's ``commands``."""
    return st.lists(st.tuples(
        st.sampled_from(addresses), st.sampled_from(["W", "R"]),
        st.one_of(st.none(), st.binary(max_size=max_len), st.sampled_from(commands)),
    ), max_size=max_size)


def check_capture_docs(docs: Iterable[dict], types: Collection[str] | None = None) -> None:
    """What a capture decoder yields: JSON documents (of one of ``types``, when given), a
    rejection saying why."""
    for doc in docs:
        json.dumps(doc)
        if types is not None:
            assert doc["type"] in types
        if doc["type"] == "rejected":
            assert doc["reason"]


def missing_bus_is_gone(device_cls: type) -> None:
    """A bus number with no ``/dev/i2c-N``: opening ``device_cls`` on it is gone, saying so."""
    def factory(n: int) -> Any:
        raise FileNotFoundError(2, "No such file or directory", f"/dev/i2c-{n}")

    with pytest.raises(DeviceGone, match="cannot open I2C bus 7"):
        device_cls(7, bus_factory=factory).open()
