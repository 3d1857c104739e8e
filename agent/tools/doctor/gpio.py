"""Check 4: the GPIO pins the configuration claims: clashes, then claim and let go."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import FAIL, OK, Check
from .hints import HINT_GPIO_BUSY, HINT_GPIO_CLASH, HINT_GPIO_NONE

if TYPE_CHECKING:
    from agent.core.config import Config

# -- 4. GPIO -----------------------------------------------------------------------------------
# Which pins the configuration claims and which of them clash is decided once, in
# agent.core.config (pin_uses, pin_clashes), for config check, this check and the daemon.


@dataclass(frozen=True, slots=True)
class PinUse:
    pin: int
    owner: str  # sensor name
    role: str  # "trigger", "echo", "relay"
    emulated: bool
    claim: Callable[[Any], Callable[[], None]]  # factory -> release


def _claim_output(pin: int, initial: bool) -> Callable[[Any], Callable[[], None]]:
    def claim(factory: Any) -> Callable[[], None]:
        from gpiozero import OutputDevice

        dev = OutputDevice(pin, initial_value=initial, pin_factory=factory)
        return dev.close
    return claim


def _claim_input(pin: int) -> Callable[[Any], Callable[[], None]]:
    def claim(factory: Any) -> Callable[[], None]:
        from gpiozero import InputDevice

        dev = InputDevice(pin, pull_up=False, pin_factory=factory)
        return dev.close
    return claim


def _claim_relay(pin: int, plug: Any) -> Callable[[Any], Callable[[], None]]:
    """As the daemon does (drivers.relay): an output already at the safe state."""
    def claim(factory: Any) -> Callable[[], None]:
        from drivers.relay import Relay

        relay = Relay(pin, active_high=plug.relay_active_high,
                      safe_state=plug.relay_safe_state, pin_factory=factory)
        relay.open()
        return relay.close
    return claim


def gpio_uses(cfg: Config) -> list[PinUse]:
    """Every GPIO the configuration claims (agent.core.config.pin_uses), with how the
    daemon claims it."""
    from agent.core.config import pin_uses

    uses: list[PinUse] = []
    for p in pin_uses(cfg):
        if p.role == "relay":
            claim = _claim_relay(p.pin, p.table)
        elif p.direction == "output":
            claim = _claim_output(p.pin, False)
        else:
            claim = _claim_input(p.pin)
        uses.append(PinUse(p.pin, p.owner, p.role, p.emulated, claim))
    return uses


def _default_factory() -> Any:
    """gpiozero's pin factory as the daemon gets it (GPIOZERO_PIN_FACTORY=mock included)."""
    import warnings

    from gpiozero import Device

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "falling back to ...": the result says it
        Device.ensure_pin_factory()
    return Device.pin_factory


def check_gpio(cfg: Config, *, factory: Callable[[], Any] = _default_factory,
               claim: bool = True) -> Iterator[Check]:
    """Clashes between uses (and with the buses in use), then (``claim``: not while a
    daemon holds the pins) claim each pin and let go."""
    from gpiozero.exc import GPIOZeroError

    from agent.core.config import pin_clashes
    from drivers.base import DeviceError

    uses = gpio_uses(cfg)
    if not uses:
        return
    clashed: set[tuple[int, str, str]] = set()
    for clash in pin_clashes(cfg):
        pin = clash.pin
        who = " and ".join(f"{u.owner} {u.role}" for u in clash.uses)
        clashed.update((u.pin, u.owner, u.role) for u in clash.uses)
        if clash.bus:
            yield Check("gpio", f"GPIO {pin}", FAIL, f"{who} is also the {clash.bus} pin, "
                        "which a configured sensor uses", HINT_GPIO_CLASH)
        else:
            yield Check("gpio", f"GPIO {pin}", FAIL, f"used twice: {who}", HINT_GPIO_CLASH)
    if not claim:
        return
    real: Any = None
    real_error: str | None = None
    if any(not u.emulated for u in uses):
        try:
            real = factory()
        except (GPIOZeroError, ImportError, OSError, RuntimeError) as exc:
            real_error = f"{type(exc).__name__}: {exc}"
    for u in uses:
        if (u.pin, u.owner, u.role) in clashed:
            continue
        target = f"GPIO {u.pin} ({u.owner} {u.role})"
        if u.emulated:
            from gpiozero.pins.mock import MockFactory

            fac = MockFactory()
        elif real is None:
            yield Check("gpio", target, FAIL, f"no pin factory: {real_error}", HINT_GPIO_NONE)
            continue
        else:
            fac = real
        try:
            release = u.claim(fac)
        except (GPIOZeroError, DeviceError, OSError, ValueError) as exc:
            yield Check("gpio", target, FAIL, f"cannot claim: {exc}", HINT_GPIO_BUSY)
            continue
        try:
            release()
        except (GPIOZeroError, DeviceError, OSError) as exc:
            yield Check("gpio", target, FAIL, f"claimed, but releasing failed: {exc}",
                        HINT_GPIO_BUSY)
            continue
        kind = "emulated" if u.emulated else type(fac).__name__
        yield Check("gpio", target, OK, f"claimed and released ({kind})")
