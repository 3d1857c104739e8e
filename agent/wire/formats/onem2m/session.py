"""The ADN-AE's conversation with its CSE over MQTT (see the package docstring), no I/O.

Every request gets a fresh ``rqi`` (Mobius answers a repeated op+to+rqi from a cache for
20-30 s without executing it), retries included. A request waits ``request_timeout_s``
for its response (time only from :meth:`Onem2mSession.poll`); then it is sent again with
a new ``rqi`` after 1, 2, 4 ... s, up to ``backoff_max_s``, for as long as it takes: a
message the node accepted is never dropped for a silent server, but one past
``max_retries`` shows in :meth:`status` as overdue. Each contentInstance is named after
its message (:func:`instance_name`), so a retry whose first attempt was stored after all
is refused with 4105: the CSE keeps every message once per container, whatever the
retries. A contentInstance sent again says ``"historical": true``: it is late, whether
the broker stayed up through the platform's outage or not.

Response status codes (TS-0004 clause 6.6.3): 2000/2001/2002/2004 (and 1xxx, accepted)
deliver, and so does 4105 on a contentInstance (stored before); on the opening's
creates 4105 (and 4106 for the AE) mean "already there". 4004
(or 4106) on a contentInstance means the CSE lost our resources (a reset): the request
waits, the opening runs again (``Reaction.reopen``) and then it is sent anew. 4008 and
5xxx are the server's trouble: retried with backoff. Any other code is permanent: the
message is refused (the uplink counts, drops and logs it).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.wire.formats.onem2m import Options
from agent.wire.formats.onem2m import content as ct
from agent.wire.formats.onem2m import primitives as p
from agent.wire.model import Pack
from agent.wire.session import Command, Context, Item, Out, Reaction

log = logging.getLogger("citynode.uplink")

CONTENT_INFO = "application/json:0"  # TS-0001 contentInfo: JSON, no transfer encoding
_EPOCH = re.compile(r"[0-9a-f]{6,16}")
SEEN_NOTIFICATIONS = 256  # contentInstance IDs remembered to drop a notification sent twice
SUBSCRIPTION = "citynode"  # the subscription's resource name on the commands container


@dataclass(slots=True)
class _Request:
    """One logical request; its ``rqi`` changes at every attempt."""

    op: int
    to: str
    ty: int | None
    pc: Any
    step: int | None = None  # its place in the opening, None for a contentInstance
    token: str | None = None  # the spooled message's delivery token
    rqi: str = ""
    attempts: int = 0  # sends so far
    timeouts: int = 0
    deadline: float | None = None  # set by the first poll after sending
    resend_at: float | None = None  # waiting to be sent again
    errors: list[str] = field(default_factory=list)


def load_epoch(state_dir: Path, uplink: str) -> str:
    """A random name for this node's state, kept in ``state_dir`` (made on first use): it
    makes contentInstance names unique to this node's life, so a node whose state (and so
    its boot session count) was wiped never takes a new message for one already stored.
    Without a writable state directory it lives as long as the process."""
    path = Path(state_dir) / f"onem2m-{uplink}.epoch"
    try:
        text = path.read_text().strip()
        if _EPOCH.fullmatch(text):
            return text
    except (OSError, UnicodeDecodeError):
        pass
    epoch = secrets.token_hex(4)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(epoch + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass
    return epoch


def instance_name(pack: Pack, epoch: str) -> str:
    """A message's contentInstance name in every container it goes to:
    ``<time in ms, 13 digits>-<session>-<seq, 10 digits>-<epoch>``.

    Named after the message, a second create of it (a retry whose first answer was lost,
    a message sent again after a reconnect) is refused by the CSE with 4105 instead of
    stored twice. Time first, fixed width: Mobius's ``la`` (latest) is the contentInstance
    with the greatest name (its own names, ``4-<yyyyMMddHHmmssSSS>``, sort by time too),
    and so stays the newest reading, also while history drains after an outage."""
    ms = min(max(round(pack.time * 1000), 0), 10**13 - 1) if math.isfinite(pack.time) else 0
    seq = f"{pack.seq:010d}" if pack.seq is not None else "x"
    return f"{ms:013d}-{pack.session}-{seq}-{epoch}"


class Onem2mSession:
    """One uplink to a oneM2M CSE (Mobius)."""

    def __init__(self, ctx: Context, *, epoch: str | None = None,
                 rqi_prefix: str | None = None) -> None:
        self.ctx = ctx
        self.opts: Options = ctx.options if isinstance(ctx.options, Options) else Options()
        self.ae = self.opts.ae or ctx.node
        self.originator = self.opts.originator or f"S{self.ae}"
        self.topics = p.Topics(self.originator, self.opts.cse_id)
        self.base = f"{self.opts.cse_name}/{self.ae}"  # CSE-relative (TS-0004 6.2.4)
        self.poa = self.opts.poa or self._poa_for(ctx.host, ctx.port)
        #: The poa the CSE holds as far as this process knows (None: not known yet; an AE
        #: that existed before may hold another broker's, after a failover).
        self._registered_poa: str | None = None
        self.renderer = ct.Renderer(ct.sensors_of(ctx.sensors, ctx.sensor_info))
        self._steps = self._opening_steps()
        # A random part keeps rqis unique across restarts (Mobius caches them 20-30 s).
        self._prefix = rqi_prefix if rqi_prefix is not None else secrets.token_hex(3)
        self.epoch = epoch if epoch is not None else secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._pending: dict[str, _Request] = {}  # by rqi: sent, awaiting a response
        self._waiting: list[_Request] = []  # to send again at resend_at
        self._suspended: list[_Request] = []  # contentInstances held until the opening ends
        self._step: int | None = None  # the opening step in flight; None: not opening
        self._ready = False
        self._connected = False
        self._now: float | None = None
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.counts: collections.Counter[str] = collections.Counter()
        self.last_error = ""

    # -- what the CSE must hold -----------------------------------------------------
    def _poa_for(self, host: str, port: int) -> str:
        """mqtt://<broker>:<port>/<AE-ID>. Mobius reads the path as the topic level it
        notifies the AE on (/oneM2M/req/<CSE>/<path>/json); TS-0010 clause 6.6 would read
        it as a topic prefix: for another CSE set ``poa`` without a path."""
        host = host or "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"mqtt://{host}:{port}/{self.originator}"

    def connected_to(self, host: str, port: int) -> None:
        """The uplink is on this broker now (a failover, or back on the primary): the
        AE's point of access names it, so the CSE's notifications (commands) reach the
        node through a broker that is up. A configured ``poa`` is left alone."""
        if self.opts.poa:
            return
        poa = self._poa_for(host, port)
        if poa != self.poa:
            self.poa = poa
            self._steps = self._opening_steps()

    def _opening_steps(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(target, resource type, content) of each create, in order (TS-0004 7.4.5-7.4.8)."""
        steps: list[tuple[str, int, dict[str, Any]]] = [(self.opts.cse_name, p.AE, {"m2m:ae": {
            "rn": self.ae, "api": self.opts.app_id, "rr": True, "poa": [self.poa],
            "srv": [p.RELEASE]}})]
        for s in self.renderer.sensors:
            steps.append((self.base, p.CONTAINER, {"m2m:cnt": {
                "rn": s.container, "mni": self.opts.mni, "lbl": [f"sensor:{s.name}",
                                                                  f"type:{s.type}"]}}))
        fixed = [ct.NODE, ct.HEALTH, ct.EVENTS, ct.STATE, ct.RESULTS]
        if self.ctx.commands:
            fixed.append(ct.COMMANDS)
        steps += [(self.base, p.CONTAINER, {"m2m:cnt": {"rn": name, "mni": self.opts.mni}})
                  for name in fixed]
        if self.ctx.commands:
            # nu: the AE-ID, so the CSE notifies through the AE's poa (TS-0004 7.4.8.2.1);
            # net 3: a contentInstance was created; nct 1: with all its attributes.
            steps.append((f"{self.base}/{ct.COMMANDS}", p.SUBSCRIPTION, {"m2m:sub": {
                "rn": SUBSCRIPTION, "nu": [self.originator],
                "enc": {"net": [p.CREATE_OF_DIRECT_CHILD]}, "nct": p.ALL_ATTRIBUTES}}))
        return steps

    # -- Session --------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return [self.topics.response, self.topics.notification]

    def will(self, offline: Any) -> Out | None:
        """None: the MQTT binding has no will (TS-0010 clause 6.3.3: a client shall not set
        the Will Flag; clause 5.1 lists wills among the MQTT features it does not use), and
        the CSE would not read one. Whether the node is up is the ``state`` container's
        newest contentInstance: the birth of each connection, or the goodbye of a clean
        stop; a node lost without one shows as reports that stopped after an "online"."""
        self._connected = False
        return None

    def opening(self) -> list[Out]:
        """The AE's create; the other creates follow, each after the one before it."""
        self._connected = True
        self._ready = False
        self._forget_opening()
        return self._start_opening()

    def ready(self) -> bool:
        return self._ready

    def render(self, item: Item) -> list[Out]:
        try:
            pack = item.pack()
        except ValueError:  # PayloadError: a row no pack format reads can never go out
            self.counts["undecodable"] += 1
            return []
        outs = []
        name = instance_name(pack, self.epoch)
        for container, con in self.renderer.render(item.kind, pack):
            token = f"{self._prefix}-t{next(self._ids)}"
            req = _Request(p.CREATE, f"{self.base}/{container}", p.CONTENT_INSTANCE,
                           {"m2m:cin": {"rn": name, "cnf": CONTENT_INFO, "con": con}},
                           token=token)
            # Sent even while not ready: a 4004 holds it until the opening is done.
            out = self._send(req)
            out.token = token
            outs.append(out)
        return outs

    def receive(self, topic: str, payload: bytes, *, retained: bool = False,
                correlation: bytes | None = None, response_topic: str | None = None
                ) -> Reaction:
        """Never raises: whatever cannot be read is counted and ignored."""
        try:
            if retained:  # TS-0010 clause 5.1: the binding uses no retained messages
                self.counts["ignored_retained"] += 1
                return Reaction()
            if topic == self.topics.response:
                return self._on_response(payload)
            if topic == self.topics.notification:
                return self._on_request(payload)
            self.counts["ignored_topic"] += 1
        except Exception as exc:  # the uplink's thread must survive anything
            self.counts["errors"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        return Reaction()

    def poll(self, now: float) -> Reaction:
        self._now = now
        reaction = Reaction()
        if not self._connected:
            return reaction
        for rqi, req in list(self._pending.items()):
            if req.deadline is None:
                req.deadline = now + self.opts.request_timeout_s
            elif now >= req.deadline:
                del self._pending[rqi]
                req.timeouts += 1
                self.counts["timeouts"] += 1
                self._later(req, now, "no response")
        due = [r for r in self._waiting if r.resend_at is not None and now >= r.resend_at]
        for req in due:
            self._waiting.remove(req)
            if req.step is not None and req.step != self._step:
                continue  # an opening step of an opening that was started again
            if req.token is not None and not self._ready:
                self._suspended.append(req)
                continue
            reaction.send.append(self._send(req))
        return reaction

    def lost(self) -> None:
        """Forget every outstanding request: the uplink renders their messages again."""
        self._connected = False
        self._ready = False
        self._forget_opening()
        self._pending.clear()
        self._waiting.clear()
        self._suspended.clear()

    def status(self) -> dict[str, Any]:
        overdue = sum(1 for r in self._all() if r.timeouts > self.opts.max_retries)
        out: dict[str, Any] = {
            "registered": self._ready, "ae": f"{self.base}", "originator": self.originator,
            "outstanding": len(self._pending) + len(self._waiting) + len(self._suspended),
            "overdue": overdue,
        }
        if self._step is not None:
            out["opening_step"] = f"{self._step + 1}/{len(self._steps)}"
        out.update({k: v for k, v in sorted(self.counts.items()) if v})
        if self.last_error:
            out["last_error"] = self.last_error
        return out

    # -- requests -----------------------------------------------------------------------
    def _all(self) -> list[_Request]:
        return list(self._pending.values()) + self._waiting + self._suspended

    def _send(self, req: _Request) -> Out:
        """The request with a fresh rqi, now pending. A contentInstance sent again (the CSE
        did not answer, failed, or had lost the node's resources) waited through an outage
        of the platform, though the broker may have stayed up: its con says historical."""
        if req.token is not None and req.attempts:
            con = req.pc["m2m:cin"]["con"]  # render built it for this request alone
            if not con["historical"]:
                con["historical"] = True
                self.counts["historical"] += 1
        req.rqi = f"{self._prefix}-{next(self._ids)}"
        req.attempts += 1
        req.deadline = None
        req.resend_at = None
        self._pending[req.rqi] = req
        self.counts["requests"] += 1
        if req.attempts > 1:
            self.counts["retries"] += 1
        return Out(self.topics.request,
                   p.request(req.op, req.to, self.originator, req.rqi, ty=req.ty, pc=req.pc),
                   qos=1, content_type="application/json")

    def _later(self, req: _Request, now: float | None, why: str) -> None:
        """Send again after 1, 2, 4 ... s (at most backoff_max_s) with a new rqi."""
        delay = min(self.opts.backoff_max_s, 2.0 ** min(max(req.attempts - 1, 0), 16))
        req.resend_at = (now if now is not None else (self._now or 0.0)) + delay
        req.errors = [*req.errors, why][-3:]
        self._waiting.append(req)

    # -- the opening --------------------------------------------------------------------
    def _forget_opening(self) -> None:
        self._step = None
        for rqi in [r for r, q in self._pending.items() if q.step is not None]:
            del self._pending[rqi]
        self._waiting = [r for r in self._waiting if r.step is None]

    def _start_opening(self) -> list[Out]:
        self._step = 0
        self.counts["openings"] += 1
        return [self._send(self._step_request(0))]

    def _step_request(self, step: int) -> _Request:
        to, ty, pc = self._steps[step]
        return _Request(p.CREATE, to, ty, pc, step=step)

    def _on_opening(self, req: _Request, res: p.Response) -> Reaction:
        reaction = Reaction()
        if req.step != self._step:
            return reaction  # an answer to an opening given up
        if req.op == p.UPDATE:  # the AE's poa: a refusal leaves the old one, not fatal
            if res.rsc in (p.UPDATED, p.OK):
                self._registered_poa = req.pc["m2m:ae"]["poa"][0]
            else:
                self.counts["poa_refused"] += 1
                log.warning("oneM2M uplink %s: the CSE refused the AE's new point of access "
                            "(rsc %d %s); notifications may go to the broker it names",
                            self.ctx.uplink, res.rsc, res.debug,
                            extra={"EVENT": "onem2m_poa_refused", "UPLINK": self.ctx.uplink})
                self._registered_poa = self.poa  # asked once per broker, not per connection
            return self._next_step()
        exists = res.rsc == p.CONFLICT or (req.ty == p.AE and res.rsc == p.NOT_REGISTERED)
        if req.ty == p.AE and res.rsc == p.CREATED:
            self._registered_poa = self.poa
        if req.ty == p.AE and exists and self._registered_poa != self.poa:
            # Registered before (another process, or another broker): say where it is now.
            update = _Request(p.UPDATE, self.base, None, {"m2m:ae": {"poa": [self.poa]}},
                              step=req.step)
            return Reaction(send=[self._send(update)])
        if res.rsc in (p.CREATED, p.OK) or exists:
            return self._next_step()
        return self._opening_failed(req, res)

    def _next_step(self) -> Reaction:
        """The opening's step done: the next one, or ready (and what waited goes)."""
        assert self._step is not None
        self._step += 1
        if self._step < len(self._steps):
            return Reaction(send=[self._send(self._step_request(self._step))])
        self._step = None
        self._ready = True
        self.counts["registrations"] += 1
        reaction = Reaction(send=[self._send(held) for held in self._suspended])
        self._suspended.clear()
        return reaction

    def _opening_failed(self, req: _Request, res: p.Response) -> Reaction:
        """An opening step refused or failed: try it again later (from the AE when the
        AE itself is gone)."""
        reaction = Reaction()
        what = f"opening step {req.step + 1 if req.step is not None else 0} ({req.to}, ty " \
               f"{req.ty}): rsc {res.rsc} {res.debug}".strip()
        if what != self.last_error:  # one line per new trouble, not one per attempt
            log.warning("oneM2M uplink %s: registration %s; trying again", self.ctx.uplink,
                        what, extra={"EVENT": "onem2m_opening_error", "UPLINK": self.ctx.uplink})
        self.last_error = what
        self.counts["opening_errors"] += 1
        if res.rsc == p.NOT_FOUND and req.ty != p.AE:
            # The AE vanished under us (a reset during the opening): from the AE again.
            self._step = 0
            req = self._step_request(0)
            req.attempts = self.counts["opening_errors"]
        self._later(req, self._now, what)
        return reaction

    # -- inbound ------------------------------------------------------------------------
    def _on_response(self, payload: bytes) -> Reaction:
        res = p.parse_response(payload)
        if res is None:
            self.counts["malformed"] += 1
            return Reaction()
        req = self._pending.pop(res.rqi, None)
        if req is None:
            self.counts["unmatched"] += 1  # a late answer to a request sent again
            return Reaction()
        if req.step is not None:
            return self._on_opening(req, res)
        return self._on_content(req, res)

    def _on_content(self, req: _Request, res: p.Response) -> Reaction:
        assert req.token is not None
        rsc = res.rsc
        if 1000 <= rsc < 3000:
            self.counts["delivered"] += 1
            return Reaction(confirmed=[req.token])
        if rsc == p.CONFLICT:  # stored already under its name: an earlier attempt made it
            self.counts["delivered_before"] += 1
            return Reaction(confirmed=[req.token])
        if rsc in (p.NOT_FOUND, p.NOT_REGISTERED):
            # The CSE lost the AE or a container: hold this, register again, then resend.
            self._suspended.append(req)
            if self._ready:
                self._ready = False
                self.counts["reopens"] += 1
                self.last_error = f"rsc {rsc} on {req.to}: registering again"
                log.warning("oneM2M uplink %s: the CSE lost the node's resources (rsc %d on %s):"
                            " registering again", self.ctx.uplink, rsc, req.to,
                            extra={"EVENT": "onem2m_reopen", "UPLINK": self.ctx.uplink})
                return Reaction(reopen=True)
            return Reaction()
        if rsc == p.REQUEST_TIMEOUT or 5000 <= rsc < 6000:
            self.counts["server_errors"] += 1
            self.last_error = f"rsc {rsc} on {req.to}: {res.debug}".strip()
            self._later(req, self._now, f"rsc {rsc}")
            return Reaction()
        self.counts["cse_refused"] += 1
        why = f"oneM2M rsc {rsc} on {req.to}" + (f": {res.debug}" if res.debug else "")
        self.last_error = why
        return Reaction(refused=[(req.token, why)])

    def _on_request(self, payload: bytes) -> Reaction:
        """A request from the CSE: a notification is answered at once (Mobius deletes a
        subscription whose notifications go unanswered); a new contentInstance in
        ``commands`` is a command for the node."""
        req = p.parse_request(payload)
        if req is None:
            self.counts["malformed"] += 1
            return Reaction()
        to = req.fr if 0 < len(req.fr) <= 256 else self.opts.cse_id  # whom we answer
        if req.op != p.NOTIFY:
            self.counts["ignored_requests"] += 1
            return Reaction(send=[self._answer(p.OPERATION_NOT_ALLOWED, req.rqi, to)])
        note = p.parse_notification(req.pc)
        if note is None:
            self.counts["malformed"] += 1
            return Reaction(send=[self._answer(p.BAD_REQUEST, req.rqi, to)])
        reaction = Reaction(send=[self._answer(p.OK, req.rqi, to)])
        self.counts[f"notifications_{note.kind}"] += 1
        if note.kind == "deleted" and self._ready:
            self._ready = False  # the subscription is gone: the opening makes it again
            self.counts["reopens"] += 1
            reaction.reopen = True
        if note.kind != "content":
            return reaction
        if note.ri:
            if note.ri in self._seen:
                self.counts["duplicates"] += 1
                return reaction
            self._seen[note.ri] = None
            while len(self._seen) > SEEN_NOTIFICATIONS:
                self._seen.popitem(last=False)
        if not self.ctx.commands:
            self.counts["ignored_commands"] += 1
            return reaction
        data = p.command_bytes(note.con)
        if data:
            self.counts["commands"] += 1
            reaction.commands.append(Command(data))
        return reaction

    def _answer(self, rsc: int, rqi: str, to: str) -> Out:
        return Out(self.topics.notification_response,
                   p.response(rsc, rqi, to=to, fr=self.originator), qos=1,
                   content_type="application/json")
