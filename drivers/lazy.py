"""Lazy package exports, so that reading a device's spec does not load its driver.

A device package's ``__init__`` names what it exports and from which submodule; the
submodule is imported on first use. The catalogue imports every ``spec.py``, and a node
runs a few of its fifteen devices: the others' drivers and codecs stay out of its memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, str]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: ``names`` maps each exported
    name to its submodule (``".device"``)."""
    def getattr_(name: str) -> Any:
        try:
            module = names[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(module, package), name)

    def dir_() -> list[str]:
        return sorted(names)

    return getattr_, dir_, sorted(names)
