"""The multi-node tier: the production-like shape on three real Kubernetes nodes (tools/cluster.sh multi).

Three nodes rc-n1..rc-n3 on this machine, each its own network namespace with its own kubelet,
containerd and kube-proxy and its own address; one control plane. The stack: 3 masters x 1 replica,
local PVs pinned round-robin to the named nodes (PV i on rc-n(i%3+1)), per-pod external access
(each pod announces its own node's address and its NodePort), auth on, nodeTimeoutMs 5000.
Anti-affinity is `preferred`: `required` means one Redis pod per Kubernetes node, which 6 pods on
3 nodes cannot meet (the program refuses that before anything is created); keeping a master and
its replica apart is then the bootstrap's job, and what step 1 asserts.

1. up; every PV bound to its ordinal's claim, its pod on the node the PV names and the volume
   mounted by that node's kubelet; every master and its replica on different nodes.
2. per-pod external access through each node's own address: externalSeeds name the pod's node;
   MOVED for a key of every master names that master's node address and NodePort; a cluster
   client outside Kubernetes, seeded with one node address, reads and writes every key; a pod's
   NodePort answers on its own node's address and on no other (externalTrafficPolicy Local).
2b. the engine move: one `pulumi up` changes the image from Redis 7.0 to Redis 8.6; every pod restarts
   once (the bootstrap's roll) under an outside client writing: 0 lost, 0 ClusterDownError, 0
   ConnectionError, every pod on Redis 8.6. Every later step runs on Redis 8.6.
3. a whole node is lost (unreachable, then its kubelet, containerd, kube-proxy and containers
   killed) while a client keeps writing and reading: the lost master's replica takes over, every
   key stays readable, `pulumi refresh` reports the failover and the lost nodes; the node comes
   back and its pods rejoin as replicas; 0 acknowledged writes lost; `pulumi up` restores the shape.
4. masters 3 -> 4 -> 3: the new pods land on the nodes their new PVs name, placement holds both ways;
   the slots move by atomic slot migration (the servers' own records: every migration finished).
5. `kubectl drain` of a node with a master, a client writing: the first pod is evicted (a master hands
   over first), the PodDisruptionBudget refuses the node's second pod while the first cannot come back
   (its local volume is on the cordoned node); uncordoned, the drain finishes; 0 ClusterDownError,
   0 ConnectionError, 0 acknowledged writes lost.
5b. the NetworkPolicy (enforced by kube-router on every node in every step): probe pods on the other two
   nodes, one in the stack's namespace without its labels, one in a foreign namespace, reach neither a
   master's bus at its pod address nor through its bus NodePort, and their MEET is never accepted.
6. behind NAT: `externalHost` set (externalTrafficPolicy Cluster; kube-proxy masquerades, so a master
   sees its replicas' links from node addresses), rolled by one up; a master pod deleted under a writer
   hands over by its replica's announced address: 0 ClusterDownError, 0 ConnectionError, 0 lost.
7. the image set back to Redis 7.0, which cannot load what Redis 8.6 wrote: `pulumi preview` and
   `pulumi up` fail naming both releases; the StatefulSet's template and every pod stay as they were.
8. the control for 5b: `networkPolicy: false` by one `up` (nothing restarts); the foreign probe opens
   the bus.

A failed step skips the later ones; the stack is destroyed and the cluster stopped either way.
Timings are printed at the end (``-s``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from pulumi import automation as auto
from redis.cluster import RedisCluster
from redis.crc import key_slot

from components.labels import BUS_PORT, REDIS_PORT
from components.redis_config import OPERATOR_PASSWORD_KEY
from tests.e2e.conftest import MultiCluster
from tests.e2e.helpers import (
    IMAGE,
    NAME,
    REDIS86_IMAGE,
    EngineRun,
    Kube,
    assert_migrations_finished,
    check_keys,
    key,
    migration_records,
    missing_keys,
    pod_engine,
    pod_names,
    pod_view,
    pods_of,
    refused_move,
    state_resources,
    step,
    up_watched,
    value,
    wait_healthy,
    wait_pods_ready,
    write_keys,
)
from tests.e2e.probes import (
    Probe,
    assert_meet_refused,
    assert_reach,
    start_probes,
)
from tests.engine.conftest import REPO_ROOT, EngineStackFactory, Toolchain, toolchain  # noqa: F401
from tests.toolkit import Writer, cluster_client, wait_for

pytestmark = pytest.mark.e2e

SELECTOR = f"app.kubernetes.io/name=redis-cluster,app.kubernetes.io/instance={NAME}"
MASTERS, REPLICAS = 3, 1
MAX_MASTERS = 4  # step 4 scales to 4: the local PV directories of 8 ordinals are made up front
KEYS = 5_000
PORT_BASE = 31000  # externalNodePortBase default
BUS_PORT_BASE = 32000  # externalBusNodePortBase default
BOOTSTRAP = f"{NAME}-bootstrap"
UP_TIMEOUT_S = 900
STEP_TIMEOUT_S = 1800


@dataclass
class MN:
    stack: auto.Stack
    kube: Kube
    cluster: MultiCluster
    namespace: str
    host_base: Path
    node_names: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    broken: str | None = None
    # Step 5b's probe pods (tests/e2e/probes.py): the cluster's own namespace and a foreign one.
    probes: list[Probe] = field(default_factory=list)

    def password(self) -> str | None:
        secret = self.outputs.get("authSecret")
        return self.kube.secret_value(self.namespace, str(secret), "password") if secret else None

    def up(self, what: str) -> auto.UpResult:
        run = EngineRun()
        result = up_watched(self.stack, run, self.kube, self.namespace, SELECTOR, UP_TIMEOUT_S)
        assert result.summary.result == "succeeded", f"{what}: {result.summary.result}\n{run.tail()}"
        self.outputs = {k: v.value for k, v in result.outputs.items()}
        assert self.outputs.get("clusterState") == "ok", f"{what}: clusterState {self.outputs.get('clusterState')}"
        return result

    def seeds(self) -> list[tuple[str, int]]:
        return [(h, int(p)) for h, p in (s.rsplit(":", 1) for s in self.outputs["externalSeeds"])]

    def node_of(self, pod: str) -> str:
        return str(self.kube.json("get", "pod", "-n", self.namespace, pod)["spec"]["nodeName"])


@pytest.fixture(scope="module")
def mn(
    multi_cluster: MultiCluster,
    toolchain: Toolchain,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MN]:
    run_id = uuid.uuid4().hex[:6]
    namespace = f"rc-mn-{run_id}"
    host_base = Path(tempfile.mkdtemp(prefix=f"rc-mn-{run_id}-", dir="/tmp"))
    # A local PV's directory must exist on its node before the pod starts (an operator's job; the
    # kubelet does not create it). The nodes share this machine's filesystem: one mkdir serves all.
    for i in range(MAX_MASTERS * (1 + REPLICAS)):
        (host_base / namespace / f"{NAME}-{i}").mkdir(parents=True)
    node_names = sorted(multi_cluster.nodes)
    factory = EngineStackFactory(toolchain=toolchain, tmp_path=tmp_path_factory.mktemp("engine-mn"))
    started = time.monotonic()
    state: MN | None = None
    try:
        stack = factory(
            Path(os.environ.get("REDIS_CLUSTER_E2E_PROJECT") or REPO_ROOT),
            config={
                "namespace": namespace,
                "createNamespace": True,
                "masters": MASTERS,
                "replicasPerMaster": REPLICAS,
                "storageSize": "150Mi",
                "storageClassName": namespace,
                "hostPathBase": str(host_base),
                "antiAffinity": "preferred",
                "volumePermissionsInit": False,
                "externalAccess": "per-pod",
                "nodeTimeoutMs": 5000,
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "bootstrapConnection": os.environ.get("REDIS_CLUSTER_E2E_CONNECTION", "port-forward"),
            },
            env={"KUBECONFIG": str(multi_cluster.kubeconfig)},
        )
        # A list config value: the factory would store it as a JSON string, which the engine refuses.
        for i, node in enumerate(node_names):
            stack.set_config(f"redis-cluster:nodes[{i}]", auto.ConfigValue(node), path=True)
        state = MN(
            stack=stack,
            kube=Kube(kubectl=multi_cluster.kubectl_path, kubeconfig=multi_cluster.kubeconfig),
            cluster=multi_cluster,
            namespace=namespace,
            host_base=host_base,
            node_names=node_names,
        )
        state.notes.update({"namespace": namespace, "nodes": multi_cluster.nodes})
        yield state
    finally:
        t0 = time.monotonic()
        factory.cleanup()
        if state is not None:
            state.timings["teardown (destroy)"] = time.monotonic() - t0
            state.timings["whole module"] = time.monotonic() - started
            report = {"timings_s": {k: round(v, 1) for k, v in state.timings.items()}, "notes": state.notes}
            print("\n[e2e multi-node] " + json.dumps(report, indent=1, default=str))
        shutil.rmtree(host_base, ignore_errors=True)


# --- placement ------------------------------------------------------------------------------------


def bind_mounts() -> dict[str, str]:
    """Mount point -> the directory mounted there (mountinfo's root field: the bind mount's source on the
    root filesystem; os.path.ismount cannot see a bind mount within one filesystem)."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        out[fields[4].replace("\\040", " ")] = fields[3].replace("\\040", " ")
    return out


