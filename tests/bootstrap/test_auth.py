"""Auth against real redis-server: the bootstrap with a password, and a live rotation under traffic."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from bootstrap.provider import apply, observe
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import Writer, cluster_client

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
OLD, NEW = "old-secret-Zk3", "new-secret-Qw9"


def props(nodes: list[RedisNode], phase: str, password: str | None) -> dict[str, Any]:
    return {
        "masters": 3,
        "replicasPerMaster": 1,
        "phase": phase,
        "discovery": {"kind": "static", "endpoints": [n.address for n in nodes]},
        "timeoutSeconds": 120,
        "password": password,
    }


@pytest.fixture
def secured(redis_farm: RedisFarm) -> list[RedisNode]:
    nodes = redis_farm.spawn(6, hosts=HOSTS, password=OLD)
    outs = apply(props(nodes, "converge", OLD))
    assert outs["clusterState"] == "ok"
    return nodes


def test_the_bootstrap_forms_a_password_protected_cluster_and_a_client_without_it_is_refused(
    secured: list[RedisNode],
) -> None:
    with pytest.raises(redis.AuthenticationError):
        secured[0].client(password=None).get("k")
    rc = cluster_client(secured, OLD)
    rc.set("k", "v")
    assert rc.get("k") == "v"
    rc.close()
    # Replication authenticates too: every replica's link is up (observe checks master_link_status).
    assert observe(props(secured, "converge", OLD))["problems"] == []


def test_the_password_is_in_no_output(secured: list[RedisNode]) -> None:
    outs = apply(props(secured, "converge", OLD))
    text = repr({k: v for k, v in outs.items() if k != "password"})
    assert OLD not in text


def reads_back(client: RedisCluster, i: int) -> str | None:
    return None if client.get(f"w:{i}") == str(i) else f"w:{i} read back wrong"


def test_rotation_is_live_and_keeps_a_concurrent_client_working(secured: list[RedisNode]) -> None:
    writer = Writer(lambda: cluster_client(secured, OLD), "w:", check=reads_back, limit_s=120)
    with writer:
        time.sleep(0.5)
        before = writer.written
        # Phase 1 (the drain resource, before the Secret changes): both passwords work.
        apply(props(secured, "drain", NEW), previous=props(secured, "drain", OLD))
        assert secured[0].client(password=OLD).ping() and secured[0].client(password=NEW).ping()
        time.sleep(0.5)
        writer.login(lambda: cluster_client(secured, NEW))  # the application picks up the new Secret whenever it likes
        time.sleep(0.5)
        # Phase 2 (the bootstrap resource, after the StatefulSet): the old password is gone.
        outs = apply(props(secured, "converge", NEW), previous=props(secured, "converge", OLD))
        assert outs["clusterState"] == "ok"
        time.sleep(0.5)
    assert writer.errors == {} and writer.wrong == [], (writer.samples, writer.wrong[:5])
    assert writer.written > before + 10
    for node in secured:
        with pytest.raises(redis.AuthenticationError):
            node.client(password=OLD).ping()
        assert node.client(password=NEW).ping()
    # Replicas re-authenticated with the new masterauth: a forced resync still works.
    replica = next(n for n in secured if n.client(password=NEW).info("replication")["role"] == "slave")
    replica.client(password=NEW).execute_command("CLIENT", "KILL", "TYPE", "master")
    deadline = time.monotonic() + 20
    while replica.client(password=NEW).info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica could not re-authenticate to its master"
        time.sleep(0.1)


def test_with_the_programs_acl_the_bootstrap_works_as_operator_and_clients_cannot_flush(
    redis_farm: RedisFarm, tmp_path: Any
) -> None:
    """The guard rails of components/redis_config.py (default user without CONFIG/ACL/FLUSHALL)
    leave the bootstrap everything it needs through the `operator` user, rotation included."""
    from components.redis_config import OPERATOR_USER, users_acl
    from components.settings import validate

    operator = "op-secret-Lm2"
    rules = users_acl(validate({}))
    nodes: list[RedisNode] = []
    for i in range(6):
        acl = tmp_path / f"users-{i}.acl"
        acl.write_text(
            "".join(
                f"{line} >{OLD if line.startswith('user default') else operator}\n"
                for line in rules.splitlines()
                if line.startswith(("user default", f"user {OPERATOR_USER}"))
            )
        )
        nodes += redis_farm.spawn(1, hosts=[HOSTS[i % 3]], extra={"aclfile": str(acl), "masterauth": OLD})
    base = {**props(nodes, "converge", OLD), "operatorPassword": operator}
    assert apply(base)["clusterState"] == "ok"
    client = nodes[0].client(password=OLD)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command("FLUSHALL")
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command("CONFIG", "SET", "maxmemory", "1")
    drain_new = {**props(nodes, "drain", NEW), "operatorPassword": operator}
    apply(drain_new, previous={**props(nodes, "drain", OLD), "operatorPassword": operator})
    outs = apply({**base, "password": NEW}, previous=base)
    assert outs["clusterState"] == "ok"
    for node in nodes:
        with pytest.raises(redis.AuthenticationError):
            node.client(password=OLD).ping()
        assert node.client(password=NEW).ping()


def test_a_stack_from_before_the_operator_user_falls_back_to_the_default_login(secured: list[RedisNode]) -> None:
    """Pods that have not rolled since `operator` was added know no such user: the first
    converge after the upgrade must still work, with the default user's password."""
    outs = apply({**props(secured, "converge", OLD), "operatorPassword": "not-there-yet"})
    assert outs["clusterState"] == "ok"
