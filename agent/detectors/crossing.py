"""People crossing a line in front of a tracking radar (HLK-LD2450), from its report frames.

Pure: no I/O, no clock of its own, the standard library only. Feed every report frame to
:meth:`CrossingCounter.update` as ``(t, [(slot, x_m, y_m), ...])`` (x along the pavement, y
the distance out from the radar, metres; :func:`from_mm` converts the radar's millimetres);
it returns the :class:`Crossing`\\ s the frame completed. The daemon's counting feature
(agent/features/counting.py) and ``citynode detect crossings`` run this same class.

**Tracking, not slots.** The radar reports up to three targets in numbered slots, but its
slots are not identities: it swaps them when two people pass each other, it reports short
ghosts (multipath) and drops frames. So the slot number is ignored and each frame's targets
are associated with tracks by position, each track's position predicted from its velocity
(an alpha-beta filter, :attr:`CrossingParams.alpha` and ``beta``):

* association is optimal within a gate (:attr:`~CrossingParams.gate_m`, widened by
  ``slack_mps`` for each second since the track was last seen; a track seen once has no
  velocity yet, so its gate allows ``max_speed_mps``); confirmed tracks choose first, then
  tentative ones; a target left over starts a tentative track;
* a tentative track is *born* (confirmed) after :attr:`~CrossingParams.birth_frames` frames
  with its target, so a ghost of a few frames never becomes a track; sooner
  (``fast_birth_frames``) if it came in at the edge of the field of view, moved
  ``fast_birth_m`` since, and shares its x and its way with no other track (a ghost is a
  mirror image: the same x, the same vx): a cyclist at 9 m/s, or a walker right in front
  of the radar where the field is narrow, is in it for a handful of frames; it dies if unseen for
  ``tentative_gap_s`` or missing from more than ``tentative_misses`` frames in a row (ghosts
  flicker; two ghosts of one mirror image do not add up to a person);
* a confirmed track coasts on its prediction through dropped frames and short fades, and
  dies when unseen for ``coast_s``; one that stood still (under ``still_mps``) is not
  coasted: the radar fades people who stand still, and such a track would only wait to
  grab the next passer-by.

**Counting.** A track crosses the line ``x = line_x_m`` when it goes from beyond the
hysteresis band (``|x - line| > hysteresis_m``) on one side to beyond it on the other;
``in`` is towards +x. Sides are judged on measurements only, never on coasted predictions
(someone who stops short of the line and fades out is not carried across it by their last
velocity). The crossing's time is when the track last crossed the line itself,
interpolated between two measurements, and with a zone (``zone_y_m``) it counts only if y
was inside the zone there. Consequences: someone wobbling near the line is counted at most
once (a crossing needs twice the band's half-width of travel, and the next one needs as
much back); two people side by side are two tracks; a track crossing while still tentative
is counted when it is born.

Inside the band, a track is *firmly* on a side when its filtered position has been
``firm_m`` past the line for ``firm_frames`` frames in a row (the filter halves the noise;
the radar's few centimetres never reach 0.1 m three frames running). That settles what the
band alone cannot: a track first seen inside the band (someone out of a door beside the
line) takes the side it is firmly on; one that goes firmly across and firmly back (a U-turn
just past the line, a walk along the line on its far side, a stop just past it then back)
crossed twice, counted when it is back; one that goes firmly across and is lost walking (it
left the field there: through a door, out of range) crossed once, counted at its loss. The
time of such a crossing is the track's first crossing of the line since it was firmly on
its side (someone standing on the line flips sides in the noise; they arrived first).

The radar stops reporting someone who stands still (they *fade*). A confirmed track lost
standing near the line leaves a note (its side and crossing times) for ``relink_s``; a
track born within ``relink_m`` of it carries on from that note, so a person who stops on
the line, fades, and walks on is counted once, the right way. A track lost walking left the
field (or was lost a moment): its note lasts two coasts, so the next person out of the
same door minutes later does not carry on from it.

**Frames without targets change nothing but the flags and the occupancy**: tracks live and
die by time, not by frame counts, and deaths are settled at frames with targets, so a
replay of only the frames with targets (``citynode detect crossings`` reads no empty
frames) counts exactly what the daemon counted. A crossing completed by a track's loss is
therefore reported with the next frame that has a target (its time is still when the line
was crossed).

**Flags** (:attr:`CrossingCounter.flags`): ``warming_up`` for ``warmup_s`` after the first
frame (and after frames resume following a gap of ``no_frames_s``): people already in the
field may be missed or half counted; ``blind`` when no frame has arrived for ``no_frames_s``,
or frames arrive without any target for ``blind_after_s`` (covered, misaligned, or a street
empty for that long); ``saturated`` when every frame has had ``max_targets`` targets for
``saturated_after_s``: likely more people than the radar can track, so counts are low.

Privacy: a :class:`Crossing` carries a time and a direction, nothing else; positions stay
inside the counter and appear only in its DEBUG log lines (docs/counting.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["FLAGS", "Crossing", "CrossingCounter", "CrossingParams", "from_mm"]

Direction = Literal["in", "out"]
WARMING_UP, BLIND, SATURATED = "warming_up", "blind", "saturated"
#: Every flag :attr:`CrossingCounter.flags` may hold.
FLAGS = (WARMING_UP, BLIND, SATURATED)
#: Tracks kept at most (three targets a frame, their tentative tracks and coasting ones):
#: memory stays bounded whatever the input.
MAX_TRACKS = 12
#: Lost-track notes kept at most.
MAX_NOTES = 8
#: Detections per frame looked at (the radar has three slots; a replay could claim more).
MAX_TARGETS_PER_FRAME = 8
#: The gate of a track stops widening after this long unseen (CrossingParams.slack_mps).
SLACK_CAP_S = 1.0
#: Cost of leaving a detection unassigned: more than any gated distance, so the assignment
#: first matches as many detections as it can, then minimises the distances.
_UNASSIGNED = 1e6

log = logging.getLogger("citynode.crossing")


@dataclass(frozen=True, slots=True)
class Crossing:
    """Someone crossed the line: when (s, the frame clock) and which way (``in`` = towards
    +x). No position, no identity."""

    t: float
    direction: Direction


@dataclass(frozen=True, slots=True)
class CrossingParams:
    """The tracker's knobs, with why each default is what it is. The LD2450's
    ``[sensor.counting]`` table (drivers/families/counting.py) exposes the first eight under
    the same names and defaults (tests/test_crossing.py checks they agree)."""

    #: Half-width of the band around the line a track must leave on both sides to count:
    #: ten times the radar's position noise (a few cm), and wider than a person standing
    #: and shifting their weight (~0.1-0.2 m).
    hysteresis_m: float = 0.3
    #: Largest distance between a track's predicted position and a target it takes: a
    #: walker moves 0.14 m a frame (prediction removes most of it), and two people side by
    #: side are 0.5 m or more apart.
    gate_m: float = 0.5
    #: Frames with a target before a tentative track is born: one more than the longest
    #: multipath ghost modelled (6 frames, 0.6 s; the radar's emulator), and short
    #: enough for a jogger passing a metre from the radar (a 3.5 m wide field, ~1 s).
    birth_frames: int = 7
    #: A confirmed track unseen this long dies: bridges dropped frames and short fades, and
    #: is shorter than the radar's own fade-out of people standing still (~8 s).
    coast_s: float = 2.0
    #: Where the line is crossed is kept this long for a track lost near it: people wait
    #: at a bus stop for minutes, faded out by the radar while they stand still.
    relink_s: float = 300.0
    #: Frames with targets but none for this long raise ``blind`` (an hour: a street empty
    #: for longer is rare; set it for the site).
    blind_after_s: float = 3600.0
    #: Every frame full (``max_targets`` targets) for this long raises ``saturated``: three
    #: people for 10 s is longer than three walkers take to pass (~7 s across the field).
    saturated_after_s: float = 10.0
    #: ``warming_up`` lasts this long after the first frame: tracks of people already in
    #: the field need ``birth_frames`` and may have missed their crossing.
    warmup_s: float = 5.0
    #: Confirmed tracks seen within this count as present (occupancy): a dropped frame
    #: does not make someone absent, a coasting track beyond it probably left.
    present_s: float = 0.5
    #: A tentative track unseen this long dies (four dropped frames in a row; a ghost's
    #: track dies with it).
    tentative_gap_s: float = 0.5
    #: A tentative track whose target is missing from more frames (with targets) in a row
    #: than this dies: ghosts flicker, a person the radar tracks is in every frame. Two
    #: ghosts of the same mirror image a few frames apart never add up to a birth.
    tentative_misses: int = 1
    #: How much a track's gate widens per second since it was seen, for at most a second:
    #: a walker changing pace or direction while the radar lost them (dropped frames).
    #: Beyond a second the gate stops growing: the radar loses people who stand still, not
    #: people who walk, so a long gap is not a long walk.
    slack_mps: float = 1.0
    #: A confirmed track slower than this when last seen was standing still: the radar
    #: fades such people out, so it is not coasted (it dies after ``tentative_gap_s``; its
    #: note carries its side to the track that picks them up when they move again).
    still_mps: float = 0.3
    #: Fastest target the tracker follows (a fast cyclist at 32 km/h, 9 m/s): bounds the
    #: gate of a track with no velocity yet, and any velocity estimate.
    max_speed_mps: float = 10.0
    #: A new track within this distance of a lost track's note carries on from it: a
    #: person standing still moves a few tens of cm while faded.
    relink_m: float = 0.8
    #: Alpha-beta filter gains at 10 frames a second: position follows the measurement
    #: half way, velocity learns from 15 % of the residual (noise 4 cm -> ~0.1 m/s).
    alpha: float = 0.5
    beta: float = 0.15
    #: Targets the radar reports at most (LD2450 multi-target tracking: 3).
    max_targets: int = 3
    #: No frame for this long is ``blind`` (the driver's no-data timeout: 5 s).
    no_frames_s: float = 5.0
    #: A track measured at least this far past the line in ``firm_frames`` frames in a
    #: row is across it, though still inside the band: 2.5 times the radar's position
    #: noise (4 cm), three times in a row, never happens to someone on the other side.
    firm_m: float = 0.1
    firm_frames: int = 3
    #: A tentative track is born after ``fast_birth_frames`` frames already if it appeared
    #: within ``edge_m`` of the edge of the field (people walk into the field; a ghost
    #: appears anywhere), moved ``fast_birth_m`` since, and no other track shares its x
    #: and its way (a multipath ghost is the mirror image of a real person in a reflector
    #: along the pavement: the same x, the same vx). A cyclist at 9 m/s a metre from the
    #: radar is in the field for five frames, a walker 0.4 m from it for eight.
    fast_birth_frames: int = 3
    fast_birth_m: float = 0.5
    #: A cyclist's first frame may be a frame's ride (0.9 m) inside the field.
    edge_m: float = 1.0
    #: The field of view (HLK-LD2450 manual: 6 m, 60 degrees either side of the axis).
    field_range_m: float = 6.0
    field_half_angle_deg: float = 60.0
    #: Two tracks are twins (one may be the other's ghost) when their x differ by at most
    #: this and their vx by at most ``twin_mps``.
    twin_m: float = 0.4
    twin_mps: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"{f.name} must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"{f.name} must not be negative, got {v!r}")
        for name in ("birth_frames", "firm_frames", "fast_birth_frames"):
            v = getattr(self, name)
            if v < 1 or int(v) != v:
                raise ValueError(f"{name} is a whole number of frames, at least 1")
        if self.max_targets < 1 or int(self.max_targets) != self.max_targets:
            raise ValueError("max_targets is a whole number, at least 1")
        if not 0 < self.alpha <= 1 or not 0 <= self.beta <= 1:
            raise ValueError("alpha is in (0, 1] and beta in [0, 1]")
        for name in ("gate_m", "coast_s", "tentative_gap_s", "max_speed_mps", "no_frames_s",
                     "field_range_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(slots=True)
class _Track:
    """One person (or a ghost, until birth proves otherwise): filtered position and
    velocity for association; the last measurement and the side for counting."""

    x: float
    y: float
    t: float                      # last measured
    vx: float = 0.0
    vy: float = 0.0
    hits: int = 1
    misses: int = 0               # frames with targets in a row without this track's
    confirmed: bool = False
    side: int = 0                 # -1 / +1 beyond the band, 0 not yet known
    mx: float = 0.0               # last measured position and its time
    my: float = 0.0
    mt: float = 0.0
    cross_t: float | None = None  # where and when it last crossed the line itself
    cross_y: float | None = None
    pending: list[Crossing] = field(default_factory=list)  # crossed while tentative
    note: _Note | None = None     # the lost track it carries on from
    fx: float = 0.0               # where and when it appeared (fast birth)
    fy: float = 0.0
    ft: float = 0.0
    lean: int = 0                 # -1 / +1: the side of the line it is firmly on now,
    lean_n: int = 0               # for lean_n frames in a row (firm_m, firm_frames)
    over: tuple[float, float | None] | None = None  # firmly across, inside the band: when
                                                    # it crossed there, and where (y)
    first: tuple[float, float | None] | None = None  # its first crossing of the line since
                                                     # it was firmly on its side


@dataclass(slots=True)
class _Note:
    """What a confirmed track lost near the line leaves behind."""

    t: float
    x: float
    y: float
    side: int
    cross_t: float | None
    cross_y: float | None
    over: tuple[float, float | None] | None = None
    until: float = math.inf       # forgotten after this
    first: tuple[float, float | None] | None = None


def from_mm(targets: Iterable[Sequence[Any]]) -> list[tuple[int, float, float]]:
    """``(slot, x_mm, y_mm, ...)`` rows (the radar's :class:`Target` of the HLK-LD2450's codec,
    a replay's CSV rows) as the ``(slot, x_m, y_m)`` :meth:`CrossingCounter.update` takes:
    the daemon and the replay convert the same way."""
    return [(int(t[0]), float(t[1]) / 1000.0, float(t[2]) / 1000.0) for t in targets]


class CrossingCounter:
    """Line crossings, occupancy and data-quality flags from radar frames (see the module
    docstring). ``zone_y_m``: only crossings with y inside ``(min, max)`` count, and only
    tracks inside it are occupancy; None: the whole field."""

    def __init__(self, line_x_m: float = 0.0, zone_y_m: tuple[float, float] | None = None,
                 params: CrossingParams | None = None) -> None:
        if not math.isfinite(line_x_m):
            raise ValueError("line_x_m must be a finite number")
        if zone_y_m is not None:
            lo, hi = (float(v) for v in zone_y_m)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError("zone_y_m is (min, max) with min < max, in metres")
            zone_y_m = (lo, hi)
        self.line_x_m = float(line_x_m)
        self.zone_y_m = zone_y_m
        self.params = params or CrossingParams()
        self._tracks: list[_Track] = []
        self._notes: list[_Note] = []
        self.counts = {"in": 0, "out": 0}
        self.now: float | None = None           # the latest time seen (frame or tick)
        self._warm_from: float | None = None    # warming up since
        self._last_frame: float | None = None
        self._last_target: float | None = None
        self._full_since: float | None = None

    # -- what it says now ------------------------------------------------------------------
    @property
    def occupancy(self) -> int:
        """Confirmed tracks in the zone seen within ``present_s``: people there now."""
        if self.now is None:
            return 0
        horizon = self.now - self.params.present_s
        return sum(1 for tr in self._tracks
                   if tr.confirmed and tr.t >= horizon and self._in_zone(tr.y))

    @property
    def flags(self) -> set[str]:
        """``warming_up``, ``blind``, ``saturated`` as they stand at the latest time seen."""
        p, now = self.params, self.now
        out: set[str] = set()
        if now is None or self._warm_from is None:
            return {WARMING_UP}
        if now - self._warm_from < p.warmup_s:
            out.add(WARMING_UP)
        since_frame = self._last_frame if self._last_frame is not None else self._warm_from
        if now - since_frame > p.no_frames_s:
            out.add(BLIND)
        elif self._last_frame is not None:
            since_target = self._last_target if self._last_target is not None \
                else self._warm_from
            if now - since_target >= p.blind_after_s:
                out.add(BLIND)
            if self._full_since is not None \
                    and self._last_frame - self._full_since >= p.saturated_after_s:
                out.add(SATURATED)
        return out

    @property
    def tracks(self) -> int:
        """Confirmed tracks alive (seen or coasting) at the latest time seen."""
        now = self.now
        return sum(1 for tr in self._tracks
                   if tr.confirmed and (now is None or now - tr.t <= self._limit(tr)))

    def snapshot(self) -> dict[str, Any]:
        """The state as counts (``citynode status``, tests): no position, no time of anyone."""
        return {"in": self.counts["in"], "out": self.counts["out"], "tracks": self.tracks,
                "occupancy": self.occupancy, "flags": sorted(self.flags)}

    # -- input -----------------------------------------------------------------------------
    def tick(self, t: float) -> None:
        """The clock moved without a frame (flags: no frames is ``blind``)."""
        if not math.isfinite(t):
            raise ValueError("t must be a finite number")
        if self.now is None:
            self.now = self._warm_from = t
        elif t > self.now:
            self.now = t

    def update(self, t: float, targets: Sequence[Sequence[float]]) -> list[Crossing]:
        """One report frame: its time (s, not before the previous frame's) and its targets
        as ``(slot, x_m, y_m)``; the crossings it completed, in time order."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError("t must be a finite number")
        if self._last_frame is not None and t < self._last_frame:
            raise ValueError(f"frame at t = {t} is earlier than the previous one")
        dets = self._detections(targets)
        p = self.params
        if self._last_frame is None or t - self._last_frame > p.no_frames_s:
            self._warm_from = t  # the first frame, or frames again after a gap
        self._last_frame = t
        self.now = t if self.now is None else max(self.now, t)
        if dets:
            self._last_target = t
        if len(dets) >= p.max_targets:
            if self._full_since is None:
                self._full_since = t
        else:
            self._full_since = None
        if not dets:
            return []
        out: list[Crossing] = []
        self._expire(t, out)
        free = list(range(len(dets)))
        seen: set[int] = set()
        for confirmed in (True, False):
            group = [tr for tr in self._tracks if tr.confirmed is confirmed]
            for tr, i in self._assign(group, dets, free, t):
                self._measure(tr, t, *dets[i], out)
                seen.add(id(tr))
                free.remove(i)
        self._miss(seen)
        for i in free:
            self._birth(t, *dets[i], out)
        for c in out:
            self.counts[c.direction] += 1
        out.sort(key=lambda c: c.t)
        return out

    # -- inside ----------------------------------------------------------------------------
    def _detections(self, targets: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
        """Positions in a canonical order: the slot numbers (and their order) never matter."""
        dets: list[tuple[float, float]] = []
        for target in targets[:MAX_TARGETS_PER_FRAME]:
            x, y = float(target[1]), float(target[2])
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError("target positions must be finite numbers")
            dets.append((x, y))
        dets.sort()
        return dets

    def _in_zone(self, y: float | None) -> bool:
        z = self.zone_y_m
        return z is None or (y is not None and z[0] <= y <= z[1])

    def _limit(self, tr: _Track) -> float:
        """How long ``tr`` lives unseen: a confirmed track that moved coasts."""
        p = self.params
        moving = math.hypot(tr.vx, tr.vy) >= p.still_mps
        return p.coast_s if tr.confirmed and moving else p.tentative_gap_s

    def _expire(self, t: float, out: list[Crossing]) -> None:
        """Tracks unseen too long die (a confirmed one near the line leaves a note); old
        notes go. Run on frames with targets only, so a replay without the empty frames
        sees the same deaths at the same frames.

        A confirmed track that was walking and is lost after it went firmly across the
        line (inside the band) without coming firmly back walked out of the field there:
        it crossed."""
        p = self.params
        keep: list[_Track] = []
        for tr in self._tracks:
            if t - tr.t <= self._limit(tr):
                keep.append(tr)
                continue
            if tr.confirmed:
                if tr.over is not None and math.hypot(tr.vx, tr.vy) >= p.still_mps:
                    self._count(tr, tr.over, -tr.side, out)
                    tr.side, tr.over = -tr.side, None
                self._leave_note(tr)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("track %s lost at x=%.2f y=%.2f after %d frames",
                          "confirmed" if tr.confirmed else "tentative", tr.mx, tr.my, tr.hits)
        self._tracks = keep
        self._notes = [n for n in self._notes if t <= n.until]

    def _miss(self, seen: set[int]) -> None:
        """Tentative tracks whose target is not in this frame (a frame with targets: empty
        frames never count, so a replay without them agrees)."""
        keep: list[_Track] = []
        for tr in self._tracks:
            if not tr.confirmed and id(tr) not in seen:
                tr.misses += 1
                if tr.misses > self.params.tentative_misses:
                    continue
            keep.append(tr)
        self._tracks = keep

    def _leave_note(self, tr: _Track) -> None:
        p = self.params
        if tr.side == 0 or abs(tr.mx - self.line_x_m) > p.hysteresis_m + p.relink_m:
            return
        # Someone standing still faded out and will be back where they stood; someone
        # walking left the field (or was lost a moment): their note is for a moment only,
        # not for the next person to come out of the same door minutes later.
        still = math.hypot(tr.vx, tr.vy) < p.still_mps
        until = tr.mt + (p.relink_s if still else 2.0 * p.coast_s)
        self._notes.append(_Note(tr.mt, tr.mx, tr.my, tr.side, tr.cross_t, tr.cross_y,
                                 tr.over, until, tr.first))
        self._notes.sort(key=lambda n: n.t)  # the same order however the deaths were timed
        del self._notes[:-MAX_NOTES]

    def _gate(self, tr: _Track, t: float) -> float:
        p = self.params
        dt = max(0.0, t - tr.t)
        if tr.hits < 2:  # no velocity yet: it may have moved at any plausible speed
            return p.gate_m + p.max_speed_mps * dt
        return p.gate_m + p.slack_mps * min(dt, SLACK_CAP_S)

    def _assign(self, tracks: list[_Track], dets: list[tuple[float, float]], free: list[int],
                t: float) -> list[tuple[_Track, int]]:
        """The pairing of ``tracks`` with the ``free`` detections that matches the most
        detections within the gates, then has the least total distance (exhaustive over
        the few gated candidates: at most three detections)."""
        if not tracks or not free:
            return []
        candidates: list[list[tuple[float, int]]] = []
        for i in free:
            x, y = dets[i]
            cands: list[tuple[float, int]] = []
            for k, tr in enumerate(tracks):
                dt = max(0.0, t - tr.t)
                d = math.hypot(x - (tr.x + tr.vx * dt), y - (tr.y + tr.vy * dt))
                if d <= self._gate(tr, t):
                    cands.append((d, k))
            candidates.append(cands)
        best_cost = math.inf
        best: list[int] = []
        choice: list[int] = []
        used: set[int] = set()

        def search(j: int, cost: float) -> None:
            nonlocal best_cost, best
            if cost >= best_cost:
                return
            if j == len(free):
                best_cost, best = cost, list(choice)
                return
            for d, k in candidates[j]:
                if k not in used:
                    used.add(k)
                    choice.append(k)
                    search(j + 1, cost + d)
                    choice.pop()
                    used.discard(k)
            choice.append(-1)
            search(j + 1, cost + _UNASSIGNED)
            choice.pop()

        search(0, 0.0)
        return [(tracks[k], free[j]) for j, k in enumerate(best) if k >= 0]

    def _measure(self, tr: _Track, t: float, x: float, y: float, out: list[Crossing]) -> None:
        """A track takes a detection: filter, side, birth."""
        p = self.params
        dt = t - tr.t
        if tr.hits < 2:
            if dt > 0:
                tr.vx, tr.vy = (x - tr.x) / dt, (y - tr.y) / dt
            tr.x, tr.y = x, y
        else:
            px, py = tr.x + tr.vx * max(dt, 0.0), tr.y + tr.vy * max(dt, 0.0)
            rx, ry = x - px, y - py
            tr.x, tr.y = px + p.alpha * rx, py + p.alpha * ry
            if dt > 0:
                tr.vx += p.beta * rx / dt
                tr.vy += p.beta * ry / dt
        speed = math.hypot(tr.vx, tr.vy)
        if speed > p.max_speed_mps:
            tr.vx, tr.vy = tr.vx * p.max_speed_mps / speed, tr.vy * p.max_speed_mps / speed
        tr.t = t
        tr.hits += 1
        tr.misses = 0
        self._side(tr, t, x, y, out)
        if not tr.confirmed and (tr.hits >= p.birth_frames or self._fast(tr, t)):
            self._confirm(tr, out)

    def _inside(self, x: float, y: float) -> float:
        """How far ``(x, y)`` is inside the radar's field of view (m; 0 at its edge)."""
        p = self.params
        r = math.hypot(x, y)
        if y <= 0.0 or r >= p.field_range_m:
            return 0.0
        off_axis = math.degrees(math.atan2(abs(x), y))
        to_side = r * math.sin(math.radians(max(0.0, p.field_half_angle_deg - off_axis)))
        return min(p.field_range_m - r, to_side)

    def _fast(self, tr: _Track, t: float) -> bool:
        """A tentative track that moved far enough, fast, and is nobody's twin: a real
        person crossing a narrow part of the field (near the radar) or a fast one (a
        cyclist), not a ghost. Its way is judged from where it appeared to where it is
        (steadier than the filter's first velocities)."""
        p = self.params
        if tr.hits < p.fast_birth_frames or tr.mt <= tr.ft \
                or math.hypot(tr.mx - tr.fx, tr.my - tr.fy) < p.fast_birth_m \
                or self._inside(tr.fx, tr.fy) > p.edge_m:
            return False
        vx = (tr.mx - tr.fx) / (tr.mt - tr.ft)
        for other in self._tracks:
            if other is tr:
                continue
            ox = other.x + other.vx * max(0.0, t - other.t)
            if abs(ox - tr.mx) <= p.twin_m and abs(other.vx - vx) <= p.twin_mps:
                return False
        return True

    def _birth(self, t: float, x: float, y: float, out: list[Crossing]) -> None:
        """A detection no track took: a tentative track, carrying on from a note if one was
        left near it."""
        if len(self._tracks) >= MAX_TRACKS:
            return
        tr = _Track(x, y, t, mx=x, my=y, mt=t, fx=x, fy=y, ft=t)
        near = [n for n in self._notes
                if math.hypot(n.x - x, n.y - y) <= self.params.relink_m]
        if near:
            n = min(near, key=lambda n: (math.hypot(n.x - x, n.y - y), -n.t))
            tr.side, tr.mx, tr.my, tr.mt = n.side, n.x, n.y, n.t
            tr.cross_t, tr.cross_y, tr.over, tr.note = n.cross_t, n.cross_y, n.over, n
            tr.first = n.first
        self._side(tr, t, x, y, out)
        self._tracks.append(tr)
        if self.params.birth_frames <= 1:
            self._confirm(tr, out)

    def _confirm(self, tr: _Track, out: list[Crossing]) -> None:
        tr.confirmed = True
        out.extend(tr.pending)
        tr.pending.clear()
        if tr.note is not None and tr.note in self._notes:
            self._notes.remove(tr.note)  # carried on: no other track may
        tr.note = None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("track born at x=%.2f y=%.2f v=(%.2f, %.2f)", tr.x, tr.y, tr.vx, tr.vy)

    def _side(self, tr: _Track, t: float, x: float, y: float, out: list[Crossing]) -> None:
        """The line test on a measured position (see the module docstring)."""
        p = self.params
        line, h = self.line_x_m, p.hysteresis_m
        if (x >= line) != (tr.mx >= line):
            # between two measurements; after a fade (longer than a coast) the person stood
            # where they were last seen and moved on just before this frame
            f = (line - tr.mx) / (x - tr.mx) if t - tr.mt <= p.coast_s else 1.0
            tr.cross_t = tr.mt + f * (t - tr.mt)
            tr.cross_y = tr.my + f * (y - tr.my)
            if tr.first is None:
                tr.first = (tr.cross_t, tr.cross_y)
        tr.mx, tr.my, tr.mt = x, y, t
        d = x - line
        dl = tr.x - line
        lean = 1 if dl >= p.firm_m else -1 if dl <= -p.firm_m else 0
        if lean and lean == tr.lean:
            tr.lean_n += 1
        else:
            tr.lean, tr.lean_n = lean, 1 if lean else 0
        firm = tr.lean if tr.lean_n >= p.firm_frames else 0
        s = 1 if d > h else -1 if d < -h else 0
        if tr.side == 0:  # first seen inside the band: its side once it is firmly on one
            tr.side = s or firm
        if tr.side == 0 or ((s or firm) == tr.side and tr.over is None):
            tr.first = None  # on its side: the next crossing of the line is the first
            return
        if s == -tr.side:  # from beyond the band to beyond it on the other side
            self._count(tr, tr.over or (tr.cross_t, tr.cross_y), s, out)
            tr.side, tr.over, tr.first = s, None, None
        elif firm == -tr.side:
            if tr.over is None:  # firmly across, inside the band: since its first crossing
                # (someone standing on the line while the noise flips their side)
                tr.over = tr.first or (tr.cross_t if tr.cross_t is not None else t,
                                       tr.cross_y)
        elif tr.over is not None and tr.side in (s, firm):  # firmly back: across and back
            self._count(tr, tr.over, -tr.side, out)
            self._count(tr, (tr.cross_t, tr.cross_y), tr.side, out)
            tr.over, tr.first = None, None

    def _count(self, tr: _Track, when: tuple[float | None, float | None], s: int,
               out: list[Crossing]) -> None:
        """A crossing towards side ``s`` at ``when`` (time, y where the line was crossed);
        held until birth for a tentative track; only inside the zone."""
        t, y = when
        if t is None:
            t = tr.mt
        if not self._in_zone(y if y is not None else tr.my):
            return
        crossing = Crossing(t, "in" if s > 0 else "out")
        (out if tr.confirmed else tr.pending).append(crossing)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("track crossed %s at y=%.2f (%s)", crossing.direction,
                      y if y is not None else tr.my,
                      "confirmed" if tr.confirmed else "pending birth")
