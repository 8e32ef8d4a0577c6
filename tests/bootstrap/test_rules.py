"""Properties of the pure rules: who is gone, who meets whom, how open slots pair up, the verdict."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap import rules
from bootstrap.model import SLOTS, Member, NodeLine, Snapshot

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def member(i: int, slots: range | frozenset[int] = frozenset(), master_id: str | None = None) -> Member:
    return Member(
        name=f"pod-{i}",
        node_id=f"id{i:03d}",
        address=f"10.0.0.{i}:6379",
        order=i,
        is_master=master_id is None,
        master_id=master_id,
        slots=frozenset(slots),
    )


def line_of(
    m: Member,
    myself: bool = False,
    flags: tuple[str, ...] = (),
    migrating: dict[int, str] | None = None,
    importing: dict[int, str] | None = None,
    address: str | None = None,
) -> NodeLine:
    role = "master" if m.is_master else "slave"
    return NodeLine(
        node_id=m.node_id,
        address=m.address if address is None else address,
        hostname="",
        flags=frozenset({role, *flags, *(("myself",) if myself else ())}),
        master_id=m.master_id,
        config_epoch=0,
        connected=True,
        slots=m.slots,
        migrating=migrating or {},
        importing=importing or {},
    )


def agreed(members: list[Member], extra: Sequence[NodeLine] = ()) -> Snapshot:
    """Every member sees every member as it is, plus ``extra`` lines in every view."""
    views = {m.node_id: [line_of(o, myself=o is m) for o in members] + list(extra) for m in members}
    ghosts, strangers = rules.unserved(members, views)
    return Snapshot(members=members, views=views, ghosts=ghosts, strangers=strangers)


def three_by_one() -> list[Member]:
    thirds = [range(0, 5461), range(5461, 10922), range(10922, SLOTS)]
    masters = [member(i, thirds[i]) for i in range(3)]
    return masters + [member(3 + i, master_id=masters[i].node_id) for i in range(3)]


def ok_infos(members: list[Member]) -> dict[str, str]:
    return {m.node_id: "cluster_state:ok\nmaster_link_status:up" for m in members}


# --- who is who ---------------------------------------------------------------


def test_a_failed_line_is_a_ghost_with_the_slots_no_member_holds_and_a_live_one_a_stranger() -> None:
    members = three_by_one()
    gone = member(9, range(0, 10))
    alive = member(8)
    snap = agreed(members, [line_of(gone, flags=("fail",)), line_of(alive)])
    assert snap.ghosts == {gone.node_id: frozenset()}, "slots 0-9 belong to a member: not the ghost's"
    assert snap.strangers == {alive.node_id: alive.address}
    rules.bury(snap, [alive.node_id])
    assert alive.node_id in snap.ghosts and not snap.strangers


def test_an_id_failed_in_one_view_only_is_a_ghost_not_a_stranger() -> None:
    members = three_by_one()
    gone = member(9)
    views = {m.node_id: [line_of(o, myself=o is m) for o in members] for m in members}
    views[members[0].node_id].append(line_of(gone, flags=("fail",)))
    views[members[1].node_id].append(line_of(gone))
    ghosts, strangers = rules.unserved(members, views)
    assert gone.node_id in ghosts and gone.node_id not in strangers


def test_a_node_with_keys_alone_and_a_live_stranger_are_both_named() -> None:
    members = three_by_one()
    loner = replace(member(7), keys=12)
    views = {m.node_id: [line_of(o, myself=o is m) for o in members] + [line_of(member(8))] for m in members}
    views[loner.node_id] = [line_of(loner, myself=True)]
    ghosts, strangers = rules.unserved([*members, loner], views)
    problems = rules.unsafe(Snapshot([*members, loner], views, ghosts, strangers))
    assert any("holds 12 keys but is in no cluster" in p for p in problems)
    assert any("is not part of this deployment" in p for p in problems)


# --- gossip -------------------------------------------------------------------


@st.composite
def partial_views(draw: st.DrawFn) -> tuple[list[Member], Snapshot]:
    """Members (some owning slots) where each node knows a random subset of the others."""
    n = draw(st.integers(2, 12))
    owners = draw(st.integers(0, n))
    members = [member(i, range(i * 10, i * 10 + 10) if i < owners else frozenset()) for i in range(n)]
    knows = {(a, b): draw(st.booleans()) for a, b in itertools.permutations(range(n), 2)}
    views = {
        m.node_id: [line_of(o, myself=o is m) for o in members if o is m or knows[(m.order, o.order)]] for m in members
    }
    return members, Snapshot(members, views)


@PROPS
@given(case=partial_views(), planned=st.sets(st.integers(0, 11)))
def test_after_the_meetings_every_member_knows_every_other_and_every_owner_was_met_by_who_lacked_it(
    case: tuple[list[Member], Snapshot], planned: set[int]
) -> None:
    members, snap = case
    owners = {m.node_id for m in members if m.slots} | {members[i].node_id for i in planned if i < len(members)}
    known = {m.node_id: {ln.node_id for ln in snap.views[m.node_id]} for m in members}
    met: set[tuple[str, str]] = set()
    for sender, receivers in rules.meetings(snap, owners):
        for r in receivers:
            met.add((sender.node_id, r.node_id))
    for a, b in met:  # a MEET introduces both sides
        known[a].add(b)
        known[b].add(a)
    ids = {m.node_id for m in members}
    assert all(known[i] == ids for i in ids)
    for m in members:
        for o in owners:
            if o != m.node_id and o not in {ln.node_id for ln in snap.views[m.node_id]}:
                assert (m.node_id, o) in met, "an owner must be met by the node that lacks it (it pings back)"


def test_a_meshed_cluster_needs_no_meeting_and_a_moved_node_is_met_at_its_new_address() -> None:
    members = three_by_one()
    assert rules.meetings(agreed(members)) == []
    assert rules.meshed(agreed(members)) == []
    snap = agreed(members)
    snap.views[members[0].node_id][1] = line_of(members[1], address="10.9.9.9:6379")
    assert [(s.node_id, [r.node_id for r in rs]) for s, rs in rules.meetings(snap)] == [
        (members[0].node_id, [members[1].node_id])
    ]
    assert rules.meshed(snap) == [f"pod-0 does not see pod-1 at {members[1].address}"]


def test_announcements_go_from_each_owner_to_the_views_that_are_behind_only() -> None:
    members = three_by_one()
    assert rules.announcements(agreed(members)) == {}
    snap = agreed(members)
    behind = members[4].node_id
    snap.views[behind][0] = line_of(replace(members[0], slots=frozenset()))
    assert {k: [m.node_id for m in v] for k, v in rules.announcements(snap).items()} == {members[0].node_id: [behind]}


def test_a_replica_tells_the_views_that_miss_its_role_in_small_clusters_only() -> None:
    members = three_by_one()
    snap = agreed(members)
    replica, behind = members[3], members[1].node_id
    snap.views[behind][3] = line_of(replace(replica, is_master=True, master_id=None))
    assert {k: [m.node_id for m in v] for k, v in rules.announcements(snap).items()} == {replica.node_id: [behind]}
    big = [member(i, frozenset({i}) if i < 16 else frozenset()) for i in range(rules.ROLE_ANNOUNCE_MAX_NODES)] + [
        member(rules.ROLE_ANNOUNCE_MAX_NODES, master_id="id000")
    ]
    snap = agreed(big)
    snap.views[big[1].node_id][-1] = line_of(replace(big[-1], is_master=True, master_id=None))
    assert rules.announcements(snap) == {}


def test_only_a_slotless_new_master_and_its_slotless_replica_swap_roles() -> None:
    members = [*three_by_one(), member(6), member(7)]
    snap = agreed(members)
    new, spare, owner = members[6].node_id, members[7].node_id, members[0].node_id
    assert rules.role_swaps(snap, [new], [(spare, new)]) == [(new, spare)]
    assert rules.role_swaps(snap, [owner], [(spare, owner)]) == [], "a master with slots is never swapped"
    assert rules.role_swaps(snap, [], [(spare, new)]) == [], "a node not receiving slots gains nothing"
    holding = agreed([*members[:6], members[6], replace(members[7], slots=frozenset({5}))])
    assert rules.role_swaps(holding, [new], [(spare, new)]) == [], "a replica-to-be that owns a slot is not"
    second = member(8)
    two = agreed([*members, second])
    assert rules.role_swaps(two, [new], [(spare, new), (second.node_id, new)]) == [(new, spare)], (
        "two replicas of one new master: one swap, or the two would race for its role"
    )


def test_a_fresh_formation_swaps_each_keyless_master_with_its_first_keyless_replica() -> None:
    members = three_by_one()
    masters = [m for m in members if m.slots]
    assert rules.formation_swaps(agreed(members)) == [
        (m.node_id, r.node_id) for m in masters for r in members if r.master_id == m.node_id
    ]
    second = member(6, master_id=masters[0].node_id)
    assert [pair for pair in rules.formation_swaps(agreed([*members, second])) if pair[0] == masters[0].node_id] == [
        (masters[0].node_id, next(r.node_id for r in members if r.master_id == masters[0].node_id))
    ], "one replica per master, the first by order: two swaps of one master would race for its role"
    with_keys = [replace(m, keys=1) if m is masters[1] else m for m in members]
    assert masters[1].node_id not in dict(rules.formation_swaps(agreed(with_keys))), (
        "a master holding keys keeps its role"
    )
    replica_keys = [replace(m, keys=1) if m.master_id == masters[2].node_id else m for m in members]
    assert masters[2].node_id not in dict(rules.formation_swaps(agreed(replica_keys)))
    ranges = [range(i * 1365, (i + 1) * 1365) for i in range(11)]
    big = [member(i, ranges[i]) for i in range(11)]
    big += [member(11 + i, master_id=big[i].node_id) for i in range(11)]
    assert len(big) > rules.ROLE_ANNOUNCE_MAX_NODES
    assert rules.formation_swaps(agreed(big)) == [], "above the announcement limit roles spread by gossip only"


def test_failover_mode_follows_what_redis_will_elect() -> None:
    members = three_by_one()
    snap = agreed(members)
    assert rules.failover_mode(snap, members[3]) == ()
    gone_with_slots = replace(snap, members=members[1:], ghosts={members[0].node_id: frozenset({1})})
    assert rules.failover_mode(gone_with_slots, members[3]) == ("FORCE",)
    gone_without = replace(snap, members=members[1:], ghosts={members[0].node_id: frozenset()})
    assert rules.failover_mode(gone_without, members[3]) == ("TAKEOVER",)


def gone(snap: Snapshot, *masters: Member, heirs_too: bool = False) -> Snapshot:
    """``snap`` with these masters (and, with ``heirs_too``, their replicas) gone: failed in every view."""
    ids = {m.node_id for m in masters}
    lost = [m for m in snap.members if m.node_id in ids or (heirs_too and m.master_id in ids)]
    members = [m for m in snap.members if m not in lost]
    views = {
        m.node_id: [
            replace(ln, flags=ln.flags | {"fail"}) if ln.node_id in {x.node_id for x in lost} else ln
            for ln in snap.views[m.node_id]
        ]
        for m in members
    }
    ghosts, strangers = rules.unserved(members, views)
    return Snapshot(members=members, views=views, ghosts=ghosts, strangers=strangers)


def test_a_lost_majority_is_promoted_by_takeover_and_named() -> None:
    members = three_by_one()
    one_gone = gone(agreed(members), members[0])
    assert rules.quorum(one_gone) == (2, 3) and not rules.quorum_lost(one_gone)
    assert rules.failover_mode(one_gone, members[3]) == ("FORCE",)
    two_gone = gone(agreed(members), members[0], members[1])
    assert rules.quorum(two_gone) == (1, 3) and rules.quorum_lost(two_gone)
    assert rules.failover_mode(two_gone, members[3]) == ("TAKEOVER",)
    report = rules.loss_report(two_gone)
    assert report == [
        f"2 of 3 masters are gone: no failover can be elected; {10922} slots unserved; `apply` promotes their replicas"
    ]
    assert rules.lost_slots(two_gone) == frozenset(), "their replicas hold copies"


def test_a_shard_gone_with_its_replicas_is_lost_with_an_estimate_of_its_keys() -> None:
    members = [replace(m, keys=2 * len(m.slots)) for m in three_by_one()]
    snap = gone(agreed(members), members[1], heirs_too=True)
    assert rules.lost_slots(snap) == frozenset(range(5461, 10922))
    assert rules.estimated_keys(snap, range(5461, 10922)) == 5461 * 2
    report = rules.loss_report(snap)
    assert len(report) == 1, "one master of three gone: the quorum holds"
    assert report[0].startswith("slots 5461-10921 (5461 slots, about 10,922 keys by the live masters' keys per slot)")
    assert "id001 (10.0.0.1:6379)" in report[0] and "--accept-lost-slots 5461-10921" in report[0]
    assert any("5461-10921" in p for p in rules.health(snap, ok_infos(snap.members)).problems)


def claimed_twice(stale_epoch: int, current_epoch: int) -> tuple[Snapshot, Member, Member]:
    """pod-0 came back claiming 0-5460, which pod-6 took over; the others see pod-6 as their owner."""
    members = three_by_one()
    returned = members[0]
    taker = member(6, range(0, 5461))
    others = [m for m in members if m is not returned]
    everyone = [*members, taker]

    def epoch(m: Member) -> int:
        return {returned.node_id: stale_epoch, taker.node_id: current_epoch}.get(m.node_id, 1)

    views = {
        m.node_id: [replace(line_of(o, myself=o is m), config_epoch=epoch(o)) for o in [*others, taker]]
        for m in [*others, taker]
    }
    views[returned.node_id] = [replace(line_of(o, myself=o is returned), config_epoch=epoch(o)) for o in members]
    ghosts, strangers = rules.unserved(everyone, views)
    return Snapshot(members=everyone, views=views, ghosts=ghosts, strangers=strangers), returned, taker


def test_a_node_back_with_reassigned_slots_is_folded_in_when_outranked_and_refused_when_not() -> None:
    snap, returned, taker = claimed_twice(stale_epoch=3, current_epoch=7)
    [claim] = rules.double_claims(snap)
    assert (claim.stale, claim.current, claim.safe_to_fold) == (returned, taker, True)
    assert claim.slots == frozenset(range(0, 5461))
    assert rules.unsafe(snap) == [], "outranked: folded in, not refused"
    assert any("came back claiming slots 0-5460" in p for p in rules.health(snap, ok_infos(snap.members)).problems)

    snap, returned, taker = claimed_twice(stale_epoch=9, current_epoch=7)
    [claim] = rules.double_claims(snap)
    assert claim.stale == returned, "the cluster's view decides who is current, not the epoch"
    assert not claim.safe_to_fold
    [problem] = rules.unsafe(snap)
    assert "config epoch 9" in problem and "epoch 7" in problem and "Refusing" in problem
    met = {(sender.node_id, r.node_id) for sender, receivers in rules.meetings(snap) for r in receivers}
    assert (taker.node_id, returned.node_id) not in met and (returned.node_id, taker.node_id) not in met


# --- open slots -----------------------------------------------------------------


def with_marks(snap: Snapshot, marks: dict[str, tuple[dict[int, str], dict[int, str]]]) -> Snapshot:
    """Set (migrating, importing) on the named members' own lines."""
    for node_id, (out, into) in marks.items():
        lines = snap.views[node_id]
        i = next(k for k, ln in enumerate(lines) if ln.is_myself)
        lines[i] = replace(lines[i], migrating=out, importing=into)
    return snap


