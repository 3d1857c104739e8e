"""Download a bundle in the background: resumable (HTTP Range), throttled, bounded, checked.

The bytes go to ``<dest>.part``; a restart (of the thread, the daemon or the node) goes on
from the part's length with ``Range: bytes=N-``. A server that ignores the range (200
instead of 206) or answers with another start is read from 0 again. The whole file is
checked against the size and sha256 the ``update`` command named before it is renamed to
``dest``; a mismatch deletes it (a corrupt part must not be resumed forever).

HTTPS uses the node's TLS settings: ``[update] ca_file``, else ``[mqtt] ca_file`` when
``[mqtt] tls`` is on, else the system's CAs; the client certificate of ``[mqtt]`` when it
has one. Plain HTTP only when ``[update] allow_http`` says so (tests; the bundle's
signature still decides what is installed).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 64 * 1024
MAX_REDIRECTS = 5
TIMEOUT_S = 30.0
MAX_URL = 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(Exception):
    """A download that cannot go on: one line for the event and the log."""


class Throttle:
    """A token bucket over bytes: at most ``rate`` bytes a second on average, ``burst`` at
    once. The clock and the sleep are injected so tests measure it without timing."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, burst: int | None = None) -> None:
        self.rate = float(rate)
        self.burst = int(burst or max(1024, min(CHUNK, self.rate / 4 or CHUNK)))
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._t = clock()

    def chunk(self) -> int:
        """The largest read that one :meth:`take` can grant."""
        return CHUNK if self.rate <= 0 else min(CHUNK, self.burst)

    def take(self, n: int) -> None:
        """Wait until ``n`` bytes may go (n <= :meth:`chunk`)."""
        if self.rate <= 0:
            return
        for _ in range(1_000_000):  # bounded: each round sleeps long enough to refill
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._t) * self.rate)
            self._t = now
            if self._tokens >= n:
                self._tokens -= n
                return
            self._sleep((n - self._tokens) / self.rate)
        raise DownloadError("bandwidth limiter stalled (the clock does not advance)")


