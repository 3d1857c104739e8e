"""The MQTT topic layout under ``<prefix>/<node id>/`` (docs/payload.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    node: str

    def _t(self, leaf: str) -> str:
        return f"{self.prefix}/{self.node}/{leaf}"

    @property
    def telemetry(self) -> str:
        """Aggregated measurements, one pack per report interval (QoS 1)."""
        return self._t("telemetry")

    @property
    def event(self) -> str:
        """Changes worth a message of their own: health transitions, alarms (QoS 1)."""
        return self._t("event")

    @property
    def health(self) -> str:
        """Periodic compact health report (uptime, sensors, spool, resources)."""
        return self._t("health")

    @property
    def state(self) -> str:
        """Retained birth ("online") and last will / goodbye ("offline")."""
        return self._t("state")

    @property
    def command(self) -> str:
        """Downlink commands to this node."""
        return self._t("command")

    @property
    def result(self) -> str:
        """Results of downlink commands, with the command's correlation id."""
        return self._t("result")
