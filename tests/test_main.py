"""The real ``__main__.py`` under Pulumi mocks, with the dev and prod stack files.

What is checked here is what the engine would receive: counts, names and specs
of every object, the PV <-> claim binding of every ordinal, and every manifest
against the Kubernetes OpenAPI schema (kubernetes-validate, strict).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from components.settings import SettingsError
from tests.components.harness import (
    MOCK_ANNOUNCED,
    ProgramRun,
    assert_valid_kubernetes,
    run_failing_program,
    run_program,
    stack_config,
    stack_values,
)

STACKS = ["dev", "prod"]
STANDARD_LABEL_KEYS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
}

PV = "kubernetes:core/v1:PersistentVolume"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
STS = "kubernetes:apps/v1:StatefulSet"
SC = "kubernetes:storage.k8s.io/v1:StorageClass"
SVC = "kubernetes:core/v1:Service"


@functools.cache
def _run(stack: str) -> ProgramRun:
    return run_program(stack_config(stack), stack)


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def expected(stack: str) -> dict[str, Any]:
    values = stack_values(stack)
    masters = values.get("masters", 3)
    replicas = values.get("replicasPerMaster", 1)
    return {
        "namespace": values.get("namespace", "default"),
        "name": values.get("name", "redis-cluster"),
        "pods": masters * (1 + replicas),
        "replicas": replicas,
        "size": values.get("storageSize", "150Mi"),
        "nodes": values.get("nodes", []),
        "class": values.get("storageClassName", "redis-cluster-local"),
        "base": values.get("hostPathBase", "/mnt/redis-cluster"),
        "anti": values.get("antiAffinity", "preferred"),
        "nodeport": values.get("externalNodePort", 30036),
        "external": values.get("externalAccess", "none"),
        "nodeport_base": values.get("externalNodePortBase", 31000),
        "bus_base": values.get("externalBusNodePortBase", 32000),
    }


def statefulset(run: ProgramRun) -> dict[str, Any]:
    return run.one(STS).inputs


def by_name(run: ProgramRun, typ: str) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in run.of_type(typ)}


def test_dev_reproduces_the_recipe() -> None:
    run = _run("dev")
    counts = {t: len(run.of_type(t)) for t in (SC, PV, PVC, STS, SVC)}
    assert counts == {SC: 1, PV: 6, PVC: 6, STS: 1, SVC: 3}
    assert len(run.of_type("kubernetes:core/v1:Secret")) == 1
    assert len(run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")) == 1
    assert len(run.of_type("kubernetes:core/v1:ConfigMap")) == 1
    assert len(run.of_type("kubernetes:policy/v1:PodDisruptionBudget")) == 1
    assert run.of_type("kubernetes:core/v1:Namespace") == []
    assert run.of_type("pulumi:providers:kubernetes") == []
    for pv in run.of_type(PV):
        assert pv.inputs["spec"]["capacity"] == {"storage": "150Mi"}


def test_prod_shape() -> None:
    run = _run("prod")
    assert len(run.of_type(PV)) == 9 and len(run.of_type(PVC)) == 9
    assert statefulset(run)["spec"]["replicas"] == 9
    ns = run.one("kubernetes:core/v1:Namespace").inputs
    assert ns["metadata"]["name"] == "redis"
    ns_urn = run.one("kubernetes:core/v1:Namespace").urn
    for r in run.resources:
        if r.custom and r.inputs.get("metadata", {}).get("namespace") == "redis":
            assert ns_urn in r.dependencies, r.name


def test_components_have_tokens_children_are_parented_outputs_registered(stack: str) -> None:
    run = _run(stack)
    components = {r.typ: r for r in run.resources if not r.custom}
    assert set(components) == {
        "redis-cluster:cluster:RedisCluster",
        "redis-cluster:storage:Storage",
        "redis-cluster:services:Services",
        "redis-cluster:nodes:RedisNodes",
        "redis-cluster:security:Security",
    }
    top = components["redis-cluster:cluster:RedisCluster"]
    for typ, comp in components.items():
        assert comp.urn in run.outputs_registered, typ
        if comp is not top:
            assert comp.parent == top.urn
    component_urns = {c.urn for c in components.values()}
    for r in run.resources:
        if r.custom:
            assert r.parent in component_urns, f"{r.typ} {r.name} is not parented to a component"


def test_every_manifest_is_valid_kubernetes(stack: str) -> None:
    manifests = _run(stack).manifests()
    assert len(manifests) >= 19
    for manifest in manifests:
        assert_valid_kubernetes(manifest)


def test_storage_class_is_no_provisioner_wait_for_first_consumer(stack: str) -> None:
    sc = _run(stack).one(SC).inputs
    assert sc["metadata"]["name"] == expected(stack)["class"]
    assert sc["provisioner"] == "kubernetes.io/no-provisioner"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"
    assert "storageclass.kubernetes.io/is-default-class" not in sc["metadata"].get("annotations", {})


def test_default_storage_class_is_opt_in() -> None:
    run = run_program(stack_config("dev", defaultStorageClass=True))
    annotations = run.one(SC).inputs["metadata"]["annotations"]
    assert annotations == {"storageclass.kubernetes.io/is-default-class": "true"}


def test_every_ordinal_binds_its_own_volume(stack: str) -> None:
    run, want = _run(stack), expected(stack)
    sts = statefulset(run)
    sts_name = sts["metadata"]["name"]
    [template] = sts["spec"]["volumeClaimTemplates"]
    request = template["spec"]["resources"]["requests"]["storage"]
    pvs, pvcs = by_name(run, PV), by_name(run, PVC)
    assert len(pvs) == len(pvcs) == sts["spec"]["replicas"] == want["pods"]
    for i in range(want["pods"]):
        pv = pvs[f"{want['namespace']}-{want['name']}-{i}"]["spec"]
        claim_name = f"{template['metadata']['name']}-{sts_name}-{i}"
        assert pv["claimRef"]["name"] == claim_name
        assert pv["claimRef"]["namespace"] == sts["metadata"]["namespace"] == want["namespace"]
        assert set(pv["claimRef"]) <= {"apiVersion", "kind", "name", "namespace"}, "no uid: must rebind after up"
        assert pv["storageClassName"] == template["spec"]["storageClassName"] == want["class"]
        assert pv["capacity"]["storage"] == request == want["size"]
        assert pv["accessModes"] == template["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert pv["volumeMode"] == template["spec"]["volumeMode"]
        assert pv["persistentVolumeReclaimPolicy"] == "Retain"
        path = f"{want['base']}/{want['namespace']}/{want['name']}-{i}"
        assert (pv.get("hostPath") or pv.get("local") or {}).get("path") == path
        claim = pvcs[claim_name]
        assert claim["metadata"]["namespace"] == want["namespace"]
        assert claim["spec"]["volumeName"] == f"{want['namespace']}-{want['name']}-{i}"
        assert {k: v for k, v in claim["spec"].items() if k != "volumeName"} == template["spec"]


def test_claims_are_created_before_the_statefulset(stack: str) -> None:
    run = _run(stack)
    sts = run.one(STS)
    for claim in run.of_type(PVC):
        assert claim.urn in sts.dependencies
    pv_urns = {pv.urn for pv in run.of_type(PV)}
    for claim in run.of_type(PVC):
        assert pv_urns & set(claim.dependencies)
    # The controller must never delete claims that Pulumi owns.
    policy = statefulset(run)["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_dev_volumes_are_host_paths_without_node_affinity() -> None:
    for pv in _run("dev").of_type(PV):
        spec = pv.inputs["spec"]
        assert spec["hostPath"]["type"] == "DirectoryOrCreate"
        assert "nodeAffinity" not in spec and "local" not in spec


def test_prod_volumes_are_local_and_spread_round_robin() -> None:
    run, want = _run("prod"), expected("prod")
    pvs = by_name(run, PV)
    nodes = want["nodes"]
    placed = []
    for i in range(want["pods"]):
        spec = pvs[f"{want['namespace']}-{want['name']}-{i}"]["spec"]
        assert "hostPath" not in spec
        [term] = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
        [expr] = term["matchExpressions"]
        assert (expr["key"], expr["operator"]) == ("kubernetes.io/hostname", "In")
        placed.append(expr["values"])
    assert placed == [[nodes[i % len(nodes)]] for i in range(want["pods"])]
    group = want["replicas"] + 1
    for start in range(want["pods"] - group + 1):
        window = [p[0] for p in placed[start : start + group]]
        assert len(set(window)) == group, "a master and its replicas could share a node"


def test_statefulset_spec(stack: str) -> None:
    run, want = _run(stack), expected(stack)
    spec = statefulset(run)["spec"]
    headless = by_name(run, SVC)[f"{want['name']}-headless"]
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["replicas"] == want["pods"]
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 999
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 30
    [redis] = pod["containers"]
    assert {(p["name"], p["containerPort"]) for p in redis["ports"]} == {("redis", 6379), ("bus", 16379)}
    sec = redis["securityContext"]
    assert sec["runAsUser"] == 999 and sec["runAsNonRoot"] is True
    assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in redis["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["REDIS_ANNOUNCE_HOSTNAME"]["value"] == (
        f"$(POD_NAME).{want['name']}-headless.{want['namespace']}.svc.cluster.local"
    )
    assert redis["command"][-1].endswith("/start-redis.sh")
    values = stack_values(stack)
    assert redis["resources"]["requests"]["cpu"] == values.get("cpuRequest", "100m")
    assert redis["resources"]["requests"]["memory"] == values.get("memoryRequest", "128Mi")
    assert redis["resources"]["limits"]["memory"] == values.get("memoryLimit", "256Mi")
    mounts = {m["name"]: m["mountPath"] for m in redis["volumeMounts"]}
    assert mounts["data"] == "/data"


def test_probes_do_not_depend_on_cluster_state(stack: str) -> None:
    [redis] = statefulset(_run(stack))["spec"]["template"]["spec"]["containers"]
    readiness = " ".join(redis["readinessProbe"]["exec"]["command"])
    liveness = " ".join(redis["livenessProbe"]["exec"]["command"])
    assert "ping" in readiness and "PONG" in readiness
    # Readiness may ask whether an empty node is a member yet (known nodes, slots), never the cluster's state.
    assert "cluster_state" not in readiness.lower()
    assert "cluster" not in liveness.lower()
    live = redis["livenessProbe"]
    # Generous: a node forming or loading its AOF is never killed within ~1.5 minutes.
    assert live["initialDelaySeconds"] + live["periodSeconds"] * live["failureThreshold"] >= 90


def test_anti_affinity(stack: str) -> None:
    want = expected(stack)
    affinity = statefulset(_run(stack))["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    if want["anti"] == "required":
        [term] = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
    else:
        [weighted] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert weighted["weight"] == 100
        term = weighted["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == want["name"]


def test_labels_and_selectors(stack: str) -> None:
    run = _run(stack)
    for manifest in run.manifests():
        assert set(manifest["metadata"]["labels"]) >= STANDARD_LABEL_KEYS, manifest["metadata"]["name"]
    sts = statefulset(run)["spec"]
    pod_labels = sts["template"]["metadata"]["labels"]
    assert set(pod_labels) >= STANDARD_LABEL_KEYS
    selectors = [sts["selector"]["matchLabels"]]
    # Per-pod Services add the controller's pod-name label, which only that one pod has.
    selectors += [
        {k: v for k, v in svc.inputs["spec"]["selector"].items() if k != "statefulset.kubernetes.io/pod-name"}
        for svc in run.of_type(SVC)
    ]
    selectors.append(run.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["selector"]["matchLabels"])
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
        assert "app.kubernetes.io/version" not in selector, "selectors must survive an image upgrade"


def test_services(stack: str) -> None:
    run, want = _run(stack), expected(stack)
    services = by_name(run, SVC)
    headless = services[f"{want['name']}-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert {(p["name"], p["port"]) for p in headless["ports"]} == {("redis", 6379), ("bus", 16379)}
    client = services[want["name"]]["spec"]
    assert client["type"] == "ClusterIP" and [p["port"] for p in client["ports"]] == [6379]
    if want["external"] == "shared":
        external = services[f"{want['name']}-external"]["spec"]
        assert external["type"] == "NodePort"
        [port] = external["ports"]
        assert (port["port"], port["nodePort"]) == (6379, want["nodeport"])
        assert len(services) == 3
    else:
        assert want["external"] == "per-pod"
        assert len(services) == 2 + want["pods"]
        for i in range(want["pods"]):
            spec = services[f"{want['name']}-external-{i}"]["spec"]
            assert spec["type"] == "NodePort"
            assert spec["selector"]["statefulset.kubernetes.io/pod-name"] == f"{want['name']}-{i}"
            ports = {p["name"]: (p["port"], p["nodePort"]) for p in spec["ports"]}
            assert ports == {"redis": (6379, want["nodeport_base"] + i), "bus": (16379, want["bus_base"] + i)}


def test_pdb_and_config_map(stack: str) -> None:
    run = _run(stack)
    assert run.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["maxUnavailable"] == 1
    data = run.one("kubernetes:core/v1:ConfigMap").inputs["data"]
    conf = data["redis.conf"].splitlines()
    for line in (
        "cluster-enabled yes",
        "cluster-config-file /data/nodes.conf",
        "appendonly yes",
        f"cluster-node-timeout {stack_values(stack).get('nodeTimeoutMs', 15000)}",
        "cluster-require-full-coverage no",
        "cluster-migration-barrier 1",
        "protected-mode no",
    ):
        assert line in conf
    assert data["start-redis.sh"].startswith("#!/bin/sh")


def test_exports(stack: str) -> None:
    run, want = _run(stack), expected(stack)
    out = run.exports
    assert out["namespace"] == want["namespace"]
    assert out["statefulSetName"] == want["name"]
    assert out["podDnsNames"] == [
        f"{want['name']}-{i}.{want['name']}-headless.{want['namespace']}.svc.cluster.local" for i in range(want["pods"])
    ]
    assert out["clientService"] == f"{want['name']}.{want['namespace']}.svc.cluster.local:6379"
    assert out["externalAccess"] == want["external"]
    assert out["authSecret"] == f"{want['name']}-auth"
    if want["external"] == "shared":
        assert out["externalNodePort"] == want["nodeport"]
        assert out["externalEndpoint"].endswith(f":{want['nodeport']}")
        assert out["externalSeeds"] == [f"<any-node-address>:{want['nodeport']}"]
    else:
        assert "externalNodePort" not in out and "externalEndpoint" not in out
        assert out["externalSeeds"] == MOCK_ANNOUNCED  # the bootstrap's announcedAddresses output


def test_render_mode_sends_every_object_through_the_yaml_provider(tmp_path: Any) -> None:
    run = run_program(stack_config("dev", renderYamlTo=str(tmp_path)))
    provider = run.one("pulumi:providers:kubernetes")
    assert provider.inputs["renderYamlToDirectory"] == str(tmp_path)
    k8s_objects = [r for r in run.resources if r.custom and r.typ.startswith("kubernetes:")]
    assert k8s_objects
    for r in k8s_objects:
        assert r.provider and r.provider.startswith(provider.urn + "::"), r.name


BAD_CONFIG = [
    ("masters", 2),
    ("masters", "many"),
    ("replicasPerMaster", -1),
    ("storageSize", "lots"),
    ("externalNodePort", 8080),
    ("namespace", "Not_A_Label"),
    ("nodes", ["only-one"]),
    ("image", ""),
    ("imagePullPolicy", "Sometimes"),
    ("antiAffinity", "maybe"),
    ("bootstrapConnection", "telnet"),
    ("bootstrapEndpoints", ["no-port"]),
]


@pytest.mark.parametrize(("key", "value"), BAD_CONFIG, ids=[f"{k}={v!r}" for k, v in BAD_CONFIG])
def test_bad_config_registers_nothing(key: str, value: Any) -> None:
    error, run = run_failing_program(stack_config("dev", **{key: value}))
    assert isinstance(error, SettingsError)
    assert f"redis-cluster:{key} = " in str(error)
    assert run.resources == []


def test_unknown_key_in_stack_is_rejected() -> None:
    config = {**stack_config("dev"), "redis-cluster:replicaPerMaster": "2"}
    error, run = run_failing_program(config)
    assert "redis-cluster:replicaPerMaster = '2': unknown key" in str(error)
    assert run.resources == []
