"""The broker connection as every part of the node makes it: the client id, paho's client
settings, and MQTT 5 with the fall back to 3.1.1.

The uplink keeps its connection; ``citynode doctor`` and ``citynode provision`` only
check that the broker accepts one (:func:`handshake`). All three must connect the same
way, or a check would pass where the daemon fails (or the other way round), so the rules
are here once:

* the daemon's client id is ``mqtt.client_id``, else the topic prefix (slashes as
  dashes) and the node id; a tool uses that id with its own suffix, never the id
  itself, or the broker would disconnect the running daemon;
* a fresh paho 2.x client per connection (callback API 2, no automatic reconnect);
* ``mqtt.protocol = "auto"`` tries MQTT 5 first and falls back to 3.1.1 when the
  broker answers that it does not speak 5 (CONNACK 1 from a 3.1.1 broker, 132 from
  one that parses the 5 CONNECT).
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

if TYPE_CHECKING:
    from agent.core.config import MqttConfig

MQTTv5, MQTTv311 = MQTTProtocolVersion.MQTTv5, MQTTProtocolVersion.MQTTv311
#: CONNACK codes of a broker that does not speak MQTT 5: "unacceptable protocol version"
#: (3.1.1) and "unsupported protocol version" (5).
NO_MQTT5 = (1, 132)
#: Longest client id a tool makes (the daemon's own is at most 64, ``mqtt.client_id``).
TOOL_ID_MAX = 63


def node_client_id(m: MqttConfig, node_id: str) -> str:
    """The daemon's client id."""
    return m.client_id or f"{m.prefix.replace('/', '-')}-{node_id}"


def tool_client_id(m: MqttConfig, node_id: str, tool: str) -> str:
    """A tool's client id: the daemon's, shortened, with ``-tool`` after it, so that a
    check does not disconnect the running daemon and the broker's log shows whose it is."""
    return f"{node_client_id(m, node_id)[:TOOL_ID_MAX - len(tool) - 1]}-{tool}"


def first_protocol(setting: str) -> MQTTProtocolVersion:
    """The version to try first for ``mqtt.protocol`` ("auto" starts with 5)."""
    return MQTTv311 if setting == "3.1.1" else MQTTv5


def fall_back(setting: str, protocol: MQTTProtocolVersion,
              connack: int | None) -> MQTTProtocolVersion | None:
    """The version to try next after CONNACK ``connack`` to ``protocol``, or None: 3.1.1
    when ``mqtt.protocol`` is "auto" and the broker does not speak 5."""
    if setting == "auto" and protocol == MQTTv5 and connack in NO_MQTT5:
        return MQTTv311
    return None


def version_name(protocol: MQTTProtocolVersion) -> str:
    """"5" or "3.1.1", as logs and reports name the version."""
    return "5" if protocol == MQTTv5 else "3.1.1"


def connack_code(reason_code: Any) -> int:
    """The number of a CONNACK's reason code (paho gives a ReasonCode, or an int)."""
    return int(getattr(reason_code, "value", reason_code))


def new_client(client_id: str, protocol: MQTTProtocolVersion) -> mqtt.Client:
    """A fresh client for one connection: no state of a dead session leaks into the next,
    and reconnecting is the caller's business (paho's own retry is off)."""
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                       reconnect_on_failure=False)


@dataclass(slots=True)
class Handshake:
    """How the broker answered a CONNECT (:func:`handshake`)."""

    protocol: MQTTProtocolVersion
    code: int | None = None  # the CONNACK's reason code; None: no CONNACK came
    text: str = ""  # paho's name for the code
    error: str = ""  # paho's first error log line (a TLS alert after the handshake shows
    #                  only there)
    closed: bool = False  # the broker closed the connection

    @property
    def version(self) -> str:
        return version_name(self.protocol)


class ConnectFailed(OSError):
    """The connection could not be made; ``str()`` says why in plain words and what to
    check (the original error is ``__cause__``)."""


#: TLS failures that mean "the other end does not speak TLS (or hung up on us)".
_NOT_TLS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF", "EOF occurred", "record layer failure",
            "packet length too long", "HTTP_REQUEST")


