"""Storage specs for any valid settings: pre-binding of every ordinal, schema validity."""

from __future__ import annotations

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
