"""``citynode asyncapi`` and docs/asyncapi.yaml: the AsyncAPI 3.0 document of every format.

The unit tests (``make test``) hold docs/asyncapi.yaml to what the command prints, check
the document's structure (every reference resolves, every channel has its operation,
every format contributes its channels) and the command's options and files. The tests
marked ``asyncapi`` (``make asyncapi``, which installs the AsyncAPI project's own CLI from
the npm registry into build/asyncapi-cli) validate the document with that CLI, check that
broken documents fail it, that the YAML reads back (js-yaml) as the JSON document, and
that every example validates against its message's schema (ajv).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import pytest

from agent import __version__
from agent.tools import asyncapi
from agent.tools.cli import main as cli
from agent.wire import formats
from agent.wire.formats import Channel, senml
from agent.wire.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "asyncapi.yaml"
REGENERATE = ".venv/bin/citynode asyncapi -o docs/asyncapi.yaml"
COMPONENT_KEY = re.compile(r"[\w\d.\-_]+")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli(["asyncapi", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """What a local JSON reference points at (KeyError if nothing)."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for k, v in node.items() if k != "$ref" for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def check_structure(doc: dict[str, Any]) -> None:
    """What the AsyncAPI CLI also checks, and what it does not: unused channels, the
    parameters of every address, component key syntax."""
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"] == __version__
    for ref in refs(doc):
        try:
            resolve(doc, ref)
        except (KeyError, TypeError):
            pytest.fail(f"the reference {ref} resolves to nothing")
    used = []
    for oid, op in doc["operations"].items():
        cid = op["channel"]["$ref"].removeprefix("#/channels/")
        used.append(cid)
        assert op["action"] in ("send", "receive") and oid == f"{op['action']}-{cid}"
        for message in op["messages"]:
            assert message["$ref"].startswith(f"#/channels/{cid}/messages/"), \
                f"{oid}: a message of another channel"
        mqtt = op["bindings"]["mqtt"]
        assert mqtt["qos"] in (0, 1, 2) and isinstance(mqtt["retain"], bool)
        assert mqtt["bindingVersion"] == "0.2.0"
        assert op["description"], f"{oid} has no description"
    assert sorted(used) == sorted(doc["channels"]), \
        "every channel has exactly one operation, and every operation a channel"
    for cid, channel in doc["channels"].items():
        named = set(re.findall(r"\{([^{}]*)\}", channel["address"]))
        assert named == set(channel.get("parameters", {})), f"{cid}: parameters vs address"
        for message in channel["messages"].values():
            body = resolve(doc, message["$ref"])
            assert body["contentType"] and "$ref" in body["payload"]
    for section, items in doc["components"].items():
        for key in items:
            assert COMPONENT_KEY.fullmatch(key), f"components/{section}/{key}"
    assert doc[asyncapi.MARKER_KEY] == asyncapi.MARKER_VALUE


# -- the file and the document -----------------------------------------------------------
def test_docs_asyncapi_yaml_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    code, out, _ = run(capsys)
    assert code == 0
    assert DOC.read_text(encoding="utf-8") == out, (
        "docs/asyncapi.yaml is out of date (a format's channels changed): regenerate it "
        f"with `{REGENERATE}` and commit it")


def test_the_whole_document_is_consistent() -> None:
    doc = asyncapi.document()
    check_structure(doc)
    listed = {f"{f.name}-{c.name}" for f in formats.all_formats() for c in f.channels()}
    assert set(doc["channels"]) == listed
    assert doc["info"]["tags"] == sorted(doc["info"]["tags"], key=lambda t: t["name"])


@pytest.mark.parametrize("name", formats.NAMES)
def test_every_format_contributes_its_channels(name: str) -> None:
    fmt = formats.get(name)
    channels = fmt.channels()
    assert channels and all(isinstance(c, Channel) for c in channels), \
        f"{name}: channels() lists nothing"
    whole = asyncapi.document()
    alone = asyncapi.document([name])
    check_structure(alone)
    assert list(alone["channels"]) == [f"{name}-{c.name}" for c in channels]
    for cid, channel in alone["channels"].items():
        assert whole["channels"][cid] == channel  # the same in the whole document
    for c in channels:
        message = alone["components"]["messages"][f"{name}-{c.name}"]
        assert message["contentType"] == c.content_type
        op = alone["operations"][f"{c.action}-{name}-{c.name}"]
        assert op["bindings"]["mqtt"]["qos"] == c.qos
        assert op["bindings"]["mqtt"]["retain"] == c.retain
        assert len(message.get("examples", [])) == len(c.examples)


