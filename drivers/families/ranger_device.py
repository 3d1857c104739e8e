"""The host driver every UART distance ranger shares (A02YYUW, JSN-SR04T, MaxBotix).

A ranger's driver builds its :class:`drivers.families.ranger_protocol.DistanceProtocol` (its
frame decoder, what counts as no echo, streaming or triggered) and says nothing else:
:class:`DistanceDevice` gives readings ``{"d": metres}``, the counters, and the keywords
every ranger takes (:class:`RangerOptions`). This module loads pyserial; the family's
configuration is in :mod:`drivers.families.ranger`, which device specs import.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypedDict

import serial

from ..serialdev import SerialDevice, SerialFactory, check_quantities
from .ranger import QUANTITIES
from .ranger_protocol import Discarded, DistanceProtocol, Sample

#: Silence after which a ranger is reported as not sending (it sends every 100-300 ms).
NO_DATA_TIMEOUT_S = 5.0


class RangerOptions(TypedDict, total=False):
    """Keywords every ranger driver takes besides its own: the quantities reported, the
    silence that means the sensor is gone; the port factory and clocks (tests replace them)."""

    quantities: tuple[str, ...]
    no_data_timeout_s: float
    serial_factory: SerialFactory
    clock: Callable[[], float]
    wall_clock: Callable[[], float]


class DistanceDevice(SerialDevice):
    """What the UART distance drivers share: readings ``{"d": metres}`` and the counters."""

    query_mode = "triggered"
    sample_type = Sample
    discarded_type = Discarded
    protocol: DistanceProtocol

    def __init__(self, port: str, protocol: DistanceProtocol, *, name: str,
                 read_interval_s: float, quantities: tuple[str, ...] = QUANTITIES,
                 no_data_timeout_s: float = NO_DATA_TIMEOUT_S,
                 serial_factory: SerialFactory = serial.Serial,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        check_quantities(name, quantities, QUANTITIES)
        if read_interval_s <= 0:
            raise ValueError("read_interval_s must be positive")
        super().__init__(
            port, protocol, quantities=quantities, read_interval_s=read_interval_s,
            no_data_timeout_s=no_data_timeout_s, serial_factory=serial_factory,
            clock=clock, wall_clock=wall_clock,
        )

    def stats(self) -> dict[str, int]:
        p = self.protocol
        return self._frame_stats(ambiguous_splits=getattr(p.decoder.counters, "ambiguous", 0),
                                 readings=p.samples, no_echo=p.no_echo,
                                 out_of_range=p.out_of_range, triggers=p.triggers)
