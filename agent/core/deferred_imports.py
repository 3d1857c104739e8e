"""Modules that dependencies import but the daemon never uses, loaded only when used.

paho-mqtt imports ``urllib.request`` at module level for one purpose: finding an MQTT
proxy through PySocks, which citynode does not install (paho's ``_get_proxy`` returns
before touching it). That import pulls in http.client, email, tempfile, bz2 and lzma:
1.1 MiB of the daemon's 45 MiB budget once ssl is loaded anyway (``make bench``).
:func:`defer` puts a stand-in in ``sys.modules`` so that ``import urllib.request``
succeeds at once; the real module is imported the first time an attribute of it is
used, and from then on everything refers to the real module.

(importlib.util.LazyLoader does not help here: on Python 3.11 the ``import`` statement
itself reads the module's ``__spec__``, which makes a lazy module load at once.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

__all__ = ["DEFERRED", "defer", "is_deferred"]

#: what the daemon defers before importing paho-mqtt
DEFERRED = ("urllib.request",)
_lock = threading.RLock()


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is used."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # copy/pickle/inspect probing: not a reason to load
        return getattr(_load(self), attr)


def _load(stub: _Deferred) -> types.ModuleType:
    name = stub.__name__
    with _lock:
        if sys.modules.get(name) is stub:
            del sys.modules[name]
        real = importlib.import_module(name)  # also sets the parent package's attribute
        stub.__dict__.update(real.__dict__)   # references taken to the stand-in keep working
        return real


def defer(name: str) -> None:
    """Make ``import name`` cheap until the module is used (no-op if already imported)."""
    with _lock:
        if name in sys.modules:
            return
        spec = importlib.util.find_spec(name)  # finds the file, executes nothing
        if spec is None:
            return
        stub = _Deferred(name)
        stub.__spec__ = spec
        stub.__file__ = spec.origin
        sys.modules[name] = stub
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(importlib.import_module(parent), child, stub)


def is_deferred(name: str) -> bool:
    """True while ``name`` is still the stand-in."""
    return isinstance(sys.modules.get(name), _Deferred)
