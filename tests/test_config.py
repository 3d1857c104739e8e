"""Configuration: every mistake an installer can make gets one clear line and exit 78."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from agent.core import config, hostcheck, tomlkeys
from agent.core.config import ConfigError
from agent.tools.cli import main as cli
from agent.tools.machine import ENVELOPE_KEYS, ROW_KEYS

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


@pytest.fixture
def tty():
    """A serial device that exists: a pseudo-terminal's slave side (a real tty)."""
    master, slave = os.openpty()
    yield os.ttyname(slave)
    os.close(slave)
    os.close(master)


def test_minimal_config_has_defaults(tty):
    cfg = parse(GOOD.format(port=tty))
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


def test_duplicate_sensor_names_and_record_collisions(tty):
    extra = '[[sensor]]\ntype = "pms5003"\nname = "{name}"\nport = "{port}"\n'
    two = GOOD.format(port=tty) + extra.format(name="pm", port=tty)
    with pytest.raises(ConfigError, match="already used by sensor"):
        parse(two)
    two = GOOD.format(port=tty) + extra.format(name="pm2", port=tty)
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


def test_config_check_command_exit_codes(tmp_path, tty, capsys):
    good = tmp_path / "good.toml"
    good.write_text(GOOD.format(port=tty))
    assert cli(["config", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.format(port=tty) + "oops = 1\n")
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


# -- strict types: TOML has real numbers and booleans ---------------------------------------
@pytest.mark.parametrize("table,line,key,fix", [
    ('[report]\ninterval_s = "60"', 'interval_s = "60"', "report.interval_s",
     "write interval_s = 60, without quotes"),
    ('[mqtt]\nport = "1883"', 'port = "1883"', "mqtt.port", "write port = 1883"),
    ('[mqtt]\ntls = "false"', 'tls = "false"', "mqtt.tls", "write tls = false"),
    ('[fall]\nbutton_pin = "17"', 'button_pin = "17"', "fall.button_pin",
     "write button_pin = 17"),
    ('[report]\nkr_band = 1', "kr_band = 1", "report.kr_band", "must be true or false"),
    ('[mqtt]\nkeepalive_s = 60.5', "keepalive_s = 60.5", "mqtt.keepalive_s",
     "must be a whole number"),
    ('[report]\ninterval_s = 1979-05-27', "interval_s = 1979-05-27", "report.interval_s",
     "must be a number, not the date/time"),
])
def test_a_string_where_a_value_is_expected_is_an_error(table, line, key, fix):
    """config check used to coerce "60" to 60 and "false" to false; run then saw them as
    written. Strict like TOML itself: a string is a string."""
    text = f'[node]\nid = "n1"\n{table}\n'
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    e = err.value
    assert e.key == key and text.splitlines()[e.line - 1] == line, str(e)
    assert fix in str(e)


def test_an_int_where_a_float_is_expected_stays_fine():
    cfg = parse('[node]\nid = "n1"\n[report]\ninterval_s = 30\n[spool]\ndrain_rate = 0\n',
                check_devices=False)
    assert cfg.report.interval_s == 30 and cfg.spool.drain_rate == 0


# -- where errors point ------------------------------------------------------------------------
INLINE = '''[node]
id = "n1"

[[sensor]]
type = "cse7766"
name = "tv"
port = "/dev/ttyUSB0"
prefix = "t."
plug = { activity = true, relay_pin = 99 }

[[sensor]]
type = "a02yyuw"
name = "bay"
port = "/dev/ttyUSB1"
use.role = "car"

[[sensor]]
type = "pms5003"
name = "pm"
port = "/dev/ttyUSB2"
quantities = [
    "pm1",
    "pm4",
]
'''


@pytest.mark.parametrize("wrong,key,line", [
    ("relay_pin = 99", "sensor[0].plug.relay_pin", 9),
    ('use.role = "car"', "sensor[1].use.role", 15),
    ('"pm4",', "sensor[2].quantities[1]", 23),
])
def test_errors_name_the_offending_line_in_inline_tables_and_arrays(wrong, key, line):
    """Not the table header: the line of the inline table, dotted key or array element."""
    fixed = {"relay_pin = 99": "relay_pin = 9", 'use.role = "car"': 'use.role = "bay"',
             '"pm4",': '"pm10",'}
    text = INLINE
    for other, good in fixed.items():
        if other != wrong:
            text = text.replace(other, good)
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    assert (err.value.key, err.value.line) == (key, line), str(err.value)
    assert wrong in text.splitlines()[line - 1]


def test_errors_in_a_sub_table_of_an_array_of_tables_name_that_table():
    text = ('[node]\nid = "n1"\n[[sensor]]\ntype = "cse7766"\nname = "a"\nport = "/dev/x"\n'
            '[sensor.plug]\nactivity = true\n[[sensor]]\ntype = "cse7766"\nname = "b"\n'
            'port = "/dev/y"\nprefix = "b."\n[sensor.plug]\ncutoff_s = 0\n')
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    assert (err.value.key, err.value.line) == ("sensor[1].plug.cutoff_s", 15)


def test_sensors_as_an_inline_array_of_tables():
    text = ('[node]\nid = "n1"\nsensor = [\n  { type = "pms5003", name = "a", port = "/dev/x" },'
            '\n  { type = "pms5003", name = "b", port = "/dev/y", mode = "lazy" },\n]\n')
    with pytest.raises(ConfigError) as err:
        parse(text.replace('[node]\nid = "n1"\n', '').replace("sensor = [", '[node]\nid = '
                                                                '"n1"\n[x]\nsensor = ['),
              check_devices=False)
    assert err.value.key == "x"
    top = 'sensor = [\n  { type = "pms5003", name = "a", port = "/dev/x" },\n' \
          '  { type = "pms5003", name = "b", port = "/dev/y", mode = "lazy" },\n]\n' \
          '[node]\nid = "n1"\n'
    with pytest.raises(ConfigError) as err:
        parse(top, check_devices=False)
    assert (err.value.key, err.value.line) == ("sensor[1].mode", 3)


def test_key_lines_follow_toml():
    text = ('a = """x\n[not.a.header]\n"""\nb = { c = [1,\n 2] }\n[[t]]\n[t.u]\nv = 1\n[[t]]\n'
            "'w x' = 2\n")
    tomllib.loads(text)
    lines = tomlkeys.key_lines(text)
    assert lines[("b", "c", 1)] == 5 and ("not",) not in lines
    assert lines[("t", 0, "u", "v")] == 8 and lines[("t", 1, "w x")] == 10


# -- what a key may be ------------------------------------------------------------------------
def test_enum_errors_list_the_values_of_that_very_key():
    """pms5003 and sds011 both have ``mode``, with different values."""
    text = '[node]\nid = "n1"\n[[sensor]]\ntype = "sds011"\nname = "a"\nport = "/dev/x"\n' \
           'mode = "passive"\n'
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    assert "'passive' is not one of 'active', 'query'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse('[node]\nid = "n1"\n[report]\nstats = ["mean", "avg"]\n', check_devices=False)
    assert err.value.key == "report.stats[1]" and err.value.line == 4
    assert "'mean', 'min', 'max', 'count'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse('[node]\nid = "n1"\n[log]\nlevel = "warn"\n', check_devices=False)
    assert "did you mean 'warning'?" in str(err.value)


@pytest.mark.parametrize("text,key,hint", [
    ('[node]\nid = "n1"\n[report]\ninterval = 5\n', "report.interval",
     "did you mean 'interval_s'?"),
    ('[node]\nid = "n1"\n[[sensor]]\ntype = "pms5003"\nname = "a"\nport = "/dev/x"\n'
     'warmup = 3\n', "sensor[0].warmup", "did you mean 'warmup_s'?"),
    ('[node]\nid = "n1"\n[[sensor]]\ntype = "pms5030"\nname = "a"\n', "sensor[0].type",
     "did you mean 'pms5003'?"),
    ('[node]\nid = "n1"\n[sensors]\n', "sensors", "did you mean 'sensor'?"),
    ('[node]\nid = "n1"\n[sensor]\ntype = "pms5003"\n', "sensor", "[[sensor]] (two brackets)"),
])
def test_unknown_keys_get_a_did_you_mean(text, key, hint):
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    assert err.value.key == key and hint in str(err.value), str(err.value)


def test_a_device_alias_is_its_type():
    cfg = parse('[node]\nid = "n1"\n[[sensor]]\ntype = "pms7003"\nname = "a"\nport = "/dev/x"\n',
                check_devices=False)
    assert cfg.sensor[0].type_name == "pms5003"


# -- GPIO clashes across the whole file ----------------------------------------------------------
HCSR04 = '[node]\nid = "n1"\n[[sensor]]\ntype = "hcsr04"\nname = "bay"\ntrigger = {t}\n' \
         'echo = {e}\n[sensor.use]\nrole = "distance"\n'


def test_hcsr04_trigger_and_echo_on_one_pin():
    """doctor caught it; config check and run did not."""
    with pytest.raises(ConfigError) as err:
        parse(HCSR04.format(t=2, e=2), check_devices=False)
    e = err.value
    assert (e.key, e.line) == ("sensor[0].echo", 7)
    assert "GPIO 2 is already the trigger of sensor 'bay' (sensor[0].trigger, line 6)" in str(e)


@pytest.mark.parametrize("extra,key,words", [
    ('[[sensor]]\ntype = "cse7766"\nname = "tv"\nport = "/dev/x"\nprefix = "t."\n'
     '[sensor.plug]\nrelay_pin = 23\n', "sensor[1].plug.relay_pin",
     "already the trigger of sensor 'bay'"),
    ('[fall]\nled_pin = 24\n', "fall.led_pin", "already the echo of sensor 'bay'"),
    ('[[sensor]]\ntype = "bme280"\nname = "bme"\n[[sensor]]\ntype = "cse7766"\nname = "tv"\n'
     'port = "/dev/x"\nplug = { relay_pin = 3 }\n', "sensor[2].plug.relay_pin",
     "GPIO 3 is the I2C1 SCL pin, and sensor 'bme' (bus = 1) uses that bus"),
    ('[[sensor]]\ntype = "cse7766"\nname = "tv"\nport = "/dev/ttyAMA0"\n'
     'plug = { relay_pin = 14 }\n', "sensor[1].plug.relay_pin", "UART TX pin"),
])
def test_pin_clashes_across_devices_relays_fall_and_buses(extra, key, words):
    with pytest.raises(ConfigError) as err:
        parse(HCSR04.format(t=23, e=24) + extra, check_devices=False)
    assert err.value.key == key and words in str(err.value), str(err.value)


def test_emulated_pins_clash_only_with_their_own_device():
    """Each emulated HC-SR04 has mock pins of its own: the same numbers do not clash."""
    two = HCSR04.format(t=23, e=24) + '[[sensor]]\ntype = "hcsr04"\nname = "bay2"\n' \
        'pins = "emulator"\n[sensor.use]\nrole = "bay"\n'
    cfg = parse(two, check_devices=False)
    assert len(config.pin_uses(cfg)) == 4 and config.pin_clashes(cfg) == []
    with pytest.raises(ConfigError, match="already the trigger of sensor 'bay2'"):
        parse(two.replace('pins = "emulator"', 'pins = "emulator"\necho = 23'),
              check_devices=False)


# -- this machine: device nodes, files, directories -----------------------------------------------
@pytest.mark.parametrize("port", ["/dev/null", "{tmp}", "{tmp}/file"])
def test_a_serial_port_must_be_a_serial_device(tmp_path, port):
    (tmp_path / "file").write_text("")
    text = GOOD.format(port=port.format(tmp=tmp_path))
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert (err.value.key, err.value.line) == ("sensor[0].port", 11)
    assert "not a serial" in str(err.value)
    parse(text, check_devices=False)


@pytest.mark.parametrize("key,table", [
    ("fall.model", "[fall]\nmodel = \"{p}\""),
    ("mqtt.ca_file", "[mqtt]\nhost = \"h\"\ntls = true\nca_file = \"{p}\""),
    ("mqtt.credentials_file", "[mqtt]\nhost = \"h\"\ncredentials_file = \"{p}\""),
    ("commands.hmac_key_file", "[commands]\nhmac_key_file = \"{p}\""),
])
def test_files_the_configuration_names_must_exist(tmp_path, key, table):
    text = f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n' + \
        table.format(p=tmp_path / "missing.tflite") + "\n"
    with pytest.raises(ConfigError) as err:
        parse(text)
    e = err.value
    assert e.key == key and "missing.tflite does not exist" in str(e)
    assert key.split(".")[1] in text.splitlines()[e.line - 1]
    parse(text, check_devices=False)


def test_a_model_needs_its_metadata_and_none_needs_nothing(tmp_path):
    model = tmp_path / "mine.tflite"
    model.write_bytes(b"x")
    text = f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[fall]\nmodel = "{model}"\n'
    with pytest.raises(ConfigError, match=r"mine\.json does not exist"):
        parse(text)
    (tmp_path / "mine.json").write_text("{}")
    parse(text)
    parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[fall]\nmodel = "none"\n')
    with pytest.raises(ConfigError, match="/ is a directory, not a file"):  # was a ValueError
        parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[fall]\nmodel = "/"\n')
    parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[fall]\nenabled = false\n'
          f'model = "{tmp_path}/gone.tflite"\n')


