"""A relay (or a relay board's channel) on one GPIO pin, through gpiozero.

    >>> from drivers.relay import Relay
    >>> relay = Relay(17, active_high=False, safe_state="off")   # BCM number
    >>> relay.open()          # the pin is driven to the safe state at once
    >>> relay.on(); relay.state
    'on'
    >>> relay.close()         # back to the safe state, then the pin is released

The relay is an actuator, not a :class:`~drivers.base.Device`: it has no readings.
The power it switches is measured by a separate power meter; the daemon feeds that
meter's readings to :class:`agent.features.relays.RelayController`, which owns a ``Relay``.

Choosing ``active_high`` and ``safe_state`` (docs/relay.md has the wiring):

* ``active_high``: how the board's input works. ``True`` when a HIGH pin energises
  the coil (most single-relay modules with an NPN transistor, "high-level trigger").
  ``False`` when a LOW pin energises it (most optocoupled multi-channel boards,
  "low-level trigger": the pin sinks the optocoupler LED's current from VCC).
* ``safe_state``: the position the *load* must be in when nobody controls it, said as
  the relay's logical state: ``"off"`` = coil de-energised, ``"on"`` = energised.
  Wire the load so that the de-energised coil IS the safe position: a load that must be
  unpowered when in doubt (heater, pump, charger) goes on the normally-open (NO)
  contact and ``safe_state="off"``; a load that must stay powered when in doubt
  (street light, ventilation) goes on the normally-closed (NC) contact, still with
  ``safe_state="off"`` (then "off" means "coil off, load powered"). ``safe_state="on"``
  is only for a board that cannot be wired that way; it is safe only while the
  daemon runs (see below).

What happens when:

* **the agent starts**: :meth:`Relay.open` claims the pin as an output already at
  the safe level (gpiozero's ``initial_value``), so there is no glitch to the other
  state;
* **the agent stops**: :meth:`Relay.close` drives the safe level, then releases the pin;
* **the agent dies** (SIGKILL, crash, out of memory): nothing runs. The Pi's GPIO keeps
  the last output level it was given, so the relay stays where it was until something
  else drives the pin; at a reboot (or power loss) every GPIO reverts to an input and
  the level is whatever the board's own pull resistor (and the Pi's default pull:
  up on BCM 0-8, down on the others) makes of it. A low-level-trigger board pulls its
  input up to VCC: the coil is de-energised. So the safe position must be the coil's
  de-energised position (``safe_state="off"``, the load on NO or NC as above), and
  systemd's restart brings the daemon back, whose :meth:`open` drives the safe state
  again. A protective cut-off cannot act while the daemon is dead: put a fuse or
  breaker rated for the load in the circuit anyway.

gpiozero errors when the pin cannot be claimed (in use, no GPIO on this machine) are
:class:`~drivers.base.DeviceError`.
"""

from __future__ import annotations

from typing import Any

from gpiozero import OutputDevice
from gpiozero.exc import GPIOZeroError

from .base import DeviceError

__all__ = ["STATES", "Relay"]

STATES = ("on", "off")


class Relay:
    """One relay channel on one GPIO pin (see the module docstring).

    ``pin`` is a BCM GPIO number (or any pin spec gpiozero takes); ``pin_factory`` is
    gpiozero's (None: ``Device.pin_factory``, e.g. a MockFactory in tests).
    """

    def __init__(self, pin: int, *, active_high: bool = True, safe_state: str = "off",
                 pin_factory: Any = None) -> None:
        if safe_state not in STATES:
            raise ValueError(f"safe_state must be 'on' or 'off', not {safe_state!r}")
        self.pin = pin
        self.active_high = bool(active_high)
        self.safe_state = safe_state
        self.pin_factory = pin_factory
        self._device: OutputDevice | None = None
        self.counters = {"switches": 0}

    @property
    def name(self) -> str:
        return f"relay on GPIO {self.pin}"

    def safe_level(self) -> bool:
        """The pin level (True = high) of the safe state."""
        return (self.safe_state == "on") == self.active_high

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Claim the pin as an output, already at the safe state."""
        self.close()
        try:
            self._device = OutputDevice(self.pin, active_high=self.active_high,
                                        initial_value=self.safe_state == "on",
                                        pin_factory=self.pin_factory)
        except (GPIOZeroError, OSError, ValueError) as exc:
            raise DeviceError(f"{self.name}: cannot claim the pin: {exc}") from exc

    def close(self) -> None:
        """Drive the safe state, then release the pin. Safe to call twice."""
        device, self._device = self._device, None
        if device is None:
            return
        try:
            self._write(device, self.safe_state)
        finally:
            device.close()

    @property
    def is_open(self) -> bool:
        return self._device is not None

    # -- switching --------------------------------------------------------------------
    def on(self) -> None:
        """Energise the coil (the logical "on": pin high if ``active_high``)."""
        self._write(self._open_device(), "on")

    def off(self) -> None:
        """De-energise the coil."""
        self._write(self._open_device(), "off")

    @property
    def state(self) -> str:
        """``"on"`` or ``"off"``; the safe state while closed."""
        device = self._device
        if device is None:
            return self.safe_state
        return "on" if device.value else "off"

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def _open_device(self) -> OutputDevice:
        device = self._device
        if device is None:
            raise DeviceError(f"{self.name} is not open")
        return device

    def _write(self, device: OutputDevice, state: str) -> None:
        before = bool(device.value)
        try:
            if state == "on":
                device.on()
            else:
                device.off()
        except (GPIOZeroError, OSError) as exc:
            raise DeviceError(f"{self.name}: cannot switch {state}: {exc}") from exc
        if bool(device.value) != before:
            self.counters["switches"] += 1
