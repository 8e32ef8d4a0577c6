"""The e2e tier: the real program, the real engine, a real single-node Kubernetes (tools/cluster.sh).

One stack (dev shape: 3 masters x 1 replica, 150Mi, shared NodePort 30036; the locally built images,
never pulled: Redis 7.0 first, Valkey 9.1 from step 5b; hostPath volumes under a fresh directory in /tmp;
a namespace of its own; its NetworkPolicy enforced by the cluster's kube-router throughout) goes through
ordered steps, each asserting on what really happened:

1. preview lists the planned objects; up; every PV bound to its intended claim; pods Ready; every
   pod reports a healthy cluster (asked inside the pod).
2. 10k keys written and read back from outside, through 127.0.0.1:<NodePort>, with a cluster client.
3. a second up changes nothing.
4. a master pod is deleted and held away (a pods quota in the namespace) until its replica has
   taken over; it comes back on the same volume with the same node id and rejoins as a replica;
   refresh shows the role change; up leaves it healthy with every key.
5. every pod deleted at once: the cluster re-forms by itself with every key.
5b. the engine move: one `pulumi up` changes the image from Redis 7.0 to Valkey 9.1, switches the metrics
   sidecar on and schedules backups; preview shows the bootstrap and the StatefulSet as updates; the
   bootstrap's roll (OnDelete: the controller restarts nothing itself; replicas first, each master after
   a handover, every pod once) moves the live cluster under a writing client: no acknowledged write
   lost, no client error of any type, every pod on Valkey 9.1. Every later step
   runs on Valkey 9.1 (the stack was formed on Redis 7.0; step 7 forms it again, step 13 a second one).
6. masters 3 -> 4 -> 3: preview shows in-place updates (no replacement) of the bootstrap and the
   StatefulSet; up moves slots with every key kept, by atomic slot migration (the servers' own
   records: every migration finished); the drain runs before the StatefulSet shrinks.
7. destroy removes every object (namespace, PVs); the data directories stay; up brings the cluster
   back with every key.
8. the live stack switches to per-pod external access (a rolling change): each pod announces the node
   IP and its own NodePort; MOVED for a key of every master names that master's NodePort; a cluster
   client outside the cluster, seeded with one address, reads every key and writes new ones.
9. a graceful stop hands over, with a cluster client writing throughout: a master pod deleted (its
   preStop hook hands its slots to its replica before it stops); no acknowledged write lost, no
   ClusterDownError and no ConnectionError; the other client errors are counted in the notes.
10b. a template whose pods crash-loop (memory limit too low): the up fails at the roll's first pod,
   naming how its container ended (OOMKilled, StartError, BackOff); the fixed template plus a config
   change, with the controller-manager frozen for the first 20 s, is killed at the first master (SIGINT,
   then SIGKILL of the engine and its plugins); `pulumi cancel` and one more up finish the roll: every
   pod restarted once (the resumed up restarts only what the killed one had not), the new config live,
   no acknowledged write lost, no client error of any type, no client left paused.
11. a lost volume: a master pod's claim, PV and data deleted (README "A lost volume or node"); refresh
   and up bring the volume back empty; the pod starts as a new node, its old id is forgotten everywhere,
   it is a replica again and every key is there.
12. metrics (switched on in step 5b: the redis_exporter sidecar, the locally built image): every pod, scraped
   through the API server's pod proxy, reports redis_up 1, cluster_state ok, all slots and its key
   count (= its DBSIZE; masters add up to every key, replicas match their master); the metrics Service
   lists every pod; the restricted `exporter` user is refused nothing but SLOWLOG GET (ACL LOG, exporter
   log; metricsSlowlogEntries is off).
13. backup and restore (the CronJob and its `backup` user came with step 5b's roll): the CronJob run at
   once (`kubectl create job --from`) leaves one consistent backup on its volume (the CLI's checks pass,
   every key, snapshots taken on replicas, writes paused < 1 s), and so does `python -m bootstrap backup
   --kube` through the API; a second stack (another namespace, 3 masters, no replicas, no outside access,
   metrics on) with `restoreFrom` serves every key once its `up` succeeds (and `check --kube` says OK).
13b. the NetworkPolicy, on that second stack, from probe pods in its own namespace and two others: with
   allowedClientNamespaces empty only the own namespace reads, writes and scrapes; the bus opens to no pod
   but the cluster's, and a rogue node's MEET is never accepted; one `up` allowing a namespace lets it read
   and write (not the bus, not the metrics); `networkPolicy: false` opens everything to the never-allowed
   one (the control: the policy blocked, not the network). The stack's `pulumi destroy`
   leaves the backup files as they were.
14. the image set back to Redis 7.0, which cannot load what Valkey 9.1 wrote: `pulumi preview` and
   `pulumi up` both fail naming both releases; the StatefulSet's template and every pod stay as they were.

A failed step skips the later ones (they build on its state); the stack is destroyed at the end
either way. Timings of every step are printed at the end (run with ``-s`` to see them).

Environment: REDIS_CLUSTER_E2E_PROJECT (project dir, default the repo: break experiments run a patched
copy), REDIS_CLUSTER_E2E_CONNECTION (``port-forward`` default, or ``direct``),
REDIS_CLUSTER_E2E_KEEP_DATA=1 keeps the hostPath data directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from pulumi import automation as auto
from redis.crc import key_slot

from bench.servers import resolve_server
from bootstrap.restore import verify
from components.labels import BUS_PORT, REDIS_PORT
from components.metrics import METRICS_PORT
from components.redis_config import OPERATOR_PASSWORD_KEY
from components.settings import EXPORTER_VERSION
from tests.components.harness import BOOTSTRAP_TYPE, DRAIN_TYPE
from tests.e2e.conftest import Cluster
from tests.e2e.helpers import (
    IMAGE,
    NAME,
    OPERATOR_CLI,
    VALKEY9_IMAGE,
    EngineRun,
    Kube,
    assert_migrations_finished,
    changes,
    check_keys,
    controller_manager_paused,
    key,
    kill_engine,
    live_writer,
    migration_records,
    missing_keys,
    pod_engine,
    pod_names,
    pod_view,
    pods_of,
    refused_move,
    refuses_without_password,
    running,
    state_resources,
    step,
    total_keys,
    up_watched,
    wait_healthy,
    wait_pods_ready,
    write_keys,
)
from tests.e2e.probes import (
    assert_meet_refused,
    assert_reach,
    start_probes,
)
from tests.engine.conftest import REPO_ROOT, EngineStackFactory, Toolchain, toolchain  # noqa: F401
from tests.prometheus import samples
from tests.toolkit import cluster_client, run_cli, wait_for

pytestmark = pytest.mark.e2e

SELECTOR = f"app.kubernetes.io/name=redis-cluster,app.kubernetes.io/instance={NAME}"
NODE_PORT = 30036
MASTERS, REPLICAS = 3, 1
KEYS = 10_000
# Resource names (the last URN part) the steps look at.
BOOTSTRAP = f"{NAME}-bootstrap"
DRAIN = f"{NAME}-drain"
STATEFULSET = f"{NAME}-nodes-statefulset"
UP_TIMEOUT_S = 900
STEP_TIMEOUT_S = 1800


@dataclass
class E2E:
    stack: auto.Stack
    kube: Kube
    namespace: str
    host_base: Path
    factory: EngineStackFactory
    project: Path
    env: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    broken: str | None = None
    last_run: EngineRun = field(default_factory=EngineRun)
    # Step 13's restoring stack, which step 13b goes on with and destroys.
    restoring: auto.Stack | None = None

    def data_dir(self, ordinal: int) -> Path:
        return self.host_base / self.namespace / f"{NAME}-{ordinal}"

    def password(self) -> str | None:
        """The `default` user's password, from the Secret the stack names (None when auth is off)."""
        secret = self.outputs.get("authSecret")
        if not secret:
            return None
        data = self.kube.json("get", "secret", "-n", self.namespace, str(secret)).get("data") or {}
        if "password" not in data:
            return None
        return self.kube.secret_value(self.namespace, str(secret), "password")

    def up(self, what: str) -> auto.UpResult:
        run = self.last_run = EngineRun()
        result = up_watched(self.stack, run, self.kube, self.namespace, SELECTOR, UP_TIMEOUT_S)
        assert result.summary.result == "succeeded", f"{what}: {result.summary.result}\n{run.tail()}"
        self.outputs = {k: v.value for k, v in result.outputs.items()}
        assert self.outputs.get("clusterState") == "ok", f"{what}: clusterState {self.outputs.get('clusterState')}"
        return result


