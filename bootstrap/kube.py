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
from bootstrap.errors import BootstrapError, ConvergenceTimeout
from bootstrap.props import Announce
from bootstrap.waiting import Progress, poll

REDIS_PORT = 6379
ON_DELETE = "OnDelete"
REVISION_LABEL = "controller-revision-hash"


def _load_config(context: str | None) -> Any:
    from kubernetes import client, config

    if context:  # a named context is a kubeconfig's, also when this runs inside a pod
        config.load_kube_config(context=context)
        return client
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
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
    if sts.spec.update_strategy and sts.spec.update_strategy.type == ON_DELETE:
        return None  # nothing rolls by itself: stale pods are the bootstrap's roll (bootstrap/roll.py)
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
    deadline = time.monotonic() + timeout  # the rollout and the pods' IPs share it
    if wait:
        said = False

        def rolled() -> str | None:
            nonlocal said
            sts = _read_statefulset(apps, namespace, statefulset)
            rolling = "it does not exist yet" if sts is None else rollout_pending(sts)
            if rolling and not said:
                progress(f"waiting for StatefulSet {statefulset} to finish its rolling update: {rolling}")
                said = True
            return rolling

        poll(
            f"StatefulSet {statefulset} in namespace {namespace} did not finish rolling out "
            f"(see kubectl rollout status statefulset/{statefulset})",
            rolled,
            timeout,
            interval=2.0,
        )
    announced = False
    while True:
        endpoints: dict[int, Endpoint] = {}
        for pod in owned_pods(api, namespace, statefulset).values():
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
            names = [f"{statefulset}-{i}" for i in missing]
            pods = owned_pods(api, namespace, statefulset)
            causes = [f"{n}: {_not_ready(pods[n], api)}" for n in names if n in pods]
            raise ConvergenceTimeout(
                f"pods {', '.join(names)} in namespace {namespace} have no IP after {timeout:.0f}s "
                f"(pending, unschedulable or a volume not bound? see kubectl describe pod)"
                + (f": {'; '.join(causes)}" if causes else "")
            )
        if not announced:
            progress(f"waiting for pods {', '.join(f'{statefulset}-{i}' for i in missing)} to get an IP")
            announced = True
        time.sleep(1.0)


def statefulset_inventory(
    namespace: str, statefulset: str, progress: Progress, context: str | None = None
) -> Inventory:
    """Every pod the StatefulSet runs now, with an IP (the command line's view: no waiting, none to retire)."""
    client = _load_config(context)
    sts = _read_statefulset(client.AppsV1Api(), namespace, statefulset)
    if sts is None:
        raise BootstrapError(
            f"no StatefulSet {statefulset} in namespace {namespace} (kubectl get statefulset -n {namespace})"
        )
    inventory = pod_inventory(namespace, statefulset, sts.spec.replicas or 0, 0, progress, context, wait=False)
    if not inventory.endpoints:
        raise BootstrapError(f"StatefulSet {namespace}/{statefulset} has no pod with an IP")
    return inventory


def owned_pods(api: Any, namespace: str, statefulset: str) -> dict[str, Any]:
    """The StatefulSet's pods by name (those its controller owns), whatever their state."""
    out = {}
    for pod in api.list_namespaced_pod(namespace).items:
        owners = pod.metadata.owner_references or []
        if any(o.kind == "StatefulSet" and o.name == statefulset for o in owners):
            out[pod.metadata.name] = pod
    return out


