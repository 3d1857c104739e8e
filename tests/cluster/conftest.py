"""A real three-node NATS cluster with MQTT (JetStream) on 127.0.0.1, for the failover
tests (`make test-cluster`); skipped with the reason when nats-server is missing."""

from __future__ import annotations

import pytest

from bench.nats_cluster import NatsCluster, find_nats


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if find_nats() is None:
        pytest.skip("nats-server is not installed: apt-get install nats-server "
                    "(make test-cluster installs it when run as root)")
    c = NatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        c.start()
    except (RuntimeError, TimeoutError) as exc:
        c.stop()
        pytest.skip(f"the NATS cluster did not start here: {exc}")
    yield c
    c.stop()


@pytest.fixture
def healed(cluster):
    """Every server running and the cluster ready before and after a test."""
    for i, n in enumerate(cluster.nodes):
        if n.proc is None:
            cluster.start_node(i)
    cluster.wait_ready()
    yield cluster
    for i, n in enumerate(cluster.nodes):
        if n.proc is None:
            cluster.start_node(i)
