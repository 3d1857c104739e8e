"""Transport security for the uplink: TLS, client certificates, broker credentials.

Everything here runs twice: once at start-up (:func:`validate_security`, before any
sensor is opened, so a bad file stops the daemon with exit code 78 and one readable
line) and again for every new MQTT connection (:func:`apply`), so renewed
certificates and keys are picked up at the next reconnect without a restart.

Problems raise :class:`SecurityError`, which names the file, what is wrong and the
command that fixes it. Nothing here ever puts a password or key material into a
message. A chmod or chown is suggested only for a file that is plausibly the node's own:
a setting that names a system file (``credentials_file = "/etc/passwd"``, a key under
/usr, a file owned by another system account) gets "not a citynode secret" and the
setting to change instead, since the suggested fix would break the system.

Certificate dates are deliberately *not* checked here: a Raspberry Pi has
no real-time clock, so before NTP has synchronised the clock every certificate can
look "not yet valid"; that is a connection-time failure the uplink retries, not a
configuration error.

See docs/security.md for the operator's view.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import socket
import ssl
import stat
import tomllib
from typing import TYPE_CHECKING, Any

from agent.core.config import MqttConfig

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger("citynode.security")

SERVICE_USER = "citynode"  # User= in deploy/citynode.service; used in suggested fixes
MAX_FIELD_CHARS = 256
MAX_CREDENTIALS_BYTES = 4096
_CRED_KEYS = ("username", "password")
# A DNS name (or IPv4/IPv6 address) as it must appear in the broker's certificate.
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+")


#: Folders of the system and its other programs: a file in one (or a symlink leading to
#: one) is never the node's own, so its mode and owner are not ours to change.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
               "/proc", "/sys", "/dev", "/run", "/root", "/var/lib", "/var/log", "/var/cache",
               "/var/spool", "/var/mail", "/var/backups", "/snap")
#: ... except citynode's own folders in them (deploy/citynode.service, docs/provision.md).
OWN_DIRS = ("/etc/citynode", "/var/lib/citynode", "/run/citynode", "/var/cache/citynode",
            "/var/log/citynode")
#: Other people's secrets, wherever they are.
_PERSONAL = ("/.ssh/", "/.gnupg/", "/.password-store/")
#: Account ids that are people, not system accounts (Debian's UID_MIN..UID_MAX, roughly).
HUMAN_UIDS = range(1000, 60000)
_KEY_IN_WHAT = re.compile(r"\(([a-z_]+\.[a-z_]+)\)")


class SecurityError(Exception):
    """A security file or setting is unsafe or unusable; the daemon exits 78 (EX_CONFIG).

    The message is for the installer: which file, what is wrong, and the fix; with
    ``where`` (CONFIG:LINE of the setting, see :meth:`located`) first.
    """

    def __init__(self, what: str, path: str, problem: str, fix: str = "", *,
                 where: str = "") -> None:
        self.what, self.path, self.problem, self.fix = what, path, problem, fix
        self.where = where
        lead = f"{what} {path}" if path else what
        super().__init__((f"{where}: " if where else "") + f"{lead}: {problem}"
                         + (f". Fix: {fix}" if fix else ""))

    @property
    def key(self) -> str:
        """The configuration key at fault ("mqtt.key_file"), or "" when not known."""
        m = _KEY_IN_WHAT.search(self.what) or _KEY_IN_WHAT.fullmatch(f"({self.what})")
        return m.group(1) if m else ""

    def located(self, config_path: str | os.PathLike[str],
                config_text: str | None = None) -> SecurityError:
        """The same error, led by ``CONFIG:LINE`` of its key in the configuration file."""
        path = os.fspath(config_path)
        if self.where or not path or path == "-" or not self.key:
            return self
        if config_text is None:
            try:  # a regular file here: the configuration was just loaded from it
                with open(path, "rb") as fh:
                    config_text = fh.read(1 << 20).decode("utf-8", "replace")
            except OSError:
                return self
        from agent.core import tomlkeys

        line = tomlkeys.locate(tomlkeys.key_lines(config_text), self.key)
        where = f"{path}:{line}" if line else path
        return SecurityError(self.what, self.path, self.problem, self.fix, where=where)


# -- file checks -----------------------------------------------------------------------
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _service_user() -> str:
    """Who should own private files: this process's user, or the unit's User= when root."""
    euid = os.geteuid()
    return SERVICE_USER if euid == 0 else _user(euid)


def _shown(path: str) -> str:
    return f"{path} (symlink to {os.path.realpath(path)})" if os.path.islink(path) else path


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _own_dirs() -> list[str]:
    """citynode's folders: the fixed ones and those systemd gives the unit."""
    extra = [d for var in ("STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "RUNTIME_DIRECTORY",
                           "CACHE_DIRECTORY", "LOGS_DIRECTORY")
             for d in os.environ.get(var, "").split(":") if d.startswith("/")]
    return [*OWN_DIRS, *extra]


