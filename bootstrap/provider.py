"""The dynamic provider: Pulumi's create/diff/update/read/delete mapped onto ``converge``.

The engine pickles an instance of this class (by reference: this module must
stay importable at this path — renaming it breaks existing stacks) and runs
it in its own ``python -m pulumi.dynamic`` process. So it holds no state at
all: every method builds its clients from the properties and closes them.

Properties (inputs): ``masters``, ``replicasPerMaster``, ``phase``
("converge" after the StatefulSet, "drain" before it), ``discovery``
(``{"kind": "static", "endpoints": [...]}`` or ``{"kind": "kubernetes",
"namespace", "statefulSet", "connection": "direct"|"port-forward",
"context"?, "announce"?}``; ``announce``: per-pod external access), ``timeoutSeconds``
and the optional secrets ``password`` (the ``default`` user's) and ``operatorPassword``
(the ACL user the bootstrap logs in as).
"""

from __future__ import annotations

import hashlib
import sys
import time
from typing import Any

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from bootstrap import operations as ops
from bootstrap import rules
from bootstrap.auth import add_password, drop_password
from bootstrap.converge import converge, describe
from bootstrap.endpoints import Connector, DirectConnector, Inventory, connected, static_inventory
from bootstrap.model import Shape, Snapshot

INPUTS = ("masters", "replicasPerMaster", "phase", "discovery", "timeoutSeconds")
SECRETS = ("password", "operatorPassword")  # additional secret outputs of the resources