def volume_problems(mn: MN, masters: int) -> list[str]:
    """PV i: bound to claim data-<sts>-i, pinned to node i % N of the list, its pod there, mounted by that kubelet."""
    problems: list[str] = []
    pods = {p["metadata"]["name"]: p for p in mn.kube.items("pods", "-n", mn.namespace, "-l", SELECTOR)}
    mounts = bind_mounts()
    for i, pod_name in enumerate(pod_names(masters)):
        pv_name = f"{mn.namespace}-{NAME}-{i}"
        pv = mn.kube.json("get", "pv", pv_name)
        terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
        named = terms[0]["matchExpressions"][0]["values"]
        want_node = mn.node_names[i % len(mn.node_names)]
        if named != [want_node]:
            problems.append(f"PV {pv_name} names nodes {named}, want [{want_node}]")
        claim_name = f"data-{NAME}-{i}"
        ref = pv["spec"].get("claimRef") or {}
        claim = mn.kube.json("get", "pvc", "-n", mn.namespace, claim_name)
        if (ref.get("namespace"), ref.get("name"), ref.get("uid")) != (
            mn.namespace,
            claim_name,
            claim["metadata"]["uid"],
        ):
            problems.append(f"PV {pv_name} bound to {ref.get('namespace')}/{ref.get('name')}, want {claim_name}")
        if pv["status"]["phase"] != "Bound" or claim["spec"].get("volumeName") != pv_name:
            problems.append(f"PV {pv_name} is {pv['status']['phase']}, claim names {claim['spec'].get('volumeName')}")
        pod = pods.get(pod_name)
        if pod is None:
            problems.append(f"no pod {pod_name}")
            continue
        node = pod["spec"].get("nodeName")
        if node != want_node:
            problems.append(f"{pod_name} runs on {node}, its PV {pv_name} is on {want_node}")
            continue
        mount = mn.cluster.kubelet_dir(node) / "pods" / pod["metadata"]["uid"] / "volumes"
        mount = mount / "kubernetes.io~local-volume" / pv_name
        source, path = mounts.get(str(mount)), pv["spec"]["local"]["path"]
        # the root field is relative to the filesystem the directory is on (/ here, or e.g. a tmpfs /tmp)
        if not (source and path.endswith(source)):
            problems.append(f"{pod_name}: {node}'s kubelet mounted {source} at {mount}, want {path}")
    return problems


