"""The daemon's ``status.json``: the snapshot ``citynode status`` reads (agent/tools/status.py).

The daemon writes it atomically (temporary file + rename) every ``period_s`` seconds and at
once when a sensor's health, the uplink or the spool's mode changes; readers therefore
never see half a file and never need to talk to the daemon. The file lives in
``$RUNTIME_DIRECTORY`` (``RuntimeDirectory=citynode`` in the unit: ``/run/citynode``, a
tmpfs, so it costs the SD card nothing) or, when systemd gives none, in the state
directory, written less often there to spare the card. A clean shutdown leaves a last
snapshot with ``"state": "stopped"``. The daemon is read through :class:`NodeView` only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from drivers.files import write_atomic

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.core.sampling import SensorLoop
    from agent.wire.spool import Spool
    from agent.wire.uplink import Uplinks

log = logging.getLogger("citynode.status")

FORMAT = 1
FILENAME = "status.json"
PERIOD_RUNTIME_S = 5.0  # tmpfs: cheap
PERIOD_STATE_S = 30.0  # the state directory is on the SD card: ~6 MB/day instead of ~35


class NodeView(Protocol):
    """What the status file shows of the running daemon; :class:`agent.core.daemon.Node`
    implements it (tests pass stand-ins)."""

    cfg: Config
    config_path: Path | None
    session: int  # the boot session
    started_wall: float  # Unix time the daemon started
    messages: int  # messages sent since the start
    loops: Sequence[SensorLoop]  # one per sensor: health, latest values, counters
    uplink: Uplinks | None  # None in local mode
    spool: Spool | None

    @property
    def last_seq(self) -> int | None:
        """The sequence number of the last numbered message; None before the first."""
        ...

    def feature_status(self) -> dict[str, dict[str, Any]]:
        """Each running feature's status (``models``: model name -> version)."""
        ...


# -- where the file lives ---------------------------------------------------------------
def runtime_dir(env: Mapping[str, str] = os.environ) -> Path | None:
    """systemd's RuntimeDirectory (the first one, if several), else None."""
    first = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(first) if first else None


