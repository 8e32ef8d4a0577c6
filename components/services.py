"""Services: headless (stable pod DNS), client ClusterIP and external access.

The headless Service publishes not-ready pods too: the pods' DNS names must
resolve before the cluster is formed, since the start script and the bootstrap
both rely on them.

External access (``externalAccess``): ``shared`` is the recipe's single NodePort
in front of all pods (MOVED redirects name addresses outside clients cannot
reach); ``per-pod`` is one NodePort Service per pod for its client and bus ports,
which the pod announces (components/scripts/start-redis.sh), so redirects point
at ``<node or externalHost>:<that pod's NodePort>``; ``none`` exposes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import labels, redis_config
from components.k8s import Manifest, resource_kwargs
from components.settings import ClusterSettings


def _redis_port() -> Manifest:
    return {"name": "redis", "port": labels.REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}


def _client_ports(s: ClusterSettings) -> list[Manifest]:
    return [
        {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
        for name, port in redis_config.client_ports(s)
    ]


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
                *_client_ports(s),
                {"name": "bus", "port": labels.BUS_PORT, "targetPort": "bus", "protocol": "TCP"},
            ],
        },
    )


def client_manifest(s: ClusterSettings) -> Manifest:
    return _service(s, labels.client_service_name(s), "client", {"type": "ClusterIP", "ports": _client_ports(s)})


def external_manifest(s: ClusterSettings) -> Manifest:
    """The recipe's single NodePort in front of all pods: MOVED redirects still name pod IPs."""
    return _service(
        s,
        labels.external_service_name(s),
        "external",
        {"type": "NodePort", "ports": [{**_redis_port(), "nodePort": s.external_node_port}]},
    )


def per_pod_manifest(s: ClusterSettings, ordinal: int) -> Manifest:
    """Pod ``ordinal`` alone: its client port on NodePort base+i and its bus port on bus-base+i.

    ``externalTrafficPolicy: Local`` when the pod announces its node's IP: only that
    node answers, with no extra hop and the client's source address kept, so the
    NetworkPolicy sees real sources. With ``externalHost`` (one address for all pods,
    e.g. a load balancer or a single node's public IP) any node must forward:
    ``Cluster``, and kube-proxy SNATs that traffic to a node address (docs/security.md).
    """
    manifest = _service(
        s,
        labels.per_pod_service_name(s, ordinal),
        "external",
        {
            "type": "NodePort",
            "externalTrafficPolicy": "Cluster" if s.external_host else "Local",
            "ports": [
                {**_redis_port(), "nodePort": s.client_node_port(ordinal)},
                {
                    "name": "bus",
                    "port": labels.BUS_PORT,
                    "targetPort": "bus",
                    "protocol": "TCP",
                    "nodePort": s.bus_node_port(ordinal),
                },
            ],
        },
    )
    manifest["spec"]["selector"] = {**labels.selector_labels(s), labels.POD_NAME_LABEL: labels.pod_name(s, ordinal)}
    manifest["metadata"]["labels"]["redis-cluster/ordinal"] = str(ordinal)
    return manifest


def seed_address(address: str) -> str:
    """HOST:PORT as clients write it: an IPv6 host in brackets (Redis lists it bare)."""
    host, _, port = address.rpartition(":")
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else address


def external_seeds(s: ClusterSettings) -> list[str]:
    """Where outside clients start: every pod's announced address (per-pod), the shared NodePort, or nothing."""
    if s.external_access == "per-pod":
        host = s.external_host or "<node-ip>"
        return [seed_address(f"{host}:{s.client_node_port(i)}") for i in range(s.pod_count)]
    if s.external_access == "shared":
        return [f"<any-node-address>:{s.external_node_port}"]
    return []


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
        self.external: k8s.core.v1.Service | None = None
        if s.external_access == "shared":
            self.external = k8s.core.v1.Service(f"{name}-external", **resource_kwargs(external_manifest(s)), opts=child)
        self.per_pod: list[k8s.core.v1.Service] = []
        if s.external_access == "per-pod":
            self.per_pod = [
                k8s.core.v1.Service(f"{name}-external-{i}", **resource_kwargs(per_pod_manifest(s, i)), opts=child)
                for i in range(s.pod_count)
            ]
        self.register_outputs(
            {
                "headlessServiceName": self.headless.metadata.name,
                "clientServiceName": self.client.metadata.name,
                "externalServiceNames": [svc.metadata.name for svc in ([self.external] if self.external else [])]
                + [svc.metadata.name for svc in self.per_pod],
            }
        )
