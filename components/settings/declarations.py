"""Each config key declared once, as a field of :class:`ClusterSettings`: its name, default, rule and documentation.

Everything else is derived from these declarations: :data:`KEYS`, :data:`DEFAULTS`, the checks in
``validate``, the config block of ``Pulumi.yaml`` and the reference in ``docs/config.md`` (``reference``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

from bootstrap.model import SLOT_SELECTION
from components.settings.rules import (
    BOOLEAN,
    DNS_LABEL,
    Rule,
    acl_users,
    choice,
    host_path,
    integer,
    is_backup_name,
    is_cidr,
    is_dns_label,
    is_dns_subdomain,
    is_host_port,
    is_ip,
    is_schedule,
    is_slot_selection,
    labels,
    no_spaces,
    optional_host_path,
    quantity,
    strings,
    text,
)

NAMESPACE = "redis-cluster"

# Keys read with cfg.get_secret: no default, never in Pulumi.yaml and never shown in a message.
# `pulumi config set --secret password ...`.
SECRET_KEYS = ("password", "aclPasswords")
PASSWORD_LENGTH = (8, 512)

# redis_exporter: the upstream image's tag by default, the same release tools/cluster builds from its Go module.
EXPORTER_VERSION = "v1.82.0"

# The ACL user the metrics sidecar logs in as (components/redis_config.py); an aclUsers entry may not take it.
EXPORTER_USER = "exporter"

# The ACL user the scheduled backup logs in as (components/backup.py); an aclUsers entry may not take it.
BACKUP_USER = "backup"

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
AntiAffinity = Literal["preferred", "required"]
BootstrapConnection = Literal["port-forward", "direct"]
ExternalAccess = Literal["none", "shared", "per-pod"]
PULL_POLICIES: tuple[PullPolicy, ...] = get_args(PullPolicy)
ANTI_AFFINITIES: tuple[AntiAffinity, ...] = get_args(AntiAffinity)
BOOTSTRAP_CONNECTIONS: tuple[BootstrapConnection, ...] = get_args(BootstrapConnection)
EXTERNAL_ACCESS: tuple[ExternalAccess, ...] = get_args(ExternalAccess)
NODE_PORT_RANGE = (30000, 32767)
MAX_NAME_LEN = 40  # pod names `<name>-<ordinal>` and claim names `data-<name>-<ordinal>` stay short


T = TypeVar("T")


class SecretValue:
    """A secret config value. ``repr``/``str`` never show it, so a settings object can be
    printed, logged or put in an error message safely; ``reveal()`` is the one way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue([secret])"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretValue", self._value))


_CIDRS = "CIDRs such as 10.0.0.0/8 or 192.168.1.7/32 (host bits zero)"
_SETTING = "setting"


@dataclass(frozen=True)
class Key(Generic[T]):
    """One config key: ``name`` in the stack, ``field`` of :class:`ClusterSettings`."""

    name: str
    field: str
    default: T
    rule: Rule[T]
    doc: str

    @property
    def config_default(self) -> Any:
        """The default as Pulumi.yaml states it (YAML has lists, not tuples)."""
        return list(self.default) if isinstance(self.default, tuple) else self.default

    @property
    def type(self) -> str:
        """The Pulumi.yaml type."""
        for python, name in ((bool, "boolean"), (int, "integer"), (str, "string"), (tuple, "array")):
            if isinstance(self.default, python):
                return name
        raise TypeError(f"{self.name}: no config type for default {self.default!r}")


