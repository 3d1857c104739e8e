"""The fleet tool's broker connection: the node's [mqtt] settings, one paho client, a loop
the caller drives (no thread), and failures as one line and an exit code.

It connects as the node's uplink does (:mod:`agent.wire.mqtt`: a fresh paho 2.x client,
TLS and credentials by :func:`agent.wire.security.apply`, MQTT 5 with the fall back to
3.1.1 on ``protocol = "auto"``), under a client id of its own, so a watcher never
disconnects a node or another operator's watcher.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

if TYPE_CHECKING:
    from agent.core.config import MqttConfig

EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_UNAVAILABLE, EX_NOPERM, EX_CONFIG = 64, 65, 66, 69, 77, 78
#: CONNACK codes that mean "not these credentials" (3.1.1: 4, 5; 5: 134, 135).
REFUSED = (4, 5, 134, 135)
#: PUBACK reason codes below this are success (MQTT 5: 0x80 and up are failures).
PUBACK_FAILURE = 0x80


class FleetError(Exception):
    """What stops the command: ``str()`` is the one line, ``code`` the exit code."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code = code


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` (port 1883) or ``[IPV6]:PORT``; FleetError 64 otherwise."""
    import re

    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([A-Za-z0-9._-]+)(?::(\d{1,5}))?",
                     text)
    port = None if m is None else (m.group(2) or m.group(4))
    if m is None or (port is not None and not 1 <= int(port) <= 65535):
        raise FleetError(EX_USAGE, f"--broker {text!r}: expected HOST:PORT (or [IPV6]:PORT) "
                         "with a port 1..65535")
    return (m.group(1) or m.group(3)), int(port) if port else 1883


def settings(args: Any) -> MqttConfig:
    """The connection settings: ``[mqtt]`` of ``-c FILE`` (a node's configuration) when
    given, then ``--broker``, ``--prefix`` and the TLS and credential options over it."""
    import msgspec

    from agent.core.config import ConfigError, MqttConfig, load

    base: dict[str, Any] = {}
    if args.config is not None:
        try:
            cfg = load(args.config, check_devices=False)
        except ConfigError as exc:
            raise FleetError(exc.code, f"configuration: {exc}") from None
        base = msgspec.to_builtins(cfg.mqtt)
    if args.broker is not None:
        base["host"], base["port"] = parse_broker(args.broker)
    for option, key in (("prefix", "prefix"), ("ca", "ca_file"), ("cert", "cert_file"),
                        ("key_file", "key_file"), ("credentials", "credentials_file"),
                        ("server_name", "server_name")):
        value = getattr(args, option, None)
        if value is not None:
            base[key] = value
    if getattr(args, "tls", False) or getattr(args, "ca", None) \
            or getattr(args, "server_name", None):
        base["tls"] = True
    if not base.get("host"):
        raise FleetError(EX_USAGE, "no broker: give --broker HOST:PORT, or -c FILE with "
                         "[mqtt] host")
    try:
        return msgspec.convert(base, MqttConfig)
    except msgspec.ValidationError as exc:
        where = str(exc).partition(" - at `$.")[2].rstrip("`")
        if where == "prefix":
            raise FleetError(EX_USAGE, f"--prefix {base['prefix']!r}: expected topic levels "
                             "of letters, digits, _ and - separated by / (city/air)") from None
        option = {"port": "--broker"}.get(where, where or "settings")
        raise FleetError(EX_USAGE, f"{option}: {str(exc).partition(' - at ')[0]}") from None


class Connection:
    """One connection to the broker; ``loop()`` delivers messages to ``on_message``."""

    def __init__(self, m: MqttConfig, on_message: Callable[[str, bytes, bool], None], *,
                 on_publish: Callable[[int, bool, str], None] | None = None,
                 tool: str = "fleet") -> None:
        self.m = m
        self.on_message = on_message
        self.on_publish = on_publish
        self.client_id = f"citynode-{tool}-{os.getpid()}-{os.urandom(3).hex()}"
        self.client: mqtt.Client | None = None
        self.connected = False
        self.protocol = ""
        self._code: int | None = None
        self._error = ""
        self._closed = False
        self._subacks: set[int] = set()

    # -- connecting -----------------------------------------------------------------------
    def connect(self, timeout_s: float) -> None:
        """Connect (and fall back to 3.1.1 when "auto" and the broker does not speak 5);
        FleetError 69 (cannot reach, no answer), 77 (credentials refused) or 78 (TLS or
        credential files unusable)."""
        from agent.wire.mqtt import fall_back, first_protocol, version_name

        protocol = first_protocol(self.m.protocol)
        while True:
            code = self._connect_once(protocol, timeout_s)
            if code == 0:
                self.connected, self.protocol = True, version_name(protocol)
                return
            after = fall_back(self.m.protocol, protocol, code)
            if after is None:
                break
            protocol = after
        where = f"{self.m.host}:{self.m.port}"
        if code is None:
            raise FleetError(EX_UNAVAILABLE, f"{where}: no answer to CONNECT within "
                             f"{timeout_s:g} s" + (f" ({self._error})" if self._error else ""))
        raise FleetError(EX_NOPERM if code in REFUSED else EX_UNAVAILABLE,
                         f"{where} refused the connection: CONNACK {code}")

    def _connect_once(self, protocol: Any, timeout_s: float) -> int | None:
        from agent.wire.mqtt import ConnectFailed, connack_code, describe_failure, new_client
        from agent.wire.security import SecurityError, apply

        self.close()
        self._closed, self._code, self._error = False, None, ""
        client = self.client = new_client(self.client_id, protocol)
        client.connect_timeout = timeout_s

        def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            self._code = connack_code(reason)

        def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            self._closed, self.connected = True, False

        def on_message(c: Any, u: Any, msg: Any) -> None:
            self.on_message(msg.topic, bytes(msg.payload), bool(msg.retain))

        def on_subscribe(c: Any, u: Any, mid: int, reasons: Any, props: Any) -> None:
            self._subacks.add(mid)

        def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
            if self.on_publish is not None:
                code = connack_code(reason) if reason is not None else 0
                self.on_publish(mid, code < PUBACK_FAILURE, str(reason))

        def on_log(c: Any, u: Any, level: int, text: str) -> None:
            if level == mqtt.MQTT_LOG_ERR and not self._error:
                self._error = text[:200]

        client.on_connect, client.on_disconnect = on_connect, on_disconnect
        client.on_message, client.on_subscribe = on_message, on_subscribe
        client.on_publish, client.on_log = on_publish, on_log
        try:
            apply(client, self.m)
        except SecurityError as exc:
            raise FleetError(EX_CONFIG, str(exc)) from None
        except OSError as exc:
            raise FleetError(EX_NOINPUT, f"cannot read a TLS or credentials file: "
                             f"{exc.strerror or exc}") from None
        try:
            client.connect(self.m.host, self.m.port, keepalive=self.m.keepalive_s)
        except (OSError, ValueError, UnicodeError) as exc:
            line = describe_failure(exc, tls=self.m.tls, timeout_s=timeout_s) \
                if isinstance(exc, OSError) else str(exc)
            raise FleetError(EX_UNAVAILABLE, f"cannot connect to {self.m.host}:{self.m.port}: "
                             f"{line}") from ConnectFailed(line)
        deadline = time.monotonic() + timeout_s
        while self._code is None and not self._closed and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        return self._code

    # -- using it -------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str], timeout_s: float) -> None:
        """Subscribe (QoS 1) and wait for the broker's SUBACK; FleetError 69 without one."""
        assert self.client is not None
        pending = set()
        for topic in topics:
            rc, mid = self.client.subscribe(topic, qos=1)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise FleetError(EX_UNAVAILABLE, f"cannot subscribe to {topic}: the "
                                 "connection was lost")
            pending.add(mid)
        deadline = time.monotonic() + timeout_s
        while pending - self._subacks and time.monotonic() < deadline:
            if not self.loop(0.1):
                break
        if pending - self._subacks:
            raise FleetError(EX_UNAVAILABLE, "the broker did not confirm the subscription "
                             f"within {timeout_s:g} s")

    def publish(self, topic: str, payload: bytes) -> int | None:
        """Publish with QoS 1, never retained; the message id, None when not connected."""
        if self.client is None or not self.connected:
            return None
        info = self.client.publish(topic, payload, qos=1, retain=False)
        return info.mid if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    def loop(self, timeout_s: float) -> bool:
        """Run the client for up to ``timeout_s``; False once the connection is gone."""
        if self.client is None:
            return False
        rc = self.client.loop(timeout=max(0.0, timeout_s))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.connected = False
        return self.connected

    def close(self) -> None:
        """Disconnect cleanly when connected; never leave the socket open."""
        from agent.wire.mqtt import close_client

        client, self.client = self.client, None
        if client is None:
            return
        close_client(client, connected=self.connected)
        self.connected = False
