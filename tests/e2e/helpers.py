"""Helpers for the e2e tier: kubectl, Redis inside the pods, the cluster's health, keys, engine runs.

Every wait here is bounded and its error names what was awaited and what was seen last.
Passwords are only ever read into variables (from the Secret through the API, or inside a
pod from the mounted file by the shell's ``read``): never printed, logged or put in argv.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import redis
from pulumi import automation as auto
from redis.cluster import RedisCluster

from bootstrap.atomic_migration import DONE as ATOMIC_DONE
from bootstrap.atomic_migration import REDIS_DONE, dialect, records
from bootstrap.engines import Engine
from tests.toolkit import Writer, cluster_client, wait_for

SLOTS = 16384
NAME = "redis-cluster"  # the dev stack's default name: StatefulSet, pods <NAME>-<i>
# The locally built images (tools/cluster/common.sh), never pulled: Debian's Redis 7.0, where every stack
# starts, and the two engines a stack moves to by an image change (issue 24).
IMAGE = "localhost/redis-cluster/redis:7.0-local"
VALKEY9_IMAGE = "localhost/redis-cluster/valkey:9.1-local"
REDIS86_IMAGE = "localhost/redis-cluster/redis:8.6-local"


def pod_names(masters: int, replicas: int = 1) -> list[str]:
    """The pods of ``masters`` x ``replicas`` (their ordinals, not their roles)."""
    return [f"{NAME}-{i}" for i in range(masters * (1 + replicas))]


class StepState(Protocol):
    """What a tier's ordered steps share: the first failure, and how long each step took."""

    broken: str | None
    timings: dict[str, float]


S = TypeVar("S", bound=StepState)


def step(fn: Callable[[S], None]) -> Callable[..., None]:
    """Times the step; a failed step makes every later one skip (they build on what it left)."""

    # pytest passes the module's state fixture by its own name (e2e, mn), as the signature that
    # functools.wraps exposes says: the wrapper takes it under whatever name it has.
    @functools.wraps(fn)
    def wrapper(**fixtures: S) -> None:
        [state] = fixtures.values()
        if state.broken:
            pytest.skip(f"an earlier step failed: {state.broken}")
        t0 = time.monotonic()
        try:
            fn(state)
        except pytest.skip.Exception:
            raise
        except BaseException:
            state.broken = fn.__name__
            failure_snapshot(state)
            raise
        finally:
            state.timings[fn.__name__] = time.monotonic() - t0

    return wrapper


def failure_snapshot(state: object) -> None:
    """What a failed step leaves, printed (pytest shows it with the failure): the pods, their endpoints, each
    pod's CLUSTER NODES, and this host's NodePort rejects and NetworkPolicy address sets. A failure seen once
    in CI (e2e step 8: handshakes stalled for 10 minutes after a pod's restart under the enforcer) could not
    be traced afterwards for want of exactly these. Bounded, and never raises over the step's own error."""
    kube, ns = getattr(state, "kube", None), getattr(state, "namespace", None)
    commands: list[tuple[str, list[str]]] = []
    if isinstance(kube, Kube) and isinstance(ns, str):
        k = [str(kube.kubectl), "--kubeconfig", str(kube.kubeconfig)]
        commands += [("pods", [*k, "get", "pods", "-n", ns, "-o", "wide"])]
        commands += [("endpointslices", [*k, "get", "endpointslices", "-n", ns])]
        try:
            pods = [
                p["metadata"]["name"]
                for p in kube.items("pods", "-n", ns, "-l", "app.kubernetes.io/name=redis-cluster")
            ]
        except Exception as exc:
            print(f"--- failure snapshot: no pod list: {exc!r}", file=sys.stderr)
            pods = []
        cli = OPERATOR_CLI + "cluster nodes"
        commands += [
            (f"{pod} CLUSTER NODES", [*k, "exec", "-n", ns, pod, "-c", "redis", "--", "sh", "-c", cli]) for pod in pods
        ]
    commands += [("host NodePort rejects", ["iptables", "-S", "KUBE-EXTERNAL-SERVICES"])]
    commands += [("host policy address sets", ["sh", "-c", "ipset list -t | grep -E '^(Name|Number of entries)'"])]
    for title, argv in commands:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
            out = proc.stdout + proc.stderr
        except Exception as exc:
            out = repr(exc)
        print(f"--- failure snapshot: {title}\n{out.strip()[-4000:]}", file=sys.stderr)


