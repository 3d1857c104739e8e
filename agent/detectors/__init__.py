"""Detectors: turn a stream of readings into state changes (sans-I/O).

They know readings, never bytes: a detector is fed ``(t, value)`` pairs by the
sampling loop, by an offline replay or by a test, and returns events.
"""

from agent.detectors.fill import FillEvent, FillLevelDetector
from agent.detectors.occupancy import (
    BayGroup,
    CalibrationError,
    Event,
    OccupancyDetector,
    Summary,
    calibrate,
)

__all__ = [
    "BayGroup",
    "CalibrationError",
    "Event",
    "FillEvent",
    "FillLevelDetector",
    "OccupancyDetector",
    "Summary",
    "calibrate",
]