def pairs_problems(mn: MN, masters: int) -> list[str]:
    """Every master and its replica on different nodes, by what the pods announce (their node's address)
    and by where the API says each pod runs."""
    pods = pod_names(masters)
    node_ip = mn.cluster.nodes
    pod_node = {
        p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods_of(mn.kube, mn.namespace, SELECTOR).values()
    }
    view = pod_view(mn.kube, mn.namespace, pods[0])
    by_id = view.by_id()
    problems = []
    names = {m["nodeId"]: m["name"] for m in mn.outputs.get("masters", [])}
    for line in view.nodes:
        if line.is_master:
            continue
        master = by_id.get(line.master_id or "")
        if master is None:
            problems.append(f"replica {line.node_id[:8]} has an unknown master")
        elif master.ip == line.ip:
            problems.append(
                f"replica {line.node_id[:8]} and its master {names.get(master.node_id, master.node_id[:8])} "
                f"both announce {line.ip}: on one node"
            )
    for m in mn.outputs.get("masters", []):
        for r in m["replicas"]:
            if pod_node.get(m["name"]) == pod_node.get(r):
                problems.append(f"master {m['name']} and its replica {r} both on {pod_node.get(r)}")
    announced = {line.ip for line in view.nodes}
    if not announced <= set(node_ip.values()):
        problems.append(f"pods announce {sorted(announced)}, not node addresses {sorted(node_ip.values())}")
    return problems


def assert_placement(mn: MN, masters: int) -> None:
    problems = volume_problems(mn, masters) + pairs_problems(mn, masters)
    assert not problems, "placement broken:\n" + "\n".join(problems)


