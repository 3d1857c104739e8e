"""`citynode provision`: inputs checked before anything is written, files with the modes
agent/wire/security.py demands, a config rewritten section by section, one real CONNACK."""

from __future__ import annotations

import contextlib
import grp
import io
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from file_kinds import KINDS, WRITABLE, check_outcome, make, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import config
from agent.tools import provision
from agent.tools.cli import main
from agent.tools.simulate import find_mosquitto, free_port
from agent.wire import security

ROOT = Path(__file__).resolve().parent.parent
NODE = "node-7"
PASSWORD = "correct horse battery staple"
ME = f"{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}"

CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[server]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = clientAuth
"""


def _ossl(d: Path, *args: str) -> None:
    res = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr


def _key(d: Path, name: str, cn: str, *extra: str) -> None:
    _ossl(d, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
          "-config", "cnf", *extra)


def _ca(d: Path, name: str) -> None:
    _ossl(d, "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650",
          "-subj", f"/CN={name}", "-config", "cnf", "-extensions", "v3_ca")


def _issue(d: Path, name: str, cn: str, ext: str, ca: str = "ca") -> None:
    _key(d, name, cn)
    _ossl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
          "-CAcreateserial", "-days", "30", "-extfile", "cnf", "-extensions", ext,
          "-out", f"{name}.crt")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("pki")
    (d / "cnf").write_text(CNF)
    _ca(d, "ca")
    _ca(d, "other_ca")
    _issue(d, "server", "localhost", "server")
    _issue(d, "client", NODE, "client")
    _issue(d, "stranger", NODE, "client", ca="other_ca")
    _ossl(d, "pkey", "-in", "client.key", "-aes256", "-passout", "pass:secret",
          "-out", "encrypted.key")
    (d / "pw").write_text(PASSWORD + "\n")
    return d


@pytest.fixture(scope="module")
def broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """mosquitto with a TLS + password listener and a mutual-TLS listener."""
    binary, passwd = find_mosquitto(), shutil.which("mosquitto_passwd")
    if binary is None or passwd is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed")
    d = tmp_path_factory.mktemp("broker")
    subprocess.run([passwd, "-c", "-b", str(d / "passwd"), NODE, PASSWORD], check=True,
                   capture_output=True, timeout=20)
    ports = {"password": free_port(), "mtls": free_port()}
    tls = f"tls_version tlsv1.2\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
    (d / "conf").write_text(
        "per_listener_settings true\npersistence false\nuser root\n"
        f"listener {ports['password']} 127.0.0.1\n{tls}password_file {d}/passwd\n"
        "allow_anonymous false\n"
        f"listener {ports['mtls']} 127.0.0.1\n{tls}cafile {pki}/ca.crt\n"
        "require_certificate true\nuse_identity_as_username true\n")
    proc = subprocess.Popen([binary, "-c", str(d / "conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    for port in ports.values():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "mosquitto"
                time.sleep(0.05)
    yield ports
    proc.terminate()
    proc.wait(5)


EXISTING = """\
# my site
[node]
id = "old-id"   # set by hand
state_dir = "/var/lib/citynode"

[report]
interval_s = 30
stats = ["mean",
         "max"]

[mqtt]
# the broker
host = "old.example"
port = 1883
prefix = "city/x"
keepalive_s = 30
# tls = true

[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "citynode.toml").write_text(EXISTING)
    return tmp_path


def run(site: Path, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["provision", "--node-id", NODE, "--config", str(site / "citynode.toml"),
                 "--secrets-dir", str(site / "etc"), "--owner", ME, *args])
    out, err = capsys.readouterr()
    return code, out, err


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def written(site: Path) -> dict:
    return tomllib.loads((site / "citynode.toml").read_text())


