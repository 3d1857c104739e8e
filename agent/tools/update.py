"""``citynode update``: the root side of over-the-air updates (docs/updates.md).

``citynode update install`` is what citynode-update.service runs (as root) when the daemon
has asked for an update; ``citynode update guard`` is the health gate's check that
citynode.service runs before each start (the same code as /opt/citynode/bin/citynode-guard).
Both take ``--root`` (or ``CITYNODE_ROOT``) so tests and containers can point them at
another tree.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_install(args: argparse.Namespace) -> int:
    from agent.update import install

    return install.main(args.root, args.state_dir, args.config, args.arch, args.no_restart)


def cmd_guard(args: argparse.Namespace) -> int:
    from agent.update import guard

    argv = []
    for flag, value in (("--root", args.root), ("--state-dir", args.state_dir),
                        ("--config", args.config)):
        if value:
            argv += [flag, value]
    return guard.main(argv)


def _paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", metavar="DIR", help="treat DIR as / (tests, containers); default "
                   "$CITYNODE_ROOT or /")
    p.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory (default "
                   "ROOT/var/lib/citynode)")
    p.add_argument("--config", metavar="FILE", help="the node's configuration (default "
                   "ROOT/etc/citynode/citynode.toml)")


def register(sub: Any, default_cfg: str) -> None:
    u = sub.add_parser("update", help="install a requested update, or check the health gate "
                       "(root; what citynode-update.service and the unit's guard run)")
    usub = u.add_subparsers(dest="update_cmd", metavar="install|guard", required=True)
    i = usub.add_parser("install", help="verify and install the bundle the daemon asked for, "
                        "switch and restart (exit 0 done or nothing to do, 1 failed)")
    _paths(i)
    i.add_argument("--arch", default="", help="the architecture to accept (default: this "
                   "machine's)")
    i.add_argument("--no-restart", action="store_true",
                   help="do not restart citynode.service after the switch")
    i.set_defaults(func=cmd_install)
    g = usub.add_parser("guard", help="count a start in the health gate; roll back when it "
                        "failed (always exit 0)")
    _paths(g)
    g.set_defaults(func=cmd_guard)
