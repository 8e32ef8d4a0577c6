"""Names and labels shared by every object, derived from settings in one place.

The PV ↔ claim binding, the pod DNS names that nodes.conf records and the
Service selectors all depend on these strings agreeing; deriving them here keeps
one module from drifting from another.
"""

from __future__ import annotations

from components.settings import ClusterSettings

APP_NAME = "redis-cluster"
DATA_VOLUME = "data"  # volumeClaimTemplates name: claims are `data-<statefulset>-<ordinal>`
REDIS_PORT = 6379
BUS_PORT = 16379  # Redis Cluster bus: always client port + 10000


def image_version(image: str) -> str:
    """The tag of an image reference, for the app.kubernetes.io/version label (label-safe)."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in tag)[:63].strip("-_.")
    return safe or "unknown"


def selector_labels(s: ClusterSettings) -> dict[str, str]:
    """Immutable subset used by selectors (a StatefulSet selector cannot change later)."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": s.name}


def standard_labels(s: ClusterSettings, component: str) -> dict[str, str]:
    return {
        **selector_labels(s),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": APP_NAME,
        "app.kubernetes.io/managed-by": "pulumi",
        "app.kubernetes.io/version": image_version(s.image),
    }


def statefulset_name(s: ClusterSettings) -> str:
    return s.name


def headless_service_name(s: ClusterSettings) -> str:
    return f"{s.name}-headless"


def client_service_name(s: ClusterSettings) -> str:
    return s.name


def external_service_name(s: ClusterSettings) -> str:
    return f"{s.name}-external"


def config_map_name(s: ClusterSettings) -> str:
    return f"{s.name}-config"


def pdb_name(s: ClusterSettings) -> str:
    return s.name


def pod_name(s: ClusterSettings, ordinal: int) -> str:
    return f"{statefulset_name(s)}-{ordinal}"


def pod_names(s: ClusterSettings) -> list[str]:
    return [pod_name(s, i) for i in range(s.pod_count)]


def pod_fqdn(s: ClusterSettings, ordinal: int) -> str:
    """Stable DNS name of pod ``ordinal`` through the headless Service (what nodes.conf records)."""
    return f"{pod_name(s, ordinal)}.{headless_service_name(s)}.{s.namespace}.svc.{s.cluster_domain}"


def claim_name(s: ClusterSettings, ordinal: int) -> str:
    """The claim the StatefulSet controller asks for on behalf of pod ``ordinal``."""
    return f"{DATA_VOLUME}-{statefulset_name(s)}-{ordinal}"


def volume_name(s: ClusterSettings, ordinal: int) -> str:
    """PVs are cluster-scoped, so the namespace is part of the name."""
    return f"{s.namespace}-{s.name}-{ordinal}"


def volume_path(s: ClusterSettings, ordinal: int) -> str:
    return f"{s.host_path_base}/{s.namespace}/{s.name}-{ordinal}"


def volume_node(s: ClusterSettings, ordinal: int) -> str | None:
    """Round-robin over ``nodes``: any replicasPerMaster+1 consecutive ordinals land on distinct nodes."""
    return s.nodes[ordinal % len(s.nodes)] if s.nodes else None


def auth_secret_name(s: ClusterSettings) -> str:
    return f"{s.name}-auth"


def generated_tls_secret_name(s: ClusterSettings) -> str:
    return f"{s.name}-tls"


def tls_secret_name(s: ClusterSettings) -> str:
    """The user's Secret when named (tlsSecretName), else the one the program generates."""
    return s.tls_secret_name or generated_tls_secret_name(s)


def network_policy_name(s: ClusterSettings) -> str:
    return s.name


def per_pod_service_name(s: ClusterSettings, ordinal: int) -> str:
    return f"{s.name}-external-{ordinal}"


POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"  # set on every pod by the StatefulSet controller
