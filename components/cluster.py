"""The top-level ``RedisCluster``: storage, Services and Redis nodes composed.

It keeps, as attributes, what the bootstrap resource needs (the StatefulSet to
depend on, names, pod DNS names, the provider options) so wiring the bootstrap
in is a few lines here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import labels
from components.k8s import Manifest, resource_kwargs
from components.nodes import RedisNodes, RedisNodesArgs
from components.services import Services, ServicesArgs
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

        self.storage = Storage(f"{name}-storage", StorageArgs(s, depends_on=deps), opts=self.provider_opts)
        self.services = Services(f"{name}-services", ServicesArgs(s, depends_on=deps), opts=self.provider_opts)
        self.nodes = RedisNodes(
            f"{name}-nodes",
            RedisNodesArgs(
                s,
                depends_on=deps,
                statefulset_depends_on=(*self.storage.claims, self.services.headless),
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

        self.register_outputs(
            {
                "namespace": self.namespace,
                "statefulSetName": self.statefulset_name,
                "podDnsNames": self.pod_dns_names,
                "clientService": self.client_endpoint,
            }
        )