BAD_FLAGS = {"fail", "fail?", "pfail", "noaddr", "handshake"}


@dataclass(frozen=True)
class Kube:
    """The cluster's own kubectl with its kubeconfig."""

    kubectl: Path
    kubeconfig: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc

    def json(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        out = self.run(*args, "-o", "json", timeout=timeout).stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def items(self, *args: str) -> list[dict[str, Any]]:
        return list(self.json("get", *args).get("items") or [])

    def exists(self, *args: str) -> bool:
        proc = self.run("get", *args, "--ignore-not-found", "-o", "name", check=False)
        if proc.returncode != 0:
            raise AssertionError(f"kubectl get {' '.join(args)}: {proc.stderr.strip()}")
        return bool(proc.stdout.strip())

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """A Secret's value, decoded, for use in this process only (never printed)."""
        data = self.json("get", "secret", "-n", namespace, name).get("data") or {}
        if key not in data:
            raise AssertionError(f"secret {namespace}/{name} has no key {key!r} (keys: {sorted(data)})")
        return base64.b64decode(data[key]).decode()


# Inside a pod, redis-cli logs in with the password file the probes use: read by the shell, exported
# as REDISCLI_AUTH, never on a command line.
_POD_CLI = (
    "if [ -s /etc/redis-auth/password ]; then IFS= read -r REDISCLI_AUTH < /etc/redis-auth/password || true; "
    "export REDISCLI_AUTH; fi; "
    'redis-cli -h 127.0.0.1 -p 6379 cluster info && echo "@@@" && redis-cli -h 127.0.0.1 -p 6379 cluster nodes'
)


@dataclass(frozen=True)
class NodeLine:
    node_id: str
    ip: str
    flags: frozenset[str]
    master_id: str | None
    slots: int

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


@dataclass(frozen=True)
class PodView:
    """What one pod says about the cluster (CLUSTER INFO and CLUSTER NODES, asked inside it)."""

    pod: str
    info: dict[str, str]
    nodes: tuple[NodeLine, ...]

    @property
    def myself(self) -> NodeLine:
        return next(n for n in self.nodes if "myself" in n.flags)

    def by_id(self) -> dict[str, NodeLine]:
        return {n.node_id: n for n in self.nodes}


def _slot_count(fields: Iterable[str]) -> int:
    total = 0
    for f in fields:
        if f.startswith("["):  # a slot being migrated/imported: not an owned range
            continue
        lo, _, hi = f.partition("-")
        total += (int(hi) if hi else int(lo)) - int(lo) + 1
    return total


def parse_nodes(text: str) -> tuple[NodeLine, ...]:
    """CLUSTER NODES as the e2e reads it, on purpose not bootstrap.model's parser: the e2e judges the
    bootstrap's work, so a bug in the product's parser must not also blind the check."""
    lines = []
    for raw in text.strip().splitlines():
        parts = raw.split()
        if len(parts) < 8:
            continue
        lines.append(
            NodeLine(
                node_id=parts[0],
                ip=parts[1].split(",", 1)[0].rsplit(":", 1)[0],
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                slots=_slot_count(parts[8:]),
            )
        )
    return tuple(lines)


def pod_view(kube: Kube, namespace: str, pod: str) -> PodView:
    out = kube.run("exec", "-n", namespace, pod, "-c", "redis", "--", "sh", "-c", _POD_CLI, timeout=60).stdout
    info_text, sep, nodes_text = out.partition("@@@")
    if not sep:
        raise AssertionError(f"{pod}: unexpected redis-cli output {out[:300]!r}")
    info = dict(line.strip().split(":", 1) for line in info_text.splitlines() if ":" in line)
    return PodView(pod=pod, info=info, nodes=parse_nodes(nodes_text))


# Inside a pod as the operator user (the image's own redis-cli, whatever engine it belongs to): append the
# command. The password is read by the shell from the Secret's file, never on a command line.
OPERATOR_CLI = (
    "IFS= read -r REDISCLI_AUTH < /etc/redis-auth/operator-password; export REDISCLI_AUTH; "
    "redis-cli --user operator -h 127.0.0.1 -p 6379 "
)


def pod_engine(kube: Kube, namespace: str, pod: str) -> Engine:
    """The engine a pod runs, in its own words (INFO server)."""
    out = kube.run("exec", "-n", namespace, pod, "-c", "redis", "--", "sh", "-c", OPERATOR_CLI + "info server").stdout
    return Engine.from_info(dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line))


