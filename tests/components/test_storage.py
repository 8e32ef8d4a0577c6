"""Storage specs for any valid settings: pre-binding of every ordinal, schema validity."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import settings as hsettings

from components import labels, nodes, storage
from components.settings import ClusterSettings, validate
from tests.components.harness import assert_valid_kubernetes
from tests.components.strategies import settings


@hsettings(max_examples=40, deadline=None)
@given(settings())
def test_each_volume_is_bound_both_ways_to_its_ordinals_claim(s: ClusterSettings) -> None:
    [template] = nodes.statefulset_manifest(s)["spec"]["volumeClaimTemplates"]
    volumes = [storage.volume_manifest(s, i) for i in range(s.pod_count)]
    claims = [storage.claim_manifest(s, i) for i in range(s.pod_count)]
    assert len({v["metadata"]["name"] for v in volumes}) == s.pod_count
    assert len({labels.volume_path(s, i) for i in range(s.pod_count)}) == s.pod_count
    for i, (pv, pvc) in enumerate(zip(volumes, claims, strict=True)):
        assert pv["spec"]["claimRef"]["name"] == pvc["metadata"]["name"] == f"data-{s.name}-{i}"
        assert pv["spec"]["claimRef"]["namespace"] == pvc["metadata"]["namespace"] == s.namespace
        assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
        assert pv["spec"]["capacity"]["storage"] == template["spec"]["resources"]["requests"]["storage"]
        assert pv["spec"]["storageClassName"] == template["spec"]["storageClassName"]
        assert pv["spec"]["accessModes"] == template["spec"]["accessModes"]
        assert {k: v for k, v in pvc["spec"].items() if k != "volumeName"} == template["spec"]


@hsettings(max_examples=25, deadline=None)
@given(settings())
def test_storage_manifests_are_valid_kubernetes(s: ClusterSettings) -> None:
    manifests = [storage.storage_class_manifest(s)]
    manifests += [storage.volume_manifest(s, i) for i in range(s.pod_count)]
    manifests += [storage.claim_manifest(s, i) for i in range(s.pod_count)]
    for manifest in manifests:
        assert_valid_kubernetes(manifest)


@hsettings(max_examples=40, deadline=None)
@given(settings())
def test_volume_placement(s: ClusterSettings) -> None:
    for i in range(s.pod_count):
        spec = storage.volume_manifest(s, i)["spec"]
        if not s.nodes:
            assert spec["hostPath"] == {"path": labels.volume_path(s, i), "type": "DirectoryOrCreate"}
            assert "nodeAffinity" not in spec
        else:
            assert spec["local"] == {"path": labels.volume_path(s, i)}
            [term] = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
            assert term["matchExpressions"][0]["values"] == [s.nodes[i % len(s.nodes)]]
    if s.nodes:
        group = s.replicas_per_master + 1
        placed = [labels.volume_node(s, i) for i in range(s.pod_count)]
        for start in range(s.pod_count - group + 1):
            assert len(set(placed[start : start + group])) == group


def test_storage_class_default_flag_is_opt_in() -> None:
    plain = storage.storage_class_manifest(validate({}))
    assert "annotations" not in plain["metadata"]
    assert plain["provisioner"] == "kubernetes.io/no-provisioner"
    assert plain["volumeBindingMode"] == "WaitForFirstConsumer"
    marked = storage.storage_class_manifest(validate({"defaultStorageClass": True}))
    assert marked["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}


@hsettings(max_examples=30, deadline=None)
@given(settings())
def test_scaling_out_leaves_existing_volumes_and_the_statefulset_template_alone(s: ClusterSettings) -> None:
    """A changed PV or claim template means a replacement: deleting a bound PV hangs, and data moves."""
    bigger = dataclasses.replace(s, masters=s.masters + 1)
    if bigger.nodes and bigger.anti_affinity == "required" and len(bigger.nodes) < bigger.pod_count:
        bigger = dataclasses.replace(bigger, anti_affinity="preferred")
    for i in range(s.pod_count):
        assert storage.volume_manifest(bigger, i) == storage.volume_manifest(s, i)
        assert storage.claim_manifest(bigger, i) == storage.claim_manifest(s, i)
    before, after = nodes.statefulset_manifest(s)["spec"], nodes.statefulset_manifest(bigger)["spec"]
    assert after["replicas"] == before["replicas"] + 1 + s.replicas_per_master
    assert after["volumeClaimTemplates"] == before["volumeClaimTemplates"]
    before_template = before["template"]["metadata"]["annotations"]
    assert after["template"]["metadata"]["annotations"] == before_template


def test_claims_are_not_awaited_by_the_provider() -> None:
    """Pre-bound claims are often Bound before pulumi-kubernetes first looks; it only accepts
    Pending for a WaitForFirstConsumer class and would time out the `up` after 5 minutes."""
    s = validate({})
    for i in range(s.pod_count):
        assert storage.claim_manifest(s, i)["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
