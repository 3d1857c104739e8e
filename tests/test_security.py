"""agent.wire.security without a broker: file modes and owners, credentials, TLS contexts."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.config import MqttConfig
from agent.wire import security
from agent.wire.security import SecurityError, check_private, read_credentials, tls_context

ROOT = os.geteuid() == 0
WHAT = "client private key (mqtt.key_file)"


def _file(path: Path, text: str = "secret\n", mode: int = 0o600) -> str:
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a client certificate and key, an unrelated key and an encrypted key."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pem")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=20)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=unit CA")
    run("req", "-new", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node-1")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
        "7", "-days", "2", "-out", "node.crt")
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "other.key")
    run("pkey", "-in", "node.key", "-aes256", "-passout", "pass:hunter2", "-out", "enc.key")
    for key in d.glob("*.key"):
        os.chmod(key, 0o600)
    return d


# -- check_private ---------------------------------------------------------------------------
def test_0600_is_accepted(tmp_path: Path) -> None:
    check_private(_file(tmp_path / "k", mode=0o600), WHAT)
    check_private(_file(tmp_path / "r", mode=0o400), WHAT)


@pytest.mark.parametrize(("mode", "who"), [(0o644, "group and others"), (0o640, "group"),
                                           (0o604, "others"), (0o620, "group")])
def test_group_or_other_bits_are_refused(tmp_path: Path, mode: int, who: str) -> None:
    path = _file(tmp_path / "node.key", mode=mode)
    with pytest.raises(SecurityError) as err:
        check_private(path, WHAT)
    msg = str(err.value)
    assert msg.startswith(f"{WHAT} {path}: is accessible by {who} (mode {mode:04o})")
    assert f"chmod 600 {path}" in msg and f"chown {security._service_user()}: {path}" in msg
    assert err.value.path == path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match=r"nope\.key: does not exist"):
        check_private(str(tmp_path / "nope.key"), WHAT)


def test_not_set() -> None:
    with pytest.raises(SecurityError, match="is not set"):
        check_private("", WHAT)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match="is not a regular file"):
        check_private(str(tmp_path), WHAT)


def test_symlink_to_world_readable_file_is_refused(tmp_path: Path) -> None:
    target = _file(tmp_path / "real.key", mode=0o644)
    link = tmp_path / "node.key"
    link.symlink_to(target)
    with pytest.raises(SecurityError) as err:
        check_private(str(link), WHAT)
    assert f"{link} (symlink to {target}): is accessible by group and others" in str(err.value)


def test_symlink_to_private_file_is_accepted(tmp_path: Path) -> None:
    link = tmp_path / "node.key"
    link.symlink_to(_file(tmp_path / "real.key", mode=0o600))
    check_private(str(link), WHAT)


def test_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "node.key"
    link.symlink_to(tmp_path / "gone.key")
    with pytest.raises(SecurityError, match="symlink to a file that does not exist"):
        check_private(str(link), WHAT)


@pytest.mark.skipif(not ROOT, reason="chown to another user needs root")
def test_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path / "node.key", mode=0o600)
    os.chown(path, 54321, 54321)
    with pytest.raises(SecurityError) as err:
        check_private(path, WHAT)
    msg = str(err.value)
    assert "is owned by 54321, not by root" in msg and "could change or reveal it" in msg
    assert f"chown citynode: {path}" in msg


@pytest.mark.skipif(not ROOT, reason="chown to another user needs root")
def test_root_using_the_service_users_key_is_told_what_would_help(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root running a tool (citynode fleet --key) on the daemon's key: "chown citynode:"
    would change nothing; the fix names what does."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(security, "SERVICE_USER", "nobody")
    path = _file(tmp_path / "command.key", mode=0o600)
    os.chown(path, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(SecurityError) as err:
        check_private(path, WHAT)
    msg = str(err.value)
    assert "is owned by nobody, not by root" in msg and "chown" not in msg
    assert "sudo -u nobody" in msg and f"install -m 600 -o root {path} /root/command.key" in msg


@pytest.mark.skipif(not ROOT, reason="chown to another user needs root")
def test_owner_may_be_the_service_user_or_root(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """As the service user (uid 4242 here): its own files and root's pass, others' do not."""
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    path = _file(tmp_path / "node.key", mode=0o600)
    check_private(path, WHAT)  # owned by root
    os.chown(path, 4242, 4242)
    check_private(path, WHAT)
    os.chown(path, 4343, 4343)
    with pytest.raises(SecurityError, match=r"is owned by 4343, not by 4242 .*chown 4242: "):
        check_private(path, WHAT)


def test_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """E.g. root-owned 0600 while the daemon runs as citynode: say so, with the chown."""
    path = _file(tmp_path / "node.key", mode=0o600)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(security, "open", denied, raising=False)
    with pytest.raises(SecurityError, match=r"cannot be read by user .* \(owner .*, mode 0600\)"
                                            r".*Fix: chown .*: .*node\.key; chmod 600"):
        check_private(path, WHAT)


# -- read_credentials ----------------------------------------------------------------------------
def test_credentials_are_read(tmp_path: Path) -> None:
    path = _file(tmp_path / "c.toml", 'username = "node-1"\npassword = "p\\"w"\n')
    assert read_credentials(path) == ("node-1", 'p"w')


def test_credentials_0644_are_refused(tmp_path: Path) -> None:
    path = _file(tmp_path / "c.toml", 'username = "u"\npassword = "p"\n', mode=0o644)
    with pytest.raises(SecurityError, match=r"MQTT credentials file .*chmod 600"):
        read_credentials(path)


@pytest.mark.parametrize(("text", "problem"), [
    ('username = "u"\n', "has no password"),
    ('password = "p"\n', "has no username"),
    ('username = ""\npassword = "p"\n', "username is empty"),
    ('username = "u"\npassword = ""\n', "password is empty"),
    ('username = "u"\npassword = 1234\n', "password must be a string"),
    ('username = "u"\npassword = "p"\nhost = "x"\n', "unknown key(s) 'host'"),
    ('[mqtt]\nusername = "u"\npassword = "p"\n', "unknown key(s) 'mqtt'"),
    ('username = "u"\npassword = "' + "x" * 257 + '"\n', "longer than 256 characters"),
    ('username = "u\\n"\npassword = "p"\n', "username contains control characters"),
    ('username = "u"\npassword = "a\\u0000b"\n', "password contains control characters"),
    ('username = "u"\npassword = "no closing quote\n', "is not valid TOML"),
    ("username = u\npassword = p\n", "is not valid TOML"),
])
def test_bad_credentials(tmp_path: Path, text: str, problem: str) -> None:
    path = _file(tmp_path / "c.toml", text)
    with pytest.raises(SecurityError) as err:
        read_credentials(path)
    assert str(err.value).startswith(f"MQTT credentials file (mqtt.credentials_file) {path}: ")
    assert problem in str(err.value)


def test_credentials_errors_never_show_the_password(tmp_path: Path) -> None:
    path = _file(tmp_path / "c.toml", 'username = "u"\npassword = "TopSecret99\nx = 1\n')
    with pytest.raises(SecurityError) as err:
        read_credentials(path)
    assert "TopSecret99" not in str(err.value)


def test_oversized_and_binary_credentials(tmp_path: Path) -> None:
    big = _file(tmp_path / "big.toml", 'username = "u"\npassword = "p"\n' + "#" * 5000)
    with pytest.raises(SecurityError, match="larger than 4096 bytes"):
        read_credentials(big)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'username = "\xff"\n')
    os.chmod(binary, 0o600)
    with pytest.raises(SecurityError, match="not UTF-8"):
        read_credentials(str(binary))


# -- tls_context -------------------------------------------------------------------------------
def cfg(**kw: object) -> MqttConfig:
    return MqttConfig(host="broker.example", port=8883, **kw)  # type: ignore[arg-type]


def test_tls_off_gives_no_context() -> None:
    assert tls_context(cfg()) is None


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file", "server_name"])
def test_tls_files_without_tls_true_are_refused(key: str) -> None:
    with pytest.raises(SecurityError, match=rf"mqtt\.{key}: is set but mqtt\.tls is false.*"
                                            "set tls = true"):
        tls_context(cfg(**{key: "/etc/citynode/x"}))


def test_cert_without_key_and_key_without_cert(pem: Path) -> None:
    with pytest.raises(SecurityError, match=r"mqtt\.cert_file: is set without mqtt\.key_file"):
        tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), cert_file=str(pem / "node.crt")))
    with pytest.raises(SecurityError, match=r"mqtt\.key_file: is set without mqtt\.cert_file"):
        tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), key_file=str(pem / "node.key")))


def test_context_is_strict(pem: Path) -> None:
    ctx = tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), cert_file=str(pem / "node.crt"),
                          key_file=str(pem / "node.key")))
    assert isinstance(ctx, security.ServerNameContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "unit CA"),),)]
    assert ctx.server_name == ""


def test_system_cas_when_no_ca_file() -> None:
    paths = ssl.get_default_verify_paths()
    if not any(p and os.path.exists(p) for p in (paths.cafile, paths.capath)):
        pytest.skip("no system CA certificates here")
    assert tls_context(cfg(tls=True)) is not None


@pytest.mark.parametrize("content", ["", "not a certificate\n"])
def test_bad_ca_file(tmp_path: Path, content: str) -> None:
    path = _file(tmp_path / "ca.crt", content, mode=0o644)
    with pytest.raises(SecurityError, match=rf"CA certificate \(mqtt.ca_file\) {path}: holds no "
                                            "usable PEM certificate"):
        tls_context(cfg(tls=True, ca_file=path))


def test_missing_ca_file(tmp_path: Path) -> None:
    with pytest.raises(SecurityError, match=r"CA certificate .*ca\.crt: does not exist"):
        tls_context(cfg(tls=True, ca_file=str(tmp_path / "ca.crt")))


def test_ca_writable_by_others_is_refused(pem: Path, tmp_path: Path) -> None:
    path = _file(tmp_path / "ca.crt", (pem / "ca.crt").read_text(), mode=0o666)
    with pytest.raises(SecurityError, match=r"writable by group or others \(mode 0666\).*"
                                            "chmod 644"):
        tls_context(cfg(tls=True, ca_file=path))


def test_world_readable_key_refused_before_loading(pem: Path, tmp_path: Path) -> None:
    key = _file(tmp_path / "node.key", (pem / "node.key").read_text(), mode=0o644)
    with pytest.raises(SecurityError, match=r"client private key \(mqtt.key_file\) .*chmod 600"):
        tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), cert_file=str(pem / "node.crt"),
                        key_file=key))


@pytest.mark.parametrize(("cert", "key", "problem"), [
    ("node.crt", "other.key", "does not belong to the certificate"),
    ("ca.key", "node.key", "holds no PEM certificate"),
    ("node.crt", "junk", "is not a usable PEM private key"),
    ("node.crt", "enc.key", "is encrypted with a passphrase"),
])
def test_bad_client_cert_or_key_names_the_culprit(pem: Path, tmp_path: Path, cert: str, key: str,
                                                  problem: str) -> None:
    junk = _file(tmp_path / "junk", "-----BEGIN PRIVATE KEY-----\nAAAA\n")
    cert_path = _file(tmp_path / "c.pem", (pem / cert).read_text(), mode=0o644)
    key_path = junk if key == "junk" else str(pem / key)
    culprit = cert_path if problem == "holds no PEM certificate" else key_path
    with pytest.raises(SecurityError) as err:
        tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), cert_file=cert_path,
                        key_file=key_path))
    assert f" {culprit}: " in str(err.value) and problem in str(err.value)
    assert "hunter2" not in str(err.value)


def test_server_name_replaces_the_verified_host_name(pem: Path) -> None:
    """paho passes server_hostname=<host>; the context swaps in mqtt.server_name."""
    ctx = tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), server_name="mqtt.city.example"))
    assert isinstance(ctx, security.ServerNameContext)
    with socket.socket() as raw:
        wrapped = ctx.wrap_socket(raw, server_hostname="10.0.0.5", do_handshake_on_connect=False)
        assert wrapped.server_hostname == "mqtt.city.example"
        wrapped.close()
    plain = tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt")))
    assert plain is not None
    with socket.socket() as raw:
        wrapped = plain.wrap_socket(raw, server_hostname="10.0.0.5",
                                    do_handshake_on_connect=False)
        assert wrapped.server_hostname == "10.0.0.5"
        wrapped.close()


@pytest.mark.parametrize("name", [".example", "a b", "x/y", "-lead", "é"])
def test_bad_server_name(pem: Path, name: str) -> None:
    with pytest.raises(SecurityError, match=r"mqtt\.server_name: .* is not a host name"):
        tls_context(cfg(tls=True, ca_file=str(pem / "ca.crt"), server_name=name))


# -- apply and validate_security ----------------------------------------------------------------
def test_apply_sets_tls_and_credentials(pem: Path, tmp_path: Path) -> None:
    creds = _file(tmp_path / "c.toml", 'username = "node-1"\npassword = "pw"\n')
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t")
    security.apply(client, cfg(tls=True, ca_file=str(pem / "ca.crt"), credentials_file=creds))
    assert (client.username, client.password) == ("node-1", "pw")
    with pytest.raises(ValueError, match="already been configured"):
        client.tls_set_context(ssl.create_default_context())


def test_apply_without_security_leaves_client_plain() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t")
    security.apply(client, cfg())
    assert client.username is None
    client.tls_set_context(ssl.create_default_context())  # still unconfigured


def test_validate_security_refuses_and_warns(pem: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    creds = _file(tmp_path / "c.toml", 'username = "u"\npassword = "p"\n')
    with caplog.at_level(logging.WARNING, "citynode.security"):
        security.validate_security(cfg(credentials_file=creds))
        security.validate_security(MqttConfig(host="h", port=1883, tls=True,
                                              ca_file=str(pem / "ca.crt")))
    text = caplog.text
    assert "password is sent in clear text" in text and "mqtt.port is 1883" in text
    os.chmod(creds, 0o640)
    with pytest.raises(SecurityError, match="chmod 600"):
        security.validate_security(cfg(credentials_file=creds))


# -- no chmod or chown advice for files that are not the node's ---------------------------------
CRED_WHAT = "MQTT credentials file (mqtt.credentials_file)"


def test_etc_passwd_is_not_a_citynode_secret() -> None:
    """credentials_file = "/etc/passwd" once got "Fix: chmod 600 /etc/passwd; chown citynode:
    /etc/passwd", which would lock every user out of the machine."""
    with pytest.raises(SecurityError) as err:
        read_credentials("/etc/passwd")
    msg = str(err.value)
    assert "/etc/passwd: is not a citynode secret but a system file (under /etc/)" in msg
    assert "chmod" not in msg and "chown" not in msg
    assert "leave its mode and owner alone; point mqtt.credentials_file at" in msg
    assert err.value.key == "mqtt.credentials_file"


