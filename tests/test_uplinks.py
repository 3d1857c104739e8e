"""Several uplinks over one spool, seen from the platforms: an outage of one holds no
other back, and the one that was down gets everything when it is back."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.tools.simulate import Mosquitto, find_mosquitto, free_port, write_config
from tests.uplink_blackbox import Platform, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto is not installed (make test installs it "
                                       "when run as root)")


def test_one_uplink_down_holds_no_other_back_and_loses_nothing(tmp_path):
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    ports = {"city": free_port(), "backup": free_port()}
    brokers = {}
    for name, port in ports.items():
        (tmp_path / name).mkdir()
        brokers[name] = Mosquitto(tmp_path / name, port=port, persistence=True)
        brokers[name].start()
    city = Platform(ports["city"], "citynode/u1/#")
    backup = Platform(ports["backup"], "backup/u1/#")
    city.start()
    backup.start()
    model = PMS5003Model(itertools.cycle([(5, 8, 11, 5, 8, 11)]), interval_s=0.5, warmup_s=0)
    emu = SerialEmulator(model, tmp_path / "dev" / "pms0")
    emu.start()
    cfg = tmp_path / "c.toml"
    write_config(cfg, node_id="u1", state_dir=tmp_path / "state", ports=[emu.path],
                 interval=1, fmt="senml-cbor", broker=("127.0.0.1", ports["city"]),
                 warmup_s=0, read_interval_s=0.3)
    text = cfg.read_text().replace("backoff_max_s = 10", "backoff_max_s = 1")
    cfg.write_text(text + f"""
[[uplink]]
name = "backup"
format = "senml-json"
host = "127.0.0.1"
port = {ports['backup']}
prefix = "backup"
backoff_max_s = 1
""")
    agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                             cwd=ROOT, stdout=open(tmp_path / "agent.log", "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _outage_of_one(city, backup, brokers, agent, emu, tmp_path)
    finally:  # a failed check leaves no broker behind
        if agent.poll() is None:
            agent.kill()
        for b in brokers.values():
            b.stop()


def _outage_of_one(city: Platform, backup: Platform, brokers: dict, agent, emu,
                   tmp_path: Path) -> None:
    try:
        assert wait_for(lambda: len(backup.unique()) >= 3 and len(city.unique()) >= 3, 20)
        brokers["backup"].stop()
        down_at = time.time()
        time.sleep(5)
        # The city's platform got live telemetry all along.
        live = [a for a in city.since(down_at) if a.leaf == "telemetry" and not a.h]
        assert len(live) >= 3, city.since(down_at)
        status = json.loads((tmp_path / "state" / "status.json").read_text())
        down = {u["name"]: u["connected"] for u in status["uplinks"]}
        assert down == {"main": True, "backup": False}
        brokers["backup"].start()
        # Back: the backup platform gets every number the city got, the backlog marked.
        assert wait_for(lambda: city.unique() <= backup.unique(), 30), \
            sorted(city.unique() - backup.unique())
        assert any(a.h for a in backup.since(down_at))
    finally:
        agent.terminate()
        agent.wait(20)
        emu.stop()
    time.sleep(0.5)
    assert city.unique() == backup.unique()  # the goodbye too, on both
    seqs = sorted(q for _, q in city.unique())
    assert seqs == list(range(len(seqs)))  # and no gap
    city.stop()
    backup.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "uplink backup disconnected" in log and "Traceback" not in log


def test_a_second_senml_uplink_on_the_same_prefix_speaks_its_own_format(tmp_path):
    """[mqtt] in SenML-CBOR and an [[uplink]] in SenML-JSON with the same prefix (another
    broker): the second re-encodes what the spool holds; [mqtt] sends it as it is."""
    from agent.wire import formats
    from agent.wire.model import Pack, Record
    from agent.wire.session import Context, Item
    from agent.wire.topics import Topics

    topics = Topics("citynode", "n1")
    cbor, js = formats.get("senml-cbor"), formats.get("senml-json")
    pack = Pack(1763900000, 3, 7, [Record("pm25", value=12)], kind="telemetry")
    item = Item("telemetry", topics.telemetry, cbor.encode(pack).payload, cbor.content_type)
    for uplink, fmt, want in (("main", cbor, cbor), ("backup", js, js)):
        ctx = Context(node="n1", topics=topics, home=topics, boot=3, version="", sensors=(),
                      state_dir=tmp_path, uplink=uplink)
        (out,) = fmt.session(ctx).render(item)
        assert out.topic == topics.telemetry and out.content_type == want.content_type
        assert formats.decode(out.payload, out.content_type) == pack.__class__(
            1763900000, 3, 7, [Record("pm25", value=12)])