def test_the_output_is_the_same_whatever_the_hash_seed(tmp_path: Path) -> None:
    outs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-m", "agent", "asyncapi"], cwd=ROOT, env=env,
                                capture_output=True, check=True).stdout)
    assert len(outs) == 1


# -- the SenML channels -------------------------------------------------------------------
@pytest.mark.parametrize("name", formats.PACK_NAMES)
def test_senml_channels_are_the_native_topics(name: str) -> None:
    fmt = formats.get(name)
    channels = {c.name: c for c in fmt.channels()}
    topics = Topics("{prefix}", "{node}")
    assert list(channels) == ["telemetry", "event", "health", "state", "command", "result"]
    for leaf, c in channels.items():
        assert c.address == getattr(topics, leaf)
        assert c.action == ("receive" if leaf == "command" else "send")
        assert c.qos == 1 and c.retain == (leaf == "state")
        assert c.content_type == ("application/json" if leaf == "command"
                                  else fmt.content_type)
        assert c.examples, f"{leaf} has no example"
    # The examples are the format's own bytes, and read back.
    for leaf in ("telemetry", "event", "health", "state", "result"):
        for _, payload in channels[leaf].examples:
            pack = fmt.decode(payload)
            assert fmt.encode(pack).payload == payload


def test_the_cbor_examples_show_the_decoded_pack_and_its_bytes() -> None:
    doc = asyncapi.document(["senml-cbor"])
    example = doc["components"]["messages"]["senml-cbor-telemetry"]["examples"][0]
    data = bytes.fromhex(example["summary"].split("hex: ")[1].rstrip(")"))
    assert len(data) == 137  # docs/payload.md section 8
    raw = cbor2.loads(data)
    assert example["payload"] == [{str(k): v for k, v in r.items()} for r in raw]
    assert example["payload"][0]["-3"] == 1763900060 and example["payload"][0]["b"] == 3


def test_the_command_schema_is_the_processors() -> None:
    from agent.core import commands

    schema = senml.command_schema()
    assert schema["properties"]["cmd"]["enum"] == list(commands.COMMANDS)
    assert [b["properties"]["cmd"]["const"] for b in schema["oneOf"]] == list(commands.COMMANDS)
    assert schema["additionalProperties"] is False and schema["required"] == ["id", "cmd"]
    text = json.dumps(schema)
    assert "\\\\A" not in text and "\\\\Z" not in text, "Python anchors in a JSON Schema"
    device = schema["oneOf"][list(commands.COMMANDS).index("device")]
    assert device["properties"]["args"]["required"] == ["sensor", "action"]


def test_pack_schemas_name_the_cbor_labels_by_their_integers() -> None:
    cbor, json_ = senml.pack_schema(cbor=True), senml.pack_schema(cbor=False)
    rec_c = cbor["$defs"]["senml-record-cbor"]["properties"]
    rec_j = json_["$defs"]["senml-record-json"]["properties"]
    assert {"-3", "0", "2", "3", "4", "6", "b", "q", "h"} <= set(rec_c)
    assert {"bt", "n", "v", "vs", "vb", "t", "b", "q", "h"} <= set(rec_j)
    assert all(str(senml.LABELS[k]) in rec_c for k in rec_j if k in senml.LABELS)


# -- the generator's rules, on made-up formats ----------------------------------------------
class Fake:
    packs = False
    content_type = "application/json"

    def __init__(self, name: str, channels: list[Channel]) -> None:
        self.name = name
        self._channels = channels

    def channels(self) -> list[Channel]:
        return self._channels


def fake_doc(monkeypatch: pytest.MonkeyPatch, *fakes: Fake) -> dict[str, Any]:
    known = {f.name: f for f in fakes}
    monkeypatch.setattr(formats, "get", lambda n: known[n])
    return asyncapi.document(list(known))


def channel(**kw: Any) -> Channel:
    base: dict[str, Any] = {"name": "data", "address": "{prefix}/{node}/data", "action": "send",
                            "summary": "data", "content_type": "application/json",
                            "schema": {"type": "object"}}
    return Channel(**(base | kw))