def status_path(state_dir: Path, env: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon writes: the runtime directory, else the state directory."""
    return (runtime_dir(env) or state_dir) / FILENAME


# -- the snapshot ----------------------------------------------------------------------------
def _wall_of(mono: float | None, now_wall: float, now_mono: float) -> float | None:
    return None if mono is None else round(now_wall - (now_mono - mono), 3)


def _oldest_pending(spool: Any, now_wall: float) -> float | None:
    """Age of the oldest unacknowledged message; acknowledged rows awaiting deletion are
    skipped, hence the second, larger read when the first finds only those."""
    oldest: float | None = None
    for lane in ("event", "telemetry"):
        if not spool.counts.get(lane):
            continue
        for limit in (64, 1100):
            rows = spool.iter_ready(lane, 0, limit=limit)
            if rows:
                oldest = min(rows[0].created, oldest if oldest is not None else rows[0].created)
                break
    return None if oldest is None else round(max(0.0, now_wall - oldest), 1)


def build_snapshot(node: NodeView, *, state: str = "running", period_s: float = PERIOD_RUNTIME_S,
                   last_disconnect: float | None = None, now_wall: float | None = None,
                   now_mono: float | None = None) -> dict[str, Any]:
    """Everything ``citynode status`` shows, from what the daemon already keeps."""
    from agent import __version__
    from agent.core.sensors import type_name
    from agent.wire.quantities import unit

    now_wall = time.time() if now_wall is None else now_wall
    now_mono = time.monotonic() if now_mono is None else now_mono
    cfg = node.cfg
    types = {s.name: type_name(s) for s in cfg.sensor}
    sensors = []
    for lp in list(node.loops):
        values = dict(lp.last_values)
        at = lp.last_reading_at
        sensors.append({
            "name": lp.sensor, "type": types.get(lp.sensor, ""),
            "health": str(lp.health.value), "detail": lp.detail,
            "values": values, "units": {k: unit(k) for k in values if unit(k)},
            "last_reading_age_s": None if at is None else round(max(0.0, now_mono - at), 1),
            "readings": lp.readings, "errors": lp.errors, "reopens": lp.reopens,
        })
    uplink = None
    uplinks: list[dict[str, Any]] = []
    up = node.uplink
    if up is not None:
        m = (cfg.uplinks() or [cfg.mqtt])[0]  # the first uplink: [mqtt], else [[uplink]]
        uplink = {
            "connected": bool(up.connected), "state": up.state,
            **_broker(up, m), "tls": m.tls, "protocol": up.protocol_name,
            "client_id": up.client_id,
            "last_connect": _wall_of(up.connected_since, now_wall, now_mono),
            "last_disconnect": last_disconnect, "reconnects": up.reconnects,
            "published": up.published, "refused": up.refused, "historical": up.historical,
            "pending": up.pending(),
        }
        uplinks = [_uplink_status(u, cfg_u, now_wall, now_mono)
                   for u, cfg_u in zip(getattr(up, "members", ()), cfg.uplinks(), strict=False)]
    spool = None
    sp = node.spool
    if sp is not None:
        st = sp.stats()
        spool = {
            "path": str(sp.path), "depth": st["depth"],
            "lanes": {"event": st["events"], "telemetry": st["telemetry"]},
            "bytes": st["bytes"], "max_bytes": sp.max_bytes,
            "oldest_pending_age_s": _oldest_pending(sp, now_wall),
            "mode": "memory (disk full)" if st["disk_full"] else "disk",
            "evicted": {"event": st["evicted_events"], "telemetry": st["evicted_telemetry"]},
        }
    models: dict[str, str] = {}
    features: dict[str, dict[str, Any]] = {}
    for name, fs in node.feature_status().items():
        fs = dict(fs)
        models.update(fs.pop("models", None) or {})
        if fs:
            features[name] = fs
    return {
        "format": FORMAT, "state": state, "node_id": cfg.node.id, "version": __version__,
        "pid": os.getpid(), "started_at": round(node.started_wall, 3),
        "written_at": round(now_wall, 3), "uptime_s": round(now_wall - node.started_wall, 1),
        "period_s": period_s, "boot_session": node.session,
        "last_seq": node.last_seq, "messages": node.messages,
        "config": str(node.config_path or ""), "local_mode": cfg.local_mode,
        "sensors": sensors, "uplink": uplink, "uplinks": uplinks, "spool": spool,
        "models": models, "features": features,
        "update": _update_status(node),
    }


def _update_status(node: Any) -> dict[str, Any] | None:
    """The release this daemon runs and the last update (agent/update/updater.py)."""
    updater = getattr(node, "updater", None)
    return updater.status() if updater is not None else None


def _broker(u: Any, m: Any) -> dict[str, Any]:
    """The broker in use (host:port); with failover brokers also its place in the list
    (``broker_index``, 0 = the primary) and how many there are (``brokers``)."""
    brokers = getattr(u, "brokers", None)
    if not isinstance(brokers, list) or not brokers:
        return {"broker": f"{m.host}:{m.port}"}
    out: dict[str, Any] = {"broker": u.broker_address}
    if len(brokers) > 1:
        out.update(broker_index=u.broker, brokers=len(brokers))
    return out


def _uplink_status(u: Any, m: Any, now_wall: float, now_mono: float) -> dict[str, Any]:
    """One uplink: its platform, connection, delivery counts and backlog in the spool."""
    facts = u.session.status()
    return {
        "name": u.name, "format": m.format, "connected": bool(u.connected), "state": u.state,
        **_broker(u, m), "tls": m.tls, "protocol": u.protocol_name,
        "client_id": u.client_id,
        "last_connect": _wall_of(u.connected_since, now_wall, now_mono),
        "reconnects": u.reconnects, "published": u.published, "refused": u.refused,
        "historical": u.historical, "pending": u.pending(),
        "platform": {str(k): v for k, v in facts.items()
                     if isinstance(v, (str, int, float, bool)) or v is None},
    }


def write_snapshot(path: Path, data: dict[str, Any]) -> None:
    """Temp file + rename: a reader sees the old or the new snapshot, never half of one.
    No fsync: a snapshot lost to a power cut is worthless anyway, and fsync wears the card.
    Mode 0644, readable by operators whatever the umask: no secrets inside."""
    write_atomic(path, json.dumps(data, separators=(",", ":")) + "\n", mode=0o644, fsync=False)


class StatusWriter:
    """Keeps ``status.json`` current from the daemon's main loop; never raises.

    :meth:`tick` is cheap when nothing is due (it compares health states), so the main
    loop calls it every iteration and changes show up within one iteration.
    """

    def __init__(self, node: NodeView, state_dir: Path, env: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.path = status_path(state_dir, env)
        self.period_s = PERIOD_RUNTIME_S if runtime_dir(env) else PERIOD_STATE_S
        self._clock = clock
        self._next = 0.0
        self._sig: tuple = ()
        self._was_connected = False
        self._last_disconnect: float | None = None
        self._failing = False

    def _signature(self, state: str) -> tuple:
        n = self.node
        return (state, tuple((lp.sensor, lp.health) for lp in n.loops),
                n.uplink.connected if n.uplink is not None else None,
                getattr(n.uplink, "broker", None),  # a failover move shows at once
                n.spool.disk_full if n.spool is not None else None)

    def _track(self) -> None:
        connected = bool(self.node.uplink is not None and self.node.uplink.connected)
        if self._was_connected and not connected:
            self._last_disconnect = round(time.time(), 3)
        self._was_connected = connected

    def tick(self, state: str = "running") -> None:
        try:
            self._track()
            sig = self._signature(state)
            now = self._clock()
            if sig == self._sig and now < self._next:
                return
            self._sig, self._next = sig, now + self.period_s
            self._write(state)
        except Exception as exc:  # the status file is a convenience: never stop the daemon
            self._failed(exc)

    def close(self) -> None:
        """Leave a last snapshot saying the daemon stopped cleanly."""
        try:
            self._track()
            self._write("stopped")
        except Exception as exc:
            self._failed(exc)

    def _write(self, state: str) -> None:
        snap = build_snapshot(self.node, state=state, period_s=self.period_s,
                              last_disconnect=self._last_disconnect)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_snapshot(self.path, snap)
        if self._failing:
            self._failing = False
            log.info("status file %s written again", self.path, extra={"EVENT": "status_file"})

    def _failed(self, exc: Exception) -> None:
        if not self._failing:  # once per run of failures, not every 0.2 s
            self._failing = True
            log.warning("cannot write the status file %s (citynode status will say the "
                        "daemon is not running): %s", self.path, exc,
                        extra={"EVENT": "status_file_error"})
