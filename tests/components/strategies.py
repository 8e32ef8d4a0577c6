"""Hypothesis strategies for valid settings, shared by the pure component tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from components.settings import ClusterSettings, validate

DNS_LABEL = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@st.composite
def settings(draw: st.DrawFn) -> ClusterSettings:
    masters = draw(st.integers(3, 5))
    replicas = draw(st.integers(0, 2))
    pods = masters * (1 + replicas)
    anti = draw(st.sampled_from(["preferred", "required"]))
    node_count = draw(st.integers(replicas + 1, pods + 2))
    if anti == "required":
        node_count = max(node_count, pods)
    nodes = draw(st.sampled_from([[], [f"node-{i}" for i in range(node_count)]]))
    external = draw(st.sampled_from(["none", "shared", "per-pod"]))
    tls = draw(st.booleans())
    metrics = draw(st.booleans())
    raw: dict[str, Any] = {
        "name": draw(DNS_LABEL),
        "namespace": draw(DNS_LABEL),
        "masters": masters,
        "replicasPerMaster": replicas,
        "storageSize": draw(st.sampled_from(["150Mi", "1Gi", "10Gi", "500M"])),
        "nodes": nodes,
        "antiAffinity": anti,
        # Below the per-pod ranges (31000+, 32000+) so that any draw is valid.
        "externalNodePort": draw(st.integers(30000, 30999)),
        "externalAccess": external,
        "externalHost": draw(st.sampled_from(["", "203.0.113.9"])) if external == "per-pod" else "",
        "nodeCidrs": ["10.0.0.0/16"],
        "auth": draw(st.booleans()),
        "allowDangerousCommands": draw(st.booleans()),
        "networkPolicy": draw(st.booleans()),
        "allowedClientNamespaces": draw(st.sampled_from([[], ["apps"]])),
        "allowedClientCidrs": draw(st.sampled_from([[], ["192.168.0.0/16", "fd00::/8"]])),
        "tls": tls,
        # per-pod with tls needs tlsOnly
        "tlsOnly": tls and (external == "per-pod" or draw(st.booleans())),
        "defaultStorageClass": draw(st.booleans()),
        "volumePermissionsInit": draw(st.booleans()),
        "cpuLimit": draw(st.sampled_from(["", "2"])),
        "memoryLimit": draw(st.sampled_from(["", "1Gi"])),
        "metrics": metrics,
        "metricsAllowedNamespaces": draw(st.sampled_from([[], ["monitoring"]])) if metrics else [],
    }
    return validate(raw)
