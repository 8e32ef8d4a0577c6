"""The props contract: what the resources write is what the provider reads, and existing state still reads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulumi.runtime import rpc

from bootstrap.errors import PropsError
from bootstrap.props import Announce, Discovery, PodDiscovery, Props, StaticDiscovery

NAMES = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
ENDPOINTS = st.lists(
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["127.0.0.1", "10.0.0.7", "[fd00::1]"]), st.integers(1, 65535)),
    min_size=1,
    max_size=12,
).map(tuple)
SECRET = st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)

discoveries: st.SearchStrategy[Discovery] = st.builds(StaticDiscovery, ENDPOINTS) | st.builds(
    PodDiscovery,
    namespace=NAMES,
    stateful_set=NAMES,
    connection=st.sampled_from(["port-forward", "direct"]),
    context=st.none() | NAMES,
    announce=st.none()
    | st.builds(Announce, st.sampled_from(["", "203.0.113.7", "fd00::9"]), st.integers(30000, 32767)),
)
props_strategy: st.SearchStrategy[Props[str]] = st.builds(
    Props,
    masters=st.integers(1, 1000),
    replicas_per_master=st.integers(0, 10),
    discovery=discoveries,
    timeout_seconds=st.integers(1, 86400),
    password=SECRET,
    operator_password=SECRET,
    phase=st.sampled_from(["converge", "drain"]),
)


def over_the_wire(props: dict[str, Any]) -> dict[str, Any]:
    """What the provider process gets: the SDK's gRPC Struct (numbers become floats), then JSON state."""
    loop = asyncio.new_event_loop()
    try:
        struct = loop.run_until_complete(rpc.serialize_properties(props, {}))
    finally:
        loop.close()
    return dict(json.loads(json.dumps(rpc.deserialize_properties(struct))))


@given(props_strategy)
def test_to_props_then_from_props_is_the_same_declaration(p: Props[str]) -> None:
    assert Props.from_props(p.to_props()) == p
    assert Props.from_props(over_the_wire(p.to_props())) == p


@given(props_strategy)
def test_outputs_echoing_the_inputs_read_back_as_the_inputs(p: Props[str]) -> None:
    outputs = {**p.to_props(), "clusterState": "ok", "masterNodes": [], "problems": [], "draining": []}
    assert Props.from_props(outputs) == p


@given(props_strategy)
def test_the_resource_id_depends_on_target_and_phase_only(p: Props[str]) -> None:
    other = dataclasses.replace(p, masters=p.masters + 1, password=None, timeout_seconds=p.timeout_seconds + 1)
    assert other.resource_id == p.resource_id
    flipped = dataclasses.replace(p, phase="drain" if p.phase == "converge" else "converge")
    assert flipped.resource_id != p.resource_id


# What bootstrap/resource.py wrote before this module existed (the shape in existing stacks' state),
# with the outputs the provider stored next to them.
TODAY_PODS: dict[str, Any] = {
    "masters": 3.0,
    "replicasPerMaster": 2.0,
    "phase": "converge",
    "discovery": {
        "kind": "kubernetes",
        "namespace": "redis",
        "statefulSet": "redis-cluster",
        "connection": "port-forward",
        "announce": {"host": "", "basePort": 31000.0},
    },
    "timeoutSeconds": 900.0,
    "password": "Client-Pa55word",
    "operatorPassword": "Operator-Pa55word",
    "clusterState": "ok",
    "masterNodes": [{"address": "10.1.0.5:6379", "slots": "0-5460", "replicas": ["10.1.0.6:6379"]}],
    "replicaOf": {"10.1.0.6:6379": "10.1.0.5:6379"},
    "nodeIds": {"10.1.0.5:6379": "a" * 40},
    "announcedAddresses": ["192.168.1.10:31000"],
    "problems": [],
}
# A drain over fixed endpoints from before the operator user existed: no operatorPassword, no password.
TODAY_STATIC_DRAIN: dict[str, Any] = {
    "masters": 3,
    "replicasPerMaster": 0,
    "phase": "drain",
    "discovery": {"kind": "static", "endpoints": ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]},
    "timeoutSeconds": 600,
    "password": None,
    "clusterState": "unchanged",
    "draining": [],
}