def test_a_plain_half_done_move_is_finished_from_source_to_target() -> None:
    members = [*three_by_one(), member(6)]
    src, dst = members[0], members[6]
    snap = with_marks(agreed(members), {src.node_id: ({7: dst.node_id}, {}), dst.node_id: ({}, {7: src.node_id})})
    repair = rules.pair_open_slots(snap)
    assert repair.finish == {(src.node_id, dst.node_id): [7]}
    assert not (repair.stale or repair.promote or repair.close or repair.probe or repair.waiting)


def test_a_source_replaced_by_its_replica_is_paired_by_the_current_owner_and_the_target_told() -> None:
    members = [*three_by_one(), member(6)]
    old_src, heir, dst = members[0], members[3], members[6]
    heir = replace(heir, is_master=True, master_id=None, slots=old_src.slots)
    alive = [heir if m is members[3] else m for m in members if m is not old_src]
    snap = with_marks(agreed(alive), {dst.node_id: ({}, {7: old_src.node_id})})
    repair = rules.pair_open_slots(snap)
    assert repair.finish == {(heir.node_id, dst.node_id): [7]}
    assert repair.stale == {7: heir.node_id}


def test_a_gone_target_hands_over_to_its_replica_which_is_promoted_first() -> None:
    members = three_by_one()
    src = members[0]
    target, target_replica = member(6), member(7, master_id="id006")
    alive = [*members, target_replica]
    snap = with_marks(agreed(alive, [line_of(target, flags=("fail",))]), {src.node_id: ({7: target.node_id}, {})})
    repair = rules.pair_open_slots(snap)
    assert repair.promote == {target_replica.node_id}
    assert repair.finish == {(src.node_id, target_replica.node_id): [7]}


