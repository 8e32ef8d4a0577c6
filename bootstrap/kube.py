"""Finding the StatefulSet's pods, and reaching them through the Kubernetes API when pod IPs are not routable.

Only this module imports the ``kubernetes`` client, and only when a Kubernetes
discovery is asked for, so the planner, the operations and the static mode
(tests, benchmarks, the command line) never need a cluster or a kubeconfig.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

from bootstrap.endpoints import DirectConnector, Endpoint, Inventory, split_address
from bootstrap.operations import ConvergenceTimeout, Progress
from bootstrap.props import Announce

REDIS_PORT = 6379


def _load_config(context: str | None) -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(context=context or None)
    return client


def _core_api(context: str | None) -> Any:
    return _load_config(context).CoreV1Api()


def rollout_pending(sts: Any) -> str | None:
    """What the StatefulSet controller still has to roll, or None when every pod is at the current revision.

    Pulumi's await can report a StatefulSet update done before the controller
    has even seen it (seen here: "updated (0.28s) ... 0/0 Pods ready"), so the
    bootstrap ran in the middle of the rolling update and met pods being
    replaced. The converge therefore waits for the roll itself.
    """
    status, wanted = sts.status, sts.spec.replicas or 0
    if (status.observed_generation or 0) < (sts.metadata.generation or 0):
        return "the controller has not seen the new spec yet"
    if status.update_revision and status.current_revision != status.update_revision:
        return f"{status.updated_replicas or 0} of {wanted} pods at the new revision"
    if (status.updated_replicas or 0) < wanted:
        return f"{status.updated_replicas or 0} of {wanted} pods created"
    return None


def pod_inventory(
    namespace: str,
    statefulset: str,
    pod_count: int,
    timeout: float,
    progress: Progress,
    context: str | None = None,
    port: int = REDIS_PORT,
    wait: bool = True,
    announce: Announce | None = None,
) -> Inventory:
    """The StatefulSet's pods by ordinal; those at or beyond ``pod_count`` are marked to retire.

    With ``wait``, waits (bounded) until the StatefulSet has finished any
    rolling update and every declared ordinal has a pod with an IP; the error
    names what never got there. Without it (the
    drain, which runs before the StatefulSet exists or grows), takes what is there.
    ``announce`` (per-pod external access): the address each pod announces.
    """
    client = _load_config(context)
    api, apps = client.CoreV1Api(), client.AppsV1Api()
    deadline = time.monotonic() + timeout
    announced = rolling_said = False
    while wait and (rolling := rollout_pending(apps.read_namespaced_stateful_set(statefulset, namespace))):
        if time.monotonic() > deadline:
            raise ConvergenceTimeout(
                f"StatefulSet {statefulset} in namespace {namespace} is still rolling out after {timeout:.0f}s "
                f"({rolling}; see kubectl rollout status statefulset/{statefulset})"
            )
        if not rolling_said:
            progress(f"waiting for StatefulSet {statefulset} to finish its rolling update: {rolling}")
            rolling_said = True
        time.sleep(2.0)
    while True:
        pods = api.list_namespaced_pod(namespace).items
        endpoints: dict[int, Endpoint] = {}
        for pod in pods:
            owners = pod.metadata.owner_references or []
            if not any(o.kind == "StatefulSet" and o.name == statefulset for o in owners):
                continue
            ordinal = int(pod.metadata.name.rsplit("-", 1)[1])
            if not pod.status.pod_ip or pod.metadata.deletion_timestamp:
                continue
            endpoints[ordinal] = Endpoint(
                name=pod.metadata.name,
                address=f"{pod.status.pod_ip}:{port}",
                domain=pod.spec.node_name or "",
                order=ordinal,
                retire=ordinal >= pod_count,
                announced=announce.address(ordinal, pod.status.host_ip) if announce else "",
            )
        missing = [i for i in range(pod_count) if i not in endpoints]
        if not missing or not wait:
            return Inventory(tuple(endpoints[i] for i in sorted(endpoints)))
        if time.monotonic() > deadline:
            names = ", ".join(f"{statefulset}-{i}" for i in missing)
            raise ConvergenceTimeout(
                f"pods {names} in namespace {namespace} have no IP after {timeout:.0f}s "
                f"(pending, unschedulable or a volume not bound? see kubectl describe pod)"
            )
        if not announced:
            progress(f"waiting for pods {', '.join(f'{statefulset}-{i}' for i in missing)} to get an IP")
            announced = True
        time.sleep(1.0)


class PortForwardConnector(DirectConnector):
    """Dials each pod through a local listener that tunnels over the Kubernetes API (like kubectl port-forward).

    One listener per pod, one API port-forward stream per TCP connection; all
    of them end with ``close``. Cluster addresses (pod IPs) are still what the
    nodes are told to MEET: only this process's own traffic takes the tunnel.
    """

    def __init__(
        self,
        inventory: Inventory,
        namespace: str,
        context: str | None = None,
        password: str | None = None,
        username: str | None = None,
        fallback: tuple[str | None, str | None] | None = None,
    ) -> None:
        super().__init__(password, username, fallback)
        self._namespace = namespace
        self._context = context
        self._pods = {e.address: e.name for e in inventory.endpoints}
        self._tunnels: dict[str, _Tunnel] = {}
        self._api: Any = None

    def dial(self, address: str) -> tuple[str, int]:
        if address not in self._tunnels:
            if address not in self._pods:
                raise ValueError(f"{address} is not a pod of this deployment; no tunnel to it")
            if self._api is None:
                self._api = _core_api(self._context)
            _, port = split_address(address)
            self._tunnels[address] = _Tunnel(self._api, self._namespace, self._pods[address], port)
        return "127.0.0.1", self._tunnels[address].port

    def close(self) -> None:
        super().close()
        for tunnel in self._tunnels.values():
            tunnel.close()
        self._tunnels.clear()


class _Tunnel:
    def __init__(self, api: Any, namespace: str, pod: str, pod_port: int) -> None:
        self._api, self._namespace, self._pod, self._pod_port = api, namespace, pod, pod_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name=f"tunnel-{pod}").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        try:
            forward = portforward(
                self._api.connect_get_namespaced_pod_portforward,
                self._pod,
                self._namespace,
                ports=str(self._pod_port),
            )
            remote = forward.socket(self._pod_port)
        except Exception:
            # The API refused (pod gone, node lost): close our end now, so the client gets "connection
            # closed" at once instead of waiting out its socket timeout on every command.
            with contextlib.suppress(OSError):
                conn.close()
            return
        try:
            pair = {conn: remote, remote: conn}
            while not self._closed.is_set():
                readable, _, _ = select.select(list(pair), [], [], 0.5)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (conn, remote):
                with contextlib.suppress(OSError):
                    s.close()
            with contextlib.suppress(Exception):
                forward.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
