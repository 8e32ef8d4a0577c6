"""``python -m bootstrap``: the provider's library for operators and benchmarks, without Pulumi.

The password comes from ``REDISCLI_AUTH`` (as for redis-cli), never from argv,
which any user on the host can read from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from bootstrap import errors, rules
from bootstrap import operations as ops
from bootstrap.backup import backup
from bootstrap.converge import adopt, converge, describe, require_enough_nodes
from bootstrap.endpoints import Connector, DirectConnector, Inventory, connected, static_inventory
from bootstrap.errors import PlanError
from bootstrap.model import Shape, parse_cluster_nodes, parse_slot_selection
from bootstrap.planner import plan
from bootstrap.restore import restore

PASSWORD_ENV = "REDISCLI_AUTH"


# The commands that work on a formed cluster, found from a seed or through --kube.
ON_A_CLUSTER = ("backup", "restore", "check")


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bootstrap", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (
        ("plan", "print what apply would change, change nothing"),
        ("apply", "converge the nodes into the shape: create, scale out/in, heal"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("--masters", type=int, required=True)
        c.add_argument("--replicas", type=int, required=True, help="replicas per master")
        c.add_argument("--timeout", type=_seconds, default=600.0, help="seconds for the whole run")
        c.add_argument(
            "--accept-lost-slots",
            type=_slot_ranges,
            default=frozenset(),
            metavar="RANGES|all",
            help="slots whose every copy is gone that may be reassigned empty (e.g. 5461-10922, or all); "
            "without it such slots stop the run, named with the keys they likely held",
        )
        c.add_argument("--user", help="ACL user to log in as (password in REDISCLI_AUTH)")
        c.add_argument(
            "nodes",
            nargs="+",
            metavar="HOST:PORT",
            help="every node of the deployment; cluster members not listed are drained and removed",
        )
    c = sub.add_parser("backup", help="one consistent backup of every shard into a new directory under --to")
    c.add_argument("--to", type=Path, required=True, metavar="DIR", help="where the backup's directory is made")
    c.add_argument("--user", help="ACL user to log in as (password in REDISCLI_AUTH)")
    _target(c)
    c = sub.add_parser("restore", help="every key of a backup into a formed cluster of any shape")
    c.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR", help="a backup's directory")
    c.add_argument("--replace", action="store_true", help="restore into a cluster that holds keys, overwriting")
    c.add_argument(
        "--server",
        default="redis-server",
        metavar="PATH",
        help="the server binary that loads each shard file for the restore (default: redis-server on PATH); "
        "it must read the backup's format and write one the target reads",
    )
    c.add_argument("--user", help="ACL user to log in as (password in REDISCLI_AUTH)")
    _target(c)
    c = sub.add_parser("check", help="exit 0 only when the cluster is healthy and complete")
    c.add_argument("--masters", type=int, help="also require this many masters")
    c.add_argument("--replicas", type=int, help="also require this many replicas per master")
    c.add_argument("--user", help="ACL user to log in as (password in REDISCLI_AUTH)")
    _target(c)
    return p


def _target(c: argparse.ArgumentParser) -> None:
    """A seed node, or the StatefulSet's pods reached through the Kubernetes API."""
    c.add_argument("seed", nargs="?", metavar="HOST:PORT", help="any node of the cluster")
    c.add_argument(
        "--kube",
        metavar="NAMESPACE/STATEFULSET",
        help="instead of a seed: every pod of that StatefulSet, through the Kubernetes API (port-forward; "
        "KUBECONFIG or in-cluster config); for clusters whose nodes announce their pod IPs",
    )
    c.add_argument("--context", help="with --kube: the kubeconfig context")


def _kube(spec: str) -> tuple[str, str]:
    namespace, _, statefulset = spec.partition("/")
    if not namespace or not statefulset or "/" in statefulset:
        raise ValueError(f"--kube is {spec!r}: it takes NAMESPACE/STATEFULSET, e.g. redis/redis-cluster")
    return namespace, statefulset


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--timeout is {text!r}: it takes a number of seconds above 0")
    return value


