"""agent.wire.security against a real mosquitto: mutual TLS, host names, ACLs, passwords.

One broker per module with four listeners (per_listener_settings):

* ``plain``: anonymous, no ACL; the "platform" observer that sees everything;
* ``mtls``: require_certificate, use_identity_as_username, ACL ``citynode/%u/#``;
* ``wronghost``: like mtls, but its server certificate names another host;
* ``password``: server-only TLS, password_file, the same ACL.

Certificates (EC P-256) are made with the openssl CLI in a temporary folder. Every
node client is a plain paho client configured only through :func:`security.apply`.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.core.config import MqttConfig
from agent.tools.simulate import find_mosquitto, free_port
from agent.wire import security

NODE = "node-1"
PW_USER, PW_PASS = "node-2", "correct horse battery staple"
WRONG_NAME = "broker.elsewhere.example"

OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ok]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server_wrong]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:{wrong}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# `openssl ca` is the one openssl 3.0 tool that takes explicit dates (-startdate/-enddate):
# it makes the expired certificate, with no faketime and no python cryptography.
[ca]
default_ca = expired_ca
[expired_ca]
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
default_md = sha256
policy = any_cn
unique_subject = no
[any_cn]
commonName = supplied
"""


def _openssl(cwd: Path, *args: str) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, f"openssl {' '.join(args)}: {res.stderr}"


def _key_and_csr(d: Path, name: str, cn: str) -> None:
    _openssl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
             "-config", "openssl.cnf")
    os.chmod(d / f"{name}.key", 0o600)


def _ca(d: Path, name: str, cn: str) -> None:
    _openssl(d, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30",
             "-subj", f"/CN={cn}", "-config", "openssl.cnf", "-extensions", "v3_ca")
    os.chmod(d / f"{name}.key", 0o600)


