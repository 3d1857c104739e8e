"""A relay under the daemon's control: downlink commands and the over-power cut-off.

One :class:`RelayController` per switched plug, named like the plug's ``[[sensor]]``
so that ``{"cmd": "device", "args": {"sensor": "<plug name>", "action": "off"}}``
(docs/commands.md, docs/relay.md) reaches it through :meth:`RelayController.command`.

Actions:

* ``on``, ``off``: switch (no value). ``on`` is refused while the cut-off latch is
  set: after a protective cut-off the relay stays off until an operator sends
  ``reset`` and then ``on`` (two deliberate steps, so an automated "on" retry on the
  platform cannot keep re-powering a faulty load);
* ``state``: report ``relay on`` / ``relay off`` (and ``, latched`` after a cut-off);
* ``reset``: clear the latch (does not switch on; re-arms the cut-off);
* ``relay`` with ``value`` true/false: the same as ``on``/``off`` (the example in
  docs/commands.md).

Thread-safe: commands arrive on the MQTT thread, power readings on the sampling loop.
"""

from __future__ import annotations

import threading
from typing import Any

from agent.detectors.protection import OverPowerCutoff
from drivers.base import DeviceError
from drivers.relay import Relay

__all__ = ["ACTIONS", "RelayController"]

ACTIONS = ("on", "off", "state", "reset", "relay")


class RelayController:
    """One relay, its optional cut-off and its latch (see the module docstring)."""

    def __init__(self, name: str, relay: Relay, *,
                 cutoff: OverPowerCutoff | None = None) -> None:
        self.name = name
        self.relay = relay
        self.cutoff = cutoff
        self.latched = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Claim the pin at the safe state (DeviceError if it cannot)."""
        with self._lock:
            self.relay.open()

    def close(self) -> None:
        """Back to the safe state and release the pin. Safe to call twice."""
        with self._lock:
            self.relay.close()

    def _describe(self) -> str:
        return f"relay {self.relay.state}" + (", latched by cut-off" if self.latched else "")

    def command(self, action: str, value: Any = None) -> tuple[bool, str]:
        """Run one downlink action; ``(ok, message)`` for the command's result."""
        if action == "relay":
            if not isinstance(value, bool):
                return False, "action 'relay' needs value true or false"
            action = "on" if value else "off"
        elif action not in ACTIONS:
            return False, (f"unknown action {action!r} for {self.name!r}; "
                           f"known: {', '.join(ACTIONS)}")
        elif value is not None:
            return False, f"action {action!r} takes no value"
        with self._lock:
            try:
                if action == "state":
                    return True, self._describe()
                if action == "reset":
                    was = self.latched
                    self.latched = False
                    if self.cutoff is not None:
                        self.cutoff.reset()
                    return True, ("cut-off reset; " if was else "not latched; ") + self._describe()
                if action == "on":
                    if self.latched:
                        return False, ("relay latched off by the over-power cut-off; "
                                       "send action 'reset' first")
                    self.relay.on()
                else:
                    self.relay.off()
            except DeviceError as exc:
                return False, str(exc)
            return True, self._describe()

    def on_power(self, t: float, watts: float | None) -> list[dict[str, Any]]:
        """Feed one power reading to the cut-off; on a cut-off switch off and latch.

        Returns the events as dicts (``CutoffEvent.to_dict()`` plus ``relay``: the
        state after, and ``error`` when switching off failed).
        """
        if self.cutoff is None:
            return []
        with self._lock:
            out = []
            for event in self.cutoff.update(t, watts):
                d = event.to_dict()
                self.latched = True
                try:
                    self.relay.off()
                except DeviceError as exc:
                    d["error"] = str(exc)
                d["relay"] = self.relay.state
                out.append(d)
            return out