# -- against a real broker ------------------------------------------------------------------
@pytest.mark.broker
def test_password_over_tls(site, pki, broker, capsys):
    code, out, err = run(site, capsys, "--broker", f"127.0.0.1:{broker['password']}",
                         "--ca", str(pki / "ca.crt"), "--password-file", str(pki / "pw"))
    assert code == 0, err
    assert f"broker 127.0.0.1:{broker['password']}: CONNACK Success (MQTT 5)" in out
    assert "systemctl enable --now citynode" in out and "citynode doctor" in out
    creds = site / "etc" / "mqtt-credentials.toml"
    assert mode(creds) == 0o600 and mode(site / "etc" / "tls" / "ca.crt") == 0o644
    assert mode(site / "etc" / "tls") == 0o755
    assert security.read_credentials(str(creds)) == (NODE, PASSWORD)  # user name: node id
    assert PASSWORD not in out + err
    cfg = written(site)
    assert cfg["mqtt"] == {"host": "127.0.0.1", "port": broker["password"], "tls": True,
                           "ca_file": str(site / "etc" / "tls" / "ca.crt"),
                           "credentials_file": str(creds),
                           "prefix": "city/x", "keepalive_s": 30}
    assert cfg["node"] == {"id": NODE, "state_dir": "/var/lib/citynode"}
    before = tomllib.loads(EXISTING)
    assert cfg["report"] == before["report"] and cfg["sensor"] == before["sensor"]
    text = (site / "citynode.toml").read_text()
    assert text.startswith("# my site\n[node]\n") and '# set by hand' in text
    assert "# the broker" in text and "# tls = true" not in text
    assert mode(site / "citynode.toml") == 0o644
    # What the daemon does at start-up accepts it.
    security.validate_security(config.load(site / "citynode.toml", check_devices=False).mqtt)


@pytest.mark.broker
def test_wrong_password_is_refused_by_the_broker(site, pki, broker, capsys, tmp_path):
    (tmp_path / "bad").write_text("nope\n")
    code, _, err = run(site, capsys, "--broker", f"127.0.0.1:{broker['password']}",
                       "--ca", str(pki / "ca.crt"), "--password-file", str(tmp_path / "bad"))
    assert code == 77 and "refused the connection: CONNACK Not authorized" in err
    assert err.count("\n") == 1 and "nope" not in err


@pytest.mark.broker
def test_mutual_tls(site, pki, broker, capsys):
    code, out, err = run(site, capsys, "--broker", f"localhost:{broker['mtls']}",
                         "--ca", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
                         "--key", str(pki / "client.key"))
    assert code == 0, err
    assert "CONNACK Success" in out and "TLS, client certificate" in out
    tls = site / "etc" / "tls"
    assert mode(tls / "node.key") == 0o600 and mode(tls / "node.crt") == 0o644
    assert (tls / "node.key").read_bytes() == (pki / "client.key").read_bytes()
    m = written(site)["mqtt"]
    assert (m["tls"], m["cert_file"], m["key_file"]) == (True, str(tls / "node.crt"),
                                                         str(tls / "node.key"))
    assert "credentials_file" not in m


@pytest.mark.broker
def test_broker_certificate_from_another_ca(site, pki, broker, capsys):
    code, _, err = run(site, capsys, "--broker", f"127.0.0.1:{broker['password']}",
                       "--ca", str(pki / "other_ca.crt"), "--password-file", str(pki / "pw"))
    assert code == 69 and "certificate verify failed" in err


@pytest.mark.broker
def test_failover_brokers_are_written_and_each_is_checked(site, pki, broker, capsys):
    """--failover: the list goes into [mqtt] failover and provision connects to each as the
    node would; one that cannot be reached is a warning (the node works on its primary)."""
    dead = free_port()
    code, out, err = run(site, capsys, "--broker", f"127.0.0.1:{broker['password']}",
                         "--failover", f"localhost:{broker['password']}",
                         "--failover", f"127.0.0.1:{dead}",
                         "--ca", str(pki / "ca.crt"), "--password-file", str(pki / "pw"))
    assert code == 0, err
    assert f"failover broker localhost:{broker['password']}: CONNACK Success" in out
    assert f"warning: failover broker 127.0.0.1:{dead}: cannot connect" in out
    m = written(site)["mqtt"]
    assert m["failover"] == [f"localhost:{broker['password']}", f"127.0.0.1:{dead}"]
    # Provisioned again without --failover (new credentials): the list is kept.
    code, out, err = run(site, capsys, "--broker", f"127.0.0.1:{broker['password']}",
                         "--ca", str(pki / "ca.crt"), "--password-file", str(pki / "pw"),
                         "--force")
    assert code == 0, err
    assert written(site)["mqtt"]["failover"] == m["failover"]
    assert out.count("failover broker") == 2


@pytest.mark.parametrize("args, message", [
    (["--failover", "a:b:c"], "--failover 'a:b:c': "),
    (["--failover", "127.0.0.1"], "127.0.0.1:1883 is already named"),
    (["--failover", "m2", "--failover", "M2:1883"], "M2:1883 is already named"),
    (["--failover", "m2:0"], "--failover 'm2:0': "),
    ([f"--failover=m{i}" for i in range(config.MAX_FAILOVER + 1)], "at most"),
])
def test_bad_failover_brokers_are_usage_errors(site, capsys, args, message):
    code, _, err = run(site, capsys, "--broker", "127.0.0.1", *args, "--no-check")
    assert code == 64 and message in err, err
    assert err.count("\n") == 1 and (site / "citynode.toml").read_text() == EXISTING