def _issue(d: Path, name: str, cn: str, ext: str, ca: str = "ca", serial: int = 1) -> None:
    _key_and_csr(d, name, cn)
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-set_serial", str(serial), "-days", "30", "-extfile", "openssl.cnf",
             "-extensions", ext, "-out", f"{name}.crt")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, servers (right and wrong name), clients (good, expired), an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    d = tmp_path_factory.mktemp("pki")
    (d / "openssl.cnf").write_text(OPENSSL_CNF.format(dir=d, wrong=WRONG_NAME))
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "issued").mkdir()
    _ca(d, "ca", "citynode test CA")
    _ca(d, "other_ca", "unrelated CA")
    _issue(d, "server", "localhost", "server_ok", serial=2)
    _issue(d, "wronghost", WRONG_NAME, "server_wrong", serial=3)
    _issue(d, "client", NODE, "client", serial=4)
    _issue(d, "stranger", NODE, "client", ca="other_ca", serial=5)
    _key_and_csr(d, "expired", NODE)
    _openssl(d, "ca", "-batch", "-config", "openssl.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
             "-in", "expired.csr", "-out", "expired.crt", "-notext", "-extensions", "client",
             "-extfile", "openssl.cnf",
             "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
    return d


@dataclass
class Broker:
    """A private mosquitto with several listeners, started and stopped by the fixture."""

    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        text = ""
        for name in ("mosquitto.log", "broker.log"):
            if (self.workdir / name).exists():
                text += (self.workdir / name).read_text(errors="replace")
        return text

    def start(self, conf: str, timeout: float = 10.0) -> None:
        binary = find_mosquitto()
        assert binary
        path = self.workdir / "mosquitto.conf"
        path.write_text(conf)
        with open(self.workdir / "mosquitto.log", "wb") as logf:
            self.proc = subprocess.Popen([binary, "-c", str(path)], stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        waiting = dict(self.ports)
        while waiting and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log[-800:]}")
            for name, port in list(waiting.items()):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        del waiting[name]
                except OSError:
                    time.sleep(0.02)
        if waiting:
            self.stop()
            raise TimeoutError(f"mosquitto did not open {waiting}: {self.log[-800:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it when run as root)")
    passwd_tool = shutil.which("mosquitto_passwd")
    if passwd_tool is None:
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    d = tmp_path_factory.mktemp("broker")
    (d / "acl").write_text("pattern readwrite citynode/%u/#\n")
    subprocess.run([passwd_tool, "-c", "-b", str(d / "passwd"), PW_USER, PW_PASS], check=True,
                   capture_output=True, timeout=20)
    b = Broker(d, {name: free_port() for name in ("plain", "mtls", "wronghost", "password")})
    tls = "tls_version tlsv1.2\n"
    # use_username_as_clientid: a node cannot pick another node's client id and so
    # cannot kick it off the broker (session takeover).
    mutual = (f"cafile {pki}/ca.crt\nrequire_certificate true\nuse_identity_as_username true\n"
              f"use_username_as_clientid true\nacl_file {d}/acl\n")
    conf = (
        f"per_listener_settings true\npersistence false\nlog_dest file {d}/broker.log\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        # As root, mosquitto drops to user `mosquitto` before reading password and ACL
        # files, which then cannot read pytest's 0700 folders; `user root` keeps it root.
        # (Run as another user, mosquitto ignores this line.)
        "user root\n"
        f"listener {b.ports['plain']} 127.0.0.1\nallow_anonymous true\n"
        f"listener {b.ports['mtls']} 127.0.0.1\n{tls}"
        f"certfile {pki}/server.crt\nkeyfile {pki}/server.key\n{mutual}"
        f"listener {b.ports['wronghost']} 127.0.0.1\n{tls}"
        f"certfile {pki}/wronghost.crt\nkeyfile {pki}/wronghost.key\n{mutual}"
        f"listener {b.ports['password']} 127.0.0.1\n{tls}"
        f"certfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
        f"password_file {d}/passwd\nacl_file {d}/acl\nallow_anonymous false\n"
        "use_username_as_clientid true\n"
    )
    b.start(conf)
    yield b
    b.stop()


class Observer:
    """The platform: an unrestricted subscriber to citynode/# on the plain listener."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("citynode/#", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "observer could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait_for(self, topic: str, body: bytes, timeout: float = 3.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: (topic, body) in self.messages, timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def observer(broker: Broker) -> Iterator[Observer]:
    obs = Observer(broker.ports["plain"])
    yield obs
    obs.stop()


@dataclass
class Attempt:
    client: mqtt.Client
    connected: bool
    reason: str  # CONNACK reason, disconnect reason or exception text

    def close(self) -> None:
        try:
            self.client.disconnect()
        except (OSError, ValueError):
            pass
        self.client.loop_stop()


def attempt(cfg: MqttConfig, client_id: str = NODE, timeout: float = 3.0) -> Attempt:
    """Connect a fresh paho client configured only through security.apply()."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=False)
    security.apply(c, cfg)
    done = threading.Event()
    state: dict[str, str | bool] = {"connected": False, "reason": "no CONNACK"}

    def on_connect(cl: mqtt.Client, ud: object, flags: object, rc: mqtt.ReasonCode,
                   props: object) -> None:
        state.update(connected=not rc.is_failure, reason=f"CONNACK {rc}")
        done.set()

    def on_disconnect(cl: mqtt.Client, ud: object, flags: object, rc: mqtt.ReasonCode,
                      props: object) -> None:
        if state["reason"] == "no CONNACK":  # a refused CONNACK keeps its own reason
            state["reason"] = f"disconnected before CONNACK: {rc} ({state.get('error', '')})"
        done.set()

    def on_log(cl: mqtt.Client, ud: object, level: int, text: str) -> None:
        # paho reports a TLS alert received after the handshake (TLS 1.3 client
        # certificate checks) only here; on_disconnect just says "Unspecified error".
        if level == mqtt.MQTT_LOG_ERR:
            state.setdefault("error", text)

    c.on_connect, c.on_disconnect, c.on_log = on_connect, on_disconnect, on_log
    try:
        c.connect(cfg.host, cfg.port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return Attempt(c, False, f"{type(exc).__name__}: {exc}")
    c.loop_start()
    done.wait(timeout)
    return Attempt(c, bool(state["connected"]), str(state["reason"]))


def node_cfg(pki: Path, port: int, **kw: object) -> MqttConfig:
    base: dict[str, object] = dict(host="127.0.0.1", port=port, tls=True,
                                   ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"),
                                   key_file=str(pki / "client.key"))
    base.update(kw)
    return MqttConfig(**base)  # type: ignore[arg-type]


def test_mutual_tls_connects_and_publishes_own_topic(pki: Path, broker: Broker,
                                                    observer: Observer) -> None:
    a = attempt(node_cfg(pki, broker.ports["mtls"]))
    try:
        assert a.connected, a.reason
        sock = a.client.socket()
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
        assert tls12_alert(node_cfg(pki, broker.ports["mtls"])) == "handshake completed"
        info = a.client.publish(f"citynode/{NODE}/telemetry", b"hello", qos=1)
        info.wait_for_publish(3)
        assert observer.wait_for(f"citynode/{NODE}/telemetry", b"hello")
    finally:
        a.close()


def test_unknown_ca_is_refused_by_the_client(pki: Path, broker: Broker) -> None:
    a = attempt(node_cfg(pki, broker.ports["mtls"], ca_file=str(pki / "other_ca.crt")))
    a.close()
    assert not a.connected
    assert "SSLCertVerificationError" in a.reason and "verify failed" in a.reason, a.reason


def tls12_alert(cfg: MqttConfig) -> str:
    """The broker's verdict on our client certificate, read deterministically.

    In TLS 1.2 the broker checks the client certificate inside the handshake, so its
    alert arrives in do_handshake(). (Under TLS 1.3, which paho negotiates, the client
    has finished its side before the broker decides, and the alert can be lost to the
    reset of the closing connection.) The context is still the one security builds.
    """
    ctx = security.tls_context(cfg)
    assert ctx is not None
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((cfg.host, cfg.port), timeout=3) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=cfg.host):
                return "handshake completed"
        except ssl.SSLError as exc:
            return str(exc)


def refused_by_broker(broker: Broker, cfg: MqttConfig, alert: str, logged: str,
                      alert12: str = "") -> None:
    """paho (TLS 1.3) gets no CONNACK, the broker logs why, TLS 1.2 shows the alert."""
    before = broker.log.count(logged)
    a = attempt(cfg)
    a.close()
    assert not a.connected, a.reason
    # Usually the alert itself; under load sometimes only the reset that followed it.
    lost = ("EOF occurred in violation of protocol", "Connection reset by peer")
    assert alert in a.reason or any(x in a.reason for x in lost), a.reason
    deadline = time.monotonic() + 3
    while broker.log.count(logged) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert broker.log.count(logged) > before, broker.log[-500:]
    assert (alert12 or alert) in tls12_alert(cfg)


def test_client_cert_from_another_ca_is_refused_by_the_broker(pki: Path, broker: Broker) -> None:
    refused_by_broker(broker, node_cfg(pki, broker.ports["mtls"],
                                       cert_file=str(pki / "stranger.crt"),
                                       key_file=str(pki / "stranger.key")),
                      "alert unknown ca", "certificate verify failed")


def test_expired_client_cert_is_refused_by_the_broker(pki: Path, broker: Broker) -> None:
    # Same CA, CN and extensions as client.crt, which connects; only the dates differ.
    refused_by_broker(broker, node_cfg(pki, broker.ports["mtls"],
                                       cert_file=str(pki / "expired.crt"),
                                       key_file=str(pki / "expired.key")),
                      "alert certificate expired", "certificate verify failed")


def test_missing_client_cert_is_refused_by_the_broker(pki: Path, broker: Broker) -> None:
    refused_by_broker(broker, node_cfg(pki, broker.ports["mtls"], cert_file="", key_file=""),
                      "alert certificate required", "peer did not return a certificate",
                      alert12="alert handshake failure")


def test_wrong_host_name_is_refused_unless_server_name_matches(pki: Path,
                                                              broker: Broker) -> None:
    port = broker.ports["wronghost"]
    a = attempt(node_cfg(pki, port))
    a.close()
    assert not a.connected
    assert "SSLCertVerificationError" in a.reason and "mismatch" in a.reason, a.reason
    b = attempt(node_cfg(pki, port, server_name=WRONG_NAME))
    b.close()
    assert b.connected, b.reason


def test_server_name_is_verified_not_a_bypass(pki: Path, broker: Broker) -> None:
    """server_name replaces the name that is checked; a wrong one still fails."""
    a = attempt(node_cfg(pki, broker.ports["mtls"], server_name="not-the-broker.example"))
    a.close()
    assert not a.connected
    assert "SSLCertVerificationError" in a.reason and "mismatch" in a.reason, a.reason
    b = attempt(node_cfg(pki, broker.ports["mtls"], host="localhost"))
    b.close()
    assert b.connected, b.reason


def test_acl_keeps_a_node_out_of_other_nodes_topics(pki: Path, broker: Broker,
                                                    observer: Observer) -> None:
    a = attempt(node_cfg(pki, broker.ports["mtls"]))
    try:
        assert a.connected, a.reason
        acks: dict[int, str] = {}
        a.client.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, str(rc))
        forged = a.client.publish("citynode/other/telemetry", b"forged", qos=1)
        forged.wait_for_publish(3)
        a.client.publish(f"citynode/{NODE}/telemetry", b"after", qos=1).wait_for_publish(3)
        # The broker delivers one client's messages in order: once "after" is here,
        # "forged" would have been too.
        assert observer.wait_for(f"citynode/{NODE}/telemetry", b"after")
        assert ("citynode/other/telemetry", b"forged") not in observer.messages
        # MQTT 5: mosquitto says so in the PUBACK (3.1.1 would acknowledge and drop).
        assert acks[forged.mid] == "Not authorized"
    finally:
        a.close()


