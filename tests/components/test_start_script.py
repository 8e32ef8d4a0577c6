"""components/scripts/start-redis.sh: restore, rewrite, exec.

Pure cases run the script on hand-written nodes.conf files under every POSIX
shell available (dash, busybox sh). The cases that matter run it against real
redis-server processes from the ``redis_farm`` fixture: a 3-master cluster whose
nodes all come back on new addresses must re-form by itself with the rewrite,
and must not without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from bench import servers
from components import redis_config
from components.redis_config import SCRIPT_PATH
from tests.conftest import REDIS_SERVER, RedisFarm, RedisNode
from tests.toolkit import cluster_client

SHELLS = [
    pytest.param(["dash"], id="dash", marks=pytest.mark.skipif(not shutil.which("dash"), reason="no dash")),
    pytest.param(
        ["busybox", "sh"], id="busybox", marks=pytest.mark.skipif(not shutil.which("busybox"), reason="no busybox")
    ),
]
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

ID = [f"{c}" * 40 for c in "abcdef"]


def write_resolver(directory: Path, table: Mapping[str, str]) -> str:
    """A resolver command for REDIS_RESOLVE_CMD that knows only ``table`` (like DNS with new pod IPs)."""
    cases = "".join(f"  {host}) echo {ip} ;;\n" for host, ip in table.items())
    path = directory / "resolve.sh"
    path.write_text(f'#!/bin/sh\ncase "$1" in\n{cases}  *) exit 2 ;;\nesac\n')
    return f"sh {path}"


def run_script(
    nodes_conf: Path,
    pod_ip: str,
    table: Mapping[str, str],
    shell: list[str] | None = None,
    args: tuple[str, ...] = ("--prepare",),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_NODES_CONF": str(nodes_conf),
        "POD_IP": pod_ip,
        "REDIS_RESOLVE_CMD": write_resolver(nodes_conf.parent, table),
        **(env or {}),
    }
    return subprocess.run(
        [*(shell or ["sh"]), str(SCRIPT_PATH), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ---------------------------------------------------------------- pure cases

NODES_CONF_70 = f"""\
{ID[0]} 10.0.0.1:6379@16379,redis-0.h.ns.svc.cluster.local myself,master - 0 0 1 connected 0-5460
{ID[1]} 10.0.0.2:6379@16379,redis-1.h.ns.svc.cluster.local master - 0 1700000 2 connected 5461-10922 [5461->-{ID[0]}]
{ID[2]} 10.0.0.3:6379@16379,redis-2.h.ns.svc.cluster.local master,fail - 1 1700000 3 disconnected 10923-16383
{ID[3]} 10.0.0.4:6379@16379,gone.h.ns.svc.cluster.local slave {ID[0]} 0 1700000 1 connected
{ID[4]} 10.0.0.5:6379@16379 slave {ID[1]} 0 1700000 2 connected
vars currentEpoch 3 lastVoteEpoch 0
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_rewrites_own_and_peer_addresses_only(tmp_path: Path, shell: list[str]) -> None:
    conf = tmp_path / "nodes.conf"
    conf.write_text(NODES_CONF_70)
    table = {"redis-1.h.ns.svc.cluster.local": "10.1.0.2", "redis-2.h.ns.svc.cluster.local": "10.1.0.3"}
    result = run_script(conf, "10.1.0.1", table, shell)
    assert result.returncode == 0, result.stderr
    want = (
        NODES_CONF_70.replace("10.0.0.1:", "10.1.0.1:")
        .replace("10.0.0.2:", "10.1.0.2:")
        .replace("10.0.0.3:", "10.1.0.3:")
    )
    # gone.* does not resolve and 10.0.0.5 has no hostname: both kept as they were.
    assert conf.read_text() == want
    assert (tmp_path / "nodes.conf.bak").read_text() == NODES_CONF_70
    # Idempotent: a second start changes nothing.
    assert run_script(conf, "10.1.0.1", table, shell).returncode == 0
    assert conf.read_text() == want