def test_a_gone_target_without_replica_is_asked_of_the_nodes_and_a_gone_owner_waits() -> None:
    members = three_by_one()
    src, target = members[0], member(6)
    snap = with_marks(agreed(members, [line_of(target, flags=("fail",))]), {src.node_id: ({7: target.node_id}, {})})
    assert rules.pair_open_slots(snap).probe == {7: src.node_id}
    owner_gone = [m for m in members if m is not members[1]]
    snap = with_marks(
        agreed(owner_gone, [line_of(members[1], flags=("fail",))]), {members[2].node_id: ({}, {5500: "id001"})}
    )
    assert rules.pair_open_slots(snap).waiting == [5500]


def test_marks_on_replicas_are_not_moves() -> None:
    members = three_by_one()
    snap = with_marks(agreed(members), {members[3].node_id: ({}, {7: members[1].node_id})})
    assert rules.pair_open_slots(snap).slots == []


@PROPS
@given(pairs=st.sets(st.tuples(st.integers(0, 5), st.integers(0, 5)).filter(lambda p: p[0] != p[1]), max_size=20))
def test_no_batch_moves_between_two_masters_in_both_directions(pairs: set[tuple[int, int]]) -> None:
    named = [(f"m{a}", f"m{b}") for a, b in sorted(pairs)]
    batches = rules.one_direction_at_a_time(named)
    assert sorted(p for batch in batches for p in batch) == sorted(named), "every pair runs exactly once"
    for batch in batches:
        assert not any(p[::-1] in batch for p in batch)


