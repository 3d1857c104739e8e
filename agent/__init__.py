"""citynode agent: readings in, compact MQTT messages out; never bytes."""

from agent.core.deferred_imports import DEFERRED, defer

__version__ = "0.1.0"

# Before anything imports paho-mqtt: its unused urllib.request costs 1.1 MiB of the
# daemon's memory budget (agent/core/deferred_imports.py explains).
for _name in DEFERRED:
    defer(_name)