@pytest.fixture(scope="module")
def e2e(cluster: Cluster, toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:  # noqa: F811
    run_id = uuid.uuid4().hex[:6]
    namespace = f"rc-e2e-{run_id}"
    host_base = Path(tempfile.mkdtemp(prefix=f"rc-e2e-{run_id}-", dir="/tmp"))
    factory = EngineStackFactory(toolchain=toolchain, tmp_path=tmp_path_factory.mktemp("engine"))
    project = Path(os.environ.get("REDIS_CLUSTER_E2E_PROJECT") or REPO_ROOT)
    connection = os.environ.get("REDIS_CLUSTER_E2E_CONNECTION", "port-forward")
    started = time.monotonic()
    state: E2E | None = None
    try:
        stack = factory(
            project,
            config={
                "namespace": namespace,
                "createNamespace": True,
                "masters": MASTERS,
                "replicasPerMaster": REPLICAS,
                "storageSize": "150Mi",
                "externalAccess": "shared",
                "externalNodePort": NODE_PORT,
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "hostPathBase": str(host_base),
                # StorageClasses are cluster-wide: one of our own, so nothing collides.
                "storageClassName": namespace,
                "bootstrapConnection": connection,
            },
            env={"KUBECONFIG": str(cluster.kubeconfig)},
        )
        state = E2E(
            stack=stack,
            kube=Kube(kubectl=cluster.kubectl_path, kubeconfig=cluster.kubeconfig),
            namespace=namespace,
            host_base=host_base,
            factory=factory,
            project=project,
            env={"KUBECONFIG": str(cluster.kubeconfig)},
        )
        state.notes.update({"namespace": namespace, "hostPathBase": str(host_base), "connection": connection})
        yield state
    finally:
        t0 = time.monotonic()
        factory.cleanup()
        if state is not None:
            state.timings["teardown (destroy)"] = time.monotonic() - t0
            state.timings["whole tier"] = time.monotonic() - started
            report = {"timings_s": {k: round(v, 1) for k, v in state.timings.items()}, "notes": state.notes}
            print("\n[e2e] " + json.dumps(report, indent=1, default=str))
        if os.environ.get("REDIS_CLUSTER_E2E_KEEP_DATA") != "1":
            shutil.rmtree(host_base, ignore_errors=True)


# --- 1 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_1_preview_up_volumes_pods_and_cluster(e2e: E2E) -> None:
    run = EngineRun()
    preview = e2e.stack.preview(on_output=run.on_output, on_event=run.on_event, color="never")
    planned = changes(preview)
    assert set(planned) == {"create"}, f"an empty stack may only plan creates: {planned}"
    creates = run.ops_by_type("create")
    pods = MASTERS * (1 + REPLICAS)
    expected = {
        "kubernetes:core/v1:Namespace": 1,
        "kubernetes:storage.k8s.io/v1:StorageClass": 1,
        "kubernetes:core/v1:PersistentVolume": pods,
        "kubernetes:core/v1:PersistentVolumeClaim": pods,
        "kubernetes:core/v1:Service": 3,  # headless, client, the shared NodePort
        "kubernetes:core/v1:ConfigMap": 1,
        "kubernetes:apps/v1:StatefulSet": 1,
        "kubernetes:policy/v1:PodDisruptionBudget": 1,
    }
    for kind, count in expected.items():
        assert creates.get(kind) == count, f"preview plans {creates.get(kind)} {kind}, want {count}: {creates}"
    planned_dynamic = (creates.get(DRAIN_TYPE), creates.get(BOOTSTRAP_TYPE))
    assert planned_dynamic == (1, 1), f"drain and bootstrap not planned under their own types: {creates}"
    e2e.notes["preview creates"] = {"total": planned["create"], **creates}

    t0 = time.monotonic()
    e2e.up("first up")
    e2e.timings["1: first up"] = time.monotonic() - t0
    assert len(e2e.outputs["masters"]) == MASTERS, e2e.outputs["masters"]
    assert all(len(m["replicas"]) == REPLICAS for m in e2e.outputs["masters"]), e2e.outputs["masters"]

    # Every PV bound to its intended claim: PV i <-> data-<sts>-i <-> pod <sts>-i, on <hostPathBase>/<ns>/<sts>-i.
    volumes = list(e2e.outputs["volumeNames"])
    assert len(volumes) == pods, volumes
    sts = e2e.outputs["statefulSetName"]
    for i, pv_name in enumerate(volumes):
        pv = e2e.kube.json("get", "pv", pv_name)
        claim_name = f"data-{sts}-{i}"
        ref = pv["spec"].get("claimRef") or {}
        assert (ref.get("namespace"), ref.get("name")) == (e2e.namespace, claim_name), (
            f"PV {i} ({pv_name}) has claimRef {ref.get('namespace')}/{ref.get('name')}, "
            f"intended {e2e.namespace}/{claim_name}"
        )
        assert pv["status"]["phase"] == "Bound", f"PV {pv_name} is {pv['status']['phase']}"
        assert pv["spec"]["hostPath"]["path"] == str(e2e.data_dir(i)), pv["spec"]["hostPath"]
        claim = e2e.kube.json("get", "pvc", "-n", e2e.namespace, claim_name)
        assert claim["status"]["phase"] == "Bound", f"claim {claim_name} is {claim['status']['phase']}"
        assert claim["spec"]["volumeName"] == pv_name, f"claim {claim_name} bound to {claim['spec']['volumeName']}"
        assert ref.get("uid") == claim["metadata"]["uid"], f"PV {pv_name} bound to another {claim_name}"
        pod = e2e.kube.json("get", "pod", "-n", e2e.namespace, f"{sts}-{i}")
        data = next(v for v in pod["spec"]["volumes"] if v["name"] == "data")
        assert data["persistentVolumeClaim"]["claimName"] == claim_name, data
        assert (e2e.data_dir(i) / "nodes.conf").is_file(), f"no nodes.conf in {e2e.data_dir(i)} on the host"

    wait_pods_ready(e2e.kube, e2e.namespace, SELECTOR, pod_names(MASTERS), timeout=60)
    wait_healthy(e2e.kube, e2e.namespace, pod_names(MASTERS), MASTERS, REPLICAS, timeout=180)


# --- 2 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_2_keys_through_the_external_node_port(e2e: E2E) -> None:
    password = e2e.password()
    e2e.notes["auth"] = password is not None
    if password is not None:
        assert refuses_without_password("127.0.0.1", NODE_PORT), "the NodePort answers without a password"
    client = cluster_client([("127.0.0.1", NODE_PORT)], password)
    try:
        write_keys(client, KEYS)
        assert missing_keys(client, KEYS) == [], "keys written but not read back"
        assert total_keys(client) == KEYS, f"DBSIZE over the masters is {total_keys(client)}"
        e2e.notes["client reached"] = sorted(f"{n.host}:{n.port}" for n in client.get_nodes())
    finally:
        client.close()


# --- 3 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_3_second_up_changes_nothing(e2e: E2E) -> None:
    run = EngineRun()
    result = e2e.stack.up(on_output=run.on_output, on_event=run.on_event, color="never")
    assert changes(result) == {}, f"a second up changed {changes(result)}: {run.ops()}\n{run.tail()}"


# --- 4 ------------------------------------------------------------------------------------------------


def _myself_in(nodes_conf: Path) -> str:
    for line in nodes_conf.read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and "myself" in parts[2].split(","):
            return parts[0]
    raise AssertionError(f"{nodes_conf} names no 'myself' node")


def _volume_of(e2e: E2E, pod: str) -> tuple[str, str]:
    spec = e2e.kube.json("get", "pod", "-n", e2e.namespace, pod)["spec"]
    claim = next(v for v in spec["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    pv_name = e2e.kube.json("get", "pvc", "-n", e2e.namespace, claim)["spec"]["volumeName"]
    return pv_name, e2e.kube.json("get", "pv", pv_name)["metadata"]["uid"]


HOLD_QUOTA = "e2e-hold-pods"


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_4_master_pod_deleted_replica_takes_over_pod_rejoins(e2e: E2E) -> None:
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    master = e2e.outputs["masters"][0]
    master_pod, replica_pod, master_id = master["name"], master["replicas"][0], master["nodeId"]
    replica_id = pod_view(kube, ns, replica_pod).myself.node_id
    assert pod_view(kube, ns, replica_pod).myself.master_id == master_id, f"{replica_pod} is not {master_pod}'s replica"
    ordinal = int(master_pod.rsplit("-", 1)[1])
    volume_before = _volume_of(e2e, master_pod)
    assert _myself_in(e2e.data_dir(ordinal) / "nodes.conf") == master_id
    old_uid = pods_of(kube, ns, SELECTOR)[master_pod]["metadata"]["uid"]

    # Hold the pod away longer than cluster-node-timeout, as a lost node would: a pods quota of one
    # less than the StatefulSet wants keeps the controller from recreating it (it would be back in
    # seconds, before the replica may take over).
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": HOLD_QUOTA, "namespace": ns},
        "spec": {"hard": {"pods": str(len(pods) - 1)}},
    }
    kube.run("apply", "-f", "-", input=json.dumps(quota))
    try:
        wait_for(
            f"quota {HOLD_QUOTA} counted by the quota controller",
            lambda: None
            if (kube.json("get", "resourcequota", "-n", ns, HOLD_QUOTA).get("status") or {}).get("used")
            else "no status yet",
            timeout=60,
            interval=2.0,
        )
        t0 = time.monotonic()
        kube.run("delete", "pod", "-n", ns, master_pod, "--wait=true", "--timeout=120s", timeout=150)

        def promoted() -> str | None:
            view = pod_view(kube, ns, replica_pod)
            me, old = view.myself, view.by_id().get(master_id)
            if not (me.is_master and me.slots):
                return f"{replica_pod} is {','.join(sorted(me.flags))} with {me.slots} slots"
            if old is None or "fail" not in old.flags:
                return f"old master {master_pod} flagged {sorted(old.flags) if old else 'unknown'}"
            if view.info.get("cluster_state") != "ok":
                return f"cluster_state {view.info.get('cluster_state')}"
            return None

        wait_for(f"{replica_pod} to take over from the deleted {master_pod}", promoted, timeout=240, interval=2.0)
        e2e.timings["4: failover after pod delete"] = time.monotonic() - t0
        assert master_pod not in pods_of(kube, ns, SELECTOR), f"{master_pod} came back while held away"
        check_keys("127.0.0.1", NODE_PORT, e2e.password(), KEYS, timeout=120)
    finally:
        kube.run("delete", "resourcequota", "-n", ns, HOLD_QUOTA, "--ignore-not-found")
    # The StatefulSet controller backs off after the refused creations: a pod update makes it sync now.
    kube.run("annotate", "pod", "-n", ns, replica_pod, f"e2e/nudge={time.time():.0f}", "--overwrite")
    t0 = time.monotonic()
    wait_pods_ready(kube, ns, SELECTOR, pods, timeout=420, not_uids={old_uid})
    e2e.timings["4: pod back and Ready"] = time.monotonic() - t0

    assert _volume_of(e2e, master_pod) == volume_before, "the pod came back on another volume"
    assert _myself_in(e2e.data_dir(ordinal) / "nodes.conf") == master_id, "nodes.conf lost the node id"

    def rejoined() -> str | None:
        me = pod_view(kube, ns, master_pod).myself
        if me.node_id != master_id:
            return f"{master_pod} runs as node {me.node_id}, was {master_id}"
        if me.is_master or me.master_id != replica_id:
            return f"{master_pod} is {','.join(sorted(me.flags))} of {me.master_id}"
        return None

    wait_for(f"{master_pod} to rejoin as the replica of {replica_pod}", rejoined, timeout=240, interval=2.0)
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)

    run = EngineRun()
    e2e.stack.refresh(on_output=run.on_output, on_event=run.on_event, color="never")
    boot = state_resources(e2e.stack)[BOOTSTRAP]["outputs"]
    names = [m["name"] for m in boot["masterNodes"]]
    assert replica_pod in names and master_pod not in names, f"refresh shows masters {names}"
    assert boot["replicaOf"].get(master_pod) == replica_pod, f"refresh shows replicaOf {boot['replicaOf']}"
    e2e.notes["step 4 roles after refresh"] = {"masters": names, "replicaOf": boot["replicaOf"]}

    e2e.up("up after the failover")
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=180)
    check_keys("127.0.0.1", NODE_PORT, e2e.password(), KEYS)