def describe_failure(exc: BaseException, *, tls: bool, timeout_s: float) -> str:
    """Plain words for a connection that failed (no paho or OpenSSL internals alone)."""
    strerror = " ".join(str(getattr(exc, "strerror", None) or "").split())
    text = strerror or " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: certificate verify failed ({exc.verify_message or text}): the broker's "
                "certificate is not trusted; check mqtt.ca_file, mqtt.server_name and the "
                "clock")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker's name ({text}): check mqtt.host"
    if isinstance(exc, TimeoutError):
        return (f"no answer within {timeout_s:g} s: check the network route, firewalls and "
                "mqtt.host")
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there (check mqtt.port and the broker)"
    lost = isinstance(exc, ConnectionResetError | BrokenPipeError | ssl.SSLEOFError)
    if tls and (lost or (isinstance(exc, ssl.SSLError) and any(k in text for k in _NOT_TLS))):
        return (f"the TLS handshake failed ({text}): the "
                "port may not speak TLS (MQTT over TLS is usually 8883, plain MQTT 1883), "
                "or the broker wants a client certificate (mqtt.cert_file, mqtt.key_file)")
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed: {getattr(exc, 'reason', None) or text}"
    if lost:
        return (f"the broker closed the connection ({text}): is this an MQTT "
                "port? a TLS-only port (usually 8883) needs mqtt.tls = true")
    return text


def _plain_log(text: str) -> str:
    """paho's error log line in plain words: its "Client is not connected ... Last known
    Connection State: MQTT_CS_..." only means the connection is gone."""
    if text.startswith("Client is not connected"):
        return "the connection closed before the broker answered"
    if text.startswith("failed to receive on socket: "):
        return "the connection failed while waiting for the answer: " + \
            text.removeprefix("failed to receive on socket: ")
    return text


def handshake(m: MqttConfig, client_id: str, timeout_s: float) -> Handshake:
    """Connect as the uplink would (its client settings, TLS and credentials), wait up to
    ``timeout_s`` for the CONNACK, and disconnect; with ``mqtt.protocol = "auto"`` again
    in 3.1.1 when the broker does not speak 5. Raises what ``security.apply`` raises
    (SecurityError) and, when the connection cannot be made, :class:`ConnectFailed` (an
    OSError saying why in plain words) or ValueError."""
    protocol = first_protocol(m.protocol)
    while True:
        answer = _handshake_once(m, client_id, protocol, timeout_s)
        after = fall_back(m.protocol, protocol, answer.code)
        if after is None:
            return answer
        protocol = after


def _handshake_once(m: MqttConfig, client_id: str, protocol: MQTTProtocolVersion,
                    timeout_s: float) -> Handshake:
    from agent.wire.security import apply

    answer = Handshake(protocol)
    client = new_client(client_id, protocol)
    client.connect_timeout = timeout_s

    def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        answer.code, answer.text = connack_code(reason_code), str(reason_code)

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        answer.closed = True

    def on_log(client: Any, userdata: Any, level: int, text: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and not answer.error:
            answer.error = _plain_log(text)

    client.on_connect, client.on_disconnect, client.on_log = on_connect, on_disconnect, on_log
    try:
        apply(client, m)
        try:
            client.connect(m.host, m.port, keepalive=m.keepalive_s)
        except OSError as exc:
            raise ConnectFailed(describe_failure(exc, tls=m.tls, timeout_s=timeout_s)) \
                from exc
        deadline = time.monotonic() + timeout_s
        while answer.code is None and not answer.closed and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if answer.code is None and answer.closed and not answer.error:
            answer.error = "the broker closed the connection without answering CONNECT"
    finally:
        close_client(client, connected=answer.code == 0)
    return answer


def close_client(client: mqtt.Client, *, connected: bool) -> None:
    """Say goodbye when connected, and never leave the socket open (a tool's short-lived
    connection: doctor, provision, fleet)."""
    try:
        if connected:
            client.disconnect()
            client.loop(timeout=0.1)
        sock = client.socket()
        if sock is not None:
            sock.close()
    except (OSError, ValueError):
        pass
