"""Output formats: one module each, turning :mod:`agent.wire.model` packs into payloads.

The daemon encodes with the configured format (``[report] format``), the spool keeps
what it produced, and the uplink asks the format found by the row's content type to
mark a pack that waited through an outage as historical, without decoding it.
``citynode decode``, ``citynode simulate`` and local-mode logs decode through here.

Two sorts of format share this registry. *Pack formats* (SenML) encode and decode a
whole pack: the spool keeps every message once, in the pack format of ``[report]
format``. *Platform formats* (oneM2M, Sparkplug B, Home Assistant) speak a platform's
own conversation; an uplink using one renders each spooled message through the
format's :class:`agent.wire.session.Session`. Every format makes a session, so each
uplink (``[mqtt]`` and every ``[[uplink]]``) is one socket, one spool position and one
session.

Adding a format (docs/payload.md, "Adding an output format"): a module (or package)
here whose name is the format's name with ``_`` for ``-``, exporting ``FORMAT`` (a
:class:`Format`) and, if it takes settings, ``Options`` (a msgspec Struct: the
``[uplink.<module name>]`` table); its line in :data:`FORMATS`, and its test. The
configuration's choices, ``citynode asyncapi`` and the CLI's choices derive from this
list.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

if TYPE_CHECKING:  # the registry stays cheap: `citynode --help` lists its names
    from agent.wire.model import NodeInfo, Pack
    from agent.wire.session import Context, Session

#: Pack formats: encode and decode whole packs; the spool keeps messages in one of them.
PACK_FORMATS = (
    "senml_cbor",  # SenML (RFC 8428) in CBOR: the default, about 60 bytes a report
    "senml_json",  # SenML (RFC 8428) in minified JSON
)
#: Platform formats: a platform's own conversation, for an [[uplink]].
PLATFORM_FORMATS: tuple[str, ...] = (
    "homeassistant",  # Home Assistant MQTT discovery: entities, a JSON state, event entities
    "onem2m",  # oneM2M ADN-AE over the MQTT binding (TS-0010, JSON): Mobius
    "sparkplug",  # Eclipse Sparkplug B 3.0 edge node, each sensor a device: Ignition, SCADA
)
FORMATS = PACK_FORMATS + PLATFORM_FORMATS
#: Format names, as ``--format`` and ``[[uplink]] format`` accept them; the first is the default.
NAMES: tuple[str, ...] = tuple(m.replace("_", "-") for m in FORMATS)
#: The names ``[report] format`` (the spool's and the [mqtt] uplink's format) accepts.
PACK_NAMES: tuple[str, ...] = tuple(m.replace("_", "-") for m in PACK_FORMATS)
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


class Channel(NamedTuple):
    """One topic a format publishes or subscribes to, as ``citynode asyncapi`` documents
    it. ``address`` uses AsyncAPI parameters: ``{prefix}``, ``{node}``, and any other
    ``{name}`` listed in ``parameters`` (name -> description)."""

    name: str  # an identifier, unique within the format: "telemetry", "nbirth"
    address: str
    action: Literal["send", "receive"]  # from the node's side
    summary: str
    content_type: str
    schema: dict[str, Any]  # JSON Schema of the payload (or a description of its bytes)
    qos: int = 1
    retain: bool = False
    parameters: dict[str, str] = {}
    examples: tuple[Any, ...] = ()


class Format(Protocol):
    """One output format. Implementations are stateless module-level singletons."""

    name: str  # as in the configuration: "senml-cbor"
    content_type: str  # MQTT 5 content type, also how spooled rows find their format
    #: True for pack formats, which encode and decode whole packs and can be the spool's
    #: (``[report] format``); platform formats raise PayloadError from encode/decode.
    packs: bool

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

    def session(self, ctx: Context) -> Session:
        """The conversation of one uplink that uses this format."""
        ...

    def channels(self) -> list[Channel]:
        """Every topic this format publishes or subscribes to (for AsyncAPI)."""
        ...


class PlatformFormat:
    """What every platform format shares: it encodes and decodes no packs of its own
    (its uplink's session renders the spooled ones) and announces nothing outside it."""

    name = ""
    content_type = ""
    packs = False

    def encode(self, pack: Pack) -> Encoded:
        raise PayloadError(f"{self.name} is a platform format: its uplink's session renders "
                           "spooled packs; it encodes none")

    def historical(self, payload: bytes, mark: int | None) -> bytes:
        return payload

    def decode(self, payload: bytes) -> Pack:
        raise PayloadError(f"{self.name} payloads are the platform's own, not citynode packs")

    def on_connect(self, node: NodeInfo) -> list[Publication]:
        return []


@cache
def get(name: str) -> Format:
    """A format by name; KeyError names the known ones."""
    if name not in NAMES:
        raise KeyError(f"unknown payload format {name!r}; use one of {', '.join(NAMES)}")
    fmt: Format = importlib.import_module(f"{__name__}.{name.replace('-', '_')}").FORMAT
    if fmt.name != name:
        raise RuntimeError(f"{__name__}.{name.replace('-', '_')} names itself {fmt.name!r}")
    return fmt


def options(name: str) -> type | None:
    """The format's ``Options`` struct (its ``[uplink.<module>]`` table), or None. Pack
    formats take none (``[report]`` sets them), and are not imported for it."""
    if name in PACK_NAMES:
        return None
    get(name)
    return getattr(importlib.import_module(f"{__name__}.{name.replace('-', '_')}"),
                   "Options", None)


def all_formats() -> list[Format]:
    """Every format, default first."""
    return [get(n) for n in NAMES]


def pack_formats() -> list[Format]:
    """The pack formats (SenML): what the spool holds and ``citynode decode`` reads."""
    return [get(n) for n in PACK_NAMES]


def for_content_type(content_type: str) -> Format:
    """The format of a spooled row; rows without a known content type (written by tools
    and tests) are taken as the default format, whose ``historical`` leaves what it
    cannot read unchanged."""
    for fmt in pack_formats():
        if fmt.content_type == content_type:
            return fmt
    return get(DEFAULT)


def decode(payload: bytes, content_type: str = "") -> Pack:
    """Decode with the format of ``content_type``, or else with the first format that
    reads the payload; PayloadError says why none did."""
    candidates = pack_formats()
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