# --- 5 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_5_all_pods_deleted_cluster_reforms_by_itself(e2e: E2E) -> None:
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    before = {n: (p["metadata"]["uid"], p["status"].get("podIP")) for n, p in pods_of(kube, ns, SELECTOR).items()}
    kube.run("delete", "pods", "-n", ns, "-l", SELECTOR, "--wait=false")
    t0 = time.monotonic()
    after = wait_pods_ready(kube, ns, SELECTOR, pods, timeout=480, not_uids={uid for uid, _ in before.values()})
    e2e.timings["5: all pods back and Ready"] = time.monotonic() - t0
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=300)
    e2e.timings["5: cluster re-formed"] = time.monotonic() - t0
    check_keys("127.0.0.1", NODE_PORT, e2e.password(), KEYS)
    ips = {n: (before[n][1], p["status"].get("podIP")) for n, p in after.items()}
    e2e.notes["step 5 pod IPs (before, after)"] = ips
    e2e.notes["step 5 pods with a new IP"] = sum(1 for old, new in ips.values() if old != new)


# --- 6 ------------------------------------------------------------------------------------------------

NO_REPLACE = {"replace", "create-replacement", "delete-replaced"}


def _scale(e2e: E2E, masters: int, old_masters: int) -> None:
    ns, kube = e2e.namespace, e2e.kube
    e2e.stack.set_config("redis-cluster:masters", auto.ConfigValue(str(masters)))
    run = EngineRun()
    e2e.stack.preview(on_output=run.on_output, on_event=run.on_event, diff=True, color="never")
    ops = run.ops()
    for name in (BOOTSTRAP, STATEFULSET, DRAIN):
        assert ops.get(name) == "update", f"preview plans {ops.get(name)} for {name}, want update: {ops}"
    assert not NO_REPLACE & set(ops.values()), f"preview replaces something: {ops}"
    lo, hi = sorted((masters, old_masters))
    moved = {f"{NAME}-storage-{kind}-{i}" for kind in ("pv", "pvc") for i in range(lo * 2, hi * 2)}
    verb = "create" if masters > old_masters else "delete"
    assert {n for n, op in ops.items() if op == verb} == moved, f"preview plans {ops}, want {verb} of {moved}"
    e2e.notes[f"preview {old_masters}->{masters}"] = ops

    run = EngineRun()
    result = up_watched(e2e.stack, run, kube, ns, SELECTOR, UP_TIMEOUT_S)
    assert result.summary.result == "succeeded", run.tail()
    e2e.outputs = {k: v.value for k, v in result.outputs.items()}
    assert e2e.outputs["clusterState"] == "ok"
    assert len(e2e.outputs["masters"]) == masters, e2e.outputs["masters"]
    if masters < old_masters:
        drained, sts_start = run.sequence(DRAIN, "outputs"), run.sequence(STATEFULSET, "pre")
        assert drained is not None and sts_start is not None and drained < sts_start, (
            f"the drain (done at event {drained}) must finish before the StatefulSet update (event {sts_start})"
        )
        draining = state_resources(e2e.stack)[DRAIN]["outputs"].get("draining")
        assert sorted(draining or []) == pod_names(old_masters)[masters * 2 :], f"drain output {draining}"
    else:
        new = set(pod_names(masters)) - set(pod_names(old_masters))
        assert new & {m["name"] for m in e2e.outputs["masters"]}, f"no new pod became a master: {e2e.outputs}"
    pods = pod_names(masters)
    wait_pods_ready(kube, ns, SELECTOR, pods, timeout=300)
    wait_healthy(kube, ns, pods, masters, REPLICAS, timeout=240)
    check_keys("127.0.0.1", NODE_PORT, e2e.password(), KEYS)


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_5b_redis_7_moves_to_valkey_9_by_one_up_pod_by_pod_without_a_lost_write(e2e: E2E) -> None:
    """The engine move (issue 24): the image changes from Redis 7.0 to Valkey 9.1, and the bootstrap's roll
    (replicas first, each master after handing over to a replica already on Valkey) moves the live cluster
    under a writing client: no acknowledged write lost, no client error of any type, every key there, every
    pod on Valkey 9.1 afterwards. The same up switches the metrics sidecar on and schedules backups (a
    config change in the same roll). Every later step runs on Valkey 9.1."""
    pods = pod_names(MASTERS)
    before = {str(pod_engine(e2e.kube, e2e.namespace, name)) for name in pods}
    assert {e.rsplit(".", 1)[0] for e in before} == {"Redis 7.0"}, before
    # The config changes of the tier ride on the same roll (one roll of 6 pods less for CI): the metrics
    # sidecar (step 12 scrapes it) and scheduled backups with their `backup` user (step 13 runs the CronJob).
    e2e.stack.set_config("redis-cluster:metrics", auto.ConfigValue("true"))
    e2e.stack.set_config("redis-cluster:metricsImage", auto.ConfigValue(EXPORTER_IMAGE))
    e2e.stack.set_config("redis-cluster:backupSchedule", auto.ConfigValue(BACKUP_SCHEDULE))
    e2e.stack.set_config("redis-cluster:backupPath", auto.ConfigValue(str(e2e.host_base / "backups")))
    # The auth Secret gains the exporter's password: pulumi-kubernetes replaces a Secret whose data changes.
    _roll(e2e, "5b: Redis 7.0 to Valkey 9.1, the metrics sidecar and backups", "image", VALKEY9_IMAGE,
          frozenset({f"{NAME}-security-auth"}))  # fmt: skip
    images = {p["spec"]["containers"][0]["image"] for p in pods_of(e2e.kube, e2e.namespace, SELECTOR).values()}
    assert images == {VALKEY9_IMAGE}, images
    after = {name: str(pod_engine(e2e.kube, e2e.namespace, name)) for name in pods}
    assert {e.rsplit(".", 1)[0] for e in after.values()} == {"Valkey 9.1"}, after
    e2e.notes["step 5b engines"] = {"before": sorted(before), "after": sorted(set(after.values()))}


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_6_scale_masters_out_and_back_in_place_by_atomic_slot_migration(e2e: E2E) -> None:
    """On Valkey 9.1 since step 5b: the slots move by CLUSTER MIGRATESLOTS, and the servers' own records
    (CLUSTER GETSLOTMIGRATIONS) show each move finished and none failed."""
    operator = e2e.kube.secret_value(e2e.namespace, str(e2e.outputs["authSecret"]), OPERATOR_PASSWORD_KEY)
    t0 = time.monotonic()
    _scale(e2e, 4, MASTERS)
    e2e.timings["6: 3 -> 4"] = time.monotonic() - t0
    out = migration_records(e2e.kube, e2e.namespace, SELECTOR, operator)
    t0 = time.monotonic()
    _scale(e2e, MASTERS, 4)
    e2e.timings["6: 4 -> 3"] = time.monotonic() - t0
    back = migration_records(e2e.kube, e2e.namespace, SELECTOR, operator)
    e2e.notes["step 6 migration records (3->4, then 4->3 on the pods that stay)"] = [len(out), len(back)]
    assert_migrations_finished(out, back, pod_names(MASTERS))


