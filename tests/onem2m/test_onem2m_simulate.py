"""``citynode simulate --site full --onem2m HOST:PORT`` against a real Mobius (issue 17,
item 6): the emulated node registers an AE named after itself and fills its containers,
as Mobius's own HTTP API shows; the SenML uplink stays on simulate's private broker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from onem2m_harness import ROOT, Mobius

pytestmark = [pytest.mark.onem2m, pytest.mark.timeout(240)]

NODE = "sim-node-1"  # simulate's node id: the AE's resource name


def test_simulate_registers_its_node_with_mobius(mobius: Mobius, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--site", "full", "--interval", "2",
         "--duration", "15", "--workdir", str(tmp_path / "sim"),
         "--onem2m", f"127.0.0.1:{mobius.mqtt_port}", "--cse-id", mobius.cse_id.lstrip("/"),
         "--cse-name", mobius.cse_name],
        capture_output=True, text=True, cwd=ROOT, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"http://127.0.0.1:7579/{mobius.cse_name}/{NODE}?rcn=4" in proc.stderr
            and "curl -H 'X-M2M-RI: 1' -H 'X-M2M-Origin: S'" in proc.stderr)
    base = f"{mobius.cse_name}/{NODE}"
    status, body = mobius.http("GET", base)
    assert status == 200, body
    assert body["m2m:ae"]["aei"] == f"S{NODE}" and body["m2m:ae"]["api"] == "Ncitynode"
    # Every sensor of the full site has a container with reports in it.
    for sensor in ("pm0", "sds", "sps", "sht", "bme"):
        status, body = mobius.http("GET", f"{base}/{sensor}")
        assert status == 200, (sensor, body)
        assert body["m2m:cnt"]["cni"] >= 1, (sensor, body)
    reports = mobius.instances(f"{base}/pm0")
    assert all(c["kind"] == "telemetry" for c in reports), reports
    pm25 = [c["readings"]["pm25"] for c in reports if "pm25" in c["readings"]]
    assert pm25 and pm25[0]["u"] == "ug/m3", reports  # (the last window may be empty)
    state = mobius.instances(f"{base}/state")
    assert any(c.get("values", {}).get("status") == "online" for c in state), state
    # The platform heard the node, and the CSE answered every kind of request.
    summary = next(line for line in proc.stderr.splitlines() if line.startswith("# onem2m on"))
    assert "'requests'" in summary and "'responses'" in summary, summary
