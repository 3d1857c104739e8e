"""``python -m bench.models``: the on-device model's size, inference latency with the TFLite
runtimes, the daemon's memory with the fall model loaded and the fire detector running,
and the fall alarm's latency. Only fall detection has a model: fire detection runs on
rules (docs/fire.md; bench/eval_fire.py judges it).

* Size of each shipped ``agent/models/*.tflite`` (target <= 16 KB, int8).
* Inference latency, median and p99 over 2,000 inferences on realistic inputs (features
  in physical units to a probability: scaling and int8 quantization included), with
  ``ai-edge-litert`` through its C library (what the daemon uses), the same package's
  Python interpreter, and ``tflite-runtime`` in ``.venv-tflite`` (made by ``make bench``:
  tflite-runtime 2.14 needs numpy < 2), measured in the same run.
* The daemon's RSS (VmRSS and its high-water mark) with the fall model loaded, the fire
  detector on the climate, PM and gas readings, and emulated sensors running: three
  accelerometers replaying SisFall falls, SHT3x, BME280, SPS30 and SGP30 on the emulated
  bus (inside the daemon), a PMS5003 behind a pty, a private mosquitto (target <= 45 MiB).
  The reference, measured in the same run, is the same daemon with the fall and fire
  detectors switched off; the largest mappings are listed, and whether numpy was loaded.
* Fall alarm latency: from the last sample of the confirmation window to the alarm at
  the broker, on the same machine's monotonic clock (``fall:confirm_t`` in the alarm),
  three emulated accelerometers replaying SisFall falls (the SPS30 holds 0x69);
  target p99 <= 100 ms.

Exits 1 when a target is missed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "agent" / "models"
TFLITE_VENV = ROOT / ".venv-tflite"
SISFALL = ROOT / ".." / "shared" / "data" / "sisfall"

LATENCY_SNIPPET = r"""
import json, sys, time
import numpy as np
from agent.models.runtime import Model
out = {}
for path in sys.argv[2:]:
    m = Model.load(path, runtime=sys.argv[1])
    rng = np.random.default_rng(0)
    mean, std = np.array(m.meta.mean), np.array(m.meta.std)
    xs = [(mean + std * rng.standard_normal(m.meta.input_shape)).astype("float32")
          for _ in range(50)]
    for x in xs[:20]:
        m.predict(x)
    lat, inv = [], []
    for i in range(2000):
        x = xs[i % len(xs)]
        t = time.perf_counter()
        m.predict(x)
        lat.append(time.perf_counter() - t)
        inv.append(m.last_latency_s)
    lat.sort()
    inv.sort()
    out[m.meta.name] = [inv[len(inv) // 2], inv[int(len(inv) * 0.99)],
                        lat[len(lat) // 2], lat[int(len(lat) * 0.99)]]
print(json.dumps(out))
"""


# What the daemon's memory budget is spent on, each measured in a fresh process against
# the same process before the step (VmRSS after - before; docs/models.md quotes these).
COST_SNIPPET = r"""
import sys
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
import agent
from agent.models.runtime import Model, model_path
exec(sys.argv[1])
before = rss()
exec(sys.argv[2])
print(rss() - before)
"""
COSTS = [  # (what, set-up not counted, the step counted)
    ("numpy", "", "import numpy"),
    ("the fall model through ai-edge-litert's Python interpreter (numpy included)", "",
     "Model.load(model_path('fall'), runtime='ai-edge-litert-python')"),
    ("the fall model through ai-edge-litert's C library (the daemon's path)", "",
     "Model.load(model_path('fall'), runtime='ai-edge-litert')"),
    ("paho's urllib.request, were it loaded (deferred in the daemon)",
     "import agent.wire.uplink", "import urllib.request; urllib.request.getproxies"),
]


def import_costs(python: str = sys.executable) -> list[tuple[str, float | str]]:
    """(what, MiB) for each of :data:`COSTS`; a string says why it was not measured."""
    out: list[tuple[str, float | str]] = []
    for label, setup, stmt in COSTS:
        proc = subprocess.run([python, "-c", COST_SNIPPET, setup, stmt], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
        last = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
        out.append((label, int(last[0]) / 1024 if last else
                    (proc.stderr.strip().splitlines() or ["failed"])[-1]))
    return out


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(q * len(s)))]


def latency(python: str, runtime: str, models: list[Path]) -> dict[str, list[float]] | str:
    proc = subprocess.run([python, "-c", LATENCY_SNIPPET, runtime, *map(str, models)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _config(path: Path, state: Path, broker: tuple[str, int], pms_port: Path | None,
            accels: int, interval: float, models: bool = True) -> None:
    trials = ["SA01/F05_R01", "SA02/F03_R01", "SA03/F01_R01", "SA04/F07_R01"]
    sisfall = (SISFALL / "SA01.npz").exists()
    parts = [f'[node]\nid = "bench-models"\nstate_dir = "{state}"\n',
             f"[report]\ninterval_s = {interval}\n",
             f'[mqtt]\nhost = "{broker[0]}"\nport = {broker[1]}\n',
             "[fall]\ncancel_s = 0\n" if models else
             "[fall]\nenabled = false\n[fire]\nenabled = false\n"]
    where = [("adxl345", 0x53), ("adxl345", 0x1D), ("mpu6050", 0x68), ("mpu6050", 0x69)]
    for i in range(accels):
        kind, addr = where[i]
        src = f"sisfall:{trials[i]}" if sisfall else "rest"
        parts.append(f'[[sensor]]\ntype = "{kind}"\nname = "acc{i}"\nbus = "emulator"\n'
                     f'address = {addr}\nrate_hz = 100\nemulator_source = "{src}"\n'
                     f'prefix = "a{i}."\n')
    parts += ['[[sensor]]\ntype = "sht3x"\nname = "sht"\nbus = "emulator"\n',
              '[[sensor]]\ntype = "bme280"\nname = "bme"\nbus = "emulator"\nprefix = "b."\n',
              '[[sensor]]\ntype = "sps30"\nname = "sps"\nbus = "emulator"\nprefix = "s."\n',
              '[[sensor]]\ntype = "sgp30"\nname = "gas"\nbus = "emulator"\n'
              'humidity_from = "sht"\n']
    if pms_port is not None:
        parts.append(f'[[sensor]]\ntype = "pms5003"\nname = "pm"\nport = "{pms_port}"\n'
                     'prefix = "p."\nwarmup_s = 0\nduty_cycle = false\n')
    path.write_text("\n".join(parts))


def _mappings(pid: int, top: int = 6) -> tuple[list[tuple[float, str]], bool]:
    """The largest resident mappings of ``pid`` (MiB, name) and whether numpy is mapped."""
    agg: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            name = Path(parts[5]).name if len(parts) > 5 and parts[5].startswith("/") else (
                parts[5] if len(parts) > 5 else "[anon]")
        elif parts and parts[0] == "Rss:":
            agg[name] = agg.get(name, 0) + int(parts[1])
    ranked = sorted(((kb / 1024, n) for n, kb in agg.items()), reverse=True)[:top]
    return ranked, any("numpy" in n for n in agg)


def run_node(seconds: float, accels: int, out=print, *,
             models: bool = True) -> tuple[dict, list[float]]:
    """Run the real daemon; returns its memory figures and the fall alarm latencies."""
    from agent.tools.simulate import Mosquitto, Subscriber
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    with tempfile.TemporaryDirectory(prefix="citynode-bench-") as tmp:
        d = Path(tmp)
        (d / "mosq").mkdir()
        broker = Mosquitto(d / "mosq")
        broker.start()
        emu = SerialEmulator(PMS5003Model(interval_s=1.0, warmup_s=0.0), d / "pms0")
        emu.start()
        latencies: list[float] = []

        def on_msg(topic: str, data: dict, retained: bool) -> None:
            now = time.monotonic()
            recs = {r["n"]: r.get("v", r.get("vs")) for r in data.get("records", [])}
            if recs.get("fall:event") == "alarm" and "fall:confirm_t" in recs:
                latencies.append(now - float(recs["fall:confirm_t"]))

        sub = Subscriber(broker.host, broker.port, "citynode/bench-models/event", on_msg)
        sub.start()
        cfg = d / "c.toml"
        _config(cfg, d / "state", (broker.host, broker.port), emu.path, accels, 10,
                models=models)
        logf = open(d / "agent.log", "wb")
        # the environment of deploy/citynode.service (malloc arenas, bytecode): the daemon
        # is measured as it runs on a node
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "MALLOC_ARENA_MAX": "2"}
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                                cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        mem: dict = {}
        try:
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                time.sleep(1)
                if proc.poll() is not None:
                    tail = (d / "agent.log").read_text(errors="replace")[-1500:]
                    raise SystemExit(f"the daemon exited {proc.returncode}:\n{tail}")
                status = Path(f"/proc/{proc.pid}/status").read_text()
                for key in ("VmRSS", "VmHWM"):
                    line = next(ln for ln in status.splitlines() if ln.startswith(key))
                    mem[key] = int(line.split()[1]) / 1024
            mem["top"], mem["numpy"] = _mappings(proc.pid)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
            logf.close()
            sub.stop()
            emu.stop()
            broker.stop()
    return mem, latencies


def main(out=print) -> int:
    failed = False
    models = sorted(MODELS.glob("*.tflite"))
    if not models:
        out("no shipped models in agent/models (make train)")
        return 1
    for m in models:
        size = m.stat().st_size
        ok = size <= 16 * 1024
        failed |= not ok
        out(f"{'PASS' if ok else 'FAIL'}  {m.name}: {size} bytes ({size / 1024:.1f} KB, "
            f"target <= 16 KB)")
    runs = [("ai-edge-litert", sys.executable), ("ai-edge-litert-python", sys.executable)]
    tfl = TFLITE_VENV / "bin" / "python"
    if tfl.exists():
        runs.append(("tflite-runtime", str(tfl)))
    else:
        out(f"tflite-runtime: not measured ({TFLITE_VENV} missing; make bench creates it)")
    for runtime, python in runs:
        res = latency(python, runtime, models)
        if isinstance(res, str):
            out(f"      {runtime}: {res}")
            continue
        for name, (p50, p99, w50, w99) in res.items():
            out(f"      {runtime:21s} {name:4s} inference median {p50 * 1e6:6.1f} us, p99 "
                f"{p99 * 1e6:6.1f} us; with scaling and int8 quantization {w50 * 1e6:6.1f} / "
                f"{w99 * 1e6:6.1f} us")
    out("      memory each piece would cost, in a fresh process:")
    for label, mib in import_costs():
        out(f"        {label}: " + (f"+{mib:.1f} MiB" if isinstance(mib, float) else mib))
    ref, _ = run_node(float(os.environ.get("BENCH_REF_S", "20")), 3, out, models=False)
    mem, lat = run_node(float(os.environ.get("BENCH_NODE_S", "90")), 3, out)
    rss, hwm = mem.get("VmRSS", float("nan")), mem.get("VmHWM", float("nan"))
    ok = hwm <= 45
    failed |= not ok
    out(f"{'PASS' if ok else 'FAIL'}  daemon memory with both detectors (the fall model), 3 "
        f"accelerometers, 4 I2C chips and a PMS5003: RSS {rss:.1f} MiB, peak {hwm:.1f} MiB "
        "(target <= 45 MiB)")
    ref_hwm = ref.get("VmHWM", float("nan"))
    out(f"      reference, same node with fall and fire off: peak {ref_hwm:.1f} MiB; the "
        f"detectors and the model add {hwm - ref_hwm:+.1f} MiB ({hwm / ref_hwm:.2f}x); numpy "
        f"loaded: {'yes' if mem.get('numpy') else 'no'}")
    out("      largest mappings: " + ", ".join(f"{n} {mib:.1f}" for mib, n in mem.get("top", [])))
    if lat:
        p50, p99 = statistics.median(lat), pct(lat, 0.99)
        ok = p99 <= 0.100
        failed |= not ok
        out(f"{'PASS' if ok else 'FAIL'}  fall alarm latency, last confirmation sample -> "
            f"broker: n={len(lat)}, median {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
            f"max {max(lat) * 1e3:.1f} ms (target p99 <= 100 ms)")
    else:
        out("FAIL  fall alarm latency: no alarm reached the broker"
            + ("" if (SISFALL / "SA01.npz").exists() else " (SisFall data missing)"))
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
