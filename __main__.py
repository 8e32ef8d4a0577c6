"""Pulumi program: config -> validated settings -> RedisCluster -> stack outputs.

Kept thin on purpose: checks live in components/settings/, objects in
components/, so that everything here is covered by the mocks tests.
"""

from __future__ import annotations

import pulumi

from components.cluster import RedisCluster, RedisClusterArgs
from components.settings import NAMESPACE, load_settings

settings = load_settings(pulumi.Config(NAMESPACE))
cluster = RedisCluster(settings.name, RedisClusterArgs(settings))

pulumi.export("namespace", cluster.namespace)
pulumi.export("statefulSetName", cluster.statefulset_name)
pulumi.export("podNames", cluster.pod_names)
pulumi.export("podDnsNames", cluster.pod_dns_names)
pulumi.export("headlessService", cluster.headless_service_name)
pulumi.export("clientService", cluster.client_endpoint)
pulumi.export("externalAccess", settings.external_access)
# per-pod: "<externalHost or the pod's node IP>:<NodePort of pod i>" for every pod; shared: the one NodePort.
pulumi.export("externalSeeds", cluster.external_seeds)
if settings.external_access == "shared":
    pulumi.export("externalNodePort", cluster.external_node_port)
    pulumi.export("externalEndpoint", f"<any-node-address>:{cluster.external_node_port}")
# The Secret's name only: `kubectl get secret <it> -o jsonpath='{.data.password}' | base64 -d`.
pulumi.export("authSecret", cluster.auth_secret_name)
if cluster.metrics_service_name is not None:
    # Headless: one endpoint per pod, port `metrics` (9121).
    pulumi.export("metricsService", cluster.metrics_service_name)
if cluster.backup is not None:
    # The backups' directory on the volume's node, and the CronJob (`kubectl create job --from=cronjob/<it>`).
    pulumi.export("backupVolume", {"node": settings.backup_node or None, "path": settings.backup_dir})
    if cluster.backup.cronjob is not None:
        pulumi.export("backupCronJob", cluster.backup.cronjob.metadata.apply(lambda m: m.name))
    if cluster.backup.restore is not None:
        pulumi.export("restoredFrom", settings.restore_from)
pulumi.export("storageClassName", settings.storage_class_name)
pulumi.export("volumeNames", [v.metadata.apply(lambda m: m.name) for v in cluster.storage.volumes])

if cluster.bootstrap is not None:
    pulumi.export("clusterState", cluster.bootstrap.clusterState)
    pulumi.export("masters", cluster.bootstrap.masterNodes)
    pulumi.export("replicaOf", cluster.bootstrap.replicaOf)
