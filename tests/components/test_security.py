"""Auth, guard rails, external access, NetworkPolicy and TLS as the real program registers them.

The central check: a password or a private key appears in no resource input,
no ConfigMap, no pod spec (env, args, command) and no stack output in plain
text. Each may appear only as a Pulumi secret, and only in the Secrets, the
bootstrap resources (which log in with the password) and the pulumi_tls
resources (which consume the keys).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from components import nodes, redis_config, security, services
from components.settings import SettingsError, validate
from tests.components.harness import (
    BOOTSTRAP_TYPE,
    DRAIN_TYPE,
    MOCK_ANNOUNCED,
    PASSWORD_TYPE,
    ProgramRun,
    assert_valid_kubernetes,
    fake_password,
    fake_pem,
    is_secret,
    run_failing_program,
    run_program,
    stack_config,
    unsecret,
)

PASSWORD = "Configured-Pa55word!"
APP_PASSWORD = "App-user-Pa55word"
SECRET = "kubernetes:core/v1:Secret"
STS = "kubernetes:apps/v1:StatefulSet"
SVC = "kubernetes:core/v1:Service"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
TLS_TYPES = {
    "tls:index/privateKey:PrivateKey",
    "tls:index/selfSignedCert:SelfSignedCert",
    "tls:index/certRequest:CertRequest",
    "tls:index/locallySignedCert:LocallySignedCert",
}

CONFIGS: dict[str, dict[str, Any]] = {
    "configured-password": {"password": PASSWORD},
    "generated-password": {},
    "per-pod-tls-generated": {"externalAccess": "per-pod", "tls": True, "tlsOnly": True},
    "per-pod-external-host": {"externalAccess": "per-pod", "externalHost": "203.0.113.7", "nodeCidrs": ["10.0.0.0/16"]},
    "tls-named-secret": {"tls": True, "tlsSecretName": "my-certs", "password": PASSWORD},
    "no-auth-dangerous": {"auth": False, "allowDangerousCommands": True, "networkPolicy": False},
    # The metrics sidecar logs in with a password of its own, in its password-file form too.
    "metrics-tls-only": {"metrics": True, "tls": True, "tlsOnly": True, "password": PASSWORD},
    "acl-users": {
        "password": PASSWORD,
        "aclUsers": ["app ~app:* +@read +@write -@dangerous", "reporter ~* +@read"],
        "aclPasswords": {"app": APP_PASSWORD, "reporter": "Rep0rter-Pa55word"},
    },
}


@functools.cache
def program(label: str) -> ProgramRun:
    overrides = CONFIGS[label]
    secret_keys = tuple(k for k in ("password", "aclPasswords") if k in overrides)
    return run_program(stack_config("dev", **overrides), secret_keys=secret_keys)


def secret_values(run: ProgramRun) -> list[str]:
    """Every password and private key the program could have handled."""
    values = [PASSWORD, APP_PASSWORD, "Rep0rter-Pa55word"]
    values += [fake_password(r.name) for r in run.of_type(PASSWORD_TYPE)]
    for r in run.of_type("tls:index/privateKey:PrivateKey"):
        values += [fake_pem("PRIVATE KEY", r.name), f"FAKEPRIVATEKEY{r.name}"]
    return values


def plain_strings(value: Any) -> Iterator[str]:
    """Every string not inside a Pulumi secret (keys included)."""
    if is_secret(value):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from plain_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from plain_strings(v)
    elif isinstance(value, str):
        yield value


def mentions(value: Any, secrets: list[str]) -> bool:
    text = json.dumps(unsecret(value))
    return any(s in text for s in secrets)


@pytest.fixture(params=sorted(CONFIGS))
def label(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_no_password_or_key_in_plain_text_anywhere(label: str) -> None:
    run = program(label)
    secrets = secret_values(run)
    for r in run.resources:
        for text in plain_strings(r.inputs):
            assert not any(s in text for s in secrets), f"{r.typ} {r.name} carries a secret in plain text"
    assert not mentions(run.exports, secrets), "a stack output carries a secret"


def test_secrets_appear_only_in_secrets_bootstrap_and_tls_resources(label: str) -> None:
    run = program(label)
    secrets = secret_values(run)
    allowed = {SECRET, *TLS_TYPES}
    for r in run.resources:
        if r.typ in allowed:
            continue
        if r.typ in (DRAIN_TYPE, BOOTSTRAP_TYPE):
            # The bootstrap logs in with the passwords: inputs, as secrets only.
            logins = {k: v for k, v in r.inputs.items() if k in ("password", "operatorPassword")}
            assert all(v is None or is_secret(v) for v in logins.values()), r.name
            assert mentions(r.inputs.get("password"), secrets) == (label != "no-auth-dangerous")
            rest = {k: v for k, v in r.inputs.items() if k not in logins}
            assert not mentions(rest, secrets), r.name
            continue
        assert not mentions(r.inputs, secrets), f"{r.typ} {r.name}"


def test_the_pod_reads_passwords_from_files_only(label: str) -> None:
    sts = unsecret(program(label).one(STS).inputs)
    pod = sts["spec"]["template"]["spec"]
    redis = next(c for c in pod["containers"] if c["name"] == "redis")
    for container in pod["containers"]:  # the metrics sidecar too
        env_names = {e["name"] for e in container.get("env", [])}
        assert not any("PASS" in n or n == "REDISCLI_AUTH" for n in env_names), container["name"]
        assert "secretKeyRef" not in json.dumps(container), container["name"]
        assert not any("password=" in a or a.startswith("--redis.password=") for a in container.get("args", []))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth"]["secret"] == {"secretName": "redis-cluster-auth", "defaultMode": 0o440}
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in redis["volumeMounts"]}
    assert mounts["auth"]["readOnly"] is True and mounts["auth"]["mountPath"] == redis_config.AUTH_DIR
    for probe in (redis["readinessProbe"], redis["livenessProbe"]):
        script = probe["exec"]["command"][-1]
        assert f"read -r REDISCLI_AUTH < {redis_config.AUTH_DIR}/password" in script
        assert " -a " not in script and "--pass" not in script
    # A rotation is applied live by the bootstrap: nothing about the Secret is on the template.
    assert set(sts["spec"]["template"]["metadata"]["annotations"]) == {nodes.CHECKSUM_ANNOTATION}


def test_auth_secret_holds_the_passwords_and_waits_for_the_drain() -> None:
    run = program("configured-password")
    [auth] = [r for r in run.of_type(SECRET) if r.inputs["metadata"]["name"] == "redis-cluster-auth"]
    assert is_secret(auth.inputs["stringData"])
    data = unsecret(auth.inputs["stringData"])
    assert data == {"password": PASSWORD, "operator-password": fake_password("redis-cluster-operator-password")}
    [drain] = run.of_type(DRAIN_TYPE)
    [boot] = run.of_type(BOOTSTRAP_TYPE)
    sts = run.one(STS)
    assert drain.urn in auth.dependencies
    assert auth.urn in sts.dependencies and drain.urn in sts.dependencies
    assert sts.urn in boot.dependencies
    for r in (drain, boot):
        assert is_secret(r.inputs["password"]) and unsecret(r.inputs["password"]) == PASSWORD


def test_generated_password_when_none_is_configured_and_none_without_auth() -> None:
    data = unsecret(next(r for r in program("generated-password").of_type(SECRET)).inputs["stringData"])
    assert data["password"] == fake_password("redis-cluster-password")
    no_auth = program("no-auth-dangerous")
    assert [r.name for r in no_auth.of_type(PASSWORD_TYPE)] == ["redis-cluster-operator-password"]
    [secret] = no_auth.of_type(SECRET)
    assert set(unsecret(secret.inputs["stringData"])) == {"operator-password"}
    [boot] = no_auth.of_type(BOOTSTRAP_TYPE)
    assert boot.inputs.get("password") is None


def test_a_password_change_changes_only_the_secret_and_the_bootstrap_inputs() -> None:
    def run_with(password: str) -> ProgramRun:
        return run_program(stack_config("dev", password=password), secret_keys=("password",))

    one, two = (
        {(r.typ, r.name): unsecret(r.inputs) for r in run_with(pw).resources}
        for pw in ("first-Pa55word", "second-Pa55word")
    )
    assert one.keys() == two.keys()
    changed = {key for key in one if one[key] != two[key]}
    assert changed == {
        (SECRET, "redis-cluster-security-auth"),
        (DRAIN_TYPE, "redis-cluster-drain"),
        (BOOTSTRAP_TYPE, "redis-cluster-bootstrap"),
    }


def test_guard_rails_are_acl_rules_of_the_default_user() -> None:
    data = unsecret(program("configured-password").one("kubernetes:core/v1:ConfigMap").inputs["data"])
    users = data["users.acl"].splitlines()
    assert users == [
        "user default on ~* &* +@all -flushall -flushdb -debug -config -acl -shutdown",
        "user operator on ~* &* +@all",
    ]
    assert "enable-debug-command no" in data["redis.conf"].splitlines()
    assert not any(
        line.startswith(("requirepass", "masterauth", "rename-command")) for line in data["redis.conf"].splitlines()
    )
    allowed = unsecret(program("no-auth-dangerous").one("kubernetes:core/v1:ConfigMap").inputs["data"])
    assert allowed["users.acl"].splitlines()[0] == "user default on ~* &* +@all"
    assert "enable-debug-command yes" in allowed["redis.conf"].splitlines()


# ------------------------------------------------------------------ external access


def test_per_pod_services_announce_the_node_ip() -> None:
    run = program("per-pod-tls-generated")
    per_pod = sorted(
        (r.inputs for r in run.of_type(SVC) if "-external-" in r.inputs["metadata"]["name"]),
        key=lambda m: int(m["metadata"]["name"].rsplit("-", 1)[1]),
    )
    assert len(per_pod) == 6
    for i, svc in enumerate(per_pod):
        spec = svc["spec"]
        assert spec["selector"]["statefulset.kubernetes.io/pod-name"] == f"redis-cluster-{i}"
        assert spec["externalTrafficPolicy"] == "Local"
        assert {p["name"]: (p["targetPort"], p["nodePort"]) for p in spec["ports"]} == {
            "redis": ("redis", 31000 + i),
            "bus": ("bus", 32000 + i),
        }
    assert not [r for r in run.of_type(SVC) if r.inputs["metadata"]["name"] == "redis-cluster-external"]
    [redis] = unsecret(run.one(STS).inputs)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in redis["env"]}
    assert env["REDIS_ANNOUNCE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["REDIS_ANNOUNCE_PORT_BASE"]["value"] == "31000"
    assert env["REDIS_ANNOUNCE_BUS_PORT_BASE"]["value"] == "32000"
    assert env["REDIS_TLS_ONLY"]["value"] == "yes"
    # The node IPs are only known once pods run: the seeds are what the bootstrap found them announcing.
    assert run.exports["externalSeeds"] == MOCK_ANNOUNCED


def test_per_pod_with_external_host() -> None:
    run = program("per-pod-external-host")
    per_pod = [r.inputs for r in run.of_type(SVC) if "-external-" in r.inputs["metadata"]["name"]]
    assert {svc["spec"]["externalTrafficPolicy"] for svc in per_pod} == {"Cluster"}
    [redis] = run.one(STS).inputs["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in redis["env"]}
    assert env["REDIS_ANNOUNCE_IP"] == {"name": "REDIS_ANNOUNCE_IP", "value": "203.0.113.7"}
    assert run.exports["externalSeeds"] == [f"203.0.113.7:{31000 + i}" for i in range(6)]
    assert (
        services.external_seeds(
            validate({"externalAccess": "per-pod", "externalHost": "2001:db8::7", "nodeCidrs": ["10.0.0.0/8"]})
        )[0]
        == "[2001:db8::7]:31000"
    )


def test_no_external_access_by_default() -> None:
    run = run_program(stack_config("dev", externalAccess="none"))
    names = {r.inputs["metadata"]["name"] for r in run.of_type(SVC)}
    assert names == {"redis-cluster", "redis-cluster-headless"}
    assert run.exports["externalSeeds"] == []
    assert validate({}).external_access == "none"


# ------------------------------------------------------------------ NetworkPolicy


def test_network_policy_shape() -> None:
    run = run_program(
        stack_config(
            "dev",
            externalAccess="per-pod",
            allowedClientNamespaces=["apps", "jobs"],
            allowedClientCidrs=["192.168.10.0/24"],
        )
    )
    policy = run.one(NETPOL).inputs
    assert_valid_kubernetes(policy)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "redis-cluster",
        "app.kubernetes.io/instance": "redis-cluster",
    }
    assert spec["policyTypes"] == ["Ingress"]
    bus, client, external = spec["ingress"]
    own = {"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}
    assert bus == {"from": [own], "ports": [{"port": 16379, "protocol": "TCP"}]}
    assert client["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert client["from"] == [
        own,
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps", "jobs"]}
                ]
            }
        },
        {"ipBlock": {"cidr": "192.168.10.0/24"}},
    ]
    # NodePort traffic: the client port from anywhere, never the bus port.
    assert external == {"ports": [{"port": 6379, "protocol": "TCP"}]}


def test_network_policy_without_external_access_and_with_node_cidrs() -> None:
    closed = security.network_policy_manifest(validate({}))["spec"]["ingress"]
    assert len(closed) == 2 and all("from" in rule for rule in closed)
    host = validate({"externalAccess": "per-pod", "externalHost": "203.0.113.7", "nodeCidrs": ["10.0.0.0/16"]})
    rules = security.network_policy_manifest(host)["spec"]["ingress"]
    assert {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 16379, "protocol": "TCP"}]} in rules
    assert program("no-auth-dangerous").of_type(NETPOL) == []


# ------------------------------------------------------------------ TLS


def test_generated_tls() -> None:
    run = program("per-pod-tls-generated")
    assert {r.typ for r in run.resources if r.typ.startswith("tls:")} == TLS_TYPES
    csr = run.one("tls:index/certRequest:CertRequest").inputs
    assert is_secret(csr["privateKeyPem"])
    for name in (
        "redis-cluster-0.redis-cluster-headless.default.svc.cluster.local",
        "redis-cluster-5.redis-cluster-headless.default.svc.cluster.local",
        "redis-cluster.default.svc.cluster.local",
        "redis-cluster",
        "localhost",
    ):
        assert name in csr["dnsNames"]
    assert "127.0.0.1" in csr["ipAddresses"]
    cert = run.one("tls:index/locallySignedCert:LocallySignedCert").inputs
    assert {"server_auth", "client_auth"} <= set(cert["allowedUses"])
    [tls_secret] = [r for r in run.of_type(SECRET) if r.inputs["metadata"]["name"] == "redis-cluster-tls"]
    assert tls_secret.inputs["type"] == "kubernetes.io/tls" and is_secret(tls_secret.inputs["stringData"])
    assert set(unsecret(tls_secret.inputs["stringData"])) == {"tls.crt", "tls.key", "ca.crt"}
    sts = run.one(STS)
    assert tls_secret.urn in sts.dependencies
    pod = sts.inputs["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "redis-cluster-tls", "defaultMode": 0o440}} in pod["volumes"]
    conf = run.one("kubernetes:core/v1:ConfigMap").inputs["data"]["redis.conf"].splitlines()
    for line in ("port 0", "tls-port 6379", "tls-replication yes", "tls-cluster yes", "cluster-port 16379"):
        assert line in conf
    [redis] = pod["containers"]
    assert "--tls --cacert /etc/redis-tls/ca.crt" in redis["readinessProbe"]["exec"]["command"][-1]


def test_named_tls_secret_and_plain_port_kept() -> None:
    run = program("tls-named-secret")
    assert not [r for r in run.resources if r.typ.startswith("tls:")]
    assert [r.inputs["metadata"]["name"] for r in run.of_type(SECRET)] == ["redis-cluster-auth"]
    pod = run.one(STS).inputs["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "my-certs", "defaultMode": 0o440}} in pod["volumes"]
    [redis] = pod["containers"]
    assert {(p["name"], p["containerPort"]) for p in redis["ports"]} == {
        ("redis", 6379),
        ("redis-tls", 6380),
        ("bus", 16379),
    }
    conf = run.one("kubernetes:core/v1:ConfigMap").inputs["data"]["redis.conf"].splitlines()
    assert "port 6379" in conf and "tls-port 6380" in conf
    client = next(r for r in run.of_type(SVC) if r.inputs["metadata"]["name"] == "redis-cluster").inputs
    assert [p["port"] for p in client["spec"]["ports"]] == [6379, 6380]
    policy_ports = run.one(NETPOL).inputs["spec"]["ingress"][1]["ports"]
    assert [p["port"] for p in policy_ports] == [6379, 6380]


def test_every_manifest_is_valid_kubernetes(label: str) -> None:
    for manifest in program(label).manifests():
        assert_valid_kubernetes(manifest)


# ------------------------------------------------------------------ bad config

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"externalAccess": "loadbalancer"}, "externalAccess", "none, shared, per-pod"),
    ({"externalHost": "redis.example.com"}, "externalHost", "IPv4 or IPv6 address"),
    ({"externalAccess": "per-pod", "externalNodePortBase": 32765}, "externalNodePortBase", "must end at 32767"),
    ({"externalAccess": "per-pod", "externalBusNodePortBase": 31003}, "externalBusNodePortBase", "overlaps"),
    ({"externalAccess": "per-pod", "externalNodePortBase": 30031}, "externalNodePortBase", "contains externalNodePort"),
    ({"externalNodePortBase": 80}, "externalNodePortBase", "from 30000 to 32767"),
    ({"externalAccess": "per-pod", "externalHost": "203.0.113.7"}, "nodeCidrs", "SNAT"),
    ({"allowedClientNamespaces": ["Apps"]}, "allowedClientNamespaces", "namespace names"),
    ({"allowedClientCidrs": ["10.0.0.1/8"]}, "allowedClientCidrs", "CIDRs"),
    ({"allowedClientCidrs": ["anywhere"]}, "allowedClientCidrs", "CIDRs"),
    ({"nodeCidrs": ["10.0.0.0/33"]}, "nodeCidrs", "CIDRs"),
    ({"tlsOnly": True}, "tlsOnly", "needs tls: true"),
    ({"tlsSecretName": "certs"}, "tlsSecretName", "needs tls: true"),
    ({"tls": True, "tlsSecretName": "Bad_Name"}, "tlsSecretName", "DNS-1123"),
    ({"tls": True, "externalAccess": "per-pod"}, "externalAccess", "needs tlsOnly"),
    ({"auth": "maybe"}, "auth", "true or false"),
    ({"networkPolicy": "on"}, "networkPolicy", "true or false"),
    ({"allowDangerousCommands": 1}, "allowDangerousCommands", "true or false"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD, ids=[f"{k}:{a}" for _o, k, a in BAD])
def test_bad_config_is_named_and_registers_nothing(overrides: dict[str, Any], key: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as caught:
        validate(overrides)
    message = str(caught.value)
    assert f"redis-cluster:{key} = " in message and allowed in message
    error, run = run_failing_program(stack_config("dev", **overrides))
    assert isinstance(error, SettingsError) and f"redis-cluster:{key} = " in str(error)
    assert run.resources == []


BAD_PASSWORDS = [
    ("short", "8 to 512"),
    ("has space inside", "without spaces"),
    ('quote"inside', "without spaces, quotes"),
    ("back\\slash-inside", "backslashes"),
    ("x" * 513, "8 to 512"),
]


@pytest.mark.parametrize(("password", "allowed"), BAD_PASSWORDS, ids=[str(i) for i in range(len(BAD_PASSWORDS))])
def test_bad_password_is_rejected_without_showing_it(password: str, allowed: str) -> None:
    error, run = run_failing_program(stack_config("dev", password=password), secret_keys=("password",))
    message = str(error)
    assert "redis-cluster:password = '[secret]'" in message and allowed in message
    assert password not in message
    assert run.resources == []


def test_plain_text_password_and_password_without_auth_are_rejected() -> None:
    error, run = run_failing_program(stack_config("dev", password=PASSWORD))  # not --secret
    assert "--secret" in str(error) and PASSWORD not in str(error) and run.resources == []
    error, run = run_failing_program(stack_config("dev", password=PASSWORD, auth=False), secret_keys=("password",))
    assert "auth is false" in str(error) and PASSWORD not in str(error) and run.resources == []


def test_settings_never_print_the_password() -> None:
    s = validate({"password": PASSWORD})
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)
    assert s.password is not None and s.password.reveal() == PASSWORD


# ------------------------------------------------------------------ ACL users


def test_acl_users_get_their_rules_and_passwords_from_the_secret() -> None:
    run = program("acl-users")
    users = run.one("kubernetes:core/v1:ConfigMap").inputs["data"]["users.acl"].splitlines()
    assert users[2:] == ["user app on ~app:* +@read +@write -@dangerous", "user reporter on ~* +@read"]
    [auth] = run.of_type(SECRET)
    data = unsecret(auth.inputs["stringData"])
    assert data["app-password"] == APP_PASSWORD and data["reporter-password"] == "Rep0rter-Pa55word"


BAD_ACL: list[tuple[dict[str, Any], str]] = [
    ({"aclUsers": ["operator +@all"], "aclPasswords": {"operator": "x" * 10}}, "not one of default, operator"),
    ({"aclUsers": ["App +@all"]}, "lowercase"),
    ({"aclUsers": ["app"]}, "needs ACL rules"),
    ({"aclUsers": ["app on >Leaked-Pa55word +@all"]}, "may not set passwords"),
    ({"aclUsers": ["app nopass +@all"]}, "may not set passwords"),
    ({"aclUsers": ["app +@all", "app +@read"], "aclPasswords": {"app": "x" * 10}}, "unique"),
    ({"aclUsers": ["app +@all"]}, "needs a password for every aclUsers entry"),
    ({"aclUsers": ["app +@all"], "aclPasswords": {"other": "x" * 10}}, "must name exactly the aclUsers"),
    ({"aclUsers": ["app +@all"], "aclPasswords": {"app": "short"}}, "8 to 512"),
    ({"aclPasswords": "not json"}, "object of user name"),
]


@pytest.mark.parametrize(("overrides", "allowed"), BAD_ACL, ids=[a for _o, a in BAD_ACL])
def test_bad_acl_users_are_rejected_without_showing_passwords(overrides: dict[str, Any], allowed: str) -> None:
    secret_keys = ("aclPasswords",) if "aclPasswords" in overrides else ()
    error, run = run_failing_program(stack_config("dev", **overrides), secret_keys=secret_keys)
    message = str(error)
    assert allowed in message and run.resources == []
    assert "Leaked-Pa55word" not in message and "x" * 10 not in message


def test_plain_text_acl_passwords_are_rejected() -> None:
    overrides = {"aclUsers": ["app +@all"], "aclPasswords": {"app": APP_PASSWORD}}
    error, run = run_failing_program(stack_config("dev", **overrides))
    assert "aclPasswords" in str(error) and "--secret" in str(error) and APP_PASSWORD not in str(error)
    assert run.resources == []