def test_the_setting_and_its_line_are_named(tmp_path: Path) -> None:
    text = ('[node]\nid = "n"\n\n[mqtt]\nhost = "broker"\n# secrets\n'
            'credentials_file = "/etc/passwd"\n')
    path = tmp_path / "citynode.toml"
    path.write_text(text)
    with pytest.raises(SecurityError) as err:
        security.validate_security(cfg(credentials_file="/etc/passwd"), config_path=path)
    assert str(err.value).startswith(f"{path}:7: {CRED_WHAT} /etc/passwd: is not a citynode ")
    with pytest.raises(SecurityError, match=r"^x\.toml:7: "):  # the text at hand: not re-read
        security.validate_security(cfg(credentials_file="/etc/passwd"), config_path="x.toml",
                                   config_text=text)
    # What the daemon prints when it refuses to start.
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 78, proc.stderr
    assert f"{path}:7: {CRED_WHAT} /etc/passwd: is not a citynode secret" in proc.stderr
    assert "chmod" not in proc.stderr and proc.stderr.count("\n") == 1


def test_the_nodes_own_files_keep_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """In citynode's own folder inside a system one (like /etc/citynode in /etc), the
    chmod is the right fix; next to it, in the system folder, it is not."""
    monkeypatch.setattr(security, "SYSTEM_DIRS", (str(tmp_path),))
    monkeypatch.setattr(security, "OWN_DIRS", (str(tmp_path / "citynode"),))
    (tmp_path / "citynode").mkdir()
    own = _file(tmp_path / "citynode" / "c.toml", 'username = "u"\npassword = "p"\n', 0o644)
    with pytest.raises(SecurityError, match=rf"Fix: chmod 600 {own}; chown \S+: {own}$"):
        read_credentials(own)
    system = _file(tmp_path / "c.toml", 'username = "u"\npassword = "p"\n', 0o644)
    with pytest.raises(SecurityError, match="not a citynode secret") as err:
        read_credentials(system)
    assert "chmod" not in str(err.value)
    # A link from citynode's folder into the system's is judged by where it leads.
    link = tmp_path / "citynode" / "link.toml"
    link.symlink_to(system)
    with pytest.raises(SecurityError, match=rf"not a citynode secret but a symlink to {system}"):
        read_credentials(str(link))
    # systemd's StateDirectory= is the node's too.
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    with pytest.raises(SecurityError, match="Fix: chmod 600"):
        read_credentials(system)


