"""The Redis deployments tests start for themselves (``tests/topologies.py``) really are what
their names say, and go away whatever happens to the test."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.topologies import running

pytestmark = pytest.mark.redis_topology


def test_a_topology_is_stopped_and_removed_even_when_the_test_fails():
    with pytest.raises(RuntimeError, match="test failed"):
        with running("single") as topology:
            process = topology.server.process
            folder = topology.folder
            assert redis.Redis(port=topology.port).ping()
            raise RuntimeError("test failed")
    assert process.poll() is not None
    assert not folder.exists()


def test_the_cluster_spreads_its_slots_over_three_masters(redis_topologies):
    cluster = redis_topologies("cluster")
    nodes = [ClusterNode("127.0.0.1", server.port) for server in cluster.servers]
    client = RedisCluster(startup_nodes=nodes, socket_timeout=2)
    try:
        masters = {node.name for node in client.get_primaries()}
        assert len(masters) == 3
        owners = {client.get_node_from_key(f"{{circuit-{i}}}").name for i in range(30)}
        assert owners == masters
        info = client.cluster_info(target_nodes=RedisCluster.RANDOM)
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_ok"]) == 16384
    finally:
        client.close()
