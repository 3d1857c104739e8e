"""Check 5: the broker: name, TCP, TLS and certificate, MQTT CONNECT."""

from __future__ import annotations

import errno
import os
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
    HINT_MAYBE_TLS,
    HINT_NO_CONNACK,
    HINT_NO_ROUTE,
    HINT_NOT_TLS,
    HINT_REFUSED,
    HINT_TIMEOUT,
    HINT_TLS_FAIL,
    HINT_TLS_HANGUP,
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


#: TLS errors that mean the other end does not speak TLS (agent.wire.mqtt has the same).
_NOT_TLS = ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF", "EOF occurred", "record layer failure",
            "packet length too long", "HTTP_REQUEST")
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)


def _failure(exc: BaseException, *, tls: bool, timeout_s: float) -> tuple[str, str]:
    """(detail, fix) for a connection that failed: plain words, not paho's or OpenSSL's."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name: {_why(exc)}", HINT_DNS
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s", HINT_TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", HINT_REFUSED
    text = " ".join(str(exc).split())
    reason = getattr(exc, "reason", None) or text  # OpenSSL's short name, when it has one
    lost = isinstance(exc, ConnectionResetError | BrokenPipeError | ssl.SSLEOFError)
    if tls and (lost or (isinstance(exc, ssl.SSLError) and any(k in text for k in _NOT_TLS))):
        how = "reset" if isinstance(exc, ConnectionResetError) else "closed"
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            return f"the port does not answer in TLS ({reason})", HINT_NOT_TLS
        return f"the broker {how} the connection during the TLS handshake", HINT_NOT_TLS
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {reason}", HINT_TLS_FAIL
    if lost:
        return "the broker reset the connection before answering", HINT_MAYBE_TLS
    if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
        return f"{_why(exc)} (no route to the broker)", HINT_NO_ROUTE
    return _why(exc), HINT_TIMEOUT


def _why(exc: BaseException) -> str:
    """The error's own words: its strerror, the errno's text, its message, its type."""
    strerror = " ".join(str(getattr(exc, "strerror", None) or "").split())
    code = getattr(exc, "errno", None)
    if not strerror and isinstance(code, int) and code > 0:
        strerror = os.strerror(code)
    return strerror or " ".join(str(exc).split()) or type(exc).__name__


def broker_targets(cfg: Config) -> list[tuple[str, Any, bool]]:
    """(row target, connection settings, failover?) for every broker the node may use:
    each uplink's primary, then each of its ``failover`` brokers (same TLS settings and
    credentials, as the daemon uses them)."""
    import msgspec  # not at import: ``citynode --help`` loads this module

    links = cfg.uplinks()
    out: list[tuple[str, Any, bool]] = []
    for m in links:
        brokers = m.brokers()
        for i, (host, port) in enumerate(brokers):
            one = m if i == 0 else msgspec.structs.replace(m, host=host, port=port)
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            notes = [f"{m.name}, {m.format}"] if len(links) > 1 else []
            if i:
                notes.append(f"failover {i} of {len(brokers) - 1}")
            out.append((where + (f" ({'; '.join(notes)})" if notes else ""), one, i > 0))
    return out


def check_broker(cfg: Config, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Check]:
    """Every broker of every uplink ([mqtt], each [[uplink]], their failover lists) in
    turn: TCP, then TLS (verified as the daemon verifies), then MQTT CONNECT with its
    credentials, each only if the step before it worked. ``citynode doctor`` runs one
    task per broker (:func:`check_one_broker`) so they take no longer than one."""
    if cfg.local_mode:
        yield Check("broker", "mqtt.host", WARN, "local mode, nothing leaves the node",
                    HINT_LOCAL)
        return
    for target, m, failover in broker_targets(cfg):
        yield from check_one_broker(cfg, m, target, failover, timeout_s=timeout_s)


def check_one_broker(cfg: Config, m: Any, target: str, failover: bool, *,
                     timeout_s: float = CONNECT_TIMEOUT_S) -> Iterator[Check]:
    """One broker. A failover broker that fails is a WARN: the node works, but cannot
    move there when its broker goes away."""
    for row in _check_one(cfg, m, target, timeout_s):
        if failover and row.status == FAIL:
            row = Check(row.name, row.target, WARN, row.detail,
                        f"{row.hint} (a failover broker: the node works on its primary but "
                        "cannot move here)".strip())
        yield row


def _check_one(cfg: Config, m: Any, target: str, timeout_s: float) -> Iterator[Check]:
    """One uplink's broker."""
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
        detail, hint = _failure(exc, tls=False, timeout_s=timeout_s)
        yield Check("broker", target, FAIL, f"TCP: {detail}", hint)
        return
    yield Check("broker", target, OK, f"TCP connected in {1000 * (time.monotonic() - t0):.0f} ms")
    if m.tls:
        ok = yield from _check_tls(m, sock, target, timeout_s)
        if not ok:
            return
    else:
        sock.close()
    yield from _check_connect(cfg, m, target, timeout_s)


def _check_tls(m: Any, sock: socket.socket, target: str,
               timeout_s: float) -> Iterator[Check]:
    from agent.wire.security import SecurityError, tls_context

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
        detail, hint = _failure(exc, tls=True, timeout_s=timeout_s)
        yield Check("broker", target, FAIL, f"TLS: {detail}", hint)
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


def _check_connect(cfg: Config, m: Any, target: str, timeout_s: float) -> Iterator[Check]:
    from agent.wire.mqtt import ConnectFailed, handshake, tool_client_id
    from agent.wire.security import SecurityError

    client_id = tool_client_id(m, cfg.node.id, "doctor")
    try:
        answer = handshake(m, client_id, timeout_s)
    except SecurityError as exc:
        yield Check("broker", target, FAIL, f"MQTT: {_security_text(exc)}", exc.fix or HINT_AUTH)
        return
    except ConnectFailed as exc:
        detail, hint = _failure(exc.__cause__ or exc, tls=m.tls, timeout_s=timeout_s)
        yield Check("broker", target, FAIL, f"MQTT CONNECT failed: {detail}", hint)
        return
    except (OSError, ValueError) as exc:
        yield Check("broker", target, FAIL, f"MQTT CONNECT failed: {exc}", HINT_NO_CONNACK)
        return
    label = f"MQTT {answer.version}"
    if answer.code == 0:
        yield Check("broker", target, OK, f"CONNACK {answer.text} ({label}, client id "
                    f"{client_id})")
    elif answer.code is None and (answer.closed or answer.error):
        why = answer.error or "the broker closed the connection"
        yield Check("broker", target, FAIL, f"no CONNACK: {why} ({label})",
                    HINT_TLS_HANGUP if m.tls else HINT_NO_CONNACK)
    elif answer.code is None:
        yield Check("broker", target, FAIL, f"no CONNACK within {timeout_s:g} s ({label})",
                    HINT_NO_CONNACK)
    else:
        yield Check("broker", target, FAIL, f"CONNACK refused: {answer.text} ({label})",
                    HINT_AUTH)