def test_defs_move_to_components_and_clashing_names_get_the_formats_prefix(
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = channel(schema={"title": "Payload", "type": "array",
                        "items": {"$ref": "#/$defs/Item"}, "$defs": {"Item": {"type": "string"}}})
    b = channel(schema={"title": "Payload", "type": "array",
                        "items": {"$ref": "#/$defs/Item"}, "$defs": {"Item": {"type": "integer"}}})
    doc = fake_doc(monkeypatch, Fake("one", [a]), Fake("two", [b]))
    schemas = doc["components"]["schemas"]
    assert schemas["payload"]["items"] == {"$ref": "#/components/schemas/item"}
    assert schemas["two-payload"]["items"] == {"$ref": "#/components/schemas/two-item"}
    assert schemas["two-item"] == {"type": "integer"}
    check_structure(doc)


def test_the_same_schema_is_written_once(monkeypatch: pytest.MonkeyPatch) -> None:
    same = {"title": "Same thing", "type": "object"}
    doc = fake_doc(monkeypatch, Fake("one", [channel(schema=same)]),
                   Fake("two", [channel(schema=same), channel(name="other", schema={})]))
    assert sorted(doc["components"]["schemas"]) == ["same-thing", "two-other-payload"]


@pytest.mark.parametrize(("bad", "message"), [
    ({"address": "a/{zone}/b"}, "names {zone}"),
    ({"parameters": {"zone": "the zone"}}, "not in the address"),
    ({"name": "a b"}, "not of A-Z"),
    ({"action": "publish"}, "action"),
    ({"schema": {"items": {"$ref": "#/$defs/Nowhere"}}}, "names no $defs entry"),
])
def test_channels_that_cannot_be_documented_are_refused(
        monkeypatch: pytest.MonkeyPatch, bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        fake_doc(monkeypatch, Fake("one", [channel(**bad)]))


def test_formats_without_channels_and_repeated_channels_are_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="lists no channels"):
        fake_doc(monkeypatch, Fake("one", []))
    with pytest.raises(ValueError, match="repeated"):
        fake_doc(monkeypatch, Fake("one", [channel(), channel()]))


def test_examples_are_shown_by_their_content_type(monkeypatch: pytest.MonkeyPatch) -> None:
    chans = [
        channel(name="j", examples=(b'{"a": 1}', ("named", b"[1, 2]"), {"already": "data"})),
        channel(name="c", content_type="application/cbor",
                examples=(cbor2.dumps({1: b"\x01\x02", "k": [1.5]}),)),
        channel(name="t", content_type="text/plain", examples=(b"online",)),
        channel(name="p", content_type="application/x-protobuf", examples=(b"\x08\x01",)),
        channel(name="e", examples=(b"",)),
    ]
    doc = fake_doc(monkeypatch, Fake("one", chans))
    ex = {k.removeprefix("one-"): m["examples"] for k, m in doc["components"]["messages"].items()}
    assert [e["payload"] for e in ex["j"]] == [{"a": 1}, [1, 2], {"already": "data"}]
    assert ex["j"][1]["summary"] == "named (6 bytes)" and "summary" not in ex["j"][2]
    assert ex["c"][0]["payload"] == {"1": "0102", "k": [1.5]}
    assert "hex: " in ex["c"][0]["summary"]
    assert ex["t"][0]["payload"] == "online"
    assert ex["p"][0]["payload"] == "CAE=" and "base64" in ex["p"][0]["summary"]
    assert ex["e"][0]["payload"] == "" and "empty" in ex["e"][0]["summary"]


# -- YAML ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "text"), [
    ("plain words", "plain words"), ("application/senml+cbor", "application/senml+cbor"),
    ("$ref", "$ref"), ("-3", '"-3"'), ("0", '"0"'), ("3.0.0", '"3.0.0"'), ("n", '"n"'),
    ("yes", '"yes"'), ("Off", '"Off"'), ("null", '"null"'), ("", '""'), ("a: b", '"a: b"'),
    ("x #y", '"x #y"'), ("trailing ", '"trailing "'), ("{prefix}/x", '"{prefix}/x"'),
    ("tab\there", '"tab\\there"'), ("\u2028", '"\\u2028"'), ("\U0001f600", '"\U0001f600"'),
    ("\x85", '"\\u0085"'), (True, "true"), (None, "null"), (7, "7"), (-2, "-2"),
    (1.5, "1.5"), (1e-05, "1.0e-05"), (1e16, "1.0e+16"), (1763900071.482, "1763900071.482"),
])
def test_yaml_scalars(value: Any, text: str) -> None:
    assert asyncapi._scalar(value) == text


def test_yaml_blocks_and_nesting() -> None:
    doc = {"a": {}, "b": [], "c": [[1, 2], {"k": "v", "l": [True]}, []],
           "d": "two\nlines", "e": "ends with newline\n", "f": " leading\nspace"}
    assert asyncapi.to_yaml(doc) == (
        'a: {}\nb: []\nc:\n  -\n    - 1\n    - 2\n  - k: v\n    l:\n      - true\n  - []\n'
        'd: |-\n  two\n  lines\ne: "ends with newline\\n"\nf: " leading\\nspace"\n')
    with pytest.raises(ValueError):
        asyncapi.to_yaml({"x": float("nan")})


