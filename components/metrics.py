"""Metrics: the redis_exporter sidecar, the Service Prometheus finds it through, the optional ServiceMonitor.

One exporter per pod, talking to its own Redis over loopback: a cluster's metrics are per node
(role, keys, replication offset, memory), and one exporter for the whole cluster would hide which
node is sick. The Service is headless and publishes not-ready pods: it exists for discovery (each
endpoint is one pod; a ClusterIP would land each scrape on a random pod), and a pod that is not
Ready — a replica still syncing — is the one whose metrics matter most.

The exporter logs in as the ACL user ``exporter`` (components/redis_config.py: read-only commands,
no keys) with a password file from the auth Secret, a JSON map from the one Redis URI it scrapes to
the password (``--redis.password-file``). Not ``--redis.password`` / ``REDIS_PASSWORD``: the
exporter's ``/scrape?target=<any host>`` endpoint sends that password to whatever host a caller
names, while a password-file entry is used only for its own URI. CONFIG is skipped
(``--config-command=-``): the user may not run it, and a denied command on every scrape would fill
the ACL LOG that operators watch for intrusions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import labels
from components.k8s import Manifest, resource_kwargs
from components.settings import EXPORTER_USER, ClusterSettings

METRICS_PORT = 9121  # redis_exporter's default, what dashboards and scrape configs expect
PORT_NAME = "metrics"
CONTAINER_NAME = "redis-exporter"
# The exporter's own view of the auth Secret: its password file only (items), never the other users'.
AUTH_VOLUME = "exporter-auth"
AUTH_DIR = "/etc/redis-exporter"
PASSWORD_FILE = "passwords.json"
PASSWORD_FILE_KEY = f"{EXPORTER_USER}-passwords.json"  # its key in the auth Secret
# tlsOnly: the CA certificate alone (not the server's key) to verify the node it scrapes.
TLS_VOLUME = "exporter-tls"
TLS_DIR = "/etc/redis-exporter-tls"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"


def metrics_service_name(s: ClusterSettings) -> str:
    return f"{s.name}-metrics"


def service_monitor_name(s: ClusterSettings) -> str:
    return s.name


def redis_address(s: ClusterSettings) -> str:
    """The pod's own Redis: TLS when the plain port is closed. 127.0.0.1, which the generated
    certificate (and, per docs/config.md, a named one) covers."""
    return f"{'rediss' if s.tls_only else 'redis'}://127.0.0.1:{labels.REDIS_PORT}"


def password_file(address: str, password: str) -> str:
    """The exporter's password file: the key is the address with the user, as the exporter looks it up
    (exporter/redis.go lookupPasswordInPasswordMap)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError(f"address {address!r} has no scheme (redis:// or rediss://)")
    return json.dumps({f"{scheme}://{EXPORTER_USER}@{rest}": password})


def exporter_args(address: str, listen: str, password_path: str, ca_file: str | None = None) -> list[str]:
    """The exporter's flags; the loopback test runs the real binary with these too."""
    args = [
        f"--redis.addr={address}",
        f"--redis.user={EXPORTER_USER}",
        f"--redis.password-file={password_path}",
        f"--web.listen-address={listen}",
        "--config-command=-",
    ]
    if ca_file is not None:
        args.append(f"--tls-ca-cert-file={ca_file}")
    return args