# -- [fire]: a threshold scale, and a retired model key ---------------------------------------
@pytest.mark.parametrize("value, words", [
    ("0.2", "must be >= 0.25, not 0.2"), ("4.5", "must be <= 4.0, not 4.5"),
    ("0", "must be >= 0.25"), ("-1", "must be >= 0.25"), ("nan", "not nan"),
    ("inf", "must be <= 4.0, not inf"), ("-inf", "must be >= 0.25"),
    ('"2"', "without quotes"), ("true", "must be a number, not the boolean true"),
])
def test_fire_threshold_scale_is_a_finite_number_from_a_quarter_to_four(value, words):
    text = f'[node]\nid = "n1"\n[fire]\nthreshold_scale = {value}\n'
    with pytest.raises(ConfigError) as err:
        parse(text, check_devices=False)
    e = err.value
    assert (e.key, e.line) == ("fire.threshold_scale", 4) and words in str(e), str(e)
    assert str(e).count("\n") == 0


@pytest.mark.parametrize("value", ["0.25", "1", "0.7", "4", "4.0"])
def test_fire_threshold_scale_in_range_is_taken(value):
    cfg = parse(f'[node]\nid = "n1"\n[fire]\nthreshold_scale = {value}\n', check_devices=False)
    assert cfg.fire.threshold_scale == float(value)
    assert parse('[node]\nid = "n1"\n', check_devices=False).fire.threshold_scale == 1.0


