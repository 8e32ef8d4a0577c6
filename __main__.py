"""Pulumi program: config -> validated settings -> RedisCluster -> stack outputs.

Kept thin on purpose: checks live in components/settings.py, objects in
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
pulumi.export("externalNodePort", cluster.external_node_port)
pulumi.export("externalEndpoint", f"<any-node-address>:{cluster.external_node_port}")
pulumi.export("storageClassName", settings.storage_class_name)
pulumi.export("volumeNames", [v.metadata.apply(lambda m: m.name) for v in cluster.storage.volumes])

if cluster.bootstrap is not None:
    pulumi.export("clusterState", cluster.bootstrap.clusterState)
    pulumi.export("masters", cluster.bootstrap.masterNodes)
    pulumi.export("replicaOf", cluster.bootstrap.replicaOf)
