"""``citynode fleet``: the ops view of a fleet, and staged sends of signed commands.

``citynode fleet [view]`` subscribes to ``<prefix>/+/state``, ``health``, ``event``,
``telemetry`` and ``result`` and shows, live or once (``--once``, ``--json``), each node's
state, version, slot and update result, degraded sensors, spool backlog and silence.
``citynode fleet send`` signs a command (docs/commands.md, section 6) for every online
node chosen by id pattern and version, a ring at a time, and stops when a ring's failure
rate passes ``--max-failure-rate``. docs/ops.md, "Fleet", is the operator's guide.

The package: :mod:`.model` (the fleet's state, no I/O), :mod:`.rollout` (rings and
outcomes, no I/O), :mod:`.broker` (the connection), :mod:`.main` (the two commands).
Only :func:`register` is imported to build the parser; the rest when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

#: The options only ``view`` takes, and only ``send`` takes (dests): given to the other
#: action, they are a usage error rather than silently ignored.
VIEW_ONLY = ("once", "wait", "silent_after", "refresh", "problems")
SEND_ONLY = ("cmd", "args", "key", "ring", "ring_size", "max_failure_rate", "timeout",
             "wait_update", "update_timeout", "discover")
#: Longest ``--args`` (a node takes 8 KiB commands by default: docs/commands.md).
MAX_ARGS_CHARS = 8192


def int_between(low: int, high: int) -> Any:
    """An option type: a whole number from ``low`` to ``high``."""
    def whole(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text!r}")
        return value

    whole.__name__ = "int"
    return whole


def ring_sizes(text: str) -> tuple[int, ...]:
    """An option type: ``--ring 1,10,100``, ring sizes of 1 or more, at most 32 of them."""
    from agent.tools.fleet.rollout import MAX_RINGS

    parts = text.split(",")
    if not 1 <= len(parts) <= MAX_RINGS or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected ring sizes like 1,10,100 (at most "
                                         f"{MAX_RINGS}), got {text!r}")
    sizes = tuple(int(p) for p in parts)
    if not all(1 <= s <= 1_000_000 for s in sizes):
        raise argparse.ArgumentTypeError(f"ring sizes must be 1 to 1000000, got {text!r}")
    return sizes


def json_object(text: str) -> dict[str, Any]:
    """An option type: ``--args '{"sensor": "pm"}'``, a JSON object of finite values."""
    if len(text) > MAX_ARGS_CHARS:
        raise argparse.ArgumentTypeError(f"longer than {MAX_ARGS_CHARS} characters")

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            raise ValueError(f"{number} is out of range")
        return value

    try:
        value = json.loads(text, parse_constant=no_constant, parse_float=finite)
    except (ValueError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, such as {} or "
                                         '{"sensor": "pm"}')
    return value


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:
    """``citynode fleet [view|send] ...`` (one parser: both share the broker options)."""
    from agent.tools.cli import number_between
    from agent.tools.fleet.model import DEFAULT_MAX_NODES, MAX_NODES_LIMIT

    p = sub.add_parser("fleet", help="the fleet from the broker: nodes online/offline, "
                       "degraded sensors, spool backlogs, versions, silent nodes (live or "
                       "--once); 'fleet send': a signed command to chosen nodes, a ring at a "
                       "time (docs/ops.md, Fleet)")
    p.add_argument("action", nargs="?", choices=("view", "send"), default="view",
                   help="view (the default): show the fleet; send: send a signed command")
    b = p.add_argument_group("broker (as the node connects: -c reuses a node's [mqtt])")
    b.add_argument("--broker", metavar="HOST:PORT", help="the broker (default: [mqtt] host "
                   "and port of -c FILE)")
    b.add_argument("--config", "-c", metavar="FILE", help="a node's configuration: its [mqtt] "
                   "host, port, prefix, protocol, TLS and credentials are used")
    b.add_argument("--prefix", metavar="PREFIX", help="the topic prefix (default [mqtt] "
                   "prefix, citynode)")
    b.add_argument("--tls", action="store_true", help="TLS, verifying the broker")
    b.add_argument("--ca", metavar="FILE", help="CA certificate(s) to verify the broker by "
                   "(implies --tls)")
    b.add_argument("--cert", metavar="FILE", help="client certificate (with --cert-key)")
    b.add_argument("--cert-key", dest="key_file", metavar="FILE",
                   help="the client certificate's private key")
    b.add_argument("--credentials", metavar="FILE", help="TOML with username and password "
                   "(mode 0600), as [mqtt] credentials_file")
    b.add_argument("--server-name", metavar="NAME", help="name to verify the broker's "
                   "certificate by, when HOST is an address")
    s = p.add_argument_group("which nodes")
    s.add_argument("--nodes", metavar="PATTERN", help="node ids matching this glob "
                   "(pole-*; default all)")
    s.add_argument("--version", metavar="V", help="nodes whose birth names this version "
                   "(a glob: 0.2.*)")
    s.add_argument("--max-nodes", type=int_between(1, MAX_NODES_LIMIT), metavar="N",
                   help=f"track at most N nodes (default {DEFAULT_MAX_NODES}); the rest are "
                   "counted and said to be left out")
    s.add_argument("--json", action="store_true", help="machine-readable: one JSON document "
                   "(live view: one JSON line per change)")
    v = p.add_argument_group("view")
    v.add_argument("--once", action="store_true", help="collect for --wait seconds, print "
                   "once and exit (0 all fine, 1 a node needs attention, 3 none seen)")
    v.add_argument("--wait", type=number_between(0.1, 3600), metavar="S",
                   help="with --once: how long to listen (default 5)")
    v.add_argument("--silent-after", type=number_between(0, 10000), metavar="N",
                   help="flag online nodes not heard from for N report intervals (their "
                   "birth's interval; default 3; 0: never)")
    v.add_argument("--refresh", type=number_between(0.2, 3600), metavar="S",
                   help="live: redraw every S seconds (default 1)")
    v.add_argument("--problems", action="store_true",
                   help="show only the nodes that need attention")
    c = p.add_argument_group("send")
    c.add_argument("--cmd", metavar="NAME", help="the command: ping, update, ... "
                   "(docs/commands.md)")
    c.add_argument("--args", type=json_object, metavar="JSON",
                   help="the command's arguments as a JSON object (default {})")
    c.add_argument("--key", metavar="FILE|DIR", help="the HMAC key file commands are signed "
                   "with; or a directory of per-node keys, DIR/<node id>.key")
    c.add_argument("--ring", type=ring_sizes, metavar="N,N,...",
                   help="ring sizes: 1,10,100 (the default) sends to 1 node, then 10, then "
                   "100 at a time")
    c.add_argument("--ring-size", type=int_between(1, 1_000_000), metavar="N",
                   help="every ring N nodes (instead of --ring)")
    c.add_argument("--max-failure-rate", type=number_between(0, 1), metavar="R",
                   help="stop after a ring whose failures exceed this share (default 0.1)")
    c.add_argument("--timeout", type=number_between(0.1, 86400), metavar="S",
                   help="how long a node has to answer (default 30)")
    c.add_argument("--wait-update", action="store_true",
                   help="update: wait for each node's outcome (confirmed, rolled_back, "
                   "failed) instead of its acceptance")
    c.add_argument("--update-timeout", type=number_between(1, 86400), metavar="S",
                   help="with --wait-update: how long an update may take (default 1800)")
    c.add_argument("--discover", type=number_between(0.1, 600), metavar="S",
                   help="at most this long to collect the nodes' retained state before "
                   "sending (default 3)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from agent.tools.fleet.main import main

    return main(args)