def migration_records(kube: Kube, namespace: str, selector: str, operator_password: str) -> list[dict[str, str]]:
    """Every pod's own record of atomic slot migrations (Valkey 9: CLUSTER GETSLOTMIGRATIONS; Redis 8.4+:
    CLUSTER MIGRATION STATUS ALL), asked at the pod's IP (this machine routes to pods) as the operator."""
    found = []
    for name, pod in pods_of(kube, namespace, selector).items():
        client = redis.Redis(
            host=pod["status"]["podIP"], port=6379, username="operator", password=operator_password, socket_timeout=5
        )
        with contextlib.closing(client):
            kind = dialect(client)
            assert kind is not None, f"{name} has no atomic slot migration"
            ask = ("GETSLOTMIGRATIONS",) if kind == "valkey" else ("MIGRATION", "STATUS", "ALL")
            found += [{**r, "pod": name} for r in records(client.execute_command("CLUSTER", *ask))]
    return found


def refused_move(stack: auto.Stack, kube: Kube, namespace: str, selector: str, image: str, keep: str) -> str:
    """Set ``image`` (an engine the pods' cannot move to): `pulumi preview` and `pulumi up` must both fail
    with the refusal, the StatefulSet keep its template and every pod keep running (same uid, no restart).
    The config goes back to ``keep``. Returns the refusal as the engine printed it."""
    sts = next(iter(kube.items("statefulset", "-n", namespace, "-l", selector)))
    name = sts["metadata"]["name"]
    template = sts["spec"]["template"]
    pods = {n: (p["metadata"]["uid"], _restarts(p)) for n, p in pods_of(kube, namespace, selector).items()}
    stack.set_config("redis-cluster:image", auto.ConfigValue(image))
    said = []
    try:
        for command in (stack.preview, stack.up):
            try:
                command(color="never")
            except auto.CommandError as exc:
                text = str(exc)
                assert "is refused" in text, f"{command.__name__} failed, but not with the refusal: {text[-3000:]}"
                said.append(next(line for line in text.splitlines() if "is refused" in line).strip())
            else:
                raise AssertionError(f"{command.__name__} with image {image} succeeded")
    finally:
        stack.set_config("redis-cluster:image", auto.ConfigValue(keep))
    now = kube.json("get", "statefulset", "-n", namespace, name)
    assert now["spec"]["template"] == template, "the refused up changed the StatefulSet's template"
    after = {n: (p["metadata"]["uid"], _restarts(p)) for n, p in pods_of(kube, namespace, selector).items()}
    assert after == pods, f"pods restarted: {pods} -> {after}"
    return said[-1]


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(c.get("restartCount", 0)) for c in pod.get("status", {}).get("containerStatuses") or [])


def assert_migrations_finished(out: list[dict[str, str]], back: list[dict[str, str]], staying: list[str]) -> None:
    """The servers' records after a scale-out (``out``) and after the scale-in back (``back``, on the
    ``staying`` pods): there are some, every one finished (Valkey says ``success``, Redis ``completed``),
    and the scale-in added its own."""
    for found in (out, back):
        done = [r for r in found if r.get("state") in (ATOMIC_DONE, REDIS_DONE)]
        assert found and len(done) == len(found), f"a migration did not finish: {found}"
    assert len(back) > len([r for r in out if r["pod"] in staying]), "4 -> 3 left no record"