def test_the_config_and_detect_fire_accept_the_same_scales():
    """``[fire] threshold_scale`` and ``detect fire --threshold-scale`` share one range."""
    from agent.tools.cli import build_parser
    from agent.tools.replay.fire import THRESHOLD_SCALE_RANGE

    lo, hi = THRESHOLD_SCALE_RANGE
    for v in (lo, hi, 1.0):
        parse(f'[node]\nid = "n1"\n[fire]\nthreshold_scale = {v!r}\n', check_devices=False)
    for v in (lo - 1e-9, hi + 1e-9):
        with pytest.raises(ConfigError):
            parse(f'[node]\nid = "n1"\n[fire]\nthreshold_scale = {v!r}\n',
                  check_devices=False)
    parser = build_parser(field_tools=False)
    for v in (lo, hi):
        args = parser.parse_args(["detect", "fire", "--input", "x", "--threshold-scale", str(v)])
        assert args.threshold_scale == v


@pytest.mark.parametrize("model", ["none", "/nonexistent/fire.tflite", "/", "/dev/null",
                                   "relative/mine.tflite"])
def test_a_fire_model_is_accepted_unused_and_a_warning(tmp_path, model):
    """Files written before 2026.12 set [fire] model: they must still start (no file check,
    exit 0), and config check says once that the key does nothing."""
    text = f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[fire]\nmodel = "{model}"\n'
    cfg = parse(text)  # the machine checks too: no file check for fire.model
    assert config.notices(cfg) == [("fire.model", config.FIRE_MODEL_UNUSED)]
    path = tmp_path / "c.toml"
    path.write_text(text)
    rc, out, err = _run(["config", "check", str(path)])
    assert rc == 0 and out.startswith(f"{path}: OK"), err
    assert err == (f"warning: {path}:5: [fire] model is no longer used: fire detection runs "
                   "on rules, docs/fire.md\n")
    rc, out, err = _run(["config", "check", "--json", "-"], text)
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and doc["counts"] == {"OK": 1, "WARN": 1, "FAIL": 0}
    (warn,) = [r for r in doc["rows"] if r["status"] == "WARN"]
    assert (warn["key"], warn["line"], warn["target"]) == ("fire.model", 5, "<stdin>:5")
    assert set(ROW_KEYS) <= set(warn)
    rc, out, err = _run(["config", "show", "--json", str(path)])
    assert rc == 0 and "fire.model" not in json.loads(out)["effective"]


