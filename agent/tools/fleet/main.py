"""The two ``citynode fleet`` commands: the view (live or once) and the staged send.

Exit codes (README.md's table): view 0 every node shown is fine, 1 a node needs
attention (offline, degraded, silent, update failed), 3 no node seen; send 0 every node
succeeded, 1 some failed but no ring passed the threshold, 2 a ring passed it and the
rollout stopped, 3 no online node matched; both 64 usage, 65 an unusable key file, 66 a
missing input, 69 the broker cannot be reached (or the connection is lost), 77 the
broker refuses the credentials, 78 an invalid configuration or TLS/credential file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from agent.tools.fleet import SEND_ONLY, VIEW_ONLY
from agent.tools.fleet.broker import (
    EX_DATAERR,
    EX_NOINPUT,
    EX_UNAVAILABLE,
    EX_USAGE,
    Connection,
    FleetError,
    settings,
)
from agent.tools.fleet.model import (
    DEFAULT_MAX_NODES,
    LEAVES,
    FleetModel,
    Row,
    clean,
    records_of,
    row_doc,
)
from agent.tools.fleet.rollout import DEFAULT_RINGS, Ring, plan

EX_ATTENTION, EX_HALTED, EX_NONE = 1, 2, 3
CONNECT_TIMEOUT_S = 10.0
#: Quiet time after which the retained states are taken to be all in (``send``).
DISCOVERY_QUIET_S = 0.5
#: Longest wait between reconnection attempts of the live view.
BACKOFF_MAX_S = 30.0


def main(args: Any) -> int:
    """Run ``citynode fleet``; every failure is one line on stderr and an exit code."""
    try:
        _check_options(args)
        return send(args) if args.action == "send" else view(args)
    except FleetError as exc:
        line = " ".join(str(exc).split())
        print(f"citynode fleet: {line}", file=sys.stderr)
        if args.json and exc.code != EX_USAGE:  # --json: one document whatever the outcome
            from agent.tools.machine import document, dumps

            name = "fleet send" if args.action == "send" else "fleet"
            sys.stdout.write(dumps(document(name, exc.code, line)))
        return exc.code


def _check_options(args: Any) -> None:
    wrong = SEND_ONLY if args.action == "view" else VIEW_ONLY
    given = [d for d in wrong if getattr(args, d, None) not in (None, False)]
    if given:
        flags = ", ".join("--" + d.replace("_", "-") for d in given)
        raise FleetError(EX_USAGE, f"{flags}: not an option of 'fleet {args.action}'")
    if args.action == "view" and args.wait is not None and not args.once:
        raise FleetError(EX_USAGE, "--wait needs --once (the live view runs until Ctrl-C)")
    if args.action == "send":
        if args.ring is not None and args.ring_size is not None:
            raise FleetError(EX_USAGE, "give --ring or --ring-size, not both")
        if not args.cmd:
            raise FleetError(EX_USAGE, "fleet send needs --cmd NAME (ping, update, ...)")
        if not args.nodes:
            raise FleetError(EX_USAGE, "fleet send needs --nodes GLOB: which nodes ('*' for "
                             "every online node)")
        if not args.key:
            raise FleetError(EX_USAGE, "fleet send needs --key FILE (the HMAC key commands "
                             "are signed with, or a directory of per-node keys)")
        if args.update_timeout is not None and not args.wait_update:
            raise FleetError(EX_USAGE, "--update-timeout needs --wait-update")
        if args.wait_update and args.cmd != "update":
            raise FleetError(EX_USAGE, "--wait-update is for --cmd update")


def _model(args: Any, prefix: str) -> FleetModel:
    return FleetModel(prefix, pattern=args.nodes or "*",
                      max_nodes=args.max_nodes or DEFAULT_MAX_NODES)


def _topics(prefix: str) -> list[str]:
    return [f"{prefix}/+/{leaf}" for leaf in LEAVES]


# -- the view --------------------------------------------------------------------------------
def view(args: Any) -> int:
    m = settings(args)
    model = _model(args, m.prefix)
    conn = Connection(m, lambda t, p, r: model.feed(t, p, retained=r, now=time.time()))
    conn.connect(CONNECT_TIMEOUT_S)
    try:
        conn.subscribe(_topics(m.prefix), CONNECT_TIMEOUT_S)
        if args.once:
            deadline = time.monotonic() + (args.wait if args.wait is not None else 5.0)
            while time.monotonic() < deadline:
                if not conn.loop(min(0.1, max(0.0, deadline - time.monotonic()))):
                    raise FleetError(EX_UNAVAILABLE, f"{m.host}:{m.port}: the connection "
                                     "was lost")
            code, text = _report(args, model, f"{m.host}:{m.port}", time.time())
            sys.stdout.write(text)
            return code
        return _live(args, model, conn, f"{m.host}:{m.port}")
    finally:
        conn.close()


def _verdict(rows: list[Row]) -> tuple[int, str]:
    if not rows:
        return EX_NONE, "no node seen"
    bad = [r for r in rows if not r.ok]
    online = sum(1 for r in rows if r.state.status == "online")
    kinds = {"offline": 0, "degraded": 0, "silent": 0, "update": 0}
    for r in bad:
        kinds["offline"] += r.state.status != "online"
        kinds["degraded"] += bool(r.state.degraded)
        kinds["silent"] += r.silent_s is not None
        kinds["update"] += any(p.startswith("update ") for p in r.problems)
    line = (f"{len(rows)} node{'s' if len(rows) != 1 else ''}: {online} online, "
            f"{len(rows) - online} offline or unknown, {kinds['degraded']} degraded, "
            f"{kinds['silent']} silent, {kinds['update']} failed updates")
    return (EX_ATTENTION if bad else 0), line


def _notes(model: FleetModel) -> list[str]:
    c = model.counters
    out = []
    if c.over_cap:
        out.append(f"tracking at most {model.max_nodes} nodes (--max-nodes): {c.over_cap} "
                   "messages from further nodes left out")
    if c.malformed:
        out.append(f"{c.malformed} messages that are not citynode packs were dropped")
    return out


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    return f"{s} s" if s < 120 else (f"{s // 60} min" if s < 7200 else f"{s // 3600} h")


def _table(rows: list[Row], now: float, limit: int | None = None) -> list[str]:
    head = ("NODE", "STATE", "VERSION", "SLOT", "UPDATE", "SPOOL", "HEARD", "PROBLEMS")
    shown = rows if limit is None else rows[:limit]
    cells = [head]
    for r in shown:
        st = r.state
        state = st.status + (f" ({st.reason})" if st.reason else "")
        heard = None if st.last_heard is None else now - st.last_heard
        cells.append((st.node, state, st.version or "-", st.slot or "-",
                      st.update or "-",
                      "-" if st.spool is None else str(st.spool), _age(heard),
                      "; ".join(r.problems) or "ok"))
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
           for row in cells]
    if limit is not None and len(rows) > limit:
        out.append(f"... and {len(rows) - limit} more: a taller terminal, --nodes or --problems "
                   "shows them, --once lists every one")
    return out


def _report(args: Any, model: FleetModel, broker: str, now: float) -> tuple[int, str]:
    silent = 3.0 if args.silent_after is None else args.silent_after
    every = model.rows(now, silent_after=silent, version=args.version or "*")
    code, line = _verdict(every)
    rows = [r for r in every if not r.ok] if args.problems else every
    if args.json:
        from agent.tools.machine import document, dumps

        return code, dumps(document(
            "fleet", code, line, broker=broker, prefix=model.prefix,
            pattern=model.pattern, version=args.version, silent_after=silent,
            max_nodes=model.max_nodes, notes=_notes(model),
            dropped={"malformed": model.counters.malformed,
                     "over_cap": model.counters.over_cap},
            nodes=[row_doc(r, now) for r in rows]))
    out = [f"citynode fleet {model.prefix}/{model.pattern} at {broker}: {line}"]
    if rows:
        out += ["", *_table(rows, now)]
    out += [f"note: {n}" for n in _notes(model)]
    return code, "\n".join(out) + "\n"


def _live(args: Any, model: FleetModel, conn: Connection, broker: str) -> int:
    """Until Ctrl-C: a table redrawn on a terminal, else one line (or JSON line) per
    change; the connection is made again (with backoff) when it is lost."""
    out: TextIO = sys.stdout
    tty = out.isatty() and not args.json
    refresh = args.refresh or 1.0
    silent = 3.0 if args.silent_after is None else args.silent_after
    seen: dict[str, tuple[Any, ...]] = {}
    code, lost_at, backoff = EX_NONE, None, 1.0
    next_draw = 0.0
    try:
        while True:
            now_m = time.monotonic()
            if conn.connected:
                conn.loop(min(0.1, max(0.0, next_draw - now_m)))
            elif lost_at is None or now_m >= lost_at + backoff:
                lost_at = _reconnect(conn, model.prefix, out, tty, lost_at)
                backoff = 1.0 if lost_at is None else min(BACKOFF_MAX_S, backoff * 2)
            else:
                time.sleep(0.1)
            if time.monotonic() < next_draw:
                continue
            next_draw = time.monotonic() + refresh
            now = time.time()
            rows = model.rows(now, silent_after=silent, version=args.version or "*")
            code, line = _verdict(rows)
            state = "" if conn.connected else " (broker connection lost: reconnecting)"
            if tty:
                shown = [r for r in rows if not r.ok] if args.problems else rows
                height = shutil.get_terminal_size((100, 40)).lines - 6
                text = [f"citynode fleet {model.prefix}/{model.pattern} at {broker}: {line}"
                        f"{state}  {time.strftime('%H:%M:%S')}", ""]
                text += _table(shown, now, limit=max(1, height))
                text += [f"note: {n}" for n in _notes(model)]
                out.write("\033[H\033[2J" + "\n".join(text) + "\n")
            else:
                _changes(rows, seen, now, out, json_lines=args.json,
                         problems_only=args.problems)
            out.flush()
    except KeyboardInterrupt:
        return code


def _reconnect(conn: Connection, prefix: str, out: TextIO, tty: bool,
               lost_at: float | None) -> float | None:
    """One attempt; None when connected again, else when it was tried."""
    try:
        conn.connect(CONNECT_TIMEOUT_S)
        conn.subscribe(_topics(prefix), CONNECT_TIMEOUT_S)
    except FleetError as exc:
        if not tty and lost_at is None:
            out.write(f"{time.strftime('%H:%M:%S')} broker: {exc}; retrying\n")
        return time.monotonic()
    if not tty:
        out.write(f"{time.strftime('%H:%M:%S')} broker: connected again\n")
    return None


def _changes(rows: list[Row], seen: dict[str, tuple[Any, ...]], now: float, out: TextIO, *,
             json_lines: bool, problems_only: bool) -> None:
    """A line for every node whose state, version, update or problems changed."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    for r in rows:
        st = r.state
        problems = tuple(p if not p.startswith("silent ") else "silent" for p in r.problems)
        key = (st.status, st.reason, st.version, st.slot, st.update, st.update_phase,
               problems)
        if seen.get(st.node) == key:
            continue
        first = st.node not in seen
        seen[st.node] = key
        if problems_only and r.ok and first:
            continue
        if json_lines:
            out.write(json.dumps({"at": round(now, 3), **row_doc(r, now)},
                                 ensure_ascii=False, allow_nan=False) + "\n")
            continue
        state = st.status + (f" ({st.reason})" if st.reason else "")
        extra = "".join(f", {k} {v}" for k, v in (("version", st.version), ("slot", st.slot),
                                                   ("update", st.update))
                        if v)
        more = "; ".join(p for p in r.problems if not p.startswith(("offline", "no state")))
        tail = f": {more}" if more else (": ok" if r.ok else "")
        out.write(f"{stamp} {st.node}: {state}{extra}{tail}\n")