@pytest.mark.skipif(not ROOT, reason="chown to a system account needs root")
def test_file_of_another_system_account(tmp_path: Path) -> None:
    """A key of www-data or postgres is theirs: chown-ing it to citynode breaks them."""
    service = {0, os.geteuid()}
    try:
        import pwd

        service.add(pwd.getpwnam("citynode").pw_uid)
    except KeyError:
        pass
    uid = next(u for u in range(101, 999) if u not in service)
    path = _file(tmp_path / "node.key", mode=0o600)
    os.chown(path, uid, uid)
    with pytest.raises(SecurityError, match="not a citynode secret but a file of the system "
                                            "account") as err:
        check_private(path, WHAT)
    assert "chown" not in str(err.value) and "point mqtt.key_file at" in str(err.value)


SYSTEM_FILES = [p for p in ("/etc/passwd", "/etc/shadow", "/etc/hostname", "/etc/ssl/private",
                            "/usr/bin/env", "/bin/sh", "/root/.bashrc", "/root",
                            "/proc/self/status", "/sys/kernel/mm", "/dev/null", "/dev/zero",
                            "/var/log", "/run") if os.path.lexists(p)]


@settings(max_examples=80, deadline=None)
@given(target=st.sampled_from(SYSTEM_FILES), via_link=st.booleans(),
       euid=st.sampled_from([0, 4242]),
       check=st.sampled_from(["private", "public", "credentials", "ca", "key"]))
def test_never_advises_changing_a_system_file(target: str, via_link: bool, euid: int,
                                              check: str) -> None:
    """Whatever system file a setting names (directly or through a symlink), as root or as
    the service user: refused or accepted, but never "chmod" or "chown" it."""
    with tempfile.TemporaryDirectory() as d, \
            mock.patch.object(os, "geteuid", return_value=euid):
        path = target
        if via_link:
            path = os.path.join(d, "link")
            os.symlink(target, path)
        calls = {
            "private": lambda: check_private(path, WHAT),
            "public": lambda: security._check_public(path, "CA certificate (mqtt.ca_file)"),
            "credentials": lambda: read_credentials(path),
            "ca": lambda: tls_context(cfg(tls=True, ca_file=path)),
            "key": lambda: tls_context(cfg(tls=True, cert_file=path, key_file=path)),
        }
        try:
            calls[check]()
        except SecurityError as exc:
            assert "chmod" not in str(exc) and "chown" not in str(exc), str(exc)
