"""ST VL53L1X time-of-flight ranger (I2C 0x29): distance, or UM2600's two-zone counting."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESS": ".codec",
    "MODEL_ID": ".codec",
    "QUANTITIES": ".device",
    "VL53L1X": ".device",
    "WrongChip": "..i2cdev",
    "ZoneSample": ".codec",
    "decode_capture": ".codec",
    "decode_result": ".codec",
})
