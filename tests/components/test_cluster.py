"""RedisCluster exposes what the bootstrap wiring needs, and composes the parts."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import RedisCluster, RedisClusterArgs
from components.settings import validate
from tests.components.harness import run_program

SETTINGS = validate({"masters": 3, "replicasPerMaster": 2, "namespace": "cache", "createNamespace": True})


def test_attributes_for_the_bootstrap() -> None:
    built: list[RedisCluster] = []
    resolved: dict[str, str] = {}

    def body() -> None:
        cluster = RedisCluster("rc", RedisClusterArgs(SETTINGS))
        built.append(cluster)
        cluster.statefulset_name.apply(lambda n: resolved.setdefault("sts", n))

    run_program({}, body=body)
    [cluster] = built
    assert isinstance(cluster.statefulset, k8s.apps.v1.StatefulSet)
    assert resolved["sts"] == "redis-cluster"
    assert cluster.namespace == "cache"
    assert cluster.pod_names == [f"redis-cluster-{i}" for i in range(9)]
    assert cluster.pod_dns_names[8] == "redis-cluster-8.redis-cluster-headless.cache.svc.cluster.local"
    assert cluster.headless_service_name == "redis-cluster-headless"
    assert cluster.settings.bootstrap_connection == "port-forward"
    assert isinstance(cluster.provider_opts, pulumi.ResourceOptions)
    assert cluster.provider_opts.parent is cluster
    assert cluster.provider is None


def build() -> None:
    RedisCluster("rc", RedisClusterArgs(SETTINGS))


def test_namespace_comes_first() -> None:
    run = run_program({}, body=build)
    ns = run.one("kubernetes:core/v1:Namespace")
    namespaced = [r for r in run.resources if r.custom and r.inputs.get("metadata", {}).get("namespace")]
    assert len(namespaced) == 9 + 6  # claims; StatefulSet, ConfigMap, PDB and three Services
    for r in namespaced:
        assert ns.urn in r.dependencies, r.name
