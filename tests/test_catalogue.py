"""Conformance of every catalogued device, generated from drivers/catalogue.py.

A device added to the catalogue is covered here without writing a test: its spec is
consistent with its configuration schema, its README has wiring and a sample configuration
that ``citynode config check`` accepts, ``citynode frames`` decodes the README's example
capture, and on its emulator ``citynode doctor`` identifies it and the daemon publishes its
quantities. Every ``citynode simulate --site`` runs too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.core import config
from agent.tools.cli import main as cli
from agent.tools.simulate import catalogue_site, find_mosquitto, write_config
from agent.wire import quantities
from drivers import catalogue
from drivers.readme import example_capture, sample_table
from drivers.spec import CaptureCodec, DeviceSpec, FrameCodec

ROOT = Path(__file__).resolve().parent.parent
SPECS = list(catalogue.specs().values())
IDS = [s.type for s in SPECS]
each_device = pytest.mark.parametrize("spec", SPECS, ids=IDS)


def _quantity_choices(spec: DeviceSpec) -> set[str]:
    hint = typing.get_type_hints(spec.config)["quantities"]
    (item,) = typing.get_args(hint)
    return set(typing.get_args(item))


def _write(path: Path, tables: list[dict[str, Any]]) -> Path:
    write_config(path, node_id="conf-1", state_dir=path.parent / "state", ports=[],
                 interval=1.0, fmt="senml-json", broker=None, sensors=tables)
    return path


# -- the spec and the README -------------------------------------------------------------------
@each_device
def test_spec_agrees_with_its_configuration(spec: DeviceSpec) -> None:
    assert spec.config.__struct_config__.tag == spec.type
    assert spec.type in config.SENSOR_TYPES
    assert set(spec.quantities) == _quantity_choices(spec), "every configurable quantity " \
        "needs a unit and range in the spec, and nothing else"
    default = msgspec.convert({"name": "x", "port": "/dev/null"}, spec.config) \
        if spec.bus == "uart" else msgspec.convert({"name": "x"}, spec.config)
    assert set(default.quantities) <= set(spec.quantities)
    if spec.bus == "i2c":
        assert spec.addresses and default.address in spec.addresses
        assert {f.name for f in msgspec.structs.fields(spec.config)} >= {
            "bus", "address", "emulator_faults"}
        assert spec.emulator is not None, "an I2C device needs its chip's emulator"
        if spec.identify is not None:
            assert spec.chip, "a device that can be identified names the chip it must be"
    if spec.bus == "uart":
        assert isinstance(spec.frames(), FrameCodec) if spec.frames else False
        assert spec.emulator is not None, "a serial device needs its emulator"
    if spec.samples:  # a FIFO chip (I2C) or a device that streams frames (the LD2450 radar)
        assert spec.bus in ("i2c", "uart")


@each_device
def test_readme_has_wiring_and_a_sample_configuration(spec: DeviceSpec) -> None:
    text = spec.readme.read_text(encoding="utf-8")
    assert re.search(r"^## Wiring", text, re.M), f"{spec.readme}: no '## Wiring' section"
    table = sample_table(spec)
    assert table["type"] in (spec.type, *spec.aliases)


@each_device
def test_the_docs_index_lists_the_device(spec: DeviceSpec) -> None:
    index = (ROOT / "docs" / "drivers.md").read_text(encoding="utf-8")
    assert f"(../drivers/{spec.folder}/README.md)" in index, "add its row to docs/drivers.md"


@each_device
def test_sample_configuration_passes_config_check(spec: DeviceSpec, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "c.toml", [sample_table(spec)])
    assert cli(["config", "check", "--no-devices", str(path)]) == 0, \
        capsys.readouterr().err


I2C_SPECS = [s for s in SPECS if s.bus == "i2c"]


@pytest.mark.parametrize("spec", I2C_SPECS, ids=[s.type for s in I2C_SPECS])
def test_an_address_the_chip_cannot_take_is_a_configuration_error(spec: DeviceSpec) -> None:
    """Caught by ``config check`` (exit 78), not by a traceback when the daemon opens it."""
    wrong = next(a for a in range(0x03, 0x78) if a not in spec.addresses)
    table = {**sample_table(spec), "bus": "emulator", "address": wrong}
    text = '[node]\nid = "n1"\n[[sensor]]\n' + "\n".join(
        f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict))
    with pytest.raises(config.ConfigError) as err:
        config.parse(text, "c.toml", check_devices=False)
    assert err.value.key.startswith("sensor[0]") and "address" in str(err.value)


def test_a_quantity_means_the_same_on_every_device() -> None:
    seen: dict[str, tuple[str, Any]] = {}
    for spec in SPECS:
        for name, measured in spec.quantities.items():
            first = seen.setdefault(name, (spec.type, measured.quantity))
            assert measured.quantity == first[1], f"{name}: {spec.type} and {first[0]} differ"
            assert quantities.lookup(name) == measured.quantity


def test_types_and_aliases_are_unique() -> None:
    names = [n for s in SPECS for n in (s.type, *s.aliases)]
    assert len(names) == len(set(names))
    assert len({s.folder for s in SPECS}) == len(SPECS)


def test_spec_modules_import_no_driver() -> None:
    """The catalogue loads every spec; a node runs a few devices: their drivers, codecs and
    emulators (and pyserial, smbus2, gpiozero) stay out of its memory until configured."""
    code = ("import sys\nfrom drivers import catalogue\ncatalogue.specs()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('serial', 'smbus2', "
            "'gpiozero') or m.endswith(('.device', '.codec', '.emulator', '.protocol'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.frames is not None],
                         ids=[s.type for s in SPECS if s.frames is not None])
def test_frames_decodes_the_readme_capture(spec: DeviceSpec, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "capture.txt"
    path.write_text(example_capture(spec))
    assert cli(["frames", spec.type, str(path)]) == 0, capsys.readouterr().err
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    kinds = {d.get("type") for d in docs}
    if isinstance(spec.frames(), CaptureCodec):
        assert docs and "rejected" not in kinds, docs
    else:
        assert "frame" in kinds, docs


# -- every device on its emulator: doctor, then the daemon ---------------------------------------
#: Long enough for the slowest warm-up in the catalogue (the SGP30's 15 s) and a report.
DAEMON_S = 19.0


class Site:
    def __init__(self, tables: list[dict[str, Any]], doctor: list[dict[str, Any]],
                 records: set[str], log: str) -> None:
        self.tables = {t["type"]: t for t in tables}
        self.doctor = doctor
        self.records = records
        self.log = log


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("catalogue")
    emulators: list[Any] = []
    try:
        tables = catalogue_site(work, emulators)
        path = _write(work / "citynode.toml", tables)
        doctor = subprocess.run(
            [sys.executable, "-m", "agent", "doctor", "--config", str(path), "--json",
             "--only", "config,i2c,serial,gpio", "--listen-s", "4"],
            capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
        rows = json.loads(doctor.stdout or '{"rows": []}')["rows"]  # docs/doctor.md --json
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
        time.sleep(DAEMON_S)
        proc.send_signal(signal.SIGTERM)
        log, _ = proc.communicate(timeout=30)
        records = set(re.findall(r'"n":"([^"]+)"', log))
        (work / "daemon.log").write_text(log)
        yield Site(tables, rows, records, log)
    finally:
        for emu in emulators:
            emu.stop()


@each_device
def test_doctor_identifies_the_emulated_device(spec: DeviceSpec, site: Site) -> None:
    name = site.tables[spec.type]["name"]
    rows = [r for r in site.doctor if r["name"] in ("i2c", "serial", "gpio")
            and re.search(rf"(^|[ (]){re.escape(name)}([ )]|$)", r["target"])]
    assert rows, f"no doctor row for {name}: {site.doctor}"
    assert all(r["status"] == "OK" for r in rows), rows
    if spec.chip:
        assert any(spec.chip in r["detail"] for r in rows), rows


@each_device
def test_the_daemon_publishes_the_device_quantities(spec: DeviceSpec, site: Site) -> None:
    table = site.tables[spec.type]
    cfg = msgspec.convert(table, spec.config)
    want = {f"{cfg.prefix}{q}" for q in cfg.reported()}
    assert want, "the emulated configuration reports nothing"
    missing = want - site.records
    assert not missing, f"{spec.type}: no records {sorted(missing)}\n{site.log[-3000:]}"


# -- every simulate site ---------------------------------------------------------------------------
def _simulate_sites() -> list[str]:
    """The ``--site`` choices of ``citynode simulate``, as the command line offers them."""
    import argparse

    from agent.tools.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    site = next(a for a in sub.choices["simulate"]._actions if a.dest == "site")
    return list(site.choices)


SITES = _simulate_sites()


@pytest.mark.skipif(find_mosquitto() is None, reason="needs a mosquitto binary")
@pytest.mark.parametrize("name", SITES)
def test_every_simulate_site_runs(name: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--site", name, "--duration", "8",
         "--interval", "2", "--workdir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    topics = {json.loads(line)["topic"].rsplit("/", 1)[-1]
              for line in proc.stdout.splitlines() if line.startswith("{")}
    assert "telemetry" in topics, proc.stderr[-3000:]
