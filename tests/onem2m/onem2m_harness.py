"""The Mobius fixture as a platform sees it, and a stand-in uplink that drives a oneM2M
session with a real paho client (no daemon): what tests/onem2m/ is built on.

:class:`Mobius` runs ``../shared/vendor/mobius-fixture.sh DIR``
(../shared/reference/onem2m-mobius.md): MariaDB, mosquitto and Mobius with their state
under DIR, printing KEY=VALUE lines and then MOBIUS_READY=1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SHARED = Path(os.environ.get("CITYNODE_SHARED", ROOT.parent / "shared"))
FIXTURE = SHARED / "vendor" / "mobius-fixture.sh"


def missing() -> str | None:
    if not FIXTURE.is_file():
        return f"the Mobius fixture is not at {FIXTURE} (../shared absent; set CITYNODE_SHARED)"
    for tool, hint in (("node", "nodejs"), ("mariadbd", "mariadb-server"),
                       ("mariadb-install-db", "mariadb-server")):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (apt-get install {hint}; make test-onem2m does)"
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        return "mosquitto is not installed (make test-onem2m installs it when run as root)"
    return None


class Mobius:
    """One running fixture; :meth:`restart` keeps the ports (and, unless fresh, the data)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.dir = base / "d0"
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._generation = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, ports: dict[str, str] | None = None) -> None:
        env = dict(os.environ)
        env.update(ports or {})
        with open(self.base / f"fixture{self._generation}.log", "w") as log:
            self.proc = subprocess.Popen([str(FIXTURE), str(self.dir)], stdout=subprocess.PIPE,
                                         stderr=log, text=True, env=env,
                                         start_new_session=True)
        got: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            key, _, value = line.strip().partition("=")
            got[key] = value
            if key == "MOBIUS_READY":
                break
        if got.get("MOBIUS_READY") != "1":
            self.stop()
            tail = (self.base / f"fixture{self._generation}.log").read_text()[-2000:]
            pytest.fail(f"the Mobius fixture did not start:\n{tail}")
        self.env = got

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self, *, fresh: bool = False) -> None:
        """Stop all three servers and start them again on the same ports; ``fresh``: in a new
        directory, so the CSE has lost every resource (a reset with data loss)."""
        ports = {k: self.env[k] for k in ("MOBIUS_HTTP_PORT", "MOBIUS_MQTT_PORT",
                                          "MOBIUS_DB_PORT")}
        self.stop()
        self._generation += 1
        if fresh:
            self.dir = self.base / f"d{self._generation}"
        self.start(ports)

    def pids(self) -> list[int]:
        """Mobius's primary and its workers (to stop and continue them)."""
        primary = int(self.env["MOBIUS_PID"])
        out = subprocess.run(["pgrep", "-P", str(primary)], capture_output=True, text=True)
        return [primary] + [int(x) for x in out.stdout.split()]

    # -- what a platform sees -------------------------------------------------------------
    @property
    def mqtt_port(self) -> int:
        return int(self.env["MOBIUS_MQTT_PORT"])

    @property
    def cse_id(self) -> str:
        return self.env.get("MOBIUS_CSE_ID", "/Mobius2")

    @property
    def cse_name(self) -> str:
        return self.env.get("MOBIUS_CSE_BASE", "Mobius")

    def http(self, method: str, path: str, body: Any = None, *, ty: int | None = None,
             origin: str = "CPlatformTest") -> tuple[int, Any]:
        """(HTTP status, JSON body) of one oneM2M request over the HTTP binding (127.0.0.1).

        A worker that dies under the request (Mobius's upstream race,
        ../shared/reference/onem2m-mobius.md: that request was not executed) gets status 0;
        it is retried with a fresh request id, as a platform's client would."""
        for _ in range(3):
            status, answer = self._http_once(method, path, body, ty=ty, origin=origin)
            if status != 0:
                break
            time.sleep(0.6)  # the fixture forks a new worker within 0.5 s
        return status, answer

    def _http_once(self, method: str, path: str, body: Any = None, *, ty: int | None = None,
                   origin: str = "CPlatformTest") -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.env['MOBIUS_HTTP_PORT']}/{path.lstrip('/')}"
        headers = {"X-M2M-Origin": origin, "X-M2M-RI": f"t-{uuid.uuid4().hex[:12]}",
                   "Accept": "application/json", "X-M2M-RVI": "2a"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = f"application/json;ty={ty}" if ty else "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else None
            except ValueError:
                return exc.code, raw.decode(errors="replace")
        except OSError as exc:  # a worker that died under the request (upstream race)
            return 0, str(exc)

    def latest(self, path: str) -> dict[str, Any] | None:
        """The latest contentInstance's con of a container, or None."""
        status, body = self.http("GET", f"{path}/la")
        if status != 200 or not isinstance(body, dict):
            return None
        return body.get("m2m:cin", {}).get("con")

    def instances(self, path: str) -> list[Any]:
        """Every contentInstance's con of a container (oldest first)."""
        status, body = self.http("GET", f"{path}?rcn=4&ty=4&lim=10000")
        if status != 200 or not isinstance(body, dict):
            return []
        rsp = body.get("m2m:rsp", body)
        cins = rsp.get("m2m:cin", []) if isinstance(rsp, dict) else []
        cins = sorted(cins, key=lambda c: (c.get("ct", ""), c.get("ri", "")))
        return [c.get("con") for c in cins]

    def post_cin(self, path: str, con: Any, origin: str = "CPlatformTest") -> int:
        status, _ = self.http("POST", path, {"m2m:cin": {"con": con}}, ty=4, origin=origin)
        return status



def wait_for(check: Any, timeout: float, step: float = 0.1) -> Any:
    """``check()``'s first truthy value within ``timeout`` s, else its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = check()
    return value


# -- a stand-in uplink: the session driven by a real paho client -------------------------
def make_item(kind: str, records: list[Any], seq: int, *, session: int = 1,
              t: float | None = None, historical: bool = False) -> Any:
    """A spooled message as the uplink hands it to a session (SenML CBOR, as spooled)."""
    from agent.wire import formats
    from agent.wire.model import Pack
    from agent.wire.session import Item

    fmt = formats.get("senml-cbor")
    pack = Pack(time=time.time() if t is None else t, session=session, seq=seq,
                records=list(records), kind=kind)  # type: ignore[arg-type]
    enc = fmt.encode(pack)
    return Item(kind, f"citynode/test/{kind}", enc.payload, fmt.content_type, mark=enc.mark,
                historical=historical)  # type: ignore[arg-type]


class Harness:
    """What the uplink does with a session, on one thread: connect (MQTT 3.1.1, as Mobius
    speaks it), subscribe, say the opening, render spooled items while the session is ready,
    feed every inbound message to ``receive``, call ``poll``, publish what reactions say,
    say the opening again on ``reopen``, and on a lost connection call ``lost`` and render
    what was not confirmed again."""

    def __init__(self, session: Any, port: int) -> None:
        import queue

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.s = session
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.confirmed: set[str] = set()
        self.refused: dict[str, str] = {}
        self.commands: list[bytes] = []
        self.items: list[list[Any]] = []  # [item, tokens or None (to render), delivered]
        self.sent_at: dict[str, float] = {}  # token -> when its request was published
        self.confirmed_at: dict[str, float] = {}
        self.connects = 0
        self.reopens = 0
        self.connected = False
        session.will(None)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"A::{session.originator}",
                        protocol=MQTTProtocolVersion.MQTTv311)
        c.on_connect = lambda *a: self.inbox.put(("connect",))
        c.on_disconnect = lambda *a: self.inbox.put(("disconnect",))
        c.on_message = lambda cl, u, m: self.inbox.put(("message", m.topic, m.payload,
                                                        m.retain))
        c.reconnect_delay_set(0.2, 1.0)
        self.client = c
        c.connect_async("127.0.0.1", port, keepalive=20)
        c.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- the loop -----------------------------------------------------------------------
    def publish(self, outs: list[Any]) -> None:
        for out in outs:
            self.client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)

    def apply(self, reaction: Any) -> None:
        now = time.monotonic()
        for token in reaction.confirmed:
            self.confirmed.add(token)
            self.confirmed_at.setdefault(token, now)
        for token, why in reaction.refused:
            self.refused[token] = why
        self.commands += [c.data for c in reaction.commands]
        self.publish(reaction.send)
        if reaction.reopen:
            self.reopens += 1
            self.publish(self.s.opening())

    def turn(self, wait: float = 0.05) -> None:
        import queue

        try:
            event = self.inbox.get(timeout=wait)
        except queue.Empty:
            event = None
        if event is not None:
            if event[0] == "connect":
                self.connected = True
                self.connects += 1
                for topic in self.s.subscriptions():
                    self.client.subscribe(topic, qos=1)
                self.publish(self.s.opening())
            elif event[0] == "disconnect":
                if self.connected:
                    self.connected = False
                    self.s.lost()
                    self.s.will(None)
                    for entry in self.items:
                        if not entry[2]:
                            entry[1] = None
            else:
                _, topic, payload, retained = event
                self.apply(self.s.receive(topic, payload, retained=retained))
        self.apply(self.s.poll(time.monotonic()))
        self._render()

    def _render(self) -> None:
        if not (self.connected and self.s.ready()):
            return
        for entry in self.items:
            if entry[1] is None and not entry[2]:
                outs = self.s.render(entry[0])
                entry[1] = [o.token for o in outs if o.token]
                now = time.monotonic()
                for o in outs:
                    if o.token:
                        self.sent_at[o.token] = now
                self.publish(outs)
        for entry in self.items:
            if not entry[2] and entry[1] is not None and all(
                    t in self.confirmed or t in self.refused for t in entry[1]):
                entry[2] = True

    def run(self, until: Any, timeout: float) -> bool:
        """Turn until ``until()`` holds; False after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                return False
            self.turn()
        return True

    # -- what tests ask -------------------------------------------------------------------
    def registered(self, timeout: float = 20) -> bool:
        return self.run(self.s.ready, timeout)

    def deliver(self, items: list[Any], timeout: float = 30) -> bool:
        """Queue spooled items and turn until every one is delivered (or refused)."""
        start = len(self.items)
        self.items += [[item, None, False] for item in items]
        return self.run(lambda: all(e[2] for e in self.items[start:]), timeout)

    def pending(self) -> int:
        return sum(1 for e in self.items if not e[2])