def _service_uids() -> set[int]:
    uids = {0, os.geteuid()}
    try:
        uids.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    except KeyError:
        pass
    return uids


def foreign(path: str, st: os.stat_result | None = None) -> str:
    """Why ``path`` is not plausibly the node's own file, or "" when it may be.

    Its place (the path as written or where its symlinks lead: a system folder other than
    citynode's own, someone's ~/.ssh) or its owner (a system account other than root and
    the service user, such as www-data or nobody) says whose it is. Whoever set
    ``credentials_file = "/etc/passwd"`` made a mistake in the configuration, and the
    fix is there: a chmod 600 of that file would break the system.
    """
    for p in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        via = f"a symlink to {p}, " if p != os.path.abspath(path) else ""
        if any(_under(p, d) for d in _own_dirs()):
            continue
        if any(m in p + "/" for m in _PERSONAL):
            return f"{via}someone's own secret (in a private key store)"
        for d in SYSTEM_DIRS:
            if _under(p, d):
                return f"{via}a system file (under {d}/)"
    if st is not None and st.st_uid not in _service_uids() and st.st_uid not in HUMAN_UIDS:
        return f"a file of the system account {_user(st.st_uid)}"
    return ""


def _not_ours(what: str, path: str, problem: str, why: str) -> SecurityError:
    """The error for a file that is not the node's: the setting is what must change."""
    key = SecurityError(what, path, problem).key or "the setting"
    own = {"mqtt.credentials_file": "mqtt-credentials.toml", "mqtt.key_file": "tls/node.key",
           "mqtt.cert_file": "tls/node.crt", "mqtt.ca_file": "tls/ca.crt"}.get(key)
    example = (f"such as /etc/citynode/{own}, which citynode provision installs" if own
               else "in /etc/citynode/")
    return SecurityError(
        what, _shown(path), f"is not a citynode secret but {why}, and {problem.split(';')[0]}",
        f"leave its mode and owner alone; point {key} at the node's own file ({example})")


def _stat_file(path: str, what: str) -> os.stat_result:
    """stat() following symlinks, with errors an installer can act on."""
    if not path:
        raise SecurityError(what, "", "is not set")
    try:
        st = os.stat(path)  # follows symlinks: the target is what gets read
    except FileNotFoundError:
        if os.path.islink(path):
            raise SecurityError(what, _shown(path), "is a symlink to a file that does not "
                                "exist", "point it at the real file") from None
        raise SecurityError(what, path, "does not exist",
                            "check the path in the configuration") from None
    except PermissionError:
        problem = (f"cannot be reached by user {_user(os.geteuid())} (a directory on the way "
                   "is not searchable)")
        why = foreign(path)
        if why:
            raise _not_ours(what, path, problem, why) from None
        raise SecurityError(what, path, problem,
                            f"chmod o+x or chgrp {_service_user()} the directories above "
                            "it") from None
    except OSError as exc:
        raise SecurityError(what, path, f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecurityError(what, _shown(path), "is not a regular file",
                            "point the setting at the file itself")
    return st


def _check_readable(path: str, what: str, st: os.stat_result) -> None:
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        problem = (f"cannot be read by user {_user(os.geteuid())} (owner {_user(st.st_uid)}, "
                   f"mode {stat.S_IMODE(st.st_mode):04o})")
        why = foreign(path, st)
        if why:
            raise _not_ours(what, path, problem, why) from None
        raise SecurityError(what, _shown(path), problem,
                            f"chown {_service_user()}: {path}; chmod 600 {path}") from None
    except OSError as exc:
        raise SecurityError(what, _shown(path), f"cannot be read: {exc.strerror}") from None


def check_private(path: str, what: str) -> None:
    """Refuse a private key or credentials file that others could read or change.

    Why each check exists:

    * missing, not a regular file, unreadable: fail at start-up with the path, not at
      the first connection attempt with an OpenSSL error;
    * any group/other permission bit (``mode & 0o077``): a secret readable by another
      account is no longer a secret, and one writable by another account can be
      swapped; 0640 is refused too, because every member of the group holds the key;
    * owner other than root or this process's user: that account can chmod the file
      back to 0644 (or replace it) at any time, so the mode check would mean nothing;
    * symlinks are followed and the *target* is checked, since that is what is read.
    """
    st = _stat_file(path, what)
    mode = stat.S_IMODE(st.st_mode)
    fix_owner = f"chown {_service_user()}: {path}"
    if st.st_uid not in (0, os.geteuid()):
        problem = (f"is owned by {_user(st.st_uid)}, not by {_user(os.geteuid())} (the user "
                   "citynode runs as) or root; its owner could change or reveal it at any time")
        why = foreign(path, st)
        if why:
            raise _not_ours(what, path, problem, why)
        if _user(st.st_uid) == _service_user():  # chown would change nothing: root runs this
            raise SecurityError(what, _shown(path), problem,
                                f"run it as {_user(st.st_uid)} (sudo -u {_user(st.st_uid)} "
                                f"...), or use a copy of root's: install -m 600 -o root "
                                f"{path} /root/{os.path.basename(path)}")
        raise SecurityError(what, _shown(path), problem, f"{fix_owner}; chmod 600 {path}")
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007))
                           if mode & bits)
        problem = (f"is accessible by {who} (mode {mode:04o}); a private key or password "
                   "must be readable by the service user only")
        why = foreign(path, st)
        if why:
            raise _not_ours(what, path, problem, why)
        raise SecurityError(what, _shown(path), problem, f"chmod 600 {path}; {fix_owner}")
    _check_readable(path, what, st)