def _read_statefulset(apps: Any, namespace: str, name: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return apps.read_namespaced_stateful_set(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def ensure_on_delete(namespace: str, statefulset: str, progress: Progress, context: str | None = None) -> bool:
    """Switch a live StatefulSet made with ``RollingUpdate`` to ``OnDelete`` before the program applies it.

    The API server keeps the ``rollingUpdate: {partition: 0}`` it defaulted,
    and then refuses the type change the program applies ("only allowed for
    updateStrategy 'RollingUpdate'", kubernetes/kubernetes#100151): only a
    patch that nulls it goes through. Run by the drain, which the StatefulSet
    waits for, so stacks created before the bootstrap rolled pods upgrade in
    one `pulumi up`. Returns whether it patched.
    """
    apps = _load_config(context).AppsV1Api()
    sts = _read_statefulset(apps, namespace, statefulset)
    if sts is None or (sts.spec.update_strategy and sts.spec.update_strategy.type == ON_DELETE):
        return False
    was = sts.spec.update_strategy.type if sts.spec.update_strategy else "RollingUpdate"
    progress(f"StatefulSet {statefulset}: updateStrategy {was} -> OnDelete (the bootstrap rolls its pods)")
    apps.patch_namespaced_stateful_set(
        statefulset, namespace, {"spec": {"updateStrategy": {"type": ON_DELETE, "rollingUpdate": None}}}
    )
    return True


CONTROLLER_WAIT_S = 300.0  # the controller sees a spec within a second; minutes mean it is not running


class StatefulSetPods:
    """The StatefulSet's pods as ``bootstrap.roll.Pods``: stale = not at its update revision; a restart
    deletes the pod (gracefully: its preStop hook runs) and waits for the controller's new one."""

    def __init__(
        self,
        namespace: str,
        statefulset: str,
        pod_count: int,
        progress: Progress,
        context: str | None = None,
        announce: Announce | None = None,
    ) -> None:
        self._namespace, self._statefulset, self._pod_count = namespace, statefulset, pod_count
        self._progress, self._context, self._announce = progress, context, announce
        client = _load_config(context)
        self._api, self._apps = client.CoreV1Api(), client.AppsV1Api()

    def _revision(self, timeout: float = 0.0) -> str:
        """The revision pods should run, once the controller has seen the current spec.

        Before that, the status still names the old revision: every pod looked current and `pulumi up`
        succeeded without rolling anything (Pulumi's await returned "updated (0.28s)" before the
        controller had looked; a paused or slow controller-manager makes it last).
        """
        found: list[str] = []

        def seen() -> str | None:
            sts = self._apps.read_namespaced_stateful_set(self._statefulset, self._namespace)
            observed, generation = sts.status.observed_generation or 0, sts.metadata.generation or 0
            if observed < generation:
                return (
                    f"the StatefulSet controller has not seen generation {generation} yet (observed {observed}): "
                    f"is kube-controller-manager running?"
                )
            found.append(str(sts.status.update_revision or ""))
            return None

        wait = min(timeout, CONTROLLER_WAIT_S) if timeout > 0 else CONTROLLER_WAIT_S
        poll(f"StatefulSet {self._statefulset}'s new spec to be seen", seen, wait, interval=1.0)
        return found[-1]

    def _pods(self) -> dict[str, Any]:
        return owned_pods(self._api, self._namespace, self._statefulset)

    def stale(self) -> list[str]:
        revision = self._revision()
        if not revision:
            return []
        stale = []
        for name, pod in self._pods().items():
            ordinal = int(name.rsplit("-", 1)[1])
            if ordinal < self._pod_count and (pod.metadata.labels or {}).get(REVISION_LABEL) != revision:
                stale.append((ordinal, name))
        return [name for _, name in sorted(stale)]

    def inventory(self, timeout: float) -> Inventory:
        return pod_inventory(
            self._namespace,
            self._statefulset,
            self._pod_count,
            timeout,
            self._progress,
            self._context,
            announce=self._announce,
        )

    def restart(self, name: str, timeout: float, progress: Progress) -> None:
        deadline = time.monotonic() + timeout  # one budget for the eviction, the controller and the pod

        def left() -> float:
            return max(deadline - time.monotonic(), 1.0)

        old = self._pods().get(name)
        old_uid = old.metadata.uid if old is not None else None
        if old is not None and not old.metadata.deletion_timestamp:
            self._evict(name, left(), progress)
        revision = self._revision(left())

        def back() -> str | None:
            pod = self._pods().get(name)
            if pod is None or pod.metadata.uid == old_uid:
                return "the old pod is still stopping" if pod is not None else "not recreated yet"
            if (pod.metadata.labels or {}).get(REVISION_LABEL) != revision:
                return f"recreated at revision {(pod.metadata.labels or {}).get(REVISION_LABEL)}, not {revision}"
            if pod.status.pod_ip and (_is_ready(pod) or _running_for(pod) >= RUNNING_IS_BACK_S):
                return None
            return _not_ready(pod, self._api)

        poll(f"pod {name} in namespace {self._namespace} to come back Ready", back, left(), interval=1.0)

    def ready(self, name: str) -> bool:
        """Kubernetes' word on whether the pod serves: its Ready condition, and not being deleted."""
        pod = self._pods().get(name)
        return pod is not None and not pod.metadata.deletion_timestamp and _is_ready(pod)

    def _evict(self, name: str, timeout: float, progress: Progress) -> None:
        """Stop the pod through the Eviction API, so the PodDisruptionBudget is honoured.

        A plain delete bypassed it: a `kubectl drain` (or a second run) could take another pod of the
        shard, the heir of a handover among them, while this one was down. The budget refuses (429)
        while another pod is disrupted; that is waited out, bounded by the run's time.
        """
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=self._namespace))
        said = False

        def evicted() -> str | None:
            nonlocal said
            try:
                self._api.create_namespaced_pod_eviction(name, self._namespace, body)
                return None
            except ApiException as exc:
                if exc.status == 404:
                    return None  # gone already
                if exc.status == 403:
                    raise BootstrapError(
                        f"evicting pod {name} in namespace {self._namespace} was forbidden: the bootstrap's "
                        f"Kubernetes credentials need create on pods/eviction ({exc.reason})"
                    ) from exc
                if exc.status != 429:
                    raise BootstrapError(
                        f"evicting pod {name} in namespace {self._namespace}: {exc.status} {exc.reason}"
                    ) from exc
                reason = f"the PodDisruptionBudget does not allow evicting {name} now (another pod is disrupted)"
                if not said:
                    progress(f"waiting: {reason}")
                    said = True
                return reason

        poll(f"evicting pod {name} in namespace {self._namespace}", evicted, timeout, interval=2.0)


