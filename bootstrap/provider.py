"""The dynamic provider: Pulumi's create/diff/update/read/delete mapped onto ``converge``.

The engine pickles an instance of this class (by reference: this module must
stay importable at this path — renaming it breaks existing stacks) and runs
it in its own ``python -m pulumi.dynamic`` process. So it holds no state at
all: every method builds its clients from the properties and closes them.
The properties (inputs, echoed as outputs) are read once per call, by
:meth:`bootstrap.props.Props.from_props`; their keys are listed there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from bootstrap import errors, lease, rules
from bootstrap import operations as ops
from bootstrap.auth import add_password, drop_password
from bootstrap.converge import Outcome, converge, describe
from bootstrap.endpoints import Connector, DirectConnector, Inventory, connected, static_inventory
from bootstrap.engines import Engine, image_engine, move_refusal
from bootstrap.errors import PropsError
from bootstrap.model import Snapshot, format_ranges, parse_slot_selection
from bootstrap.props import PodDiscovery, Props, StaticDiscovery
from bootstrap.roll import Pods, roll

OPERATOR_USER = "operator"


def progress(message: str) -> None:
    """Progress to stderr: the engine shows a provider's stderr with the resource it works on."""
    print(f"[redis-cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _inventory(p: Props[str], timeout: float, wait: bool = True) -> Inventory:
    d = p.discovery
    if isinstance(d, StaticDiscovery):
        return static_inventory(list(d.endpoints))
    from bootstrap.kube import pod_inventory

    return pod_inventory(
        d.namespace, d.stateful_set, p.shape.nodes, timeout, progress, d.context, wait=wait, announce=d.announce
    )


def _pods(p: Props[str]) -> Pods | None:
    """The StatefulSet's pods to roll; None for fixed endpoints (nothing to restart)."""
    d = p.discovery
    if not isinstance(d, PodDiscovery):
        return None
    from bootstrap.kube import StatefulSetPods

    return StatefulSetPods(d.namespace, d.stateful_set, p.shape.nodes, progress, d.context, d.announce)


def _connector(p: Props[str], inventory: Inventory) -> Connector:
    """Log in as the ``operator`` ACL user when the program made one (the ``default`` user may not
    run CONFIG or ACL, see docs/security.md), else as ``default`` with its password."""
    username, password = None, p.password
    fallback = None
    if p.operator_password:
        username, password = OPERATOR_USER, p.operator_password
        fallback = (None, p.password)  # pods not rolled since `operator` was added
    d = p.discovery
    if isinstance(d, PodDiscovery) and d.connection == "port-forward":
        from bootstrap.kube import PortForwardConnector

        return PortForwardConnector(inventory, d.namespace, d.context, password, username, fallback)
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


def _public(p: Props[str]) -> dict[str, Any]:
    """Inputs echoed as outputs. The password is among them (read needs it and gets only outputs);
    the resource declares it an additional secret output, so the state holds it encrypted."""
    return p.to_props()


def apply(props: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Converge the cluster to the declared shape and return the outputs.

    Two resources share this code (bootstrap/resource.py): the drain, before the
    StatefulSet changes, and the converge, after it. ``previous`` (the old
    state, on update) tells whether the password changes (the drain adds the
    new one live, the converge drops the old) and what acceptLostSlots consent
    was spent already.
    """
    p = Props.from_props(props)
    old_password = Props.from_props(previous).password if previous is not None else p.password
    consent = _Consent.of(p, previous)
    return (_drain if p.phase == "drain" else _converge)(p, old_password, consent)


def _drain(p: Props[str], old_password: str | None, consent: _Consent) -> dict[str, Any]:
    """Before the StatefulSet changes: add a new password live and empty the pods that are about to go.

    No roll here (the template has not changed yet) and no waiting for pods
    that are not there: a scale-in's leaving pods are the ones that must answer.
    """
    timeout = float(p.timeout_seconds)
    d = p.discovery
    if isinstance(d, PodDiscovery):
        from bootstrap.kube import ensure_on_delete

        ensure_on_delete(d.namespace, d.stateful_set, progress, d.context)
    inventory = _inventory(p, timeout, wait=False)
    if old_password != p.password and inventory.endpoints:
        with connected(_connector(dataclasses.replace(p, password=old_password), inventory)) as connector:
            add_password(inventory, connector, p.password, progress)
    leaving = [e.name for e in inventory.endpoints if e.retire]
    if isinstance(d, StaticDiscovery) or not leaving:
        # Fixed endpoints have no ordinals to shrink: the converge after the StatefulSet does it all.
        return {**_public(p), "clusterState": "unchanged", "draining": []}
    progress(f"draining {', '.join(leaving)} before the StatefulSet shrinks")
    with consent.asked(), lease.for_run(progress), connected(_connector(p, inventory)) as connector:
        outcome = converge(inventory, connector, p.shape, timeout, progress, accept_lost=consent.slots)
    progress(f"cluster ok: {p.masters} masters x {p.replicas_per_master} replicas ({outcome.seconds:.1f}s)")
    return {**_public(p), "clusterState": "drained", "draining": leaving, **consent.record(outcome)}


def _converge(p: Props[str], old_password: str | None, consent: _Consent) -> dict[str, Any]:
    """After the StatefulSet changed: roll the pods onto the new template, then converge, then drop an old password."""
    timeout = float(p.timeout_seconds)
    inventory = _inventory(p, timeout)
    reassigned: set[int] = set()
    # One lease from the roll's first look to the converge's end: a second run between them could
    # move slots or evict a pod while one of this run's is down (bootstrap/lease.py).
    with consent.asked(), lease.for_run(progress):
        if (pods := _pods(p)) is not None:
            # Before the converge: what the shape needs may come with the new template (per-pod access
            # announces its addresses only after a restart), and a stale pod that crashes must go first.
            started = time.monotonic()
            if roll(pods, lambda inv: _connector(p, inv), p.shape, timeout, progress, consent.slots, reassigned):
                inventory = pods.inventory(timeout)  # restarted pods may have new IPs
            timeout = max(timeout - (time.monotonic() - started), 60.0)
        with connected(_connector(p, inventory)) as connector:
            outcome = converge(
                inventory,
                connector,
                p.shape,
                timeout,
                progress,
                adopt_unlisted=isinstance(p.discovery, StaticDiscovery),
                accept_lost=consent.slots,
            )
            if old_password and p.password and old_password != p.password:
                drop_password(inventory, connector, old_password, progress)
    progress(f"cluster ok: {p.masters} masters x {p.replicas_per_master} replicas ({outcome.seconds:.1f}s)")
    return {**_public(p), **_observed(outcome.snapshot, []), **consent.record(outcome, reassigned)}


@dataclasses.dataclass(frozen=True)
class _Consent:
    """acceptLostSlots for one run: the slots it may reassign empty, and what the last run that had it did.

    Consent is for one loss: a value left in the config must not quietly
    accept the next one, so the value used last is spent (kept in the outputs
    as ``lostSlotsAccepted``: the value, the slots it reassigned or "none",
    when), and a new loss needs a value spelled differently.
    """

    setting: str
    last: Mapping[str, str]
    spent: bool
    slots: frozenset[int]

    @classmethod
    def of(cls, p: Props[str], previous: Mapping[str, Any] | None) -> _Consent:
        last = _last_acceptance(previous)
        spent = bool(last) and p.accept_lost_slots == last.get("setting")
        slots = frozenset() if spent or not p.accept_lost_slots else parse_slot_selection(p.accept_lost_slots)
        return cls(p.accept_lost_slots, last, spent, slots)

    @contextlib.contextmanager
    def asked(self) -> Iterator[None]:
        """A refused loss says so when the value in the config is the spent one (else it reads as ignored)."""
        try:
            yield
        except errors.DataLossRefused as exc:
            if not self.spent:
                raise
            raise errors.DataLossRefused(
                f"{exc} (acceptLostSlots {self.setting!r} was spent {self.last.get('at')} on slots "
                f"{self.last.get('slots')}: consent is for one loss; to accept this one, set it to the slots named "
                f"here, in any other spelling than the spent one)"
            ) from exc

    def record(self, outcome: Outcome, reassigned: set[int] | frozenset[int] = frozenset()) -> dict[str, Any]:
        """The ``lostSlotsAccepted`` output: spent by the run that had it, whether it reassigned anything or not
        (the shard may have come back instead); left in the config, it must not accept a later loss unasked."""
        if not self.slots:
            return {"lostSlotsAccepted": dict(self.last)} if self.last else {}
        slots = set(reassigned).union(*(step.lost_slots for step in outcome.plans))
        return {"lostSlotsAccepted": {"setting": self.setting, "slots": format_ranges(slots) or "none", "at": _now()}}


def _last_acceptance(state: Mapping[str, Any] | None) -> dict[str, str]:
    """What the last run with acceptLostSlots recorded (see ``_Consent``); empty if none did."""
    record = (state or {}).get("lostSlotsAccepted")
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, Mapping) else {}


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def observe(props: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """What the cluster really is, changing nothing: roles after failovers, gaps, failed nodes."""
    p = Props.from_props(props)
    try:
        inventory = _inventory(p, timeout)
        with connected(_connector(p, inventory)) as connector:
            snap = ops.take_snapshot(inventory, connector, tolerate_unreachable=True)
            infos = ops.cluster_infos(snap, connector)
        stale = pods.stale() if (pods := _pods(p)) is not None else []
    except (errors.BootstrapError, OSError) as exc:
        return {**_public(p), "clusterState": "unreachable", "problems": [str(exc)]}
    verdict = rules.health(snap, infos, p.replicas_per_master, p.masters)
    problems = list(verdict.problems)
    if stale:
        # A roll that was cut short (timeout, a failed pod): the next `pulumi up` goes on with it.
        problems.append(f"pods {', '.join(stale)} run an old revision of the pod template")
    last = _last_acceptance(props)
    return {**_public(p), **_observed(snap, problems), **({"lostSlotsAccepted": last} if last else {})}


def _declared_changed(olds: Mapping[str, Any], news: Mapping[str, Any]) -> bool:
    """Whether the declaration (inputs and secrets) differs; news a preview cannot read yet counts as a change.

    State written before the image was an input has none: that alone is no change (an upgrade of this
    program must not show an update of every stack's bootstrap)."""
    try:
        old, new = Props.from_props(olds), Props.from_props(news)
    except PropsError:
        return True
    return old != (dataclasses.replace(new, image="") if not old.image else new)


def check_engine_move(p: Props[str], timeout: float = 20.0) -> None:
    """Refuse an image whose engine cannot take over from the engine the pods run, before anything restarts.

    Run by the drain's diff when the pod template changes: the drain comes before the StatefulSet (which
    rolls nothing itself, it is OnDelete), and preview runs diffs too, so a refused move fails both
    `pulumi preview` and `pulumi up` with the StatefulSet untouched. What the pods run is asked of them
    (INFO server), what the image runs is read from its name (engines.image_engine); when the name does
    not say, or no pod answers yet, it says so and lets the change through.
    """
    new = image_engine(p.image)
    if new is None:
        progress(f"image {p.image}: its name does not say the engine and release, so the move is not checked")
        return
    try:
        inventory = _inventory(p, timeout, wait=False)
        with connected(_connector(p, inventory)) as connector:
            running: dict[str, Engine] = {}
            for endpoint in inventory.endpoints:
                with contextlib.suppress(errors.BootstrapError, OSError, redis.RedisError):
                    running[endpoint.name] = Engine.from_info(connector.client(endpoint.address).info("server"))
    except (errors.BootstrapError, OSError, redis.RedisError) as exc:
        progress(f"image {p.image}: the pods could not be asked which engine they run ({exc}); not checked")
        return
    if not running:
        progress(f"image {p.image}: no pod answered which engine it runs; not checked")
    for old in sorted(set(running.values()), key=str):
        if (why := move_refusal(old, new)) is not None:
            pods = ", ".join(sorted(name for name, engine in running.items() if engine == old))
            raise errors.EngineMoveRefused(f"image {p.image}: {why} (pods on {old}: {pods})")


class RedisClusterProvider(ResourceProvider):
    """Stateless: safe to pickle, safe to run in another process."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=Props.from_props(props).resource_id, outs=apply(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Shape changes are in-place updates, never replacements.

        With the declaration unchanged, the live cluster decides: a quick look
        (bounded) that finds it off its shape — a lost replica, an uncovered
        slot, a slot left open — makes this an update that heals it, so every
        `pulumi up` converges. A cluster that cannot be reached right now is
        not reported as a change (preview must not fail because of it).
        """
        if _declared_changed(olds, news):
            try:
                new: Props[str] | None = Props.from_props(news)
            except PropsError:
                new = None  # a preview that cannot read the new inputs yet (unknown values): nothing to check
            if new and new.phase == "drain" and new.image and new.pod_template != olds.get("podTemplate"):
                check_engine_move(new)
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        if Props.from_props(news).phase == "drain":
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
        if Props.from_props(props).phase == "drain":
            return ReadResult(id_=id_, outs=props)
        return ReadResult(id_=id_, outs=observe(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Deleting the resource leaves the cluster and its data alone (the volumes are Retain)."""