def _check_public(path: str, what: str) -> None:
    """Certificates are public, but a trust anchor writable by others lets them MITM us."""
    st = _stat_file(path, what)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        problem = (f"is writable by group or others (mode {mode:04o}); whoever can write it "
                   "decides which brokers are trusted")
        why = foreign(path, st)
        if why:
            raise _not_ours(what, path, problem, why)
        raise SecurityError(what, _shown(path), problem, f"chmod 644 {path}; chown root: {path}")
    _check_readable(path, what, st)


# -- credentials --------------------------------------------------------------------------
def read_credentials(path: str) -> tuple[str, str]:
    """Read ``username``/``password`` from a 0600 TOML file; never echo its contents.

    The password lives in its own file, not in citynode.toml, so the main configuration
    can stay world-readable (and be pasted into a support ticket) while the secret stays
    0600.
    """
    what = "MQTT credentials file (mqtt.credentials_file)"
    check_private(path, what)
    example = 'it must hold exactly: username = "..." and password = "..."'
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CREDENTIALS_BYTES + 1)
    if len(raw) > MAX_CREDENTIALS_BYTES:
        raise SecurityError(what, path, f"is larger than {MAX_CREDENTIALS_BYTES} bytes", example)
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecurityError(what, path, "is not UTF-8 text", example) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message gives line and column only, never the offending text.
        raise SecurityError(what, path, f"is not valid TOML ({exc})",
                            f'{example}, with the values in double quotes') from None
    unknown = sorted(k for k in data if k not in _CRED_KEYS)
    if unknown:
        names = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise SecurityError(what, path, f"has unknown key(s) {names}", example)
    out: list[str] = []
    for key in _CRED_KEYS:
        value = data.get(key)
        if value is None:
            raise SecurityError(what, path, f"has no {key}", example)
        if not isinstance(value, str):
            raise SecurityError(what, path, f"{key} must be a string", f'write {key} = "..."')
        if not value:
            raise SecurityError(what, path, f"{key} is empty", example)
        if len(value) > MAX_FIELD_CHARS:
            raise SecurityError(what, path, f"{key} is longer than {MAX_FIELD_CHARS} characters")
        if "\x00" in value or (key == "username" and not value.isprintable()):
            raise SecurityError(what, path, f"{key} contains control characters")
        out.append(value)
    return out[0], out[1]


# -- TLS ----------------------------------------------------------------------------------
class ServerNameContext(ssl.SSLContext):
    """An SSLContext that verifies (and sends as SNI) ``server_name`` instead of the host.

    paho-mqtt 2.x has no server_hostname option: its ``_ssl_wrap_socket`` calls
    ``context.wrap_socket(sock, server_hostname=<host passed to connect()>)`` and, when
    ``context.check_hostname`` is true, leaves the name check to the context. Overriding
    ``wrap_socket`` here is therefore the one place where the verified name can be
    changed without turning verification off (``tls_insecure_set(True)`` would disable
    it entirely).
    """

    server_name: str = ""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any,
                 **kwargs: Any) -> ssl.SSLObject:
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(incoming, outgoing, *args, **kwargs)


