"""Fixtures for the e2e tier: real Kubernetes clusters from ``tools/cluster.sh``.

* Tests here are skipped (with the reason) when the cluster has not been built
  (``tools/cluster.sh build``) or when not running as root.
* ``cluster`` (module): the single-node cluster. Reuses a running one (importing the images it
  lacks, ``tools/cluster.sh import``), or runs
  ``tools/cluster.sh up`` and, if it started it, ``tools/cluster.sh down`` when the
  module that used it is done (set ``REDIS_CLUSTER_E2E_KEEP=1`` to leave it running),
  so it does not idle on the 2 cores while the multi-node module runs.
* ``multi_cluster`` (module): the multi-node cluster (``tools/cluster.sh multi up 3``),
  the same way, stopped with ``multi down`` on success and failure; it can lose and
  bring back a whole node.
* ``kubeconfig`` (module): path of the single-node admin kubeconfig.
* ``kubectl``: runs the cluster's own kubectl with that kubeconfig.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "tools" / "cluster.sh"
UP_TIMEOUT_S = 600


def _sh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def cluster_cache_dir() -> Path:
    """The cache dir that ``tools/cluster.sh build`` fills for the pinned versions."""
    return Path(_sh("key").stdout.strip())


def cluster_missing_reason() -> str | None:
    """Why the e2e tier cannot run here, or None when it can."""
    if not CLUSTER_SH.exists():
        return f"{CLUSTER_SH} missing"
    if os.geteuid() != 0:
        return "the local Kubernetes cluster needs root (network namespaces, mounts, iptables)"
    cache = cluster_cache_dir()
    if not (cache / ".built").exists():
        return f"local Kubernetes cluster not built ({cache} missing): run tools/cluster.sh build"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    reason: str | None = None
    checked = False
    for item in items:
        if here not in Path(str(item.fspath)).resolve().parents:
            continue
        if not checked:
            reason, checked = cluster_missing_reason(), True
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    started_here: bool

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env


def _apiserver_running() -> bool:
    status = _sh("status")
    return status.returncode == 0 and "kube-apiserver: running" in status.stdout


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = cluster_missing_reason()
    if reason:
        pytest.skip(reason)
    started = False
    if not _apiserver_running():
        up = _sh("up", timeout=UP_TIMEOUT_S)
        if up.returncode != 0:
            _sh("down", timeout=120)
            pytest.fail(f"tools/cluster.sh up failed ({up.returncode}):\n{up.stderr[-4000:]}")
        started = True
    else:
        # A cluster started before `tools/cluster.sh build` made an image (the metrics sidecar's) lacks it.
        imported = _sh("import", timeout=120)
        if imported.returncode != 0:
            pytest.fail(f"tools/cluster.sh import failed ({imported.returncode}):\n{imported.stderr[-2000:]}")
    kubeconfig = Path(_sh("kubeconfig").stdout.strip())
    try:
        yield Cluster(kubeconfig=kubeconfig, bin_dir=cluster_cache_dir() / "bin", started_here=started)
    finally:
        if started and os.environ.get("REDIS_CLUSTER_E2E_KEEP") != "1":
            _sh("down", timeout=300)


@pytest.fixture(scope="module")
def kubeconfig(cluster: Cluster) -> Path:
    return cluster.kubeconfig


@pytest.fixture
def kubectl(cluster: Cluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, input=None, check=True)`` with the cluster's kubeconfig (tests.e2e.helpers.Kube)."""
    from tests.e2e.helpers import Kube

    return Kube(kubectl=cluster.kubectl_path, kubeconfig=cluster.kubeconfig).run


MULTI_NODES = 3


@dataclass(frozen=True)
class MultiCluster(Cluster):
    """The multi-node cluster: node name -> its own address, and where each node's kubelet keeps its pods."""

    nodes: dict[str, str]
    state_dir: Path

    def kubelet_dir(self, node: str) -> Path:
        return self.state_dir / "nodes" / node / "kubelet"

    def node_down(self, node: str) -> float:
        """Lose a whole node (unreachable, then its kubelet, containerd, kube-proxy and containers killed)."""
        return self._node("node-down", node)

    def node_up(self, node: str) -> float:
        """Bring it back and wait until it is Ready; returns the seconds it took."""
        return self._node("node-up", node)

    def _node(self, what: str, node: str) -> float:
        t0 = time.monotonic()
        proc = _sh("multi", what, node, timeout=UP_TIMEOUT_S)
        if proc.returncode != 0:
            raise AssertionError(
                f"tools/cluster.sh multi {what} {node} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return time.monotonic() - t0


def _multi_running() -> bool:
    status = _sh("multi", "status")
    return status.returncode == 0 and "kube-apiserver: running" in status.stdout


@pytest.fixture(scope="module")
def multi_cluster() -> Iterator[MultiCluster]:
    reason = cluster_missing_reason()
    if reason:
        pytest.skip(reason)
    started = False
    t0 = time.monotonic()
    if not _multi_running():
        up = _sh("multi", "up", str(MULTI_NODES), timeout=UP_TIMEOUT_S)
        if up.returncode != 0:
            _sh("multi", "down", timeout=300)
            pytest.fail(f"tools/cluster.sh multi up failed ({up.returncode}):\n{up.stderr[-4000:]}")
        started = True
    up_seconds = time.monotonic() - t0
    try:
        nodes = dict(line.split() for line in _sh("multi", "nodes").stdout.splitlines() if line.strip())
        status = _sh("multi", "status").stdout
        state = next(line.split()[1] for line in status.splitlines() if line.startswith("state: "))
        yield MultiCluster(
            kubeconfig=Path(_sh("multi", "kubeconfig").stdout.strip()),
            bin_dir=cluster_cache_dir() / "bin",
            started_here=started,
            nodes=nodes,
            state_dir=Path(state),
        )
    finally:
        if started and os.environ.get("REDIS_CLUSTER_E2E_KEEP") != "1":
            down = _sh("multi", "down", timeout=300)
            print(f"\n[e2e] multi-node cluster: up {up_seconds:.0f}s; down rc={down.returncode}")
