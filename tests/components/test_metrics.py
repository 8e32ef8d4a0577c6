"""The metrics sidecar, its Service and the ServiceMonitor as the real program registers them (Pulumi mocks).

The exporter's password is scanned for everywhere by tests/components/test_security.py (its
``metrics-tls-only`` config); here: what is there with ``metrics`` and what is not without it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from components import metrics, redis_config
from components.settings import EXPORTER_VERSION, SettingsError, validate
from tests.components.harness import (
    ProgramRun,
    assert_valid_kubernetes,
    fake_password,
    is_secret,
    run_failing_program,
    run_program,
    stack_config,
    unsecret,
)

STS = "kubernetes:apps/v1:StatefulSet"
SVC = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
COMPONENT = "redis-cluster:metrics:Metrics"
EXPORTER_PASSWORD = fake_password("redis-cluster-exporter-password")


def program(stack: str = "dev", **overrides: Any) -> ProgramRun:
    return _program(stack, json.dumps(overrides, sort_keys=True))


@functools.cache
def _program(stack: str, overrides: str) -> ProgramRun:
    return run_program(stack_config(stack, **json.loads(overrides)))


def pod_spec(run: ProgramRun) -> dict[str, Any]:
    spec: dict[str, Any] = unsecret(run.one(STS).inputs)["spec"]["template"]["spec"]
    return spec


def containers(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(run)["containers"]}


def services(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in run.of_type(SVC)}


def auth_data(run: ProgramRun) -> dict[str, str]:
    [auth] = [r for r in run.of_type(SECRET) if r.inputs["metadata"]["name"] == "redis-cluster-auth"]
    assert is_secret(auth.inputs["stringData"]), "the auth Secret's data must be a Pulumi secret"
    data: dict[str, str] = unsecret(auth.inputs["stringData"])
    return data


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_without_metrics_there_is_no_sidecar_service_monitor_user_or_password(stack: str) -> None:
    run = program(stack)
    assert list(containers(run)) == ["redis"]
    assert not [n for n in services(run) if n.endswith("-metrics")]
    assert run.of_type(SERVICE_MONITOR) == [] and [r for r in run.resources if r.typ == COMPONENT] == []
    assert not [r for r in run.resources if r.name.endswith("exporter-password")]
    assert not {redis_config.EXPORTER_PASSWORD_KEY, metrics.PASSWORD_FILE_KEY} & set(auth_data(run))
    assert "exporter" not in run.one(CONFIG_MAP).inputs["data"][redis_config.USERS_KEY]
    assert "metricsService" not in run.exports
    assert all(p["port"] != metrics.METRICS_PORT for r in run.of_type(NETPOL) for p in _ports(r.inputs))


def _ports(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])]


def test_metrics_adds_the_exporter_sidecar_with_its_port_and_password_file() -> None:
    run = program(metrics=True)
    pods = containers(run)
    assert list(pods) == ["redis", metrics.CONTAINER_NAME]
    exporter = pods[metrics.CONTAINER_NAME]
    assert exporter["image"] == f"oliver006/redis_exporter:{EXPORTER_VERSION}"
    assert exporter["imagePullPolicy"] == pods["redis"]["imagePullPolicy"]
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    assert exporter["args"] == [
        "--redis.addr=redis://127.0.0.1:6379",
        "--redis.user=exporter",
        "--redis.password-file=/etc/redis-exporter/passwords.json",
        "--web.listen-address=:9121",
        "--config-command=-",
    ]
    # The pod's readiness stays Redis' own: a broken exporter must not hold a rollout or the bootstrap.
    assert "readinessProbe" not in exporter and exporter["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "env" not in exporter
    # It mounts its password file and nothing else of the auth Secret.
    volumes = {v["name"]: v for v in pod_spec(run)["volumes"]}
    assert volumes[metrics.AUTH_VOLUME]["secret"] == {
        "secretName": "redis-cluster-auth",
        "items": [{"key": "exporter-passwords.json", "path": "passwords.json"}],
        "defaultMode": 0o440,
    }
    assert [m["name"] for m in exporter["volumeMounts"]] == [metrics.AUTH_VOLUME]
    assert exporter["securityContext"]["readOnlyRootFilesystem"] is True

    # The user: only what the exporter runs; its password file keyed by the one address it scrapes.
    acl = run.one(CONFIG_MAP).inputs["data"][redis_config.USERS_KEY].splitlines()
    assert acl[2] == (
        "user exporter on resetchannels -@all +info +ping +cluster|info +client|setname "
        "+latency|latest +latency|histogram +slowlog|len"
    )
    data = auth_data(run)
    assert data[redis_config.EXPORTER_PASSWORD_KEY] == EXPORTER_PASSWORD
    assert json.loads(data[metrics.PASSWORD_FILE_KEY]) == {"redis://exporter@127.0.0.1:6379": EXPORTER_PASSWORD}
    for manifest in run.manifests():
        assert_valid_kubernetes(manifest)


def test_metrics_service_puts_every_pod_behind_port_9121() -> None:
    run = program(metrics=True)
    service = services(run)["redis-cluster-metrics"]
    spec = service["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    assert spec["ports"] == [{"name": "metrics", "port": 9121, "targetPort": "metrics", "protocol": "TCP"}]
    template_labels = unsecret(run.one(STS).inputs)["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= template_labels.items()
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "9121"
    assert run.exports["metricsService"] == "redis-cluster-metrics"
    # A child of its own component, which is a child of the cluster and registers its outputs.
    [component] = [r for r in run.resources if r.typ == COMPONENT]
    [svc] = [r for r in run.of_type(SVC) if r.inputs["metadata"]["name"] == "redis-cluster-metrics"]
    top = next(r for r in run.resources if r.typ == "redis-cluster:cluster:RedisCluster")
    assert svc.parent == component.urn and component.parent == top.urn
    assert component.urn in run.outputs_registered
    assert run.of_type(SERVICE_MONITOR) == [], "a ServiceMonitor needs its CRD: only when asked"


def test_network_policy_opens_the_metrics_port_to_the_namespace_and_prometheus_namespaces() -> None:
    run = program(metrics=True, metricsAllowedNamespaces=["monitoring"])
    policy = run.one(NETPOL).inputs
    assert_valid_kubernetes(policy)
    [rule] = [r for r in policy["spec"]["ingress"] if {"port": 9121, "protocol": "TCP"} in r.get("ports", [])]
    assert rule["ports"] == [{"port": 9121, "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["monitoring"]}]
            }
        },
    ]
    # No other rule opens it (the external-access rule names the client port only).
    assert sum(1 for p in _ports(policy) if p["port"] == 9121) == 1


def test_service_monitor_only_when_asked_selects_the_metrics_service() -> None:
    run = program(metrics=True, serviceMonitor=True, serviceMonitorLabels=["release=kube-prometheus-stack"])
    monitor = run.one(SERVICE_MONITOR)
    assert monitor.inputs["apiVersion"] == "monitoring.coreos.com/v1" and monitor.inputs["kind"] == "ServiceMonitor"
    meta, spec = monitor.inputs["metadata"], monitor.inputs["spec"]
    assert meta["name"] == "redis-cluster" and meta["namespace"] == "default"
    assert meta["labels"]["release"] == "kube-prometheus-stack"
    service = services(run)["redis-cluster-metrics"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # ... and no other Service of the cluster.
    for name, other in services(run).items():
        if name != "redis-cluster-metrics":
            assert not spec["selector"]["matchLabels"].items() <= other["metadata"]["labels"].items(), name
    assert spec["namespaceSelector"] == {"matchNames": ["default"]}
    assert spec["endpoints"] == [{"port": service["spec"]["ports"][0]["name"], "path": "/metrics"}]
    [component] = [r for r in run.resources if r.typ == COMPONENT]
    assert monitor.parent == component.urn


def test_tls_only_the_exporter_speaks_tls_with_the_ca_alone() -> None:
    run = program(metrics=True, tls=True, tlsOnly=True)
    exporter = containers(run)[metrics.CONTAINER_NAME]
    assert "--redis.addr=rediss://127.0.0.1:6379" in exporter["args"]
    assert f"--tls-ca-cert-file={metrics.TLS_DIR}/ca.crt" in exporter["args"]
    volumes = {v["name"]: v for v in pod_spec(run)["volumes"]}
    assert volumes[metrics.TLS_VOLUME]["secret"]["secretName"] == "redis-cluster-tls"
    assert volumes[metrics.TLS_VOLUME]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert json.loads(auth_data(run)[metrics.PASSWORD_FILE_KEY]) == {
        "rediss://exporter@127.0.0.1:6379": EXPORTER_PASSWORD
    }


def test_password_file_key_is_the_address_with_the_user() -> None:
    assert json.loads(metrics.password_file("redis://127.0.0.1:7001", 'p"w')) == {
        "redis://exporter@127.0.0.1:7001": 'p"w'
    }
    with pytest.raises(ValueError, match="no scheme"):
        metrics.password_file("127.0.0.1:7001", "pw")


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"metrics": "yes"}, "metrics", "must be true or false"),
    ({"serviceMonitor": True}, "serviceMonitor", "needs metrics: true"),
    ({"metricsAllowedNamespaces": ["monitoring"]}, "metricsAllowedNamespaces", "needs metrics: true"),
    ({"metricsSlowlogEntries": True}, "metricsSlowlogEntries", "needs metrics: true"),
    ({"metrics": True, "metricsSlowlogEntries": "no"}, "metricsSlowlogEntries", "must be true or false"),
    ({"metrics": True, "metricsAllowedNamespaces": ["Monitoring"]}, "metricsAllowedNamespaces", "namespace names"),
    ({"metrics": True, "serviceMonitorLabels": ["release=x"]}, "serviceMonitorLabels", "needs serviceMonitor: true"),
    (
        {"metrics": True, "serviceMonitor": True, "serviceMonitorLabels": ["release"]},
        "serviceMonitorLabels",
        "Kubernetes label syntax",
    ),
    (
        {"metrics": True, "serviceMonitor": True, "serviceMonitorLabels": ["a=1", "a=2"]},
        "serviceMonitorLabels",
        "twice",
    ),
    ({"metrics": True, "metricsImage": "redis exporter"}, "metricsImage", "without spaces"),
    (
        {"metrics": True, "aclUsers": ["exporter ~* +@read"], "aclPasswords": {"exporter": "Exp0rter-Pa55word"}},
        "aclUsers",
        "must not name the user 'exporter' with metrics: true",
    ),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD, ids=[f"{k}:{a}" for _o, k, a in BAD])
def test_bad_metrics_config_names_the_key_value_and_what_is_allowed(
    overrides: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        validate(overrides)
    [problem] = caught.value.problems  # one mistake, one message
    assert problem.startswith(f"redis-cluster:{key} = {overrides[key]!r}: ") and allowed in problem, problem
    secret_keys = ("aclPasswords",) if "aclPasswords" in overrides else ()
    error, run = run_failing_program(stack_config("dev", **overrides), secret_keys=secret_keys)
    assert isinstance(error, SettingsError) and f"redis-cluster:{key} = " in str(error) and allowed in str(error)
    assert run.resources == []


def test_the_default_image_is_the_release_tools_cluster_builds() -> None:
    """The upstream image's tag, the e2e tier's local image and the loopback test's binary are one release."""
    root = Path(__file__).resolve().parents[2]
    common = (root / "tools" / "cluster" / "common.sh").read_text()
    assert f"\nEXPORTER_VERSION={EXPORTER_VERSION}\n" in common
    go_mod = (root / "tools" / "cluster" / "exporter" / "go.mod").read_text()
    assert f"github.com/oliver006/redis_exporter {EXPORTER_VERSION} " in go_mod
    assert validate({"metrics": True}).metrics_image == f"oliver006/redis_exporter:{EXPORTER_VERSION}"


def test_metrics_slowlog_entries_lets_the_exporter_read_slowlog_entries() -> None:
    """Off by default (an entry shows key names and arguments); the opt-in adds exactly SLOWLOG GET."""
    [line] = [
        ln
        for ln in program(metrics=True, metricsSlowlogEntries=True)
        .one(CONFIG_MAP)
        .inputs["data"][redis_config.USERS_KEY]
        .splitlines()
        if ln.startswith("user exporter ")
    ]
    assert line.endswith("+slowlog|len +slowlog|get")