def view_problems(view: PodView, masters: int, replicas: int) -> list[str]:
    """Why this pod's view is not a healthy cluster of the given shape (empty: healthy)."""
    p: list[str] = []
    pods = masters * (1 + replicas)
    want = {
        "cluster_state": "ok",
        "cluster_slots_assigned": str(SLOTS),
        "cluster_slots_ok": str(SLOTS),
        "cluster_known_nodes": str(pods),
        "cluster_size": str(masters),
    }
    for key, value in want.items():
        if view.info.get(key) != value:
            p.append(f"{view.pod}: {key}={view.info.get(key)} (want {value})")
    owners = [n for n in view.nodes if n.is_master and n.slots]
    if len(owners) != masters or sum(n.slots for n in owners) != SLOTS:
        p.append(f"{view.pod}: {len(owners)} masters own {sum(n.slots for n in owners)} slots")
    for m in owners:
        got = [n for n in view.nodes if n.master_id == m.node_id and not (n.flags & BAD_FLAGS)]
        if len(got) != replicas:
            p.append(f"{view.pod}: master {m.node_id[:8]} ({m.ip}) has {len(got)} healthy replica(s), want {replicas}")
    for n in view.nodes:
        if n.flags & BAD_FLAGS:
            p.append(f"{view.pod}: node {n.node_id[:8]} ({n.ip}) flagged {','.join(sorted(n.flags))}")
    return p


def cluster_problems(kube: Kube, namespace: str, pods: list[str], masters: int, replicas: int) -> list[str]:
    problems: list[str] = []
    ids: set[str] = set()
    for pod in pods:
        view = pod_view(kube, namespace, pod)
        problems += view_problems(view, masters, replicas)
        ids.add(view.myself.node_id)
    if len(ids) != len(pods):
        problems.append(f"{len(pods)} pods have only {len(ids)} distinct node ids")
    return problems


def wait_healthy(kube: Kube, namespace: str, pods: list[str], masters: int, replicas: int, timeout: float) -> float:
    """Bounded wait until every pod reports a healthy cluster of this shape."""

    def probe() -> str | None:
        problems = cluster_problems(kube, namespace, pods, masters, replicas)
        return "; ".join(problems[:6]) or None

    return wait_for(
        f"cluster_state:ok with {masters} masters x {replicas} replica(s) and {SLOTS} slots seen inside "
        f"every pod of {', '.join(pods)}",
        probe,
        timeout,
        interval=3.0,
    )


def pods_of(kube: Kube, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in kube.items("pods", "-n", namespace, "-l", selector)}


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def wait_pods_ready(
    kube: Kube,
    namespace: str,
    selector: str,
    names: list[str],
    timeout: float,
    not_uids: Collection[str] = (),
) -> dict[str, dict[str, Any]]:
    """Bounded wait until exactly ``names`` exist, are Ready, not terminating (and are not the old ``not_uids``)."""
    seen: dict[str, dict[str, Any]] = {}

    def probe() -> str | None:
        pods = pods_of(kube, namespace, selector)
        seen.clear()
        seen.update(pods)
        why = []
        if sorted(pods) != sorted(names):
            why.append(f"pods {sorted(pods)} (want {sorted(names)})")
        for name, pod in sorted(pods.items()):
            if pod["metadata"].get("deletionTimestamp"):
                why.append(f"{name} terminating")
            elif pod["metadata"]["uid"] in not_uids:
                why.append(f"{name} is still the old pod")
            elif not is_ready(pod):
                why.append(f"{name} {pod.get('status', {}).get('phase')} not Ready")
        return "; ".join(why) or None

    wait_for(f"pods {', '.join(names)} Ready in namespace {namespace}", probe, timeout, interval=2.0)
    return dict(seen)


# --- keys, through the external NodePort ------------------------------------------------------------


def key(i: int) -> str:
    return f"e2e:key:{i:05d}"


def value(i: int) -> str:
    return f"value-{i}-{'x' * (i % 17)}"


def write_keys(client: RedisCluster, count: int, chunk: int = 1000) -> None:
    for start in range(0, count, chunk):
        pipe = client.pipeline()
        for i in range(start, min(count, start + chunk)):
            pipe.set(key(i), value(i))
        results = pipe.execute()
        bad = [r for r in results if r is not True]
        if bad:
            raise AssertionError(f"{len(bad)} SETs of keys {start}..{start + chunk} failed: {bad[:3]}")


def missing_keys(client: RedisCluster, count: int, chunk: int = 1000) -> list[int]:
    """Indexes of keys that are absent or have the wrong value."""
    wrong: list[int] = []
    for start in range(0, count, chunk):
        pipe = client.pipeline()
        idx = list(range(start, min(count, start + chunk)))
        for i in idx:
            pipe.get(key(i))
        for i, got in zip(idx, pipe.execute(), strict=True):
            if got != value(i):
                wrong.append(i)
    return wrong