def test_a_node_cannot_take_over_another_client_id(pki: Path, broker: Broker) -> None:
    victim = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="citynode-node-9",
                         protocol=MQTTProtocolVersion.MQTTv5)
    kicked = threading.Event()
    victim.on_disconnect = lambda *a: kicked.set()
    victim.connect("127.0.0.1", broker.ports["plain"])
    victim.loop_start()
    a = attempt(node_cfg(pki, broker.ports["mtls"]), client_id="citynode-node-9")
    try:
        assert a.connected, a.reason
        # The broker renamed the session to the certificate's CN instead.
        assert not kicked.wait(0.5), "the node took over another client's session"
    finally:
        a.close()
        victim.disconnect()
        victim.loop_stop()


def _creds(d: Path, username: str, password: str, mode: int = 0o600) -> str:
    path = d / f"credentials-{mode:o}.toml"
    path.write_text(f'username = "{username}"\npassword = "{password}"\n')
    os.chmod(path, mode)
    return str(path)


def pw_cfg(pki: Path, broker: Broker, creds: str) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=broker.ports["password"], tls=True,
                      ca_file=str(pki / "ca.crt"), credentials_file=creds)


def test_password_login_works(pki: Path, broker: Broker, observer: Observer,
                              tmp_path: Path) -> None:
    a = attempt(pw_cfg(pki, broker, _creds(tmp_path, PW_USER, PW_PASS)), client_id=PW_USER)
    try:
        assert a.connected, a.reason
        a.client.publish(f"citynode/{PW_USER}/telemetry", b"pw", qos=1).wait_for_publish(3)
        assert observer.wait_for(f"citynode/{PW_USER}/telemetry", b"pw")
    finally:
        a.close()


