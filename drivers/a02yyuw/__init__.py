"""DFRobot A02YYUW (SEN0311) ultrasonic distance sensor (UART, 9600 8N1, ``FF H L SUM``)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "A02YYUW": ".device",
    "Discarded": "..families.ranger_protocol",
    "DistanceProtocol": "..families.ranger_protocol",
    "Frame": ".codec",
    "FrameDecoder": ".codec",
    "OUTPUTS": ".device",
    "QUANTITIES": ".device",
    "Rejected": ".codec",
    "Sample": "..families.ranger_protocol",
})