# --- 7 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_7_destroy_keeps_the_data_and_up_brings_it_back(e2e: E2E) -> None:
    ns, kube = e2e.namespace, e2e.kube
    volumes = list(e2e.outputs["volumeNames"])
    storage_class = e2e.outputs["storageClassName"]
    digest_before = _digest(e2e.password())
    t0 = time.monotonic()
    run = EngineRun()
    e2e.stack.destroy(on_output=run.on_output, on_event=run.on_event, color="never")
    assert state_resources(e2e.stack) == {}, "destroy left resources in the state"
    wait_for(
        f"namespace {ns} gone", lambda: f"{ns} still there" if kube.exists("namespace", ns) else None, 300, interval=2.0
    )
    for pv in (*volumes, *(f"{ns}-{NAME}-{i}" for i in range(8))):
        assert not kube.exists("pv", pv), f"PV {pv} left behind"
    assert not kube.exists("storageclass", storage_class), f"StorageClass {storage_class} left behind"
    e2e.timings["7: destroy"] = time.monotonic() - t0
    for i in range(len(volumes)):
        d = e2e.data_dir(i)
        assert (d / "nodes.conf").is_file() and (d / "appendonlydir").is_dir(), f"data of ordinal {i} gone: {d}"

    t0 = time.monotonic()
    e2e.up("up after destroy")
    e2e.timings["7: up after destroy"] = time.monotonic() - t0
    pods = pod_names(MASTERS)
    wait_pods_ready(kube, ns, SELECTOR, pods, timeout=120)
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    check_keys("127.0.0.1", NODE_PORT, e2e.password(), KEYS)
    assert sum(len(m["replicas"]) for m in e2e.outputs["masters"]) == MASTERS * REPLICAS
    # Only whether it changed (the generated password is a stack resource, destroyed with the stack).
    e2e.notes["step 7 password changed by destroy/up"] = _digest(e2e.password()) != digest_before


# --- 8 ------------------------------------------------------------------------------------------------

NODE_IP = "10.218.0.1"  # tools/cluster.sh: the node's InternalIP (its bridge), NodePorts served there too
PORT_BASE = 31000  # externalNodePortBase default


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_8_per_pod_node_ports_take_an_outside_client_to_every_master(e2e: E2E) -> None:
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    e2e.stack.set_config("redis-cluster:externalAccess", auto.ConfigValue("per-pod"))
    t0 = time.monotonic()
    e2e.up("switch to per-pod external access")
    e2e.timings["8: up (shared -> per-pod, rolling)"] = time.monotonic() - t0
    seeds = list(e2e.outputs["externalSeeds"])
    assert seeds == [f"{NODE_IP}:{PORT_BASE + i}" for i in range(len(pods))], f"externalSeeds {seeds}"
    assert not kube.exists("service", "-n", ns, f"{NAME}-external"), "the shared NodePort Service is still there"
    wait_pods_ready(kube, ns, SELECTOR, pods, timeout=120)
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    password = e2e.password()

    # The redirect itself: ask the first seed for a key of every master; MOVED must name that master's NodePort.
    masters = {m["name"]: m for m in e2e.outputs["masters"]}
    announced = {pod: seeds[int(pod.rsplit("-", 1)[1])] for pod in pods}
    seed_host, seed_port = seeds[0].rsplit(":", 1)
    plain = redis.Redis(host=seed_host, port=int(seed_port), password=password, socket_timeout=10)
    try:
        redirects = {}
        for name, master in masters.items():
            slot = int(str(master["slots"]).split("-")[0].split(",")[0])
            probe = next(key(i) for i in range(100_000) if key_slot(key(i).encode()) == slot)
            try:
                plain.get(probe)
                redirects[name] = seeds[0]  # the seed owns it: answered directly
            except redis.exceptions.MovedError as exc:  # the reply "MOVED <slot> <host>:<port>"
                assert exc.slot_id == slot, f"GET {probe} via {seeds[0]}: MOVED for slot {exc.slot_id}, want {slot}"
                redirects[name] = f"{exc.host}:{exc.port}"
    finally:
        plain.close()
    assert redirects == {name: announced[name] for name in masters}, f"redirects {redirects}, announced {announced}"

    # A cluster client outside the cluster, seeded with one address only, reads every key and writes new ones.
    check_keys(seed_host, int(seed_port), password, KEYS)
    client = cluster_client([(seed_host, int(seed_port))], password)
    try:
        reached = {f"{n.host}:{n.port}" for n in client.get_nodes()}
        assert reached <= set(seeds), f"the client was sent to addresses besides the NodePorts: {reached - set(seeds)}"
        write_keys(client, KEYS + 1000)
        assert missing_keys(client, KEYS + 1000) == []
    finally:
        client.close()
    e2e.notes["step 8 redirects"] = redirects


# --- 9 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_9_a_deleted_master_hands_over_without_clusterdown(e2e: E2E) -> None:
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    seed_host, seed_port = str(e2e.outputs["externalSeeds"][0]).rsplit(":", 1)
    master = e2e.outputs["masters"][0]
    master_pod, replica_pod = master["name"], master["replicas"][0]
    with live_writer(seed_host, int(seed_port), e2e.password()) as writer:
        time.sleep(2)
        old_uid = pods_of(kube, ns, SELECTOR)[master_pod]["metadata"]["uid"]
        t0 = time.monotonic()
        kube.run("delete", "pod", "-n", ns, master_pod, "--wait=true", "--timeout=120s", timeout=150)
        e2e.timings["9: delete of a master pod (preStop handover)"] = time.monotonic() - t0
        me = pod_view(kube, ns, replica_pod).myself
        assert me.is_master and me.slots, f"{replica_pod} did not take over before {master_pod} stopped"
        wait_pods_ready(kube, ns, SELECTOR, pods, timeout=300, not_uids={old_uid})
        wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
        time.sleep(2)
    e2e.notes["step 9 acknowledged writes"] = len(writer.acked)
    e2e.notes["step 9 client errors"] = writer.errors
    e2e.notes["step 9 error samples"] = writer.samples
    assert len(writer.acked) > 100, f"the writer hardly wrote: {len(writer.acked)} writes, errors {writer.errors}"
    assert writer.lost() == [], "acknowledged writes were lost"
    down = {k: n for k, n in writer.errors.items() if k in ("ClusterDownError", "ConnectionError")}
    assert not down, f"clients saw the cluster down or a node gone: {down} {writer.samples}"


