"""The pod's lifecycle scripts against real redis-server: the preStop handover and readiness.

handover.sh runs under every POSIX shell available (dash, busybox sh), logged in
as the operator, while a cluster client keeps writing: a master hands its slots
to its replica with no acknowledged write lost. The readiness probe keeps a
replica that is still copying its master's data, and an empty node beside a
formed cluster, not Ready, and lets the replica go once its master has been
gone for the hold time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.converge import converge
from bootstrap.endpoints import DirectConnector, static_inventory
from bootstrap.model import Shape
from components import nodes, redis_config
from components.settings import validate
from tests.bootstrap.helpers import HOSTS, myself, table
from tests.components.test_start_script import SHELLS
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import Writer, cluster_client, wait_until

PASSWORD = "client-password-for-tests"
OPERATOR_PASSWORD = "operator-password-for-tests"
OPERATOR_ACL = f"operator on >{OPERATOR_PASSWORD} ~* &* +@all"


def secured_cluster(redis_farm: RedisFarm, masters: int, replicas: int) -> list[RedisNode]:
    """A cluster with auth as the pods have it (default and operator users), formed as the operator."""
    cluster = redis_farm.spawn(masters * (1 + replicas), hosts=HOSTS, password=PASSWORD, extra={"user": OPERATOR_ACL})
    connector = DirectConnector(OPERATOR_PASSWORD, "operator")
    try:
        inventory = static_inventory([n.address for n in cluster])
        converge(inventory, connector, Shape(masters, replicas), 120, lambda m: None)
    finally:
        connector.close()
    return cluster


@pytest.fixture
def secured(redis_farm: RedisFarm, tmp_path: Path) -> Iterator[tuple[list[RedisNode], Path]]:
    """A 3x1 secured cluster and the Secret's files."""
    cluster = secured_cluster(redis_farm, 3, 1)
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / redis_config.PASSWORD_KEY).write_text(PASSWORD)
    (auth / redis_config.OPERATOR_PASSWORD_KEY).write_text(OPERATOR_PASSWORD)
    yield cluster, auth


