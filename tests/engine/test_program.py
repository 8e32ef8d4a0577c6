"""The real program through the real engine: language host, kubernetes provider (rendering), dynamic provider.

The Kubernetes objects are rendered to a directory (no cluster); the bootstrap
resource runs in the engine's own dynamic-provider process against real
redis-server processes on loopback, given as ``bootstrapEndpoints``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from pulumi import automation as auto

from bootstrap.model import SLOTS, format_ranges, parse_ranges
from tests.components.harness import assert_valid_kubernetes, declared_defaults, engine_config, run_program
from tests.conftest import RedisFarm, RedisNode

if TYPE_CHECKING:
    from .conftest import EngineStackFactory

pytestmark = pytest.mark.engine

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def rendered(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def kinds_and_names(manifests: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(m["kind"], m["metadata"]["name"]) for m in manifests}


def resources(stack: auto.Stack) -> list[dict[str, Any]]:
    deployment = stack.export_stack().deployment or {}
    return list(deployment.get("resources") or [])


def changes(result: auto.UpResult | auto.PreviewResult) -> dict[str, int]:
    summary = result.change_summary if isinstance(result, auto.PreviewResult) else result.summary.resource_changes
    return {k: v for k, v in (summary or {}).items() if k != "same" and v}


def test_render_preview_up_again_and_destroy(engine_stack: EngineStackFactory, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    stack = engine_stack(config={"renderYamlTo": str(out)})
    lines: list[str] = []

    preview = stack.preview(on_output=lines.append)
    planned = changes(preview)
    assert planned.get("create", 0) >= 20, planned

    up = stack.up(on_output=lines.append)
    assert up.summary.result == "succeeded", "\n".join(lines)
    manifests = rendered(out)
    for m in manifests:
        assert_valid_kubernetes(m)
    # Same objects as the mocks tests see for the same config (the engine adds nothing, drops nothing).
    config = engine_config({**declared_defaults(), "renderYamlTo": str(tmp_path / "mocked")})
    mocked = run_program(config, "test").manifests()
    assert kinds_and_names(manifests) == kinds_and_names(mocked)
    pvs = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "PersistentVolume"}
    claims = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "PersistentVolumeClaim"}
    assert len(pvs) == len(claims) == 6
    for claim_name, claim in claims.items():
        pv = pvs[claim["spec"]["volumeName"]]
        assert pv["spec"]["claimRef"]["name"] == claim_name

    again = stack.up(on_output=lines.append)
    assert changes(again) == {}, "a second up must report no changes"

    stack.destroy(on_output=lines.append)
    assert resources(stack) == []


def test_bad_config_fails_preview_with_the_validation_message_and_creates_nothing(
    engine_stack: EngineStackFactory, tmp_path: Path
) -> None:
    stack = engine_stack(config={"renderYamlTo": str(tmp_path / "m"), "masters": 2, "externalNodePort": 8080})
    with pytest.raises(auto.errors.CommandError) as failure:
        stack.preview()
    message = str(failure.value)
    assert "redis-cluster:masters = '2'" in message
    assert "redis-cluster:externalNodePort = '8080'" in message
    with pytest.raises(auto.errors.CommandError):
        stack.up()
    assert not (tmp_path / "m").exists(), "nothing may be rendered"
    assert [r for r in resources(stack) if r["type"] != "pulumi:pulumi:Stack"] == []


def set_endpoints(stack: auto.Stack, nodes: list[RedisNode]) -> None:
    """Typed array config must be set element by element (a JSON string is refused as array<string>)."""
    values = {f"redis-cluster:bootstrapEndpoints[{i}]": auto.ConfigValue(n.address) for i, n in enumerate(nodes)}
    stack.set_all_config(values, path=True)


def test_bootstrap_in_the_engine_create_scale_refresh_destroy(
    engine_stack: EngineStackFactory, redis_farm: RedisFarm, tmp_path: Path
) -> None:
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    base: dict[str, str | int] = {"renderYamlTo": str(tmp_path / "m"), "masters": 3, "replicasPerMaster": 1}
    stack = engine_stack(config=base)
    set_endpoints(stack, nodes[:6])
    lines: list[str] = []

    up = stack.up(on_output=lines.append)
    assert up.summary.result == "succeeded", "\n".join(lines)
    assert up.outputs["clusterState"].value == "ok"
    masters = up.outputs["masters"].value
    assert len(masters) == 3
    assert sum(len(parse_ranges(m["slots"])) for m in masters) == SLOTS

    stack.set_config("redis-cluster:masters", auto.ConfigValue("4"))
    set_endpoints(stack, nodes)
    preview = stack.preview(on_output=lines.append, diff=True)
    planned = changes(preview)
    assert planned.get("update", 0) >= 1 and "replace" not in planned, planned
    scaled = stack.up(on_output=lines.append)
    assert len(scaled.outputs["masters"].value) == 4, "\n".join(lines)

    # A replica dies: refresh shows it, and the next up heals once it is back.
    replica_address = next(iter(scaled.outputs["replicaOf"].value))
    replica = next(n for n in nodes if n.address == replica_address)
    replica.stop(hard=True)
    # Only the bootstrap: rendered Kubernetes objects have no cluster to be refreshed from.
    urns = {r["urn"].rsplit("::", 1)[1]: r["urn"] for r in resources(stack)}
    stack.refresh(on_output=lines.append, target=[urns["redis-cluster-bootstrap"]])
    state = {r["urn"].rsplit("::", 1)[1]: r for r in resources(stack)}
    boot = state["redis-cluster-bootstrap"]["outputs"]
    assert boot["clusterState"] == "degraded"
    assert any(replica_address in p for p in boot["problems"])
    replica.start()
    healed = stack.up(on_output=lines.append)
    assert healed.outputs["clusterState"].value == "ok", "\n".join(lines)

    stack.destroy(on_output=lines.append)
    info = nodes[0].client().execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in info, "destroy must leave the cluster and its data alone"


def bootstrap_outputs(stack: auto.Stack) -> dict[str, Any]:
    state = {r["urn"].rsplit("::", 1)[1]: r for r in resources(stack)}
    return dict(state["redis-cluster-bootstrap"]["outputs"])


def lose_a_shard(nodes: list[RedisNode]) -> tuple[RedisNode, RedisNode, frozenset[int]]:
    """Kill a master that owns slots and its replica (SIGKILL): every copy of its slots is gone."""
    lines = {n.address: n.client().execute_command("CLUSTER", "NODES") for n in nodes}
    selves = {a: next(ln for ln in text.splitlines() if "myself" in ln).split() for a, text in lines.items()}
    master = next(n for n in nodes if "master" in selves[n.address][2] and len(selves[n.address]) > 8)
    replica = next(n for n in nodes if selves[n.address][3] == selves[master.address][0])
    slots = parse_ranges(",".join(selves[master.address][8:]))
    for n in (master, replica):
        n.stop(hard=True)
    return master, replica, slots


def test_lost_slots_are_reassigned_only_with_accept_lost_slots_and_the_consent_is_spent(
    engine_stack: EngineStackFactory, redis_farm: RedisFarm, tmp_path: Path
) -> None:
    """A lost shard fails `pulumi up` naming the slots; acceptLostSlots lets the next up reassign them and is
    then spent: the same value left in the config does not accept the next loss."""
    nodes = redis_farm.spawn(10, hosts=HOSTS)
    listed = nodes[:6]
    stack = engine_stack(config={"renderYamlTo": str(tmp_path / "m"), "masters": 3, "replicasPerMaster": 1})
    set_endpoints(stack, listed)
    lines: list[str] = []
    assert stack.up(on_output=lines.append).outputs["clusterState"].value == "ok", "\n".join(lines)

    master, replica, lost = lose_a_shard(listed)
    listed = [n for n in listed if n not in (master, replica)] + nodes[6:8]
    set_endpoints(stack, listed)
    with pytest.raises(auto.CommandError) as refused:
        stack.up(on_output=lines.append)
    assert f"slots {format_ranges(lost)}" in str(refused.value) and "acceptLostSlots" in str(refused.value)
    urns = {r["urn"].rsplit("::", 1)[1]: r["urn"] for r in resources(stack)}
    stack.refresh(on_output=lines.append, target=[urns["redis-cluster-bootstrap"]])
    assert any("have no live copy" in p for p in bootstrap_outputs(stack)["problems"]), bootstrap_outputs(stack)

    stack.set_config("redis-cluster:acceptLostSlots", auto.ConfigValue("all"))
    accepted = stack.up(on_output=lines.append)
    assert accepted.outputs["clusterState"].value == "ok", "\n".join(lines)
    record = bootstrap_outputs(stack)["lostSlotsAccepted"]
    assert (record["setting"], record["slots"]) == ("all", format_ranges(lost)), record

    master, replica, lost = lose_a_shard(listed)
    listed = [n for n in listed if n not in (master, replica)] + nodes[8:10]
    set_endpoints(stack, listed)
    with pytest.raises(auto.CommandError) as spent:
        stack.up(on_output=lines.append)
    assert "acceptLostSlots 'all' was spent" in str(spent.value), str(spent.value)[-3000:]
    stack.set_config("redis-cluster:acceptLostSlots", auto.ConfigValue(format_ranges(lost)))
    again = stack.up(on_output=lines.append)
    assert again.outputs["clusterState"].value == "ok", "\n".join(lines)
    assert bootstrap_outputs(stack)["lostSlotsAccepted"]["slots"] == format_ranges(lost)