# --- 10 -----------------------------------------------------------------------------------------------

# What the bootstrap logs for each pod it restarts (bootstrap/roll.py).
ROLL_LINE = re.compile(r"pod (\d+) of \d+: (?:restarting (\S+)|(\S+) hands its slots)")


# The CronJob exists from step 5b on; step 13 runs it at once (kubectl create job --from), not on schedule.
BACKUP_SCHEDULE = "0 0 1 1 *"


def _roll(e2e: E2E, what: str, key_: str, value: str, also_replaced: frozenset[str] = frozenset()) -> None:
    """One `pulumi up` that changes what the pods run, under a writing client: preview shows the roll
    as updates, the bootstrap restarts every pod once (replicas first), nothing is lost or down.
    ``also_replaced``: the objects the change may replace besides the ConfigMap."""
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    # From the nodes themselves: a handover since the last `up` (step 9) is not in the outputs.
    replicas_before = {name for name in pods if pod_view(kube, ns, name).myself.master_id}
    uids = {name: pod["metadata"]["uid"] for name, pod in pods_of(kube, ns, SELECTOR).items()}
    e2e.stack.set_config(f"redis-cluster:{key_}", auto.ConfigValue(value))
    run = EngineRun()
    e2e.stack.preview(on_output=run.on_output, on_event=run.on_event, diff=True, color="never")
    planned = run.ops()
    assert planned.get(BOOTSTRAP) == "update" and planned.get(STATEFULSET) == "update", planned
    # A changed ConfigMap is replaced (pulumi-kubernetes treats its data as immutable): nothing else is.
    replaced = {name for name, op in planned.items() if op in NO_REPLACE}
    assert replaced <= {f"{NAME}-nodes-config"} | also_replaced, f"preview replaces {replaced}: {planned}"
    with live_writer(*_seed(e2e), e2e.password()) as writer:
        time.sleep(2)
        t0 = time.monotonic()
        try:
            e2e.up(f"{what}: up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- the pods' last log lines ---\n{_pod_logs(e2e, pods)}") from exc
        e2e.timings[what] = time.monotonic() - t0
        time.sleep(2)
    # By its place in the roll: the engine may print a provider's lines twice (live and in its summary).
    said = {int(m.group(1)): m.group(2) or m.group(3) for ln in e2e.last_run.lines if (m := ROLL_LINE.search(ln))}
    restarted = [said[i] for i in sorted(said)]
    assert sorted(restarted) == sorted(pods), f"every pod restarted once by the bootstrap: {restarted}"
    assert set(restarted[: len(replicas_before)]) == replicas_before, f"replicas first: {restarted}"
    now = pods_of(kube, ns, SELECTOR)
    assert all(now[n]["metadata"]["uid"] != uids[n] for n in pods), "a pod was not restarted"
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    e2e.notes[f"step {what}: acknowledged writes"] = len(writer.acked)
    e2e.notes[f"step {what}: client errors"] = writer.errors
    e2e.notes[f"step {what}: error samples"] = writer.samples
    assert len(writer.acked) > 100, f"the writer hardly wrote: {len(writer.acked)} writes, errors {writer.errors}"
    assert writer.lost() == [], "acknowledged writes were lost"
    assert writer.errors == {}, f"clients saw errors during the roll: {writer.errors} {writer.samples}"
    check_keys(*_seed(e2e), e2e.password(), KEYS)


# Too little memory for redis-server to start: every start is OOM-killed (a crash loop, as a user's too-low
# limit would be); the request follows it down, since the program refuses a limit below its request.
TOO_LITTLE_MEMORY = "4Mi"
BAD_TEMPLATE_TIMEOUT_S = 30


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_10b_a_crash_looping_template_is_fixed_by_the_next_up_even_one_killed_mid_roll(e2e: E2E) -> None:
    """A template whose pods crash-loop used to never reach the bootstrap (pulumi-kubernetes waited 10 min
    for Ready pods); an up killed mid-roll left the next up to a lock and a half-rolled cluster. Now: the
    bad template's up fails at its first pod, naming the cause; the fixed template's up (with the
    controller-manager frozen for its first 20 s) is killed (Ctrl-C, then SIGKILL of the engine and its
    plugins) at its first master; `pulumi cancel` and one more up finish the roll. Through all of it a
    writing client loses nothing and sees no error, and no client is left paused."""
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    uids = {name: pod["metadata"]["uid"] for name, pod in pods_of(kube, ns, SELECTOR).items()}
    seed_host, seed_port = str(e2e.outputs["externalSeeds"][0]).rsplit(":", 1)
    cfg = e2e.stack.set_config
    with live_writer(seed_host, int(seed_port), e2e.password()) as writer:
        time.sleep(2)
        # 1. The bad template: the roll's first pod does not come back; the up fails naming why.
        cfg("redis-cluster:memoryRequest", auto.ConfigValue(TOO_LITTLE_MEMORY))
        cfg("redis-cluster:memoryLimit", auto.ConfigValue(TOO_LITTLE_MEMORY))
        cfg("redis-cluster:bootstrapTimeoutSeconds", auto.ConfigValue(str(BAD_TEMPLATE_TIMEOUT_S)))
        t0 = time.monotonic()
        with pytest.raises(AssertionError) as failed:
            e2e.up("a template whose pods cannot start")
        e2e.timings["10b: the bad template's up failed"] = time.monotonic() - t0
        said = str(failed.value).split("Engine output:")[0]
        crashed = [p for p, pod in pods_of(kube, ns, SELECTOR).items() if pod["metadata"]["uid"] != uids[p]]
        assert len(crashed) == 1, f"the roll should stop at its first pod: {crashed}"
        assert crashed[0] in said and re.search(r"OOMKilled|StartError|CrashLoopBackOff|BackOff", said), said
        # 2. Fixed, with a config change that needs a restart; the controller-manager frozen at first (the
        # StatefulSet's status names the old revision: the up used to succeed rolling nothing); killed at
        # the first handover.
        for k in ("memoryRequest", "memoryLimit", "bootstrapTimeoutSeconds"):
            e2e.stack.remove_config(f"redis-cluster:{k}")
        cfg("redis-cluster:nodeTimeoutMs", auto.ConfigValue("16000"))
        run, at_master = EngineRun(), threading.Event()

        def on_output(line: str) -> None:
            run.on_output(line)
            if "hands its slots to" in line and ROLL_LINE.search(line):
                at_master.set()

        outcome: list[BaseException | auto.UpResult] = []

        def up() -> None:
            try:
                outcome.append(e2e.stack.up(on_output=on_output, on_event=run.on_event, color="never"))
            except BaseException as exc:
                outcome.append(exc)

        t0 = time.monotonic()
        with controller_manager_paused(e2e.kube.kubeconfig, 20.0):
            thread = threading.Thread(target=up, daemon=True)
            thread.start()
            assert at_master.wait(UP_TIMEOUT_S), f"the roll never reached a master:\n{run.tail()}"
        killed = kill_engine()
        thread.join(120)
        e2e.stack.cancel()  # the lock the killed engine left (`pulumi cancel`)
        e2e.timings["10b: the fixed up, until killed at a master"] = time.monotonic() - t0
        assert outcome and isinstance(outcome[0], BaseException), f"the up was not stopped: {outcome}"
        time.sleep(1)
        assert not [p for p in killed if running(p)], "an engine process outlived SIGKILL"
        # No client left paused: the writer goes on (it writes every master in turn) well within the lease's
        # lapse and a takeover pause, neither of which outlives its own bound.
        time.sleep(5)
        before = len(writer.acked)
        time.sleep(3)
        assert len(writer.acked) - before > 20, f"writes stalled after the kill: {writer.errors}"
        # 3. With the lock lifted, the next up finishes the roll.
        t0 = time.monotonic()
        e2e.up("the up after a killed one")
        e2e.timings["10b: the up after the killed one"] = time.monotonic() - t0
        time.sleep(2)
    now = pods_of(kube, ns, SELECTOR)
    assert all(now[n]["metadata"]["uid"] != uids[n] for n in pods), "a pod was not restarted"
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    e2e.notes["step 10b acknowledged writes"] = len(writer.acked)
    e2e.notes["step 10b client errors"] = writer.errors
    e2e.notes["step 10b error samples"] = writer.samples
    assert len(writer.acked) > 100, f"the writer hardly wrote: {len(writer.acked)} writes, errors {writer.errors}"
    assert writer.lost() == [], "acknowledged writes were lost"
    assert writer.errors == {}, f"clients saw errors: {writer.errors} {writer.samples}"
    # The resumed up restarted only what the killed one had not (the pod it was at may be in both).
    killed_roll, resumed_roll = _rolled(run), _rolled(e2e.last_run)
    assert not set(resumed_roll) & set(killed_roll[:-1]), f"restarted twice: {killed_roll} then {resumed_roll}"
    assert set(killed_roll) | set(resumed_roll) == set(pods), f"{killed_roll} + {resumed_roll}"
    check_keys(*_seed(e2e), e2e.password(), KEYS)
    for name in pods:
        got = e2e.kube.run(
            "exec",
            "-n",
            e2e.namespace,
            name,
            "-c",
            "redis",
            "--",
            "sh",
            "-c",
            OPERATOR_CLI + "config get cluster-node-timeout",
        ).stdout
        assert "16000" in got, f"{name} does not run the new config: {got!r}"