def _no_passphrase() -> str:
    raise SecurityError(
        "client private key (mqtt.key_file)", "", "is encrypted with a passphrase, which a "
        "daemon cannot type", "store it unencrypted and protected by mode 0600: "
        "openssl pkey -in ENCRYPTED.key -out node.key")


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """The client TLS context for ``cfg``, or None when ``mqtt.tls`` is false.

    Equivalent to ``ssl.create_default_context(cafile=cfg.ca_file or None)`` (same
    options: CERT_REQUIRED, check_hostname), built as :class:`ServerNameContext` so
    ``mqtt.server_name`` works, with TLS 1.2 as the floor (1.0/1.1 are broken), and
    without honouring ``SSLKEYLOGFILE`` (a stray environment variable must not leak
    session keys from a production node).
    """
    if not cfg.tls:
        for key in ("ca_file", "cert_file", "key_file", "server_name"):
            if getattr(cfg, key):
                raise SecurityError(
                    f"mqtt.{key}", "", "is set but mqtt.tls is false, so the connection would "
                    "be unencrypted and the setting ignored",
                    f"set tls = true in [mqtt] (or remove {key})")
        return None
    if bool(cfg.cert_file) != bool(cfg.key_file):
        have, missing = ("cert_file", "key_file") if cfg.cert_file else ("key_file", "cert_file")
        raise SecurityError(f"mqtt.{have}", "", f"is set without mqtt.{missing}: a client "
                            "certificate needs both the certificate and its private key",
                            f"set mqtt.{missing} too, or remove mqtt.{have}")
    if cfg.key_file:
        check_private(cfg.key_file, "client private key (mqtt.key_file)")

    ctx = ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.server_name and not _HOSTNAME.fullmatch(cfg.server_name):
        raise SecurityError("mqtt.server_name", "", f"{cfg.server_name!r} is not a host name",
                            "the DNS name (or IP address) that the broker's certificate lists")
    ctx.server_name = cfg.server_name
    if cfg.ca_file:
        what = "CA certificate (mqtt.ca_file)"
        _check_public(cfg.ca_file, what)
        try:
            ctx.load_verify_locations(cafile=cfg.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise SecurityError(what, cfg.ca_file, f"holds no usable PEM certificate ({exc})",
                                "use the broker's CA certificate in PEM form "
                                "(-----BEGIN CERTIFICATE-----)") from None
    else:
        paths = ssl.get_default_verify_paths()
        if not any(p and os.path.exists(p) for p in (paths.cafile, paths.capath)):
            raise SecurityError("mqtt.ca_file", "", "is empty and this system has no CA "
                                "certificates to verify the broker with",
                                "apt-get install ca-certificates, or set mqtt.ca_file")
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cfg.cert_file:
        _load_client_cert(ctx, cfg.cert_file, cfg.key_file)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load the client chain; on failure, find out which of the two files is at fault."""
    what = "client certificate (mqtt.cert_file)"
    _check_public(cert_file, what)
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        return
    except SecurityError as exc:
        raise SecurityError(exc.what, key_file, exc.problem, exc.fix) from None
    except (ssl.SSLError, OSError) as exc:
        error = exc
    # OpenSSL says "PEM lib" for either file; parse the certificate alone to tell which.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert_file)
    except (ssl.SSLError, OSError):
        raise SecurityError(what, cert_file, "holds no PEM certificate",
                            "use the node's certificate in PEM form") from None
    if getattr(error, "reason", None) == "KEY_VALUES_MISMATCH":
        raise SecurityError("client private key (mqtt.key_file)", key_file,
                            f"does not belong to the certificate {cert_file}",
                            "configure the key the certificate was issued for") from None
    raise SecurityError("client private key (mqtt.key_file)", key_file,
                        f"is not a usable PEM private key ({error})",
                        "use the unencrypted PEM key (-----BEGIN PRIVATE KEY-----)") from None


# -- entry points ------------------------------------------------------------------------
def apply(client: mqtt.Client, cfg: MqttConfig) -> None:
    """Configure a fresh paho client's TLS and credentials from ``cfg``.

    Call it for every new client, before ``connect()``: files are re-read each time,
    so a renewed certificate or password is used from the next connection on. It may
    raise :class:`SecurityError` if a file changed since start-up.
    """
    ctx = tls_context(cfg)
    if ctx is not None:
        client.tls_set_context(ctx)
    if cfg.credentials_file:
        username, password = read_credentials(cfg.credentials_file)
        client.username_pw_set(username, password)


def validate_security(cfg: MqttConfig, *, config_path: str | os.PathLike[str] = "",
                      config_text: str | None = None) -> None:
    """Check at start-up everything that needs no connection: modes, owners, parsable files.

    Also logs warnings for settings that work but are probably a mistake. With
    ``config_path`` (and its text, if at hand), an error names the setting's line.
    """
    try:
        _validate(cfg)
    except SecurityError as exc:
        raise exc.located(config_path, config_text) from None


def _validate(cfg: MqttConfig) -> None:
    ctx = tls_context(cfg)
    if cfg.credentials_file:
        read_credentials(cfg.credentials_file)
        if ctx is None:
            log.warning("mqtt.credentials_file is used without mqtt.tls: the password is "
                        "sent in clear text", extra={"EVENT": "security_warning"})
    if ctx is not None and cfg.port == 1883:
        log.warning("mqtt.tls is true but mqtt.port is 1883, MQTT's plain-text port; TLS "
                    "listeners are usually on 8883", extra={"EVENT": "security_warning"})