# -- the staged send --------------------------------------------------------------------------
class _Keys:
    """The signing key for a node: one file for all, or DIR/<node>.key each."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.per_node = os.path.isdir(path)
        self._cache: dict[str, bytes | str] = {}
        if not self.per_node:
            key = self._load(path)
            if isinstance(key, str):
                code = EX_NOINPUT if not os.path.lexists(path) else EX_DATAERR
                raise FleetError(code, f"--key {key}")
            self._one = key

    @staticmethod
    def _load(path: str) -> bytes | str:
        from agent.core.commands import KeyFileError, load_hmac_key
        from agent.wire.security import SecurityError

        if not os.path.lexists(path):
            return f"{path}: no such file"
        try:
            return load_hmac_key(path)
        except (SecurityError, KeyFileError, OSError, ValueError) as exc:
            return clean(" ".join(str(exc).split()), 300)

    def get(self, node: str) -> bytes | str:
        """The key, or why there is none (a per-node file missing or unusable)."""
        if not self.per_node:
            return self._one
        if node not in self._cache:
            self._cache[node] = self._load(os.path.join(self.path, f"{node}.key"))
        return self._cache[node]


def send(args: Any) -> int:
    from agent.core.commands import COMMANDS, sign_command

    if args.cmd not in COMMANDS:
        raise FleetError(EX_USAGE, f"--cmd {clean(args.cmd, 40)!r}: not a command this "
                         f"citynode knows ({', '.join(COMMANDS)})")
    keys = _Keys(args.key)
    m = settings(args)
    model = _model(args, m.prefix)
    sizes = args.ring or ((args.ring_size,) if args.ring_size else DEFAULT_RINGS)
    threshold = 0.1 if args.max_failure_rate is None else args.max_failure_rate
    cmd_args = args.args or {}
    target = cmd_args.get("version") if isinstance(cmd_args.get("version"), str) else ""
    ring: Ring | None = None
    mids: dict[int, str] = {}

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        got = model.feed(topic, payload, retained=retained, now=time.time())
        if got is None or ring is None or got[2] is None:
            return
        node, leaf, pack = got
        if leaf == "result":
            ring.result(node, records_of(pack.records), time.monotonic())
        elif leaf == "event":
            ring.event(node, records_of(pack.records), time.monotonic(),
                       historical=bool(getattr(pack, "historical", False)))

    def on_publish(mid: int, ok: bool, reason: str) -> None:
        node = mids.pop(mid, None)
        if node is not None and not ok and ring is not None:
            ring.fail(node, "refused", f"the broker refused the command: {reason}",
                      time.monotonic())

    conn = Connection(m, on_message, on_publish=on_publish, tool="fleet-send")
    conn.connect(CONNECT_TIMEOUT_S)
    report = _SendReport(args, m.prefix, threshold)
    try:
        conn.subscribe([f"{m.prefix}/+/{leaf}" for leaf in ("state", "result", "event")],
                       CONNECT_TIMEOUT_S)
        _discover(conn, model, args.discover or 3.0)
        version = args.version or "*"
        chosen, skipped = [], []
        for row in model.rows(time.time(), silent_after=0, version=version):
            (chosen if row.state.status == "online" else skipped).append(row.state)
        chosen.sort(key=lambda s: s.node)
        report.skipped = [(s.node, s.status + (f" ({s.reason})" if s.reason else ""))
                          for s in sorted(skipped, key=lambda s: s.node)]
        rings = plan([s.node for s in chosen], sizes)
        report.planned = rings
        run = os.urandom(4).hex()
        serial = 0
        for index, nodes in enumerate(rings, 1):
            ring = Ring(index, nodes, timeout_s=args.timeout or 30.0,
                        wait_update=args.wait_update, update_timeout_s=args.update_timeout
                        or 1800.0, target_version=target)
            for node in nodes:
                serial += 1
                key = keys.get(node)
                now = time.monotonic()
                if isinstance(key, str):
                    ring.fail(node, "nokey", f"no key to sign with: {key}", now)
                    continue
                command = sign_command({"id": f"fleet-{run}-{serial}", "cmd": args.cmd,
                                        "args": cmd_args}, key)
                payload = json.dumps(command, separators=(",", ":"), ensure_ascii=False)
                mid = conn.publish(f"{m.prefix}/{node}/command", payload.encode("utf-8"))
                if mid is None:
                    ring.fail(node, "refused", "not sent: the connection to the broker is "
                              "lost", now)
                    continue
                mids[mid] = node
                ring.sent(node, command["id"], now)
            _await(conn, ring)
            report.ring_done(ring)
            if ring.failure_rate > threshold:
                report.halted = ring
                break
        return report.finish()
    except KeyboardInterrupt:
        report.interrupted = True
        if ring is not None and ring.index > len(report.rings):
            report.rings.append(ring)
        report.finish()
        return 130
    finally:
        conn.close()


def _discover(conn: Connection, model: FleetModel, limit_s: float) -> None:
    """Collect retained states until none came for a moment (or ``limit_s`` passed)."""
    start = time.monotonic()
    last_count, quiet_since = -1, start
    while time.monotonic() - start < limit_s:
        if not conn.loop(0.05):
            raise FleetError(EX_UNAVAILABLE, "the connection to the broker was lost")
        count = model.counters.messages
        if count != last_count:
            last_count, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= DISCOVERY_QUIET_S:
            return


def _await(conn: Connection, ring: Ring) -> None:
    """Run the connection until every node of the ring has an outcome (results, events,
    time-outs); a lost connection is made again while the ring's time lasts."""
    while True:
        now = time.monotonic()
        ring.tick(now)
        if ring.done:
            return
        if conn.connected:
            conn.loop(0.1)
            continue
        if now > ring.deadline():
            continue  # tick() times the rest out
        try:
            conn.connect(CONNECT_TIMEOUT_S)
            conn.subscribe([f"{conn.m.prefix}/+/{leaf}" for leaf in ("state", "result",
                                                                      "event")],
                           CONNECT_TIMEOUT_S)
        except FleetError:
            time.sleep(1.0)