def handover(node: RedisNode, auth: Path, shell: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_HOST": node.host,
        "REDIS_PORT": str(node.port),
        "REDIS_AUTH_DIR": str(auth),
        "REDIS_HANDOVER_TIMEOUT": "30",
    }
    return subprocess.run(
        [*shell, str(redis_config.HANDOVER_PATH)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def writer(cluster: list[RedisNode]) -> Writer:
    return Writer(lambda: cluster_client(cluster, PASSWORD, timeout=5), "w:", limit_s=120)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_master_hands_its_slots_to_its_replica_and_no_acknowledged_write_is_lost(
    secured: tuple[list[RedisNode], Path], shell: list[str]
) -> None:
    cluster, auth = secured
    master = next(n for n in cluster if myself(n).slots)
    master_id = myself(master).node_id
    replica = next(n for n in cluster if myself(n).master_id == master_id)
    with writer(cluster) as w:
        time.sleep(1.0)
        started = time.monotonic()
        out = handover(master, auth, shell)
        took = time.monotonic() - started
        time.sleep(1.0)
    assert out.returncode == 0, out.stderr
    assert f"handed over to {replica.host}:{replica.port}" in out.stderr, out.stderr
    assert took < 15, f"the handover took {took:.1f}s"
    assert myself(replica).is_master and myself(replica).slots, "the replica owns the slots now"
    assert myself(master).master_id == myself(replica).node_id, "the old master follows it"
    assert len(w.acked) > 100
    assert w.lost() == [], "an acknowledged write was lost"
    # By exception type: redis-py's ClusterDownError says "The cluster is down", without the word CLUSTERDOWN.
    assert not {"ClusterDownError", "ConnectionError"} & set(w.errors), w.samples
    assert PASSWORD not in out.stderr + out.stdout and OPERATOR_PASSWORD not in out.stderr + out.stdout


def test_behind_nat_the_heir_is_found_at_its_announced_address(redis_farm: RedisFarm, tmp_path: Path) -> None:
    """Each replica's connections leave from another address (127.0.0.9, as behind kube-proxy SNAT or a
    masquerading CNI); it announces its own. INFO replication's ip= is then 127.0.0.9, where nobody listens:
    the hook used to dial it, find no replica and stop as master (slots down for the node timeout)."""
    masters = redis_farm.spawn(3, hosts=HOSTS, password=PASSWORD, extra={"user": OPERATOR_ACL})
    replicas = [
        redis_farm.spawn(
            1,
            hosts=[host],
            password=PASSWORD,
            extra={"user": OPERATOR_ACL, "bind-source-addr": "127.0.0.9", "cluster-announce-ip": host},
        )[0]
        for host in HOSTS[1:] + HOSTS[:1]
    ]
    cluster = [*masters, *replicas]
    with contextlib.closing(DirectConnector(OPERATOR_PASSWORD, "operator")) as connector:
        converge(static_inventory([n.address for n in cluster]), connector, Shape(3, 1), 120, lambda m: None)
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / redis_config.OPERATOR_PASSWORD_KEY).write_text(OPERATOR_PASSWORD)
    master = next(n for n in cluster if myself(n).slots)
    replica = next(n for n in cluster if myself(n).master_id == myself(master).node_id)
    assert master.client().info("replication")["slave0"]["ip"] == "127.0.0.9", "the precondition: NAT"

    with writer(cluster) as w:
        time.sleep(1.0)
        out = handover(master, auth, ["sh"])
        time.sleep(1.0)

    assert out.returncode == 0, out.stderr
    assert f"handed over to {replica.host}:{replica.port}" in out.stderr, out.stderr
    assert myself(replica).is_master and myself(replica).slots
    assert w.lost() == [], "an acknowledged write was lost"
    assert not {"ClusterDownError", "ConnectionError"} & set(w.errors), w.samples


def test_a_replica_and_a_master_without_replica_stop_as_they_are(
    secured: tuple[list[RedisNode], Path], redis_farm: RedisFarm
) -> None:
    cluster, auth = secured
    replica = next(n for n in cluster if myself(n).master_id)
    out = handover(replica, auth, ["sh"])
    assert out.returncode == 0 and "not a master (slave)" in out.stderr, out.stderr
    assert myself(replica).master_id, "still a replica"
    lone = secured_cluster(redis_farm, 3, 0)
    started = time.monotonic()
    out = handover(lone[0], auth, ["sh"])
    assert out.returncode == 0 and "no replica with a live link" in out.stderr, out.stderr
    assert myself(lone[0]).is_master and time.monotonic() - started < 5


def ready(
    node: RedisNode, auth: Path, hold: int = 60, peers: list[RedisNode] | None = None, pod: str = "redis-cluster-0"
) -> int:
    """Run the StatefulSet's readiness command against ``node``, as the kubelet would in its pod ``pod``;
    ``peers`` stand in for the headless Service's other pods (none: a lone node asks nobody)."""
    command = nodes.readiness_command(validate({}))
    script = command[-1].replace("-p 6379", f"-p {node.port}").replace("-h 127.0.0.1", f"-h {node.host}")
    script = script.replace(redis_config.AUTH_DIR, str(auth))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_READY_HOLD_SECONDS": str(hold),
        "REDIS_PEERS": " ".join(p.address for p in peers or []),
        "REDIS_PEER_SERVICE": "no-such-service.invalid",
        "POD_NAME": pod,
    }
    return subprocess.run([*command[:-1], script], env=env, capture_output=True, timeout=15, check=False).returncode


