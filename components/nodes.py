"""The Redis nodes: ConfigMap, StatefulSet and PodDisruptionBudget.

Readiness is a plain PING: a probe that waited for ``cluster_state:ok`` would
keep the StatefulSet from ever becoming ready, and the bootstrap waits for the
StatefulSet before it forms the cluster (failure #4) — a deadlock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import labels, metrics, redis_config, storage
from components.k8s import Manifest, resource_kwargs
from components.settings import ClusterSettings

REDIS_UID = 999  # the redis user of the official image
CHECKSUM_ANNOTATION = "redis-cluster/config-sha256"
# The probes log in as `default` with the password from the Secret's file, read by the
# shell's `read` into REDISCLI_AUTH inside `sh -c` — never in argv or the pod spec's env.
_PROBE_AUTH = (
    f"if [ -s {redis_config.AUTH_DIR}/{redis_config.PASSWORD_KEY} ]; then "
    f"IFS= read -r REDISCLI_AUTH < {redis_config.AUTH_DIR}/{redis_config.PASSWORD_KEY} || true; "
    "export REDISCLI_AUTH; fi; "
)
# An authentication error is an answer too: during a password rotation the mounted
# file lags the server by up to a minute (kubelet sync), and pulling or killing every
# pod for that would turn a live rotation into an outage.
_AUTH_ANSWERS = "*NOAUTH*|*WRONGPASS*"


def _tls_cli_env(s: ClusterSettings) -> list[Manifest]:
    """redis-cli's TLS options for the preStop hook when the plain port is closed."""
    return [{"name": "REDIS_CLI_TLS", "value": f"--tls --cacert {redis_config.TLS_DIR}/ca.crt"}] if s.tls_only else []


def _cli(s: ClusterSettings) -> str:
    tls = f"--tls --cacert {redis_config.TLS_DIR}/ca.crt " if s.tls_only else ""
    return f"redis-cli {tls}-h 127.0.0.1 -p {labels.REDIS_PORT}"


# How long a replica whose link to its master is down stays not Ready: long enough for a restarted
# replica to connect and start its sync (which then keeps it not Ready by itself), short enough that
# a replica whose master is gone for good cannot hold the StatefulSet (and so the bootstrap that
# mends it) back for long.
READY_HOLD_SECONDS = 60