# -- the command -----------------------------------------------------------------------------
def test_json_output_is_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json")
    assert code == 0 and json.loads(out) == asyncapi.document()


def test_formats_by_list_and_repeated(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "--format", "senml-json,senml-cbor",
                       "--format", "senml-json")
    assert code == 0
    channels = list(json.loads(out)["channels"])
    assert channels[0] == "senml-json-telemetry" and channels[-1] == "senml-cbor-result"
    assert len(channels) == 12


@pytest.mark.parametrize("argv", [
    ["--format", "nosuch"], ["--format", "senml-cbor,"], ["--format", ""],
    ["--prefix", "a//b"], ["--prefix", "/x"], ["--prefix", "a+"], ["--node", ""],
    ["--node", "-x"], ["--node", "a/b"], ["--node", "x" * 65], ["--bogus"],
])
def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]
                                      ) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 64 and not out and len(err.strip().splitlines()) == 1


def test_prefix_and_node_become_the_parameters_defaults(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    code, out, _ = run(capsys, "--json", "--prefix", "seoul/air", "--node", "pole-7")
    params = json.loads(out)["components"]["parameters"]
    assert code == 0
    assert params["prefix"]["default"] == "seoul/air"
    assert params["node"]["default"] == "pole-7"
    assert "default" not in asyncapi.document()["components"]["parameters"]["node"]


def test_output_file_is_written_and_replaced_only_when_ours(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "api.yaml"
    assert run(capsys, "-o", str(target))[0] == 0
    assert target.read_text() == DOC.read_text()
    assert run(capsys, "-o", str(target), "--json")[0] == 0  # ours: replaced
    assert json.loads(target.read_text()) == asyncapi.document()
    assert run(capsys, "-o", str(target))[0] == 0  # ours in JSON too
    foreign = tmp_path / "notes.yaml"
    foreign.write_text("my notes\n")
    code, _, err = run(capsys, "-o", str(foreign))
    assert code == 73 and "--force" in err and foreign.read_text() == "my notes\n"
    assert run(capsys, "-o", str(foreign), "--force")[0] == 0
    assert foreign.read_text() == DOC.read_text()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert run(capsys, "-o", str(empty))[0] == 0


def test_output_through_a_symlink_keeps_the_link(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real.yaml"
    link = tmp_path / "link.yaml"
    link.symlink_to(real.name)
    assert run(capsys, "-o", str(link))[0] == 0
    assert link.is_symlink() and real.read_text() == DOC.read_text()


@pytest.mark.parametrize("kind", ["dir", "missing-folder", "loop"])
def test_output_that_cannot_be_written_is_exit_73(tmp_path: Path, kind: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x"
    if kind == "dir":
        path.mkdir()
    elif kind == "missing-folder":
        path = tmp_path / "no" / "such" / "x.yaml"
    else:
        path.symlink_to("y")
        (tmp_path / "y").symlink_to("x")
    code, out, err = run(capsys, "-o", str(path), "--force")
    assert code == 73 and "cannot write" in err and not out
    assert kind != "dir" or path.is_dir()


def test_dash_is_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "-o", "-")
    assert code == 0 and out == DOC.read_text()


# -- the AsyncAPI project's CLI (make asyncapi) --------------------------------------------
CLI_DIR = Path(os.environ.get("CITYNODE_ASYNCAPI_CLI", ROOT / "build" / "asyncapi-cli"))
#: No analytics and no update check: the CLI then opens no connection at all.
ANALYTICS_OFF = {"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "citynode"}


@pytest.fixture
def node_env(tmp_path: Path) -> dict[str, str]:
    """The environment for the AsyncAPI CLI and node: its own HOME, analytics and the
    update check off (docs/payload.md, "AsyncAPI")."""
    if not (CLI_DIR / "node_modules" / ".bin" / "asyncapi").exists():
        message = f"the AsyncAPI CLI is not installed in {CLI_DIR}: run `make asyncapi`"
        if os.environ.get("CITYNODE_ASYNCAPI_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "asyncapi-analytics.json"
    config.write_text(json.dumps(ANALYTICS_OFF))
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "ASYNCAPI_METRICS_CONFIG_PATH": str(config),
            "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true", "NO_COLOR": "1",
            "NODE_PATH": str(CLI_DIR / "node_modules")}


def validate(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI_DIR / "node_modules" / ".bin" / "asyncapi"), "validate",
                           "--fail-severity", "warn", str(path)], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.asyncapi
def test_the_asyncapi_cli_accepts_the_document(node_env: dict[str, str], tmp_path: Path) -> None:
    result = validate(DOC, node_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout
    variant = tmp_path / "variant.json"
    variant.write_text(asyncapi.render(asyncapi.document(prefix="seoul/air", node="pole-7"),
                                       as_json=True))
    result = validate(variant, node_env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.asyncapi
@pytest.mark.parametrize("name", formats.NAMES)
def test_the_asyncapi_cli_accepts_each_format_alone(name: str, node_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(asyncapi.render(asyncapi.document([name])))
    result = validate(path, node_env)
    assert result.returncode == 0, result.stdout + result.stderr


def _break(doc: dict[str, Any], how: str) -> str:
    op = doc["operations"]["send-senml-cbor-telemetry"]
    if how == "dangling-ref":
        op["channel"] = {"$ref": "#/channels/nosuch"}
        return "invalid-ref"
    if how == "foreign-message":
        op["messages"] = [{"$ref": "#/channels/senml-json-telemetry/messages/telemetry"}]
        return "asyncapi3-operation-messages-from-referred-channel"
    if how == "qos-3":
        op["bindings"]["mqtt"]["qos"] = 3
        return "qos"
    if how == "undescribed-parameter":
        del doc["channels"]["senml-cbor-event"]["parameters"]["node"]
        return "asyncapi3-channel-parameters"
    del doc["info"]["version"]
    return "version"


@pytest.mark.asyncapi
@pytest.mark.parametrize("how", ["dangling-ref", "foreign-message", "qos-3",
                                 "undescribed-parameter", "no-version"])
def test_the_asyncapi_cli_refuses_a_broken_document(how: str, node_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    doc = asyncapi.document()
    expected = _break(doc, how)
    path = tmp_path / "broken.yaml"
    path.write_text(asyncapi.render(doc))
    result = validate(path, node_env)
    assert result.returncode != 0, f"a document with {how} passed:\n{result.stdout}"
    assert expected in result.stdout + result.stderr


#: Reads each YAML file with js-yaml and compares it with its JSON twin; validates every
#: message example against its payload schema with ajv (the CLI does not check examples).
NODE_CHECK = r"""
const fs = require("fs"), util = require("util");
const yaml = require("js-yaml"), Ajv = require("ajv");
const problems = [];
for (const [y, j] of JSON.parse(process.env.PAIRS)) {
  if (!util.isDeepStrictEqual(yaml.load(fs.readFileSync(y, "utf8")),
                              JSON.parse(fs.readFileSync(j, "utf8"))))
    problems.push(`${y} does not read back as ${j}`);
}
const doc = JSON.parse(fs.readFileSync(process.env.DOC_JSON, "utf8"));
const ajv = new Ajv({strict: false, validateSchema: false, allErrors: true});
ajv.addSchema(doc, "doc");
let checked = 0;
for (const [id, m] of Object.entries(doc.components.messages)) {
  const validate = ajv.getSchema("doc" + m.payload.$ref);
  for (const ex of m.examples || []) {
    checked++;
    if (!validate(ex.payload))
      problems.push(`${id} ${ex.name}: ${ajv.errorsText(validate.errors)}`);
  }
}
console.log(JSON.stringify({checked, problems}));
"""

ODD = {"strings": ["yes", "No", "-3", "0", "1e5", "a: b", "#x", "x #y", "two\nlines",
                   "ends\n", " lead", "trail ", "tab\tx", "\u2028", "\x85", "\U0001f600",
                   "\u00e9t\u00e9", "'quoted'", '"double"', "back\\slash", "{x}", "[y]",
                   "~", "null", "", "- dash", "? q", "!tag", "&a", "*b", "%p", "@at", "`tick`",
                   "| pipe", "> gt"],
       "numbers": [0, -1, 1.5, 1e-05, 1e16, -2.5e-300, 2**63, 1763900071.482],
       "nested": [[], {}, [[1], {"a": [{}]}], {"-3": {"0": [True, False, None]}}]}


@pytest.mark.asyncapi
def test_the_yaml_reads_back_and_every_example_fits_its_schema(node_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    pairs = []
    for name, data in (("doc", asyncapi.document()), ("odd", ODD)):
        (tmp_path / f"{name}.yaml").write_text(asyncapi.render(data))
        (tmp_path / f"{name}.json").write_text(asyncapi.to_json(data))
        pairs.append([str(tmp_path / f"{name}.yaml"), str(tmp_path / f"{name}.json")])
    env = {**node_env, "PAIRS": json.dumps(pairs), "DOC_JSON": pairs[0][1]}
    result = subprocess.run(["node", "-e", NODE_CHECK], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not report["problems"], "\n".join(report["problems"])
    assert report["checked"] >= 20