def _is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# A pod whose every container has run this long without a restart is back as far as Kubernetes can tell,
# Ready or not: the readiness probe keeps an empty node that knows no one not Ready until it is joined
# (components/nodes.py), and joining it is the roll's own heal, which runs only once the restart returns.
RUNNING_IS_BACK_S = 15.0


def _running_for(pod: Any) -> float:
    """Seconds since the last of the pod's containers started running; 0 while any is not running."""
    statuses = pod.status.container_statuses or []
    started = [s.state.running.started_at for s in statuses if s.state and s.state.running]
    if not statuses or len(started) < len(statuses) or any(t is None for t in started):
        return 0.0
    return max(0.0, time.time() - max(float(t.timestamp()) for t in started))


def _not_ready(pod: Any, api: Any = None) -> str:
    """Why a pod is not Ready, in the words kubectl would show: the container's state (ErrImageNeverPull,
    CrashLoopBackOff ...), how its last run ended (OOMKilled, exit code), restarts, and the pod's latest
    warning events (FailedScheduling, FailedMount ...) when ``api`` can read them."""
    said = []
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        last = status.last_state.terminated if status.last_state else None
        parts = [f"{waiting.reason} {waiting.message or ''}".strip()] if waiting and waiting.reason else []
        if last is not None:
            parts.append(f"last run ended {last.reason or 'Error'} (exit code {last.exit_code})")
        if status.restart_count:
            parts.append(f"{status.restart_count} restart(s)")
        if parts:
            said.append(f"container {status.name}: {', '.join(parts)}")
    said += _warnings(api, pod) if api is not None else []
    return "; ".join(said) or f"phase {pod.status.phase}, not Ready (see kubectl describe pod {pod.metadata.name})"


def _warnings(api: Any, pod: Any, most: int = 3) -> list[str]:
    """The pod's latest warning events, newest last; none when they cannot be read (no right to, say)."""
    try:
        events = api.list_namespaced_event(
            pod.metadata.namespace, field_selector=f"involvedObject.name={pod.metadata.name},type=Warning"
        ).items
    except Exception:  # a diagnostic must never hide the error it decorates
        return []

    def when(e: Any) -> Any:
        return e.last_timestamp or e.event_time or e.metadata.creation_timestamp

    recent = sorted((e for e in events if when(e) is not None), key=when)[-most:]
    return [f"event {e.reason}: {(e.message or '').strip()}" for e in recent]


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
        self._tunnels_lock = threading.Lock()  # not the clients' lock: client() dials while holding that one
        self._api: Any = None

    def dial(self, address: str) -> tuple[str, int]:
        """A tunnel's local end; several threads may ask at once (the restore's loaders MIGRATE in parallel)."""
        with self._tunnels_lock:
            return "127.0.0.1", self._tunnel(address).port

    def _tunnel(self, address: str) -> _Tunnel:
        if address not in self._tunnels:
            if address not in self._pods:
                raise ValueError(f"{address} is not a pod of this deployment; no tunnel to it")
            if self._api is None:
                self._api = _core_api(self._context)
            _, port = split_address(address)
            self._tunnels[address] = _Tunnel(self._api, self._namespace, self._pods[address], port)
        return self._tunnels[address]

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