def readiness_command(s: ClusterSettings) -> list[str]:
    """Ready when Redis answers PING, whatever the cluster state — except a node that is not yet a
    serving member of a formed cluster: a replica still copying its master's data, or an empty node
    that knows only itself while its peers already form a cluster.

    Cluster state must not count (formation would deadlock: the bootstrap waits
    for Ready pods, and before it every node is a master, so this cannot block
    it). A replica in a full sync (``master_sync_in_progress:1``; the load
    after it answers LOADING) or whose link went down less than
    ``READY_HOLD_SECONDS`` ago (or, never up, that started less than that ago)
    is not Ready, so a rolling update or a drain (PodDisruptionBudget) waits
    for it instead of taking its master next.

    An empty node alone (``cluster_known_nodes:1``, no slots: a pod back on a
    lost volume) asks its peers (the headless Service's addresses; ``REDIS_PEERS``
    overrides them): when one of them knows other nodes, and at least as many as
    this pod's ordinal, the cluster is formed without this node, so it is not
    Ready until the bootstrap joins it. A higher ordinal is a pod of a
    scale-out, Ready as before: the converge joins it after any roll, which it
    would otherwise hold at the PodDisruptionBudget. Before, such a pod was Ready behind the client
    Service and a client that landed on it read "0 of 16384 slots covered",
    and a drain counted it as a serving pod. At formation every peer knows
    only itself, so nothing waits on anything.
    """
    peer_cli = f"redis-cli {'--tls --cacert ' + redis_config.TLS_DIR + '/ca.crt ' if s.tls_only else ''}"
    member_check = (
        f'ci=$({_cli(s)} cluster info 2>/dev/null | tr -d "\\r"); '
        'c() { printf "%s\\n" "$ci" | sed -n "s/^$1://p"; }; '
        'if [ "$(c cluster_known_nodes)" = 1 ] && [ "$(c cluster_slots_assigned)" = 0 ]; then '
        'peers=${REDIS_PEERS:-}; if [ -z "$peers" ]; then '
        "a=$(getent ahosts \"$REDIS_PEER_SERVICE\" 2>/dev/null | awk '{ print $1 }'); "
        '[ -n "$a" ] || a=$(nslookup "$REDIS_PEER_SERVICE" 2>/dev/null | awk \'/^Name:/ { n = 1; next } '
        'n && /^Address/ { sub(/^Address( [0-9]+)?:[ \\t]*/, ""); split($0, f, " "); print f[1] }\'); '
        f'peers=$(for i in $a; do [ "$i" = "$POD_IP" ] || echo "$i:{labels.REDIS_PORT}"; done | sort -u); fi; '
        "me=${POD_NAME##*-}; "
        "for p in $peers; do "
        f'n=$(timeout 2 {peer_cli}-h "${{p%:*}}" -p "${{p##*:}}" cluster info 2>/dev/null | tr -d "\\r" '
        '| sed -n "s/^cluster_known_nodes://p"); '
        '[ "${n:-0}" -gt 1 ] || continue; '
        # An ordinal the cluster has never had is a pod of a scale-out: the converge joins it after any roll,
        # and were it not Ready it would hold the PodDisruptionBudget, and so every eviction of that roll.
        '[ "${me:-0}" -ge "$n" ] && break; '
        'echo "not a member yet: $p is in a cluster of $n nodes and this node knows only itself"; exit 1; '
        "done; fi; "
    )
    replica_check = (
        f'info=$({_cli(s)} info 2>/dev/null | tr -d "\\r"); '
        'case "$info" in *role:slave*) ;; *) exit 0 ;; esac; '
        'v() { printf "%s\\n" "$info" | sed -n "s/^$1://p"; }; '
        '[ "$(v master_sync_in_progress)" = 1 ] && exit 1; '
        '[ "$(v master_link_status)" = up ] && exit 0; '
        f"hold=${{REDIS_READY_HOLD_SECONDS:-{READY_HOLD_SECONDS}}}; "
        'down=$(v master_link_down_since_seconds); [ "$down" = -1 ] && down=$(v uptime_in_seconds); '
        '[ "${down:-0}" -ge "$hold" ]'
    )
    return [
        "sh",
        "-c",
        f'{_PROBE_AUTH}case "$({_cli(s)} ping 2>&1)" in PONG) ;; {_AUTH_ANSWERS}) exit 0 ;; *) exit 1 ;; esac; '
        + member_check
        + replica_check,
    ]


def liveness_command(s: ClusterSettings) -> list[str]:
    """Alive also while loading a large AOF (PING answers LOADING then): killing a
    loading node only restarts the load."""
    return [
        "sh",
        "-c",
        f'{_PROBE_AUTH}case "$({_cli(s)} ping 2>&1)" in PONG|LOADING*|{_AUTH_ANSWERS}) exit 0 ;; *) exit 1 ;; esac',
    ]


# AOF with appendfsync everysec needs at most a second to flush; the rest is slack for
# a busy node to finish writes and for a replica to take over.
TERMINATION_GRACE_SECONDS = 60
# The preStop handover's own bound: what is left of the grace period is for Redis to stop.
HANDOVER_TIMEOUT_SECONDS = TERMINATION_GRACE_SECONDS - 15


def config_map_manifest(s: ClusterSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": labels.config_map_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "redis"),
        },
        "data": redis_config.config_data(s),
    }


def _resources(s: ClusterSettings) -> Manifest:
    limits = {k: v for k, v in (("cpu", s.cpu_limit), ("memory", s.memory_limit)) if v}
    resources: Manifest = {"requests": {"cpu": s.cpu_request, "memory": s.memory_request}}
    if limits:
        resources["limits"] = limits
    return resources


