"""Checks across keys, and the one entry point that turns raw config into settings or a single error.

Bad config must never reach a cluster: a wrong value found half-way through a ``pulumi up`` leaves
objects behind, so every key is parsed and checked here, all problems are collected, and one
:class:`SettingsError` naming each key, its value and what is allowed is raised before any resource
is registered. Pure (no Pulumi engine needed), so tests call :func:`validate` directly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from typing import Any

import pulumi

from components.settings.declarations import (
    BACKUP_USER,
    DEFAULTS,
    EXPORTER_USER,
    KEYS,
    NAMESPACE,
    NODE_PORT_RANGE,
    PASSWORD_LENGTH,
    SECRET_KEYS,
    ClusterSettings,
    Key,
    SecretValue,
    T,
)
from components.settings.rules import PASSWORD, RAW, Invalid, parse_quantity


class SettingsError(pulumi.RunError, ValueError):
    """Every problem in the stack config at once, so one `pulumi preview` shows them all.

    A ``pulumi.RunError`` so the engine prints the message alone, not a traceback.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {NAMESPACE} configuration ({len(problems)} problem(s)):\n{lines}")


class _Checker:
    """Collects problems instead of stopping at the first one, and remembers which keys were bad:
    a check across keys runs only when each of its keys is fine on its own, so one mistake gives one
    message."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.problems: list[str] = []
        self.bad: set[str] = set()

    def fail(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{NAMESPACE}:{key} = {value!r}: {allowed}")
        self.bad.add(key)

    def value(self, key: str) -> Any:
        """The value as given, or the default."""
        return self.raw[key] if key in self.raw and self.raw[key] is not None else DEFAULTS[key]

    def parse(self, key: Key[T]) -> T:
        """The key's value, or its default after recording why the given one is refused."""
        value = self.value(key.name)
        try:
            return key.rule.parse(value)
        except Invalid as exc:
            for shown, allowed in exc.problems:
                self.fail(key.name, value if shown is RAW else shown, allowed)
            return key.default

    def fine(self, *keys: str) -> bool:
        return not self.bad.intersection(keys)


def validate(raw: Mapping[str, Any], plaintext_keys: Collection[str] = ()) -> ClusterSettings:
    """Check raw config (strings as Pulumi hands them, or native values) and build settings.

    Keys missing from ``raw`` take :data:`DEFAULTS`. Raises :class:`SettingsError`
    listing every problem; never returns partially valid settings. ``raw["password"]``
    and ``raw["aclPasswords"]`` (:data:`SECRET_KEYS`) are checked too but never shown;
    ``plaintext_keys`` names those of them the stack stores unencrypted (rejected).
    """
    c = _Checker(raw)
    known = [key.name for key in KEYS]
    for name in sorted(set(raw) - set(known) - set(SECRET_KEYS)):
        c.fail(name, raw[name], "unknown key; known keys are " + ", ".join(sorted([*known, *SECRET_KEYS])))
    s = ClusterSettings(**{key.field: c.parse(key) for key in KEYS})
    for check in (
        _check_nodes,
        _check_endpoints,
        _check_limits,
        _check_external_access,
        _check_tls,
        _check_metrics,
        _check_backup,
    ):
        check(c, s)
    password = _check_password(c, raw.get("password"), s.auth, "password" not in plaintext_keys)
    names = [u for u, _r in s.acl_users] if c.fine("aclUsers") else None
    acl_passwords = _check_acl_passwords(c, raw.get("aclPasswords"), names, "aclPasswords" not in plaintext_keys)
    if c.problems:
        raise SettingsError(c.problems)
    return dataclasses.replace(s, password=password, acl_passwords=tuple(sorted(acl_passwords.items())))


def _check_nodes(c: _Checker, s: ClusterSettings) -> None:
    """Enough nodes that a master and its replicas can be apart (and one per pod when required)."""
    if s.nodes and c.fine("nodes", "replicasPerMaster") and len(s.nodes) < s.replicas_per_master + 1:
        c.fail(
            "nodes",
            c.value("nodes"),
            f"needs at least replicasPerMaster+1 = {s.replicas_per_master + 1} nodes so that a master and its "
            f"{s.replicas_per_master} replica(s) never share a node",
        )
    elif (
        s.nodes
        and c.fine("nodes", "antiAffinity", "masters", "replicasPerMaster")
        and s.anti_affinity == "required"
        and len(s.nodes) < s.pod_count
    ):
        c.fail(
            "nodes",
            c.value("nodes"),
            f'antiAffinity "required" allows one Redis pod per node, so it needs at least '
            f'{s.pod_count} nodes (one per pod); use antiAffinity "preferred" or add nodes',
        )