def exporter_container(s: ClusterSettings) -> Manifest:
    """No readiness probe: the pod's readiness is Redis' alone (a sick exporter must not hold a rolling
    update or the bootstrap); a liveness probe restarts the exporter container only."""
    mounts: list[Manifest] = [{"name": AUTH_VOLUME, "mountPath": AUTH_DIR, "readOnly": True}]
    if s.tls_only:
        mounts.append({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True})
    return {
        "name": CONTAINER_NAME,
        "image": s.metrics_image,
        "imagePullPolicy": s.image_pull_policy,
        "args": exporter_args(
            redis_address(s),
            f":{METRICS_PORT}",
            f"{AUTH_DIR}/{PASSWORD_FILE}",
            f"{TLS_DIR}/ca.crt" if s.tls_only else None,
        ),
        "ports": [{"name": PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": PORT_NAME},
            "initialDelaySeconds": 10,
            "periodSeconds": 30,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        # The pod's runAsUser/runAsGroup/fsGroup (999) apply: the Secret files are 0440 for that group.
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }


def sidecars(s: ClusterSettings) -> list[Manifest]:
    """The pod's extra containers: the exporter with ``metrics``, else none."""
    return [exporter_container(s)] if s.metrics else []


def volumes(s: ClusterSettings) -> list[Manifest]:
    if not s.metrics:
        return []
    out: list[Manifest] = [
        {
            "name": AUTH_VOLUME,
            "secret": {
                "secretName": labels.auth_secret_name(s),
                "items": [{"key": PASSWORD_FILE_KEY, "path": PASSWORD_FILE}],
                "defaultMode": 0o440,
            },
        }
    ]
    if s.tls_only:
        out.append(
            {
                "name": TLS_VOLUME,
                "secret": {
                    "secretName": labels.tls_secret_name(s),
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    "defaultMode": 0o440,
                },
            }
        )
    return out


def metrics_selector_labels(s: ClusterSettings) -> dict[str, str]:
    """What the ServiceMonitor selects: this cluster's metrics Service only."""
    return {**labels.selector_labels(s), "app.kubernetes.io/component": "metrics"}


def service_manifest(s: ClusterSettings) -> Manifest:
    """Also annotated for annotation-based discovery (the ``kubernetes-service-endpoints`` job of the
    Prometheus chart's default config), for a Prometheus without the Operator."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": metrics_service_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "metrics"),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {
            "selector": labels.selector_labels(s),
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "ports": [{"name": PORT_NAME, "port": METRICS_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def service_monitor_manifest(s: ClusterSettings) -> Manifest:
    """Every endpoint of the metrics Service (one per pod); the Operator adds ``pod`` and ``namespace``
    labels to each series."""
    return {
        "apiVersion": SERVICE_MONITOR_API,
        "kind": "ServiceMonitor",
        "metadata": {
            "name": service_monitor_name(s),
            "namespace": s.namespace,
            "labels": {**labels.standard_labels(s, "metrics"), **dict(s.service_monitor_labels)},
        },
        "spec": {
            "selector": {"matchLabels": metrics_selector_labels(s)},
            "namespaceSelector": {"matchNames": [s.namespace]},
            "endpoints": [{"port": PORT_NAME, "path": "/metrics"}],
        },
    }


def network_policy_ingress(s: ClusterSettings) -> list[Manifest]:
    """The metrics port from the own namespace and ``metricsAllowedNamespaces`` (where Prometheus runs)."""
    if not s.metrics:
        return []
    sources: list[Manifest] = [{"podSelector": {}}]
    if s.metrics_allowed_namespaces:
        sources.append(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": list(s.metrics_allowed_namespaces),
                        }
                    ]
                }
            }
        )
    return [{"from": sources, "ports": [{"port": METRICS_PORT, "protocol": "TCP"}]}]


@dataclass(frozen=True)
class MetricsArgs:
    settings: ClusterSettings
    # The Namespace when the program creates it.
    depends_on: tuple[pulumi.Resource, ...] = ()


class Metrics(pulumi.ComponentResource):
    """The metrics Service and, with ``serviceMonitor``, the ServiceMonitor (the sidecar itself is part of
    the StatefulSet's pod template, components/nodes.py)."""

    def __init__(self, name: str, args: MetricsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:metrics:Metrics", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.service = k8s.core.v1.Service(f"{name}-service", **resource_kwargs(service_manifest(s)), opts=child)
        self.service_monitor: k8s.apiextensions.CustomResource | None = None
        if s.service_monitor:
            monitor = service_monitor_manifest(s)
            self.service_monitor = k8s.apiextensions.CustomResource(
                f"{name}-service-monitor",
                api_version=monitor["apiVersion"],
                kind=monitor["kind"],
                metadata=monitor["metadata"],
                spec=monitor["spec"],
                opts=child,
            )
        self.register_outputs(
            {
                "serviceName": self.service.metadata.name,
                "serviceMonitorName": service_monitor_name(s) if self.service_monitor else None,
            }
        )
