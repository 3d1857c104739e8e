"""Appliance activity of a person living alone, from smart plugs (sans-I/O).

Feed ``update(t, plug, watts)`` for every power sample and call ``tick(t)``
regularly (every minute is plenty) so alarms are raised by the clock even when
no sample arrives. The same :class:`ActivityDetector` runs in the daemon, in
``citynode detect inactivity`` (offline replay) and in ``bench/eval_inactivity.py``.
docs/inactivity.md explains the events to caregiver-platform people.

Per plug (:class:`PlugActivity`), three levels with hysteresis::

    off      watts < standby_w                      (unplugged / switched off)
    standby  standby_w <= watts, not active         (TV standby, charger)
    active   watts >= on_w held for min_on_s; left only after watts < off_w
             for min_off_s (so a kettle's thermostat or a washing machine's
             pauses do not flap)

Transitions give plug events ``on`` (off -> powered), ``off``, ``active``,
``standby`` (active -> powered but idle). They are returned only when the
detector is built with ``plug_events=True``.

*Activity* is the start or the end of an ``active`` period on a plug that is
user-driven. Plugs listed in ``unattended`` (a fridge or freezer, a router:
anything that cycles on its own) never count as activity, they are only
watched for unusual continuous use.

Routine (:class:`Routine`): for each of the 168 hours of the week, how often
that hour had some activity, and how often it had activity after the household
had already been quiet for 2 h (the *hazard*: after a night, the morning almost
always comes), counted with exponential forgetting (half-life 8 weeks), pooled
with the same hour on other days and the neighbouring hours, plus a cautious
prior (p = 0.03 per hour 23:00-06:00, 0.15 at 06-08, 0.3 by day).
:meth:`Routine.usual_gap_s` (start) is how long a quiet spell that begins at
``start`` may last before its probability under the routine falls below
``alpha`` (1 %). Nights are handled by the routine itself: hours that are
usually quiet add little, so "last use 21:00, now 05:00" is usual, "now 11:00"
may not be. A Sunday with a late morning is learned as such (hour-of-week).

Alarms (:class:`ActivityDetector`):

* ``inactivity_alarm`` when the time since the last activity exceeds
  ``margin`` (2) x the usual gap, capped at ``max_wait_s`` (11 h) unless the
  usual gap itself is longer, and at least ``min_inactivity_s`` (3 h); once
  per gap.
* ``activity_resumed`` at the first activity after an alarm (with the length
  of the whole gap).
* ``unusual_use`` when one plug has been ``active`` continuously for longer
  than ``unusual_factor`` (2) x the longest period it was ever seen active,
  and at least ``unusual_min_s`` (1 h); once per period. Nothing is raised
  before ``unusual_min_history`` (3) active periods were seen on that plug.

The hours of a gap in progress are learned only when activity resumes (so a
gap never makes itself look usual while it is being judged), and hours after
an alarm was raised are not learned at all, so one incident does not teach the
routine that days without activity are normal. Everything learned (routine,
longest periods, last activity) comes out as data with
:meth:`ActivityDetector.to_dict` and goes back in with ``state=`` at construction;
the daemon's household feature keeps it in a file, so restarts and reboots keep it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ACTIVE",
    "OFF",
    "STANDBY",
    "ActivityDetector",
    "Event",
    "PlugActivity",
    "Routine",
    "hour_of_week",
]

OFF = "off"
STANDBY = "standby"
ACTIVE = "active"
HOUR = 3600.0
WEEK_HOURS = 168
STATE_VERSION = 2


def hour_of_week(t: float, utc_offset_s: float = 0.0) -> int:
    """0 = Monday 00:00-01:00 local time (``utc_offset_s`` east of UTC)."""
    dt = datetime.fromtimestamp(t + utc_offset_s, UTC)
    return dt.weekday() * 24 + dt.hour


@dataclass(frozen=True, slots=True)
class Event:
    """One event; ``data`` holds the event-specific fields (all JSON-ready)."""

    t: float
    event: str
    plug: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": self.t, "event": self.event}
        if self.plug is not None:
            d["plug"] = self.plug
        d.update(self.data)
        return d


class PlugActivity:
    """Level of one plug (off / standby / active) with hysteresis and dwell times."""

    def __init__(self, plug: str, *, on_w: float = 15.0, off_w: float = 8.0,
                 standby_w: float = 0.5, min_on_s: float = 5.0,
                 min_off_s: float = 60.0) -> None:
        if not 0 <= standby_w <= off_w <= on_w:
            raise ValueError("need 0 <= standby_w <= off_w <= on_w")
        self.plug = plug
        self.on_w, self.off_w, self.standby_w = on_w, off_w, standby_w
        self.min_on_s, self.min_off_s = min_on_s, min_off_s
        self.state: str | None = None
        self.active_since: float | None = None
        self._above_since: float | None = None
        self._below_since: float | None = None
        self.last_t: float | None = None
        self.last_period: tuple[float, float] | None = None  # (start, end) of the last active

    def update(self, t: float, watts: float) -> list[tuple[str, float]]:
        """Returns the transitions ``[(kind, t_of_transition)]``, kind in on/off/active/standby."""
        if not math.isfinite(watts) or watts < 0:
            raise ValueError(f"watts {watts!r} must be a finite number >= 0")
        if self.last_t is not None and t < self.last_t:
            raise ValueError(f"t {t} is earlier than the previous sample of plug {self.plug}")
        self.last_t = t
        out: list[tuple[str, float]] = []
        powered = STANDBY if watts >= self.standby_w else OFF
        if self.state == ACTIVE:
            if watts < self.off_w:
                if self._below_since is None:
                    self._below_since = t
                if t - self._below_since >= self.min_off_s:
                    out.append((STANDBY, self._below_since))
                    self.last_period = (self.active_since or self._below_since,
                                        self._below_since)
                    self.state, self.active_since = STANDBY, None
                    self._below_since = None
                    if powered == OFF:
                        out.append((OFF, t))
                        self.state = OFF
            else:
                self._below_since = None
            return out
        if watts >= self.on_w:
            if self._above_since is None:
                self._above_since = t
            if t - self._above_since >= self.min_on_s:
                if self.state in (None, OFF):
                    out.append(("on", self._above_since))
                out.append((ACTIVE, self._above_since))
                self.state, self.active_since = ACTIVE, self._above_since
                self._above_since = None
                self._below_since = None
                return out
            if self.state is None:
                self.state = STANDBY
            return out
        self._above_since = None
        if powered != self.state:
            if powered == OFF and self.state is not None:
                out.append((OFF, t))
            elif powered == STANDBY and self.state == OFF:
                out.append(("on", t))
            self.state = powered
        return out


def _default_prior(how: int) -> float:
    """Prior probability of some appliance activity during this hour-of-week."""
    h = how % 24
    if h >= 23 or h < 6:
        return 0.03
    if h < 8:
        return 0.15
    return 0.3


def _bins(v: Any, name: str) -> list[float]:
    if not isinstance(v, list) or len(v) != WEEK_HOURS:
        raise ValueError(f"routine: {name} must have 168 hour-of-week bins")
    return [float(x) for x in v]


class Routine:
    """When this household uses its appliances, by hour of the week (168 bins).

    Two rates per hour-of-week, both counted with exponential forgetting
    (``0.5 ** (age / half_life_s)``):

    * ``p_active``: how often the hour had some activity at all;
    * ``hazard``: how often it had activity *when the household had already
      been quiet for a while* at its start, in bands of ``quiet_s`` (2 h, and
      6 h: "no morning yet"). This is what makes a missed morning count: after
      a night, the morning almost always brings the kettle, even if each
      morning hour on its own is only used every other day. Independent hours
      would under-rate that and over-rate long quiet afternoons.

    Each rate pools the same hour-of-week (weight 1), the same hour on the other
    days (``day_pool``) and the neighbouring hours (``hour_pool``), plus a prior
    worth ``prior_weight`` hours (for a hazard band: the rate of the band below).

    :meth:`log_survival` is log P(no activity in [t0, t1]): ``p_active`` for the
    first ``quiet_s[0]`` of the gap, then the hazard of the band reached.
    :meth:`usual_gap_s` (start) is the length at which that probability falls
    below ``alpha``.
    """

    def __init__(self, *, half_life_s: float = 8 * 7 * 86400.0, alpha: float = 0.01,
                 prior_weight: float = 2.0, day_pool: float = 0.15, hour_pool: float = 0.5,
                 quiet_s: tuple[float, ...] = (2 * HOUR, 6 * HOUR), max_gap_s: float = 3 * 86400.0,
                 prior: dict[int, float] | None = None, utc_offset_s: float = 0.0) -> None:
        if not 0 < alpha < 1:
            raise ValueError("alpha must be between 0 and 1")
        self.half_life_s = half_life_s
        self.alpha = alpha
        self.prior_weight = prior_weight
        self.day_pool = day_pool
        self.hour_pool = hour_pool
        if not quiet_s or list(quiet_s) != sorted(set(quiet_s)) or quiet_s[0] <= 0:
            raise ValueError("quiet_s must be increasing positive durations")
        self.quiet_s = tuple(float(q) for q in quiet_s)
        self.max_gap_s = max_gap_s
        self.utc_offset_s = utc_offset_s
        self.prior = {h: (prior or {}).get(h, _default_prior(h)) for h in range(WEEK_HOURS)}
        self.a = [0.0] * WEEK_HOURS
        self.n = [0.0] * WEEK_HOURS
        self.last = [0.0] * WEEK_HOURS
        bands = len(self.quiet_s)
        self.ga = [[0.0] * WEEK_HOURS for _ in range(bands)]
        self.gn = [[0.0] * WEEK_HOURS for _ in range(bands)]
        self.glast = [[0.0] * WEEK_HOURS for _ in range(bands)]
        self._p_cache: dict[int, float] = {}
        self._h_cache: dict[tuple[int, int], float] = {}

    def how(self, t: float) -> int:
        return hour_of_week(t, self.utc_offset_s)

    @staticmethod
    def _add(a: list[float], n: list[float], last: list[float], h: int, t: float,
             active: bool, half_life_s: float) -> None:
        if n[h] > 0:
            d = 0.5 ** (max(0.0, t - last[h]) / half_life_s)
            a[h] *= d
            n[h] *= d
        a[h] += 1.0 if active else 0.0
        n[h] += 1.0
        last[h] = t

    def observe(self, hour_start: float, active: bool, quiet_for_s: float | None = None) -> None:
        """Record whether the hour starting at ``hour_start`` had activity;
        ``quiet_for_s``: how long the household had been quiet at its start."""
        h = self.how(hour_start)
        self._p_cache.clear()
        self._h_cache.clear()
        self._add(self.a, self.n, self.last, h, hour_start, active, self.half_life_s)
        band = self.band(quiet_for_s)
        if band >= 0:
            self._add(self.ga[band], self.gn[band], self.glast[band], h, hour_start, active,
                      self.half_life_s)

    def band(self, quiet_for_s: float | None) -> int:
        """Index of the hazard band for a household quiet for this long (-1: none)."""
        k = -1
        if quiet_for_s is not None:
            for i, q in enumerate(self.quiet_s):
                if quiet_for_s >= q:
                    k = i
        return k

    def history_hours(self) -> float:
        return sum(self.n)

    def _pooled(self, how: int, a: list[float], n: list[float], prior: float) -> float:
        num = self.prior_weight * prior
        den = self.prior_weight
        for dh, w0 in ((0, 1.0), (-1, self.hour_pool), (1, self.hour_pool)):
            for dd in range(7):
                hh = (how + dh + 24 * dd) % WEEK_HOURS
                w = w0 * (1.0 if dd == 0 else self.day_pool)
                num += w * a[hh]
                den += w * n[hh]
        return min(0.999, max(0.0, num / den))

    def p_active(self, how: int) -> float:
        """P(some activity in this hour-of-week)."""
        p = self._p_cache.get(how)
        if p is None:
            p = self._p_cache[how] = self._pooled(how, self.a, self.n, self.prior[how])
        return p

    def hazard(self, how: int, band: int = 0) -> float:
        """P(activity in this hour-of-week | quiet for at least ``quiet_s[band]`` before it)."""
        if band < 0:
            return self.p_active(how)
        p = self._h_cache.get((how, band))
        if p is None:
            prior = self.hazard(how, band - 1)
            p = self._h_cache[(how, band)] = self._pooled(how, self.ga[band], self.gn[band],
                                                          prior)
        return p

    def _rate(self, hs: float, into_gap_s: float) -> float:
        how = self.how(hs)
        p = self.hazard(how, self.band(into_gap_s))
        return math.log(max(1e-9, 1.0 - p)) / HOUR

    def _segments(self, t0: float, t1: float):
        """(start, length) pieces of [t0, t1], each in one hour and one hazard band."""
        t = t0
        cuts = [t0 + q for q in self.quiet_s]
        while t < t1:
            end = min(t1, math.floor(t / HOUR) * HOUR + HOUR)
            for cut in cuts:
                if t < cut < end:
                    end = cut
            yield t, end - t
            t = end

    def log_survival(self, t0: float, t1: float) -> float:
        """log P(no activity in [t0, t1]) under the routine."""
        return sum(self._rate(math.floor(t / HOUR) * HOUR, t - t0) * length
                   for t, length in self._segments(t0, min(t1, t0 + self.max_gap_s)))

    def usual_gap_s(self, start: float, level: float | None = None) -> float:
        """Longest plausible quiet spell that begins at ``start``: the length at which
        its probability falls below ``alpha`` (at most ``max_gap_s``)."""
        target = math.log(self.alpha) if level is None else level
        acc = 0.0
        for t, length in self._segments(start, start + self.max_gap_s):
            step = self._rate(math.floor(t / HOUR) * HOUR, t - start)
            if step < 0 and acc + step * length < target:
                return (t - start) + (target - acc) / step
            acc += step * length
        return self.max_gap_s

    def to_dict(self) -> dict[str, Any]:
        return {"half_life_s": self.half_life_s, "alpha": self.alpha,
                "prior_weight": self.prior_weight, "day_pool": self.day_pool,
                "hour_pool": self.hour_pool, "quiet_s": list(self.quiet_s),
                "max_gap_s": self.max_gap_s, "utc_offset_s": self.utc_offset_s,
                "prior": [self.prior[h] for h in range(WEEK_HOURS)],
                "a": list(self.a), "n": list(self.n), "last": list(self.last),
                "ga": [list(x) for x in self.ga], "gn": [list(x) for x in self.gn],
                "glast": [list(x) for x in self.glast]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Routine:
        """Read :meth:`to_dict` output; a version-1 routine (no hazard counts) starts
        its hazard from the prior."""
        prior = d.get("prior")
        r = cls(half_life_s=float(d["half_life_s"]), alpha=float(d["alpha"]),
                prior_weight=float(d["prior_weight"]), day_pool=float(d["day_pool"]),
                hour_pool=float(d["hour_pool"]),
                quiet_s=tuple(float(q) for q in d.get("quiet_s", (2 * HOUR, 6 * HOUR))),
                max_gap_s=float(d["max_gap_s"]),
                utc_offset_s=float(d.get("utc_offset_s", 0.0)),
                prior=None if prior is None else {h: float(v) for h, v in enumerate(prior)})
        for k in ("a", "n", "last"):
            setattr(r, k, _bins(d.get(k), k))
        bands = len(r.quiet_s)
        for k in ("ga", "gn", "glast"):
            v = d.get(k)
            if v is None:
                continue  # version 1: no hazard yet, it starts from the prior
            if not isinstance(v, list) or len(v) != bands:
                raise ValueError(f"routine: {k} must have one list per quiet_s band")
            setattr(r, k, [_bins(x, k) for x in v])
        return r


def _last_hour_start(hs: float, t: float) -> float:
    """The latest ``hs + k * HOUR`` (k >= 1) not after ``t``, as hour-by-hour steps give it."""
    k = max(1, math.floor((t - hs) / HOUR))
    while hs + (k + 1) * HOUR <= t:
        k += 1
    while k > 1 and hs + k * HOUR > t:
        k -= 1
    return hs + k * HOUR


class ActivityDetector:
    """Inactivity alarm, resumption and unusual continuous use for one household."""

    def __init__(self, plugs: list[str], *, min_inactivity_s: float = 3 * HOUR,
                 margin: float = 2.0, max_wait_s: float = 11 * HOUR, late_alpha: float = 0.015,
                 unusual_factor: float = 2.0, unusual_min_s: float = HOUR,
                 unusual_min_history: int = 3,
                 unattended: list[str] | tuple[str, ...] = (),
                 routine: Routine | None = None, state: dict[str, Any] | None = None,
                 plug_events: bool = False, **plug_kwargs: Any) -> None:
        if margin < 1:
            raise ValueError("margin must be >= 1")
        if max_wait_s < min_inactivity_s:
            raise ValueError("max_wait_s must be >= min_inactivity_s")
        self.plugs = list(plugs)
        self.min_inactivity_s = min_inactivity_s
        self.margin = margin
        self.max_wait_s = max_wait_s
        self.late_alpha = late_alpha
        self.unusual_factor = unusual_factor
        self.unusual_min_s = unusual_min_s
        self.unusual_min_history = unusual_min_history
        self.unattended = set(unattended)
        self.plug_events = plug_events
        self._plug_kwargs = plug_kwargs
        self.levels: dict[str, PlugActivity] = {p: PlugActivity(p, **plug_kwargs) for p in plugs}
        self.routine = routine if routine is not None else Routine()
        self.last_activity: float | None = None
        self.alarm_since: float | None = None  # time the alarm was raised
        self.alarm_threshold_s: float | None = None
        self.longest: dict[str, float] = {}
        self.periods: dict[str, int] = {}
        self._unusual_sent: set[str] = set()
        self._open: dict[str, float | None] = {}
        self._pending: list[tuple[float, float | None]] = []  # quiet hours of the gap in progress
        self._hour_start: float | None = None
        self._quiet_from: float | None = None  # last activity as of _hour_start
        self._threshold: tuple[float, float, float] | None = None  # (gap start, usual, threshold)
        self.now: float | None = None
        if state is not None:
            self.restore(state)

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "routine": self.routine.to_dict(),
                "last_activity": self.last_activity, "alarm_since": self.alarm_since,
                "alarm_threshold_s": self.alarm_threshold_s, "longest": self.longest,
                "periods": self.periods, "hour_start": self._hour_start,
                "quiet_from": self._quiet_from, "now": self.now,
                "pending": [list(x) for x in self._pending]}

    def restore(self, d: dict[str, Any]) -> None:
        """Take back what :meth:`to_dict` gave (state version 1, before the hazard, is
        accepted); ValueError, KeyError or TypeError if it is not such a state."""
        if d.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"unknown state version {d.get('version')!r}")
        self.routine = Routine.from_dict(d["routine"])
        self.last_activity = d.get("last_activity")
        self.alarm_since = d.get("alarm_since")
        self.alarm_threshold_s = d.get("alarm_threshold_s")
        self.longest = {k: float(v) for k, v in d.get("longest", {}).items()}
        self.periods = {k: int(v) for k, v in d.get("periods", {}).items()}
        self._hour_start = d.get("hour_start")
        self._quiet_from = d.get("quiet_from", self.last_activity)
        self.now = d.get("now")
        self._pending = [(float(a), None if b is None else float(b))
                         for a, b in d.get("pending", [])]
        self._threshold = None

    # -- decisions ----------------------------------------------------------
    def usual_s(self) -> float:
        """How long a quiet spell that began at the last activity may usually last."""
        return self._thresholds()[0]

    def threshold_s(self) -> float:
        """Time without activity, counted from the last activity, that raises the alarm.

        ``margin`` x the usual gap, but no later than ``max_wait_s`` unless the
        usual gap itself is longer (a household that always sleeps 12 h), and
        never before ``min_inactivity_s``. The margin keeps short daytime gaps
        from alarming on every quiet afternoon; ``max_wait_s`` keeps the answer
        to "someone fell in the evening" within half a day.
        """
        return self._thresholds()[1]

    def _thresholds(self) -> tuple[float, float]:
        start = self.last_activity
        if start is None:
            return math.inf, math.inf
        c = self._threshold
        if c is None or c[0] != start:
            usual = self.routine.usual_gap_s(start)
            thr = min(self.margin * usual, self.max_wait_s)
            if usual > thr:  # late already: alarm once the silence is merely unlikely
                thr = max(thr, self.routine.usual_gap_s(start, math.log(self.late_alpha)))
            thr = max(self.min_inactivity_s, thr)
            c = self._threshold = (start, usual, thr)
        return c[1], c[2]

    def quiet_until(self) -> float:
        """Until when ``tick`` can raise nothing if no sample comes: a replay ticks once
        there instead of every minute. ``math.inf`` while no alarm can come (no activity
        yet, or raised already); ``-math.inf`` (do not skip) while the hour of the last
        activity is still open (closing it teaches the routine, which moves the threshold).
        """
        if self.last_activity is None or self.alarm_since is not None:
            return math.inf
        if self._hour_start is None or self._hour_start <= self.last_activity:
            return -math.inf
        return self.last_activity + self.threshold_s()

    def update(self, t: float, plug: str, watts: float) -> list[Event]:
        lvl = self.levels.get(plug)
        if lvl is None:
            lvl = self.levels[plug] = PlugActivity(plug, **self._plug_kwargs)
            self.plugs.append(plug)
        events = self.tick(t)
        for kind, tt in lvl.update(t, watts):
            if self.plug_events:
                events.append(Event(tt, kind, plug, {"watts": watts}))
            if kind == ACTIVE:
                self._unusual_sent.discard(plug)
                if plug not in self.unattended:
                    events += self._activity(t, plug)
        # period bookkeeping
        self._track_period(t, plug, lvl, events)
        return events

    def _track_period(self, t: float, plug: str, lvl: PlugActivity, events: list[Event]) -> None:
        ps = self._open
        if lvl.state == ACTIVE:
            ps[plug] = lvl.active_since
            dur = t - (lvl.active_since or t)
            longest = self.longest.get(plug, 0.0)
            if (plug not in self._unusual_sent
                    and self.periods.get(plug, 0) >= self.unusual_min_history
                    and dur > max(self.unusual_min_s, self.unusual_factor * longest)):
                self._unusual_sent.add(plug)
                events.append(Event(t, "unusual_use", plug, {
                    "duration_s": round(dur, 1), "longest_s": round(longest, 1),
                    "since": lvl.active_since}))
        elif plug in ps:
            ps.pop(plug)
            start, end = lvl.last_period or (t, t)
            dur = max(0.0, end - start)
            self.longest[plug] = max(self.longest.get(plug, 0.0), dur)
            self.periods[plug] = self.periods.get(plug, 0) + 1
            self._unusual_sent.discard(plug)
            if plug not in self.unattended:
                events += self._activity(end, plug)

    def _commit(self) -> None:
        for hs, quiet_for in self._pending:
            self.routine.observe(hs, False, quiet_for)
        self._pending.clear()
        self._threshold = None

    def _activity(self, t: float, plug: str) -> list[Event]:
        out: list[Event] = []
        if self.last_activity is not None and t <= self.last_activity:
            return out
        if self.alarm_since is not None and t <= self.alarm_since:
            self.last_activity = t  # the end of a use seen late (samples missing)
            return out
        self._commit()
        if self.alarm_since is not None:
            gap = t - (self.last_activity if self.last_activity is not None else t)
            out.append(Event(t, "activity_resumed", plug, {
                "inactive_s": round(gap, 1), "alarm_since": self.alarm_since}))
            self.alarm_since = None
            self.alarm_threshold_s = None
        self.last_activity = t
        return out

    def tick(self, t: float) -> list[Event]:
        """Advance the clock: close hour-of-week samples and raise due alarms."""
        if self.now is not None and t < self.now:
            return []
        self.now = t
        if self._hour_start is None:
            self._hour_start = math.floor(t / HOUR) * HOUR
            self._quiet_from = self.last_activity
        while t >= self._hour_start + HOUR:
            hs = self._hour_start
            if self.last_activity is None or (self.alarm_since is not None
                                              and self.last_activity < hs
                                              and hs >= self.alarm_since):
                # Nothing to learn from this hour or any later one until a sample comes:
                # jump to the hour of t at once (a long gap in the data costs no work).
                self._hour_start = _last_hour_start(hs, t)
                self._quiet_from = self.last_activity
                break
            quiet_for = None if self._quiet_from is None else hs - self._quiet_from
            if self.last_activity is not None:
                if self.last_activity >= hs:
                    self._commit()
                    self.routine.observe(hs, True, quiet_for)
                elif self.alarm_since is None or hs < self.alarm_since:
                    self._pending.append((hs, quiet_for))
            self._hour_start = hs + HOUR
            self._quiet_from = self.last_activity
        if self.last_activity is None or self.alarm_since is not None:
            return []
        gap = t - self.last_activity
        if gap <= self.min_inactivity_s:
            return []
        usual, thr = self._thresholds()
        if gap > thr:
            self.alarm_since = t
            self.alarm_threshold_s = thr
            return [Event(t, "inactivity_alarm", None, {
                "inactive_s": round(gap, 1), "usual_s": round(usual, 1),
                "threshold_s": round(thr, 1), "last_activity": self.last_activity})]
        return []