def _rolled(run: EngineRun) -> list[str]:
    """The pods a run's roll restarted, in order (by their place: the engine may print a line twice)."""
    said = {int(m.group(1)): m.group(2) or m.group(3) for ln in run.lines if (m := ROLL_LINE.search(ln))}
    return [said[i] for i in sorted(said)]


def _digest(secret: str | None) -> str:
    return hashlib.sha256((secret or "").encode()).hexdigest()


# --- 11 -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_11_a_lost_volume_is_refilled_by_a_fresh_node_and_the_shape_restored(e2e: E2E) -> None:
    """The operator's steps of README "A lost volume or node", on a master's pod: its claim, its PV and
    its data go; `pulumi refresh` + `pulumi up` bring the volume back empty, the pod starts as a new node,
    the bootstrap forgets the old id everywhere and makes the new node a replica; every key is there."""
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    pod = e2e.outputs["masters"][0]["name"]
    ordinal = int(pod.rsplit("-", 1)[1])
    old_id = _myself_in(e2e.data_dir(ordinal) / "nodes.conf")
    pv, _ = _volume_of(e2e, pod)
    claim = f"data-{pod}"
    t0 = time.monotonic()
    kube.run("delete", "pvc", "-n", ns, claim, "--wait=false")
    kube.run("delete", "pv", pv, "--wait=false")
    old_uid = pods_of(kube, ns, SELECTOR)[pod]["metadata"]["uid"]
    kube.run("delete", "pod", "-n", ns, pod, "--wait=true", "--timeout=120s", timeout=150)
    wait_for(f"PV {pv} gone", lambda: None if not _exists(kube, "pv", pv) else "still there", 120, interval=1.0)
    shutil.rmtree(e2e.data_dir(ordinal), ignore_errors=True)
    run = EngineRun()
    e2e.stack.refresh(on_output=run.on_output, on_event=run.on_event, color="never")
    e2e.up("lost volume: up after refresh")
    e2e.timings["11: lost volume back in shape"] = time.monotonic() - t0
    wait_pods_ready(kube, ns, SELECTOR, pods, timeout=300, not_uids={old_uid})
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    new_id = _myself_in(e2e.data_dir(ordinal) / "nodes.conf")
    assert new_id != old_id, "the pod should have started as a new node on an empty volume"
    assert _volume_of(e2e, pod)[0] == pv, "the pod is on another volume"
    for name in pods:
        assert old_id not in {ln.node_id for ln in pod_view(kube, ns, name).nodes}, f"{name} still lists {old_id}"
    assert pod_view(kube, ns, pod).myself.master_id, f"{pod} came back as a master, not a replica"
    check_keys(*_seed(e2e), e2e.password(), KEYS)


def _pod_logs(e2e: E2E, pods: list[str], lines: int = 25) -> str:
    out = []
    for name in pods:
        got = e2e.kube.run("logs", "-n", e2e.namespace, name, "-c", "redis", f"--tail={lines}", check=False)
        out.append(f"## {name}\n{got.stdout}{got.stderr}")
    return "\n".join(out)


def _seed(e2e: E2E) -> tuple[str, int]:
    """Where an outside client starts: a pod's NodePort since step 8 (per-pod access); before, the shared
    NodePort, whose seed names any node (``<any-node-address>``): this machine is the node."""
    host, port = str(e2e.outputs["externalSeeds"][0]).rsplit(":", 1)
    return ("127.0.0.1" if host.startswith("<") else host), int(port)


def _exists(kube: Kube, kind: str, name: str) -> bool:
    return kube.run("get", kind, name, "--ignore-not-found", "-o", "name", check=False).stdout.strip() != ""


# --- 12 -----------------------------------------------------------------------------------------------

# tools/cluster.sh builds it from the Go module (tools/cluster/exporter) at the release the program pins.
EXPORTER_IMAGE = f"localhost/redis-cluster/redis-exporter:{EXPORTER_VERSION}-local"
# Inside the redis container (busybox has wget; the exporter's image has no shell): DBSIZE as `default`,
# then the ACL LOG as `operator` — each password read from its mounted file into REDISCLI_AUTH.
_POD_KEYS_AND_ACL_LOG = (
    'auth() { unset REDISCLI_AUTH; if [ -s "$1" ]; then IFS= read -r REDISCLI_AUTH < "$1" || true; '
    "export REDISCLI_AUTH; fi; }; "
    "auth /etc/redis-auth/password; redis-cli -h 127.0.0.1 -p 6379 dbsize; echo @@@; "
    "auth /etc/redis-auth/operator-password; redis-cli --user operator -h 127.0.0.1 -p 6379 acl log"
)


def _acl_entries(text: str) -> list[dict[str, str]]:
    """redis-cli's ACL LOG without a tty: each field's name and value on a line of their own, entries from `count`."""
    lines = text.strip("\n").splitlines()
    entries: list[dict[str, str]] = []
    for name, value in zip(lines[::2], lines[1::2], strict=False):
        if name.strip() == "count":
            entries.append({})
        if entries:
            entries[-1][name.strip()] = value.strip()
    return entries