def test_a_multi_line_failover_list_is_replaced_whole():
    old = ('[node]\nid = "a"\n[mqtt]\nhost = "h"\nfailover = [\n  "[2001:db8::1]:8883",  # ]\n'
           '  "m3",\n]\nprefix = "p"\n')
    mqtt = {"host": "h2", "port": 1883, "tls": False, "failover": ["m4", "[::1]:1884"]}
    new = provision.update_config(old, "n", mqtt)
    provision.verify_rewrite(old, new, "n", mqtt)
    assert tomllib.loads(new)["mqtt"] == {**mqtt, "prefix": "p"}
    kept = {"host": "h2", "port": 1883, "tls": False}  # no --failover: the list stays
    new = provision.update_config(old, "n", kept)
    provision.verify_rewrite(old, new, "n", kept)
    assert tomllib.loads(new)["mqtt"]["failover"] == ["[2001:db8::1]:8883", "m3"]


def test_broker_unreachable_and_no_check(site, capsys):
    port = free_port()  # nothing listens there
    code, _, err = run(site, capsys, "--broker", f"127.0.0.1:{port}", "--password-file",
                       os.devnull)
    assert code == 65 and "password: empty" in err  # checked before the broker
    pw = site / "pw"
    pw.write_text("p\n")
    code, _, err = run(site, capsys, "--broker", f"127.0.0.1:{port}", "--password-file", str(pw))
    assert code == 69 and f"cannot connect to 127.0.0.1:{port}" in err
    code, out, err = run(site, capsys, "--broker", f"127.0.0.1:{port}", "--password-file",
                         str(pw), "--no-check")
    assert code == 0 and "not contacted (--no-check)" in out
    assert "password is sent in clear text" in out  # the daemon's own warning, passed on


# -- refused inputs: nothing written ----------------------------------------------------------
@pytest.mark.parametrize("files, code, message", [
    (("--cert", "client.crt", "--key", "server.key"), 65, "does not belong to the certificate"),
    (("--cert", "client.crt", "--key", "encrypted.key"), 65, "encrypted with a passphrase"),
    (("--cert", "stranger.crt", "--key", "stranger.key"), 65, "was not issued by the CA"),
    (("--cert", "client.crt", "--key", "missing.key"), 66, "missing.key: no such file"),
    (("--cert", "client.crt", "--key", "client.key", "--ca", "client.key"), 65,
     "holds no PEM certificate"),
    (("--cert", "client.crt"), 64, "--cert and --key go together"),
])
def test_bad_inputs_write_nothing(site, pki, capsys, files, code, message):
    args = [a if a.startswith("--") else str(pki / a) for a in files]
    if "--ca" not in args:
        args += ["--ca", str(pki / "ca.crt")]
    got, _, err = run(site, capsys, "--broker", "127.0.0.1:8883", *args, "--no-check")
    assert got == code and message in err, err
    assert err.startswith("citynode provision: error: ") and err.count("\n") == 1
    assert not (site / "etc").exists() and (site / "citynode.toml").read_text() == EXISTING


@pytest.mark.parametrize("args, message", [
    (["--node-id", "bad id"], "--node-id 'bad id': must be"),
    (["--username", "u"], "--username needs --password-file"),
    (["--no-tls", "--server-name", "x"], "need TLS: drop --no-tls"),
    (["--broker", "host:99999"], "port must be 1..65535"),
    (["--owner", "no-such-user-here"], "no user 'no-such-user-here'"),
])
def test_usage_errors(site, capsys, args, message):
    base = ["--broker", "127.0.0.1"] if "--broker" not in args else []
    code, _, err = run(site, capsys, *base, *args, "--no-check")
    assert code == 64 and message in err


def test_certificate_dates(pki):
    """The client certificate is valid for 30 days from now."""
    cert, notes = str(pki / "client.crt"), []
    provision.check_dates(cert, "--cert", notes, now=time.time() - 3600)
    assert "is not valid before" in notes[0] and "timedatectl" in notes[0]
    notes.clear()
    provision.check_dates(cert, "--cert", notes)
    assert "expires on" in notes[0] and "in 29 days" in notes[0]
    with pytest.raises(provision.Fail, match=r"expired on .*timedatectl") as exc:
        provision.check_dates(cert, "--cert", notes, now=time.time() + 40 * 86400)
    assert exc.value.code == 65


