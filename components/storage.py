"""Local storage: a no-provisioner StorageClass, one Retain PV per pod and its claim.

Every PV is pre-bound (claimRef) to exactly the claim pod i asks for
(``data-<statefulset>-<i>``) and every claim names its volume, so pod i always
gets volume i back — after a reschedule, a failover (failure #10 in
docs/architecture.md) or a destroy/up cycle. The claims are owned by this
component rather than left to the StatefulSet controller: see "Claims" in
docs/architecture.md for why.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import labels
from components.k8s import Manifest, resource_kwargs
from components.settings import ClusterSettings

PROVISIONER = "kubernetes.io/no-provisioner"
BINDING_MODE = "WaitForFirstConsumer"
ACCESS_MODES = ["ReadWriteOnce"]
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_class_manifest(s: ClusterSettings) -> Manifest:
    metadata: dict[str, object] = {
        "name": s.storage_class_name,
        "labels": labels.standard_labels(s, "storage"),
    }
    if s.default_storage_class:
        metadata["annotations"] = {DEFAULT_CLASS_ANNOTATION: "true"}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": metadata,
        "provisioner": PROVISIONER,
        "volumeBindingMode": BINDING_MODE,
        "reclaimPolicy": "Retain",
        "allowVolumeExpansion": False,
    }


def claim_spec(s: ClusterSettings, size: str | None = None) -> Manifest:
    """The claim spec shared by the StatefulSet's template, the owned claims (``storageSize``) and the
    backup volume's claim (its own ``size``)."""
    return {
        "accessModes": list(ACCESS_MODES),
        "storageClassName": s.storage_class_name,
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": size or s.storage_size}},
    }


def volume_spec(s: ClusterSettings, size: str, claim: str, path: str, node: str | None) -> Manifest:
    """A Retain PV pre-bound to ``claim``: ``local`` pinned to ``node``, or a hostPath without one.
    Shared with the backup volume (components/backup.py)."""
    spec: Manifest = {
        "capacity": {"storage": size},
        "accessModes": list(ACCESS_MODES),
        "volumeMode": "Filesystem",
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": s.storage_class_name,
        # Only namespace + name: a fresh PV binds to the claim of that name whatever its uid.
        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": s.namespace, "name": claim},
    }
    if node is None:
        spec["hostPath"] = {"path": path, "type": "DirectoryOrCreate"}
    else:
        spec["local"] = {"path": path}
        spec["nodeAffinity"] = {
            "required": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
                ]
            }
        }
    return spec


def volume_manifest(s: ClusterSettings, ordinal: int) -> Manifest:
    spec = volume_spec(
        s, s.storage_size, labels.claim_name(s, ordinal), labels.volume_path(s, ordinal), labels.volume_node(s, ordinal)
    )
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": labels.volume_name(s, ordinal),
            "labels": {**labels.standard_labels(s, "storage"), "redis-cluster/ordinal": str(ordinal)},
        },
        "spec": spec,
    }


# pulumi-kubernetes awaits a claim of a WaitForFirstConsumer class only while it is Pending
# (pulumi/pulumi-kubernetes#3130); ours are pre-bound and often Bound before the first poll, which
# it then waits out for 5 minutes and fails (seen in 3 of 4 e2e runs). Binding is still proven: the
# bootstrap, which depends on the StatefulSet, waits (bounded) until every pod runs and answers.
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}


def claim_manifest(s: ClusterSettings, ordinal: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": labels.claim_name(s, ordinal),
            "namespace": s.namespace,
            "labels": {**labels.standard_labels(s, "storage"), "redis-cluster/ordinal": str(ordinal)},
            "annotations": dict(SKIP_AWAIT),
        },
        "spec": {**claim_spec(s), "volumeName": labels.volume_name(s, ordinal)},
    }


@dataclass(frozen=True)
class StorageArgs:
    settings: ClusterSettings
    # e.g. the Namespace when the program creates it: claims are namespaced.
    depends_on: tuple[pulumi.Resource, ...] = ()


class Storage(pulumi.ComponentResource):
    """StorageClass, PVs and claims; the StatefulSet must depend on ``claims``."""

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:storage:Storage", name, None, opts)
        s = args.settings
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{name}-class",
            **resource_kwargs(storage_class_manifest(s)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.volumes: list[k8s.core.v1.PersistentVolume] = []
        self.claims: list[k8s.core.v1.PersistentVolumeClaim] = []
        for i in range(s.pod_count):
            volume = k8s.core.v1.PersistentVolume(
                f"{name}-pv-{i}",
                **resource_kwargs(volume_manifest(s, i)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.storage_class]),
            )
            self.volumes.append(volume)
            self.claims.append(
                k8s.core.v1.PersistentVolumeClaim(
                    f"{name}-pvc-{i}",
                    **resource_kwargs(claim_manifest(s, i)),
                    # A claim the StatefulSet controller made again after a lost volume (README "A lost
                    # volume or node") has no volumeName until the PV binds it: that is no reason to
                    # replace it, and a replaced claim would leave its PV Released, never to bind again.
                    opts=pulumi.ResourceOptions(
                        parent=self, depends_on=[volume, *args.depends_on], ignore_changes=["spec.volumeName"]
                    ),
                )
            )
        self.register_outputs(
            {
                "storageClassName": self.storage_class.metadata.name,
                "volumeNames": [v.metadata.name for v in self.volumes],
                "claimNames": [c.metadata.name for c in self.claims],
            }
        )