def test_readiness_holds_an_outsider_and_a_syncing_replica_back_and_lets_go_when_its_master_is_gone(
    secured: tuple[list[RedisNode], Path], redis_farm: RedisFarm
) -> None:
    cluster, auth = secured
    master = next(n for n in cluster if myself(n).slots)
    replica = next(n for n in cluster if myself(n).master_id == myself(master).node_id)
    assert ready(master, auth) == 0 and ready(replica, auth) == 0, "a master and a synced replica are Ready"
    # A first sync held back by the master for 4 s (a diskless sync waits for more replicas first).
    master.client().config_set("repl-diskless-sync-delay", "4")
    newcomer = redis_farm.spawn(1, hosts=[master.host], password=PASSWORD, extra={"user": OPERATOR_ACL})[0]
    # An empty node alone beside a formed cluster (a pod back on a lost volume) is no member: not Ready. Empty
    # nodes beside empty nodes (formation) are, or the bootstrap that forms them would wait for itself.
    assert ready(newcomer, auth, peers=[master, replica]) == 1, "an empty node beside a formed cluster"
    # ... unless its ordinal is beyond every node the cluster knows: a pod of a scale-out, which the converge
    # joins after any roll; not Ready, it would hold the PodDisruptionBudget and so every eviction of that roll.
    assert ready(newcomer, auth, peers=[master, replica], pod="redis-cluster-6") == 0, "a pod of a scale-out"
    assert ready(newcomer, auth) == 0, "an empty node beside nobody"
    others = redis_farm.spawn(2, hosts=[master.host], password=PASSWORD)
    assert ready(others[0], auth, peers=[others[1]]) == 0, "empty nodes beside empty nodes (formation)"
    newcomer.client().execute_command("CLUSTER", "MEET", master.host, master.port)
    wait_until("the meet", lambda: myself(newcomer).node_id in {ln.node_id for ln in table(master)}, 20)
    newcomer.client().execute_command("CLUSTER", "REPLICATE", myself(master).node_id)
    wait_until("the newcomer to replicate", lambda: newcomer.client().info("replication")["role"] == "slave", 10)
    assert newcomer.client().info("replication")["master_link_status"] == "down", "held by the sync delay"
    assert ready(newcomer, auth) == 1, "a replica that has not finished its first sync is not Ready"
    wait_until("the synced replica to be Ready", lambda: ready(newcomer, auth) == 0, 30)
    # Its master gone: not Ready for the hold time after the link went down, then Ready again (no deadlock).
    master.stop(hard=True)
    wait_until("down", lambda: newcomer.client().info("replication")["master_link_status"] == "down", 10)
    assert ready(newcomer, auth, hold=3) == 1
    wait_until("the hold to end", lambda: ready(newcomer, auth, hold=3) == 0, 15)


def test_without_an_election_the_hook_takes_over_with_writes_paused(
    secured: tuple[list[RedisNode], Path],
) -> None:
    """The other masters frozen (SIGSTOP), so no vote can come: the hook used to wait its whole budget and
    stop as master. It now pauses the master's writes, lets the heir take over, and unpauses once it
    follows; the writes it held then go to the new master."""
    cluster, auth = secured
    master = next(n for n in cluster if myself(n).slots)
    replica = next(n for n in cluster if myself(n).master_id == myself(master).node_id)
    voters = [n for n in cluster if myself(n).slots and n is not master]
    with writer(cluster) as w:
        time.sleep(1.0)
        for v in voters:
            assert v.proc is not None
            os.kill(v.proc.pid, signal.SIGSTOP)
        try:
            out = handover(master, auth, ["sh"])
        finally:
            for v in voters:
                assert v.proc is not None
                os.kill(v.proc.pid, signal.SIGCONT)
        time.sleep(1.0)

    assert out.returncode == 0, out.stderr
    assert f"handed over to {replica.host}:{replica.port} by TAKEOVER" in out.stderr, out.stderr
    assert myself(replica).is_master and myself(master).master_id == myself(replica).node_id
    # The masters this test froze may see the others failed for a moment once they run again.
    wait_until(
        "the cluster to be ok again after the freeze",
        lambda: all("cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in cluster),
        30,
    )
    assert w.lost() == [], "an acknowledged write was lost"
