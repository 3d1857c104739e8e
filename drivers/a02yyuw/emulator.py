"""The A02YYUW itself, emulated: the device side, with no I/O (also used for the JSN-SR04T).

A *source* gives the true distance (:mod:`drivers.emulation.ranger`): millimetres at
monotonic time ``now``, or None for "no echo". The default is a constant 2000 mm.

The model sends ``FF H L SUM`` frames:

* ``output="processed"`` (sensor RX high or open): a frame every ``interval_s``
  (0.1 s; the datasheet's response time is 100-300 ms) carrying the median of
  the last few noisy measurements: steadier, and lagging a step behind;
* ``output="real-time"`` (RX held low): every measurement as it is, with its noise;
* ``triggered=True`` (UART-controlled variants, and the JSN-SR04T's mode 3):
  silent until the host writes ``trigger`` (any byte, when None: each start bit
  is the falling edge that triggers the SEN0627), then one frame per trigger.

No echo (the source says None, or the target is beyond ``max_range_mm``) goes out
as ``no_echo_value`` (0: the reference does not document the sensor's encoding;
every value at or under the blind zone means "no reading" to the driver).
Run it behind a pty with :class:`drivers.emulation.SerialEmulator`; each frame is
its own chunk, so a :class:`~drivers.emulation.FaultInjector` damages frame by frame.
"""

from __future__ import annotations

import statistics
from collections import deque

from ..emulation import uart
from ..emulation.ranger import RangerModel, Source, constant
from .codec import encode_frame

__all__ = ["OUTPUTS", "A02YYUWModel", "Source", "UltrasonicModel", "constant"]

OUTPUTS = ("processed", "real-time")
SentFrame = uart.SentFrame


class UltrasonicModel(RangerModel):
    """Device side of an ``FF H L SUM`` ultrasonic sensor (a :class:`DeviceModel`).

    :attr:`sent` keeps each frame sent with the value it carries (``None`` for no
    echo); :attr:`stats` counts frames, triggers and ignored host bytes.
    """

    def __init__(
        self,
        source: Source | None = None,
        *,
        output: str = "processed",
        interval_s: float = 0.1,
        triggered: bool = False,
        trigger: bytes | None = None,
        noise_mm: float | None = None,
        blind_mm: int = 30,
        max_range_mm: int = 4500,
        unit_mm: int = 1,
        no_echo_value: int = 0,
        sum_header: bool = True,
        seed: int | None = 0,
        keep_sent: int = 1000,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        super().__init__(
            source, interval_s=interval_s,
            noise_mm=(1.0 if output == "processed" else 3.0) if noise_mm is None else noise_mm,
            seed=seed, keep_sent=keep_sent,
            stats={"frames": 0, "no_echo": 0, "triggers": 0, "ignored_bytes": 0, "resets": 0})
        self.output = output
        self.triggered = triggered
        self.trigger = trigger
        self.blind_mm = blind_mm
        self.max_range_mm = max_range_mm
        self.unit_mm = unit_mm
        self.no_echo_value = no_echo_value
        self.sum_header = sum_header
        self._history: deque[int | None] = deque(maxlen=3)

    # -- DeviceModel ------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Host bytes: triggers in triggered mode; anything else is ignored."""
        out: list[bytes] = []
        for b in data:
            if self.triggered and (self.trigger is None or b in self.trigger):
                self.stats["triggers"] += 1
                out.append(self._frame(now, solicited=True))
            else:
                self.stats["ignored_bytes"] += 1
        return out

    def reset(self, now: float) -> None:
        """Power cycle: the median filter starts over."""
        self._history.clear()
        super().reset(now)

    # -- internals --------------------------------------------------------------------
    def measure(self, now: float) -> int | None:
        """One raw measurement in sensor units (mm, or cm), None for no echo."""
        mm = self.source(now)
        if mm is None or mm > self.max_range_mm:
            return None
        if self.noise_mm:
            mm += self.rng.gauss(0.0, self.noise_mm)
        return max(0, min(0xFFFF, round(mm / self.unit_mm)))

    def _frame(self, now: float, solicited: bool) -> bytes:
        value = self.measure(now)
        if self.output == "processed":
            self._history.append(value)
            echoes = [v for v in self._history if v is not None]
            # The median of what echoed; no echo only when most measurements had none.
            value = (round(statistics.median(echoes))
                     if len(echoes) * 2 > len(self._history) else None)
        if value is None:
            self.stats["no_echo"] += 1
        raw = encode_frame(self.no_echo_value if value is None else value, self.sum_header)
        self.sent.append(SentFrame(now, value, raw, False, solicited))
        self.stats["frames"] += 1
        return raw


class A02YYUWModel(UltrasonicModel):
    """An A02YYUW: automatic output, processed unless ``output="real-time"``."""
