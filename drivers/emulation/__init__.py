"""Device emulators: the device side of each protocol, behind a real serial port.

Part of the product, not only of the tests: ``citynode simulate`` runs these so
an installer can rehearse a site (topics, dashboards, alarms) before the
hardware arrives, and the same emulators drive the end-to-end tests.
"""

from .faults import FaultCounts, FaultInjector, parse_fault_spec
from .pty import DeviceModel, EmulatorStats, PtyLink, SerialEmulator

__all__ = [
    "DeviceModel",
    "EmulatorStats",
    "FaultCounts",
    "FaultInjector",
    "PtyLink",
    "SerialEmulator",
    "parse_fault_spec",
]
