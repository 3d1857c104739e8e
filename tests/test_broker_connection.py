"""agent.wire.mqtt: the client ids and the MQTT 5 -> 3.1.1 rule the uplink and the tools share."""

from __future__ import annotations

from agent.core.config import MqttConfig
from agent.wire.mqtt import (
    MQTTv5,
    MQTTv311,
    fall_back,
    first_protocol,
    node_client_id,
    tool_client_id,
    version_name,
)


def test_client_ids():
    m = MqttConfig(prefix="city/north")
    assert node_client_id(m, "n1") == "city-north-n1"
    assert tool_client_id(m, "n1", "doctor") == "city-north-n1-doctor"
    long = MqttConfig(client_id="x" * 64)
    assert node_client_id(long, "n1") == "x" * 64
    for tool in ("doctor", "provision"):
        cid = tool_client_id(long, "n1", tool)
        assert len(cid) == 63 and cid.endswith(f"-{tool}")


def test_protocol_fallback_only_for_auto_and_mqtt5():
    assert first_protocol("auto") == first_protocol("5") == MQTTv5
    assert first_protocol("3.1.1") == MQTTv311
    assert fall_back("auto", MQTTv5, 132) == fall_back("auto", MQTTv5, 1) == MQTTv311
    assert fall_back("auto", MQTTv5, 135) is None  # not authorised: no retry
    assert fall_back("auto", MQTTv5, None) is None  # no CONNACK at all
    assert fall_back("5", MQTTv5, 132) is None
    assert fall_back("auto", MQTTv311, 1) is None
    assert (version_name(MQTTv5), version_name(MQTTv311)) == ("5", "3.1.1")
