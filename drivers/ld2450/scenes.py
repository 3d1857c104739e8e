"""Pedestrian scenes: who walks where and when in front of a radar, and which crossings of
the counting line really happened.

The frame is the radar's (drivers/ld2450/codec.py): the radar hangs on a wall or pole at
the edge of the pavement and looks across it, y (m) is the distance out from it and x (m)
runs along the pavement. A :class:`Walker` follows a path of ``(t, x, y)`` waypoints, moving
in a straight line at constant speed between two of them (two waypoints at one place:
standing still). :meth:`Scene.truth` lists every crossing of the line ``x = line_x`` with
its time and direction (``in`` = towards +x), optionally only where ``y`` is inside a zone.

:func:`generate` makes a scene of one kind, deterministic for its seed, with never more than
three people in the field at once (a walker counts from its first waypoint to its last;
paths start and end just outside the field of view):

* ``commuter_peak``: a dense flow, mostly one way;
* ``single_walkers``: one person at a time;
* ``pairs``: two people side by side (and some walking alone);
* ``joggers`` and ``cyclists``: fast passers-by among walkers;
* ``loiterers``: people waiting at a bus stop next to the line, fidgeting, then boarding
  or walking on or back;
* ``both_ways``: two people crossing the line in opposite directions at once;

and the harder street behaviour (still never more than three people in the field):

* ``stop_on_line``: people who stop on or right next to the line (a phone call, a red
  light) for 5-90 s, swaying on the spot, then walk on or turn back;
* ``u_turns``: people who turn round up to 1.5 m before or after the line (after it: a
  crossing and a return);
* ``along_line``: people walking along the line, inside the hysteresis band of the
  counter, for 3-5 m (to a shop door, to the kerb), then off to either side;
* ``groups``: three abreast or a tight group of three crossing together, and two people
  passing each other on the line;
* ``edge_entries``: crossings at a steep angle (15-40 degrees off the line), and people
  appearing or vanishing at the edge of the field close to the line (out of a door beside
  the radar, from or to the road beyond its range);
* ``fast_slow``: cyclists and e-scooters at 6-9 m/s (a few frames each side of the line)
  and slow shufflers at 0.3-0.5 m/s;
* ``range_limits``: people near the radar's range limit (5-5.9 m out) and right in front
  of it (0.4-0.9 m, where the field is narrow);
* ``mixed``: all of the above in turn.

Truth is the walkers' paths: one crossing per real passage of the line, wherever it
happens (a U-turn 10 cm past the line is a crossing and a return). A person's sway while
standing is never a passage: the generators keep it on the side of the line they stopped on.

The field of view is the LD2450's as Hi-Link's instruction manual gives it: about 6 m out,
60 degrees either side of the antenna's axis.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

RANGE_M = 6.0
HALF_ANGLE_DEG = 60.0
#: Paths start and end this far outside the field of view, so a walker enters it walking.
MARGIN_M = 0.5
#: At most this many people in the field at once (the radar tracks three).
MAX_IN_FIELD = 3

BASIC_KINDS = ("commuter_peak", "single_walkers", "pairs", "joggers", "cyclists",
               "loiterers", "both_ways")
#: The harder kinds: stops, turns and walks along the line, groups, edges and speeds.
HARD_KINDS = ("stop_on_line", "u_turns", "along_line", "groups", "edge_entries",
              "fast_slow", "range_limits")
KINDS = (*BASIC_KINDS, *HARD_KINDS)
SCENE_KINDS = (*KINDS, "mixed")

Waypoint = tuple[float, float, float]  # (t s, x m, y m)


def in_view(x: float, y: float, range_m: float = RANGE_M,
            half_angle_deg: float = HALF_ANGLE_DEG) -> bool:
    """Inside the radar's field of view (in front of it, within range and angle)."""
    if y <= 0.0 or x * x + y * y > range_m * range_m:
        return False
    return abs(math.degrees(math.atan2(x, y))) <= half_angle_deg


def half_width(y: float, range_m: float = RANGE_M, half_angle_deg: float = HALF_ANGLE_DEG) -> float:
    """How far along x the field reaches at distance ``y``."""
    if not 0.0 < y < range_m:
        return 0.0
    return min(y * math.tan(math.radians(half_angle_deg)), math.sqrt(range_m ** 2 - y * y))