def _scrape(e2e: E2E, pod: str) -> tuple[str, str]:
    """A pod's /metrics through the API server's pod proxy (what `kubectl get --raw` reaches); if the API
    cannot proxy here, from inside the pod (an HTTP/1.0 GET through busybox nc on loopback: its static
    wget dies of SIGSEGV). Returns (text, the path used)."""
    raw = f"/api/v1/namespaces/{e2e.namespace}/pods/{pod}:{METRICS_PORT}/proxy/metrics"
    proxied = e2e.kube.run("get", "--raw", raw, check=False, timeout=60)
    if proxied.returncode == 0 and "redis_up" in proxied.stdout:
        return proxied.stdout, "api-proxy"
    inside = e2e.kube.run(
        "exec", "-n", e2e.namespace, pod, "-c", "redis", "--",
        "sh", "-c", f"printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {METRICS_PORT}", timeout=60,
    )  # fmt: skip
    body = inside.stdout.split("\r\n\r\n", 1)[-1]  # after the HTTP headers
    return body, f"exec nc (api proxy: {proxied.stderr.strip()[-200:]})"


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_12_metrics_from_every_pod(e2e: E2E) -> None:
    ns, kube = e2e.namespace, e2e.kube
    pods = pod_names(MASTERS)
    # Switched on in step 5b, whose roll added the sidecar to every pod.
    assert e2e.outputs.get("metricsService") == f"{NAME}-metrics", e2e.outputs.get("metricsService")
    running = wait_pods_ready(kube, ns, SELECTOR, pods, timeout=300)
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    for name, obj in running.items():
        statuses = {c["name"]: c for c in obj["status"].get("containerStatuses") or []}
        exporter = statuses.get("redis-exporter")
        assert exporter is not None, f"{name} has no redis-exporter container: {sorted(statuses)}"
        assert exporter["ready"] and EXPORTER_IMAGE in exporter["image"], (name, exporter)

    # What Prometheus discovers: the metrics Service has every pod (Ready or not) on port 9121.
    def endpoints_problem() -> str | None:
        slices = kube.items("endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={NAME}-metrics")
        targets = {(ep.get("targetRef") or {}).get("name") for sl in slices for ep in sl.get("endpoints") or []}
        ports = {p.get("port") for sl in slices for p in sl.get("ports") or []}
        if targets != set(pods) or ports != {METRICS_PORT}:
            return f"endpoints {sorted(map(str, targets))} on ports {ports}"
        return None

    wait_for(
        f"Service {NAME}-metrics to list every pod on port {METRICS_PORT}", endpoints_problem, timeout=60, interval=2.0
    )

    got: dict[str, dict[str, float]] = {}
    paths: dict[str, str] = {}
    for pod in pods:
        text, paths[pod] = _scrape(e2e, pod)
        got[pod] = samples(text)
        m = got[pod]
        assert m.get("redis_up") == 1, f"{pod}: redis_up {m.get('redis_up')}"
        assert m.get('redis_exporter_last_scrape_error{err=""}') == 0, f"{pod}: the last scrape failed"
        assert m.get("redis_cluster_state") == 1, f"{pod}: redis_cluster_state {m.get('redis_cluster_state')}"
        assert m.get("redis_cluster_slots_ok") == 16384, f"{pod}: slots ok {m.get('redis_cluster_slots_ok')}"
        assert m.get("redis_cluster_known_nodes") == len(pods) and m.get("redis_cluster_size") == MASTERS, pod
        assert 'redis_db_keys{db="db0"}' in m, f"{pod}: no redis_db_keys"
    e2e.notes["step 12 scrape path"] = sorted(set(paths.values()))

    # Key metrics agree with each node's DBSIZE; the masters' sum is every key; replicas hold their master's.
    views = {pod: pod_view(kube, ns, pod) for pod in pods}
    by_id = {view.myself.node_id: pod for pod, view in views.items()}
    masters = [pod for pod, view in views.items() if view.myself.is_master]
    assert len(masters) == MASTERS, f"masters {masters}"
    total = 0
    errors: dict[str, list[str]] = {}
    for pod in pods:
        out = kube.run("exec", "-n", ns, pod, "-c", "redis", "--", "sh", "-c", _POD_KEYS_AND_ACL_LOG, timeout=60).stdout
        dbsize, sep, acl_log = out.partition("@@@")
        assert sep, f"{pod}: unexpected output {out[:300]!r}"
        keys = got[pod]['redis_db_keys{db="db0"}']
        assert keys == int(dbsize.strip()), f"{pod}: redis_db_keys {keys}, DBSIZE {dbsize.strip()}"
        # The restricted `exporter` user was refused nothing but SLOWLOG GET (metricsSlowlogEntries is off: an
        # entry shows key names and arguments), which the server logs once and counts (the servers' own record).
        refused = {(e.get("reason"), e.get("object")) for e in _acl_entries(acl_log) if e.get("username") == "exporter"}
        assert refused <= {("command", "slowlog|get")}, f"{pod}: ACL LOG of the exporter user: {acl_log[:1000]}"
        logs = kube.run("logs", "-n", ns, pod, "-c", "redis-exporter", timeout=60).stdout.splitlines()
        denied = [ln for ln in logs if any(w in ln for w in ("NOPERM", "no permissions", "WRONGPASS", "NOAUTH"))]
        assert not denied, f"{pod}: the exporter was refused: {denied[:5]}"
        errors[pod] = [ln for ln in logs if "level=error" in ln][:3]
        if pod in masters:
            total += int(keys)
            assert 'role="master"' in "".join(k for k in got[pod] if k.startswith("redis_instance_info")), pod
        else:
            master = by_id[str(views[pod].myself.master_id)]
            assert keys == got[master]['redis_db_keys{db="db0"}'], f"{pod} holds {keys} keys, its master {master} more"
    assert total >= KEYS, f"the masters' redis_db_keys add up to {total}, fewer than the {KEYS} keys written"
    e2e.notes["step 12 other exporter errors"] = {pod: lines for pod, lines in errors.items() if lines}
    e2e.notes["step 12 keys by pod"] = {pod: got[pod]['redis_db_keys{db="db0"}'] for pod in pods}


# --- 13 -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_13_the_cronjobs_backup_is_restored_by_a_second_stack(e2e: E2E) -> None:
    """The CronJob's consistent backup lands on its volume; a second stack (another namespace, 3 masters
    without replicas) with `restoreFrom` serves every key once its `up` succeeds, and the command line puts
    its own backup back through the API. Step 13b goes on with that stack and destroys it."""
    ns, kube = e2e.namespace, e2e.kube
    backups = e2e.host_base / "backups"
    assert e2e.outputs.get("backupCronJob") == f"{NAME}-backup", e2e.outputs.get("backupCronJob")
    client = cluster_client([_seed(e2e)], e2e.password())
    total = total_keys(client)
    client.close()
    t0 = time.monotonic()
    kube.run("create", "job", "-n", ns, f"--from=cronjob/{NAME}-backup", "backup-now", timeout=60)
    done = kube.run("wait", "-n", ns, "--for=condition=complete", "job/backup-now", "--timeout=180s", check=False)
    logs = kube.run("logs", "-n", ns, "job/backup-now", "-c", "backup", check=False).stdout
    assert done.returncode == 0, f"the backup Job did not complete: {done.stderr}\n{logs}"
    e2e.timings["13: backup job"] = time.monotonic() - t0
    [made] = sorted(backups.glob("redis-cluster-*"))
    manifest = verify(made)  # the CLI's checks: every file's size, SHA-256 and format
    assert manifest.keys == total, f"the backup holds {manifest.keys} keys, the cluster {total}"
    assert len(manifest.shards) == MASTERS and manifest.pause_ms < 1000, manifest
    assert {f.source_id for f in manifest.shards}.isdisjoint(f.master_id for f in manifest.shards), (
        f"a master forked though it had a replica: {logs}"
    )
    e2e.notes["step 13 backup"] = {"keys": manifest.keys, "pause_ms": manifest.pause_ms, "dir": made.name}
    # The command line through the Kubernetes API (each pod through its own port-forward tunnel).
    by_cli = _cli(e2e, e2e.password(), "backup", "--kube", f"{ns}/{NAME}", "--to", str(e2e.host_base / "cli"))
    assert by_cli.returncode == 0, by_cli.stderr
    cli_made = Path(by_cli.stdout.strip())
    cli_manifest = verify(cli_made)
    assert cli_manifest.keys == total and cli_manifest.pause_ms < 1000, cli_manifest
    e2e.notes["step 13 backup by the command line through the API: pause ms"] = cli_manifest.pause_ms

    ns2 = f"{ns}-restore"
    second = e2e.factory(
        e2e.project,
        config={
            "namespace": ns2,
            "createNamespace": True,
            "masters": MASTERS,
            "replicasPerMaster": 0,
            "storageSize": "150Mi",
            # No outside access: the NetworkPolicy then opens the client port to no one but its own namespace
            # and allowedClientNamespaces (step 13b); this machine is the node, whose traffic it always lets in.
            "externalAccess": "none",
            "metrics": True,
            "metricsImage": EXPORTER_IMAGE,
            # The backup is Valkey 9.1's (format VALKEY 80): a stack formed on Valkey 9.1 restores it.
            "image": VALKEY9_IMAGE,
            "imagePullPolicy": "Never",
            "hostPathBase": str(e2e.host_base),
            "storageClassName": ns2,
            "bootstrapConnection": e2e.notes["connection"],
            "restoreFrom": made.name,
            "backupPath": str(backups),
        },
        env=e2e.env,
    )
    t0 = time.monotonic()
    run = EngineRun()
    try:
        result = up_watched(second, run, kube, ns2, SELECTOR, UP_TIMEOUT_S)
    except AssertionError as failed:
        said = kube.run("logs", "-n", ns2, f"job/{NAME}-restore", check=False)
        raise AssertionError(f"{failed}\nthe restore job's log:\n{said.stdout}{said.stderr}") from failed
    restore_logs = kube.run("logs", "-n", ns2, f"job/{NAME}-restore", check=False).stdout
    assert result.summary.result == "succeeded", f"{result.summary.result}\n{run.tail()}\n{restore_logs}"
    e2e.timings["13: up of the restoring stack"] = time.monotonic() - t0
    outputs = {k: v.value for k, v in result.outputs.items()}
    assert outputs.get("clusterState") == "ok" and outputs.get("restoredFrom") == made.name, outputs
    assert f"restored {made.name}: {total} keys" in restore_logs, restore_logs
    password = kube.secret_value(ns2, str(outputs["authSecret"]), "password")
    # A pod's own address (this machine is the node: it routes to pods, and MOVED names pod IPs).
    seed = _pod_ip(kube, ns2, f"{NAME}-0")
    check_keys(seed, 6379, password, KEYS)
    client = cluster_client([(seed, 6379)], password)
    assert total_keys(client) == total
    client.close()
    e2e.notes["step 13 restore log"] = restore_logs.strip().splitlines()[-1:]
    checked = _cli(e2e, password, "check", "--masters", str(MASTERS), "--replicas", "0", "--kube", f"{ns2}/{NAME}")
    assert checked.returncode == 0 and checked.stdout.startswith("OK: 3 nodes"), checked.stdout + checked.stderr
    # The command line's restore through the API: a tenth of the keys deleted, the CLI's backup put back
    # (its temporary servers MIGRATE into each master's tunnel) as the operator user, with --replace.
    client = cluster_client([(seed, 6379)], password)
    gone = [key(i) for i in range(0, KEYS, 10)]
    assert client.delete(*gone) == len(gone)
    client.close()
    operator = kube.secret_value(ns2, str(outputs["authSecret"]), OPERATOR_PASSWORD_KEY)
    t0 = time.monotonic()
    # Its temporary servers must read Valkey 9.1's files: the Valkey 9.1 server the loopback tiers run.
    valkey = resolve_server("valkey-9")
    put_back = _cli(
        e2e,
        operator,
        "restore",
        "--user",
        "operator",
        "--replace",
        "--server",
        valkey,
        "--from",
        str(cli_made),
        "--kube",
        f"{ns2}/{NAME}",
    )
    assert put_back.returncode == 0, put_back.stderr
    e2e.timings["13: restore by the command line through the API"] = time.monotonic() - t0
    assert f"restored {cli_manifest.keys:,} keys" in put_back.stderr, put_back.stderr
    check_keys(seed, 6379, password, KEYS)
    e2e.restoring = second
    e2e.notes["step 13 backup made"] = made.name


