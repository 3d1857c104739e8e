"""What the tools read from a device's README.md: its sample configuration and its example
capture. The README is the installer's page; reading the samples from it keeps the page and
what ``citynode simulate``, ``provision`` and the conformance tests use from drifting apart.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from .spec import DeviceSpec

_TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.M | re.S)
_CAPTURE_BLOCK = re.compile(r"^```capture\n(.*?)^```", re.M | re.S)


class ReadmeError(ValueError):
    """A device README without the section the tools read."""


def _section(spec: DeviceSpec, title: str) -> str:
    text = spec.readme.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\s*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if m is None:
        raise ReadmeError(f"{spec.readme}: no '## {title}' section")
    return m.group(1)


def sample_text(spec: DeviceSpec) -> str:
    """The TOML of the README's sample configuration, as written there."""
    m = _TOML_BLOCK.search(_section(spec, "Sample configuration"))
    if m is None:
        raise ReadmeError(f"{spec.readme}: no ```toml block in '## Sample configuration'")
    return m.group(1)


def sample_table(spec: DeviceSpec) -> dict[str, Any]:
    """The ``[[sensor]]`` table of the README's sample configuration."""
    sensors = tomllib.loads(sample_text(spec)).get("sensor")
    if not isinstance(sensors, list) or not sensors:
        raise ReadmeError(f"{spec.readme}: the sample configuration has no [[sensor]] table")
    return dict(sensors[0])


def example_capture(spec: DeviceSpec) -> str:
    """The README's example capture (hex bytes, or ``ADDR W|R HEX`` lines for I2C)."""
    m = _CAPTURE_BLOCK.search(_section(spec, "Example capture"))
    if m is None:
        raise ReadmeError(f"{spec.readme}: no ```capture block in '## Example capture'")
    return m.group(1)
