"""The Pulumi resources the program declares: the bootstrap after the StatefulSet, the drain before it.

Why two: scaling in must move slots off the pods that go away *before* the
StatefulSet deletes them, scaling out can only use new pods *after* they
exist. The drain resource (the StatefulSet depends on it) handles the first,
the bootstrap resource (it depends on the StatefulSet) the second and
everything else. Both run the same converge; the drain does nothing unless
pods beyond the declared count are still there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from bootstrap.provider import SECRETS, RedisClusterProvider


@dataclass
class Discovery:
    """Where the nodes are: the StatefulSet's pods, or fixed endpoints (tests, outside Kubernetes)."""

    namespace: str = ""
    stateful_set: str = ""
    connection: str = "port-forward"  # or "direct"
    context: str | None = None
    endpoints: list[str] | None = None
    # Per-pod external access: {"host": announced host or "" for the node IP, "basePort": NodePort of pod 0}.
    announce: dict[str, Any] | None = None

    def to_props(self) -> dict[str, Any]:
        if self.endpoints:
            return {"kind": "static", "endpoints": list(self.endpoints)}
        props: dict[str, Any] = {
            "kind": "kubernetes",
            "namespace": self.namespace,
            "statefulSet": self.stateful_set,
            "connection": self.connection,
        }
        if self.context:
            props["context"] = self.context
        if self.announce:
            props["announce"] = dict(self.announce)
        return props


@dataclass
class BootstrapArgs:
    masters: pulumi.Input[int]
    replicas_per_master: pulumi.Input[int]
    discovery: Discovery
    timeout_seconds: int = 600
    password: pulumi.Input[str] | None = None  # the default user's: clients and replication
    operator_password: pulumi.Input[str] | None = None  # the ACL user the bootstrap logs in as


def _props(args: BootstrapArgs, phase: str) -> dict[str, Any]:
    return {
        "masters": args.masters,
        "replicasPerMaster": args.replicas_per_master,
        "phase": phase,
        "discovery": args.discovery.to_props(),
        "timeoutSeconds": args.timeout_seconds,
        "password": pulumi.Output.secret(args.password) if args.password is not None else None,
        "operatorPassword": (
            pulumi.Output.secret(args.operator_password) if args.operator_password is not None else None
        ),
    }


def _secret_password(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=list(SECRETS)))


class ClusterBootstrap(Resource):
    """Forms the cluster once the pods are ready and converges it on every later `pulumi up`."""

    clusterState: pulumi.Output[str]
    masterNodes: pulumi.Output[list[dict[str, Any]]]
    replicaOf: pulumi.Output[dict[str, str]]
    nodeIds: pulumi.Output[dict[str, str]]
    announcedAddresses: pulumi.Output[list[str]]
    problems: pulumi.Output[list[str]]

    def __init__(self, name: str, args: BootstrapArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = _props(args, "converge")
        props.update(
            {
                "clusterState": None,
                "masterNodes": None,
                "replicaOf": None,
                "nodeIds": None,
                "announcedAddresses": None,
                "problems": None,
            }
        )
        super().__init__(RedisClusterProvider(), name, props, _secret_password(opts))


class ClusterDrain(Resource):
    """Moves slots off pods beyond the declared count before the StatefulSet removes them."""

    clusterState: pulumi.Output[str]
    draining: pulumi.Output[list[str]]

    def __init__(self, name: str, args: BootstrapArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = _props(args, "drain")
        props.update({"clusterState": None, "draining": None})
        super().__init__(RedisClusterProvider(), name, props, _secret_password(opts))
