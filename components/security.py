"""Access control: the auth Secret, the NetworkPolicy and the TLS material.

Passwords and private keys are Pulumi secrets from end to end: they enter the
program as secret config or as secret outputs (GeneratedPassword, pulumi_tls),
and the only Kubernetes object that carries them is a Secret. The pods read
them from files (components/scripts/start-redis.sh); the ConfigMap, the pod
template, the stack outputs and every log line stay free of them
(tests/components/test_security.py scans every resource input for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from bootstrap.password import GeneratedPassword
from components import labels, metrics, redis_config
from components.k8s import Manifest, resource_kwargs
from components.settings import ClusterSettings

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server
CA_VALIDITY_HOURS = 10 * 365 * 24
CERT_VALIDITY_HOURS = 365 * 24
CERT_EARLY_RENEWAL_HOURS = 30 * 24


def auth_secret_manifest(
    s: ClusterSettings,
    password: pulumi.Input[str] | None,
    operator_password: pulumi.Input[str],
    acl_passwords: Mapping[str, pulumi.Input[str]] | None = None,
    exporter: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None,
    backup: pulumi.Input[str] | None = None,
) -> Manifest:
    """One file per user (the file names the start script and the probes read).

    No ``password`` key when auth is off: the `default` user then needs none, and the
    probes send none. ``operator`` always has one: it is what the bootstrap logs in as.
    ``exporter`` (with ``metrics``): the `exporter` user's password, and the same in the
    metrics sidecar's password-file form (components/metrics.py), the only key it mounts.
    ``backup`` (with ``backupSchedule``): the `backup` user's, the only key the CronJob mounts.
    """
    data: dict[str, Any] = {redis_config.OPERATOR_PASSWORD_KEY: operator_password}
    for user, value in (acl_passwords or {}).items():
        data[f"{user}-password"] = value
    if exporter is not None:
        data[redis_config.EXPORTER_PASSWORD_KEY], data[metrics.PASSWORD_FILE_KEY] = exporter
    if backup is not None:
        data[redis_config.BACKUP_PASSWORD_KEY] = backup
    if password is not None:
        data[redis_config.PASSWORD_KEY] = password
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": labels.auth_secret_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "auth"),
        },
        "type": "Opaque",
        "stringData": data,
    }


def tls_secret_manifest(
    s: ClusterSettings, cert: pulumi.Input[str], key: pulumi.Input[str], ca: pulumi.Input[str]
) -> Manifest:
    """The layout cert-manager writes too, so a user-named Secret can come from it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": labels.generated_tls_secret_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "tls"),
        },
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key, "ca.crt": ca},
    }


def tls_dns_names(s: ClusterSettings) -> list[str]:
    """Every name a client or a peer may use: each pod's headless name, the client Service."""
    headless = f"{labels.headless_service_name(s)}.{s.namespace}.svc.{s.cluster_domain}"
    client = labels.client_service_name(s)
    return [
        *(labels.pod_fqdn(s, i) for i in range(s.pod_count)),
        f"*.{headless}",
        headless,
        client,
        f"{client}.{s.namespace}",
        f"{client}.{s.namespace}.svc",
        f"{client}.{s.namespace}.svc.{s.cluster_domain}",
        "localhost",
    ]


def tls_ip_addresses(s: ClusterSettings) -> list[str]:
    """Loopback for the probes; the external host when per-pod clients connect to it."""
    ips = ["127.0.0.1", "::1"]
    if s.external_access == "per-pod" and s.external_host:
        ips.append(s.external_host)
    return ips


def _peer(s: ClusterSettings) -> Manifest:
    return {"podSelector": {"matchLabels": labels.selector_labels(s)}}