# --- the verdict ------------------------------------------------------------------


def test_health_is_clean_for_an_agreed_cluster_and_names_what_is_off() -> None:
    members = three_by_one()
    assert rules.health(agreed(members), ok_infos(members), 1, 3).ok
    snap = agreed(members)
    snap.views[members[5].node_id][0] = line_of(replace(members[0], slots=frozenset(range(0, 100))))
    problems = rules.health(snap, ok_infos(members), 1, 3).problems
    assert "pod-5 disagrees with pod-0 about slot owners" in problems
    assert any("sees 11023 of 16384 slots assigned" in p for p in problems)
    down = {**ok_infos(members), members[3].node_id: "cluster_state:ok\nmaster_link_status:down"}
    assert "replica pod-3 has no live replication link to its master" in rules.health(agreed(members), down).problems
    assert "master pod-0 has 1 replica(s), 2 declared" in rules.health(agreed(members), ok_infos(members), 2).problems


# --- rolling restarts ---------------------------------------------------------------


def test_a_roll_takes_down_pods_first_then_replicas_then_masters_after_a_handover() -> None:
    members = three_by_one()
    snap = agreed(members)
    names = {m.name for m in members}
    replicas = {m.node_id for m in members if m.master_id}
    by_name = {m.name: m for m in members}

    assert rules.next_restart(snap, set(), replicas, 1) is None
    down = members[0].name
    first = rules.next_restart(snap, names, replicas, 1, down={down})
    assert first == rules.Restart(down), "a stale pod that does not answer serves nothing: it goes first"
    step = rules.next_restart(snap, names, replicas, 1)
    assert isinstance(step, rules.Restart) and by_name[step.name].master_id, "replicas before any master"
    masters_only = {m.name for m in members if not m.master_id}
    step = rules.next_restart(snap, masters_only, replicas, 1)
    assert isinstance(step, rules.Restart)
    master = by_name[step.name]
    assert step.heir is not None and snap.by_id[step.heir].master_id == master.node_id, "its own replica takes over"


