"""Configuration migrations a release carries: named functions over the TOML text.

A release that renames or moves a configuration key ships a migration here, registered
under a name, and lists that name in its bundle's manifest (``migrations``). The root
installer runs them with the NEW release's interpreter (``<release>/venv/bin/python -m
agent.update.migrate``): only the new code knows its migrations. Each function gets the
text and its parsed data and returns the new text (editing text keeps the operator's
comments); the result must still parse as TOML. A bundle lists every migration its
release knows (deploy/bundle.py), so a node that skips releases runs them all in order:
each must leave an already migrated file as it is. The installer keeps the old file
(``citynode.toml.rollback``), replaces the configuration atomically, and the guard puts
the old file back on rollback.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Migration = Callable[[str, dict[str, Any]], str]
MAX_CONFIG_BYTES = 1 << 20
EX_OK, EX_DATAERR, EX_USAGE = 0, 65, 64

#: name -> migration. A name is never reused for a different change.
MIGRATIONS: dict[str, Migration] = {}


class MigrationError(Exception):
    """A migration is unknown, fails, or leaves text that is not TOML (one line)."""


def register(name: str) -> Callable[[Migration], Migration]:
    """Decorator: register a migration under ``name``."""
    def deco(fn: Migration) -> Migration:
        if name in MIGRATIONS:
            raise ValueError(f"migration {name!r} registered twice")
        MIGRATIONS[name] = fn
        return fn
    return deco


def apply(text: str, names: Iterable[str],
          registry: dict[str, Migration] | None = None) -> str:
    """Run the named migrations in order over ``text``; the migrated text."""
    reg = MIGRATIONS if registry is None else registry
    for name in names:
        fn = reg.get(name)
        if fn is None:
            raise MigrationError(f"unknown configuration migration {name!r}")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MigrationError(f"before migration {name!r}: not TOML ({exc})") from None
        try:
            out = fn(text, data)
        except Exception as exc:  # a migration's bug must not leave a half-edited file
            raise MigrationError(f"migration {name!r} failed: {exc}") from None
        if not isinstance(out, str):
            raise MigrationError(f"migration {name!r} returned {type(out).__name__}")
        try:
            tomllib.loads(out)
        except tomllib.TOMLDecodeError as exc:
            raise MigrationError(f"migration {name!r} left text that is not TOML ({exc})"
                                 ) from None
        text = out
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.update.migrate --in OLD --out NEW NAME...`` (the installer's call)."""
    p = argparse.ArgumentParser(prog="python -m agent.update.migrate")
    p.add_argument("--in", dest="src", required=True)
    p.add_argument("--out", dest="dst", required=True)
    p.add_argument("names", nargs="*")
    args = p.parse_args(argv)
    try:
        raw = Path(args.src).read_bytes()
        if len(raw) > MAX_CONFIG_BYTES:
            raise MigrationError(f"{args.src}: larger than {MAX_CONFIG_BYTES} bytes")
        out = apply(raw.decode("utf-8"), args.names)
        Path(args.dst).write_text(out, encoding="utf-8")
    except (MigrationError, OSError, UnicodeDecodeError) as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return EX_DATAERR
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