def _pod_ip(kube: Kube, namespace: str, pod: str) -> str:
    return str(kube.json("get", "pod", "-n", namespace, pod)["status"]["podIP"])


# --- 13b ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_13b_the_network_policy_lets_in_whom_it_names_and_no_rogue_joins_the_bus(e2e: E2E) -> None:
    """On the restoring stack (no outside access, metrics on; formed and restored with its policy enforced by
    kube-router), from probe pods in three namespaces — its own, one it will allow, one it never allows:

    - allowedClientNamespaces empty: the own namespace reads and writes and scrapes, the others open
      nothing; the bus opens to no pod that is not the cluster's, and a rogue node's MEET (from the own
      namespace and from outside it) is never accepted;
    - allowedClientNamespaces [allowed], by one `up`: that namespace reads and writes, but reaches neither
      the bus nor the metrics port; the other still nothing;
    - networkPolicy false, by one `up`: the never-allowed namespace reads, writes, scrapes and reaches the
      bus — so what blocked before was the policy, not the network.

    Then `pulumi destroy` of that stack, whose backup volume is the same directory, leaves every backup
    file as it was."""
    second = e2e.restoring
    assert second is not None, "step 13 left no restoring stack"
    kube = e2e.kube
    ns2 = f"{e2e.namespace}-restore"
    pods2 = pod_names(MASTERS, 0)
    outputs = {k: v.value for k, v in second.outputs().items()}
    password = kube.secret_value(ns2, str(outputs["authSecret"]), "password")
    target = _pod_ip(kube, ns2, pods2[0])
    allowed_ns, denied_ns = f"{ns2}-allowed", f"{ns2}-denied"
    t0 = time.monotonic()
    own, allowed, denied = start_probes(
        kube, VALKEY9_IMAGE, [(ns2, "probe-own", None), (allowed_ns, "probe", None), (denied_ns, "probe", None)]
    )
    e2e.timings["13b: probes up"] = time.monotonic() - t0
    closed = {REDIS_PORT: False, BUS_PORT: False, METRICS_PORT: False}
    try:
        assert_reach(own, target, {REDIS_PORT: True, BUS_PORT: False, METRICS_PORT: True}, password, "own namespace")
        assert_reach(allowed, target, closed, password, "not yet allowed")
        assert_reach(denied, target, closed, password, "never allowed")
        assert_meet_refused(kube, ns2, pods2, own, target)
        assert_meet_refused(kube, ns2, pods2, denied, target)

        second.set_config("redis-cluster:allowedClientNamespaces[0]", auto.ConfigValue(allowed_ns), path=True)
        _up_restoring(e2e, second, ns2, "allowedClientNamespaces")
        assert_reach(allowed, target, {REDIS_PORT: True, BUS_PORT: False, METRICS_PORT: False}, password, "allowed")
        assert_reach(denied, target, closed, password, "never allowed, with another namespace allowed")

        second.set_config("redis-cluster:networkPolicy", auto.ConfigValue("false"))
        _up_restoring(e2e, second, ns2, "networkPolicy false")
        assert not kube.items("networkpolicies", "-n", ns2), "networkPolicy false left a NetworkPolicy"
        opened = {REDIS_PORT: True, BUS_PORT: True, METRICS_PORT: True}
        assert_reach(denied, target, opened, password, "no policy")
    finally:
        for namespace in (allowed_ns, denied_ns):
            kube.run("delete", "namespace", namespace, "--wait=false", check=False)
        kube.run("delete", "pod", "-n", ns2, own.name, "--wait=false", check=False)

    made = e2e.host_base / "backups" / str(e2e.notes["step 13 backup made"])
    manifest = verify(made)
    t0 = time.monotonic()
    second.destroy(color="never")
    e2e.restoring = None
    e2e.timings["13b: destroy of the restoring stack"] = time.monotonic() - t0
    assert verify(made) == manifest, "the backup changed with the destroy"
    assert not _exists(kube, "pv", f"{ns2}-{NAME}-backup"), "the destroy left the stack's backup PV"


def _up_restoring(e2e: E2E, stack: auto.Stack, namespace: str, what: str) -> None:
    t0 = time.monotonic()
    run = EngineRun()
    result = up_watched(stack, run, e2e.kube, namespace, SELECTOR, UP_TIMEOUT_S)
    assert result.summary.result == "succeeded", f"{what}: {result.summary.result}\n{run.tail()}"
    # A policy change touches the NetworkPolicy alone: no pod template, no restart.
    assert not NO_REPLACE & changes(result).keys() and STATEFULSET not in run.ops(), f"{what}: {run.ops()}"
    e2e.timings[f"13b: up ({what})"] = time.monotonic() - t0


# --- 14 -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_14_a_move_back_to_redis_7_is_refused_before_any_pod_restarts(e2e: E2E) -> None:
    """Redis 7.0 cannot load what Valkey 9.1 wrote: preview and up fail naming both, nothing restarts."""
    t0 = time.monotonic()
    said = refused_move(e2e.stack, e2e.kube, e2e.namespace, SELECTOR, IMAGE, VALKEY9_IMAGE)
    e2e.timings["14: refused move (preview and up)"] = time.monotonic() - t0
    assert "Valkey 9.1" in said and "Redis 7.0" in said, said
    e2e.notes["step 14 refusal"] = said


def _cli(e2e: E2E, password: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bootstrap`` as an operator runs it: KUBECONFIG, the password in REDISCLI_AUTH."""
    env = {**os.environ, **e2e.env, "REDISCLI_AUTH": password or ""}
    return run_cli(*args, env=env, cwd=e2e.project, timeout=300)


# --- the upgrade path of a stack made before OnDelete ----------------------------------------------------


def test_a_statefulset_made_with_rolling_update_is_switched_to_on_delete_so_the_program_can_apply_it(
    cluster: Cluster, kubectl: Callable[..., subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server keeps the rollingUpdate it defaulted and refuses a plain type change
    (kubernetes/kubernetes#100151); the drain's patch (kube.ensure_on_delete) lets the program's
    server-side apply of `OnDelete` through. Without the patch the second apply fails."""
    import kubernetes.config.kube_config as kube_config

    from bootstrap.kube import ensure_on_delete

    # The client reads KUBECONFIG once, when it is first imported: point it at this cluster either way.
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))
    name, ns = f"upgrade-{uuid.uuid4().hex[:6]}", "default"
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 0,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never"}]},
            },
        },
    }

    def apply(spec: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl("apply", "--server-side", "--field-manager=e2e-program", "-f", "-",
                       input=json.dumps(spec), check=check)  # fmt: skip

    on_delete = {**manifest, "spec": {**manifest["spec"], "updateStrategy": {"type": "OnDelete"}}}
    try:
        apply(manifest)
        refused = apply(on_delete, check=False)
        assert refused.returncode != 0 and "rollingUpdate" in refused.stderr, refused.stderr
        said: list[str] = []
        assert ensure_on_delete(ns, name, said.append) is True and "OnDelete" in said[0]
        assert ensure_on_delete(ns, name, said.append) is False, "a second call patches nothing"
        apply(on_delete)
        got = json.loads(kubectl("get", "statefulset", "-n", ns, name, "-o", "json").stdout)
        assert got["spec"]["updateStrategy"] == {"type": "OnDelete"}, got["spec"]["updateStrategy"]
    finally:
        kubectl("delete", "statefulset", "-n", ns, name, "--ignore-not-found", check=False)