class _SendReport:
    """What ``fleet send`` prints: each ring as it ends (text), or one JSON document."""

    def __init__(self, args: Any, prefix: str, threshold: float) -> None:
        self.args = args
        self.prefix = prefix
        self.threshold = threshold
        self.rings: list[Ring] = []
        self.planned: list[list[str]] = []
        self.skipped: list[tuple[str, str]] = []
        self.halted: Ring | None = None
        self.interrupted = False
        self.write: Callable[[str], Any] = sys.stdout.write

    def ring_done(self, ring: Ring) -> None:
        self.rings.append(ring)
        if self.args.json:
            return
        n = len(ring.outcomes)
        line = (f"ring {ring.index} of {len(self.planned)}: {n} node{'s' if n != 1 else ''}, "
                f"{n - ring.failures} ok, {ring.failures} failed "
                f"({100 * ring.failure_rate:.0f} %)")
        if ring.failure_rate > self.threshold:
            line += f": over --max-failure-rate {self.threshold:g}, stopping"
        out = [line]
        width = max(len(o.node) for o in ring.outcomes.values())
        for o in ring.outcomes.values():
            took = "" if o.sent_at is None or o.done_at is None \
                else f"{o.done_at - o.sent_at:.2f} s"
            data = " ".join(f"{k}={v}" for k, v in o.data.items())
            out.append(f"  {o.node.ljust(width)}  {o.state:<8} {took:>9}  "
                       f"{o.detail or data}".rstrip())
        self.write("\n".join(out) + "\n")
        sys.stdout.flush()

    def finish(self) -> int:
        sent = {n for r in self.rings for n in r.outcomes}
        unsent = [n for ring in self.planned for n in ring if n not in sent]
        failed = sum(r.failures for r in self.rings)
        total = sum(len(r.outcomes) for r in self.rings)
        if self.interrupted:
            code, line = 130, f"interrupted: {total - failed} ok, {failed} failed, " \
                              f"{len(unsent)} not sent"
        elif not self.planned:
            code, line = EX_NONE, "no online node matched: nothing sent"
        elif self.halted is not None:
            code = EX_HALTED
            line = (f"stopped after ring {self.halted.index} of {len(self.planned)}: "
                    f"{100 * self.halted.failure_rate:.0f} % failed, over "
                    f"--max-failure-rate {self.threshold:g}; "
                    f"{total - failed} ok, {failed} failed, {len(unsent)} not sent")
        else:
            code = EX_ATTENTION if failed else 0
            line = (f"{len(self.rings)} ring{'s' if len(self.rings) != 1 else ''}: "
                    f"{total - failed} ok, {failed} failed")
        if self.args.json:
            from agent.tools.machine import document, dumps

            self.write(dumps(document(
                "fleet send", code, line, cmd=self.args.cmd, prefix=self.prefix,
                max_failure_rate=self.threshold,
                rings=[r.doc(self.threshold) for r in self.rings],
                not_sent=unsent, skipped=[{"node": n, "state": s} for n, s in self.skipped])))
            return code
        out = []
        if unsent:
            out.append(f"not sent: {_names(unsent)}")
        if self.skipped:
            out.append("skipped (not online): " + _names([f"{n} {s}" for n, s in self.skipped]))
        out.append(line)
        self.write("\n".join(out) + "\n")
        return code


def _names(items: list[str], shown: int = 20) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more + f" ({len(items)})"
