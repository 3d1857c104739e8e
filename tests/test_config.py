"""Configuration: every mistake an installer can make gets one clear line and exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.core import config
from agent.core.config import ConfigError
from agent.tools.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[node]
id = "n1"

[report]
interval_s = 30

[[sensor]]
type = "pms5003"
name = "pm"
port = "{port}"
"""


def parse(text: str, **kw):
    return config.parse(text, "t.toml", **kw)


def test_minimal_config_has_defaults(tmp_path):
    cfg = parse(GOOD.format(port=tmp_path))
    assert cfg.node.id == "n1" and cfg.report.interval_s == 30
    assert cfg.local_mode and cfg.mqtt.port == 1883
    assert cfg.sensor[0].mode == "passive" and cfg.sensor[0].warmup_s == 30


def test_example_config_in_deploy_is_valid():
    cfg = config.load(ROOT / "deploy" / "citynode.toml", check_devices=False)
    assert not cfg.local_mode
    assert cfg.sensor[0].port == "/dev/ttyAMA0" and cfg.sensor[0].quantities == [
        "pm1", "pm25", "pm10"]


@pytest.mark.parametrize("text,key,line,words", [
    ('[node]\nid = "n1"\ncolour = "red"\n', "node.colour", 3, "unknown key"),
    ('[node]\nid = "n1"\n[report]\ninterval_s = "fast"\n', "report.interval_s", 4, "must be"),
    ('[node]\nid = "n1"\n[report]\ninterval_s = 0\n', "report.interval_s", 4, ">= 1"),
    ('[node]\nid = "n 1"\n', "node.id", 2, "letters, digits"),
    ('[report]\ninterval_s = 5\n', "node", None, "required key is missing"),
    ('[node]\nid = "n1"\n[mqtt]\nport = 70000\n', "mqtt.port", 4, "<= 65535"),
    ('[node]\nid = "n1"\n[[sensor]]\ntype = "pms9000"\nname = "a"\n', "sensor[0].type", 4,
     "known sensor types"),
    ('[node]\nid = "n1"\n[[sensor]]\ntype = "pms5003"\nname = "a"\n', "sensor[0].port", 3,
     "required key is missing"),
    ('[node]\nid = "n1"\n[[sensor]]\ntype = "pms5003"\nname = "a"\nport = "/dev/null"\n'
     'mode = "lazy"\n', "sensor[0].mode", 7, "is not one of 'active', 'passive'"),
    ('[node]\nid = "n1"\n[[sensor]]\ntype = "pms5003"\nname = "a"\nport = "/dev/null"\n'
     '[[sensor]]\ntype = "pms5003"\nname = "b"\nport = "/dev/null"\nwarmup = 3\n',
     "sensor[1].warmup", 11, "unknown key"),
])
def test_errors_name_key_and_line(text, key, line, words):
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    e = err.value
    assert e.key == key and e.line == line, str(e)
    assert words in str(e)


def test_toml_syntax_error_has_line():
    with pytest.raises(ConfigError) as err:
        parse('[node]\nid = "n1\n')
    assert err.value.line == 2 and "not valid TOML" in str(err.value)


def test_missing_device_path(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse(GOOD.format(port=tmp_path / "ttyUSB9"))
    assert err.value.key == "sensor[0].port" and err.value.line == 11
    assert "does not exist" in str(err.value)
    parse(GOOD.format(port=tmp_path / "ttyUSB9"), check_devices=False)


def test_duplicate_sensor_names_and_record_collisions(tmp_path):
    extra = '[[sensor]]\ntype = "pms5003"\nname = "{name}"\nport = "{port}"\n'
    two = GOOD.format(port=tmp_path) + extra.format(name="pm", port=tmp_path)
    with pytest.raises(ConfigError, match="already used by sensor"):
        parse(two)
    two = GOOD.format(port=tmp_path) + extra.format(name="pm2", port=tmp_path)
    with pytest.raises(ConfigError, match="give one of them a prefix") as err:
        parse(two)
    assert err.value.key == "sensor[1].prefix"
    parse(two.replace('name = "pm2"', 'name = "pm2"\nprefix = "b."'))


def test_backoff_consistency():
    with pytest.raises(ConfigError, match="backoff_initial_s"):
        parse('[node]\nid = "n1"\n[mqtt]\nbackoff_initial_s = 10\nbackoff_max_s = 5\n')


def test_unreadable_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(bad)


def test_config_check_command_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(GOOD.format(port=tmp_path))
    assert cli(["config", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.format(port=tmp_path) + "oops = 1\n")
    assert cli(["config", "check", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "bad.toml:12: sensor[0].oops: unknown key" in err


def test_daemon_exits_78_on_bad_config_before_opening_anything(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nid = "n1"\n[report]\ninterval_s = -5\n')
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 78
    assert "bad.toml:4: report.interval_s" in proc.stderr