class TruthCrossing(NamedTuple):
    """A crossing of the counting line that really happened: its time, its direction
    (``in`` = towards +x) and who crossed (an index into :attr:`Scene.walkers`)."""

    t: float
    direction: str
    walker: int


class Position(NamedTuple):
    """Where a walker is at one moment, and how fast it moves (m, m/s)."""

    walker: int
    x: float
    y: float
    vx: float
    vy: float


@dataclass(frozen=True, slots=True)
class Walker:
    """A person on a path of ``(t, x, y)`` waypoints (times not decreasing), at
    ``speed_mps`` when walking; ``kind`` says who it is (pedestrian, jogger, cyclist,
    loiterer)."""

    waypoints: tuple[Waypoint, ...]
    speed_mps: float
    kind: str = "pedestrian"

    def __post_init__(self) -> None:
        if len(self.waypoints) < 2:
            raise ValueError("a walker needs at least two waypoints")
        if any(b[0] < a[0] for a, b in itertools.pairwise(self.waypoints)):
            raise ValueError("waypoint times must not decrease")

    @property
    def start(self) -> float:
        return self.waypoints[0][0]

    @property
    def end(self) -> float:
        return self.waypoints[-1][0]

    def at(self, t: float) -> tuple[float, float, float, float] | None:
        """``(x, y, vx, vy)`` at time ``t``; None before the first or after the last waypoint."""
        wp = self.waypoints
        if not wp[0][0] <= t <= wp[-1][0]:
            return None
        i = max(1, bisect.bisect_right(wp, t, key=lambda w: w[0]))
        if i >= len(wp):
            i = len(wp) - 1
        (t0, x0, y0), (t1, x1, y1) = wp[i - 1], wp[i]
        dt = t1 - t0
        if dt <= 0:
            return x1, y1, 0.0, 0.0
        f = (t - t0) / dt
        vx, vy = (x1 - x0) / dt, (y1 - y0) / dt
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0), vx, vy

    def crossings(self, line_x: float = 0.0,
                  zone_y: tuple[float, float] | None = None) -> list[tuple[float, str]]:
        """``(t, direction)`` of every crossing of ``x = line_x`` (``in``: from x < line_x
        to x >= line_x), where y is inside ``zone_y`` if given."""
        out: list[tuple[float, str]] = []
        for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(self.waypoints):
            a, b = x0 >= line_x, x1 >= line_x
            if a == b:
                continue
            f = (line_x - x0) / (x1 - x0)
            y = y0 + f * (y1 - y0)
            if zone_y is not None and not zone_y[0] <= y <= zone_y[1]:
                continue
            out.append((t0 + f * (t1 - t0), "in" if b else "out"))
        return out

    def shifted(self, dt: float) -> Walker:
        return Walker(tuple((t + dt, x, y) for t, x, y in self.waypoints), self.speed_mps,
                      self.kind)


def walk(start_t: float, points: Sequence[tuple[float, float]], speed_mps: float, *,
         waits: Mapping[int, float] | None = None, kind: str = "pedestrian") -> Walker:
    """A walker leaving ``points[0]`` at ``start_t`` and walking through the points at
    ``speed_mps``, standing ``waits[i]`` seconds at point ``i``."""
    if speed_mps <= 0 or len(points) < 2:
        raise ValueError("a walk needs a positive speed and at least two points")
    waits = waits or {}
    t = start_t
    wp: list[Waypoint] = []
    for i, (x, y) in enumerate(points):
        if i:
            px, py = points[i - 1]
            t += math.hypot(x - px, y - py) / speed_mps
        wp.append((t, x, y))
        if waits.get(i, 0.0) > 0:
            t += waits[i]
            wp.append((t, x, y))
    return Walker(tuple(wp), speed_mps, kind)


