"""The top-level ``RedisCluster``: storage, Services and Redis nodes composed.

The bootstrap comes in two resources around the StatefulSet: the drain
before it (slots leave pods that a scale-in is about to delete) and the
bootstrap after it (forms the cluster once every pod is ready, then converges
it on every `pulumi up`). See bootstrap/resource.py for why.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from bootstrap.props import Announce, Discovery, PodDiscovery, StaticDiscovery
from bootstrap.resource import BootstrapArgs, ClusterBootstrap, ClusterDrain
from components import labels
from components.backup import Backup, BackupArgs
from components.k8s import Manifest, resource_kwargs
from components.metrics import Metrics, MetricsArgs, metrics_service_name
from components.nodes import RedisNodes, RedisNodesArgs, pod_template_digest
from components.security import Passwords, Security, SecurityArgs, passwords
from components.services import Services, ServicesArgs, external_seeds, seed_address
from components.settings import ClusterSettings
from components.storage import Storage, StorageArgs


def namespace_manifest(s: ClusterSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": s.namespace, "labels": labels.standard_labels(s, "namespace")},
    }


@dataclass(frozen=True)
class RedisClusterArgs:
    settings: ClusterSettings


class RedisCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: RedisClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:cluster:RedisCluster", name, None, opts)
        s = args.settings
        self.settings = s

        # Render mode: every Kubernetes object goes through a provider that writes
        # YAML instead of talking to a cluster (engine tests, offline review).
        self.provider: k8s.Provider | None = None
        if s.render_yaml_to:
            self.provider = k8s.Provider(
                f"{name}-render",
                render_yaml_to_directory=s.render_yaml_to,
                opts=pulumi.ResourceOptions(parent=self),
            )
        # Options for any child of this component, the bootstrap included.
        self.provider_opts = pulumi.ResourceOptions(parent=self, providers=[self.provider] if self.provider else None)

        deps: tuple[pulumi.Resource, ...] = ()
        self.namespace_resource: k8s.core.v1.Namespace | None = None
        if s.create_namespace:
            self.namespace_resource = k8s.core.v1.Namespace(
                f"{name}-namespace", **resource_kwargs(namespace_manifest(s)), opts=self.provider_opts
            )
            deps = (self.namespace_resource,)

        # Passwords first (secret Outputs): the bootstrap resources take them, and the
        # auth Secret that carries them to the pods waits for the drain.
        self.passwords: Passwords = passwords(name, s, pulumi.ResourceOptions(parent=self))
        bootstrap_args = bootstrap_args_for(s, self.passwords)
        self.drain: ClusterDrain | None = None
        if bootstrap_args is not None:
            self.drain = ClusterDrain(
                f"{name}-drain", bootstrap_args, opts=pulumi.ResourceOptions(parent=self, depends_on=list(deps))
            )

        # The drain adds a new password live on every node before the Secret changes; the
        # bootstrap removes the old one after the StatefulSet (bootstrap/auth.py).
        self.security = Security(
            f"{name}-security",
            SecurityArgs(
                s,
                self.passwords,
                depends_on=deps,
                secret_depends_on=(self.drain,) if self.drain else (),
            ),
            opts=self.provider_opts,
        )

        self.metrics: Metrics | None = None
        if s.metrics:
            self.metrics = Metrics(f"{name}-metrics", MetricsArgs(s, depends_on=deps), opts=self.provider_opts)

        self.storage = Storage(f"{name}-storage", StorageArgs(s, depends_on=deps), opts=self.provider_opts)
        self.services = Services(f"{name}-services", ServicesArgs(s, depends_on=deps), opts=self.provider_opts)
        self.nodes = RedisNodes(
            f"{name}-nodes",
            RedisNodesArgs(
                s,
                depends_on=deps,
                statefulset_depends_on=(
                    *self.storage.claims,
                    self.services.headless,
                    *self.security.objects,
                    *((self.drain,) if self.drain else ()),
                ),
            ),
            opts=self.provider_opts,
        )

        self.statefulset = self.nodes.statefulset
        self.statefulset_name: pulumi.Output[str] = self.statefulset.metadata.apply(lambda m: str(m.name))
        self.namespace = s.namespace
        self.pod_names = labels.pod_names(s)
        self.pod_dns_names = [labels.pod_fqdn(s, i) for i in range(s.pod_count)]
        self.headless_service_name = labels.headless_service_name(s)
        self.client_endpoint = (
            f"{labels.client_service_name(s)}.{s.namespace}.svc.{s.cluster_domain}:{labels.REDIS_PORT}"
        )
        self.external_node_port = s.external_node_port
        self.external_seeds: list[str] | pulumi.Output[list[str]] = external_seeds(s)
        self.auth_secret_name = labels.auth_secret_name(s)
        self.metrics_service_name = metrics_service_name(s) if s.metrics else None

        # Depends on the StatefulSet, which Pulumi awaits until every pod is Ready
        # (readiness is a PING, never cluster state, so this cannot deadlock).
        self.bootstrap: ClusterBootstrap | None = None
        if bootstrap_args is not None:
            self.bootstrap = ClusterBootstrap(
                f"{name}-bootstrap",
                bootstrap_args,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.statefulset]),
            )
            if bootstrap_args.discovery.announce and not s.external_host:
                # The node IPs are known once the pods run: the bootstrap reads what each pod announces.
                # (Render mode has no bootstrap and fixed bootstrapEndpoints announce nothing: placeholders.)
                self.external_seeds = self.bootstrap.announcedAddresses.apply(
                    lambda addresses: [seed_address(a) for a in addresses or []]
                )

        # The backup volume, the CronJob and the restore Job: the restore fills the cluster the bootstrap formed.
        self.backup: Backup | None = None
        if s.backup_volume:
            self.backup = Backup(
                f"{name}-backup",
                BackupArgs(
                    s,
                    depends_on=deps,
                    secrets=tuple(self.security.objects),
                    restore_after=(self.bootstrap,) if self.bootstrap else (),
                ),
                opts=self.provider_opts,
            )

        self.register_outputs(
            {
                "namespace": self.namespace,
                "statefulSetName": self.statefulset_name,
                "podDnsNames": self.pod_dns_names,
                "clientService": self.client_endpoint,
                "clusterState": self.bootstrap.clusterState if self.bootstrap else None,
            }
        )


def bootstrap_args_for(s: ClusterSettings, pw: Passwords | None = None) -> BootstrapArgs | None:
    """How the bootstrap finds and logs in to the nodes; None when there is nothing to bootstrap.

    Render mode writes manifests and starts no pod, so without fixed
    endpoints (the engine tests' redis-servers) there is no cluster to form.
    ``password`` is the `default` user's (secret; None when auth is off): the one the
    bootstrap rotates live and passes to MIGRATE.
    """
    if s.bootstrap_endpoints:
        # Servers this program did not configure (tests, Redis outside Kubernetes): they have
        # neither our Secret's password nor the `operator` user, so the bootstrap logs in plainly.
        pw = None
        discovery: Discovery = StaticDiscovery(s.bootstrap_endpoints)
    elif s.render_yaml_to:
        return None
    else:
        discovery = PodDiscovery(
            namespace=s.namespace,
            stateful_set=labels.statefulset_name(s),
            connection=s.bootstrap_connection,
            # Nodes announce <host or their node's IP>:<base + ordinal> (bootstrap.props.Announce).
            announce=Announce(s.external_host, s.external_node_port_base) if s.external_access == "per-pod" else None,
        )
    return BootstrapArgs(
        masters=s.masters,
        replicas_per_master=s.replicas_per_master,
        discovery=discovery,
        timeout_seconds=s.bootstrap_timeout_seconds,
        password=pw.password if pw is not None else None,
        # The `operator` ACL user: `default` may not run CONFIG or ACL (docs/security.md).
        operator_password=pw.operator if pw is not None else None,
        pod_template=pod_template_digest(s) if isinstance(discovery, PodDiscovery) else "",
        image=s.image if isinstance(discovery, PodDiscovery) else "",
        accept_lost_slots=s.accept_lost_slots,
    )
