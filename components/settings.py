"""The one place where stack configuration is checked.

Bad config must never reach a cluster: a wrong value found half-way through a
``pulumi up`` leaves objects behind, so every key is parsed and checked here,
all problems are collected, and a single :class:`SettingsError` naming each key,
its value and what is allowed is raised before any resource is registered.
``validate`` is pure (no Pulumi) so tests can call it directly.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import pulumi

NAMESPACE = "redis-cluster"

# Code-side defaults. Pulumi.yaml declares the same defaults for `pulumi config`
# users; tests/components/test_settings.py keeps the two in sync.
DEFAULTS: dict[str, Any] = {
    "name": "redis-cluster",
    "namespace": "default",
    "createNamespace": False,
    "masters": 3,
    "replicasPerMaster": 1,
    "image": "redis:7.0.15",
    "imagePullPolicy": "IfNotPresent",
    "storageSize": "150Mi",
    "storageClassName": "redis-cluster-local",
    "defaultStorageClass": False,
    "hostPathBase": "/mnt/redis-cluster",
    "volumePermissionsInit": True,
    "nodes": [],
    "antiAffinity": "preferred",
    "externalNodePort": 30036,
    "nodeTimeoutMs": 15000,
    "clusterDomain": "cluster.local",
    "cpuRequest": "100m",
    "memoryRequest": "128Mi",
    "cpuLimit": "",
    "memoryLimit": "256Mi",
    "renderYamlTo": "",
    "bootstrapConnection": "port-forward",
    "bootstrapTimeoutSeconds": 600,
    "bootstrapEndpoints": [],
    "auth": True,
    "allowDangerousCommands": False,
    "externalAccess": "none",
    "externalHost": "",
    "externalNodePortBase": 31000,
    "externalBusNodePortBase": 32000,
    "networkPolicy": True,
    "allowedClientNamespaces": [],
    "allowedClientCidrs": [],
    "nodeCidrs": [],
    "tls": False,
    "tlsOnly": False,
    "tlsSecretName": "",
    "aclUsers": [],
}

# Keys read with cfg.get_secret: not in DEFAULTS (no default, never in Pulumi.yaml) and never
# shown in a message. `pulumi config set --secret password ...`.
SECRET_KEYS = ("password", "aclPasswords")
PASSWORD_LENGTH = (8, 512)
# Printable ASCII without space, quotes and backslash: the password is written into a
# redis.conf fragment (`user default on >PASSWORD`, `masterauth PASSWORD`) where those
# characters would start quoting or escaping.
_PASSWORD = re.compile(r"^[!#-&(-\[\]-~]+$")

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
ANTI_AFFINITIES = ("preferred", "required")
BOOTSTRAP_CONNECTIONS = ("port-forward", "direct")
EXTERNAL_ACCESS = ("none", "shared", "per-pod")
NODE_PORT_RANGE = (30000, 32767)
MAX_NAME_LEN = 40  # pod names `<name>-<ordinal>` and claim names `data-<name>-<ordinal>` stay short

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUANTITY = re.compile(
    r"^(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$"
)
_SUFFIX_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):(?P<port>[0-9]+)$")


class SecretValue:
    """A secret config value. ``repr``/``str`` never show it, so a settings object can be
    printed, logged or put in an error message safely; ``reveal()`` is the one way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue([secret])"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecretValue", self._value))


