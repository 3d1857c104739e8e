"""The one error type of the model runtime (its own module so every backend can raise it)."""


class ModelError(Exception):
    """A model cannot be loaded or run; the message says which and why."""
