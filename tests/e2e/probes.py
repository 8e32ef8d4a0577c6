"""Probe pods for the NetworkPolicy's proofs: connections tried from inside Kubernetes, from a chosen
namespace (and node), against the cluster's pods.

A probe is a pod of the Redis image running a cluster-mode redis-server of its own, so the same pod
can also play a rogue node that asks the cluster to MEET it. Its checks run inside it with the image's
busybox and redis-cli: ``nc`` for a bare TCP connect (busybox nc exits 0 once connected; a REJECTed or
dropped connect exits 1 within its 3 s timeout) and for a scrape (an HTTP/1.0 GET), ``redis-cli`` for a real read
and write. A password goes in on stdin, read by the shell into REDISCLI_AUTH: never in argv.

Every expectation is polled for a bounded time (a policy change takes effect within about a second
of the enforcer seeing it); a refused MEET is watched for a while on every pod of the cluster.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from components.labels import BUS_PORT, REDIS_PORT
from components.metrics import METRICS_PORT
from tests.e2e.helpers import Kube, pod_view
from tests.toolkit import wait_for

CONNECT_TIMEOUT_S = 3
SETTLE_S = 30.0  # how long a changed policy may take to show (the enforcer reacts within ~1 s)
# How long a refused MEET is watched: the cluster cron tries a handshake every 100 ms and gives it up
# after the node timeout, so a MEET that could pass does so within a second or two.
MEET_WATCH_S = 10.0


@dataclass(frozen=True)
class Probe:
    kube: Kube
    namespace: str
    name: str
    ip: str

    def sh(self, script: str, stdin: str | None = None, timeout: float = 30) -> tuple[int, str]:
        proc = self.kube.run(
            "exec", "-i", "-n", self.namespace, self.name, "--", "sh", "-c", script,
            input=stdin, check=False, timeout=timeout,
        )  # fmt: skip
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def connects(self, ip: str, port: int) -> bool:
        """A TCP connect to ip:port completes (a policy REJECTs or drops it otherwise)."""
        rc, _ = self.sh(f"nc -w {CONNECT_TIMEOUT_S} {ip} {port} </dev/null")
        return rc == 0

    def read_write(self, ip: str, password: str | None) -> str | None:
        """SET then GET of a fresh key through ``ip`` (following MOVED); None when both worked, else why not."""
        key = f"probe:{self.namespace}:{uuid.uuid4().hex[:8]}"
        script = (
            'IFS= read -r REDISCLI_AUTH; [ -n "$REDISCLI_AUTH" ] && export REDISCLI_AUTH; '
            f"timeout 10 redis-cli -c -h {ip} -p {REDIS_PORT} SET {key} {self.name} && "
            f"timeout 10 redis-cli -c -h {ip} -p {REDIS_PORT} GET {key}"
        )
        rc, out = self.sh(script, stdin=(password or "") + "\n")
        lines = out.splitlines()
        return None if rc == 0 and lines[-2:] == ["OK", self.name] else f"rc {rc}: {out[-300:]}"

    def scrape(self, ip: str) -> str | None:
        """The exporter's metrics page at ip:9121 with redis_up 1: None when so, else why not. An HTTP/1.0
        GET through nc: the images' static busybox `wget` dies of SIGSEGV here (exit 139)."""
        rc, out = self.sh(f"printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | nc -w {CONNECT_TIMEOUT_S} {ip} {METRICS_PORT}")
        return None if rc == 0 and "\nredis_up 1" in out else f"rc {rc}: {out[-200:]}"

    def reach(self, ip: str, port: int, password: str | None) -> str | None:
        """None when a user of that port would call it reachable — a read and write (6379), a scrape with
        redis_up 1 (9121), a completed connect (the bus, whose protocol only peers speak) — else why not."""
        if port == REDIS_PORT:
            return self.read_write(ip, password)
        if port == METRICS_PORT:
            return self.scrape(ip)
        return None if self.connects(ip, port) else "connect failed"

    def meet(self, ip: str, port: int = REDIS_PORT, bus_port: int = BUS_PORT) -> None:
        """Ask this probe's own cluster-mode server to MEET ip:port (it then opens a bus link to ip:bus_port)."""
        rc, out = self.sh(f"redis-cli -p {REDIS_PORT} CLUSTER MEET {ip} {port} {bus_port}")
        assert rc == 0 and out == "OK", f"{self.name}: CLUSTER MEET {ip} {port} {bus_port}: {out}"


def start_probes(kube: Kube, image: str, where: list[tuple[str, str, str | None]]) -> list[Probe]:
    """One probe pod per (namespace, name, node or None), created together, each Ready with an IP.
    Namespaces that do not exist are created (labelled so a test can delete them after)."""
    for namespace in sorted({ns for ns, _name, _node in where}):
        if not kube.exists("namespace", namespace):
            kube.run("create", "namespace", namespace)
    docs = []
    for namespace, name, node in where:
        spec: dict[str, object] = {
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["redis-server", "--cluster-enabled", "yes", "--protected-mode", "no", "--save", "",
                                "--dir", "/tmp", "--cluster-config-file", "/tmp/nodes.conf"],
                }
            ],
            "terminationGracePeriodSeconds": 0,
        }  # fmt: skip
        if node:
            spec["nodeName"] = node
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": "e2e-probe"}},
                "spec": spec,
            }
        )
    kube.run("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    probes = []
    for namespace, name, _node in where:
        kube.run("wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}", "--timeout=120s", timeout=150)
        ip = kube.json("get", "pod", "-n", namespace, name)["status"]["podIP"]
        probes.append(Probe(kube, namespace, name, ip))
    return probes


def assert_reach(probe: Probe, ip: str, want: dict[int, bool], password: str | None, what: str) -> None:
    """Each port of ``want`` reachable or not from ``probe`` as said, polled until all are (a changed policy
    shows within about a second of the enforcer seeing it) for at most SETTLE_S."""

    def differs() -> str | None:
        why_not = {port: probe.reach(ip, port, password) for port in want}
        wrong = {port: why_not[port] or "reachable" for port in want if (why_not[port] is None) != want[port]}
        return None if not wrong else f"{what}: from {probe.namespace}/{probe.name} to {ip}: {wrong}, want {want}"

    wait_for(what, differs, SETTLE_S, interval=1.0)


def assert_meet_refused(
    kube: Kube,
    namespace: str,
    pods: list[str],
    rogue: Probe,
    target_ip: str,
    port: int = REDIS_PORT,
    bus_port: int = BUS_PORT,
) -> None:
    """The rogue asks to MEET a cluster pod (at its own address, or at a node's NodePorts): for MEET_WATCH_S
    no pod of the cluster ever lists the rogue, and the rogue never gets past the handshake (it never learns
    the target's node id)."""
    rogue.meet(target_ip, port, bus_port)
    deadline = time.monotonic() + MEET_WATCH_S
    while time.monotonic() < deadline:
        for pod in pods:
            seen = [n for n in pod_view(kube, namespace, pod).nodes if n.ip == rogue.ip]
            assert not seen, f"{pod} accepted the rogue {rogue.namespace}/{rogue.name} ({rogue.ip}): {seen}"
        time.sleep(1.0)
    _rc, out = rogue.sh(f"redis-cli -p {REDIS_PORT} CLUSTER NODES")
    linked = [line for line in out.splitlines() if f"{target_ip}:{port}" in line and "handshake" not in line]
    assert not linked, f"the rogue completed a handshake with {target_ip}: {linked}"