@dataclass
class Scene:
    """Walkers in front of the radar for ``duration_s`` seconds; ``kind`` is one of
    :data:`SCENE_KINDS` (or anything, for a scene written by hand)."""

    name: str
    kind: str
    duration_s: float
    walkers: list[Walker]
    _starts: list[float] = field(init=False, repr=False, compare=False)
    _active: list[int] = field(init=False, repr=False, compare=False)
    _cursor: int = field(init=False, repr=False, compare=False)
    _last_t: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.walkers = sorted(self.walkers, key=lambda w: w.start)
        self._starts = [w.start for w in self.walkers]
        self._rewind()

    def _rewind(self) -> None:
        self._active, self._cursor, self._last_t = [], 0, -math.inf

    def at(self, t: float) -> list[Position]:
        """Everyone on their path at time ``t`` (fast when ``t`` only grows between calls)."""
        if t < self._last_t:
            self._rewind()
        self._last_t = t
        hi = bisect.bisect_right(self._starts, t)
        self._active.extend(range(self._cursor, hi))
        self._cursor = max(self._cursor, hi)
        out: list[Position] = []
        keep: list[int] = []
        for i in self._active:
            w = self.walkers[i]
            if t > w.end:
                continue
            keep.append(i)
            p = w.at(t)
            if p is not None:
                out.append(Position(i, *p))
        self._active = keep
        return out

    def truth(self, line_x: float = 0.0,
              zone_y: tuple[float, float] | None = None) -> list[TruthCrossing]:
        """Every crossing of ``x = line_x`` (over the whole y range, or ``zone_y``), in time
        order."""
        out = [TruthCrossing(t, d, i) for i, w in enumerate(self.walkers)
               for t, d in w.crossings(line_x, zone_y)]
        return sorted(out)

    def max_in_field(self) -> int:
        """The most walkers on their paths at one moment."""
        events = sorted([(w.start, 1) for w in self.walkers] + [(w.end, -1) for w in self.walkers],
                        key=lambda e: (e[0], e[1]))
        n = best = 0
        for _, d in events:
            n += d
            best = max(best, n)
        return best


