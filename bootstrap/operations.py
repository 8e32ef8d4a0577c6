"""Cluster operations over the ``redis`` package: look, refuse, mesh, promote, forget, wait.

I/O lives here and in ``migration``; decisions live in ``planner`` (the shape)
and ``rules`` (everything else). Every wait is one ``poll``: bounded, and when
it gives up it says which node is not there yet and why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from bootstrap import rules
from bootstrap.endpoints import Connector, DeadlineExceeded, Endpoint, Inventory
from bootstrap.errors import BootstrapError, RefusedError
from bootstrap.model import Member, NodeLine, Snapshot, format_ranges, parse_cluster_nodes, to_ranges
from bootstrap.waiting import POLL_S, Progress, parallel, poll

# A handshake normally completes within a few cluster crons (100 ms each). Redis 7.0 sends the MEET
# of a handshake once: if that packet is lost (seen when 100 nodes shake hands at once on 2 cores),
# the node keeps pinging a peer that ignores pings from strangers until the handshake times out
# (cluster-node-timeout, 15 s by default). After this long, such handshakes are restarted, and
# after twice as long again, and so on: slow ones on a busy machine are not restarted forever.
STALL_S = 2.0


def cluster(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command("CLUSTER", *args)


def myself(client: redis.Redis) -> NodeLine:
    """The node's own line of CLUSTER NODES: its role, master and slots as it sees them now."""
    return next(ln for ln in parse_cluster_nodes(cluster(client, "NODES")) if ln.is_myself)


def view(client: redis.Redis) -> dict[str, NodeLine]:
    """The node's CLUSTER NODES by node id: whom it knows, in which role, owning which slots, as it sees them now."""
    return {ln.node_id: ln for ln in parse_cluster_nodes(cluster(client, "NODES"))}


# --- looking at the cluster ---------------------------------------------------


def wait_reachable(inventory: Inventory, connector: Connector, timeout: float, progress: Progress) -> None:
    """Bounded wait until every endpoint answers PING; the error names those that never did."""
    pending = {e.address: e for e in inventory.endpoints}
    last_error: dict[str, str] = {}
    announced = False

    def ping(e: Endpoint) -> tuple[Endpoint, str | None]:
        try:
            connector.client(e.address, timeout=2).ping()
            return e, None
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            # A wrong password or user does not fix itself by waiting: say so now, not at the timeout.
            raise BootstrapError(
                f"{e.name} ({e.address}) refused the login: {exc}; check the password "
                f"(REDISCLI_AUTH for the command line) and the user"
            ) from exc
        except (redis.RedisError, OSError) as exc:
            return e, f"{type(exc).__name__}: {exc}"

    def silent() -> str | None:
        nonlocal announced
        for e, err in parallel(ping, list(pending.values())):
            if err is None:
                pending.pop(e.address, None)
            else:
                last_error[e.address] = err
        if not pending:
            return None
        if not announced:
            progress(f"waiting for {len(pending)} node(s) to answer: {', '.join(e.name for e in pending.values())}")
            announced = True
        listed = "; ".join(f"{e.name} ({e.address}): {last_error.get(a, '?')}" for a, e in pending.items())
        return f"{len(pending)} of {total}: {listed}"

    total = len(pending)
    poll("node(s) did not answer PING", silent, timeout, interval=0.2)