def total_keys(client: RedisCluster) -> int:
    """DBSIZE summed over every master (a bare DBSIZE asks one node only)."""
    total = 0
    for node in client.get_primaries():
        total += int(client.get_redis_connection(node).dbsize())
    return total


def check_keys(host: str, port: int, password: str | None, count: int, timeout: float = 120) -> None:
    """All ``count`` keys readable with their values through a cluster client seeded at host:port (bounded)."""

    def probe() -> str | None:
        client = cluster_client([(host, port)], password)
        try:
            wrong = missing_keys(client, count)
            total = total_keys(client)
        finally:
            client.close()
        if wrong:
            return f"{len(wrong)} of {count} keys missing or wrong (first: {[key(i) for i in wrong[:5]]})"
        if total < count:
            return f"DBSIZE over the masters is {total}, want at least {count}"
        return None

    wait_for(f"all {count} keys readable through {host}:{port}", probe, timeout, interval=3.0)


def live_writer(host: str, port: int, password: str | None, limit_s: float = 1200) -> Writer:
    """tests/toolkit.py's writer through the seed ``host:port``: every acknowledged write remembered,
    failures counted by type (the client follows MOVED/ASK by itself)."""
    return Writer(lambda: cluster_client([(host, port)], password), "e2e:live:", limit_s=limit_s)