# -- generators ------------------------------------------------------------------------------------
class _Field:
    """Who is in the field when: a group of walkers is placed only where it keeps the number
    in the field at or under the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spans: list[tuple[float, float]] = []  # sorted by start
        self.longest = 0.0

    def fits(self, spans: Sequence[tuple[float, float]]) -> bool:
        lo = min(s for s, _ in spans)
        hi = max(e for _, e in spans)
        i = bisect.bisect_left(self.spans, (lo - self.longest, -math.inf))
        j = bisect.bisect_right(self.spans, (hi, math.inf))
        near = [sp for sp in self.spans[i:j] if sp[1] > lo and sp[0] < hi]
        both = (*near, *spans)
        events = sorted([(s, 1) for s, _ in both] + [(e, -1) for _, e in both])
        n = 0
        for _, d in events:
            n += d
            if n > self.limit:
                return False
        return True

    def add(self, spans: Iterable[tuple[float, float]]) -> None:
        for sp in spans:
            bisect.insort(self.spans, sp)
            self.longest = max(self.longest, sp[1] - sp[0])


Group = list[Walker]
Maker = Callable[[random.Random], Group]  # a group starting around t = 0


def _lane(rng: random.Random, low: float, high: float) -> float:
    return rng.uniform(low, high)


def _crossing(rng: random.Random, direction: str, y: float, speed: float, *,
              kind: str = "pedestrian", x_lag: float = 0.0, wobble: float = 0.05) -> Walker:
    """A walk across the whole field at distance ``y``, starting at t = 0 just outside it."""
    edge = half_width(y) + MARGIN_M
    sign = 1.0 if direction == "in" else -1.0
    n = max(2, int(2 * edge / 1.5))
    xs = [sign * (-edge + 2 * edge * k / n) for k in range(n + 1)]
    points = [(x - sign * x_lag, y + (rng.gauss(0.0, wobble) if 0 < k < n else 0.0))
              for k, x in enumerate(xs)]
    return walk(0.0, points, speed, kind=kind)


def _speed(rng: random.Random, kind: str) -> float:
    lo, hi, mu, sd = {"pedestrian": (0.8, 2.0, 1.35, 0.2), "commuter": (1.1, 2.0, 1.5, 0.15),
                      "jogger": (2.3, 3.8, 3.0, 0.35), "cyclist": (3.5, 7.0, 5.0, 0.8),
                      "shuffler": (0.3, 0.5, 0.4, 0.05), "scooter": (6.0, 7.0, 6.5, 0.4),
                      "fast_cyclist": (6.0, 9.0, 7.5, 0.9)}[kind]
    return min(hi, max(lo, rng.gauss(mu, sd)))


def _direction(rng: random.Random, p_in: float = 0.5) -> str:
    return "in" if rng.random() < p_in else "out"


def _single(kind: str = "pedestrian", p_in: float = 0.5, lane: tuple[float, float] = (1.0, 3.5)
            ) -> Maker:
    def make(rng: random.Random) -> Group:
        walker_kind = "pedestrian" if kind == "commuter" else kind
        return [_crossing(rng, _direction(rng, p_in), _lane(rng, *lane), _speed(rng, kind),
                          kind=walker_kind)]
    return make


def _pair(rng: random.Random) -> Group:
    """Two people side by side: the same way, the same pace, half a metre to a metre apart."""
    d, speed = _direction(rng), _speed(rng, "pedestrian")
    y = _lane(rng, 1.0, 2.6)
    gap = rng.uniform(0.5, 0.9)
    lag = rng.uniform(-0.15, 0.15)
    return [_crossing(rng, d, y, speed), _crossing(rng, d, y + gap, speed, x_lag=lag)]


def _opposed(rng: random.Random) -> Group:
    """Two people crossing the line in opposite directions within a second of each other."""
    ya = _lane(rng, 1.0, 2.5)
    yb = ya + rng.uniform(0.5, 1.2) * (1 if rng.random() < 0.5 else -1)
    yb = min(3.5, max(0.8, yb))
    a = _crossing(rng, "in", ya, _speed(rng, "pedestrian"))
    b = _crossing(rng, "out", yb, _speed(rng, "pedestrian"))
    ta, tb = a.crossings()[0][0], b.crossings()[0][0]
    b = b.shifted(ta - tb + rng.uniform(-1.0, 1.0))
    t0 = min(a.start, b.start)
    return [a.shifted(-t0), b.shifted(-t0)]


def _loiterer(stop: tuple[float, float]) -> Maker:
    """Someone who walks to the bus stop beside the line, waits there fidgeting, then boards
    a bus (walks off towards the road), walks on, or goes back the way they came."""

    def make(rng: random.Random) -> Group:
        sx, sy = stop
        x = max(0.3, sx + rng.uniform(-0.3, 0.3))
        y = sy + rng.uniform(-0.3, 0.3)
        y_in = _lane(rng, 1.0, 3.0)
        side = -1.0 if rng.random() < 0.5 else 1.0
        edge_in = half_width(y_in) + MARGIN_M
        speed = _speed(rng, "pedestrian")
        points = [(side * edge_in, y_in), (x, y)]
        waits: dict[int, float] = {}
        wait = rng.uniform(20.0, 240.0)
        spent = 0.0
        while spent < wait:  # stand, then shift one's weight a little, never across the line
            pause = min(rng.uniform(4.0, 15.0), wait - spent)
            waits[len(points) - 1] = pause
            spent += pause
            x = min(sx + 0.4, max(0.25, x + rng.uniform(-0.12, 0.12)))
            y = y + rng.uniform(-0.08, 0.08)
            points.append((x, y))
        leave = rng.random()
        if leave < 0.4:  # boards the bus at the kerb and is gone
            points.append((x + rng.uniform(-0.3, 0.3), 4.6))
        else:
            y_out = _lane(rng, 1.0, 3.0)
            out_side = 1.0 if leave < 0.7 else -1.0
            points.append((out_side * (half_width(y_out) + MARGIN_M), y_out))
        return [walk(0.0, points, speed, waits=waits, kind="loiterer")]

    return make


# -- the harder kinds ------------------------------------------------------------------------
def _edge(y: float) -> float:
    """Where a walk at distance ``y`` starts or ends: just outside the field."""
    return half_width(y) + MARGIN_M


def _same_side(x: float, new: float) -> float:
    """``new``, unless it is on the other side of the line from ``x`` (or on it): then ``x``.
    A sway while standing is not a passage."""
    return new if new * x > 0 else x


def _stopper(rng: random.Random) -> Group:
    """Someone who stops on or right next to the line (a phone call, a red light at the
    crossing beyond it) up to half a metre before or past it, for 5-90 s, swaying on the
    spot now and then, then walks on (seven in ten) or turns back."""
    sign = 1.0 if _direction(rng) == "in" else -1.0
    y = _lane(rng, 0.8, 4.0)
    speed = _speed(rng, "pedestrian")
    x = sign * rng.uniform(-0.5, 0.5)
    if abs(x) < 0.01:
        x = math.copysign(0.01, x)
    points = [(-sign * _edge(y), y), (x, y)]
    waits: dict[int, float] = {}
    wait, spent = rng.uniform(5.0, 90.0), 0.0
    while spent < wait:
        pause = min(rng.uniform(3.0, 12.0), wait - spent)
        waits[len(points) - 1] = pause
        spent += pause
        x = _same_side(x, x + rng.uniform(-0.06, 0.06))
        y = min(4.5, max(0.6, y + rng.uniform(-0.05, 0.05)))
        points.append((x, y))
    y_out = min(4.5, max(0.6, y + rng.uniform(-0.5, 0.5)))
    on = 1.0 if rng.random() < 0.7 else -1.0
    points.append((on * sign * _edge(y_out), y_out))
    return [walk(0.0, points, speed, waits=waits, kind="stopper")]


def _u_turn(rng: random.Random) -> Group:
    """Someone who turns round near the line (forgot something, wrong way): up to 1.5 m
    before or after it, in a half-circle of 0.3-0.6 m, after a pause of up to 2 s."""
    sign = 1.0 if _direction(rng) == "in" else -1.0
    y = _lane(rng, 0.8, 4.0)
    speed = _speed(rng, "pedestrian")
    turn = sign * rng.uniform(0.05, 1.5) * (1.0 if rng.random() < 0.5 else -1.0)
    width = rng.uniform(0.3, 0.6) * (1.0 if y < 2.4 else -1.0)
    tip = (turn + sign * 0.1, y + width / 2)
    back = y + width
    points = [(-sign * _edge(y), y), (turn, y), tip, (turn, back), (-sign * _edge(back), back)]
    pause = rng.uniform(0.0, 2.0)
    return [walk(0.0, points, speed, waits={2: pause} if pause > 0.2 else None)]


def _along(rng: random.Random) -> Group:
    """Someone walking along the line, inside the counter's band (a quarter metre either
    side), for 3-5 m towards or away from the radar (to a shop door, to the kerb), having
    come from one side and leaving to either."""
    length = rng.uniform(3.0, 5.0)
    y0 = rng.uniform(0.6, 5.5 - length)
    ys, ye = (y0, y0 + length) if rng.random() < 0.5 else (y0 + length, y0)
    c = rng.uniform(-0.25, 0.25)
    if abs(c) < 0.01:
        c = math.copysign(0.01, c)
    c2 = _same_side(c, c + rng.uniform(-0.08, 0.08))
    a = 1.0 if rng.random() < 0.5 else -1.0
    b = 1.0 if rng.random() < 0.5 else -1.0
    points = [(a * _edge(ys), ys), (c, ys), (c2, ye), (b * _edge(ye), ye)]
    return [walk(0.0, points, _speed(rng, "pedestrian"))]


def _trio(rng: random.Random) -> Group:
    """Three people crossing together the same way at the same pace: abreast, 0.45-0.7 m
    apart and up to 0.2 m out of line, or a tight group (two abreast, one a step ahead)."""
    d, speed = _direction(rng), _speed(rng, "pedestrian")
    y = _lane(rng, 0.8, 2.6)
    if rng.random() < 0.5:
        g1, g2 = rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.7)
        placed = [(y, 0.0), (y + g1, rng.uniform(-0.2, 0.2)),
                  (y + g1 + g2, rng.uniform(-0.2, 0.2))]
    else:
        g = rng.uniform(0.45, 0.7)
        placed = [(y, 0.0), (y + g, rng.uniform(-0.1, 0.1)),
                  (y + g / 2 + rng.uniform(-0.15, 0.15), -rng.uniform(0.6, 0.9))]
    return [_crossing(rng, d, yy, speed, x_lag=lag, wobble=0.03) for yy, lag in placed]


def _pass_on_line(rng: random.Random) -> Group:
    """Two people passing each other on the line: opposite ways, 0.45-0.7 m apart, at the
    line within 0.3 s of each other."""
    ya = _lane(rng, 0.8, 3.5)
    gap = rng.uniform(0.45, 0.7)
    yb = ya - gap if rng.random() < 0.5 and ya - gap >= 0.6 else ya + gap
    a = _crossing(rng, "in", ya, _speed(rng, "pedestrian"), wobble=0.03)
    b = _crossing(rng, "out", yb, _speed(rng, "pedestrian"), wobble=0.03)
    ta, tb = a.crossings()[0][0], b.crossings()[0][0]
    b = b.shifted(ta - tb + rng.uniform(-0.3, 0.3))
    t0 = min(a.start, b.start)
    return [a.shifted(-t0), b.shifted(-t0)]


def _steep(rng: random.Random) -> Group:
    """A crossing at a steep angle, 15-40 degrees off the line (diagonally across the
    pavement, from a shop door to the kerb): from outside the field (or the wall the radar
    is on) to outside it."""
    a = math.radians(rng.uniform(15.0, 40.0))
    ux = math.sin(a) * (1.0 if _direction(rng) == "in" else -1.0)
    uy = math.cos(a) * (1.0 if rng.random() < 0.5 else -1.0)
    yc = rng.uniform(1.0, 4.5)

    def out(step: float) -> tuple[float, float]:
        s = 0.0
        while True:
            s += 0.05
            x, y = step * s * ux, yc + step * s * uy
            if y <= 0.1:
                return x, 0.1  # the wall the radar hangs on
            if not in_view(x, y):
                s += MARGIN_M
                return step * s * ux, max(0.1, yc + step * s * uy)

    return [walk(0.0, [out(-1.0), (0.0, yc), out(1.0)], _speed(rng, "pedestrian"))]


def _edge_entry(rng: random.Random) -> Group:
    """Someone appearing at the edge of the field close to the line, up to 0.6 m either
    side of it (out of a door beside the radar, where the field is narrow, or from the road
    beyond its range), then along the pavement to either side; or the same walk backwards
    (vanishing at the edge close to the line)."""
    xe = rng.uniform(-0.6, 0.6)
    if abs(xe) < 0.01:
        xe = math.copysign(0.01, xe)
    edge_y = 0.1 if rng.random() < 0.5 else RANGE_M + MARGIN_M
    y_in = rng.uniform(1.0, 3.5)
    inner = (_same_side(xe, xe + rng.uniform(-0.1, 0.1)), y_in)
    y_end = min(4.0, max(0.8, y_in + rng.uniform(-0.3, 0.3)))
    side = 1.0 if rng.random() < 0.5 else -1.0
    points = [(xe, edge_y), inner, (side * _edge(y_end), y_end)]
    if rng.random() < 0.5:
        points.reverse()
    return [walk(0.0, points, _speed(rng, "pedestrian"))]


def _lane_range(kind: str) -> tuple[float, float]:
    return {"scooter": (1.0, 3.5), "fast_cyclist": (3.0, 5.5), "shuffler": (0.8, 4.0),
            "far": (5.0, 5.9), "near": (0.4, 0.9)}[kind]


def _at_speed(kind: str, lane: str | None = None) -> Maker:
    """One person across the field: ``kind`` sets the pace (:func:`_speed`), ``lane`` the
    distance from the radar (:func:`_lane_range`)."""
    walker_kind = {"scooter": "cyclist", "fast_cyclist": "cyclist"}.get(kind, kind)

    def make(rng: random.Random) -> Group:
        y = _lane(rng, *_lane_range(lane or kind))
        return [_crossing(rng, _direction(rng), y, _speed(rng, kind), kind=walker_kind,
                          wobble=0.05 if y > 1.0 else 0.02)]

    return make


def _arrivals(rng: random.Random, per_hour: float, duration_s: float) -> list[float]:
    out, t = [], 0.0
    while per_hour > 0:
        t += rng.expovariate(per_hour / 3600.0)
        if t >= duration_s:
            return out
        out.append(t)
    return out


def _processes(kind: str, rng: random.Random) -> tuple[list[tuple[float, Maker]], int]:
    """Per kind: (groups per hour, how a group is made) for each arrival process, and how
    many people may be in the field at once."""
    walkers = _single()
    if kind == "single_walkers":
        return [(150.0, walkers)], 1
    if kind == "commuter_peak":
        p_in = 0.75 if rng.random() < 0.5 else 0.25
        return [(1100.0, _single("commuter", p_in))], MAX_IN_FIELD
    if kind == "pairs":
        return [(80.0, _pair), (30.0, walkers)], MAX_IN_FIELD
    if kind == "joggers":
        return [(60.0, _single("jogger")), (60.0, walkers)], MAX_IN_FIELD
    if kind == "cyclists":
        return [(60.0, _single("cyclist", lane=(2.8, 4.2))), (40.0, walkers)], MAX_IN_FIELD
    if kind == "loiterers":
        stop = (rng.uniform(0.6, 1.0), rng.uniform(1.2, 1.8))
        return [(24.0, _loiterer(stop)), (60.0, walkers)], MAX_IN_FIELD
    if kind == "both_ways":
        return [(70.0, _opposed), (50.0, walkers)], MAX_IN_FIELD
    if kind == "stop_on_line":
        return [(40.0, _stopper), (50.0, walkers)], MAX_IN_FIELD
    if kind == "u_turns":
        return [(70.0, _u_turn), (50.0, walkers)], MAX_IN_FIELD
    if kind == "along_line":
        return [(60.0, _along), (50.0, walkers)], MAX_IN_FIELD
    if kind == "groups":
        return [(40.0, _trio), (50.0, _pass_on_line), (20.0, walkers)], MAX_IN_FIELD
    if kind == "edge_entries":
        return [(60.0, _steep), (60.0, _edge_entry), (20.0, walkers)], MAX_IN_FIELD
    if kind == "fast_slow":
        return [(40.0, _at_speed("scooter")), (40.0, _at_speed("fast_cyclist")),
                (30.0, _at_speed("shuffler")), (30.0, walkers)], MAX_IN_FIELD
    if kind == "range_limits":
        return [(60.0, _at_speed("pedestrian", "far")), (60.0, _at_speed("pedestrian", "near")),
                (20.0, _at_speed("jogger", "near"))], MAX_IN_FIELD
    raise ValueError(f"unknown scene kind {kind!r}; known: {', '.join(SCENE_KINDS)}")


#: A group that cannot enter the field when it arrives waits up to this long, then gives up.
MAX_DELAY_S = 30.0


def _generate_one(kind: str, duration_s: float, rng: random.Random) -> list[Walker]:
    processes, limit = _processes(kind, rng)
    arrivals = sorted((t, k) for k, (rate, _) in enumerate(processes)
                      for t in _arrivals(rng, rate, duration_s))
    crowd = _Field(limit)
    placed: list[Walker] = []
    for t, k in arrivals:
        group = processes[k][1](rng)
        delay = 0.0
        while delay <= MAX_DELAY_S:
            moved = [w.shifted(t + delay) for w in group]
            spans = [(w.start, w.end) for w in moved]
            if max(e for _, e in spans) > duration_s:
                break
            if crowd.fits(spans):
                crowd.add(spans)
                placed.extend(moved)
                break
            delay += 0.5
    return placed


def generate(kind: str, duration_s: float, seed: int = 0) -> Scene:
    """A scene of ``kind`` (:data:`SCENE_KINDS`) lasting ``duration_s``; the same seed makes
    the same scene."""
    if duration_s <= 0 or not math.isfinite(duration_s):
        raise ValueError("duration_s must be positive")
    if kind == "mixed":
        part = duration_s / len(KINDS)
        walkers = [w.shifted(i * part) for i, k in enumerate(KINDS)
                   for w in _generate_one(k, part, random.Random(f"{k}:{seed}"))]
    elif kind in KINDS:
        walkers = _generate_one(kind, duration_s, random.Random(f"{kind}:{seed}"))
    else:
        raise ValueError(f"unknown scene kind {kind!r}; known: {', '.join(SCENE_KINDS)}")
    return Scene(f"{kind}-{seed}", kind, duration_s, walkers)