def _slot_ranges(text: str) -> frozenset[int]:
    try:
        return parse_slot_selection(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--accept-lost-slots is {exc}") from None


def _members_of(seed: str, connector: Connector) -> Inventory:
    """All nodes a seed knows, failed ones included, so that check reports them."""
    try:
        lines = parse_cluster_nodes(ops.cluster(connector.client(seed), "NODES"))
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise errors.BootstrapError(
            f"the seed {seed} does not answer ({exc}); name another node of the cluster"
        ) from exc
    addresses = sorted({ln.address for ln in lines if ln.address and not ln.is_myself} | {seed})
    return static_inventory(addresses)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    password = os.environ.get(PASSWORD_ENV) or None
    if args.command in ON_A_CLUSTER and (args.seed is None) == (args.kube is None):
        parser.error(f"{args.command} takes a seed HOST:PORT or --kube NAMESPACE/STATEFULSET (one of them)")
    if getattr(args, "kube", None):
        return _through_kube(args, password)
    with connected(DirectConnector(password, args.user)) as connector:
        try:
            if args.command in ON_A_CLUSTER:
                return _on_cluster(args, _members_of(args.seed, connector), connector)
            shape = Shape(args.masters, args.replicas)
            inventory = static_inventory(args.nodes)
            if args.command == "plan":
                require_enough_nodes(inventory, shape)
                # What apply would see: unlisted members are to be drained, not a foreign cluster.
                snap = ops.take_snapshot(adopt(inventory, ops.take_snapshot(inventory, connector)), connector)
                ops.refuse_unsafe(snap)
                lines = plan(snap.members, shape, snap.ghosts).describe(snap.names())
                print("\n".join(lines) if lines else "nothing to do: the cluster has the declared shape")
                return 0
            outcome = converge(
                inventory,
                connector,
                shape,
                args.timeout,
                _progress,
                adopt_unlisted=True,
                accept_lost=args.accept_lost_slots,
            )
            _progress(
                f"cluster ok: {shape.masters} masters x {shape.replicas_per_master} replicas, "
                f"{outcome.keys_moved} keys moved, {outcome.seconds:.2f}s"
            )
            print(json.dumps(describe(outcome.snapshot), indent=2))
            return 0
        except (errors.BootstrapError, PlanError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (redis.RedisError, OSError) as exc:  # a node failed outside a converge (plan, check)
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1


def _through_kube(args: argparse.Namespace, password: str | None) -> int:
    """backup, restore or check of the pods of a StatefulSet, each reached through its own API tunnel.

    The restore's temporary servers MIGRATE into the tunnels' local ends (``Connector.dial``), so
    keys still go server to server, through the API server instead of the pod network."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    from bootstrap.kube import PortForwardConnector, statefulset_inventory

    try:
        namespace, statefulset = _kube(args.kube)
        inventory = statefulset_inventory(namespace, statefulset, _progress, args.context)
        with connected(PortForwardConnector(inventory, namespace, args.context, password, args.user)) as connector:
            return _on_cluster(args, inventory, connector)
    except (errors.BootstrapError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (redis.RedisError, OSError, ConfigException, ApiException) as exc:  # no kubeconfig, a refused API call
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _on_cluster(args: argparse.Namespace, inventory: Inventory, connector: Connector) -> int:
    """backup, restore or check of a formed cluster, however its nodes were found and are reached."""
    if args.command == "check":
        return _check(args, inventory, connector)
    if args.command == "restore":
        restore(inventory, connector, args.source, args.server, _progress, replace=args.replace)
        return 0
    print(backup(inventory, connector, args.to, _progress))
    return 0


def _check(args: argparse.Namespace, inventory: Inventory, connector: Connector) -> int:
    snap = ops.take_snapshot(inventory, connector, tolerate_unreachable=True)
    verdict = rules.health(snap, ops.cluster_infos(snap, connector), args.replicas, args.masters)
    if verdict.ok:
        masters = sum(1 for m in snap.members if m.is_master and m.slots)
        print(f"OK: {len(snap.members)} nodes, {masters} masters, all 16384 slots covered, no open slot")
        return 0
    for problem in verdict.problems:
        print(f"PROBLEM: {problem}")
    return 2