def progress(message: str) -> None:
    """Progress to stderr: the engine shows a provider's stderr with the resource it works on."""
    print(f"[redis-cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _inventory(props: dict[str, Any], timeout: float, wait: bool = True) -> Inventory:
    d = props["discovery"]
    shape = Shape(int(props["masters"]), int(props["replicasPerMaster"]))
    if d["kind"] == "static":
        return static_inventory(list(d["endpoints"]))
    from bootstrap.kube import pod_inventory

    return pod_inventory(
        d["namespace"],
        d["statefulSet"],
        shape.nodes,
        timeout,
        progress,
        d.get("context"),
        wait=wait,
        announce=d.get("announce"),
    )


OPERATOR_USER = "operator"


def _connector(props: dict[str, Any], inventory: Inventory) -> Connector:
    """Log in as the ``operator`` ACL user when the program made one (the ``default`` user may not
    run CONFIG or ACL, see docs/security.md), else as ``default`` with its password."""
    d = props["discovery"]
    username, password = None, props.get("password") or None
    fallback = None
    if props.get("operatorPassword"):
        username, password = OPERATOR_USER, props["operatorPassword"]
        fallback = (None, props.get("password") or None)  # pods not rolled since `operator` was added
    if d["kind"] == "kubernetes" and d.get("connection", "port-forward") == "port-forward":
        from bootstrap.kube import PortForwardConnector

        return PortForwardConnector(inventory, d["namespace"], d.get("context"), password, username, fallback)
    return DirectConnector(password, username, fallback)


def _observed(snap: Snapshot, problems: list[str]) -> dict[str, Any]:
    view = describe(snap)
    return {
        "clusterState": "ok" if not problems else "degraded",
        "masterNodes": view["masters"],
        "replicaOf": view["replicaOf"],
        "nodeIds": view["nodeIds"],
        "announcedAddresses": view["announced"],
        "problems": problems,
    }


def _public(props: dict[str, Any]) -> dict[str, Any]:
    """Inputs echoed as outputs. The password is among them (read needs it and gets only outputs);
    the resource declares it an additional secret output, so the state holds it encrypted."""
    return {k: props[k] for k in (*INPUTS, *SECRETS) if k in props}


def apply(props: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Converge the cluster to the declared shape and return the outputs.

    ``previous`` (the old state, on update) tells whether the password changes:
    the drain adds the new one live, the converge after the StatefulSet drops the old.
    """
    timeout = float(props.get("timeoutSeconds", 600))
    shape = Shape(int(props["masters"]), int(props["replicasPerMaster"]))
    drain = props.get("phase") == "drain"
    static = props["discovery"]["kind"] == "static"
    new = props.get("password") or None
    old = (previous.get("password") or None) if previous is not None else new
    inventory = _inventory(props, timeout, wait=not drain)
    leaving = [e.name for e in inventory.endpoints if e.retire]
    if drain:
        if old != new and inventory.endpoints:
            with connected(_connector({**props, "password": old}, inventory)) as connector:
                add_password(inventory, connector, new, progress)
        if static or not leaving:
            # Fixed endpoints have no ordinals to shrink: the converge after the StatefulSet does it all.
            return {**_public(props), "clusterState": "unchanged", "draining": []}
        progress(f"draining {', '.join(leaving)} before the StatefulSet shrinks")
    with connected(_connector(props, inventory)) as connector:
        outcome = converge(inventory, connector, shape, timeout, progress, adopt_unlisted=static)
        if not drain and old and new and old != new:
            drop_password(inventory, connector, old, progress)
    progress(f"cluster ok: {shape.masters} masters x {shape.replicas_per_master} replicas ({outcome.seconds:.1f}s)")
    if drain:
        return {**_public(props), "clusterState": "drained", "draining": leaving}
    return {**_public(props), **_observed(outcome.snapshot, [])}


def observe(props: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """What the cluster really is, changing nothing: roles after failovers, gaps, failed nodes."""
    shape = Shape(int(props["masters"]), int(props["replicasPerMaster"]))
    try:
        inventory = _inventory(props, timeout)
        with connected(_connector(props, inventory)) as connector:
            snap = ops.take_snapshot(inventory, connector, tolerate_unreachable=True)
            infos = ops.cluster_infos(snap, connector)
    except (ops.ClusterError, OSError) as exc:
        return {**_public(props), "clusterState": "unreachable", "problems": [str(exc)]}
    verdict = rules.health(snap, infos, shape.replicas_per_master, shape.masters)
    return {**_public(props), **_observed(snap, list(verdict.problems))}


def resource_id(props: dict[str, Any]) -> str:
    d = props["discovery"]
    if d["kind"] == "kubernetes":
        return f"{d['namespace']}/{d['statefulSet']}/{props.get('phase', 'converge')}"
    digest = hashlib.sha256(",".join(d["endpoints"]).encode()).hexdigest()[:12]
    return f"static-{digest}/{props.get('phase', 'converge')}"


class RedisClusterProvider(ResourceProvider):
    """Stateless: safe to pickle, safe to run in another process."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=resource_id(props), outs=apply(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Shape changes are in-place updates, never replacements.

        With the declaration unchanged, the live cluster decides: a quick look
        (bounded) that finds it off its shape — a lost replica, an uncovered
        slot, a slot left open — makes this an update that heals it, so every
        `pulumi up` converges. A cluster that cannot be reached right now is
        not reported as a change (preview must not fail because of it).
        """
        if any(olds.get(k) != news.get(k) for k in (*INPUTS, *SECRETS)):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        if news.get("phase") == "drain":
            return DiffResult(changes=False, replaces=[], delete_before_replace=False)
        if olds.get("problems"):
            # A refresh recorded drift: update, even if the cluster mended itself since, so the state
            # (outputs) goes back to the truth.
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        live = observe(news, timeout=20.0)
        drifted = live["clusterState"] == "degraded"
        if drifted:
            progress("cluster is off its declared shape: " + "; ".join(live["problems"][:5]))
        return DiffResult(changes=drifted, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=apply(news, previous=olds))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if props.get("phase") == "drain":
            return ReadResult(id_=id_, outs=props)
        return ReadResult(id_=id_, outs=observe(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Deleting the resource leaves the cluster and its data alone (the volumes are Retain)."""
