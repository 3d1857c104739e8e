"""Check 5: the broker: name, TCP, TLS and certificate, MQTT CONNECT."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .base import CERT_WARN_DAYS, CONNECT_TIMEOUT_S, FAIL, OK, WARN, Check
from .config import _security_text
from .hints import (
    HINT_AUTH,
    HINT_CERT_EXPIRY,
    HINT_DNS,
    HINT_LOCAL,
    HINT_NO_CONNACK,
    HINT_REFUSED,
    HINT_TIMEOUT,
    HINT_TLS_FAIL,
    HINT_TLS_VERIFY,
)

if TYPE_CHECKING:
    from agent.core.config import Config


# -- 5. broker -------------------------------------------------------------------------------
def _cert_days_left(cert: dict[str, Any], now: float) -> float | None:
    not_after = cert.get("notAfter")
    if not not_after:
        return None
    return (ssl.cert_time_to_seconds(not_after) - now) / 86400.0


def check_broker(cfg: Config, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Check]:
    """TCP, then TLS (verified as the daemon verifies), then MQTT CONNECT with its
    credentials, each only if the step before it worked."""
    m = cfg.mqtt
    if cfg.local_mode:
        yield Check("broker", "mqtt.host", WARN, "local mode, nothing leaves the node",
                    HINT_LOCAL)
        return
    target = f"{m.host}:{m.port}"
    t0 = time.monotonic()
    try:
        sock = socket.create_connection((m.host, m.port), timeout=timeout_s)
    except socket.gaierror as exc:
        yield Check("broker", target, FAIL, f"cannot resolve {m.host}: {exc.strerror}", HINT_DNS)
        return
    except TimeoutError:
        yield Check("broker", target, FAIL, f"TCP: no answer within {timeout_s:g} s",
                    HINT_TIMEOUT)
        return
    except ConnectionRefusedError:
        yield Check("broker", target, FAIL, "TCP: connection refused", HINT_REFUSED)
        return
    except OSError as exc:
        yield Check("broker", target, FAIL, f"TCP: {exc.strerror or exc}", HINT_TIMEOUT)
        return
    yield Check("broker", target, OK, f"TCP connected in {1000 * (time.monotonic() - t0):.0f} ms")
    if m.tls:
        ok = yield from _check_tls(cfg, sock, target, timeout_s)
        if not ok:
            return
    else:
        sock.close()
    yield from _check_connect(cfg, target, timeout_s)


def _check_tls(cfg: Config, sock: socket.socket, target: str,
               timeout_s: float) -> Iterator[Check]:
    from agent.wire.security import SecurityError, tls_context

    m = cfg.mqtt
    try:
        ctx = tls_context(m)
    except SecurityError as exc:
        sock.close()
        yield Check("broker", target, FAIL, f"TLS: {_security_text(exc)}",
                    exc.fix or HINT_TLS_VERIFY)
        return False
    assert ctx is not None
    name = m.server_name or m.host
    try:
        sock.settimeout(timeout_s)
        with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
            cert = tls.getpeercert() or {}
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        yield Check("broker", target, FAIL, f"TLS: certificate not accepted for {name}: "
                    f"{exc.verify_message}", HINT_TLS_VERIFY)
        return False
    except (ssl.SSLError, OSError) as exc:
        yield Check("broker", target, FAIL, f"TLS handshake failed: {exc}", HINT_TLS_FAIL)
        return False
    finally:
        sock.close()
    days = _cert_days_left(cert, time.time())
    expiry = ("" if days is None
              else f", certificate expires {cert['notAfter']} (in {int(days)} days)")
    status, hint = OK, ""
    if days is not None and days < CERT_WARN_DAYS:
        status, hint = WARN, HINT_CERT_EXPIRY
    yield Check("broker", target, status, f"TLS {version}, verified as {name}{expiry}", hint)
    return True


def _check_connect(cfg: Config, target: str, timeout_s: float) -> Iterator[Check]:
    from agent.wire.mqtt import handshake, tool_client_id
    from agent.wire.security import SecurityError

    m = cfg.mqtt
    client_id = tool_client_id(m, cfg.node.id, "doctor")
    try:
        answer = handshake(m, client_id, timeout_s)
    except SecurityError as exc:
        yield Check("broker", target, FAIL, f"MQTT: {_security_text(exc)}", exc.fix or HINT_AUTH)
        return
    except (OSError, ValueError) as exc:
        yield Check("broker", target, FAIL, f"MQTT CONNECT failed: {exc}", HINT_NO_CONNACK)
        return
    label = f"MQTT {answer.version}"
    if answer.code == 0:
        yield Check("broker", target, OK, f"CONNACK {answer.text} ({label}, client id "
                    f"{client_id})")
    elif answer.code is None:
        yield Check("broker", target, FAIL, f"no CONNACK within {timeout_s:g} s ({label})",
                    HINT_NO_CONNACK)
    else:
        yield Check("broker", target, FAIL, f"CONNACK refused: {answer.text} ({label})",
                    HINT_AUTH)
