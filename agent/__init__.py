"""citynode agent: readings in, compact MQTT messages out; never bytes."""

__version__ = "0.1.0"
