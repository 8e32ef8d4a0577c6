"""Backups on Kubernetes: the backup volume, the scheduled CronJob and the restore Job of ``restoreFrom``.

The volume is declared like the data volumes (no dynamic provisioning): one ``Retain`` PV, ``local``
on ``backupNode`` or a hostPath, pre-bound to the claim ``<name>-backup``, so ``pulumi destroy``
leaves its files and another stack naming the same directory finds them. Both jobs run the Redis
image's own ``redis-cli`` (no image of ours) through scripts in a ConfigMap of their own: a change to
them rolls no Redis pod. Their pods carry a ``name`` label of their own, so no selector of the Redis
pods (Services, the PodDisruptionBudget, the StatefulSet) ever picks them. Each mounts from the auth
Secret only the one password it logs in with: the CronJob the ``backup`` user's (no key access), the
restore the ``operator``'s (it writes every key once, into an empty cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import labels, nodes, redis_config, storage
from components.k8s import Manifest, resource_kwargs
from components.settings import BACKUP_USER, ClusterSettings

SCRIPTS_DIR = Path(__file__).parent / "scripts"
BACKUP_SCRIPT = "backup.sh"
RESTORE_SCRIPT = "restore.sh"
COMMON_SCRIPT = "backup-common.sh"  # sourced by both from their own directory
BACKUP_DIR = "/backup"
SCRIPTS_MOUNT = "/etc/redis-cluster-backup"
RESTORE_WORK = "/tmp/restore"
JOB_APP_NAME = "redis-cluster-backup"  # not labels.APP_NAME: the Redis pods' selectors must not match
JOB_UID = nodes.REDIS_UID  # the image's redis user, like the Redis pods


def claim_name(s: ClusterSettings) -> str:
    return f"{s.name}-backup"


def volume_name(s: ClusterSettings) -> str:
    """PVs are cluster-scoped: the namespace is part of the name."""
    return f"{s.namespace}-{s.name}-backup"


def scripts_config_map_name(s: ClusterSettings) -> str:
    return f"{s.name}-backup-scripts"


def cronjob_name(s: ClusterSettings) -> str:
    return f"{s.name}-backup"


def restore_job_name(s: ClusterSettings) -> str:
    return f"{s.name}-restore"


def job_labels(s: ClusterSettings, component: str) -> dict[str, str]:
    return {
        **labels.standard_labels(s, component),
        "app.kubernetes.io/name": JOB_APP_NAME,
    }


def volume_manifest(s: ClusterSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(s), "labels": labels.standard_labels(s, "backup")},
        "spec": storage.volume_spec(s, s.backup_size, claim_name(s), s.backup_dir, s.backup_node or None),
    }


def claim_manifest(s: ClusterSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "backup"),
            "annotations": dict(storage.SKIP_AWAIT),
        },
        "spec": {**storage.claim_spec(s, s.backup_size), "volumeName": volume_name(s)},
    }


def scripts_config_map_manifest(s: ClusterSettings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": scripts_config_map_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "backup"),
        },
        "data": {name: (SCRIPTS_DIR / name).read_text() for name in (BACKUP_SCRIPT, RESTORE_SCRIPT, COMMON_SCRIPT)},
    }


def _nodes_env(s: ClusterSettings) -> Manifest:
    """Every pod by its stable name: the scripts ask each which node it is."""
    return {
        "name": "REDIS_NODES",
        "value": " ".join(f"{labels.pod_fqdn(s, i)}:{labels.REDIS_PORT}" for i in range(s.pod_count)),
    }


def _pod_spec(s: ClusterSettings, script: str, password_key: str, env: list[Manifest], writes: bool) -> Manifest:
    mounts: list[Manifest] = [
        {"name": "backup", "mountPath": BACKUP_DIR, "readOnly": not writes},
        {"name": "scripts", "mountPath": SCRIPTS_MOUNT, "readOnly": True},
        {"name": "auth", "mountPath": redis_config.AUTH_DIR, "readOnly": True},
        {"name": "work", "mountPath": "/tmp"},
    ]
    volumes: list[Manifest] = [
        {"name": "backup", "persistentVolumeClaim": {"claimName": claim_name(s), "readOnly": not writes}},
        {"name": "scripts", "configMap": {"name": scripts_config_map_name(s), "defaultMode": 0o444}},
        {
            "name": "auth",
            "secret": {
                "secretName": labels.auth_secret_name(s),
                "defaultMode": 0o440,
                "items": [{"key": password_key, "path": password_key}],
            },
        },
        {"name": "work", "emptyDir": {}},
    ]
    # hostPath directories are created root-owned and fsGroup does not apply to them.
    init = [nodes.volume_permissions_container(s, "backup", BACKUP_DIR)] if writes and s.volume_permissions_init else []
    spec: Manifest = {
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": JOB_UID,
            "runAsGroup": JOB_UID,
            "fsGroup": JOB_UID,
        },
        "containers": [
            {
                "name": "backup" if writes else "restore",
                "image": s.image,
                "imagePullPolicy": s.image_pull_policy,
                "command": ["sh", f"{SCRIPTS_MOUNT}/{script}"],
                "env": [
                    _nodes_env(s),
                    {"name": "BACKUP_DIR", "value": BACKUP_DIR},
                    {"name": "REDIS_AUTH_DIR", "value": redis_config.AUTH_DIR},
                    *env,
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                # The restore's loaders hold one shard's keys each in memory: no limit that would kill them.
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if init:
        spec["initContainers"] = init
    if s.backup_node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": s.backup_node}
    return spec


def cronjob_manifest(s: ClusterSettings) -> Manifest:
    pod = _pod_spec(
        s,
        BACKUP_SCRIPT,
        redis_config.BACKUP_PASSWORD_KEY,
        [
            {"name": "BACKUP_USER", "value": BACKUP_USER},
            {"name": "BACKUP_RETENTION", "value": str(s.backup_retention)},
        ],
        writes=True,
    )
    meta = {"labels": job_labels(s, "backup")}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob_name(s), "namespace": s.namespace, **meta},
        "spec": {
            "schedule": s.backup_schedule,
            # One backup at a time: two would pause writes twice and race for the retention.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": meta,
                # A failed run (e.g. a pause that lapsed) kept nothing; once more, then the next schedule.
                "spec": {"backoffLimit": 1, "template": {"metadata": meta, "spec": pod}},
            },
        },
    }


def restore_job_manifest(s: ClusterSettings) -> Manifest:
    pod = _pod_spec(
        s,
        RESTORE_SCRIPT,
        redis_config.OPERATOR_PASSWORD_KEY,
        [
            {"name": "RESTORE_FROM", "value": s.restore_from},
            {"name": "RESTORE_USER", "value": redis_config.OPERATOR_USER},
            {"name": "RESTORE_WORK", "value": RESTORE_WORK},
        ],
        writes=False,
    )
    meta = {"labels": job_labels(s, "restore")}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": restore_job_name(s), "namespace": s.namespace, **meta},
        # Never retried: a restore that stopped half-way left keys, and a second one would be refused.
        "spec": {"backoffLimit": 0, "template": {"metadata": meta, "spec": pod}},
    }


@dataclass(frozen=True)
class BackupArgs:
    settings: ClusterSettings
    # The Namespace when the program creates it.
    depends_on: tuple[pulumi.Resource, ...] = ()
    # The auth Secret the jobs mount.
    secrets: tuple[pulumi.Resource, ...] = ()
    # The bootstrap: the restore runs once the cluster is formed.
    restore_after: tuple[pulumi.Resource, ...] = ()


class Backup(pulumi.ComponentResource):
    """The backup volume and claim, the scripts, the CronJob (``backupSchedule``) and the restore Job
    (``restoreFrom``), which the ``up`` that creates the stack waits for."""

    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:backup:Backup", name, None, opts)
        s = args.settings
        self.volume = k8s.core.v1.PersistentVolume(
            f"{name}-pv", **resource_kwargs(volume_manifest(s)), opts=pulumi.ResourceOptions(parent=self)
        )
        self.claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-pvc",
            **resource_kwargs(claim_manifest(s)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.volume, *args.depends_on]),
        )
        jobs = pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.claim, *args.secrets])
        self.scripts = k8s.core.v1.ConfigMap(
            f"{name}-scripts", **resource_kwargs(scripts_config_map_manifest(s)), opts=jobs
        )
        jobs = pulumi.ResourceOptions.merge(jobs, pulumi.ResourceOptions(depends_on=[self.scripts]))
        self.cronjob: k8s.batch.v1.CronJob | None = None
        if s.backup_schedule:
            self.cronjob = k8s.batch.v1.CronJob(f"{name}-cronjob", **resource_kwargs(cronjob_manifest(s)), opts=jobs)
        self.restore: k8s.batch.v1.Job | None = None
        if s.restore_from:
            self.restore = k8s.batch.v1.Job(
                f"{name}-restore",
                **resource_kwargs(restore_job_manifest(s)),
                # Once per stack: a later change of image or script must not run it again (it would be
                # refused anyway: the cluster holds keys by then).
                opts=pulumi.ResourceOptions.merge(
                    jobs, pulumi.ResourceOptions(depends_on=list(args.restore_after), ignore_changes=["spec"])
                ),
            )
        self.register_outputs(
            {
                "claimName": self.claim.metadata.name,
                "cronJobName": self.cronjob.metadata.name if self.cronjob else None,
                "restoreJobName": self.restore.metadata.name if self.restore else None,
            }
        )