def take_snapshot(inventory: Inventory, connector: Connector, tolerate_unreachable: bool = False) -> Snapshot:
    """Every endpoint's view. Changes need all of them (an error names the silent one); a look
    for a report (refresh, check) can go on without the silent ones and lists them instead."""

    def look(e: Endpoint) -> tuple[Endpoint, list[NodeLine], int] | str:
        try:
            return look_strict(e)
        except BootstrapError as exc:
            if tolerate_unreachable and not isinstance(exc, RefusedError):
                return str(exc)
            raise

    def look_strict(e: Endpoint) -> tuple[Endpoint, list[NodeLine], int]:
        client = connector.client(e.address)
        try:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("CLUSTER", "NODES")
            pipe.dbsize()
            raw, keys = pipe.execute()
        except redis.ResponseError as exc:
            raise RefusedError(f"{e.name} ({e.address}) is not a cluster-mode Redis: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BootstrapError(f"{e.name} ({e.address}) does not answer: {exc}") from exc
        return e, parse_cluster_nodes(raw), int(keys)

    members: list[Member] = []
    views: dict[str, list[NodeLine]] = {}
    unreachable: list[str] = []
    results = parallel(look, inventory.endpoints)
    unreachable += [r for r in results if isinstance(r, str)]
    looks = [r for r in results if not isinstance(r, str)]
    # Ids the staying nodes know: a retiring node none of them knows has been removed already.
    known = {ln.node_id for e, lines, _ in looks if not e.retire for ln in lines}
    for e, lines, keys in looks:
        me = next(line for line in lines if line.is_myself)
        if e.retire and not me.slots and (len(lines) == 1 or me.node_id not in known):
            continue  # removed already (forgotten by the others, or reset): nothing left to drain
        members.append(
            Member(
                name=e.name,
                node_id=me.node_id,
                address=e.address,
                announced=e.announced,
                domain=e.domain,
                is_master=me.is_master,
                master_id=me.master_id,
                slots=me.slots,
                keys=keys,
                retire=e.retire,
                order=e.order,
            )
        )
        views[me.node_id] = lines
    ghosts, strangers = rules.unserved(members, views)
    snap = Snapshot(members=members, views=views, ghosts=ghosts, strangers=strangers, unreachable=unreachable)
    _bury_silent_strangers(snap, connector)
    return snap


def _bury_silent_strangers(snap: Snapshot, connector: Connector) -> None:
    """Unlisted members that do not answer are ghosts, not foreign nodes.

    Within cluster-node-timeout of its death a killed node is not flagged
    ``fail`` by anyone yet, only disconnected: treating it as a live stranger
    made every run until then end in "does not answer". So is an id whose
    address a member answers under another id (a node that lost its volume and
    came back empty). A stranger we cannot dial at all (a port-forward reaches
    pods only) stays a stranger.
    """

    taken = rules.taken_addresses(snap)

    def silent(item: tuple[str, str]) -> bool:
        _, address = item
        if not address or address in taken:
            return True  # no address, or another id answers there now (a pod that came back with no data)
        try:
            connector.client(address, timeout=2).ping()
        except DeadlineExceeded:
            raise  # out of time is no verdict on the node
        except ValueError:
            return False
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
            return False  # it answered
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return True
        return False

    items = list(snap.strangers.items())
    rules.bury(snap, [node_id for (node_id, _), dead in zip(items, parallel(silent, items), strict=True) if dead])


def refuse_unsafe(snap: Snapshot) -> None:
    """Stop before touching nodes whose data or membership is not ours to change."""
    if problems := rules.unsafe(snap):
        raise RefusedError("; ".join(problems))


# --- changing the cluster -----------------------------------------------------


def wait_meshed(inventory: Inventory, connector: Connector, timeout: float, progress: Progress) -> None:
    """Until every member sees every other at its current address; stalled handshakes are restarted."""
    deadline = time.monotonic() + timeout
    stall = STALL_S
    restart_at = time.monotonic() + stall

    def gaps() -> str | None:
        nonlocal stall, restart_at
        if not (missing := rules.meshed(snap := take_snapshot(inventory, connector))):
            return None
        if (now := time.monotonic()) > restart_at:
            if restarted := restart_handshakes(snap, connector):
                progress(f"restarted {restarted} stalled handshake(s)")
            stall *= 2
            restart_at = now + stall
        wait_infos(snap, connector, rules.knows_all(len(snap.members)), min(deadline, restart_at))
        return (
            f"{len(missing)} gaps: {'; '.join(missing[:5])}; check that the cluster bus port (client port + 10000) "
            f"is reachable between pods"
        )

    poll("nodes did not all meet", gaps, timeout)


def restart_handshakes(snap: Snapshot, connector: Connector) -> int:
    """FORGET handshakes still open (their ids are random) and MEET again what is still missing.

    Also where no handshake is open: Redis 8.6 drops a handshake with a node it was told to forget
    shortly before (a shard that comes back after its slots were reassigned) without a trace, and a
    MEET sent again completes it (seen in tests/bootstrap/test_safety.py; Redis 7.0 and Valkey 9 met it
    the first time).
    """

    def drop(m: Member) -> int:
        stuck = [ln.node_id for ln in snap.views[m.node_id] if ln.in_handshake]
        if stuck:
            pipe = connector.client(m.address).pipeline(transaction=False)
            for node_id in stuck:
                pipe.execute_command("CLUSTER", "FORGET", node_id)
            pipe.execute(raise_on_error=False)  # one may have completed meanwhile: "Unknown node"
        return len(stuck)

    parallel(drop, snap.members)
    return mesh(snap, connector)


def assign_slots(
    snap: Snapshot, connector: Connector, assign: Sequence[tuple[str, tuple[int, ...]]], fresh: bool
) -> None:
    """ADDSLOTSRANGE the unowned slots; on a fresh cluster also give every node its own epoch.

    Distinct config epochs set before the first MEET (as redis-cli does) spare
    the cluster the epoch-collision rounds that would otherwise follow.
    """
    by_id = snap.by_id
    plan = dict(assign)

    def apply(item: tuple[int, Member]) -> None:
        epoch, m = item
        pipe = connector.client(m.address).pipeline(transaction=False)
        slots = plan.get(m.node_id, ())
        for lo, hi in to_ranges(slots):
            pipe.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        if fresh:
            pipe.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        pipe.execute()

    targets = [m for m in snap.members if m.node_id in plan or fresh]
    parallel(apply, [(i + 1, by_id[m.node_id]) for i, m in enumerate(targets)])


def mesh(snap: Snapshot, connector: Connector, owners: Iterable[str] = ()) -> int:
    """Introduce members that do not see each other at their current address (``rules.meetings``).

    Meeting pairs directly (not one seed) means no node waits for gossip to
    learn the others; it is also how stale addresses are fixed: Redis matches
    the node id in the answer and moves the known node to the new address.
    Returns the number of MEETs sent.
    """
    jobs = rules.meetings(snap, owners)
    parallel(lambda job: _meet(connector, *job), jobs)
    return sum(len(receivers) for _, receivers in jobs)


def _meet(connector: Connector, sender: Member, receivers: Sequence[Member]) -> None:
    """CLUSTER MEET each receiver (at its in-cluster address) from the sender, in one round trip."""
    pipe = connector.client(sender.address).pipeline(transaction=False)
    for r in receivers:
        host, _, port = r.address.rpartition(":")
        pipe.execute_command("CLUSTER", "MEET", host, int(port))
    pipe.execute()


def announce(snap: Snapshot, connector: Connector) -> int:
    """Make each slot owner tell the members that do not know its slots yet what it owns (and, in small
    clusters, each replica the members that do not list it yet its master: ``rules.announcements``).

    Redis processes a node's slots and role only from a packet of a node it
    already knows by id; the packets of a handshake do not count, so right
    after meeting, one side of every pair may know the other's name but not
    its slots or master until that node's next regular ping (up to
    cluster-node-timeout / 2, 7.5 s by default). A MEET to a node that
    already knows the sender is such a packet: it is processed at once and
    costs one short-lived connection. Sent only where a view is behind; returns
    how many were sent. In big clusters roles are left to the regular pings (see ``health``).
    """
    jobs = rules.announcements(snap)
    by_id = snap.by_id
    parallel(lambda job: _meet(connector, by_id[job[0]], job[1]), list(jobs.items()))
    return sum(len(r) for r in jobs.values())


def wait_known(snap: Snapshot, connector: Connector, pairs: Sequence[tuple[str, str]], timeout: float) -> None:
    """Wait until the first node of each (node, peer) id pair knows the peer by id (handshake done).

    Enough before CLUSTER REPLICATE, which only needs the replica to know its
    master: replicas then sync while the rest of the mesh still shakes hands.
    CLUSTER COUNT-FAILURE-REPORTS answers "Unknown node" until then, in a few
    bytes, where CLUSTER NODES would cost the busy nodes kilobytes per poll.
    """
    by_id = snap.by_id
    pending = list(pairs)
    stall = STALL_S
    restart_at = time.monotonic() + stall

    def knows(pair: tuple[str, str]) -> bool:
        try:
            cluster(connector.client(by_id[pair[0]].address), "COUNT-FAILURE-REPORTS", pair[1])
            return True
        except redis.ResponseError:
            return False

    def unknown() -> str | None:
        nonlocal pending, stall, restart_at
        if time.monotonic() > restart_at:
            # The pairs' MEETs (node -> peer, towards the slot owner) may be stalled: restart them.
            parallel(lambda p: _meet_again(connector, by_id[p[0]], by_id[p[1]]), pending)
            stall *= 2
            restart_at = time.monotonic() + stall
        pending = [p for p, ok in zip(pending, parallel(knows, pending), strict=True) if not ok]
        if not pending:
            return None
        a, b = pending[0]
        return (
            f"{by_id[a].name} did not learn {by_id[b].name} ({len(pending)} such pairs); check that the cluster "
            f"bus port (client port + 10000) is reachable between pods"
        )

    poll("handshakes did not complete", unknown, timeout)


def _meet_again(connector: Connector, node: Member, peer: Member) -> None:
    """FORGET the node's open handshakes (random ids) and MEET the peer once more."""
    client = connector.client(node.address)
    for line in parse_cluster_nodes(cluster(client, "NODES")):
        if line.in_handshake and line.address == peer.address:
            with contextlib.suppress(redis.ResponseError):  # completed meanwhile
                cluster(client, "FORGET", line.node_id)
    _meet(connector, node, [peer])


def relink_replicas(snap: Snapshot, connector: Connector, progress: Progress) -> int:
    """Point replicas whose replication still dials their master's old address at the current one.

    Seen on Kubernetes after every pod restarted with a new IP: the cluster bus
    learns a master's new address by gossip, but the replication link keeps
    retrying the old one ("No route to host") until CLUSTER REPLICATE is issued
    again. Only replicas whose link is down and whose master_host:master_port
    differs from their own view of their master are touched.
    """
    fixed = 0
    by_id = snap.by_id
    for m in snap.members:
        if not m.master_id or m.master_id not in by_id:
            continue  # a gone master's replicas are the plan's business (promoted or re-pointed)
        master = next((ln for ln in snap.views[m.node_id] if ln.node_id == m.master_id), None)
        if master is None or not master.address:
            continue
        client = connector.client(m.address)
        info = client.info("replication")
        dialed = f"{info.get('master_host')}:{info.get('master_port')}"
        if info.get("master_link_status") != "up" and dialed != master.address:
            progress(f"{m.name} replicates from {dialed}, its master is now at {master.address}: relinking")
            cluster(client, "REPLICATE", m.master_id)
            fixed += 1
    return fixed


# An election the masters can grant ends within a few cluster crons; past this the votes are not coming.
def outrank(snap: Snapshot, connector: Connector, owner_ids: Iterable[str]) -> None:
    """Give the new owners of reassigned slots config epochs above every epoch a gone node holds.

    A gone master that comes back from its own data still claims those slots
    with its old epoch; Redis gives a slot to the higher epoch when two claims
    meet, so with ours higher the returning node loses them (and becomes a
    replica of their owner) instead of the cluster losing the keys written
    since. CLUSTER BUMPEPOCH raises a node's epoch above the greatest it knows.
    """
    by_id = snap.by_id
    # What the nodes that are not members (gone, or not listed) claimed with: a returning node's epoch.
    floor = max(
        (ln.config_epoch for lines in snap.views.values() for ln in lines if ln.node_id not in by_id), default=0
    )
    for node_id in owner_ids:
        m = by_id[node_id]
        client = connector.client(m.address)
        cluster(client, "BUMPEPOCH")
        if (epoch := myself(client).config_epoch) <= floor:
            raise BootstrapError(
                f"{m.name} took reassigned slots but its config epoch {epoch} is not above {floor}, "
                f"the greatest a node outside the deployment holds: that node could win them back"
            )


def fold_in(snap: Snapshot, connector: Connector, progress: Progress) -> bool:
    """Let nodes that came back claiming reassigned slots meet their current owners, which outrank them.

    Only claims Redis settles in the cluster's favour (``DoubleClaim.safe_to_fold``;
    ``refuse_unsafe`` stops the others): the stale claimant loses the slots
    and becomes a replica of an owner. Its keys in them are older than the
    cluster's and were given up when the loss was accepted; they are counted
    (all before the first meeting: the first owner it meets may already sync
    it) and said before they go. Returns whether anything was folded.
    """
    by_stale: dict[str, list[rules.DoubleClaim]] = {}
    for c in rules.double_claims(snap):
        if c.safe_to_fold:
            by_stale.setdefault(c.stale.node_id, []).append(c)

    def count(claims: list[rules.DoubleClaim]) -> int:
        pipe = connector.client(claims[0].stale.address).pipeline(transaction=False)
        for slot in sorted(set().union(*(c.slots for c in claims))):
            pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        return sum(int(n) for n in pipe.execute())

    keys = dict(zip(by_stale, parallel(count, list(by_stale.values())), strict=True))
    for stale_id, claims in by_stale.items():
        stale, slots = claims[0].stale, frozenset().union(*(c.slots for c in claims))
        owners = ", ".join(f"{c.current.name} (epoch {c.current_epoch})" for c in claims)
        progress(
            f"{stale.name} came back claiming slots {format_ranges(slots)} (epoch {claims[0].stale_epoch}), which "
            f"{owners} serve(s): it becomes a replica and its {keys[stale_id]} older key(s) in them are dropped"
        )
        for c in claims:
            _meet(connector, c.current, [stale])
        client = connector.client(stale.address)

        def settled(client: redis.Redis = client, slots: frozenset[int] = slots) -> str | None:
            still = myself(client).slots & slots
            return f"it still claims {len(still)} of them" if still else None

        poll(f"{stale.name} did not give up slots {format_ranges(slots)}", settled, VIEW_WAIT_S)
    return bool(by_stale)


def forget(connector: Connector, members: Sequence[Member], node_ids: Sequence[str]) -> None:
    """FORGET on every remaining node within one pass (Redis bans a forgotten id for 60 s only)."""
    if not node_ids:
        return

    def run(m: Member) -> None:
        pipe = connector.client(m.address).pipeline(transaction=False)
        # A replica refuses to forget its own master ("Can't forget my master!"): the plan points it at
        # another master in the same round, and the next round's forget reaches it.
        targets = [i for i in node_ids if i not in (m.node_id, m.master_id)]
        for node_id in targets:
            pipe.execute_command("CLUSTER", "FORGET", node_id)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "Unknown node" not in str(result):
                raise BootstrapError(f"CLUSTER FORGET on {m.name}: {result}")

    parallel(run, members)


def detach(snap: Snapshot, connector: Connector, replica_ids: Sequence[str]) -> None:
    """Turn replicas into empty masters (their data is a copy): CLUSTER RESET SOFT keeps the id."""
    by_id = snap.by_id
    for rid in replica_ids:
        cluster(connector.client(by_id[rid].address), "RESET", "SOFT")


# REPLICATE answers that only mean the replica's view is behind: its master was just promoted (it still
# sees a replica) or just met (unknown). Gossip fixes both within a few pings.
_VIEW_BEHIND = ("only replicate a master", "Unknown node")
VIEW_WAIT_S = 15.0


def replicate(snap: Snapshot, connector: Connector, pairs: Sequence[tuple[str, str]]) -> None:
    by_id = snap.by_id
    parallel(lambda pair: replicate_one(connector, by_id[pair[0]], pair[1]), pairs)


def replicate_one(connector: Connector, replica: Member, master_id: str, timeout: float = VIEW_WAIT_S) -> None:
    """CLUSTER REPLICATE, asked again while the replica's view of the master is behind; nothing to do
    when it follows that master already (Valkey turns the old primary of an empty shard into a replica
    of the node that took it over by itself)."""
    client = connector.client(replica.address)

    def replicating() -> str | None:
        if myself(client).master_id == master_id:
            return None
        try:
            cluster(client, "REPLICATE", master_id)
            return None
        except redis.ResponseError as exc:
            if not any(t in str(exc) for t in _VIEW_BEHIND):
                raise BootstrapError(f"CLUSTER REPLICATE on {replica.name}: {exc}") from exc
            return str(exc)

    poll(f"CLUSTER REPLICATE on {replica.name} kept failing", replicating, timeout)


# A drained node's node timeout while it waits to be stopped: longer than any pod's way out.
QUIET_NODE_TIMEOUT_MS = 24 * 3600 * 1000


def remove(snap: Snapshot, connector: Connector, node_ids: Sequence[str]) -> list[str]:
    """Forget the drained nodes on every remaining node, in one pass; names those whose node timeout
    could not be raised.

    The drained nodes themselves are not reset: until their pods are deleted
    (right after the drain) a client that asks one of them for CLUSTER SLOTS
    still gets the right map. A reset node would answer with an empty map,
    which sends cluster clients (redis-py's among them) into errors instead of
    redirects. But Valkey 8.1+ sends a MEET, once per node timeout, to every
    node that no longer links back to it, and accepts such a MEET even inside
    FORGET's 60 s ban (valkey-io/valkey#2788): a drained node still running
    after the node timeout was back in every table (measured on loopback at a
    3 s timeout: in 2.7 s). Its ``cluster-node-timeout`` raised to a day holds
    that MEET back (12 s watched: none) and changes nothing else a leaving
    node does.
    """
    if not node_ids:
        return []
    by_id = snap.by_id
    for node_id in node_ids:
        m = by_id[node_id]
        client = connector.client(m.address)
        me = myself(client)
        if me.slots:
            raise BootstrapError(f"{m.name} still owns slots {format_ranges(me.slots)}; not removing it")
        if me.is_master and client.dbsize():
            raise BootstrapError(f"{m.name} owns no slots but holds {client.dbsize()} keys; not removing it")
    remaining = [m for m in snap.members if m.node_id not in node_ids]
    forget(connector, remaining, node_ids)

    def quiet(node_id: str) -> str | None:
        try:
            connector.client(by_id[node_id].address).config_set("cluster-node-timeout", QUIET_NODE_TIMEOUT_MS)
        except (redis.RedisError, OSError):  # NOPERM (a login without CONFIG): the caller says so
            return by_id[node_id].name
        return None

    return [name for name in parallel(quiet, node_ids) if name is not None]


# --- waiting for the truth ----------------------------------------------------


def wait_serving(snap: Snapshot, connector: Connector, node_ids: Iterable[str], timeout: float) -> None:
    """Wait until these nodes report cluster_state:ok.

    A node that just joined answers every RESTORE-ASKING with CLUSTERDOWN
    until then (Redis holds a master that had no slots in the fail state for
    its rejoin delay, clamp(cluster-node-timeout, 0.5 s, 5 s)): migrating onto it earlier fails.
    """
    by_id = snap.by_id
    pending = {by_id[i].name: by_id[i] for i in node_ids}

    def down() -> str | None:
        for name, m in list(pending.items()):
            if "cluster_state:ok" in str(cluster(connector.client(m.address), "INFO")):
                del pending[name]
        return f"{', '.join(pending)}; see CLUSTER INFO on them" if pending else None

    poll("nodes did not report cluster_state:ok", down, timeout)


def _info(client: redis.Redis, replica: bool) -> str:
    """CLUSTER INFO, plus the replication link's state for a replica, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("CLUSTER", "INFO")
    if replica:
        pipe.execute_command("INFO", "replication")
    results = pipe.execute()
    text = str(results[0])
    if replica:
        text += f"\nmaster_link_status:{results[1].get('master_link_status')}"
    return text


def cluster_infos(snap: Snapshot, connector: Connector) -> dict[str, str]:
    """CLUSTER INFO plus, for replicas, INFO replication (raw text) by node id."""
    return _infos(snap.members, connector)


def _infos(members: Sequence[Member], connector: Connector) -> dict[str, str]:
    def info(m: Member) -> tuple[str, str]:
        return m.node_id, _info(connector.client(m.address), bool(m.master_id))

    return dict(parallel(info, members))


def wait_infos(snap: Snapshot, connector: Connector, ok: Callable[[Member, str], bool], deadline: float) -> None:
    """Poll CLUSTER INFO until ``ok`` holds on every member, or the deadline passes.

    A cheap gate in front of a full snapshot: at 100 nodes a CLUSTER NODES
    sweep moves megabytes and costs the nodes CPU they need for the
    handshakes being waited for, while CLUSTER INFO is a few hundred bytes.
    Returns silently at the deadline: the caller's full check names the problem.
    """
    pending = list(snap.members)
    while pending and time.monotonic() < deadline:
        infos = _infos(pending, connector)
        pending = [m for m in pending if not ok(m, infos[m.node_id])]
        if pending:
            time.sleep(POLL_S)


def wait_converged(
    inventory: Inventory,
    connector: Connector,
    timeout: float,
    progress: Progress,
    expect_masters: int | None = None,
    expect_replicas: int | None = None,
) -> Snapshot:
    """Poll until ``rules.health`` is clean on every node; the timeout error lists what is still off."""
    deadline = time.monotonic() + timeout
    last_report = last_announce = time.monotonic()
    final: list[Snapshot] = []

    def off() -> str | None:
        nonlocal last_report, last_announce
        snap = take_snapshot(inventory, connector)
        verdict = rules.health(snap, cluster_infos(snap, connector), expect_replicas, expect_masters)
        if verdict.ok:
            final.append(snap)
            return None
        now = time.monotonic()
        if now - last_report > 5:
            progress(f"waiting for the cluster to agree: {verdict.problems[0]}")
            last_report = now
        if now - last_announce > 3:
            announce(snap, connector)  # again, should one have gone unheard
            # And meet again whom a member lost: Redis 7.2+ spreads a CLUSTER FORGET to the other nodes,
            # which then drop that id for 60 s, also after it met them again (a shard back within a minute
            # of its slots being reassigned).
            mesh(snap, connector)
            last_announce = now
        wait_infos(snap, connector, rules.serving(len(snap.members)), min(deadline, time.monotonic() + 5))
        return "; ".join(verdict.problems[:10])

    poll("cluster did not converge", off, timeout)
    return final[-1]
