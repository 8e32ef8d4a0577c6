"""The provider run the way the engine runs it: pickled by the SDK, served by ``python -m pulumi.dynamic``.

The engine starts that process in the project directory, asks it for a port
and speaks gRPC to it; the provider arrives as a base64 dill blob in every
request. So this catches what mocks cannot: a provider that does not unpickle
in a fresh interpreter, that captured something, or that loses its outputs.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from bench import servers
from bootstrap.provider import RedisClusterProvider
from tests.conftest import RedisFarm, RedisNode

REPO = Path(__file__).resolve().parents[2]
URN = "urn:pulumi:test::redis-cluster::pulumi-python:dynamic/redis-cluster:ClusterBootstrap::rc-bootstrap"


@pytest.fixture
def provider() -> Iterator[Any]:
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.dynamic"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = provider_pb2_grpc.ResourceProviderStub(channel)
        stub.Configure(provider_pb2.ConfigureRequest(args=struct_pb2.Struct()))
        yield stub
        channel.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def struct(props: dict[str, Any]) -> struct_pb2.Struct:
    # Not asyncio.run: it leaves the main thread without an event loop, which Pulumi's mocks need later.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(props, {}))
    finally:
        loop.close()


def plain(s: struct_pb2.Struct) -> dict[str, Any]:
    return dict(rpc.deserialize_properties(s))


def props(nodes: list[RedisNode], masters: int, replicas: int) -> dict[str, Any]:
    return {
        "__provider": serialize_provider(RedisClusterProvider()),
        "masters": masters,
        "replicasPerMaster": replicas,
        "phase": "converge",
        "discovery": {"kind": "static", "endpoints": [n.address for n in nodes]},
        "timeoutSeconds": 120,
    }


def test_create_diff_update_read_delete_over_grpc(provider: Any, redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(8, hosts=["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    first = props(nodes[:6], 3, 1)

    created = provider.Create(provider_pb2.CreateRequest(urn=URN, properties=struct(first)))
    outs = plain(created.properties)
    assert outs["clusterState"] == "ok"
    assert len(outs["masterNodes"]) == 3 and len(outs["replicaOf"]) == 3
    assert created.id.startswith("static-")

    same = provider.Diff(provider_pb2.DiffRequest(id=created.id, urn=URN, olds=created.properties, news=struct(first)))
    assert same.changes == provider_pb2.DiffResponse.DIFF_NONE

    scaled = props(nodes, 4, 1)
    diff = provider.Diff(provider_pb2.DiffRequest(id=created.id, urn=URN, olds=created.properties, news=struct(scaled)))
    assert diff.changes == provider_pb2.DiffResponse.DIFF_SOME
    assert list(diff.replaces) == [], "a shape change must never replace (recreate) the cluster"

    updated = provider.Update(
        provider_pb2.UpdateRequest(id=created.id, urn=URN, olds=created.properties, news=struct(scaled))
    )
    after = plain(updated.properties)
    assert len(after["masterNodes"]) == 4, "update must return the outputs, not drop them"
    assert {m["slots"] for m in after["masterNodes"]} != {m["slots"] for m in outs["masterNodes"]}

    # A replica dies: refresh (Read) reports the drift, and Diff turns it into an update that heals.
    replica = next(n for n in nodes if n.address in after["replicaOf"])
    replica.stop(hard=True)
    request = provider_pb2.ReadRequest(id=created.id, urn=URN, properties=updated.properties)
    read = plain(provider.Read(request).properties)
    assert read["clusterState"] == "degraded"
    assert any(replica.address in p and "does not answer" in p for p in read["problems"]), read["problems"]
    replica.start()
    healed = provider.Update(
        provider_pb2.UpdateRequest(id=created.id, urn=URN, olds=updated.properties, news=struct(scaled))
    )
    assert plain(healed.properties)["clusterState"] == "ok"

    provider.Delete(provider_pb2.DeleteRequest(id=created.id, urn=URN, properties=healed.properties))
    assert nodes[0].client().execute_command("CLUSTER", "INFO").startswith("cluster_state:ok"), "delete keeps data"


def test_a_bad_endpoint_fails_create_with_a_message_naming_it(provider: Any, redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(2)
    bad = props(nodes, 3, 0)
    bad["discovery"]["endpoints"].append("127.0.0.1:1")
    bad["timeoutSeconds"] = 2
    with pytest.raises(grpc.RpcError) as failure:
        provider.Create(provider_pb2.CreateRequest(urn=URN, properties=struct(bad)))
    assert "127.0.0.1:1" in str(failure.value.details())
    assert "did not answer PING" in str(failure.value.details())


DRAIN_URN = "urn:pulumi:test::redis-cluster::pulumi-python:dynamic/redis-cluster:ClusterDrain::rc-drain"
VALKEY_IMAGE = "localhost/redis-cluster/valkey:9.1-local"


def test_the_drains_diff_refuses_an_image_whose_engine_cannot_read_the_pods_data(
    provider: Any, redis_farm: RedisFarm
) -> None:
    """The drain comes before the StatefulSet and preview runs diffs: a refused engine move fails there,
    before any pod restarts (e2e step 14 and multi-node step 7 show it on Kubernetes)."""
    try:
        valkey = servers.resolve_server("valkey-9")
    except ValueError as exc:
        pytest.skip(str(exc))
    nodes = redis_farm.spawn(2, binary=valkey)
    old = {**props(nodes, 1, 1), "phase": "drain", "podTemplate": "a", "image": VALKEY_IMAGE}

    def diff(**change: str) -> Any:
        request = provider_pb2.DiffRequest(
            id="x/drain", urn=DRAIN_URN, olds=struct(old), news=struct({**old, **change})
        )
        return provider.Diff(request)

    with pytest.raises(grpc.RpcError) as refused:
        diff(podTemplate="b", image="localhost/redis-cluster/redis:7.0-local")
    said = str(refused.value.details())
    assert "Valkey 9.1.2 -> Redis 7.0.0 is refused" in said and "VALKEY 80" in said, said
    assert all(n.address in said for n in nodes), said
    assert diff(podTemplate="b", image="valkey/valkey:9.2.0").changes == provider_pb2.DiffResponse.DIFF_SOME
    # An image whose name does not say its engine is let through (the log says it was not checked).
    assert diff(podTemplate="b", image="cache:1").changes == provider_pb2.DiffResponse.DIFF_SOME
    # State written before the image was an input: the image alone is no change (an upgrade updates nothing).
    old.pop("image")
    assert diff(image=VALKEY_IMAGE).changes == provider_pb2.DiffResponse.DIFF_NONE