def _affinity(s: ClusterSettings) -> Manifest:
    term = {
        "labelSelector": {"matchLabels": labels.selector_labels(s)},
        "topologyKey": "kubernetes.io/hostname",
    }
    if s.anti_affinity == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def _container_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": REDIS_UID,
        "runAsGroup": REDIS_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def volume_permissions_container(s: ClusterSettings, volume: str, path: str) -> Manifest:
    """hostPath directories are created root-owned and fsGroup does not apply to them: a root init
    container with CAP_CHOWN alone hands ``path`` (the mount of ``volume``) to the redis user."""
    return {
        "name": "volume-permissions",
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["chown", "-R", f"{REDIS_UID}:{REDIS_UID}", path],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": volume, "mountPath": path}],
    }


def _announce_env(s: ClusterSettings) -> list[Manifest]:
    """Per-pod external access: what the start script announces (no secret here)."""
    if s.external_access != "per-pod":
        return []
    ip: Manifest = (
        {"name": "REDIS_ANNOUNCE_IP", "value": s.external_host}
        if s.external_host
        else {"name": "REDIS_ANNOUNCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
    )
    env = [
        ip,
        {"name": "REDIS_ANNOUNCE_PORT_BASE", "value": str(s.external_node_port_base)},
        {"name": "REDIS_ANNOUNCE_BUS_PORT_BASE", "value": str(s.external_bus_node_port_base)},
    ]
    if s.tls_only:
        env.append({"name": "REDIS_TLS_ONLY", "value": "yes"})
    return env


def _redis_container(s: ClusterSettings) -> Manifest:
    fqdn = f"$(POD_NAME).{labels.headless_service_name(s)}.{s.namespace}.svc.{s.cluster_domain}"
    mounts: list[Manifest] = [
        {"name": labels.DATA_VOLUME, "mountPath": redis_config.DATA_DIR},
        {"name": "config", "mountPath": redis_config.CONFIG_DIR, "readOnly": True},
        {"name": "auth", "mountPath": redis_config.AUTH_DIR, "readOnly": True},
        {"name": "run", "mountPath": redis_config.RUN_DIR},
    ]
    if s.tls:
        mounts.append({"name": "tls", "mountPath": redis_config.TLS_DIR, "readOnly": True})
    ports: list[Manifest] = [
        {"name": name, "containerPort": port, "protocol": "TCP"} for name, port in redis_config.client_ports(s)
    ]
    ports.append({"name": "bus", "containerPort": labels.BUS_PORT, "protocol": "TCP"})
    return {
        "name": "redis",
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["sh", f"{redis_config.CONFIG_DIR}/{redis_config.SCRIPT_KEY}"],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "REDIS_ANNOUNCE_HOSTNAME", "value": fqdn},
            # Every pod's address (publishNotReadyAddresses): the readiness probe asks its peers.
            {"name": "REDIS_PEER_SERVICE", "value": fqdn.split(".", 1)[1]},
            {"name": "REDIS_CONF", "value": f"{redis_config.CONFIG_DIR}/{redis_config.CONF_KEY}"},
            {"name": "REDIS_NODES_CONF", "value": f"{redis_config.DATA_DIR}/nodes.conf"},
            {"name": "REDIS_USERS_ACL", "value": f"{redis_config.CONFIG_DIR}/{redis_config.USERS_KEY}"},
            {"name": "REDIS_AUTH_DIR", "value": redis_config.AUTH_DIR},
            {"name": "REDIS_RUN_DIR", "value": redis_config.RUN_DIR},
            {"name": "REDIS_HANDOVER_TIMEOUT", "value": str(HANDOVER_TIMEOUT_SECONDS)},
            *_tls_cli_env(s),
            *_announce_env(s),
        ],
        "ports": ports,
        # Every graceful stop (delete, drain, eviction, rolling update) hands a master's slots to its
        # most caught-up replica first (components/scripts/handover.sh).
        "lifecycle": {
            "preStop": {"exec": {"command": ["sh", f"{redis_config.CONFIG_DIR}/{redis_config.HANDOVER_KEY}"]}}
        },
        "readinessProbe": {
            "exec": {"command": readiness_command(s)},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "exec": {"command": liveness_command(s)},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": _resources(s),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _volumes(s: ClusterSettings) -> list[Manifest]:
    """Secrets are group-readable by fsGroup 999 only (0440). No checksum of them on the
    template: a password change is applied live by the bootstrap, and a pod reads the new
    file at its next start."""
    volumes: list[Manifest] = [
        {"name": "config", "configMap": {"name": labels.config_map_name(s), "defaultMode": 0o444}},
        {"name": "auth", "secret": {"secretName": labels.auth_secret_name(s), "defaultMode": 0o440}},
        # auth.conf with the passwords: in memory, never on the node's disk.
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    if s.tls:
        volumes.append({"name": "tls", "secret": {"secretName": labels.tls_secret_name(s), "defaultMode": 0o440}})
    return volumes


def statefulset_manifest(s: ClusterSettings) -> Manifest:
    pod_spec: Manifest = {
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REDIS_UID,
            "runAsGroup": REDIS_UID,
            "fsGroup": REDIS_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": _affinity(s),
        "containers": [_redis_container(s), *metrics.sidecars(s)],
        "volumes": [*_volumes(s), *metrics.volumes(s)],
    }
    if s.volume_permissions_init:
        pod_spec["initContainers"] = [volume_permissions_container(s, labels.DATA_VOLUME, redis_config.DATA_DIR)]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": labels.statefulset_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "redis"),
            # pulumi-kubernetes would wait (10 min) for every pod to be Ready, so a pod crash-looping on a
            # bad template never reached the bootstrap's roll that replaces it with the fixed one. The
            # bootstrap owns the wait instead: bounded, and naming each pod's cause (bootstrap/kube.py).
            "annotations": dict(storage.SKIP_AWAIT),
        },
        "spec": {
            "serviceName": labels.headless_service_name(s),
            "replicas": s.pod_count,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels.selector_labels(s)},
            # Nothing restarts by itself when the template changes: the bootstrap rolls the pods, replicas
            # first, each master after a handover to a caught-up replica (bootstrap/roll.py).
            "updateStrategy": {"type": "OnDelete"},
            # The claims are Pulumi resources (components/storage.py); the controller must never delete them.
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {
                    "labels": labels.standard_labels(s, "redis"),
                    "annotations": {CHECKSUM_ANNOTATION: redis_config.config_checksum(redis_config.config_data(s))},
                },
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": labels.DATA_VOLUME, "labels": labels.selector_labels(s)},
                    "spec": storage.claim_spec(s),
                }
            ],
        },
    }