def tls_context(ca_file: str = "", mqtt: Any = None) -> ssl.SSLContext:
    """The HTTPS client context from the node's TLS settings (see the module's text)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    use_mqtt = mqtt is not None and getattr(mqtt, "tls", False)
    ca = ca_file or (mqtt.ca_file if use_mqtt else "")
    try:
        if ca:
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if use_mqtt and mqtt.cert_file and mqtt.key_file:
            ctx.load_cert_chain(mqtt.cert_file, mqtt.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise DownloadError(f"TLS settings unusable: {ca or 'system CAs'}: {exc}") from None
    return ctx


def check_url(url: str, *, allow_http: bool = False) -> urllib.parse.SplitResult:
    """The parsed URL, or DownloadError when it is not one this node fetches."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL:
        raise DownloadError(f"url must be 1-{MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) > 0x7e for c in url):
        raise DownloadError("url must be printable ASCII without spaces")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise DownloadError("url is malformed") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise DownloadError(f"url must be {' or '.join(schemes)} (got {parts.scheme or 'none'})")
    if not parts.hostname:
        raise DownloadError("url names no host")
    if parts.username or parts.password:
        raise DownloadError("url must not carry credentials")
    return parts


@dataclass
class Request:
    """One download: where from, where to, and what the file must be."""

    url: str
    dest: Path
    sha256: str
    size: int | None
    max_bytes: int
    allow_http: bool = False


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


class Downloader:
    """Fetches one :class:`Request`; :meth:`run` returns the finished file's path."""

    def __init__(self, req: Request, *, throttle: Throttle | None = None,
                 context: ssl.SSLContext | None = None,
                 progress: Callable[[int, int | None], None] = lambda done, total: None,
                 stop: threading.Event | None = None, attempts: int = 8,
                 sleep: Callable[[float], None] = time.sleep, timeout: float = TIMEOUT_S
                 ) -> None:
        self.req = req
        self.throttle = throttle or Throttle(0)
        self.context = context
        self.progress = progress
        self.stop = stop or threading.Event()
        self.attempts = attempts
        self.sleep = sleep
        self.timeout = timeout
        self.part = req.dest.with_name(req.dest.name + ".part")
        self.restarts = 0  # reads that had to begin at 0 again (a server ignoring Range)
        self.resumed_from = 0

    @property
    def limit(self) -> int:
        return self.req.size if self.req.size is not None else self.req.max_bytes

    def run(self) -> Path:
        """Download (resuming), check size and sha256, rename into place."""
        if self.req.size is not None and self.req.size > self.req.max_bytes:
            raise DownloadError(f"size {self.req.size} exceeds the limit {self.req.max_bytes}")
        if self.req.dest.is_file() and sha256_of(self.req.dest) == self.req.sha256:
            return self.req.dest
        self.req.dest.parent.mkdir(parents=True, exist_ok=True)
        last: Exception | None = None
        for attempt in range(self.attempts):
            if self.stop.is_set():
                raise DownloadError("stopped")
            try:
                if self._fetch():
                    break
            except ssl.SSLCertVerificationError as exc:
                raise DownloadError(f"TLS: {exc.verify_message or exc}") from None
            except (OSError, http.client.HTTPException, TimeoutError) as exc:
                last = exc
                self.stop.wait(0)  # give a stop request a chance
                self.sleep(min(60.0, 2.0 ** attempt))
        else:
            raise DownloadError(f"download failed after {self.attempts} attempts: {last}")
        return self._finish()

    def _have(self) -> int:
        try:
            have = self.part.stat().st_size
        except FileNotFoundError:
            return 0
        if have > self.limit:
            self._truncate()
            return 0
        return have

    def _truncate(self) -> None:
        with open(self.part, "wb"):
            pass

    def _finish(self) -> Path:
        size = self.part.stat().st_size
        if self.req.size is not None and size != self.req.size:
            self.part.unlink()
            raise DownloadError(f"size {size} differs from the announced {self.req.size}")
        digest = sha256_of(self.part)
        if digest != self.req.sha256:
            self.part.unlink()
            raise DownloadError(f"sha256 {digest[:16]}... differs from the announced "
                                f"{self.req.sha256[:16]}...: refused")
        os.replace(self.part, self.req.dest)
        return self.req.dest

    def _connect(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host, port = parts.hostname or "", parts.port
        if parts.scheme == "https":
            ctx = self.context or tls_context()
            return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=ctx)
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _fetch(self) -> bool:
        """One request (following redirects); True when the part is complete."""
        have = self._have()
        if self.req.size is not None and have == self.req.size:
            return True
        self.resumed_from = have
        url = self.req.url
        for _ in range(MAX_REDIRECTS + 1):
            parts = check_url(url, allow_http=self.req.allow_http)
            conn = self._connect(parts)
            try:
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                headers = {"User-Agent": "citynode-update", "Accept-Encoding": "identity"}
                if have:
                    headers["Range"] = f"bytes={have}-"
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                if resp.status in (301, 302, 303, 307, 308):
                    location = resp.getheader("Location") or ""
                    url = urllib.parse.urljoin(url, location)
                    continue
                if resp.status == 416 and have:
                    self._truncate()  # our part is longer than their file: start again
                    self.restarts += 1
                    return False
                if resp.status == 206 and have:
                    start, total = self._content_range(resp)
                    if start != have:
                        self._truncate()
                        self.restarts += 1
                        return False
                    self._check_total(total)
                    return self._read(resp, have)
                if resp.status == 200:
                    if have:
                        self.restarts += 1
                    self._truncate()
                    length = resp.getheader("Content-Length")
                    if length is not None and length.isdigit():
                        self._check_total(int(length))
                    return self._read(resp, 0)
                raise DownloadError(f"HTTP {resp.status} {resp.reason[:60]} from "
                                    f"{parts.hostname}")
            finally:
                conn.close()
        raise DownloadError(f"more than {MAX_REDIRECTS} redirects")

    def _content_range(self, resp: http.client.HTTPResponse) -> tuple[int, int | None]:
        m = _CONTENT_RANGE.fullmatch((resp.getheader("Content-Range") or "").strip())
        if not m:
            raise DownloadError("206 without a usable Content-Range")
        return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))

    def _check_total(self, total: int | None) -> None:
        if total is None:
            return
        if self.req.size is not None and total != self.req.size:
            raise DownloadError(f"the server's file has {total} bytes, not the announced "
                                f"{self.req.size}")
        if total > self.req.max_bytes:
            raise DownloadError(f"the server's file has {total} bytes, over the limit "
                                f"{self.req.max_bytes}")

    def _read(self, resp: http.client.HTTPResponse, have: int) -> bool:
        limit = self.limit
        with open(self.part, "ab") as f:
            f.seek(have)
            f.truncate()
            done = have
            shown = -1
            while not self.stop.is_set():
                n = self.throttle.chunk()
                self.throttle.take(n)
                data = resp.read(n)
                if not data:
                    f.flush()
                    os.fsync(f.fileno())
                    return self.req.size is None or done == self.req.size
                done += len(data)
                if done > limit:
                    raise DownloadError(f"the server sent more than {limit} bytes")
                f.write(data)
                pct = done * 100 // self.req.size if self.req.size else -1
                if pct // 10 != shown // 10:
                    shown = pct
                    self.progress(done, self.req.size)
            f.flush()
            os.fsync(f.fileno())
        raise DownloadError("stopped")
