"""The PZEM-004T v3.0 emulated: a Modbus RTU slave with no I/O.

``PZEM004TModel(source, address=0x01)`` answers requests to its address or to
the general address 0xF8; broadcasts (0x00) are obeyed without a reply; other
addresses are silent. Function 0x04 reads the 10 input registers (V, I, P,
energy, f, PF, alarm), 0x03 the holding registers 1 (alarm threshold) and 2
(address), 0x06 writes them (echoed), 0x42 resets energy (echoed). Bad
registers or counts get exception 0x02/0x03, unknown functions 0x01. Requests
with a bad CRC are ignored, as a real slave does. Energy integrates the
source's watts over the model's clock (1 Wh resolution on the wire).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from ..emulation.plug import tracebase_source
from . import codec

__all__ = ["PZEM004TModel", "SentMeasurement"]


class SentMeasurement(NamedTuple):
    t: float
    v: float
    a: float
    w: float
    wh: float
    hz: float
    pf: float


class PZEM004TModel:
    """Device side of one PZEM-004T (a :class:`drivers.emulation.DeviceModel`)."""

    def __init__(
        self,
        source: Callable[[float], float] | None = None,
        *,
        address: int = 0x01,
        voltage: float = 230.0,
        frequency: float = 50.0,
        pf: float = 1.0,
        energy_wh: float = 0.0,
        alarm_threshold_w: int = 23000,
        keep_sent: int = 1000,
    ) -> None:
        if not 1 <= address <= codec.MAX_ADDRESS:
            raise ValueError("address must be 0x01..0xF7")
        self.source = source if source is not None else tracebase_source()
        self.address = address
        self.voltage = voltage
        self.frequency = frequency
        self.pf = pf
        self.energy_wh = energy_wh
        self.alarm_threshold_w = alarm_threshold_w
        self.sent: deque[SentMeasurement] = deque(maxlen=keep_sent)
        self.stats = {"requests": 0, "replies": 0, "exceptions": 0, "other_address": 0,
                      "bad_requests": 0, "resets": 0}
        self._buf = bytearray()
        self._t: float | None = None
        self._w = 0.0

    # -- DeviceModel -----------------------------------------------------------------
    def tick(self, now: float) -> bytes:
        self._advance(now)
        return b""

    def reset(self, now: float) -> None:
        self._buf.clear()
        self.stats["resets"] += 1

    def receive(self, data: bytes, now: float) -> list[bytes]:
        self._advance(now)
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 4:
            fn = self._buf[1]
            n = codec.REQUEST_LEN.get(fn)
            if n is None:
                # Unknown function: RTU frames end with silence, so take what came in.
                n = len(self._buf)
            if len(self._buf) < n:
                break
            frame = bytes(self._buf[:n])
            if not codec.crc_ok(frame):
                self.stats["bad_requests"] += 1
                del self._buf[:1]
                continue
            del self._buf[:n]
            reply = self._answer(frame, now)
            if reply:
                out.append(reply)
        return out

    # -- internals ---------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        w = max(float(self.source(now)), 0.0)
        if self._t is not None and now > self._t:
            self.energy_wh += self._w * (now - self._t) / 3600.0
        self._t, self._w = now, w

    def _answer(self, frame: bytes, now: float) -> bytes:
        addr, fn = frame[0], frame[1]
        if addr not in (self.address, codec.GENERAL_ADDRESS, codec.BROADCAST):
            self.stats["other_address"] += 1
            return b""
        self.stats["requests"] += 1
        reply = self._execute(frame, now)
        if addr == codec.BROADCAST:
            return b""
        if len(reply) == 5 and reply[1] == fn | 0x80:
            self.stats["exceptions"] += 1
        else:
            self.stats["replies"] += 1
        return reply

    def _execute(self, frame: bytes, now: float) -> bytes:
        me, fn = self.address, frame[1]

        def exc(code: int) -> bytes:
            return codec.encode_exception(me, fn, code)

        if fn not in (codec.READ_INPUT, codec.READ_HOLDING, codec.WRITE_SINGLE,
                      codec.RESET_ENERGY):
            return exc(0x01)
        req = codec.parse_request(frame)
        if fn == codec.RESET_ENERGY:
            self.energy_wh = 0.0
            return frame
        reg, val = req.register or 0, req.value or 0
        if fn == codec.READ_INPUT:
            if not 1 <= val <= codec.N_INPUT:
                return exc(0x03)
            if reg + val > codec.N_INPUT:
                return exc(0x02)
            regs = self._input_registers(now)
            return codec.encode_registers(me, fn, regs[reg:reg + val])
        if fn == codec.READ_HOLDING:
            if not 1 <= val <= 2:
                return exc(0x03)
            if reg < 1 or reg + val > 3:
                return exc(0x02)
            hold = [0, self.alarm_threshold_w, self.address]
            return codec.encode_registers(me, fn, hold[reg:reg + val])
        if reg == codec.REG_ADDRESS:
            if not 1 <= val <= codec.MAX_ADDRESS:
                return exc(0x03)
            self.address = val
            return frame
        if reg == codec.REG_ALARM_THRESHOLD:
            self.alarm_threshold_w = val
            return frame
        return exc(0x02)

    def _input_registers(self, now: float) -> list[int]:
        w, v = self._w, self.voltage
        a = w / (v * self.pf) if w > 0 else 0.0
        pf = self.pf if w > 0 else 0.0
        raw = codec.encode_measurement(self.address, v, a, w, self.energy_wh, self.frequency, pf,
                                       w > self.alarm_threshold_w)
        self.sent.append(SentMeasurement(now, round(v, 1), round(a, 3), round(w, 1),
                                         int(self.energy_wh), self.frequency, round(pf, 2)))
        return [int.from_bytes(raw[3 + i:5 + i], "big") for i in range(0, 20, 2)]
