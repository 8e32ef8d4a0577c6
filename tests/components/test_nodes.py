"""Redis node specs (ConfigMap, StatefulSet, PDB) for any valid settings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings

from components import nodes, redis_config
from components.settings import ClusterSettings, validate
from tests.components.harness import assert_valid_kubernetes
from tests.components.strategies import settings


@hsettings(max_examples=25, deadline=None)
@given(settings())
def test_node_manifests_are_valid_kubernetes(s: ClusterSettings) -> None:
    for manifest in (nodes.config_map_manifest(s), nodes.statefulset_manifest(s), nodes.pdb_manifest(s)):
        assert_valid_kubernetes(manifest)


@hsettings(max_examples=40, deadline=None)
@given(settings())
def test_statefulset_follows_settings(s: ClusterSettings) -> None:
    spec = nodes.statefulset_manifest(s)["spec"]
    assert spec["replicas"] == s.masters * (1 + s.replicas_per_master)
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    key = (
        "requiredDuringSchedulingIgnoredDuringExecution"
        if s.anti_affinity == "required"
        else "preferredDuringSchedulingIgnoredDuringExecution"
    )
    assert list(anti) == [key]
    assert ("initContainers" in pod) == s.volume_permissions_init
    redis, *sidecars = pod["containers"]
    assert [c["name"] for c in sidecars] == (["redis-exporter"] if s.metrics else [])
    limits = redis["resources"].get("limits", {})
    assert limits.get("cpu", "") == s.cpu_limit and limits.get("memory", "") == s.memory_limit


def test_config_change_rolls_the_pods() -> None:
    def checksum(timeout: int) -> str:
        template = nodes.statefulset_manifest(validate({"nodeTimeoutMs": timeout}))["spec"]["template"]
        return str(template["metadata"]["annotations"][nodes.CHECKSUM_ANNOTATION])

    assert checksum(15000) == checksum(15000)
    assert checksum(15000) != checksum(20000)


def test_the_bootstrap_rolls_the_pods_when_what_they_run_changes_and_only_then() -> None:
    """OnDelete: the controller restarts nothing; the template digest is the bootstrap's input that
    makes `pulumi preview` show the roll (bootstrap/roll.py)."""
    base = validate({})
    assert nodes.statefulset_manifest(base)["spec"]["updateStrategy"] == {"type": "OnDelete"}
    digest = nodes.pod_template_digest
    assert digest(base) == digest(validate({}))
    assert digest(base) != digest(validate({"image": "redis:7.2.5"}))
    assert digest(base) != digest(validate({"nodeTimeoutMs": 20000}))  # config: the checksum annotation
    assert digest(base) != digest(validate({"memoryLimit": "2Gi"}))
    assert digest(base) == digest(validate({"masters": 4})), "a scale-out adds pods, it restarts none"


def test_config_map_carries_the_script_file_verbatim() -> None:
    data = nodes.config_map_manifest(validate({}))["data"]
    assert data[redis_config.SCRIPT_KEY] == redis_config.SCRIPT_PATH.read_text()
    assert "cluster-node-timeout 15000" in data[redis_config.CONF_KEY].splitlines()


def test_every_graceful_stop_runs_the_handover_from_the_config_map_within_the_grace_period() -> None:
    s = validate({})
    data = nodes.config_map_manifest(s)["data"]
    assert data[redis_config.HANDOVER_KEY] == redis_config.HANDOVER_PATH.read_text()
    pod = nodes.statefulset_manifest(s)["spec"]["template"]["spec"]
    [redis] = pod["containers"]
    command = redis["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["sh", f"{redis_config.CONFIG_DIR}/{redis_config.HANDOVER_KEY}"]
    env = {e["name"]: e.get("value") for e in redis["env"]}
    assert int(env["REDIS_HANDOVER_TIMEOUT"]) + 10 <= pod["terminationGracePeriodSeconds"]
    assert "REDIS_CLI_TLS" not in env
    tls_env = {
        e["name"]
        for e in nodes.statefulset_manifest(validate({"tls": True, "tlsOnly": True}))["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert "REDIS_CLI_TLS" in tls_env, "with the plain port closed the hook speaks TLS"


def test_pdb_allows_one_disruption_and_never_protects_a_pod_that_serves_nothing() -> None:
    spec = nodes.pdb_manifest(validate({}))["spec"]
    assert spec["maxUnavailable"] == 1
    # A crash-looping pod holds the budget; the roll that fixes it must still be able to evict it.
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