def refuses_without_password(host: str, port: int) -> bool:
    """True when the endpoint answers but refuses an unauthenticated command."""
    client = redis.Redis(host=host, port=port, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.get("e2e:probe")
    except redis.AuthenticationError:
        return True
    except redis.ResponseError as exc:
        return "NOAUTH" in str(exc)
    finally:
        client.close()
    return False


# --- the engine --------------------------------------------------------------------------------------


@dataclass
class EngineRun:
    """Output lines and step events of one engine operation."""

    lines: list[str] = field(default_factory=list)
    events: list[auto.EngineEvent] = field(default_factory=list)

    def on_output(self, line: str) -> None:
        self.lines.append(line)

    def on_event(self, event: auto.EngineEvent) -> None:
        self.events.append(event)

    def tail(self, n: int = 60) -> str:
        return "\n".join(line.rstrip() for line in self.lines[-n:])

    def errors(self) -> str:
        """The last line of every error diagnostic (a provider's traceback ends in its message): what a
        failed run's summary line should say, before the long engine output."""
        said = [
            e.diagnostic_event.message.strip().splitlines()[-1]
            for e in self.events
            if e.diagnostic_event is not None and e.diagnostic_event.severity == "error"
            and e.diagnostic_event.message.strip()
        ]  # fmt: skip
        return " | ".join(dict.fromkeys(said))

    def ops(self) -> dict[str, str]:
        """Resource name (the last URN part) -> planned/performed op, for every resource but `same`."""
        out: dict[str, str] = {}
        for e in self.events:
            if e.resource_pre_event is not None:
                m = e.resource_pre_event.metadata
                op = m.op.value if hasattr(m.op, "value") else str(m.op)
                if op != "same":
                    out[m.urn.rsplit("::", 1)[1]] = op
        return out

    def ops_by_type(self, op: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events:
            if e.resource_pre_event is not None:
                m = e.resource_pre_event.metadata
                if (m.op.value if hasattr(m.op, "value") else str(m.op)) == op:
                    counts[m.type] = counts.get(m.type, 0) + 1
        return counts

    def sequence(self, name: str, kind: str) -> int | None:
        """Sequence number of the first `pre` (start) or `outputs` (done) event of the resource ``name``."""
        for e in self.events:
            ev = e.resource_pre_event if kind == "pre" else e.res_outputs_event
            if ev is not None and ev.metadata.urn.rsplit("::", 1)[1] == name:
                return e.sequence
        return None


def changes(result: auto.UpResult | auto.PreviewResult) -> dict[str, int]:
    summary = result.change_summary if isinstance(result, auto.PreviewResult) else result.summary.resource_changes
    return {k: v for k, v in (summary or {}).items() if k != "same" and v}


def state_resources(stack: auto.Stack) -> dict[str, dict[str, Any]]:
    """Resources in the stack's state by name (the last URN part)."""
    deployment = stack.export_stack().deployment or {}
    return {r["urn"].rsplit("::", 1)[1]: r for r in deployment.get("resources") or []}


def _child_pulumi_pids() -> list[int]:
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm == "pulumi":
            pids.append(int(entry.name))
    return pids


def _descendants(roots: list[int]) -> list[int]:
    """Every process below ``roots`` (the engine's language host and providers: its plugins)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def kill_engine(grace_s: float = 2.0) -> list[int]:
    """Ctrl-C, then a hard kill: SIGINT to the pulumi CLI this test process started, and ``grace_s`` later
    SIGKILL to it and to every plugin under it (a second Ctrl-C, a CI runner cancelled, a laptop lid
    closed). Returns the pids killed; nothing of the engine is left running."""
    roots = _child_pulumi_pids()
    tree = _descendants(roots)
    for pid in roots:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    time.sleep(grace_s)
    tree = list(dict.fromkeys([*tree, *_descendants(roots)]))
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return tree


def running(pid: int) -> bool:
    """The process exists and is not a zombie (killed, waiting for its parent, or init, to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def interrupt_engine() -> list[int]:
    """SIGINT to the pulumi CLI processes this test process started (the engine then cancels cleanly)."""
    pids = _child_pulumi_pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    return pids


def stall_problem(kube: Kube, namespace: str, selector: str, patience: float) -> str | None:
    """A pod that has been Pending, or Running but not Ready, for longer than ``patience`` seconds."""
    now = time.time()
    try:
        pods = pods_of(kube, namespace, selector)
    except AssertionError:
        return None  # the namespace may not exist yet
    for name, pod in sorted(pods.items()):
        if pod["metadata"].get("deletionTimestamp") or is_ready(pod):
            continue
        status = pod.get("status") or {}
        since = _age(pod["metadata"]["creationTimestamp"], now)
        if status.get("phase") == "Pending" and since > patience:
            conds = "; ".join(
                f"{c.get('type')}={c.get('status')} {c.get('reason', '')} {c.get('message', '')}".strip()
                for c in status.get("conditions") or []
            )
            return f"pod {name} Pending for {since:.0f}s ({conds})"
        for cs in status.get("containerStatuses") or []:
            started = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
            if started and not cs.get("ready") and _age(started, now) > patience:
                return f"pod {name}: container {cs['name']} running {_age(started, now):.0f}s but never Ready"
    return None


def _age(stamp: str, now: float) -> float:
    return now - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def up_watched(
    stack: auto.Stack,
    run: EngineRun,
    kube: Kube,
    namespace: str,
    selector: str,
    timeout: float,
    patience: float = 240,
) -> auto.UpResult:
    """`up` with a bounded wait: a pod stuck (Pending / not Ready) for ``patience`` s, or the whole
    operation over ``timeout`` s, interrupts the engine and fails naming what was awaited."""
    result: list[auto.UpResult] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(stack.up(on_output=run.on_output, on_event=run.on_event, color="never"))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="pulumi-up", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    problem: str | None = None
    while thread.is_alive():
        thread.join(10)
        if not thread.is_alive():
            break
        if time.monotonic() > deadline:
            problem = f"`pulumi up` still running after {timeout:.0f}s"
        else:
            problem = stall_problem(kube, namespace, selector, patience)
        if problem:
            interrupt_engine()
            thread.join(180)
            break
    if problem:
        raise AssertionError(f"{problem}; the engine was interrupted. Engine output:\n{run.tail()}")
    if error:
        said = run.errors() or error[0]  # no error diagnostic (the engine itself failed): the exception
        raise AssertionError(f"`pulumi up` failed: {said}\nEngine output:\n{run.tail()}") from error[0]
    return result[0]


@contextlib.contextmanager
def controller_manager_paused(kubeconfig: Path, seconds: float) -> Iterator[None]:
    """Freeze the embedded cluster's kube-controller-manager (SIGSTOP) for ``seconds`` from now, as a slow or
    overloaded control plane would be; it is resumed then, and on any exit of the block. The pid is the one
    tools/cluster.sh recorded when it started the process (run with --leader-elect=false: nothing expires)."""
    pid_file = kubeconfig.parent / "pids" / "kube-controller-manager.pid"
    pid = int(pid_file.read_text().strip())
    assert "kube-controller-manager" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"), pid
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        os.kill(pid, signal.SIGCONT)
