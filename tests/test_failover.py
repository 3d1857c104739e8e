"""Broker failover: `failover` in the configuration, the uplink moving between two real
mosquittos (a cut, a refused port), the `broker` command, and what status shows.
The three-server cluster under load is in tests/cluster (`make test-cluster`)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from uplink_blackbox import wait_for

from agent.core import config
from agent.core.config import MqttConfig, parse_broker
from agent.core.status_file import _broker
from agent.tools.simulate import Mosquitto, Subscriber, free_port
from agent.tools.status import _where
from agent.wire.spool import Spool
from agent.wire.uplink import Message, Uplink


@pytest.mark.parametrize("text,want", [
    ("b2", ("b2", 1883)), ("b2:8883", ("b2", 8883)), ("10.0.0.2:1", ("10.0.0.2", 1)),
    ("[2001:db8::1]:8883", ("2001:db8::1", 8883)), ("[::1]", ("::1", 1883)),
])
def test_a_failover_entry_is_host_and_port(text, want):
    assert parse_broker(text, 1883) == want


@pytest.mark.parametrize("text,why", [
    ("", "host name"), (" b2", "without spaces"), ("mqtt://b2:1883", "not a URL"),
    ("b2:", "no port"), ("b2:0", "1 to 65535"), ("b2:65536", "1 to 65535"),
    ("b2:x", "1 to 65535"), ("2001:db8::1", "brackets"), ("[::1", "brackets"),
    ("b 2", "name or an address"), ("[::1]:", "no port"),
])
def test_a_bad_failover_entry_says_why(text, why):
    with pytest.raises(ValueError, match=why):
        parse_broker(text, 1883)


def load(tmp_path: Path, body: str) -> config.Config:
    p = tmp_path / "c.toml"
    p.write_text('[node]\nid = "n1"\n' + body)
    return config.load(p)


def test_the_configuration_lists_the_brokers_primary_first(tmp_path):
    cfg = load(tmp_path, '[mqtt]\nhost = "b1"\nport = 8883\nfailover = ["b2", "b3:1884"]\n'
                         '[[uplink]]\nname = "other"\nhost = "c1"\nfailover = ["c2"]\n')
    assert cfg.mqtt.brokers() == [("b1", 8883), ("b2", 8883), ("b3", 1884)]
    assert [u.brokers() for u in cfg.uplinks()] == [
        [("b1", 8883), ("b2", 8883), ("b3", 1884)], [("c1", 1883), ("c2", 1883)]]
    assert load(tmp_path, '[mqtt]\nhost = "b1"\n').mqtt.brokers() == [("b1", 1883)]


@pytest.mark.parametrize("body,key,words", [
    ('[mqtt]\nhost = "b1"\nfailover = ["b1"]\n', "mqtt.failover[0]", "already mqtt.host"),
    ('[mqtt]\nhost = "b1"\nfailover = ["b2", "B2:1883"]\n', "mqtt.failover[1]",
     "already mqtt.failover[0]"),
    ('[mqtt]\nfailover = ["b2"]\n', "mqtt.failover", "needs mqtt.host"),
    ('[mqtt]\nhost = "b1"\nfailover = ["b2:99999"]\n', "mqtt.failover[0]", "65535"),
    ('[[uplink]]\nname = "x"\nhost = "c1"\nfailover = ["http://c2"]\n', "uplink[0].failover[0]",
     "not a URL"),
    ('[mqtt]\nhost = "b1"\nfailover = "b2"\n', "mqtt.failover", "must be a list"),
])
def test_a_bad_failover_list_is_a_configuration_error(tmp_path, body, key, words):
    with pytest.raises(config.ConfigError) as err:
        load(tmp_path, body)
    assert key in str(err.value) and words in str(err.value), str(err.value)


def test_more_than_eight_failover_brokers_is_refused(tmp_path):
    many = ", ".join(f'"b{i}"' for i in range(9))
    with pytest.raises(config.ConfigError, match="failover"):
        load(tmp_path, f'[mqtt]\nhost = "b1"\nfailover = [{many}]\n')


@pytest.fixture
def two(tmp_path):
    """Two mosquittos: the primary and its failover."""
    from agent.tools.simulate import find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it when run as root)")
    brokers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        brokers.append(Mosquitto(tmp_path / name))
        brokers[-1].start()
    yield brokers
    for b in brokers:
        b.stop()


def test_a_lost_broker_moves_the_uplink_to_the_next_and_nothing_is_lost(two, tmp_path,
                                                                         caplog):
    from netproxy import TcpProxy

    a, b = two
    proxy = TcpProxy((a.host, a.port))  # the primary, cut at will
    got: list[str] = []
    subs = [Subscriber(x.host, x.port, "f/#", lambda t, d, r: got.append(t)) for x in two]
    for s in subs:
        s.start()
    spool = Spool(tmp_path / "spool.db", batch_s=0)
    cfg = MqttConfig(host="127.0.0.1", port=proxy.port, failover=[f"127.0.0.1:{b.port}"],
                     backoff_initial_s=0.05, backoff_max_s=0.5)
    up = Uplink(cfg, "test-failover", spool)
    up.start()
    try:
        assert wait_for(lambda: up.connected, 5)
        assert up.status()["broker"] == 0 and up.broker_address == f"127.0.0.1:{proxy.port}"
        for i in range(5):
            up.publish(Message(f"f/{i}", b"\x80"))
        assert up.flush(5)
        with caplog.at_level(logging.WARNING, logger="citynode.uplink"):
            proxy.cut()
            for i in range(5, 10):
                up.publish(Message(f"f/{i}", b"\x80"))
            assert up.flush(10)
        assert up.broker == 1 and up.status()["host"] == f"127.0.0.1:{b.port}"
        assert f"connected to 127.0.0.1:{b.port}" in up.state
        moves = [r for r in caplog.records if getattr(r, "EVENT", "") == "broker_failover"]
        assert len(moves) == 1 and "moving to broker 1" in moves[0].getMessage()
        assert wait_for(lambda: len(set(got)) == 10, 5)
        assert sorted(set(got), key=lambda t: int(t[2:])) == [f"f/{i}" for i in range(10)]
        # The primary is back: the uplink stays until told.
        proxy.restore()
        up.publish(Message("f/10", b"\x80"))
        assert up.flush(5) and up.broker == 1
        assert "moving to broker 0" in up.use_broker(0)
        assert wait_for(lambda: up.connected and up.broker == 0, 10)
        up.publish(Message("f/11", b"\x80"))
        assert up.flush(5)
        assert wait_for(lambda: "f/11" in got, 5)
        with pytest.raises(ValueError, match="brokers 0 to 1"):
            up.use_broker(2)
    finally:
        up.stop(timeout=1)
        for s in subs:
            s.stop()
        proxy.close()
        spool.close()


def test_a_refused_primary_is_skipped_with_backoff(two, tmp_path):
    _, b = two
    dead = free_port()  # nothing listens there
    spool = Spool(tmp_path / "spool.db", batch_s=0)
    cfg = MqttConfig(host="127.0.0.1", port=dead, failover=[f"127.0.0.1:{b.port}"],
                     backoff_initial_s=0.05, backoff_max_s=0.2)
    up = Uplink(cfg, "test-refused-primary", spool)
    told: list[tuple[str, int]] = []  # a session may learn the broker (oneM2M's poa)
    up.session.connected_to = lambda host, port: told.append((host, port))
    up.start()
    try:
        assert wait_for(lambda: up.connected, 5)
        assert up.broker == 1
        assert told == [("127.0.0.1", b.port)]
        up.use_broker(0)  # told to go back while the primary is still down: it moves on again
        assert wait_for(lambda: up.connected and up.broker == 1 and up.reconnects >= 1, 10)
    finally:
        up.stop(timeout=1)
        spool.close()


def test_status_names_the_broker_in_use_and_its_place():
    m = SimpleNamespace(host="b1", port=1883)
    one = SimpleNamespace(brokers=[("b1", 1883)], broker=0, broker_address="b1:1883")
    assert _broker(one, m) == {"broker": "b1:1883"}
    moved = SimpleNamespace(brokers=[("b1", 1883), ("b2", 1883), ("b3", 1883)], broker=2,
                            broker_address="b3:1883")
    snap = _broker(moved, m)
    assert snap == {"broker": "b3:1883", "broker_index": 2, "brokers": 3}
    assert _where(snap) == "b3:1883, failover 2 of 2"
    assert _where({**snap, "broker_index": 0}) == "b3:1883, primary"
    assert _where({"broker": "b1:1883"}) == "b1:1883"
    assert _broker(object(), m) == {"broker": "b1:1883"}  # an uplink without the list


class FakeUplinks:
    def __init__(self, *members):
        self.members = list(members)


class FakeUplink:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.brokers, self.asked = name, [("h", 1)] * n, []

    def use_broker(self, index: int) -> str:
        self.asked.append(index)
        return f"uplink {self.name}: moving to broker {index}"


def test_the_broker_command_moves_all_or_none():
    from agent.core.daemon import Node

    main, other, single = FakeUplink("main", 3), FakeUplink("other", 2), FakeUplink("x", 1)
    node = SimpleNamespace(uplink=FakeUplinks(main, other, single))
    use = Node.use_broker
    assert use(node, None, 0) == (True, "uplink main: moving to broker 0; "
                                        "uplink other: moving to broker 0")
    ok, why = use(node, None, 2)
    assert not ok and "uplink other has brokers 0 to 1" in why and main.asked == [0]
    assert use(node, "main", 2)[0] and main.asked == [0, 2]
    ok, why = use(node, "nope", 0)
    assert not ok and "no uplink named 'nope' (have: main, other, x)" in why
    ok, why = use(SimpleNamespace(uplink=FakeUplinks(single)), None, 0)
    assert not ok and "no uplink has failover brokers" in why


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def subscribe(self, topic: str, qos: int):
        from paho.mqtt.enums import MQTTErrorCode

        self.asked.append(topic)
        return MQTTErrorCode.MQTT_ERR_SUCCESS, 7


def test_a_refused_subscription_is_asked_for_again(tmp_path, caplog):
    spool = Spool(tmp_path / "spool.db", batch_s=0)
    cfg = MqttConfig(host="127.0.0.1", backoff_initial_s=0.01, backoff_max_s=1)
    up = Uplink(cfg, "test-suback", spool)
    client = FakeClient()
    try:
        up._subscribe_to(client, "n/command")
        with caplog.at_level(logging.WARNING, logger="citynode.uplink"):
            up._handle_subscribe(client, None, 7, [0x80], None)  # refused
        assert "refused the subscription to n/command" in caplog.text
        assert wait_for(lambda: up._retry_subscriptions(client) or len(client.asked) == 2, 5)
        up._handle_subscribe(client, None, 7, [1], None)  # granted: nothing more
        assert not up._resubscribe and not up._subscribing
    finally:
        spool.close()