def network_policy_manifest(s: ClusterSettings) -> Manifest:
    """Ingress to the Redis pods only.

    - bus port: from the cluster's own pods (and, per-pod with externalHost, from
      ``nodeCidrs``: that NodePort traffic arrives SNATed to a node address);
    - client ports: from the own pods (replication, MIGRATE), every pod of the own
      namespace, ``allowedClientNamespaces`` and ``allowedClientCidrs``;
    - with external access: the client port from anywhere, since NodePort traffic
      may arrive with any source (or SNATed to a node address). The bus port never.
    """
    client_ports = [{"port": port, "protocol": "TCP"} for _name, port in redis_config.client_ports(s)]
    bus_port = [{"port": labels.BUS_PORT, "protocol": "TCP"}]
    client_from: list[Manifest] = [_peer(s), {"podSelector": {}}]
    if s.allowed_client_namespaces:
        client_from.append(
            {
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(s.allowed_client_namespaces)}
                    ]
                }
            }
        )
    client_from += [{"ipBlock": {"cidr": cidr}} for cidr in s.allowed_client_cidrs]
    ingress: list[Manifest] = [
        {"from": [_peer(s)], "ports": bus_port},
        {"from": client_from, "ports": client_ports},
    ]
    if s.external_access == "per-pod" and s.node_cidrs:
        ingress.append({"from": [{"ipBlock": {"cidr": cidr}} for cidr in s.node_cidrs], "ports": bus_port})
    if s.external_access != "none":
        ingress.append({"ports": [{"port": labels.REDIS_PORT, "protocol": "TCP"}]})
    ingress += metrics.network_policy_ingress(s)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": labels.network_policy_name(s),
            "namespace": s.namespace,
            "labels": labels.standard_labels(s, "network-policy"),
        },
        "spec": {
            "podSelector": {"matchLabels": labels.selector_labels(s)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _secret(value: pulumi.Output[str]) -> pulumi.Output[str]:
    """Marked secret here, whatever the producing provider marks."""
    return pulumi.Output.secret(value)


@dataclass(frozen=True)
class Passwords:
    """``password``: the `default` user's (clients, masterauth; None when auth is off).
    ``operator``: the `operator` user's, which only the bootstrap uses. ``exporter``: the
    metrics sidecar's `exporter` user's (None without ``metrics``). ``backup``: the backup CronJob's
    `backup` user's (None without ``backupSchedule``)."""

    password: pulumi.Output[str] | None
    operator: pulumi.Output[str]
    acl: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)
    exporter: pulumi.Output[str] | None = None
    backup: pulumi.Output[str] | None = None


def passwords(name: str, s: ClusterSettings, opts: pulumi.ResourceOptions) -> Passwords:
    """Secret Outputs only. Made before the bootstrap resources (they take them) and the
    auth Secret (which waits for the drain), hence not inside :class:`Security`.

    A configured password becomes a secret Output here and nowhere else; without one,
    a :class:`GeneratedPassword` is made once and kept in the state (encrypted).
    """
    operator = GeneratedPassword(f"{name}-operator-password", opts=opts).value
    password: pulumi.Output[str] | None = None
    if s.auth and s.password is not None:
        password = pulumi.Output.secret(s.password.reveal())
    elif s.auth:
        password = GeneratedPassword(f"{name}-password", opts=opts).value
    acl = {user: pulumi.Output.secret(value.reveal()) for user, value in s.acl_passwords}
    exporter = GeneratedPassword(f"{name}-exporter-password", opts=opts).value if s.metrics else None
    backup = GeneratedPassword(f"{name}-backup-password", opts=opts).value if s.backup_schedule else None
    return Passwords(password, operator, acl, exporter, backup)


def exporter_secret_data(s: ClusterSettings, pw: Passwords) -> tuple[pulumi.Output[str], pulumi.Output[str]] | None:
    """The exporter's password and its password file, both secret (an ``apply`` on a secret stays one)."""
    if pw.exporter is None:
        return None
    address = metrics.redis_address(s)
    file = _secret(pw.exporter.apply(lambda p: metrics.password_file(address, p)))
    return _secret(pw.exporter), file


@dataclass(frozen=True)
class SecurityArgs:
    settings: ClusterSettings
    passwords: Passwords
    # The Namespace when the program creates it.
    depends_on: tuple[pulumi.Resource, ...] = ()
    # The ClusterDrain: it makes the new password valid on every node before the Secret changes.
    secret_depends_on: tuple[pulumi.Resource, ...] = ()


class Security(pulumi.ComponentResource):
    """The auth Secret, the optional generated TLS Secret and the NetworkPolicy.

    ``objects`` are what the StatefulSet must wait for (the Secrets it mounts).
    """

    def __init__(self, name: str, args: SecurityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("redis-cluster:security:Security", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        pw = args.passwords
        self.auth_secret = k8s.core.v1.Secret(
            f"{name}-auth",
            **resource_kwargs(
                auth_secret_manifest(
                    s,
                    pw.password,
                    pw.operator,
                    pw.acl,
                    exporter_secret_data(s, pw),
                    _secret(pw.backup) if pw.backup else None,
                )
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *args.secret_depends_on],
                additional_secret_outputs=["data", "stringData"],
            ),
        )
        self.objects: list[pulumi.Resource] = [self.auth_secret]

        self.tls_secret: k8s.core.v1.Secret | None = None
        if s.tls and not s.tls_secret_name:
            self.tls_secret = self._generated_tls(name, s, child)
            self.objects.append(self.tls_secret)

        self.network_policy: k8s.networking.v1.NetworkPolicy | None = None
        if s.network_policy:
            self.network_policy = k8s.networking.v1.NetworkPolicy(
                f"{name}-network-policy", **resource_kwargs(network_policy_manifest(s)), opts=child
            )

        self.register_outputs(
            {
                "authSecretName": self.auth_secret.metadata.name,
                "tlsSecretName": labels.tls_secret_name(s) if s.tls else None,
            }
        )

    def _generated_tls(self, name: str, s: ClusterSettings, child: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
        """A private CA and one server certificate for every pod (ECDSA P-256).

        The nodes present the same certificate to each other (tls-cluster,
        tls-replication), hence client_auth as well as server_auth. Imported here so
        that stacks without generated TLS never touch the tls package.
        """
        import pulumi_tls as tls

        own = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=own)
        # Key material passed on as explicit secrets, whatever the provider marks.
        ca_key_pem = _secret(ca_key.private_key_pem)
        ca = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key_pem,
            is_ca_certificate=True,
            validity_period_hours=CA_VALIDITY_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"{s.name} Redis CA", organization="redis-cluster"),
            opts=own,
        )
        key = tls.PrivateKey(f"{name}-server-key", algorithm="ECDSA", ecdsa_curve="P256", opts=own)
        csr = tls.CertRequest(
            f"{name}-server-csr",
            private_key_pem=_secret(key.private_key_pem),
            dns_names=tls_dns_names(s),
            ip_addresses=tls_ip_addresses(s),
            subject=tls.CertRequestSubjectArgs(common_name=labels.pod_fqdn(s, 0), organization="redis-cluster"),
            opts=own,
        )
        cert = tls.LocallySignedCert(
            f"{name}-server-cert",
            cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=ca_key_pem,
            ca_cert_pem=ca.cert_pem,
            validity_period_hours=CERT_VALIDITY_HOURS,
            early_renewal_hours=CERT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth", "client_auth"],
            opts=own,
        )
        manifest = tls_secret_manifest(s, cert.cert_pem, _secret(key.private_key_pem), ca.cert_pem)
        return k8s.core.v1.Secret(
            f"{name}-tls",
            **resource_kwargs(manifest),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
            ),
        )