# -- overwriting ------------------------------------------------------------------------------
def test_refuses_to_replace_different_secrets_without_force(site, pki, capsys, monkeypatch):
    args = ("--broker", "127.0.0.1:8883", "--ca", str(pki / "ca.crt"), "--no-check")
    assert run(site, capsys, *args, "--password-file", str(pki / "pw"))[0] == 0
    assert run(site, capsys, *args, "--password-file", str(pki / "pw"))[0] == 0  # same: fine
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"another one\n")))
    code, _, err = run(site, capsys, *args, "--password-stdin")
    assert code == 73 and "mqtt-credentials.toml exists with other contents" in err
    assert "--force" in err
    creds = str(site / "etc" / "mqtt-credentials.toml")
    assert security.read_credentials(creds)[1] == PASSWORD
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"another one\n")))
    assert run(site, capsys, *args, "--password-stdin", "--force")[0] == 0
    assert security.read_credentials(creds) == (NODE, "another one")
    assert mode(Path(creds)) == 0o600
    assert [p.name for p in (site / "etc").iterdir() if p.name.startswith(".")] == []


# -- the configuration ------------------------------------------------------------------------
def test_invalid_result_leaves_the_config_alone(site, capsys):
    bad = EXISTING.replace("interval_s = 30", "interval_s = 30\noops = 1")
    (site / "citynode.toml").write_text(bad)
    code, _, err = run(site, capsys, "--broker", "127.0.0.1", "--no-check")
    assert code == 78 and "report.oops: unknown key" in err and "nothing was written" in err
    assert (site / "citynode.toml").read_text() == bad


def test_new_config_when_none_exists(tmp_path, capsys):
    cfg = tmp_path / "new" / "citynode.toml"
    code = main(["provision", "--node-id", NODE, "--broker", "mqtt.example:1884", "--config",
                 str(cfg), "--secrets-dir", str(tmp_path), "--owner", ME, "--no-check"])
    out = capsys.readouterr().out
    assert code == 0 and f"created {cfg}" in out
    c = config.load(cfg)
    assert c.node.id == NODE and (c.mqtt.host, c.mqtt.port, c.mqtt.tls) == ("mqtt.example",
                                                                            1884, False)
    assert c.sensor == [] and "[[sensor]]" in cfg.read_text()  # a commented example


def test_update_config_edge_cases():
    mqtt = {"host": "h", "port": 1, "tls": False}
    # No [mqtt], no [node] id; a multi-line string holding a fake header is left alone.
    text = ('[node]\nstate_dir = ""\n[report]\ninterval_s = 5\n[x]\ndoc = """\n[mqtt]\n'
            'host = "no"\n"""\n')
    out = provision.update_config(text, "n", mqtt)
    assert tomllib.loads(out) == {"node": {"id": "n", "state_dir": ""}, "mqtt": mqtt,
                                  "report": {"interval_s": 5},
                                  "x": {"doc": '[mqtt]\nhost = "no"\n'}}
    assert provision.update_config("", "n", mqtt).startswith('[node]\nid = "n"\n')
    # Dotted keys are TOML too, but not rewritten: refused rather than guessed.
    dotted = 'mqtt.host = "x"\n[node]\nid = "a"\n'
    with pytest.raises(provision.Fail) as exc:
        provision.verify_rewrite(dotted, provision.update_config(dotted, "n", mqtt), "n", mqtt)
    assert exc.value.code == 78
    # The shipped example: every other table is kept exactly.
    example = (ROOT / "deploy" / "citynode.toml").read_text()
    out = provision.update_config(example, "n", mqtt)
    provision.verify_rewrite(example, out, "n", mqtt)
    before, after = tomllib.loads(example), tomllib.loads(out)
    assert {k: v for k, v in after.items() if k not in ("node", "mqtt")} == {
        k: v for k, v in before.items() if k not in ("node", "mqtt")}
    assert after["mqtt"]["protocol"] == "auto" and after["mqtt"]["host"] == "h"


def test_default_owner_is_the_service_user_or_me():
    o = provision.resolve_owner(None)
    try:
        pwd.getpwnam("citynode")
        assert o.user == "citynode"
    except KeyError:
        assert o.uid == os.geteuid()
    assert provision.resolve_owner("0:0").user == "root"