def test_no_warning_without_a_fire_model(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[fire]\nthreshold_scale = 2\n')
    rc, out, err = _run(["config", "check", str(path)])
    assert (rc, err) == (0, "") and config.notices(config.load(path)) == []
    rc, out, _ = _run(["config", "show", "--json", str(path)])
    assert rc == 0 and not [k for k in json.loads(out)["effective"] if k.startswith("fire.")]


def test_directories_must_be_writable(tmp_path):
    (tmp_path / "file").write_text("")
    for state, words in [("/proc/citynode", "proc file system"),
                         (f"{tmp_path}/file/sub", "cannot be created"),
                         (f"{tmp_path}/file", "not a directory")]:
        with pytest.raises(ConfigError) as err:
            parse(f'[node]\nid = "n1"\nstate_dir = "{state}"\n')
        assert err.value.key == "node.state_dir" and words in str(err.value), str(err.value)
    parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}/new/deeper"\n')  # the daemon makes it
    with pytest.raises(ConfigError) as err:
        parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[spool]\npath = "/proc/spool.db"\n')
    assert (err.value.key, err.value.line) == ("spool.path", 5)
    with pytest.raises(ConfigError, match="not a file"):
        parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[spool]\npath = "{tmp_path}"\n')


def test_writable_means_by_the_service_user():
    """As root, a folder only root may write is no place for the citynode user's spool."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp: searchable by every user
    try:
        os.chmod(top, 0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o755)
        other = hostcheck.User("someone", 54321, frozenset({54321}), current=False)
        assert "not writable by user someone" in hostcheck.dir_problem(str(locked), other)
        assert "cannot create it" in hostcheck.dir_problem(str(locked / "sub"), other)
        with pytest.raises(ConfigError, match="not writable by user someone"):
            config.parse(f'[node]\nid = "n1"\nstate_dir = "{locked}"\n', "t.toml", user=other)
        os.chmod(locked, 0o777)
        assert hostcheck.dir_problem(str(locked), other) is None
        assert hostcheck.dir_problem(str(locked / "a" / "b"), other) is None
        os.chmod(top, 0o700)  # the way there is closed
        assert "not writable" in hostcheck.dir_problem(str(locked), other)
        if os.geteuid() == 0:
            os.chmod(top, 0o755)
            os.chmod(locked, 0o770)
            os.chown(locked, 0, 54321)
            assert hostcheck.dir_problem(str(locked), other) is None  # through its group
    finally:
        shutil.rmtree(top)


def test_an_empty_state_dir_is_systemds_to_create(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "not-yet"))
    other = hostcheck.User("someone", 54321, frozenset({54321}), current=False)
    parse('[node]\nid = "n1"\n', user=other)


# -- config check, the command -------------------------------------------------------------------
def _run(argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))
    sys.stdout, sys.stderr = out, err
    try:
        rc = cli(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return rc, out.getvalue(), err.getvalue()


def test_config_check_reads_stdin():
    rc, out, _ = _run(["config", "check", "--no-devices", "-"], '[node]\nid = "n1"\n')
    assert rc == 0 and out.startswith("<stdin>: OK - node n1")
    rc, _, err = _run(["config", "check", "--no-devices", "-"], '[node]\nid = "n 1"\n')
    assert rc == 78 and err.startswith("error: <stdin>:2: node.id: ")


def test_config_check_lists_every_problem_in_file_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(HCSR04.format(t=2, e=2) + '[fire]\nsensors = ["nope"]\n'
                    '[[sensor]]\ntype = "pms5003"\nname = "bay"\nport = "/dev/null"\n')
    rc, _, err = _run(["config", "check", str(path)])
    lines = err.splitlines()
    assert rc == 78 and len(lines) == 4, err
    assert [int(x.split(":")[2]) for x in lines] == [7, 11, 14, 15]


def test_config_check_json(tmp_path, tty):
    good = tmp_path / "good.toml"
    good.write_text(GOOD.format(port=tty))
    rc, out, _ = _run(["config", "check", "--json", str(good)])
    doc = json.loads(out)
    assert rc == 0 and set(ENVELOPE_KEYS) <= doc.keys() and doc["exit"] == rc and doc["ok"]
    assert doc["command"] == "config check" and doc["counts"] == {"OK": 1, "WARN": 0, "FAIL": 0}
    (row,) = doc["rows"]
    assert set(ROW_KEYS) <= row.keys() and row["status"] == "OK"
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.format(port="/dev/null") + "oops = 1\n")
    rc, out, err = _run(["config", "check", "--json", str(bad)])
    doc = json.loads(out)
    assert rc == 78 and doc["exit"] == 78 and not doc["ok"] and err
    (row,) = doc["rows"]
    assert set(ROW_KEYS) <= row.keys() and row["status"] == "FAIL" and row["hint"]
    assert (row["key"], row["line"], row["target"]) == ("sensor[0].oops", 12, f"{bad}:12")
    rc, out, _ = _run(["config", "check", "--json", str(tmp_path / "none.toml")])
    doc = json.loads(out)
    assert rc == 66 == doc["exit"] and doc["rows"][0]["line"] is None
    assert "not found" in doc["rows"][0]["detail"]


@pytest.mark.parametrize("name,code", [("/dev/zero", 78), ("{tmp}/big.toml", 78),
                                       ("{tmp}/bin.toml", 78), ("{tmp}", 66),
                                       ("{tmp}/none.toml", 66)])
def test_config_check_never_reads_more_than_a_config(tmp_path, name, code):
    """A file that is not one (66: missing, a directory) or not a configuration (78: too
    large, not UTF-8): one line, read no further than a configuration can be long."""
    (tmp_path / "big.toml").write_bytes(b"#" * (config.MAX_BYTES + 10))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    for command in ("check", "show", "devices"):
        rc, _, err = _run(["config", command, name.format(tmp=tmp_path)])
        assert rc == code and err.count("\n") == 1 and "Traceback" not in err, err


# -- config show ----------------------------------------------------------------------------------
def test_config_show_fills_in_every_default_and_checks_again(tmp_path):
    src = tmp_path / "c.toml"
    src.write_text(INLINE.replace("relay_pin = 99", "relay_pin = 9").replace(
        '"car"', '"bin"\nuse.depth_mm = 900').replace('"pm4"', '"pm10"'))
    rc, out, _ = _run(["config", "show", str(src)])
    assert rc == 0
    assert "interval_s = 60.0" in out and "# cutoff_w: not set" in out
    assert "[sensor.plug]\nactivity = true\nrelay_pin = 9" in out
    assert "spool.db" in out and "effective: citynode-n1" in out
    shown = tmp_path / "shown.toml"
    shown.write_text(out)
    same = config.load(shown, check_devices=False)
    assert msgspec.to_builtins(same) == msgspec.to_builtins(config.load(src, check_devices=False))
    rc, out, _ = _run(["config", "show", "--json", str(src)])
    doc = json.loads(out)
    assert rc == 0 and doc["command"] == "config show" and doc["ok"]
    assert doc["config"]["sensor"][0]["plug"]["cutoff_w"] is None
    assert doc["effective"]["mqtt.client_id"] == "citynode-n1"
    rc, out, err = _run(["config", "show", "-"], '[node]\nid = 5\n')
    assert rc == 78 and out == "" and "<stdin>:2: node.id: must be a string" in err


def test_config_show_round_trips_every_device(tmp_path):
    """Every device's README table, shown with its defaults, reads back the same."""
    from drivers import catalogue
    from drivers.readme import sample_table

    sensors = []
    for n, spec in enumerate(catalogue.specs().values()):
        table = {**sample_table(spec), "name": f"s{n}", "prefix": f"p{n}."}
        if spec.bus == "i2c":
            table["bus"] = 10 + n  # each on a bus of its own
        sensors.append("[[sensor]]\n" + "\n".join(
            f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)))
    src = tmp_path / "all.toml"
    src.write_text('[node]\nid = "n1"\n' + "\n".join(sensors) + "\n")
    rc, out, err = _run(["config", "show", str(src)])
    assert rc == 0, err
    shown = tmp_path / "shown.toml"
    shown.write_text(out)
    assert msgspec.to_builtins(config.load(shown, check_devices=False)) == \
        msgspec.to_builtins(config.load(src, check_devices=False))


