"""Output formats: one module each, turning :mod:`agent.wire.model` packs into payloads.

The daemon encodes with the configured format (``[report] format``), the spool keeps
what it produced, and the uplink asks the format found by the row's content type to
mark a pack that waited through an outage as historical, without decoding it.
``citynode decode``, ``citynode simulate`` and local-mode logs decode through here.

Adding a format (docs/payload.md, "Adding an output format"): a module here whose
name is the format's name with ``_`` for ``-``, exporting ``FORMAT`` (a
:class:`Format`), its line in :data:`FORMATS`, and its test. The configuration's
``report.format`` and the CLI's choices derive from this list.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:  # the registry stays cheap: `citynode --help` lists its names
    from agent.wire.model import NodeInfo, Pack

FORMATS = (
    "senml_cbor",  # SenML (RFC 8428) in CBOR: the default, about 60 bytes a report
    "senml_json",  # SenML (RFC 8428) in minified JSON
)
#: Format names, as ``report.format`` and ``--format`` accept them; the first is the default.
NAMES: tuple[str, ...] = tuple(m.replace("_", "-") for m in FORMATS)
DEFAULT = NAMES[0]


class PayloadError(ValueError):
    """A payload that is not a pack this format (or any format) understands."""


class Encoded(NamedTuple):
    """A format's payload, plus where a historical marker goes (None: it must decode)."""

    payload: bytes
    mark: int | None = None


class Publication(NamedTuple):
    """A message a format sends on each connect (discovery configuration, a birth)."""

    topic: str
    payload: bytes
    retain: bool = True
    content_type: str = ""


class Format(Protocol):
    """One output format. Implementations are stateless module-level singletons."""

    name: str  # as in the configuration: "senml-cbor"
    content_type: str  # MQTT 5 content type, also how spooled rows find their format

    def encode(self, pack: Pack) -> Encoded:
        """The payload of a pack (ValueError if it cannot be encoded)."""
        ...

    def historical(self, payload: bytes, mark: int | None) -> bytes:
        """``payload`` marked historical: in place at ``mark``, or by decoding when the
        mark is None (rows spooled by older versions). Returns ``payload`` itself when it
        cannot mark it, so nothing accepted is lost."""
        ...

    def decode(self, payload: bytes) -> Pack:
        """The pack of a payload (PayloadError if it is not one this format reads)."""
        ...

    def on_connect(self, node: NodeInfo) -> list[Publication]:
        """Messages to send on every connect, before anything spooled."""
        ...


@cache
def get(name: str) -> Format:
    """A format by name; KeyError names the known ones."""
    if name not in NAMES:
        raise KeyError(f"unknown payload format {name!r}; use one of {', '.join(NAMES)}")
    fmt: Format = importlib.import_module(f"{__name__}.{name.replace('-', '_')}").FORMAT
    if fmt.name != name:
        raise RuntimeError(f"{__name__}.{name.replace('-', '_')} names itself {fmt.name!r}")
    return fmt


def all_formats() -> list[Format]:
    """Every format, default first."""
    return [get(n) for n in NAMES]


def for_content_type(content_type: str) -> Format:
    """The format of a spooled row; rows without a known content type (written by tools
    and tests) are taken as the default format, whose ``historical`` leaves what it
    cannot read unchanged."""
    for fmt in all_formats():
        if fmt.content_type == content_type:
            return fmt
    return get(DEFAULT)


def decode(payload: bytes, content_type: str = "") -> Pack:
    """Decode with the format of ``content_type``, or else with the first format that
    reads the payload; PayloadError says why none did."""
    candidates = all_formats()
    for fmt in candidates:
        if content_type and fmt.content_type == content_type:
            candidates = [fmt]
            break
    errors: list[str] = []
    for fmt in candidates:
        try:
            return fmt.decode(payload)
        except PayloadError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))
    raise PayloadError("; ".join(errors))