def setting(name: str, default: T, rule: Rule[T], doc: str) -> T:
    """Declare a config key as a field of :class:`ClusterSettings` (the field's name is ``name`` in
    snake_case; tests/components/test_settings.py checks that)."""
    meta = {_SETTING: (name, rule, " ".join(doc.split()))}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ClusterSettings:
    """Validated settings; field names mirror the config keys in snake_case. Declaration order is
    the order of Pulumi.yaml and of the reference in docs/config.md."""

    name: str = setting(
        "name",
        "redis-cluster",
        text(
            lambda v: len(v) <= MAX_NAME_LEN and DNS_LABEL.match(v) is not None,
            f"a DNS-1123 label of at most {MAX_NAME_LEN} characters (lowercase letters, digits, '-')",
        ),
        "Name of the StatefulSet and `app.kubernetes.io/instance` label; pods are `<name>-<ordinal>`.",
    )
    namespace: str = setting(
        "namespace",
        "default",
        text(is_dns_label, "a DNS-1123 label (lowercase letters, digits, '-', at most 63)"),
        "Namespace of every namespaced object.",
    )
    create_namespace: bool = setting(
        "createNamespace",
        False,
        BOOLEAN,
        "Create the namespace in the stack (it is then deleted by `pulumi destroy`).",
    )
    masters: int = setting("masters", 3, integer(3, 1000), "Number of Redis masters.")
    replicas_per_master: int = setting(
        "replicasPerMaster",
        1,
        integer(0, 10),
        "Replicas per master. Pods = `masters * (1 + replicasPerMaster)`.",
    )
    image: str = setting(
        "image",
        "redis:7.0.15",
        text(lambda v: v.strip() != "" and no_spaces(v), "a non-empty image reference without spaces"),
        """Redis (7.0 or newer: `cluster-announce-hostname`) or Valkey (8 or newer) image. The start script needs
        `redis-server`, `redis-cli` (Valkey's images link them to `valkey-*`), a POSIX `sh` with `grep`, `awk`,
        `tail`, `cut`, `cp`, `mv`, `sleep`, and `getent` or `nslookup` (the official images or busybox provide
        them); the init container needs `chown`. A change rolls the pods; a change to an engine that cannot
        read what the pods' engine wrote (e.g. Valkey 9 -> Redis 7.0) fails `pulumi preview` and `pulumi up`
        before anything restarts, when the image's name says its engine (docs/engines.md).""",
    )
    image_pull_policy: PullPolicy = setting(
        "imagePullPolicy",
        "IfNotPresent",
        choice(PULL_POLICIES),
        "Pull policy of the Redis containers (and of the metrics sidecar).",
    )
    storage_size: str = setting(
        "storageSize",
        "150Mi",
        quantity(),
        "Capacity of every PersistentVolume and request of every claim.",
    )
    storage_class_name: str = setting(
        "storageClassName",
        "redis-cluster-local",
        text(is_dns_subdomain, "a DNS-1123 subdomain (lowercase, digits, '-', '.')"),
        """Name of the no-provisioner StorageClass the stack creates. StorageClasses are cluster-wide: use a
        different name per stack sharing a Kubernetes cluster.""",
    )
    default_storage_class: bool = setting(
        "defaultStorageClass", False, BOOLEAN, "Opt in to marking that StorageClass as the cluster's default."
    )
    host_path_base: str = setting(
        "hostPathBase",
        "/mnt/redis-cluster",
        Rule("an absolute directory path other than / without spaces", host_path),
        "Directory on the nodes; volume `i` is `<hostPathBase>/<namespace>/<name>-<i>`.",
    )
    volume_permissions_init: bool = setting(
        "volumePermissionsInit",
        True,
        BOOLEAN,
        """Add a root init container (only `CAP_CHOWN`) that chowns `/data` to uid 999. Needed for hostPath
        volumes, which the kubelet creates root-owned; turn off where Pod Security "restricted" applies and
        pre-create the directories owned by 999.""",
    )
    nodes: tuple[str, ...] = setting(
        "nodes",
        (),
        strings("node names (DNS-1123 subdomains)", is_dns_subdomain, unique=True),
        """Kubernetes node names. When set, every volume is a `local` PV pinned (required nodeAffinity) to
        `nodes[i % len(nodes)]`; at least `replicasPerMaster + 1` nodes so a master and its replicas can sit
        on different nodes. Empty: hostPath volumes without node affinity (single-node clusters).""",
    )
    anti_affinity: AntiAffinity = setting(
        "antiAffinity",
        "preferred",
        choice(ANTI_AFFINITIES),
        """Pod anti-affinity on `kubernetes.io/hostname`: `preferred` (weight 100) or `required` (at most one
        Redis pod per node; with `nodes` set that needs one node per pod).""",
    )
    external_node_port: int = setting(
        "externalNodePort",
        30036,
        integer(*NODE_PORT_RANGE),
        "`shared`: the NodePort of the one Service in front of all pods.",
    )
    node_timeout_ms: int = setting(
        "nodeTimeoutMs", 15000, integer(1000, 600000), "`cluster-node-timeout` in milliseconds."
    )
    cluster_domain: str = setting(
        "clusterDomain",
        "cluster.local",
        text(is_dns_subdomain, "a DNS-1123 subdomain"),
        "Cluster DNS domain, part of each pod's stable hostname.",
    )
    cpu_request: str = setting("cpuRequest", "100m", quantity(), "CPU request of each Redis container.")
    memory_request: str = setting("memoryRequest", "128Mi", quantity(), "Memory request of each Redis container.")
    cpu_limit: str = setting(
        "cpuLimit", "", quantity(optional=True), "CPU limit of each Redis container; empty for none (no throttling)."
    )
    memory_limit: str = setting(
        "memoryLimit",
        "256Mi",
        quantity(optional=True),
        "Memory limit of each Redis container; empty for none. Must not be below the request.",
    )
    render_yaml_to: str = setting(
        "renderYamlTo",
        "",
        text(lambda v: v == v.strip(), "a directory path or empty"),
        """When set, every Kubernetes object is written as YAML into this directory by a
        `render_yaml_to_directory` provider instead of being applied (no cluster needed).""",
    )
    bootstrap_connection: BootstrapConnection = setting(
        "bootstrapConnection",
        "port-forward",
        choice(BOOTSTRAP_CONNECTIONS),
        """How the cluster bootstrap reaches the pods: through the Kubernetes API (`port-forward`) or at the
        pod IPs (`direct`).""",
    )
    bootstrap_timeout_seconds: int = setting(
        "bootstrapTimeoutSeconds",
        600,
        integer(1, 86400),
        "How long the bootstrap may take to form or converge the cluster.",
    )
    accept_lost_slots: str = setting(
        "acceptLostSlots",
        "",
        text(is_slot_selection, f"empty, or {SLOT_SELECTION}"),
        """Slots whose every copy is gone (a master and all its replicas lost with their data) that the next
        `pulumi up` may reassign empty. Without it such an `up` fails, naming the slots and the keys they likely
        held, and reassigns nothing. Consent is for one loss: the value is spent by the first `up` that
        succeeds with it, whether it reassigned anything or not (the bootstrap's `lostSlotsAccepted` output
        says which slots and when), and a later loss needs a value spelled differently (e.g. the ranges that
        `up` names instead of `all`).""",
    )
    bootstrap_endpoints: tuple[str, ...] = setting(
        "bootstrapEndpoints",
        (),
        strings('"host:port" entries with a port from 1 to 65535', is_host_port),
        "Static `host:port` Redis endpoints, one per pod, used by the bootstrap instead of discovering pods (tests).",
    )
    auth: bool = setting(
        "auth",
        True,
        BOOLEAN,
        """Clients (the `default` ACL user) need a password: the secret config value `password`, or one generated
        once and kept (encrypted) in the state. Delivered to the pods only through the Secret `<name>-auth` (see
        docs/security.md). `false`: the `default` user needs none.""",
    )
    # The configured client password (None: generated by the program when auth is on).
    password: SecretValue | None = field(default=None, repr=False)
    allow_dangerous_commands: bool = setting(
        "allowDangerousCommands",
        False,
        BOOLEAN,
        """Let the `default` user (every client) run `FLUSHALL`, `FLUSHDB`, `DEBUG`, `CONFIG`, `ACL` and
        `SHUTDOWN`, and turn on `enable-debug-command`. Off: those are denied by ACL; the bootstrap uses its own
        `operator` user.""",
    )
    external_access: ExternalAccess = setting(
        "externalAccess",
        "none",
        choice(EXTERNAL_ACCESS),
        """Access from outside Kubernetes: `none`; `shared` — the recipe's single NodePort `externalNodePort` in
        front of all pods (MOVED redirects name pod IPs; see below); `per-pod` — one NodePort Service per pod,
        each node announcing `externalHost` (or its Kubernetes node's IP) and its own NodePorts, so redirects
        are reachable.""",
    )
    external_host: str = setting(
        "externalHost",
        "",
        text(lambda v: v == "" or is_ip(v), 'an IPv4 or IPv6 address, or "" for the node\'s IP'),
        """`per-pod`: the IP address every pod announces; empty for the IP of the node the pod runs on
        (`status.hostIP`). With it set the per-pod Services use `externalTrafficPolicy: Cluster`, otherwise
        `Local`.""",
    )
    external_node_port_base: int = setting(
        "externalNodePortBase",
        31000,
        integer(*NODE_PORT_RANGE),
        """`per-pod`: pod `i`'s client port is NodePort `externalNodePortBase + i`. All pods' ports must fit in
        30000-32767 and overlap neither the bus range nor `externalNodePort`.""",
    )
    external_bus_node_port_base: int = setting(
        "externalBusNodePortBase",
        32000,
        integer(*NODE_PORT_RANGE),
        """`per-pod`: pod `i`'s cluster bus port is NodePort `externalBusNodePortBase + i` (peers reach each
        other through the announced address too). Same range rules.""",
    )
    network_policy: bool = setting(
        "networkPolicy",
        True,
        BOOLEAN,
        """Create a NetworkPolicy for the Redis pods: bus port only from the cluster's own pods; client port
        from the own namespace, `allowedClientNamespaces` and `allowedClientCidrs`; with external access, the
        client port from anywhere. Needs a network plugin that enforces NetworkPolicy.""",
    )
    allowed_client_namespaces: tuple[str, ...] = setting(
        "allowedClientNamespaces",
        (),
        strings("namespace names (DNS-1123 labels)", is_dns_label),
        "Further namespaces whose pods may reach the client port (the cluster's own namespace always may).",
    )
    allowed_client_cidrs: tuple[str, ...] = setting(
        "allowedClientCidrs",
        (),
        strings(_CIDRS, is_cidr),
        "CIDRs that may reach the client port — e.g. where the bootstrap runs with `bootstrapConnection: direct`.",
    )
    node_cidrs: tuple[str, ...] = setting(
        "nodeCidrs",
        (),
        strings(_CIDRS, is_cidr),
        """`per-pod` with `externalHost` and `networkPolicy`: the nodes' CIDRs, allowed to the bus port, because
        those Services SNAT the peers' bus traffic to node addresses. Required in that combination.""",
    )
    tls: bool = setting(
        "tls",
        False,
        BOOLEAN,
        """TLS for clients (`tls-port`), replication (`tls-replication yes`) and the cluster bus (`tls-cluster
        yes`). Certificates from `tlsSecretName`, or a CA and a server certificate generated with `pulumi_tls`
        into the Secret `<name>-tls`.""",
    )
    tls_only: bool = setting(
        "tlsOnly",
        False,
        BOOLEAN,
        """With `tls`: no plain-text port (`port 0`), TLS on 6379. Without it TLS listens on 6380 next to plain
        6379. `per-pod` external access with `tls` needs it.""",
    )
    tls_secret_name: str = setting(
        "tlsSecretName",
        "",
        text(lambda v: v == "" or is_dns_subdomain(v), 'a Secret name (DNS-1123 subdomain) or ""'),
        """With `tls`: an existing Secret in the namespace with `tls.crt`, `tls.key` and `ca.crt` (the
        cert-manager layout); its certificate must cover the pods' headless names and `localhost`/`127.0.0.1`.
        Empty: generated.""",
    )
    # (name, rules) of extra ACL users, and their passwords (secret config aclPasswords).
    acl_users: tuple[tuple[str, str], ...] = setting(
        "aclUsers",
        (),
        Rule('a list of "<name> <ACL rules>" entries', acl_users),
        """Extra ACL users, one `"<name> <ACL rules>"` each, e.g. `"app ~app:* +@read +@write -@dangerous"`
        (always `on`; rules may not set passwords — `>`, `<`, `#`, `nopass`, `reset`…). Their passwords come
        from the secret config value `aclPasswords`. Not `default` or `operator`.""",
    )
    acl_passwords: tuple[tuple[str, SecretValue], ...] = field(default=(), repr=False)
    metrics: bool = setting(
        "metrics",
        False,
        BOOLEAN,
        """Add a `redis_exporter` sidecar to every Redis pod (Prometheus metrics on port 9121, named `metrics`)
        and the headless Service `<name>-metrics` in front of those ports. The exporter logs in as the ACL user
        `exporter`, which may run only the read-only commands it needs (no keys, no CONFIG); its generated
        password reaches it as a file from the Secret `<name>-auth`. See "Metrics" in the README.""",
    )
    metrics_image: str = setting(
        "metricsImage",
        f"oliver006/redis_exporter:{EXPORTER_VERSION}",
        text(lambda v: v.strip() != "" and no_spaces(v), "a non-empty image reference without spaces"),
        """`metrics`: the redis_exporter image (a release with `--redis.password-file`; tested with the
        default); pulled with `imagePullPolicy`.""",
    )
    metrics_allowed_namespaces: tuple[str, ...] = setting(
        "metricsAllowedNamespaces",
        (),
        strings("namespace names (DNS-1123 labels)", is_dns_label),
        """`metrics` with `networkPolicy`: namespaces whose pods may reach the metrics port (where Prometheus
        runs); the cluster's own namespace always may.""",
    )
    metrics_slowlog_entries: bool = setting(
        "metricsSlowlogEntries",
        False,
        BOOLEAN,
        """`metrics`: let the `exporter` user run `SLOWLOG GET`, for `redis_slowlog_last_id` and
        `redis_last_slow_execution_duration_seconds`. Off by default: a slowlog entry holds the key names and
        arguments of a slow command (truncated by Redis), which the metrics login should not read. Off, the
        exporter's `SLOWLOG GET 1` on each scrape is refused (one `ACL LOG` entry whose count grows) and
        `redis_slowlog_length` stays.""",
    )
    service_monitor: bool = setting(
        "serviceMonitor",
        False,
        BOOLEAN,
        """`metrics`: also create a `monitoring.coreos.com/v1` ServiceMonitor `<name>` selecting the metrics
        Service, for the Prometheus Operator. Needs its CRD in the cluster (`pulumi up` fails without it).""",
    )
    service_monitor_labels: tuple[tuple[str, str], ...] = setting(
        "serviceMonitorLabels",
        (),
        Rule('a list of "<label key>=<label value>" entries (Kubernetes label syntax)', labels),
        """`serviceMonitor`: extra labels on the ServiceMonitor, e.g. `["release=kube-prometheus-stack"]`: what
        your Prometheus' `serviceMonitorSelector` matches.""",
    )

    backup_schedule: str = setting(
        "backupSchedule",
        "",
        text(is_schedule, 'a CronJob schedule (5 fields such as "0 3 * * *", or @daily, @hourly…), or "" for none'),
        """A CronJob `<name>-backup` takes one consistent backup of every shard on this schedule (writes paused on
        every master until each shard's snapshot has forked: tens of ms) into the backup volume, with the Redis
        image's own `redis-cli`, as the ACL user `backup` (no key access, no CONFIG). See "Backup and restore" in
        the README.""",
    )
    backup_retention: int = setting(
        "backupRetention",
        7,
        integer(1, 1000),
        "`backupSchedule`: how many backups the CronJob keeps (the newest; older ones are deleted after a backup).",
    )
    backup_size: str = setting(
        "backupSize",
        "1Gi",
        quantity(),
        "Capacity of the backup volume (its PV and claim `<name>-backup`).",
    )
    backup_node: str = setting(
        "backupNode",
        "",
        text(lambda v: v == "" or is_dns_subdomain(v), 'a node name (DNS-1123 subdomain) or ""'),
        """The node of the backup volume: a `local` PV pinned to it (the CronJob and the restore run there).
        Empty: a hostPath volume without node affinity (single-node clusters).""",
    )
    backup_path: str = setting(
        "backupPath",
        "",
        Rule('an absolute directory path other than / without spaces, or ""', optional_host_path),
        """The backup volume's directory on its node; empty for `<hostPathBase>/<namespace>/<name>-backup`. The
        PV is `Retain`: `pulumi destroy` leaves the backups. Another stack restores them by naming the same
        directory (and `backupNode`).""",
    )
    restore_from: str = setting(
        "restoreFrom",
        "",
        text(is_backup_name, 'a backup\'s name (redis-cluster-<YYYYMMDD>T<HHMMSS>Z), "latest", or ""'),
        """When the stack is created: after the cluster is formed, a Job `<name>-restore` loads this backup from
        the backup volume into it (every key to the master that owns its slot now, TTLs kept), and the `up`
        succeeds only once it has. It refuses, writing nothing, a backup that is missing, incomplete or fails its
        checksums, one the image's server cannot load, and a cluster that holds keys. Runs once per stack.""",
    )

    @property
    def backup_volume(self) -> bool:
        """A backup volume is declared: to back up into, or to restore from."""
        return bool(self.backup_schedule or self.restore_from)

    @property
    def backup_dir(self) -> str:
        return self.backup_path or f"{self.host_path_base}/{self.namespace}/{self.name}-backup"

    @property
    def pod_count(self) -> int:
        return self.masters * (1 + self.replicas_per_master)

    def client_node_port(self, ordinal: int) -> int:
        """Per-pod external access: the NodePort of pod ``ordinal``'s client (or TLS) port."""
        return self.external_node_port_base + ordinal

    def bus_node_port(self, ordinal: int) -> int:
        """Per-pod external access: the NodePort of pod ``ordinal``'s cluster bus port."""
        return self.external_bus_node_port_base + ordinal


KEYS: tuple[Key[Any], ...] = tuple(
    Key(f.metadata[_SETTING][0], f.name, f.default, f.metadata[_SETTING][1], f.metadata[_SETTING][2])
    for f in dataclasses.fields(ClusterSettings)
    if _SETTING in f.metadata
)
# Code-side defaults, as Pulumi.yaml states them (lists, not tuples).
DEFAULTS: dict[str, Any] = {key.name: key.config_default for key in KEYS}