@pytest.mark.parametrize("shell", SHELLS)
def test_redis_72_aux_fields_and_ipv6(tmp_path: Path, shell: list[str]) -> None:
    conf = tmp_path / "nodes.conf"
    text = (
        f"{ID[0]} fd00::1:6379@16379,redis-0.h,tls-port=0,shard-id={ID[5]} myself,master - 0 0 1 connected 0-16383\n"
        f"{ID[1]} fd00::2:6379@16379,redis-1.h,tls-port=0,shard-id={ID[5]} slave {ID[0]} 0 1 1 connected\n"
        "vars currentEpoch 1 lastVoteEpoch 0\n"
    )
    conf.write_text(text)
    result = run_script(conf, "fd00:1::9", {"redis-1.h": "fd00:1::8"}, shell)
    assert result.returncode == 0, result.stderr
    assert conf.read_text() == text.replace("fd00::1:6379", "fd00:1::9:6379").replace("fd00::2:6379", "fd00:1::8:6379")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_text(""), id="empty"),
        pytest.param(lambda p: p.write_text(NODES_CONF_70[:150]), id="truncated"),
        pytest.param(lambda p: p.unlink(), id="missing"),
    ],
)
def test_damaged_nodes_conf_is_restored_from_backup(
    tmp_path: Path, shell: list[str], damage: Callable[[Path], None]
) -> None:
    conf = tmp_path / "nodes.conf"
    conf.write_text(NODES_CONF_70)
    assert run_script(conf, "10.0.0.1", {}, shell).returncode == 0  # a good start: backup made
    damage(conf)
    result = run_script(conf, "10.0.0.1", {}, shell)
    assert result.returncode == 0, result.stderr
    assert "restoring" in result.stderr
    assert conf.read_text() == NODES_CONF_70


def test_damaged_backup_never_replaces_nodes_conf(tmp_path: Path) -> None:
    conf = tmp_path / "nodes.conf"
    (tmp_path / "nodes.conf.bak").write_text(NODES_CONF_70[:100])
    conf.write_text("")
    assert run_script(conf, "10.0.0.1", {}).returncode == 0
    assert conf.read_text() == ""  # a fresh node: Redis starts it as new