# --- 1 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_1_up_on_three_nodes_with_volumes_and_pairs_placed(mn: MN) -> None:
    ready = [
        n["metadata"]["name"]
        for n in mn.kube.items("nodes")
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert sorted(ready) == mn.node_names, f"Ready nodes {ready}, want {mn.node_names}"
    t0 = time.monotonic()
    mn.up("first up")
    mn.timings["1: first up"] = time.monotonic() - t0
    pods = pod_names(MASTERS)
    wait_pods_ready(mn.kube, mn.namespace, SELECTOR, pods, timeout=60)
    wait_healthy(mn.kube, mn.namespace, pods, MASTERS, REPLICAS, timeout=180)
    assert_placement(mn, MASTERS)
    mn.notes["step 1 pods per node"] = {p: mn.node_of(p) for p in pods}


# --- 2 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_2_per_pod_access_through_each_nodes_own_address(mn: MN) -> None:
    pods = pod_names(MASTERS)
    seeds = mn.outputs["externalSeeds"]
    want = [f"{mn.cluster.nodes[mn.node_of(p)]}:{PORT_BASE + i}" for i, p in enumerate(pods)]
    assert seeds == want, f"externalSeeds {seeds}, want each pod's node address and NodePort {want}"
    assert len({s.rsplit(":", 1)[0] for s in seeds}) == len(mn.node_names), f"seeds use not every node: {seeds}"
    password = mn.password()
    masters = {m["name"]: m for m in mn.outputs["masters"]}
    seed_host, seed_port = mn.seeds()[0]
    plain = redis.Redis(host=seed_host, port=seed_port, password=password, socket_timeout=10)
    redirects: dict[str, str] = {}
    try:
        for name, master in masters.items():
            slot = int(str(master["slots"]).split("-")[0].split(",")[0])
            probe = next(key(i) for i in range(100_000) if key_slot(key(i).encode()) == slot)
            try:
                plain.get(probe)
                redirects[name] = seeds[0]
            except redis.exceptions.MovedError as exc:
                redirects[name] = f"{exc.host}:{exc.port}"
    finally:
        plain.close()
    want_redirects = {name: seeds[int(name.rsplit("-", 1)[1])] for name in masters}
    assert redirects == want_redirects, f"redirects {redirects}, want {want_redirects}"
    client = cluster_client([(seed_host, seed_port)], password)
    try:
        write_keys(client, KEYS)
        assert missing_keys(client, KEYS) == []
        reached = {f"{n.host}:{n.port}" for n in client.get_nodes()}
        assert reached <= set(seeds), f"the client was sent besides the node addresses: {reached - set(seeds)}"
    finally:
        client.close()
    # externalTrafficPolicy Local: a pod's NodePort answers on its own node's address only (no extra hop,
    # the client's address kept); every other node's kube-proxy drops it.
    for i, pod in enumerate(pods):
        home = mn.node_of(pod)
        r = redis.Redis(host=mn.cluster.nodes[home], port=PORT_BASE + i, password=password, socket_timeout=5)
        try:
            assert r.ping(), f"{pod}'s NodePort {PORT_BASE + i} on its node {home}"
        finally:
            r.close()
        for node, ip in mn.cluster.nodes.items():
            if node != home:
                assert not answers(ip, PORT_BASE + i), f"{pod}'s NodePort {PORT_BASE + i} answers on {node} ({ip})"
    mn.notes["step 2 redirects"] = redirects


def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """One TCP connect, no retries (a dropped SYN times out)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


# --- 3 ------------------------------------------------------------------------------------------------


def outside_writer(seeds: list[tuple[str, int]], password: str | None) -> Writer:
    """tests/toolkit.py's writer as a client outside Kubernetes: short timeouts, a fresh client after each
    failure (its seed may be the node that went away), and after each write a read of a step-2 key.

    Every acknowledged write must be there at the end; errors (while a master is lost and until the
    client learns the new map) are counted by type."""

    def reads_a_step_2_key(client: RedisCluster, i: int) -> str | None:
        j = i % KEYS
        return None if client.get(key(j)) == value(j) else key(j)

    return Writer(
        lambda: cluster_client(seeds, password, timeout=2),
        "mn:w:",
        check=reads_a_step_2_key,
        reconnect=True,
        pace_s=0.005,
        backoff_s=0.2,
        limit_s=1200,
    )


# --- 2b -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_2b_redis_7_moves_to_redis_8_6_by_one_up_without_a_lost_write(mn: MN) -> None:
    """The engine move (issue 24) on three nodes: the image changes from Redis 7.0 to Redis 8.6 and the
    bootstrap's roll restarts every pod once, replicas first, under an outside client writing through the
    nodes' addresses: no acknowledged write lost, no ClusterDownError or ConnectionError, every pod on
    Redis 8.6 afterwards. Every later step runs on Redis 8.6."""
    ns, kube = mn.namespace, mn.kube
    pods = pod_names(MASTERS)
    before = {str(pod_engine(kube, ns, name)) for name in pods}
    assert {e.rsplit(".", 1)[0] for e in before} == {"Redis 7.0"}, before
    uids = {name: pod["metadata"]["uid"] for name, pod in pods_of(kube, ns, SELECTOR).items()}
    mn.stack.set_config("redis-cluster:image", auto.ConfigValue(REDIS86_IMAGE))
    traffic = outside_writer(mn.seeds(), mn.password())
    traffic.start()
    try:
        wait_for("traffic running", lambda: None if len(traffic.acked) >= 200 else f"{len(traffic.acked)} writes", 60)
        t0 = time.monotonic()
        mn.up("Redis 7.0 to Redis 8.6")
        mn.timings["2b: Redis 7.0 to Redis 8.6"] = time.monotonic() - t0
        wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
        time.sleep(2)
    finally:
        traffic.stop()
    now = pods_of(kube, ns, SELECTOR)
    assert all(now[n]["metadata"]["uid"] != uids[n] for n in pods), "a pod was not restarted"
    after = {name: str(pod_engine(kube, ns, name)) for name in pods}
    assert {e.rsplit(".", 1)[0] for e in after.values()} == {"Redis 8.6"}, after
    lost = traffic.lost()
    mn.notes["step 2b traffic"] = {
        "engines": {"before": sorted(before), "after": sorted(set(after.values()))},
        "acknowledged writes": len(traffic.acked),
        "client errors by type": traffic.errors,
        "error samples": traffic.samples,
        "lost": len(lost),
    }
    assert len(traffic.acked) > 200, f"the writer hardly wrote: {len(traffic.acked)} writes, {traffic.errors}"
    assert lost == [], f"{len(lost)} of {len(traffic.acked)} acknowledged writes lost: {lost[:5]}"
    down = {k: n for k, n in traffic.errors.items() if k in ("ClusterDownError", "ConnectionError")}
    assert not down, f"clients saw the cluster down or a node gone: {down} ({traffic.samples})"
    assert_placement(mn, MASTERS)
    check_keys(*mn.seeds()[0], mn.password(), KEYS)


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_3_a_whole_node_lost_failover_refresh_back_as_replicas(mn: MN) -> None:
    ns, kube = mn.namespace, mn.kube
    pods = pod_names(MASTERS)
    master = mn.outputs["masters"][0]
    master_pod, replica_pod, master_id = master["name"], master["replicas"][0], master["nodeId"]
    victim = mn.node_of(master_pod)
    lost_pods = sorted(p for p in pods if mn.node_of(p) == victim)
    assert mn.node_of(replica_pod) != victim, f"{master_pod} and its replica {replica_pod} are both on {victim}"
    mn.notes["step 3 victim"] = {"node": victim, "pods": lost_pods, "master": master_pod, "replica": replica_pod}
    password = mn.password()
    survivor_seeds = [s for s in mn.seeds() if s[0] != mn.cluster.nodes[victim]]

    traffic = outside_writer(mn.seeds(), password)
    traffic.start()
    try:
        wait_for(
            "traffic running",
            lambda: None if len(traffic.acked) >= 200 else f"{len(traffic.acked)} writes",
            60,
            interval=2.0,
        )
        t_loss = time.monotonic()
        mn.timings["3: node-down"] = mn.cluster.node_down(victim)
        victim_port = PORT_BASE + int(master_pod.rsplit("-", 1)[1])
        assert not answers(mn.cluster.nodes[victim], victim_port), f"{victim} still answers on {victim_port}"

        def promoted() -> str | None:
            view = pod_view(kube, ns, replica_pod)
            me, old = view.myself, view.by_id().get(master_id)
            if not (me.is_master and me.slots):
                return f"{replica_pod} is {','.join(sorted(me.flags))} with {me.slots} slots"
            if old is None or "fail" not in old.flags:
                return f"lost master {master_pod} flagged {sorted(old.flags) if old else 'unknown'}"
            if view.info.get("cluster_state") != "ok":
                return f"cluster_state {view.info.get('cluster_state')}"
            return None

        wait_for(
            f"{replica_pod} to take over from {master_pod} on the lost {victim}", promoted, timeout=180, interval=2.0
        )
        t_failover = time.monotonic()
        mn.timings["3: failover after node loss"] = t_failover - t_loss
        # Every key readable, and new writes acknowledged, with the node still gone.
        check_keys(*survivor_seeds[0], password, KEYS, timeout=120)
        wait_for(
            "writes acknowledged after the failover",
            lambda: None if traffic.writes_since(t_failover) >= 200 else f"{traffic.writes_since(t_failover)} writes",
            timeout=120,
            interval=2.0,
        )
        mn.timings["3: longest write stall after the loss"] = traffic.longest_gap(t_loss)

        run = EngineRun()
        t0 = time.monotonic()
        mn.stack.refresh(on_output=run.on_output, on_event=run.on_event, color="never")
        mn.timings["3: refresh with the node lost"] = time.monotonic() - t0
        boot = state_resources(mn.stack)[BOOTSTRAP]["outputs"]
        names = [m["name"] for m in boot.get("masterNodes") or []]
        assert boot.get("clusterState") == "degraded", (
            f"refresh says {boot.get('clusterState')}: {boot.get('problems')}"
        )
        assert replica_pod in names and master_pod not in names, f"refresh shows masters {names}"
        assert boot.get("problems"), "refresh reports no problem with a node lost"
        mn.notes["step 3 refresh"] = {"masters": names, "problems": boot.get("problems")}

        t0 = time.monotonic()
        back_at = time.time()
        mn.timings["3: node-up"] = mn.cluster.node_up(victim)
        wait_pods_ready(kube, ns, SELECTOR, pods, timeout=420)

        def restarted() -> str | None:
            for p in lost_pods:
                st = kube.json("get", "pod", "-n", ns, p)["status"]
                cs: dict[str, Any] = next((c for c in st.get("containerStatuses") or [] if c["name"] == "redis"), {})
                started = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
                if not (cs.get("ready") and started):
                    return f"{p} not running and ready"
                if datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() < back_at - 1:
                    return f"{p}: its container started at {started}, before {victim} came back"
            return None

        wait_for(f"pods {lost_pods} running again on {victim}", restarted, timeout=300, interval=2.0)

        def rejoined() -> str | None:
            me = pod_view(kube, ns, master_pod).myself
            if me.node_id != master_id:
                return f"{master_pod} runs as node {me.node_id[:8]}, was {master_id[:8]}"
            if me.is_master:
                return f"{master_pod} is still a master"
            return None

        wait_for(f"{master_pod} to rejoin as a replica", rejoined, timeout=240, interval=2.0)
        wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=300)
        mn.timings["3: node back until healthy"] = time.monotonic() - t0
        time.sleep(3)
    finally:
        traffic.stop()
    lost = traffic.lost()
    mn.notes["step 3 traffic"] = {
        "acknowledged writes": len(traffic.acked),
        "client errors by type": traffic.errors,
        "error samples": traffic.samples,
        "lost": len(lost),
    }
    assert not traffic.wrong, f"reads returned wrong values: {traffic.wrong[:5]}"
    assert lost == [], f"{len(lost)} of {len(traffic.acked)} acknowledged writes lost: {lost[:5]}"
    assert_placement_after = volume_problems(mn, MASTERS)
    assert not assert_placement_after, assert_placement_after

    t0 = time.monotonic()
    mn.up("up after the node came back")
    mn.timings["3: up restores the shape"] = time.monotonic() - t0
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=180)
    assert_placement(mn, MASTERS)
    check_keys(*mn.seeds()[0], password, KEYS)


# --- 4 ------------------------------------------------------------------------------------------------


def _scale(mn: MN, masters: int) -> None:
    mn.stack.set_config("redis-cluster:masters", auto.ConfigValue(str(masters)))
    mn.up(f"scale to {masters} masters")
    assert len(mn.outputs["masters"]) == masters, mn.outputs["masters"]
    pods = pod_names(masters)
    wait_pods_ready(mn.kube, mn.namespace, SELECTOR, pods, timeout=300)
    wait_healthy(mn.kube, mn.namespace, pods, masters, REPLICAS, timeout=240)
    assert_placement(mn, masters)
    check_keys(*mn.seeds()[0], mn.password(), KEYS)
    mn.notes[f"step 4 pods per node at {masters} masters"] = {p: mn.node_of(p) for p in pods}


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_4_scale_out_onto_the_nodes_and_back_placement_held(mn: MN) -> None:
    """On Redis 8.6 since step 2b: the slots move by CLUSTER MIGRATION IMPORT, and the servers' own
    records (CLUSTER MIGRATION STATUS ALL) show every migration finished."""
    operator = mn.kube.secret_value(mn.namespace, str(mn.outputs["authSecret"]), OPERATOR_PASSWORD_KEY)
    t0 = time.monotonic()
    _scale(mn, MAX_MASTERS)
    mn.timings["4: 3 -> 4"] = time.monotonic() - t0
    out = migration_records(mn.kube, mn.namespace, SELECTOR, operator)
    t0 = time.monotonic()
    _scale(mn, MASTERS)
    mn.timings["4: 4 -> 3"] = time.monotonic() - t0
    back = migration_records(mn.kube, mn.namespace, SELECTOR, operator)
    mn.notes["step 4 migration records (3->4, then 4->3 on the pods that stay)"] = [len(out), len(back)]
    assert_migrations_finished(out, back, pod_names(MASTERS))


# --- 5 ------------------------------------------------------------------------------------------------

PDB_REFUSED = "violate the pod's disruption budget"


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_5_a_node_drained_under_traffic_hands_over_and_the_budget_holds_the_second_pod(mn: MN) -> None:
    """`kubectl drain` of a node with a master on it, a client writing throughout. Its pods' volumes are
    local to the node, so an evicted pod waits (Pending) until the node is uncordoned: while it does, the
    PodDisruptionBudget refuses the eviction of the node's other pod (the first counts as disrupted until
    it is back and Ready). Uncordoned, the first pod comes back and the drain goes on with the second.
    Every master on the node hands its slots over before it stops: 0 ClusterDownError, 0 ConnectionError,
    0 acknowledged writes lost, and the writer never stalls."""
    ns, kube = mn.namespace, mn.kube
    pods = pod_names(MASTERS)
    master_pod = mn.outputs["masters"][0]["name"]
    victim = mn.node_of(master_pod)
    on_node = sorted(p for p in pods if mn.node_of(p) == victim)
    assert len(on_node) == 2, f"{victim} runs {on_node}"
    masters_on_node = [p for p in on_node if pod_view(kube, ns, p).myself.is_master]
    uids = {p: kube.json("get", "pod", "-n", ns, p)["metadata"]["uid"] for p in on_node}
    password = mn.password()
    traffic = outside_writer(mn.seeds(), password)
    traffic.start()
    drain: subprocess.Popen[str] | None = None
    try:
        wait_for(
            "traffic running",
            lambda: None if len(traffic.acked) >= 200 else f"{len(traffic.acked)} writes",
            60,
            interval=2.0,
        )
        t0 = time.monotonic()
        drain = subprocess.Popen(
            [str(kube.kubectl), "--kubeconfig", str(kube.kubeconfig), "drain", victim, "--ignore-daemonsets",
             "--delete-emptydir-data", "--pod-selector", SELECTOR, "--timeout=400s"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(drain.stdout or []), daemon=True)
        reader.start()

        def evicted() -> list[str]:
            now = {p["metadata"]["name"]: p for p in pods_of(kube, ns, SELECTOR).values()}
            return [p for p in on_node if p not in now or now[p]["metadata"]["uid"] != uids[p]]

        wait_for("the drain to evict a first pod", lambda: None if evicted() else "none yet", 120, interval=2.0)
        first = evicted()
        assert len(first) == 1, f"the budget let {first} go at once"
        second = next(p for p in on_node if p not in first)

        def refused() -> str | None:
            return None if any(PDB_REFUSED in ln and second in ln for ln in said) else f"drain said {said[-3:]}"

        wait_for(f"the budget to refuse evicting {second}", refused, 60, interval=2.0)
        time.sleep(10)  # the first pod still cannot come back (its volume is on the cordoned node) ...
        assert evicted() == first, f"{second} was evicted while {first[0]} was not back"
        mn.timings["5: first eviction to a refused second"] = time.monotonic() - t0
        kube.run("uncordon", victim)  # ... now it can; once it is Ready the drain takes the second pod
        assert drain.wait(300) == 0, "".join(said[-20:])
        mn.timings["5: drain done"] = time.monotonic() - t0
        kube.run("uncordon", victim)
        wait_pods_ready(kube, ns, SELECTOR, pods, timeout=300)
        wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
        mn.timings["5: drain to healthy"] = time.monotonic() - t0
        time.sleep(3)
    finally:
        if drain is not None and drain.poll() is None:
            drain.kill()
        kube.run("uncordon", victim, check=False)
        traffic.stop()
    for p in masters_on_node:
        me = pod_view(kube, ns, p).myself
        assert not me.is_master, f"{p} was a master on the drained node and is a master again: no handover?"
    assert traffic.writes_since(t0) > 100, f"the writer stalled during the drain: {traffic.samples}"
    lost = traffic.lost()
    mn.notes["step 5 traffic"] = {
        "acknowledged writes": len(traffic.acked),
        "client errors by type": traffic.errors,
        "error samples": traffic.samples,
        "lost": len(lost),
    }
    assert lost == [], f"{len(lost)} of {len(traffic.acked)} acknowledged writes lost: {lost[:5]}"
    down = {k: n for k, n in traffic.errors.items() if k in ("ClusterDownError", "ConnectionError")}
    assert not down, f"clients saw the cluster down or a node gone: {down} ({traffic.samples})"
    assert not traffic.wrong, traffic.wrong[:5]


# --- 5b -----------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_5b_the_bus_opens_to_the_clusters_pods_alone_across_nodes(mn: MN) -> None:
    """Every step so far ran with the NetworkPolicy enforced (kube-router on every node). Probe pods on the
    two nodes other than a master's — one in the stack's own namespace without its labels, one in a foreign
    namespace: neither reaches the master's bus, at its pod address or through its bus NodePort on its node
    (externalTrafficPolicy Local keeps the source), and neither's MEET, by either path, is ever accepted. The
    client port is open to both: per-pod access opens it to every source (NodePort clients come from
    anywhere; the password guards it), and the metrics port is not served here (no `metrics`)."""
    ns, kube = mn.namespace, mn.kube
    pods = pod_names(MASTERS)
    master = mn.outputs["masters"][0]["name"]
    ordinal = int(master.rsplit("-", 1)[1])
    node = mn.node_of(master)
    node_ip = mn.cluster.nodes[node]
    target = str(kube.json("get", "pod", "-n", ns, master)["status"]["podIP"])
    elsewhere = [n for n in mn.node_names if n != node]
    t0 = time.monotonic()
    mn.probes = start_probes(
        kube, REDIS86_IMAGE, [(ns, "probe-own", elsewhere[0]), (f"{ns}-foreign", "probe", elsewhere[-1])]
    )
    mn.timings["5b: probes up"] = time.monotonic() - t0
    password = mn.password()
    for probe, probe_node in zip(mn.probes, elsewhere[:1] + elsewhere[-1:], strict=True):
        where = f"{probe.namespace} on {probe_node}"
        assert_reach(probe, target, {REDIS_PORT: True, BUS_PORT: False}, password, f"{where} to the pod")
        assert not probe.connects(node_ip, BUS_PORT_BASE + ordinal), f"{where}: {master}'s bus NodePort is open"
        assert_meet_refused(kube, ns, pods, probe, target)
        assert_meet_refused(kube, ns, pods, probe, node_ip, PORT_BASE + ordinal, BUS_PORT_BASE + ordinal)
    mn.notes["step 5b"] = {"master": master, "node": node, "probes": [f"{p.namespace}/{p.name}" for p in mn.probes]}


# --- 6 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_6_behind_nat_a_deleted_master_still_hands_over(mn: MN) -> None:
    """Per-pod access through one `externalHost` (externalTrafficPolicy Cluster): every pod announces that
    host, so replication and the bus go through its kube-proxy, which masquerades: a master sees each
    replica's link coming from a node address, not the replica's. The preStop handover picked its heir by
    that address and found none (the slots were down for the node timeout on every delete); it now picks
    it by the address the heir announces. The switch itself is a roll (the announced address changes)."""
    ns, kube = mn.namespace, mn.kube
    pods = pod_names(MASTERS)
    host = mn.cluster.nodes[mn.node_names[0]]
    mn.stack.set_config("redis-cluster:externalHost", auto.ConfigValue(host))
    # The policy (no enforcer here yet, so it is the program's validation that asks) must let the masqueraded
    # bus traffic in: the nodes' network.
    cidrs = sorted({str(ipaddress.ip_network(f"{ip}/24", strict=False)) for ip in mn.cluster.nodes.values()})
    for i, cidr in enumerate(cidrs):
        mn.stack.set_config(f"redis-cluster:nodeCidrs[{i}]", auto.ConfigValue(cidr), path=True)
    t0 = time.monotonic()
    mn.up("externalHost set: every pod rolled to announce it")
    mn.timings["6: roll to externalHost"] = time.monotonic() - t0
    wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
    master = mn.outputs["masters"][0]
    master_pod, replica_pod = master["name"], master["replicas"][0]
    view = pod_view(kube, ns, master_pod)
    assert {line.ip for line in view.nodes} == {host}, f"pods announce {sorted({ln.ip for ln in view.nodes})}"
    links = kube.run(
        "exec", "-n", ns, master_pod, "-c", "redis", "--", "sh", "-c",
        "IFS= read -r REDISCLI_AUTH < /etc/redis-auth/password; export REDISCLI_AUTH; "
        "redis-cli -h 127.0.0.1 -p 6379 info replication",
    ).stdout  # fmt: skip
    sources = re.findall(r"slave\d+:ip=([^,]+)", links)
    pod_ips = {p["status"].get("podIP") for p in pods_of(kube, ns, SELECTOR).values()}
    # The precondition: the master sees its replica's link from an address that is no pod's (a node's, or
    # the node's CNI bridge when kube-proxy masquerades a hairpin), so INFO replication's ip= leads nowhere.
    assert sources and not set(sources) & pod_ips, f"no NAT seen: replicas at {sources}, pods at {pod_ips}"
    password = mn.password()
    traffic = outside_writer(mn.seeds(), password)
    traffic.start()
    try:
        wait_for(
            "traffic running",
            lambda: None if len(traffic.acked) >= 200 else f"{len(traffic.acked)} writes",
            60,
            interval=2.0,
        )
        t0 = time.monotonic()
        kube.run("delete", "pod", "-n", ns, master_pod, "--wait=true", "--timeout=120s", timeout=150)
        mn.timings["6: delete of a master behind NAT"] = time.monotonic() - t0
        me = pod_view(kube, ns, replica_pod).myself
        assert me.is_master and me.slots, f"{replica_pod} did not take over before {master_pod} stopped"
        wait_pods_ready(kube, ns, SELECTOR, pods, timeout=300)
        wait_healthy(kube, ns, pods, MASTERS, REPLICAS, timeout=240)
        time.sleep(3)
    finally:
        traffic.stop()
    assert traffic.writes_since(t0) > 100, f"the writer stalled after the delete: {traffic.samples}"
    lost = traffic.lost()
    mn.notes["step 6 traffic"] = {
        "NAT sources seen by the master": sources,
        "acknowledged writes": len(traffic.acked),
        "client errors by type": traffic.errors,
        "error samples": traffic.samples,
        "lost": len(lost),
    }
    assert lost == [], f"{len(lost)} of {len(traffic.acked)} acknowledged writes lost: {lost[:5]}"
    down = {k: n for k, n in traffic.errors.items() if k in ("ClusterDownError", "ConnectionError")}
    assert not down, f"clients saw the cluster down or a node gone: {down} ({traffic.samples})"


# --- 7 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_7_a_move_back_to_redis_7_is_refused_before_any_pod_restarts(mn: MN) -> None:
    """Redis 7.0 cannot load what Redis 8.6 wrote: preview and up fail naming both, nothing restarts."""
    t0 = time.monotonic()
    said = refused_move(mn.stack, mn.kube, mn.namespace, SELECTOR, IMAGE, REDIS86_IMAGE)
    mn.timings["7: refused move (preview and up)"] = time.monotonic() - t0
    assert "Redis 8.6" in said and "Redis 7.0" in said, said
    mn.notes["step 7 refusal"] = said


# --- 8 ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(STEP_TIMEOUT_S)
@step
def test_8_without_the_policy_the_same_probe_reaches_the_bus(mn: MN) -> None:
    """The control for step 5b: `networkPolicy: false` by one `up` (nothing restarts), and the foreign probe
    opens a master's bus — so the policy blocked it, not the network."""
    ns, kube = mn.namespace, mn.kube
    assert mn.probes, "step 5b left no probes"
    foreign = mn.probes[-1]
    master = mn.outputs["masters"][0]["name"]
    target = str(kube.json("get", "pod", "-n", ns, master)["status"]["podIP"])
    mn.stack.set_config("redis-cluster:networkPolicy", auto.ConfigValue("false"))
    t0 = time.monotonic()
    run = EngineRun()
    result = up_watched(mn.stack, run, kube, ns, SELECTOR, UP_TIMEOUT_S)
    assert result.summary.result == "succeeded", f"networkPolicy false: {result.summary.result}\n{run.tail()}"
    assert f"{NAME}-nodes-statefulset" not in run.ops(), f"the policy change touched the pods: {run.ops()}"
    mn.timings["8: up with networkPolicy false"] = time.monotonic() - t0
    try:
        assert_reach(foreign, target, {REDIS_PORT: True, BUS_PORT: True}, mn.password(), "no policy")
    finally:
        kube.run("delete", "namespace", foreign.namespace, "--wait=false", check=False)
