"""The Pulumi resources the program declares: the bootstrap after the StatefulSet, the drain before it.

Why two: scaling in must move slots off the pods that go away *before* the
StatefulSet deletes them, scaling out can only use new pods *after* they
exist. The drain resource (the StatefulSet depends on it) handles the first,
the bootstrap resource (it depends on the StatefulSet) the second and
everything else. Both run the same converge; the drain does nothing unless
pods beyond the declared count are still there.

Their types are ``pulumi-python:dynamic/redis-cluster:ClusterBootstrap`` and
``...:ClusterDrain`` (and bootstrap/password.py's ``...:GeneratedPassword``), so a
preview says what each is. Stacks created before
they had their own types (all ``pulumi-python:dynamic:Resource``) find them
through an alias: the upgrade replaces nothing (tests/engine/test_upgrade.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
from pulumi.dynamic import Resource

from bootstrap.props import SECRETS, Phase, Props
from bootstrap.provider import RedisClusterProvider

# What the program declares: the props contract, with the passwords still pulumi Inputs (secret Outputs).
BootstrapArgs = Props[pulumi.Input[str]]


def _props(args: BootstrapArgs, phase: Phase) -> dict[str, Any]:
    def secret(value: pulumi.Input[str] | None) -> pulumi.Input[str] | None:
        return pulumi.Output.secret(value) if value is not None else None

    return dataclasses.replace(
        args, phase=phase, password=secret(args.password), operator_password=secret(args.operator_password)
    ).to_props()


# The one type both resources had before they had their own: an alias keeps existing stacks' resources.
UNTYPED = "pulumi-python:dynamic:Resource"
MODULE = "redis-cluster"


def _options(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """The passwords are secret outputs too; the alias finds a resource created under the untyped name."""
    own = pulumi.ResourceOptions(additional_secret_outputs=list(SECRETS), aliases=[pulumi.Alias(type_=UNTYPED)])
    return pulumi.ResourceOptions.merge(opts, own)


class ClusterBootstrap(Resource, module=MODULE, name="ClusterBootstrap"):
    """Forms the cluster once the pods are ready and converges it on every later `pulumi up`."""

    clusterState: pulumi.Output[str]
    masterNodes: pulumi.Output[list[dict[str, Any]]]
    replicaOf: pulumi.Output[dict[str, str]]
    nodeIds: pulumi.Output[dict[str, str]]
    announcedAddresses: pulumi.Output[list[str]]
    problems: pulumi.Output[list[str]]
    lostSlotsAccepted: pulumi.Output[dict[str, str]]  # when lost slots were reassigned empty: which, when, why

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
                "lostSlotsAccepted": None,
            }
        )
        super().__init__(RedisClusterProvider(), name, props, _options(opts))


class ClusterDrain(Resource, module=MODULE, name="ClusterDrain"):
    """Moves slots off pods beyond the declared count before the StatefulSet removes them."""

    clusterState: pulumi.Output[str]
    draining: pulumi.Output[list[str]]
    lostSlotsAccepted: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: BootstrapArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = _props(args, "drain")
        props.update({"clusterState": None, "draining": None, "lostSlotsAccepted": None})
        super().__init__(RedisClusterProvider(), name, props, _options(opts))