def test_parse_broker():
    assert provision.parse_broker("mqtt.example") == ("mqtt.example", None)
    assert provision.parse_broker("10.0.0.1:8883") == ("10.0.0.1", 8883)
    assert provision.parse_broker("[::1]:1883") == ("::1", 1883)
    with pytest.raises(provision.Fail):
        provision.parse_broker("a:b:c")


# -- only regular files are replaced; symlinks are written through ----------------------------
MINIMAL = b'[node]\nid = "old-id"\n'


def provision_quietly(*args: str) -> tuple[int, str, str]:
    """main(["provision", ...]) in this process, without pytest's capture fixtures (so it
    can run under hypothesis); an exception (a traceback) fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["provision", "--node-id", NODE, "--broker", "127.0.0.1", "--owner", ME,
                     "--no-check", *args])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_config_of_every_kind(tmp_path: Path, kind: str) -> None:
    """--config /dev/null once printed "updated /dev/null" and put a file in its place; a
    symlink was replaced by a file (its target unchanged); a directory gave a traceback."""
    cfg = tmp_path / "citynode.toml"
    make(cfg, kind, MINIMAL)
    before = snapshot(tmp_path)
    code, out, err = provision_quietly("--config", str(cfg), "--secrets-dir",
                                       str(tmp_path / "etc"))
    if kind in WRITABLE:
        assert code == 0, err
        check_outcome(tmp_path, cfg.name, kind, before, True)
        assert config.load(cfg, check_devices=False).node.id == NODE
        if os.path.islink(cfg):
            assert f"{os.path.realpath(cfg)} through the symlink {cfg}" in out
    else:
        assert code == 73, err
        assert err.startswith(f"citynode provision: error: --config {cfg}: ")
        assert err.count("\n") == 1 and "nothing was written" in err
        check_outcome(tmp_path, cfg.name, kind, before, False)


@pytest.mark.skipif("chardev" not in KINDS, reason="needs root to make a device node")
def test_a_device_node_is_named(tmp_path: Path, capsys) -> None:
    """A /dev/null of our own (mknod 1,3): were the refusal to break, the machine's
    /dev/null would not be the casualty."""
    null = tmp_path / "null"
    make(null, "chardev")
    code = main(["provision", "--node-id", NODE, "--broker", "127.0.0.1", "--owner", ME,
                 "--no-check", "--config", str(null), "--secrets-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 73 and f"{null}: is a character device, not a regular file" in err
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_password_from_standard_input_with_a_dash(site: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"s3cret\n")))
    code, _, err = run(site, capsys, "--broker", "127.0.0.1:1", "--no-check",
                       "--username", "u", "--password-file", "-")
    assert code == 0, err
    creds = next((site / "secrets").glob("mqtt-credentials.toml"), None) or next(
        site.rglob("mqtt-credentials.toml"))
    assert tomllib.loads(creds.read_text())["password"] == "s3cret"


def test_a_certificate_cannot_come_from_standard_input(site: Path, capsys) -> None:
    code, _, err = run(site, capsys, "--broker", "127.0.0.1:8883", "--no-check", "--ca", "-")
    assert code == 64 and "--ca -: give a file" in err


def test_secret_symlink_leading_out_of_the_secrets_dir_is_refused(site: Path, pki: Path,
                                                                  capsys) -> None:
    (site / "etc").mkdir()
    elsewhere = site / "shadow"
    elsewhere.write_text("root:*:19000::::::\n")
    (site / "etc" / "mqtt-credentials.toml").symlink_to(elsewhere)
    code, _, err = run(site, capsys, "--broker", "127.0.0.1", "--password-file",
                       str(pki / "pw"), "--no-check", "--force")
    assert code == 73 and f"is a symlink to {elsewhere}, outside {site / 'etc'}" in err
    assert elsewhere.read_text() == "root:*:19000::::::\n"
    assert (site / "citynode.toml").read_text() == EXISTING


def test_config_must_not_be_a_secret(site: Path, pki: Path, capsys) -> None:
    cfg = site / "etc" / "mqtt-credentials.toml"
    code = main(["provision", "--node-id", NODE, "--broker", "127.0.0.1", "--owner", ME,
                 "--no-check", "--config", str(cfg), "--secrets-dir", str(site / "etc"),
                 "--password-file", str(pki / "pw")])
    assert code == 64 and "is where" in capsys.readouterr().err and not cfg.exists()


@pytest.mark.parametrize("option, make_input, code, words", [
    ("--ca", lambda p: os.mkfifo(p), 66, "is a FIFO (named pipe), not a regular file"),
    ("--ca", lambda p: p.mkdir(), 66, "--ca"),
    ("--password-file", lambda p: os.mkfifo(p), 65, "password: empty"),  # no writer: no wait
    ("--password-file", lambda p: p.symlink_to("/dev/zero"), 65, "larger than 4096 bytes"),
])
def test_special_inputs(site: Path, capsys, option, make_input, code, words) -> None:
    src = site / "input"
    make_input(src)
    got, _, err = run(site, capsys, "--broker", "127.0.0.1", option, str(src), "--no-check")
    assert got == code and words in err and err.count("\n") == 1
    assert (site / "citynode.toml").read_text() == EXISTING


def test_config_that_is_not_text(site: Path, capsys) -> None:
    (site / "citynode.toml").write_bytes(b"[node]\nid = \"\xff\"\n")
    code, _, err = run(site, capsys, "--broker", "127.0.0.1", "--no-check")
    assert code == 78 and "is not UTF-8 text" in err


def test_uncommenting_the_sensor_example_gives_a_valid_config(tmp_path: Path, capsys) -> None:
    """The new configuration invites uncommenting its [[sensor]] example: that must give
    valid TOML (the example comes before [mqtt], not after its keys)."""
    cfg = tmp_path / "citynode.toml"
    assert provision_quietly("--config", str(cfg), "--secrets-dir", str(tmp_path))[0] == 0
    lines = cfg.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line == "# [[sensor]]")
    end = next(i for i, line in enumerate(lines) if line == "[mqtt]")
    assert start < end
    lines[start:end] = [line[2:] if line.startswith("# ") else line.removeprefix("#")
                        for line in lines[start:end]]
    cfg.write_text("\n".join(lines) + "\n")
    assert main(["config", "check", "--no-devices", str(cfg)]) == 0, capsys.readouterr().err
    c = config.load(cfg, check_devices=False)
    assert len(c.sensor) == 1 and c.mqtt.host == "127.0.0.1" and c.node.id == NODE


SECRET_KINDS = [*KINDS, "outside"]  # outside: a symlink to a file beside the configuration


@settings(max_examples=80, deadline=None)
@given(cfg_kind=st.sampled_from(KINDS), cred_kind=st.sampled_from(SECRET_KINDS))
def test_provision_never_replaces_what_is_not_a_regular_file(cfg_kind: str,
                                                              cred_kind: str) -> None:
    """Whatever the configuration and the credentials file are, provision writes through
    symlinks to regular files or refuses (73) with one line, changing nothing."""
    with tempfile.TemporaryDirectory() as d:
        site, secrets = Path(d, "site"), Path(d, "etc")
        site.mkdir()
        secrets.mkdir()
        (Path(d) / "pw").write_text(PASSWORD + "\n")
        cfg, cred = site / "citynode.toml", secrets / "mqtt-credentials.toml"
        make(cfg, cfg_kind, MINIMAL)
        if cred_kind == "outside":
            (site / "theirs").write_text("not ours\n")
            cred.symlink_to(site / "theirs")
        else:
            make(cred, cred_kind, b'username = "x"\npassword = "y"\n')
        before = {f: snapshot(f) for f in (site, secrets)}
        code, _, err = provision_quietly("--config", str(cfg), "--secrets-dir", str(secrets),
                                         "--password-file", str(Path(d) / "pw"), "--force")
        wrote = cfg_kind in WRITABLE and cred_kind in WRITABLE
        assert code == (0 if wrote else 73), err
        assert "Traceback" not in err and (wrote or err.count("\n") == 1)
        check_outcome(site, cfg.name, cfg_kind, before[site], wrote)
        if cred_kind == "outside":
            return
        check_outcome(secrets, cred.name, cred_kind, before[secrets], wrote)
        if wrote:
            assert security.read_credentials(str(cred)) == (NODE, PASSWORD)
            assert config.load(cfg, check_devices=False).mqtt.credentials_file == str(cred)


@given(st.text())
def test_credentials_round_trip_any_password(password: str) -> None:
    """Any text a password file can hold (emoji beyond U+FFFF, control characters, quotes)
    comes back unchanged from the credentials file provision writes."""
    from agent.tools.provision import credentials_toml

    assert tomllib.loads(credentials_toml("node", password).decode()) == {
        "username": "node", "password": password}