def test_wrong_password_is_refused(pki: Path, broker: Broker, tmp_path: Path) -> None:
    a = attempt(pw_cfg(pki, broker, _creds(tmp_path, PW_USER, "wrong")), client_id=PW_USER)
    a.close()
    assert not a.connected
    # mosquitto 2.0.11 answers "Not authorized" (0x87), not "Bad user name or password".
    assert a.reason in ("CONNACK Not authorized", "CONNACK Bad user name or password"), a.reason


def test_world_readable_credentials_refused_before_connecting(pki: Path, broker: Broker,
                                                              tmp_path: Path) -> None:
    cfg = pw_cfg(pki, broker, _creds(tmp_path, PW_USER, PW_PASS, mode=0o644))
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=PW_USER,
                    protocol=MQTTProtocolVersion.MQTTv5)
    with pytest.raises(security.SecurityError, match="chmod 600"):
        security.apply(c, cfg)
    assert c.socket() is None


# -- the daemon itself over mutual TLS -------------------------------------------------
def _agent_config(tmp: Path, pki: Path, port: int, key: Path) -> Path:
    cfg = tmp / "citynode.toml"
    cfg.write_text(
        f'[node]\nid = "{NODE}"\nstate_dir = "{tmp / "state"}"\n'
        f"[report]\ninterval_s = 1\n"
        f'[log]\ntarget = "stderr"\n'
        f'[mqtt]\nhost = "localhost"\nport = {port}\ntls = true\n'
        f'ca_file = "{pki / "ca.crt"}"\ncert_file = "{pki / "client.crt"}"\n'
        f'key_file = "{key}"\nbackoff_initial_s = 0.2\nbackoff_max_s = 2\n')
    return cfg


def test_daemon_publishes_over_mutual_tls(pki: Path, broker: Broker, observer: Observer,
                                          tmp_path: Path) -> None:
    import sys

    key = tmp_path / "client.key"
    shutil.copy(pki / "client.key", key)
    key.chmod(0o600)
    cfg = _agent_config(tmp_path, pki, broker.ports["mtls"], key)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        topic = f"citynode/{NODE}/state"
        while time.monotonic() < deadline:
            with observer.cond:
                if any(t == topic for t, _ in observer.messages):
                    break
            time.sleep(0.1)
        with observer.cond:
            births = [p for t, p in observer.messages if t == topic]
        assert births, "no birth over mutual TLS"
        from agent.wire import formats

        assert formats.decode(births[-1]).records[0].text == "online"
    finally:
        proc.terminate()
        proc.wait(20)


def test_daemon_refuses_a_key_readable_by_others(pki: Path, tmp_path: Path) -> None:
    import sys

    key = tmp_path / "client.key"
    shutil.copy(pki / "client.key", key)
    key.chmod(0o644)
    cfg = _agent_config(tmp_path, pki, 8883, key)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                          cwd=root, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "client.key" in proc.stderr and "chmod" in proc.stderr
