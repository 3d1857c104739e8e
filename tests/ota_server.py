"""A bundle server for the update tests, run INSIDE the nspawn container (stdlib only).

The container has no network (``--private-network``), so the tests serve their bundles
from 127.0.0.1 inside it, over TLS with a test CA made on the host (tests/update_rig.py).
What a field server does and the node must cope with: ``Range: bytes=N-`` (a download
resumed from a partial file, answered 206), a bandwidth limit (``--rate``, bytes a second,
so a test can kill the node mid-transfer), and a server that dies mid-transfer
(``--die-after``: the process exits after sending that many bytes of a body, once).
Each request is logged as JSON lines (``--log``), one when its body begins and one when it
ends (none when the server is stopped midway), so a test can read which ranges were asked
for and how many bytes went out.

    python3 ota_server.py --root DIR --cert CERT --key KEY --port 8443 --log requests.jsonl
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import ssl
import threading
import time
from pathlib import Path

CHUNK = 16384
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Handler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files under the root; single ranges only."""

    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:
        """Quiet: the JSON log is the record."""

    def _entry(self, **fields: object) -> None:
        fields.update(t=round(time.time(), 3), method=self.command, path=self.path,
                      range=self.headers.get("Range"))
        with self.server.log_lock, open(self.server.log, "a") as fh:
            fh.write(json.dumps(fields) + "\n")

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        name = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.root / name).resolve()
        if self.server.root not in path.parents or not path.is_file():
            self.send_error(404)
            self._entry(status=404, sent=0)
            return
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        want = self.headers.get("Range")
        if want:
            m = RANGE.match(want.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._entry(status=416, sent=0)
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self._entry(status=status, phase="begin", start=start, size=size)
        sent = 0
        if body:
            sent = self._body(path, start, end - start + 1)
        self._entry(status=status, phase="end", sent=sent, start=start, size=size)

    def _body(self, path: Path, start: int, length: int) -> int:
        """Send ``length`` bytes from ``start``, at most ``rate`` a second; bytes sent."""
        rate, sent, t0 = self.server.rate, 0, time.monotonic()
        with path.open("rb") as fh:
            fh.seek(start)
            while sent < length:
                block = fh.read(min(CHUNK, length - sent))
                if not block:
                    break
                die = self.server.die_after
                if die is not None and self.server.total + len(block) >= die:
                    self._entry(status="died", sent=sent, start=start)
                    os._exit(0)  # mid-transfer, as a server that loses power
                try:
                    self.wfile.write(block)
                except OSError:  # the client went away (a killed node)
                    break
                sent += len(block)
                self.server.total += len(block)
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        return sent


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(("127.0.0.1", args.port), Handler)
        self.root = Path(args.root).resolve()
        self.log = args.log
        self.log_lock = threading.Lock()
        self.rate = args.rate
        self.die_after = args.die_after
        self.total = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--log", required=True)
    p.add_argument("--rate", type=int, default=0, help="bytes a second (0: no limit)")
    p.add_argument("--die-after", type=int, default=None, help="exit after this many bytes")
    args = p.parse_args()
    Server(args).serve_forever()


if __name__ == "__main__":
    main()
