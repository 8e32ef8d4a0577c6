"""Services: headless (stable pod DNS), client ClusterIP and the external NodePort.

The headless Service publishes not-ready pods too: the pods' DNS names must
resolve before the cluster is formed, since the start script and the bootstrap
both rely on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import labels
from components.k8s import Manifest, resource_kwargs
from components.settings import ClusterSettings


def _redis_port() -> Manifest:
    return {"name": "redis", "port": labels.REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}


def _service(s: ClusterSettings, name: str, component: str, spec: Manifest) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels.standard_labels(s, component)},
        "spec": {"selector": labels.selector_labels(s), **spec},
    }


def headless_manifest(s: ClusterSettings) -> Manifest:
    return _service(
        s,
        labels.headless_service_name(s),
        "redis",
        {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "ports": [
                _redis_port(),
                {"name": "bus", "port": labels.BUS_PORT, "targetPort": "bus", "protocol": "TCP"},
            ],
        },
    )


def client_manifest(s: ClusterSettings) -> Manifest:
    return _service(s, labels.client_service_name(s), "client", {"type": "ClusterIP", "ports": [_redis_port()]})


def external_manifest(s: ClusterSettings) -> Manifest:
    """The recipe's single NodePort in front of all pods: MOVED redirects still name pod IPs."""
    return _service(
        s,
        labels.external_service_name(s),
        "external",
        {"type": "NodePort", "ports": [{**_redis_port(), "nodePort": s.external_node_port}]},
    )


@dataclass(frozen=True)
class ServicesArgs:
    settings: ClusterSettings
    depends_on: tuple[pulumi.Resource, ...] = ()


class Services(pulumi.ComponentResource):
    def __init__(self, name: str, args: ServicesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:services:Services", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.headless = k8s.core.v1.Service(f"{name}-headless", **resource_kwargs(headless_manifest(s)), opts=child)
        self.client = k8s.core.v1.Service(f"{name}-client", **resource_kwargs(client_manifest(s)), opts=child)
        self.external = k8s.core.v1.Service(f"{name}-external", **resource_kwargs(external_manifest(s)), opts=child)
        self.register_outputs(
            {
                "headlessServiceName": self.headless.metadata.name,
                "clientServiceName": self.client.metadata.name,
                "externalServiceName": self.external.metadata.name,
            }
        )
