"""Every device's codec by name, for ``citynode frames DEVICE``.

A device registers a factory for its incremental decoder and a function that
turns each decoder event into a JSON-ready dict. Rejected spans always become
``{"type": "rejected", "reason": ...}`` so installers read all devices alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .a02yyuw import codec as a02yyuw
from .adxl345 import codec as adxl345
from .bme280 import codec as bme280
from .cse7766 import codec as cse7766
from .jsnsr04t import codec as jsnsr04t
from .maxbotix import codec as maxbotix
from .maxbotix_i2c import codec as i2cxl
from .mpu6050 import codec as mpu6050
from .pms5003 import codec as pms
from .pzem004t import codec as pzem
from .sds011 import codec as sds
from .sgp30 import codec as sgp30
from .sht3x import codec as sht3x
from .sps30 import codec as sps30


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...
    def flush(self) -> list[Any]: ...


@dataclass(frozen=True)
class Codec:
    description: str
    decoder: Callable[[], StreamDecoder]
    describe: Callable[[Any], tuple[dict[str, Any], int]]  # event -> (json, bytes consumed)


def _pms_describe(ev: Any) -> tuple[dict[str, Any], int]:
    if isinstance(ev, pms.Frame):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, pms.Ack):
        return {"type": "ack", "cmd": f"{ev.cmd:02x}", "data": ev.data}, len(ev.raw)
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


def _sds_describe(ev: Any) -> tuple[dict[str, Any], int]:
    if isinstance(ev, sds.Frame):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, sds.Reply):
        return {"type": "ack", "cmd": f"{ev.cmd:02x}", **ev.as_dict()}, len(ev.raw)
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


def _distance_describe(ev: Any) -> tuple[dict[str, Any], int]:
    """A02YYUW / JSN-SR04T / MaxBotix: distance frames (``d`` in metres)."""
    if isinstance(ev, (a02yyuw.Frame, maxbotix.Frame)):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


@dataclass(frozen=True)
class I2CCodec:
    """An I2C device's decoder for captured transfers (``ADDR W|R HEX`` lines)."""

    description: str
    addresses: tuple[int, ...]
    decode: Callable[[list[tuple[int, str, bytes | None]]], Iterable[dict[str, Any]]]


#: I2C devices register here (name -> I2CCodec); `citynode frames` reads captures for them.
I2C_CODECS: dict[str, I2CCodec] = {}
I2C_CODECS["sps30"] = I2CCodec("Sensirion SPS30 particulate sensor (I2C 0x69)",
                                (sps30.ADDRESS,), sps30.decode_capture)
I2C_CODECS["sht3x"] = I2CCodec("Sensirion SHT3x temperature/humidity (I2C 0x44/0x45)",
                                sht3x.ADDRESSES, sht3x.decode_capture)
I2C_CODECS["bme280"] = I2CCodec("Bosch BME280 temperature/humidity/pressure (I2C 0x76/0x77)",
                                 bme280.ADDRESSES, bme280.decode_capture)
I2C_CODECS["sgp30"] = I2CCodec("Sensirion SGP30 gas sensor, eCO2/TVOC/raw H2+ethanol (I2C 0x58)",
                                (sgp30.ADDRESS,), sgp30.decode_capture)
I2C_CODECS["i2cxl"] = I2CCodec("MaxBotix I2CXL-MaxSonar-EZ ultrasonic range (I2C 0x70)",
                                i2cxl.ADDRESSES, i2cxl.decode_capture)
I2C_CODECS["adxl345"] = I2CCodec("Analog Devices ADXL345 accelerometer, FIFO samples in g "
                                  "(I2C 0x53/0x1D)", adxl345.ADDRESSES, adxl345.decode_capture)
I2C_CODECS["mpu6050"] = I2CCodec("InvenSense MPU-6050 accelerometer, FIFO samples in g "
                                  "(I2C 0x68/0x69)", mpu6050.ADDRESSES, mpu6050.decode_capture)

CODECS: dict[str, Codec] = {
    "pms5003": Codec("Plantower PMS5003/PMS7003 (UART 9600 8N1)", pms.FrameDecoder, _pms_describe),
    "sds011": Codec("Nova Fitness SDS011 (UART 9600 8N1)", sds.FrameDecoder, _sds_describe),
    "a02yyuw": Codec("DFRobot A02YYUW ultrasonic distance, FF H L SUM in mm (UART 9600 8N1)",
                     a02yyuw.FrameDecoder, _distance_describe),
    "jsnsr04t": Codec("JSN-SR04T V3 ultrasonic distance, UART modes, FF H L SUM in mm "
                      "(UART 9600 8N1)", jsnsr04t.FrameDecoder, _distance_describe),
    "maxbotix": Codec("MaxBotix MaxSonar serial R####\\r (mm) / R###\\r (cm) (UART 9600 8N1)",
                      maxbotix.FrameDecoder, _distance_describe),
}


def _cse_describe(ev: Any) -> tuple[dict[str, Any], int]:
    if isinstance(ev, cse7766.Frame):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


def _pzem_describe(ev: Any) -> tuple[dict[str, Any], int]:
    """Requests and responses of a sniffed Modbus bus; CRC failures are rejected spans."""
    if isinstance(ev, pzem.Request):
        return {"type": "request", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, (pzem.Measurement, pzem.Registers)):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, pzem.Echo):
        return {"type": "ack", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, pzem.ExceptionResponse):
        return {"type": "exception", **ev.as_dict()}, len(ev.raw)
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


CODECS["cse7766"] = Codec("Chipsea CSE7766 power meter, Sonoff POW R2/S31 (UART 4800 8E1)",
                          cse7766.FrameDecoder, _cse_describe)
CODECS["pzem004t"] = Codec("Peacefair PZEM-004T v3.0 power meter, Modbus RTU requests and "
                           "responses (UART 9600 8N1)", pzem.FrameDecoder, _pzem_describe)
ALIASES = {"pms7003": "pms5003", "pmsa003": "pms5003"}
ALIASES.update({"sht30": "sht3x", "sht31": "sht3x", "sht35": "sht3x"})
ALIASES.update({"gy-521": "mpu6050", "gy-291": "adxl345"})
ALIASES.update({"sen0311": "a02yyuw", "jsn-sr04t": "jsnsr04t", "maxsonar": "maxbotix"})


def get(name: str) -> Codec | I2CCodec:
    key = ALIASES.get(name.lower(), name.lower())
    if key in CODECS:
        return CODECS[key]
    if key in I2C_CODECS:
        return I2C_CODECS[key]
    known = ", ".join(sorted([*CODECS, *I2C_CODECS]))
    raise KeyError(f"unknown device {name!r}; known: {known}")


def decode_stream(codec: Codec, chunks: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    """Decode a byte stream, yielding one dict per event with its byte offset."""
    dec = codec.decoder()
    offset = 0

    def emit(events: list[Any]) -> Iterable[dict[str, Any]]:
        nonlocal offset
        for ev in events:
            doc, n = codec.describe(ev)
            yield {"offset": offset, "length": n, **doc}
            offset += n

    for chunk in chunks:
        yield from emit(dec.feed(chunk))
    yield from emit(dec.flush())