def _check_endpoints(c: _Checker, s: ClusterSettings) -> None:
    if (
        s.bootstrap_endpoints
        and c.fine("bootstrapEndpoints", "masters", "replicasPerMaster")
        and len(s.bootstrap_endpoints) != s.pod_count
    ):
        c.fail(
            "bootstrapEndpoints",
            c.value("bootstrapEndpoints"),
            f"needs one endpoint per pod: masters*(1+replicasPerMaster) = {s.pod_count}",
        )


def _check_limits(c: _Checker, s: ClusterSettings) -> None:
    for req_key, req, lim_key, lim in (
        ("cpuRequest", s.cpu_request, "cpuLimit", s.cpu_limit),
        ("memoryRequest", s.memory_request, "memoryLimit", s.memory_limit),
    ):
        req_q, lim_q = parse_quantity(req), parse_quantity(lim) if lim else None
        if c.fine(req_key, lim_key) and req_q is not None and lim_q is not None and req_q > lim_q:
            c.fail(lim_key, lim, f"must not be below {req_key} = {req!r}")


def _check_external_access(c: _Checker, s: ClusterSettings) -> None:
    if s.external_access != "per-pod" or not c.fine("externalAccess"):
        return
    ports = ("externalNodePort", "externalNodePortBase", "externalBusNodePortBase", "masters", "replicasPerMaster")
    if c.fine(*ports):
        _check_per_pod_ports(c, s)
    if (
        c.fine("externalHost", "networkPolicy", "nodeCidrs")
        and s.external_host
        and s.network_policy
        and not s.node_cidrs
    ):
        c.fail(
            "nodeCidrs",
            c.value("nodeCidrs"),
            "must name the addresses NodePort traffic arrives from (the nodes' CIDRs) when externalAccess is "
            "per-pod with externalHost and networkPolicy is on: those Services use externalTrafficPolicy "
            "Cluster, kube-proxy SNATs the peers' cluster-bus traffic to node addresses, and the policy would "
            "drop it",
        )


def _check_per_pod_ports(c: _Checker, s: ClusterSettings) -> None:
    """Every pod's two NodePorts must exist and never collide: a clash fails only at apply time."""
    pods, high = s.pod_count, NODE_PORT_RANGE[1]
    client_base, bus_base = s.external_node_port_base, s.external_bus_node_port_base
    ranges = {"externalNodePortBase": client_base, "externalBusNodePortBase": bus_base}
    for key, base in ranges.items():
        if base + pods - 1 > high:
            c.fail(
                key,
                base,
                f"needs one NodePort per pod: {base}..{base + pods - 1} for {pods} pods must end at {high} at most",
            )
    if client_base <= bus_base + pods - 1 and bus_base <= client_base + pods - 1:
        c.fail(
            "externalBusNodePortBase",
            bus_base,
            f"its range {bus_base}..{bus_base + pods - 1} overlaps externalNodePortBase's "
            f"{client_base}..{client_base + pods - 1}",
        )
    for key, base in ranges.items():
        if base <= s.external_node_port <= base + pods - 1:
            c.fail(key, base, f"its range {base}..{base + pods - 1} contains externalNodePort {s.external_node_port}")


def _check_tls(c: _Checker, s: ClusterSettings) -> None:
    if not c.fine("tls"):
        return
    if s.tls_only and not s.tls and c.fine("tlsOnly"):
        c.fail("tlsOnly", c.value("tlsOnly"), "needs tls: true")
    if s.tls_secret_name and not s.tls and c.fine("tlsSecretName"):
        c.fail("tlsSecretName", s.tls_secret_name, "needs tls: true")
    if s.tls and not s.tls_only and s.external_access == "per-pod" and c.fine("tlsOnly", "externalAccess"):
        c.fail(
            "externalAccess",
            s.external_access,
            "per-pod with tls needs tlsOnly: true (each pod's one client NodePort carries either the plain or the "
            "TLS port, and the node announces one)",
        )