@pytest.mark.parametrize("key, table", [("state_dir", "[node]\nid = \"n1\"\n"),
                                        ("host", "[node]\nid = \"n1\"\n[mqtt]\n")])
def test_a_nul_character_is_a_configuration_error_not_a_crash(key, table):
    """os calls raise ValueError on an embedded NUL: the schema refuses it first (exit 78)."""
    with pytest.raises(config.ConfigError, match="NUL") as err:
        config.parse(f'{table}{key} = "a\\u0000b"\n', "c.toml", check_devices=False)
    assert err.value.line == 3 if key == "state_dir" else err.value.line == 4


@pytest.mark.parametrize("odd", ["\x85", "\u2028", "a\u2029b", "\x1b[31m"])
def test_an_unknown_sensor_type_is_named_on_one_printable_line(odd: str) -> None:
    """A type with a line-breaking or control character (NEL, LINE SEPARATOR, ESC) is
    shown escaped: the error stays one printable line."""
    text = (f'[node]\nid = "n"\n[[sensor]]\ntype = {json.dumps(odd)}\nname = "s"\n'
            'bus = "emulator"\n')
    with pytest.raises(ConfigError) as exc:
        config.parse(text)
    message = str(exc.value)
    assert "unknown sensor type" in message
    assert message.isprintable() and len(message.splitlines()) == 1
