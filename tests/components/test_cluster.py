"""RedisCluster exposes what the bootstrap wiring needs, and composes the parts."""

from __future__ import annotations

import base64
import pickletools
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.cluster import RedisCluster, RedisClusterArgs
from components.settings import validate
from tests.components.harness import BOOTSTRAP_TYPE, DRAIN_TYPE, ProgramRun, Registered, run_program

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
    # claims; StatefulSet, ConfigMap, PDB; headless and client Services; auth Secret, NetworkPolicy
    assert len(namespaced) == 9 + 3 + 2 + 2
    for r in namespaced:
        assert ns.urn in r.dependencies, r.name


def dynamic(run: ProgramRun, suffix: str) -> Registered:
    """The drain or the bootstrap, each found by its own type (what a preview shows)."""
    [found] = run.of_type({"-drain": DRAIN_TYPE, "-bootstrap": BOOTSTRAP_TYPE}[suffix])
    assert found.name.endswith(suffix)
    return found


def test_the_drain_runs_before_the_statefulset_and_the_bootstrap_after_it() -> None:
    """Scale-in must empty pods before the StatefulSet deletes them; formation needs the pods first."""
    run = run_program({}, body=build)
    sts = run.one("kubernetes:apps/v1:StatefulSet")
    drain, boot = dynamic(run, "-drain"), dynamic(run, "-bootstrap")
    assert drain.urn in sts.dependencies
    assert sts.urn in boot.dependencies
    assert boot.urn not in sts.dependencies
    for r, phase in ((drain, "drain"), (boot, "converge")):
        assert r.inputs["phase"] == phase
        assert r.inputs["masters"] == 3 and r.inputs["replicasPerMaster"] == 2
        assert r.inputs["discovery"] == {
            "kind": "kubernetes",
            "namespace": "cache",
            "statefulSet": "redis-cluster",
            "connection": "port-forward",
        }


def test_the_provider_is_pickled_by_reference_and_captures_nothing() -> None:
    """The engine unpickles it in another process: a class from __main__ or a captured client breaks that."""
    serialized = dynamic(run_program({}, body=build), "-bootstrap").inputs["__provider"]
    if isinstance(serialized, dict):  # a secret: {<sig>: <secret sig>, "value": ...}
        serialized = serialized["value"]
    blob = base64.b64decode(serialized)
    names = {arg for _op, arg, _pos in pickletools.genops(blob) if isinstance(arg, str)}
    assert {"bootstrap.provider", "RedisClusterProvider"} <= names
    assert len(blob) < 200, f"the provider pickles to {len(blob)} bytes: something got captured"


def test_render_mode_has_nothing_to_bootstrap_unless_endpoints_are_given(tmp_path: Path) -> None:
    rendered = validate({"renderYamlTo": str(tmp_path)})

    def build_rendered() -> None:
        RedisCluster("rc", RedisClusterArgs(rendered))

    run = run_program({}, body=build_rendered)
    assert run.of_type(DRAIN_TYPE) == [] and run.of_type(BOOTSTRAP_TYPE) == []
    endpoints = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
    settings = validate({**{"renderYamlTo": str(tmp_path)}, "replicasPerMaster": 0, "bootstrapEndpoints": endpoints})

    def build_static() -> None:
        RedisCluster("rc", RedisClusterArgs(settings))

    boot = dynamic(run_program({}, body=build_static), "-bootstrap")
    assert boot.inputs["discovery"] == {"kind": "static", "endpoints": endpoints}