def _check_metrics(c: _Checker, s: ClusterSettings) -> None:
    """Settings of the sidecar or the ServiceMonitor without them would silently do nothing."""
    if c.fine("metrics") and not s.metrics:
        for key, given in (
            ("serviceMonitor", s.service_monitor),
            ("metricsAllowedNamespaces", s.metrics_allowed_namespaces),
            ("metricsSlowlogEntries", s.metrics_slowlog_entries),
        ):
            if given and c.fine(key):
                c.fail(key, c.value(key), "needs metrics: true")
    if (
        c.fine("serviceMonitor")
        and not s.service_monitor
        and s.service_monitor_labels
        and c.fine("serviceMonitorLabels")
    ):
        c.fail("serviceMonitorLabels", c.value("serviceMonitorLabels"), "needs serviceMonitor: true")
    if s.metrics and c.fine("metrics", "aclUsers") and EXPORTER_USER in {u for u, _r in s.acl_users}:
        c.fail(
            "aclUsers",
            c.value("aclUsers"),
            f"must not name the user {EXPORTER_USER!r} with metrics: true (the metrics sidecar's own user)",
        )


def _check_backup(c: _Checker, s: ClusterSettings) -> None:
    """Settings of a backup volume nobody declared would silently do nothing."""
    if c.fine("backupSchedule", "restoreFrom") and not s.backup_volume:
        for key, given in (
            ("backupNode", s.backup_node),
            ("backupPath", s.backup_path),
            ("backupRetention", s.backup_retention),
            ("backupSize", s.backup_size),
        ):
            if c.fine(key) and given != DEFAULTS[key]:
                c.fail(key, c.value(key), "needs backupSchedule or restoreFrom")
        return
    if s.tls and c.fine("tls", "backupSchedule", "restoreFrom"):
        key = "backupSchedule" if s.backup_schedule else "restoreFrom"
        c.fail(key, c.value(key), "is not supported with tls yet (the backup and restore scripts speak plain text)")
    if s.backup_schedule and c.fine("backupSchedule", "aclUsers") and BACKUP_USER in {u for u, _r in s.acl_users}:
        c.fail("aclUsers", c.value("aclUsers"), f"must not name the user {BACKUP_USER!r} with backupSchedule (its own)")
    if s.restore_from and s.bootstrap_endpoints and c.fine("restoreFrom", "bootstrapEndpoints"):
        c.fail("restoreFrom", s.restore_from, "needs pods to restore into; bootstrapEndpoints has none")


def _check_password(c: _Checker, value: Any, auth: bool, is_secret: bool) -> SecretValue | None:
    """The value never enters a message: problems name the key and what is allowed only."""
    if value is None:
        return None
    shown = "[secret]"
    if not auth:
        c.fail("password", shown, "is set but auth is false; remove it (pulumi config rm password) or turn auth on")
        return None
    if not isinstance(value, str):
        c.fail("password", shown, "must be a string")
        return None
    low, high = PASSWORD_LENGTH
    if not low <= len(value) <= high or PASSWORD.match(value) is None:
        c.fail(
            "password",
            shown,
            f"must be {low} to {high} printable ASCII characters without spaces, quotes or backslashes "
            "(the value is not shown)",
        )
        return None
    if not is_secret:
        c.fail(
            "password",
            shown,
            "is stored in plain text in the stack file; set it with `pulumi config set --secret password ...`",
        )
        return None
    return SecretValue(value)


def _check_acl_passwords(c: _Checker, value: Any, names: list[str] | None, is_secret: bool) -> dict[str, SecretValue]:
    """A secret JSON object ``{user: password}`` covering exactly the aclUsers (``names``; None when
    aclUsers is itself bad, then that is not checked); values never shown."""
    shown = "[secret]"
    if value is None:
        if names:
            c.fail(
                "aclPasswords",
                None,
                f"needs a password for every aclUsers entry: {names} "
                "(pulumi config set --secret --path 'aclPasswords.<user>' ...)",
            )
        return {}
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        c.fail("aclPasswords", shown, "must be an object of user name -> password")
        return {}
    if names is not None and sorted(parsed) != sorted(names):
        c.fail("aclPasswords", shown, f"must name exactly the aclUsers {sorted(names)}; it names {sorted(parsed)}")
        return {}
    low, high = PASSWORD_LENGTH
    bad = sorted(k for k, v in parsed.items() if not low <= len(v) <= high or PASSWORD.match(v) is None)
    if bad:
        c.fail(
            "aclPasswords",
            shown,
            f"passwords of {bad} must be {low} to {high} printable ASCII characters without spaces, quotes or "
            "backslashes (values not shown)",
        )
        return {}
    if not is_secret:
        c.fail("aclPasswords", shown, "is stored in plain text in the stack file; set it with --secret")
        return {}
    return {k: SecretValue(v) for k, v in parsed.items()}