@pytest.mark.parametrize("shell", SHELLS)
def test_execs_redis_with_announce_ip_and_hostname(tmp_path: Path, shell: list[str]) -> None:
    conf = tmp_path / "nodes.conf"
    conf.write_text(NODES_CONF_70)
    fake = tmp_path / "fake-redis-server"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    result = run_script(
        conf,
        "10.9.0.1",
        {},
        shell,
        args=(),
        env={
            "REDIS_SERVER": str(fake),
            "REDIS_CONF": "/etc/redis-cluster/redis.conf",
            "REDIS_ANNOUNCE_HOSTNAME": "redis-0.h.ns.svc.cluster.local",
            "REDIS_NODES_BACKUP_SECONDS": "0",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:5] == [
        "/etc/redis-cluster/redis.conf",
        "--cluster-announce-ip",
        "10.9.0.1",
        "--cluster-announce-hostname",
        "redis-0.h.ns.svc.cluster.local",
    ]
    assert "10.9.0.1:6379@16379,redis-0" in conf.read_text()


def test_refuses_to_start_without_pod_ip(tmp_path: Path) -> None:
    conf = tmp_path / "nodes.conf"
    result = run_script(conf, "", {}, args=(), env={"REDIS_SERVER": "true"})
    assert result.returncode != 0
    assert "POD_IP" in result.stderr


# ------------------------------------------------------ real redis-server cases

OLD_HOSTS = [f"127.0.0.{11 + i}" for i in range(6)]
NEW_HOSTS = [f"127.0.0.{21 + i}" for i in range(6)]
KEYS = 300


def cluster_info(node: RedisNode) -> dict[str, str]:
    text = str(node.client().execute_command("CLUSTER", "INFO"))
    return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except redis.RedisError:
            pass
        time.sleep(0.2)
    return False


def all_ok(nodes: list[RedisNode]) -> bool:
    return all(cluster_info(n).get("cluster_state") == "ok" for n in nodes)


def announce(hostname: str, ip: str) -> dict[str, str]:
    """What the start script passes to redis-server: the pod's IP and stable hostname."""
    return {"cluster-announce-hostname": hostname, "cluster-announce-ip": ip}


def form_cluster(redis_farm: RedisFarm, replicas: int = 0) -> list[RedisNode]:
    """Three masters (and replicas), each announcing hostname node-<i>, formed with redis-cli, filled with keys."""
    nodes = [
        redis_farm.spawn(1, hosts=[host], extra=announce(f"node-{i}", host))[0]
        for i, host in enumerate(OLD_HOSTS[: 3 * (1 + replicas)])
    ]
    subprocess.run(
        [
            REDIS_CLI,
            "--cluster",
            "create",
            *[n.address for n in nodes],
            "--cluster-replicas",
            str(replicas),
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert wait_until(lambda: all_ok(nodes), 30), "the cluster did not form"
    client = cluster_client(nodes, timeout=5)
    for k in range(KEYS):
        client.set(f"key:{k}", f"value-{k}")
    client.close()
    return nodes


def move_all(nodes: list[RedisNode], rewrite: bool, moved: int | None = None) -> None:
    """Stop the first ``moved`` nodes (all by default), optionally run the start script's repair,
    and bring each back on a new address; DNS then knows the new addresses of moved nodes only."""
    moved = len(nodes) if moved is None else moved
    for node in nodes[:moved]:
        node.stop()
    table = {f"node-{i}": (NEW_HOSTS if i < moved else OLD_HOSTS)[i] for i in range(len(nodes))}
    for i, node in enumerate(nodes[:moved]):
        if rewrite:
            result = run_script(node.dir / "nodes.conf", NEW_HOSTS[i], table)
            assert result.returncode == 0, result.stderr
        node.extra.update(announce(f"node-{i}", NEW_HOSTS[i]))
        node.restart(host=NEW_HOSTS[i])


def replicas_linked(nodes: list[RedisNode]) -> bool:
    infos = [n.client().info("replication") for n in nodes]
    return all(i.get("master_link_status") == "up" for i in infos if i["role"] == "slave")


@pytest.mark.parametrize("replicas", [0, 1], ids=["3-masters", "3-masters-3-replicas"])
def test_cluster_reforms_after_every_address_changed(redis_farm: RedisFarm, replicas: int) -> None:
    """Failure #1: every pod restarted with a new IP."""
    nodes = form_cluster(redis_farm, replicas)
    ids = [n.client().execute_command("CLUSTER", "MYID") for n in nodes]
    move_all(nodes, rewrite=True)
    assert wait_until(lambda: all_ok(nodes), 30), [cluster_info(n).get("cluster_state") for n in nodes]
    assert wait_until(lambda: replicas_linked(nodes), 30)
    assert [n.client().execute_command("CLUSTER", "MYID") for n in nodes] == ids
    assert all(int(cluster_info(n)["cluster_known_nodes"]) == len(nodes) for n in nodes)
    assert sum(n.client().info("replication")["role"] == "slave" for n in nodes) == 3 * replicas
    client = cluster_client(nodes, timeout=5)
    try:
        assert [client.get(f"key:{k}") for k in range(KEYS)] == [f"value-{k}" for k in range(KEYS)]
    finally:
        client.close()


def test_one_pod_with_a_new_address_rejoins(redis_farm: RedisFarm) -> None:
    """Failure #2: a single restarted pod comes back with a new IP."""
    nodes = form_cluster(redis_farm)
    move_all(nodes, rewrite=True, moved=1)
    assert nodes[0].host == NEW_HOSTS[0]
    expected = f"{NEW_HOSTS[0]}:{nodes[0].port}"

    def everyone_knows_the_new_address() -> bool:
        views = [str(n.client().execute_command("CLUSTER", "NODES")) for n in nodes[1:]]
        return all(expected in view for view in views) and all_ok(nodes)

    assert wait_until(everyone_knows_the_new_address, 30)


def test_without_the_rewrite_the_cluster_stays_down(redis_farm: RedisFarm) -> None:
    nodes = form_cluster(redis_farm)
    move_all(nodes, rewrite=False)
    # Give it far longer than the rewrite needs (node timeout 3 s in the farm's config).
    time.sleep(12)
    assert not all_ok(nodes)
    states = [cluster_info(n).get("cluster_state") for n in nodes]
    assert "fail" in states, states


def test_empty_nodes_conf_is_restored_and_the_node_rejoins(redis_farm: RedisFarm) -> None:
    nodes = form_cluster(redis_farm)
    victim = nodes[0]
    my_id = victim.client().execute_command("CLUSTER", "MYID")
    table = {f"node-{i}": OLD_HOSTS[i] for i in range(len(nodes))}
    victim.stop()
    # A previous good start made the backup ...
    assert run_script(victim.dir / "nodes.conf", victim.host, table).returncode == 0
    victim.start()
    # ... then the node is killed while rewriting nodes.conf (failure #3).
    victim.stop(hard=True)
    (victim.dir / "nodes.conf").write_text("")
    result = run_script(victim.dir / "nodes.conf", victim.host, table)
    assert result.returncode == 0, result.stderr
    assert "restoring" in result.stderr
    victim.start()
    assert victim.client().execute_command("CLUSTER", "MYID") == my_id
    assert wait_until(lambda: all_ok(nodes), 30)
    client = cluster_client(nodes, timeout=5)
    try:
        assert client.get("key:7") == "value-7"
    finally:
        client.close()


# ------------------------------------------------ auth and announced addresses

SECRET_PASSWORD = "S3cret-from-the-Secret!"
OPERATOR_PASSWORD = "0perator-only-for-the-bootstrap"
APP_PASSWORD = "App-user-Pa55word"


def auth_files(tmp_path: Path, password: str | None, allow_dangerous: bool = False) -> dict[str, str]:
    """The Secret's files, the ConfigMap's users.acl and a run dir, as in the pod; env for the script."""
    from components.settings import validate

    auth_dir = tmp_path / "auth"
    auth_dir.mkdir()
    if password is not None:
        (auth_dir / "password").write_text(password)  # no trailing newline, as the kubelet writes it
    (auth_dir / "operator-password").write_text(OPERATOR_PASSWORD + "\n")
    (auth_dir / "app-password").write_text(APP_PASSWORD)
    acl = tmp_path / "users.acl"
    settings = validate(
        {
            "allowDangerousCommands": allow_dangerous,
            "aclUsers": ["app ~app:* +@read +@write +ping"],
            "aclPasswords": {"app": APP_PASSWORD},
        }
    )
    acl.write_text(redis_config.users_acl(settings))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return {"REDIS_USERS_ACL": str(acl), "REDIS_AUTH_DIR": str(auth_dir), "REDIS_RUN_DIR": str(run_dir)}


def start_node(
    tmp_path: Path,
    env: Mapping[str, str],
    port: int | None = None,
    settings: Mapping[str, Any] | None = None,
    certs: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """redis-server started by the script with the redis.conf generated for ``settings``
    (default: the defaults), its port, /data and TLS directory moved into the test's space."""
    from components.settings import validate

    port = port or servers.free_cluster_port()
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    conf = tmp_path / "redis.conf"
    text = redis_config.redis_conf(validate(dict(settings or {})))
    text = (
        text.replace("/data", str(data))
        .replace("port 6379", f"port {port}")  # also tls-port
        .replace("port 16379", f"port {port + 10000}")  # also cluster-port
    )
    if certs is not None:
        text = text.replace(redis_config.TLS_DIR, str(certs))
    conf.write_text(text)
    log = tmp_path / "redis.log"
    proc = servers.launch(
        ["sh", str(SCRIPT_PATH)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "POD_IP": "127.0.0.1",
            "POD_NAME": "redis-cluster-4",
            "REDIS_ANNOUNCE_HOSTNAME": "redis-cluster-4.h.ns.svc.cluster.local",
            "REDIS_CONF": str(conf),
            "REDIS_NODES_CONF": str(data / "nodes.conf"),
            "REDIS_SERVER": REDIS_SERVER,
            "REDIS_NODES_BACKUP_SECONDS": "0",
            **env,
        },
        output=log,
    )
    return proc, port, log


def wait_answering(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Up when it answers (or asks for a password); a script or server that exits fails with its log."""
    servers.wait_answering([("127.0.0.1", port, proc, log)], timeout=10)


@pytest.fixture
def authed(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    env = auth_files(tmp_path, SECRET_PASSWORD)
    proc, port, log = start_node(tmp_path, env)
    try:
        wait_answering(port, proc, log)
        yield port, proc, tmp_path
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_password_from_the_secret_file_is_required(authed: tuple[int, subprocess.Popen[bytes], Path]) -> None:
    port, _proc, _dir = authed
    with pytest.raises(redis.AuthenticationError, match=r"(?i)auth"):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).set("k", "v")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password="wrong-password", socket_timeout=5).ping()
    client = redis.Redis(host="127.0.0.1", port=port, password=SECRET_PASSWORD, socket_timeout=5)
    assert client.ping() is True


def test_the_password_is_on_no_command_line_and_in_no_environment(
    authed: tuple[int, subprocess.Popen[bytes], Path],
) -> None:
    port, proc, directory = authed
    # The script exec'd into redis-server: same PID.
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes().decode()
    assert "redis-server" in cmdline
    for secret in (SECRET_PASSWORD, OPERATOR_PASSWORD):
        assert secret not in cmdline and secret not in environ
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    for secret in (SECRET_PASSWORD, OPERATOR_PASSWORD, APP_PASSWORD):
        assert secret not in ps and secret not in cmdline
    assert SECRET_PASSWORD not in (directory / "redis.log").read_text()
    auth_conf = directory / "run" / "auth.conf"
    assert auth_conf.stat().st_mode & 0o777 == 0o600
    assert f"masterauth {SECRET_PASSWORD}" in auth_conf.read_text().splitlines()
    assert redis.Redis(host="127.0.0.1", port=port, password=SECRET_PASSWORD, socket_timeout=5).ping()


def test_guard_rails_deny_clients_and_leave_the_operator_everything(
    authed: tuple[int, subprocess.Popen[bytes], Path],
) -> None:
    port, _proc, _dir = authed
    client = redis.Redis(host="127.0.0.1", port=port, password=SECRET_PASSWORD, socket_timeout=5, decode_responses=True)
    operator = redis.Redis(
        host="127.0.0.1",
        port=port,
        username="operator",
        password=OPERATOR_PASSWORD,
        socket_timeout=5,
        decode_responses=True,
    )
    operator.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")  # a one-node cluster that serves keys
    assert wait_until(lambda: "cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO")), 10)
    client.set("k", "v")
    for command in (
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "masterauth"),
        ("ACL", "SETUSER", "default", "+@all"),
        ("SHUTDOWN", "NOSAVE"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    with pytest.raises(redis.ResponseError, match="DEBUG command not allowed"):  # enable-debug-command no
        client.execute_command("DEBUG", "SLEEP", "0")
    assert client.get("k") == "v"
    assert client.execute_command("KEYS", "*") == ["k"]
    operator = redis.Redis(
        host="127.0.0.1",
        port=port,
        username="operator",
        password=OPERATOR_PASSWORD,
        socket_timeout=5,
        decode_responses=True,
    )
    # What the bootstrap's live rotation runs (bootstrap/auth.py), as `operator`.
    operator.execute_command("ACL", "SETUSER", "default", "on", ">rotated-Pa55word")
    operator.execute_command("CONFIG", "SET", "masterauth", "rotated-Pa55word")
    assert redis.Redis(host="127.0.0.1", port=port, password="rotated-Pa55word", socket_timeout=5).ping()
    assert client.ping()  # the old password stays valid until it is removed
    operator.execute_command("ACL", "SETUSER", "default", f"<{SECRET_PASSWORD}")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, password=SECRET_PASSWORD, socket_timeout=5).ping()


def test_probes_log_in_from_the_file(authed: tuple[int, subprocess.Popen[bytes], Path]) -> None:
    from components import nodes
    from components.settings import validate

    port, _proc, directory = authed
    s = validate({})

    def probe(command: list[str]) -> int:
        script = command[-1].replace("-p 6379", f"-p {port}").replace(redis_config.AUTH_DIR, str(directory / "auth"))
        return subprocess.run([*command[:-1], script], capture_output=True, timeout=10, check=False).returncode

    assert probe(nodes.readiness_command(s)) == 0
    assert probe(nodes.liveness_command(s)) == 0
    # A stale file during a rotation still counts as an answer ...
    (directory / "auth" / "password").write_text("stale-password")
    assert probe(nodes.readiness_command(s)) == 0
    # ... a missing server does not.
    (directory / "auth" / "password").write_text(SECRET_PASSWORD)
    script = nodes.readiness_command(s)[-1].replace("-p 6379", f"-p {port + 1}")
    assert subprocess.run(["sh", "-c", script], capture_output=True, timeout=10, check=False).returncode != 0


def test_without_auth_the_default_user_needs_no_password_and_stays_guarded(tmp_path: Path) -> None:
    env = auth_files(tmp_path, None)
    proc, port, log = start_node(tmp_path, env)
    try:
        wait_answering(port, proc, log)
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        assert client.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("FLUSHALL")
        assert "masterauth" not in (tmp_path / "run" / "auth.conf").read_text()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_per_pod_announce_settings_reach_redis(tmp_path: Path) -> None:
    env = {
        **auth_files(tmp_path, SECRET_PASSWORD),
        "REDIS_ANNOUNCE_IP": "203.0.113.7",
        "REDIS_ANNOUNCE_PORT_BASE": "31000",
        "REDIS_ANNOUNCE_BUS_PORT_BASE": "32000",
    }
    proc, port, log = start_node(tmp_path, env)
    try:
        wait_answering(port, proc, log)
        operator = redis.Redis(
            host="127.0.0.1", port=port, username="operator", password=OPERATOR_PASSWORD, decode_responses=True
        )
        got = operator.config_get("cluster-announce-*")
        # POD_NAME redis-cluster-4: ordinal 4.
        assert got["cluster-announce-ip"] == "203.0.113.7"
        assert got["cluster-announce-port"] == "31004"
        assert got["cluster-announce-bus-port"] == "32004"
        myself = next(
            line for line in str(operator.execute_command("CLUSTER", "NODES")).splitlines() if "myself" in line
        )
        assert myself.split()[1].startswith("203.0.113.7:31004@32004")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_per_pod_needs_an_ordinal(tmp_path: Path) -> None:
    env = {
        "REDIS_SERVER": "true",
        "POD_NAME": "no-ordinal",
        "REDIS_ANNOUNCE_HOSTNAME": "x",
        "REDIS_ANNOUNCE_PORT_BASE": "31000",
        "REDIS_ANNOUNCE_BUS_PORT_BASE": "32000",
    }
    result = run_script(tmp_path / "nodes.conf", "10.0.0.1", {}, args=(), env=env)
    assert result.returncode != 0 and "ordinal" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_per_pod_does_not_re_resolve_peers(tmp_path: Path, shell: list[str]) -> None:
    """Peers announce node addresses; DNS knows their pod IPs: the rewrite must leave them alone."""
    conf = tmp_path / "nodes.conf"
    conf.write_text(NODES_CONF_70)
    table = {"redis-1.h.ns.svc.cluster.local": "10.1.0.2"}
    result = run_script(
        conf,
        "10.1.0.1",
        table,
        shell,
        env={
            "REDIS_ANNOUNCE_IP": "192.0.2.1",
            "REDIS_ANNOUNCE_PORT_BASE": "31000",
            "REDIS_ANNOUNCE_BUS_PORT_BASE": "32000",
        },
    )
    assert result.returncode == 0, result.stderr
    assert conf.read_text() == NODES_CONF_70.replace("10.0.0.1:", "192.0.2.1:")


def test_acl_users_from_config_log_in_with_their_secret_file(authed: tuple[int, subprocess.Popen[bytes], Path]) -> None:
    port, _proc, _dir = authed
    app = redis.Redis(host="127.0.0.1", port=port, username="app", password=APP_PASSWORD, socket_timeout=5)
    assert app.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        app.execute_command("CLUSTER", "RESET")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port, username="app", password=SECRET_PASSWORD, socket_timeout=5).ping()


def make_certs(directory: Path) -> None:
    """A CA and a server certificate for localhost/127.0.0.1 in the Secret's layout (tls.crt, tls.key, ca.crt)."""
    directory.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test CA", "-days", "2", "-out", "ca.crt")
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "tls.key")
    run("req", "-new", "-key", "tls.key", "-subj", "/CN=localhost", "-out", "tls.csr")
    (directory / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    run(
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "tls.crt",
    )  # fmt: skip


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl")
def test_tls_only_config_serves_tls_and_the_probe_uses_it(tmp_path: Path) -> None:
    """The generated TLS lines against a real redis-server (built with TLS): port 0, TLS on the client port."""
    from components import nodes
    from components.settings import validate

    settings = {"tls": True, "tlsOnly": True}
    s = validate(settings)
    certs = tmp_path / "tls"
    make_certs(certs)
    env = auth_files(tmp_path, SECRET_PASSWORD)
    proc, port, log = start_node(tmp_path, env, settings=settings, certs=certs)
    assert "port 0" in (tmp_path / "redis.conf").read_text().splitlines()
    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, password=SECRET_PASSWORD, ssl=True, ssl_ca_certs=str(certs / "ca.crt"),
            socket_timeout=5,
        )  # fmt: skip
        assert wait_until(lambda: bool(client.ping()), 10), log.read_text()[-2000:]
        with pytest.raises(redis.ConnectionError):  # no plain-text listener, TLS only
            redis.Redis(host="127.0.0.1", port=port, password=SECRET_PASSWORD, socket_timeout=3).ping()
        for command in (nodes.readiness_command(s), nodes.liveness_command(s)):
            script = (
                command[-1]
                .replace("-p 6379", f"-p {port}")
                .replace(redis_config.AUTH_DIR, env["REDIS_AUTH_DIR"])
                .replace(redis_config.TLS_DIR, str(certs))
            )
            assert "--tls" in script
            assert subprocess.run(["sh", "-c", script], capture_output=True, timeout=10, check=False).returncode == 0
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("shell", SHELLS)
def test_auth_conf_is_written_by_every_shell(tmp_path: Path, shell: list[str]) -> None:
    """dash (Debian images) and busybox sh (Alpine images): same auth.conf, 0600, include passed, no secret in argv."""
    conf = tmp_path / "nodes.conf"
    env = auth_files(tmp_path, SECRET_PASSWORD)
    fake = tmp_path / "fake-redis-server"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    result = run_script(
        conf,
        "10.9.0.1",
        {},
        shell,
        args=(),
        env={
            **env,
            "REDIS_SERVER": str(fake),
            "REDIS_ANNOUNCE_HOSTNAME": "redis-0.h.ns.svc.cluster.local",
            "REDIS_NODES_BACKUP_SECONDS": "0",
        },
    )
    assert result.returncode == 0, result.stderr
    args = result.stdout.split("\n")
    assert args[-3:-1] == ["--include", env["REDIS_RUN_DIR"] + "/auth.conf"]
    for secret in (SECRET_PASSWORD, OPERATOR_PASSWORD, APP_PASSWORD):
        assert secret not in result.stdout and secret not in result.stderr
    auth_conf = Path(env["REDIS_RUN_DIR"]) / "auth.conf"
    assert auth_conf.stat().st_mode & 0o777 == 0o600
    assert auth_conf.read_text().splitlines() == [
        f"user default on ~* &* +@all -flushall -flushdb -debug -config -acl -shutdown >{SECRET_PASSWORD}",
        f"masterauth {SECRET_PASSWORD}",
        f"user operator on ~* &* +@all >{OPERATOR_PASSWORD}",
        f"user app on ~app:* +@read +@write +ping >{APP_PASSWORD}",
    ]