def test_state_written_by_the_previous_resource_code_is_read() -> None:
    pods = Props.from_props(TODAY_PODS)
    assert pods == Props(
        masters=3,
        replicas_per_master=2,
        discovery=PodDiscovery("redis", "redis-cluster", "port-forward", None, Announce("", 31000)),
        timeout_seconds=900,
        password="Client-Pa55word",
        operator_password="Operator-Pa55word",
        phase="converge",
    )
    assert pods.shape.nodes == 9
    assert pods.resource_id == "redis/redis-cluster/converge"
    assert isinstance(pods.discovery, PodDiscovery) and pods.discovery.announce is not None
    assert pods.discovery.announce.address(4, "192.168.1.10") == "192.168.1.10:31004"
    drain = Props.from_props(TODAY_STATIC_DRAIN)
    assert drain == Props(3, 0, StaticDiscovery(("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")), phase="drain")
    assert drain.resource_id.startswith("static-") and drain.resource_id.endswith("/drain")


def test_what_the_resources_write_is_what_they_wrote_before() -> None:
    """Same keys and values as the previous code wrote, so an existing stack sees no diff after upgrading."""
    inputs = {k: v for k, v in TODAY_PODS.items() if k not in ("clusterState", "masterNodes", "replicaOf")}
    inputs = {k: v for k, v in inputs.items() if k not in ("nodeIds", "announcedAddresses", "problems")}
    written = Props.from_props(TODAY_PODS).to_props()
    assert written == inputs  # 3 == 3.0: the floats came from the wire
    assert Props(3, 0, StaticDiscovery(("127.0.0.1:7001",)), phase="drain").to_props() == {
        "masters": 3,
        "replicasPerMaster": 0,
        "phase": "drain",
        "discovery": {"kind": "static", "endpoints": ["127.0.0.1:7001"]},
        "timeoutSeconds": 600,
        "password": None,
        "operatorPassword": None,
    }


def test_a_pod_template_digest_is_written_and_read_back_and_its_change_is_a_change() -> None:
    """The first `pulumi up` after upgrading shows the bootstrap as an update (the drain then switches the
    StatefulSet to OnDelete); state without the key reads as no template."""
    before = Props.from_props(TODAY_PODS)
    assert before.pod_template == ""
    after = dataclasses.replace(before, pod_template="0123456789abcdef")
    assert after.to_props()["podTemplate"] == "0123456789abcdef"
    assert Props.from_props(after.to_props()) == after
    assert after != before


def test_an_announce_with_a_fixed_host_names_it_for_every_pod() -> None:
    announce = Announce("203.0.113.7", 31000)
    assert [announce.address(i, f"10.0.0.{i}") for i in range(3)] == [
        "203.0.113.7:31000",
        "203.0.113.7:31001",
        "203.0.113.7:31002",
    ]


BROKEN: list[tuple[dict[str, Any], str]] = [
    ({**TODAY_STATIC_DRAIN, "discovery": {"kind": "consul"}}, "discovery.kind is 'consul'"),
    ({**TODAY_STATIC_DRAIN, "phase": "shrink"}, "phase is 'shrink'"),
    ({**TODAY_PODS, "discovery": {**TODAY_PODS["discovery"], "connection": "ssh"}}, "discovery.connection is 'ssh'"),
    ({k: v for k, v in TODAY_STATIC_DRAIN.items() if k != "masters"}, "KeyError: 'masters'"),
    ({**TODAY_STATIC_DRAIN, "masters": "three"}, "ValueError"),
]


@pytest.mark.parametrize(("props", "message"), BROKEN, ids=[m for _p, m in BROKEN])
def test_unreadable_props_are_named(props: dict[str, Any], message: str) -> None:
    with pytest.raises(PropsError, match=message.replace("(", r"\(")):
        Props.from_props(props)
