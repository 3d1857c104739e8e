"""Where each key of a TOML text sits: the line an error about it should name.

:func:`key_lines` maps every key path (``("sensor", 1, "plug", "relay_pin")``) to the line
where it is written: a ``key = value`` line, a table header, an element of an array (also
one spread over several lines), a key inside an inline table, a dotted key. A path that is
not written (a table created implicitly) is absent. The text must already have parsed
(:mod:`tomllib` says where syntax errors are), so the scanner can be lenient. Standard
library only: the daemon validates its configuration with it.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_BASIC_ESC = re.compile(r'\\.|"', re.S)
_SCALAR = re.compile(r"[^,\]}\n#]*")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.out: dict[Path, int] = {}
        self.arrays: dict[Path, int] = {}  # array-of-tables path -> tables so far

    # -- positions -----------------------------------------------------------------
    def line(self) -> int:
        return self.s.count("\n", 0, self.i) + 1

    def peek(self, n: int = 1) -> str:
        return self.s[self.i:self.i + n]

    def mark(self, path: Path, line: int) -> None:
        self.out.setdefault(path, line)

    def blank(self, newlines: bool) -> None:
        """Skip spaces, tabs, comments and (when ``newlines``) line breaks."""
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    # -- keys and strings ----------------------------------------------------------
    def string(self) -> str:
        s, i = self.s, self.i
        if s.startswith('"""', i) or s.startswith("'''", i):
            q = s[i:i + 3]
            j = i + 3
            while True:
                k = s.find(q, j)
                if k < 0:
                    self.i = len(s)
                    return ""
                if q == '"""' and _escaped(s, k):
                    j = k + 1
                    continue
                end = k + 3
                while end < len(s) and s[end] == q[0] and end - k < 5:
                    end += 1  # up to two quotes may end the content
                self.i = end
                return s[i + 3:end - 3]
        if s[i] == "'":
            k = s.find("'", i + 1)
            self.i = len(s) if k < 0 else k + 1
            return s[i + 1:k]
        out: list[str] = []
        j = i + 1
        while j < len(s):
            m = _BASIC_ESC.search(s, j)
            if m is None:
                break
            out.append(s[j:m.start()])
            if m.group() == '"':
                self.i = m.end()
                return "".join(out)
            out.append(_unescape(m.group()))
            j = m.end()
        self.i = len(s)
        return "".join(out)

    def key(self) -> list[str]:
        """A possibly dotted, possibly quoted key."""
        parts: list[str] = []
        while self.i < len(self.s):
            self.blank(False)
            c = self.peek()
            if c in "\"'":
                parts.append(self.string())
            else:
                m = _BARE.match(self.s, self.i)
                if m is None:
                    break
                parts.append(m.group())
                self.i = m.end()
            self.blank(False)
            if self.peek() != ".":
                break
            self.i += 1
        return parts

    # -- values --------------------------------------------------------------------
    def value(self, path: Path, depth: int) -> None:
        if depth > 200:
            raise RecursionError("nested too deeply")
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.i += 1
            n = 0
            while self.i < len(self.s):
                self.blank(True)
                if self.peek() in ("]", ""):
                    self.i += 1
                    return
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.mark((*path, n), self.line())
                self.value((*path, n), depth + 1)
                n += 1
        elif c == "{":
            self.i += 1
            while self.i < len(self.s):
                self.blank(True)
                if self.peek() in ("}", ""):
                    self.i += 1
                    return
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.pair(path, depth + 1)
        else:  # number, bool, date and time: up to the next delimiter
            m = _SCALAR.match(self.s, self.i)
            self.i = m.end() if m else len(self.s)

    def pair(self, table: Path, depth: int) -> None:
        line = self.line()
        parts = self.key()
        if not parts:  # not a key: skip the rest of the line (cannot happen after tomllib)
            end = self.s.find("\n", self.i)
            self.i = len(self.s) if end < 0 else end + 1
            return
        for n in range(1, len(parts) + 1):
            self.mark((*table, *parts[:n]), line)
        self.blank(False)
        if self.peek() == "=":
            self.i += 1
        self.blank(False)
        self.value((*table, *parts), depth)

    # -- the document --------------------------------------------------------------
    def resolve(self, parts: list[str]) -> Path:
        """A header's path with the current index after each array of tables in it."""
        out: list[str | int] = []
        for p in parts:
            out.append(p)
            count = self.arrays.get(tuple(out))
            if count:
                out.append(count - 1)
        return tuple(out)

    def document(self) -> dict[Path, int]:
        table: Path = ()
        while True:
            self.blank(True)
            if self.i >= len(self.s):
                return self.out
            line = self.line()
            if self.s.startswith("[[", self.i):
                self.i += 2
                parts = self.key()
                self.i = self.s.find("]]", self.i) + 2 if "]]" in self.s[self.i:] else len(self.s)
                if not parts:
                    continue
                base = (*self.resolve(parts[:-1]), parts[-1])
                idx = self.arrays.get(base, 0)
                self.arrays[base] = idx + 1
                self.mark(base, line)
                table = (*base, idx)
                self.mark(table, line)
            elif self.peek() == "[":
                self.i += 1
                parts = self.key()
                end = self.s.find("]", self.i)
                self.i = len(self.s) if end < 0 else end + 1
                table = self.resolve(parts)
                for n in range(1, len(table) + 1):
                    if not isinstance(table[n - 1], int):
                        self.mark(table[:n], line)
            else:
                self.pair(table, 0)


def _escaped(s: str, k: int) -> bool:
    """Whether the quote at ``k`` is escaped (an odd number of backslashes before it)."""
    n = 0
    while k - n - 1 >= 0 and s[k - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _unescape(esc: str) -> str:
    return {"\\n": "\n", "\\t": "\t", '\\"': '"', "\\\\": "\\"}.get(esc, esc[1:])


def key_lines(text: str) -> dict[Path, int]:
    """Every written key path of ``text`` and its line (1-based); empty if unscannable."""
    try:
        return _Scanner(text).document()
    except (RecursionError, ValueError, IndexError):
        return {}


def split_key(key: str) -> Path:
    """``sensor[1].plug.relay_pin`` -> ``("sensor", 1, "plug", "relay_pin")``."""
    out: list[str | int] = []
    for name, idx in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        out.append(int(idx) if idx else name)
    return tuple(out)


def locate(lines: dict[Path, int], key: str) -> int | None:
    """The line of ``key``, else of the nearest enclosing key or table that is written."""
    path = split_key(key)
    for n in range(len(path), 0, -1):
        hit = lines.get(path[:n])
        if hit is not None:
            return hit
    return None