class SettingsError(pulumi.RunError, ValueError):
    """Every problem in the stack config at once, so one `pulumi preview` shows them all.

    A ``pulumi.RunError`` so the engine prints the message alone, not a traceback.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid {NAMESPACE} configuration ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class ClusterSettings:
    """Validated settings; field names mirror the config keys in snake_case."""

    name: str
    namespace: str
    create_namespace: bool
    masters: int
    replicas_per_master: int
    image: str
    image_pull_policy: str
    storage_size: str
    storage_class_name: str
    default_storage_class: bool
    host_path_base: str
    volume_permissions_init: bool
    nodes: tuple[str, ...]
    anti_affinity: str
    external_node_port: int
    node_timeout_ms: int
    cluster_domain: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    render_yaml_to: str
    bootstrap_connection: str
    bootstrap_timeout_seconds: int
    bootstrap_endpoints: tuple[str, ...]
    auth: bool = True
    # The configured client password (None: generated by the program when auth is on).
    password: SecretValue | None = field(default=None, repr=False)
    allow_dangerous_commands: bool = False
    external_access: str = "none"
    external_host: str = ""
    external_node_port_base: int = 31000
    external_bus_node_port_base: int = 32000
    network_policy: bool = True
    allowed_client_namespaces: tuple[str, ...] = ()
    allowed_client_cidrs: tuple[str, ...] = ()
    node_cidrs: tuple[str, ...] = ()
    tls: bool = False
    tls_only: bool = False
    tls_secret_name: str = ""
    # (name, rules) of extra ACL users, and their passwords (secret config aclPasswords).
    acl_users: tuple[tuple[str, str], ...] = ()
    acl_passwords: tuple[tuple[str, SecretValue], ...] = field(default=(), repr=False)

    @property
    def pod_count(self) -> int:
        return self.masters * (1 + self.replicas_per_master)

    def client_node_port(self, ordinal: int) -> int:
        """Per-pod external access: the NodePort of pod ``ordinal``'s client (or TLS) port."""
        return self.external_node_port_base + ordinal

    def bus_node_port(self, ordinal: int) -> int:
        """Per-pod external access: the NodePort of pod ``ordinal``'s cluster bus port."""
        return self.external_bus_node_port_base + ordinal


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes resource quantity as a number, or None when it is not one."""
    match = _QUANTITY.match(text)
    if match is None:
        return None
    try:
        number = Decimal(match["num"])
    except InvalidOperation:
        return None
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX_FACTORS[suffix]


class _Checker:
    """Collects problems instead of stopping at the first one."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.problems: list[str] = []

    def fail(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{NAMESPACE}:{key} = {value!r}: {allowed}")

    def value(self, key: str) -> Any:
        return self.raw[key] if key in self.raw and self.raw[key] is not None else DEFAULTS[key]

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.value(key)
        parsed: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            parsed = value
        elif isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value.strip()):
            parsed = int(value.strip())
        if parsed is None or not low <= parsed <= high:
            self.fail(key, value, f"must be an integer from {low} to {high}")
            return int(DEFAULTS[key])
        return parsed

    def boolean(self, key: str) -> bool:
        value = self.value(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.fail(key, value, "must be true or false")
        return bool(DEFAULTS[key])

    def string(self, key: str, check: Callable[[str], bool], allowed: str) -> str:
        value = self.value(key)
        if not isinstance(value, str) or not check(value):
            self.fail(key, value, allowed)
            return str(DEFAULTS[key])
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        return self.string(key, lambda v: v in choices, "must be one of " + ", ".join(choices))

    def string_list(self, key: str) -> list[str]:
        value = self.value(key)
        items: Any = value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    items = json.loads(text)
                except json.JSONDecodeError:
                    items = None
            else:
                items = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            self.fail(key, value, "must be a list of strings")
            return []
        return list(items)

    def quantity(self, key: str, optional: bool = False) -> str:
        def ok(v: str) -> bool:
            if optional and v == "":
                return True
            parsed = parse_quantity(v)
            return parsed is not None and parsed > 0

        allowed = "must be a positive Kubernetes quantity such as 150Mi, 1Gi or 500m"
        return self.string(key, ok, allowed + (' (or "" for none)' if optional else ""))


def _is_dns_label(v: str) -> bool:
    return len(v) <= 63 and _DNS_LABEL.match(v) is not None


def _is_dns_subdomain(v: str) -> bool:
    return len(v) <= 253 and _DNS_SUBDOMAIN.match(v) is not None


def _is_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _is_cidr(v: str) -> bool:
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        return False
    return True


def _is_host_port(v: str) -> bool:
    match = _HOST_PORT.match(v)
    return match is not None and 1 <= int(match["port"]) <= 65535


def validate(raw: Mapping[str, Any], plaintext_keys: Collection[str] = ()) -> ClusterSettings:
    """Check raw config (strings as Pulumi hands them, or native values) and build settings.

    Keys missing from ``raw`` take :data:`DEFAULTS`. Raises :class:`SettingsError`
    listing every problem; never returns partially valid settings. ``raw["password"]``
    and ``raw["aclPasswords"]`` (:data:`SECRET_KEYS`) are checked too but never shown;
    ``plaintext_keys`` names those of them the stack stores unencrypted (rejected).
    """
    c = _Checker(raw)
    for key in sorted(set(raw) - set(DEFAULTS) - set(SECRET_KEYS)):
        c.fail(key, raw[key], "unknown key; known keys are " + ", ".join(sorted([*DEFAULTS, *SECRET_KEYS])))

    name = c.string(
        "name",
        lambda v: len(v) <= MAX_NAME_LEN and _DNS_LABEL.match(v) is not None,
        f"must be a DNS-1123 label of at most {MAX_NAME_LEN} characters (lowercase letters, digits, '-')",
    )
    namespace = c.string(
        "namespace", _is_dns_label, "must be a DNS-1123 label (lowercase letters, digits, '-', at most 63)"
    )
    masters = c.integer("masters", 3, 1000)
    replicas = c.integer("replicasPerMaster", 0, 10)
    image = c.string(
        "image",
        lambda v: v.strip() != "" and not any(ch.isspace() for ch in v),
        "must be a non-empty image reference without spaces",
    )
    pull_policy = c.choice("imagePullPolicy", PULL_POLICIES)
    storage_size = c.quantity("storageSize")
    storage_class = c.string(
        "storageClassName", _is_dns_subdomain, "must be a DNS-1123 subdomain (lowercase, digits, '-', '.')"
    )
    host_path_base = c.string(
        "hostPathBase",
        lambda v: v.startswith("/") and v.rstrip("/") != "" and not any(ch.isspace() for ch in v),
        "must be an absolute directory path other than / without spaces",
    )
    nodes = c.string_list("nodes")
    anti_affinity = c.choice("antiAffinity", ANTI_AFFINITIES)
    node_port = c.integer("externalNodePort", *NODE_PORT_RANGE)
    node_timeout = c.integer("nodeTimeoutMs", 1000, 600000)
    cluster_domain = c.string("clusterDomain", _is_dns_subdomain, "must be a DNS-1123 subdomain")
    cpu_request = c.quantity("cpuRequest")
    memory_request = c.quantity("memoryRequest")
    cpu_limit = c.quantity("cpuLimit", optional=True)
    memory_limit = c.quantity("memoryLimit", optional=True)
    render_yaml_to = c.string("renderYamlTo", lambda v: v == v.strip(), "must be a directory path or empty")
    connection = c.choice("bootstrapConnection", BOOTSTRAP_CONNECTIONS)
    timeout = c.integer("bootstrapTimeoutSeconds", 1, 86400)
    endpoints = c.string_list("bootstrapEndpoints")

    bad_nodes = [n for n in nodes if not _is_dns_subdomain(n)]
    if bad_nodes:
        c.fail("nodes", c.value("nodes"), f"node names must be DNS-1123 subdomains; not {bad_nodes}")
    elif len(set(nodes)) != len(nodes):
        c.fail("nodes", c.value("nodes"), "node names must be unique")
    elif nodes and len(nodes) < replicas + 1:
        c.fail(
            "nodes",
            c.value("nodes"),
            f"needs at least replicasPerMaster+1 = {replicas + 1} nodes so that a master and its "
            f"{replicas} replica(s) never share a node",
        )
    elif nodes and anti_affinity == "required" and len(nodes) < masters * (1 + replicas):
        c.fail(
            "nodes",
            c.value("nodes"),
            f'antiAffinity "required" allows one Redis pod per node, so it needs at least '
            f'{masters * (1 + replicas)} nodes (one per pod); use antiAffinity "preferred" or add nodes',
        )

    bad_endpoints = [e for e in endpoints if not _is_host_port(e)]
    if bad_endpoints:
        c.fail(
            "bootstrapEndpoints",
            c.value("bootstrapEndpoints"),
            f'entries must be "host:port" with a port from 1 to 65535; not {bad_endpoints}',
        )
    elif endpoints and len(endpoints) != masters * (1 + replicas):
        c.fail(
            "bootstrapEndpoints",
            c.value("bootstrapEndpoints"),
            f"needs one endpoint per pod: masters*(1+replicasPerMaster) = {masters * (1 + replicas)}",
        )

    for req_key, req, lim_key, lim in (
        ("cpuRequest", cpu_request, "cpuLimit", cpu_limit),
        ("memoryRequest", memory_request, "memoryLimit", memory_limit),
    ):
        req_q, lim_q = parse_quantity(req), parse_quantity(lim) if lim else None
        if req_q is not None and lim_q is not None and req_q > lim_q:
            c.fail(lim_key, lim, f"must not be below {req_key} = {req!r}")

    create_namespace = c.boolean("createNamespace")
    default_storage_class = c.boolean("defaultStorageClass")
    volume_permissions_init = c.boolean("volumePermissionsInit")

    pods = masters * (1 + replicas)
    auth = c.boolean("auth")
    password = _check_password(c, raw.get("password"), auth, "password" not in plaintext_keys)
    acl_users = _check_acl_users(c, c.string_list("aclUsers"))
    acl_passwords = _check_acl_passwords(
        c, raw.get("aclPasswords"), [u for u, _r in acl_users], "aclPasswords" not in plaintext_keys
    )
    allow_dangerous = c.boolean("allowDangerousCommands")
    external_access = c.choice("externalAccess", EXTERNAL_ACCESS)
    external_host = c.string(
        "externalHost", lambda v: v == "" or _is_ip(v), 'must be an IPv4 or IPv6 address, or "" for the node\'s IP'
    )
    client_base = c.integer("externalNodePortBase", *NODE_PORT_RANGE)
    bus_base = c.integer("externalBusNodePortBase", *NODE_PORT_RANGE)
    network_policy = c.boolean("networkPolicy")
    client_namespaces = c.string_list("allowedClientNamespaces")
    client_cidrs = c.string_list("allowedClientCidrs")
    node_cidrs = c.string_list("nodeCidrs")
    tls = c.boolean("tls")
    tls_only = c.boolean("tlsOnly")
    tls_secret_name = c.string(
        "tlsSecretName", lambda v: v == "" or _is_dns_subdomain(v), 'must be a Secret name (DNS-1123 subdomain) or ""'
    )

    bad_namespaces = [n for n in client_namespaces if not _is_dns_label(n)]
    if bad_namespaces:
        c.fail(
            "allowedClientNamespaces",
            c.value("allowedClientNamespaces"),
            f"must be namespace names; not {bad_namespaces}",
        )
    for key, cidrs in (("allowedClientCidrs", client_cidrs), ("nodeCidrs", node_cidrs)):
        bad = [x for x in cidrs if not _is_cidr(x)]
        if bad:
            c.fail(key, c.value(key), f"must be CIDRs such as 10.0.0.0/8 or 192.168.1.7/32 (host bits zero); not {bad}")

    if external_access == "per-pod":
        _check_per_pod_ports(c, pods, node_port, client_base, bus_base)
        if external_host and network_policy and not node_cidrs:
            c.fail(
                "nodeCidrs",
                c.value("nodeCidrs"),
                "must name the addresses NodePort traffic arrives from (the nodes' CIDRs) when externalAccess is "
                "per-pod with externalHost and networkPolicy is on: those Services use externalTrafficPolicy "
                "Cluster, kube-proxy SNATs the peers' cluster-bus traffic to node addresses, and the policy would "
                "drop it",
            )
    if tls_only and not tls:
        c.fail("tlsOnly", c.value("tlsOnly"), "needs tls: true")
    if tls_secret_name and not tls:
        c.fail("tlsSecretName", tls_secret_name, "needs tls: true")
    if tls and not tls_only and external_access == "per-pod":
        c.fail(
            "externalAccess",
            external_access,
            "per-pod with tls needs tlsOnly: true (each pod's one client NodePort carries either the plain or the "
            "TLS port, and the node announces one)",
        )

    if c.problems:
        raise SettingsError(c.problems)
    return ClusterSettings(
        name=name,
        namespace=namespace,
        create_namespace=create_namespace,
        masters=masters,
        replicas_per_master=replicas,
        image=image,
        image_pull_policy=pull_policy,
        storage_size=storage_size,
        storage_class_name=storage_class,
        default_storage_class=default_storage_class,
        host_path_base=host_path_base.rstrip("/"),
        volume_permissions_init=volume_permissions_init,
        nodes=tuple(nodes),
        anti_affinity=anti_affinity,
        external_node_port=node_port,
        node_timeout_ms=node_timeout,
        cluster_domain=cluster_domain,
        cpu_request=cpu_request,
        memory_request=memory_request,
        cpu_limit=cpu_limit,
        memory_limit=memory_limit,
        render_yaml_to=render_yaml_to,
        bootstrap_connection=connection,
        bootstrap_timeout_seconds=timeout,
        bootstrap_endpoints=tuple(endpoints),
        auth=auth,
        password=password,
        acl_users=tuple(acl_users),
        acl_passwords=tuple(sorted(acl_passwords.items())),
        allow_dangerous_commands=allow_dangerous,
        external_access=external_access,
        external_host=external_host,
        external_node_port_base=client_base,
        external_bus_node_port_base=bus_base,
        network_policy=network_policy,
        allowed_client_namespaces=tuple(client_namespaces),
        allowed_client_cidrs=tuple(client_cidrs),
        node_cidrs=tuple(node_cidrs),
        tls=tls,
        tls_only=tls_only,
        tls_secret_name=tls_secret_name,
    )


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
    if not low <= len(value) <= high or _PASSWORD.match(value) is None:
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


_ACL_USER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RESERVED_USERS = ("default", "operator")
# Rule tokens that set passwords or open a user to anyone: passwords come from aclPasswords only.
_PASSWORD_RULES = re.compile(r"^(>|<|#|!|nopass$|resetpass$|reset$)")


def _check_acl_users(c: _Checker, entries: list[str]) -> list[tuple[str, str]]:
    """``"<name> <rules...>"`` per user, e.g. ``"app ~app:* +@read +@write"``."""
    users: list[tuple[str, str]] = []
    for entry in entries:
        name, _, rules = entry.strip().partition(" ")
        rules = " ".join(rules.split())
        bad_tokens = [tok for tok in rules.split() if _PASSWORD_RULES.match(tok)]
        if not _ACL_USER.match(name) or name in RESERVED_USERS:
            c.fail(
                "aclUsers",
                entry,
                'entries are "<name> <ACL rules>"; the name is lowercase letters, digits, "_" or "-" '
                f"(at most 63) and not one of {', '.join(RESERVED_USERS)}",
            )
        elif not rules or _PASSWORD.match(rules.replace(" ", "")) is None:
            c.fail("aclUsers", entry, "needs ACL rules after the name, printable ASCII without quotes or backslashes")
        elif bad_tokens:
            # The entry may hold a password (">secret"): shown without its rules.
            c.fail(
                "aclUsers",
                f"{name} [rules not shown]",
                "rules may not set passwords or reset the user (>, <, #, !, nopass, resetpass, reset): passwords "
                "come from the secret config value aclPasswords",
            )
        elif name in {u for u, _r in users}:
            c.fail("aclUsers", entry, "user names must be unique")
        else:
            users.append((name, rules))
    return users


def _check_acl_passwords(c: _Checker, value: Any, names: list[str], is_secret: bool) -> dict[str, SecretValue]:
    """A secret JSON object ``{user: password}`` covering exactly the aclUsers; values never shown."""
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
    if sorted(parsed) != sorted(names):
        c.fail("aclPasswords", shown, f"must name exactly the aclUsers {sorted(names)}; it names {sorted(parsed)}")
        return {}
    low, high = PASSWORD_LENGTH
    bad = sorted(k for k, v in parsed.items() if not low <= len(v) <= high or _PASSWORD.match(v) is None)
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


def _check_per_pod_ports(c: _Checker, pods: int, node_port: int, client_base: int, bus_base: int) -> None:
    """Every pod's two NodePorts must exist and never collide: a clash fails only at apply time."""
    high = NODE_PORT_RANGE[1]
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
        if base <= node_port <= base + pods - 1:
            c.fail(key, base, f"its range {base}..{base + pods - 1} contains externalNodePort {node_port}")


def load_settings(cfg: pulumi.Config) -> ClusterSettings:
    """Read the stack's config and validate it; raises before anything is registered.

    Keys set in the stack that this program does not know are reported too: a
    typo such as ``replicaPerMaster`` would otherwise silently deploy the default.
    """
    prefix = cfg.name + ":"
    everything: dict[str, Any] = pulumi.runtime.config.CONFIG.get()
    raw: dict[str, Any] = {k[len(prefix) :]: v for k, v in everything.items() if k.startswith(prefix)}
    for key in DEFAULTS:
        value = cfg.get(key)
        if value is not None:
            raw[key] = value
    # The secret's value is only validated here; it leaves as a SecretValue and becomes a
    # secret Output in components/cluster.py.
    plaintext = [key for key in SECRET_KEYS if key in raw and not pulumi.runtime.config.is_config_secret(prefix + key)]
    return validate(raw, plaintext_keys=plaintext)