@given(st.sets(st.integers(0, 5), min_size=1), st.sets(st.integers(0, 5)))
@PROPS
def test_a_master_restarts_only_through_a_caught_up_replica(stale_ordinals: set[int], caught: set[int]) -> None:
    members = three_by_one()
    snap = agreed(members)
    stale = {f"pod-{i}" for i in stale_ordinals}
    caught_up = {members[i].node_id for i in caught if members[i].master_id}
    step = rules.next_restart(snap, stale, caught_up, 1)
    assert step is not None
    if isinstance(step, rules.Hold):
        assert all(not m.master_id for m in members if m.name in stale), "a stale replica could have gone"
        assert step.reason.startswith("master pod-"), step.reason
        return
    m = next(x for x in members if x.name == step.name)
    assert m.name in stale
    if not m.master_id:
        assert all(not x.master_id for x in members if x.name in stale), "a master went before a stale replica"
        assert step.heir in caught_up and snap.by_id[step.heir].master_id == m.node_id


def test_a_master_prefers_a_rolled_replica_and_a_shard_without_replicas_restarts_with_a_warning() -> None:
    master = member(0, range(0, SLOTS))
    old, new = member(1, master_id=master.node_id), member(2, master_id=master.node_id)
    snap = agreed([master, old, new])
    step = rules.next_restart(snap, {master.name, old.name}, {old.node_id, new.node_id}, 2)
    assert step == rules.Restart(old.name), "the stale replica goes first"
    step = rules.next_restart(snap, {master.name}, {old.node_id, new.node_id}, 2)
    assert isinstance(step, rules.Restart) and step.heir == old.node_id  # both rolled: by ordinal
    step = rules.next_restart(snap, {master.name, new.name}, {old.node_id}, 2)
    assert step == rules.Restart(new.name)

    alone = agreed([member(0, range(0, SLOTS))])
    step = rules.next_restart(alone, {"pod-0"}, set(), 0)
    assert isinstance(step, rules.Restart) and step.heir is None and "0 declared" in step.warning
    held = rules.next_restart(alone, {"pod-0"}, set(), 1)
    assert isinstance(held, rules.Hold) and "pod-0" in held.reason and "1 declared" in held.reason