def pod_template_digest(s: ClusterSettings) -> str:
    """What the pods should run, as one value the bootstrap takes as an input: a change of image,
    config or resources then shows in `pulumi preview` as an update of the bootstrap, which rolls them."""
    template = statefulset_manifest(s)["spec"]["template"]
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def pdb_manifest(s: ClusterSettings) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": labels.pdb_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "redis"),
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels.selector_labels(s)},
            # A pod that is not Ready (crash-looping on a bad config, say) serves nothing: evicting it costs no
            # availability, and the bootstrap's roll must be able to replace it with the fixed template even
            # while it holds the budget (the default policy would refuse every eviction then).
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


@dataclass(frozen=True)
class RedisNodesArgs:
    settings: ClusterSettings
    # What every object here waits for (the Namespace when the program creates it).
    depends_on: tuple[pulumi.Resource, ...] = ()
    # What the StatefulSet alone waits for: the owned claims and the headless Service.
    statefulset_depends_on: tuple[pulumi.Resource, ...] = ()


class RedisNodes(pulumi.ComponentResource):
    def __init__(self, name: str, args: RedisNodesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:nodes:RedisNodes", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.config_map = k8s.core.v1.ConfigMap(f"{name}-config", **resource_kwargs(config_map_manifest(s)), opts=child)
        self.statefulset = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            **resource_kwargs(statefulset_manifest(s)),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, self.config_map, *args.statefulset_depends_on],
            ),
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", **resource_kwargs(pdb_manifest(s)), opts=child)
        self.register_outputs(
            {
                "statefulSetName": self.statefulset.metadata.name,
                "configMapName": self.config_map.metadata.name,
            }
        )
