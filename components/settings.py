"""The one place where stack configuration is declared and checked.

Bad config must never reach a cluster: a wrong value found half-way through a
``pulumi up`` leaves objects behind, so every key is parsed and checked here,
all problems are collected, and a single :class:`SettingsError` naming each key,
its value and what is allowed is raised before any resource is registered.
``validate`` is pure (no Pulumi) so tests can call it directly.

Each key is declared once, as a field of :class:`ClusterSettings`: its config
name, default, rule (parser and allowed values) and documentation. Everything
else is derived from those declarations: :data:`DEFAULTS`, the checks, the
config block of ``Pulumi.yaml`` and the reference table in ``docs/config.md``
(``venv/bin/python -m components.settings`` rewrites both; a test fails while
they differ).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args

import pulumi

from bootstrap.model import SLOT_SELECTION, parse_slot_selection

NAMESPACE = "redis-cluster"

# Keys read with cfg.get_secret: no default, never in Pulumi.yaml and never shown in a message.
# `pulumi config set --secret password ...`.
SECRET_KEYS = ("password", "aclPasswords")
PASSWORD_LENGTH = (8, 512)
# Printable ASCII without space, quotes and backslash: the password is written into a
# redis.conf fragment (`user default on >PASSWORD`, `masterauth PASSWORD`) where those
# characters would start quoting or escaping.
_PASSWORD = re.compile(r"^[!#-&(-\[\]-~]+$")

# redis_exporter: the upstream image's tag by default, the same release tools/cluster builds from its Go module.
EXPORTER_VERSION = "v1.82.0"
# The ACL user the metrics sidecar logs in as (components/redis_config.py); an aclUsers entry may not take it.
EXPORTER_USER = "exporter"
# The ACL user the scheduled backup logs in as (components/backup.py); an aclUsers entry may not take it.
BACKUP_USER = "backup"
# A backup's directory name, as both the CronJob and `python -m bootstrap backup` write it.
BACKUP_NAME = re.compile(r"^redis-cluster-[0-9]{8}T[0-9]{6}Z$")
# The five fields of a Kubernetes CronJob schedule (minute hour day month weekday), or a macro.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,-]+$")
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
AntiAffinity = Literal["preferred", "required"]
BootstrapConnection = Literal["port-forward", "direct"]
ExternalAccess = Literal["none", "shared", "per-pod"]
PULL_POLICIES: tuple[PullPolicy, ...] = get_args(PullPolicy)
ANTI_AFFINITIES: tuple[AntiAffinity, ...] = get_args(AntiAffinity)
BOOTSTRAP_CONNECTIONS: tuple[BootstrapConnection, ...] = get_args(BootstrapConnection)
EXTERNAL_ACCESS: tuple[ExternalAccess, ...] = get_args(ExternalAccess)
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
_ACL_USER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RESERVED_USERS = ("default", "operator")
# Rule tokens that set passwords or open a user to anyone: passwords come from aclPasswords only.
_PASSWORD_RULES = re.compile(r"^(>|<|#|!|nopass$|resetpass$|reset$)")

T = TypeVar("T")
C = TypeVar("C", bound=str)


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


# ------------------------------------------------------------------ rules: one key's value on its own

_RAW: Any = object()  # "show the value as given"


class Invalid(ValueError):
    """A refused value. Each problem is (what to show instead of the value, or _RAW; what is wrong)."""

    def __init__(self, *problems: tuple[Any, str]) -> None:
        super().__init__("; ".join(p for _s, p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Rule(Generic[T]):
    """How a raw value (a string as the engine hands it, or a native value) becomes a setting.

    ``allowed`` completes "must be ..." in messages and is the reference's "Allowed" column;
    ``convert`` returns the value or raises :class:`Invalid` (a bare ``Invalid()`` means "must be
    <allowed>").
    """

    allowed: str
    convert: Callable[[Any], T]

    def parse(self, value: Any) -> T:
        try:
            return self.convert(value)
        except Invalid as exc:
            if not exc.problems:
                raise Invalid((_RAW, f"must be {self.allowed}")) from None
            raise


def _integer(value: Any, low: int, high: int) -> int:
    parsed: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    elif isinstance(value, str) and re.fullmatch(r"[-+]?[0-9]+", value.strip()):
        parsed = int(value.strip())
    if parsed is None or not low <= parsed <= high:
        raise Invalid()
    return parsed


def integer(low: int, high: int) -> Rule[int]:
    return Rule(f"an integer from {low} to {high}", lambda v: _integer(v, low, high))


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Invalid()


BOOLEAN = Rule("true or false", _boolean)


def _text(value: Any, check: Callable[[str], bool]) -> str:
    if not isinstance(value, str) or not check(value):
        raise Invalid()
    return value


def text(check: Callable[[str], bool], allowed: str) -> Rule[str]:
    return Rule(allowed, lambda v: _text(v, check))


def choice(options: tuple[C, ...]) -> Rule[C]:
    def convert(value: Any) -> C:
        for option in options:
            if value == option:
                return option
        raise Invalid()

    return Rule("one of " + ", ".join(options), convert)


def quantity(optional: bool = False) -> Rule[str]:
    def ok(v: str) -> bool:
        if optional and v == "":
            return True
        parsed = parse_quantity(v)
        return parsed is not None and parsed > 0

    allowed = "a positive Kubernetes quantity such as 150Mi, 1Gi or 500m"
    return text(ok, allowed + (' (or "" for none)' if optional else ""))


def _string_list(value: Any) -> list[str]:
    items: Any = value
    if isinstance(value, str):
        raw = value.strip()
        if raw.startswith("["):
            try:
                items = json.loads(raw)
            except json.JSONDecodeError:
                items = None
        else:
            items = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise Invalid((_RAW, "must be a list of strings"))
    return list(items)


def strings(items: str, check: Callable[[str], bool], unique: bool = False) -> Rule[tuple[str, ...]]:
    """A list (YAML, JSON text or comma-separated) of ``items``, each passing ``check``."""

    def convert(value: Any) -> tuple[str, ...]:
        entries = _string_list(value)
        bad = [e for e in entries if not check(e)]
        if bad:
            raise Invalid((_RAW, f"must be a list of {items}; not {bad}"))
        if unique and len(set(entries)) != len(entries):
            raise Invalid((_RAW, f"must be a list of {items}; they must be unique"))
        return tuple(entries)

    return Rule(f"a list of {'unique ' if unique else ''}{items}", convert)


def _acl_users(value: Any) -> tuple[tuple[str, str], ...]:
    """``"<name> <rules...>"`` per user, e.g. ``"app ~app:* +@read +@write"``; one problem per bad entry."""
    users: list[tuple[str, str]] = []
    problems: list[tuple[Any, str]] = []
    for entry in _string_list(value):
        name, _, rules = entry.strip().partition(" ")
        rules = " ".join(rules.split())
        bad_tokens = [tok for tok in rules.split() if _PASSWORD_RULES.match(tok)]
        if not _ACL_USER.match(name) or name in RESERVED_USERS:
            problems.append(
                (
                    entry,
                    'entries are "<name> <ACL rules>"; the name is lowercase letters, digits, "_" or "-" '
                    f"(at most 63) and not one of {', '.join(RESERVED_USERS)}",
                )
            )
        elif not rules or _PASSWORD.match(rules.replace(" ", "")) is None:
            problems.append((entry, "needs ACL rules after the name, printable ASCII without quotes or backslashes"))
        elif bad_tokens:
            # The entry may hold a password (">secret"): shown without its rules.
            problems.append(
                (
                    f"{name} [rules not shown]",
                    "rules may not set passwords or reset the user (>, <, #, !, nopass, resetpass, reset): "
                    "passwords come from the secret config value aclPasswords",
                )
            )
        elif name in {u for u, _r in users}:
            problems.append((entry, "user names must be unique"))
        else:
            users.append((name, rules))
    if problems:
        raise Invalid(*problems)
    return tuple(users)


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


def _is_slot_selection(v: str) -> bool:
    try:
        return v == "" or bool(parse_slot_selection(v))
    except ValueError:
        return False


def _is_schedule(v: str) -> bool:
    fields = v.split()
    return v == "" or v in _CRON_MACROS or (len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields))


def _is_backup_name(v: str) -> bool:
    return v in ("", "latest") or BACKUP_NAME.match(v) is not None


def _optional_host_path(value: Any) -> str:
    return "" if value == "" else _host_path(value)


def _is_host_port(v: str) -> bool:
    match = _HOST_PORT.match(v)
    return match is not None and 1 <= int(match["port"]) <= 65535


def _no_spaces(v: str) -> bool:
    return not any(ch.isspace() for ch in v)


def _host_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.rstrip("/") == "" or not _no_spaces(value):
        raise Invalid()
    return value.rstrip("/")


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _is_label_key(v: str) -> bool:
    prefix, _, name = v.rpartition("/")
    return (not prefix or _is_dns_subdomain(prefix)) and len(name) <= 63 and _LABEL_NAME.match(name) is not None


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    """``"key=value"`` per label; the value may be empty."""
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    for entry in _string_list(value):
        key, sep, val = entry.partition("=")
        if not sep or not _is_label_key(key) or len(val) > 63 or (val and _LABEL_NAME.match(val) is None):
            bad.append(entry)
        else:
            pairs.append((key, val))
    if bad:
        raise Invalid(
            (_RAW, f'must be a list of "<label key>=<label value>" entries (Kubernetes label syntax); not {bad}')
        )
    if len({k for k, _v in pairs}) != len(pairs):
        raise Invalid((_RAW, "must not name a label key twice"))
    return tuple(pairs)


_CIDRS = "CIDRs such as 10.0.0.0/8 or 192.168.1.7/32 (host bits zero)"
_SETTING = "setting"


@dataclass(frozen=True)
class Key(Generic[T]):
    """One config key: ``name`` in the stack, ``field`` of :class:`ClusterSettings`."""

    name: str
    field: str
    default: T
    rule: Rule[T]
    doc: str

    @property
    def config_default(self) -> Any:
        """The default as Pulumi.yaml states it (YAML has lists, not tuples)."""
        return list(self.default) if isinstance(self.default, tuple) else self.default

    @property
    def type(self) -> str:
        """The Pulumi.yaml type."""
        for python, name in ((bool, "boolean"), (int, "integer"), (str, "string"), (tuple, "array")):
            if isinstance(self.default, python):
                return name
        raise TypeError(f"{self.name}: no config type for default {self.default!r}")


def setting(name: str, default: T, rule: Rule[T], doc: str) -> T:
    """Declare a config key as a field of :class:`ClusterSettings` (the field's name is ``name`` in
    snake_case; tests/components/test_settings.py checks that)."""
    meta = {_SETTING: (name, rule, " ".join(doc.split()))}
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------ the declarations


@dataclass(frozen=True)
class ClusterSettings:
    """Validated settings; field names mirror the config keys in snake_case. Declaration order is
    the order of Pulumi.yaml and of the reference in docs/config.md."""

    name: str = setting(
        "name",
        "redis-cluster",
        text(
            lambda v: len(v) <= MAX_NAME_LEN and _DNS_LABEL.match(v) is not None,
            f"a DNS-1123 label of at most {MAX_NAME_LEN} characters (lowercase letters, digits, '-')",
        ),
        "Name of the StatefulSet and `app.kubernetes.io/instance` label; pods are `<name>-<ordinal>`.",
    )
    namespace: str = setting(
        "namespace",
        "default",
        text(_is_dns_label, "a DNS-1123 label (lowercase letters, digits, '-', at most 63)"),
        "Namespace of every namespaced object.",
    )
    create_namespace: bool = setting(
        "createNamespace",
        False,
        BOOLEAN,
        "Create the namespace in the stack (it is then deleted by `pulumi destroy`).",
    )
    masters: int = setting("masters", 3, integer(3, 1000), "Number of Redis masters.")
    replicas_per_master: int = setting(
        "replicasPerMaster",
        1,
        integer(0, 10),
        "Replicas per master. Pods = `masters * (1 + replicasPerMaster)`.",
    )
    image: str = setting(
        "image",
        "redis:7.0.15",
        text(lambda v: v.strip() != "" and _no_spaces(v), "a non-empty image reference without spaces"),
        """Redis image (Redis 7.0 or newer: `cluster-announce-hostname`). The start script needs `redis-server`,
        `redis-cli`, a POSIX `sh` with `grep`, `awk`, `tail`, `cut`, `cp`, `mv`, `sleep`, and `getent` or `nslookup`
        (the official image or busybox provide them); the init container needs `chown`.""",
    )
    image_pull_policy: PullPolicy = setting(
        "imagePullPolicy",
        "IfNotPresent",
        choice(PULL_POLICIES),
        "Pull policy of the Redis containers (and of the metrics sidecar).",
    )
    storage_size: str = setting(
        "storageSize",
        "150Mi",
        quantity(),
        "Capacity of every PersistentVolume and request of every claim.",
    )
    storage_class_name: str = setting(
        "storageClassName",
        "redis-cluster-local",
        text(_is_dns_subdomain, "a DNS-1123 subdomain (lowercase, digits, '-', '.')"),
        """Name of the no-provisioner StorageClass the stack creates. StorageClasses are cluster-wide: use a
        different name per stack sharing a Kubernetes cluster.""",
    )
    default_storage_class: bool = setting(
        "defaultStorageClass", False, BOOLEAN, "Opt in to marking that StorageClass as the cluster's default."
    )
    host_path_base: str = setting(
        "hostPathBase",
        "/mnt/redis-cluster",
        Rule("an absolute directory path other than / without spaces", _host_path),
        "Directory on the nodes; volume `i` is `<hostPathBase>/<namespace>/<name>-<i>`.",
    )
    volume_permissions_init: bool = setting(
        "volumePermissionsInit",
        True,
        BOOLEAN,
        """Add a root init container (only `CAP_CHOWN`) that chowns `/data` to uid 999. Needed for hostPath
        volumes, which the kubelet creates root-owned; turn off where Pod Security "restricted" applies and
        pre-create the directories owned by 999.""",
    )
    nodes: tuple[str, ...] = setting(
        "nodes",
        (),
        strings("node names (DNS-1123 subdomains)", _is_dns_subdomain, unique=True),
        """Kubernetes node names. When set, every volume is a `local` PV pinned (required nodeAffinity) to
        `nodes[i % len(nodes)]`; at least `replicasPerMaster + 1` nodes so a master and its replicas can sit
        on different nodes. Empty: hostPath volumes without node affinity (single-node clusters).""",
    )
    anti_affinity: AntiAffinity = setting(
        "antiAffinity",
        "preferred",
        choice(ANTI_AFFINITIES),
        """Pod anti-affinity on `kubernetes.io/hostname`: `preferred` (weight 100) or `required` (at most one
        Redis pod per node; with `nodes` set that needs one node per pod).""",
    )
    external_node_port: int = setting(
        "externalNodePort",
        30036,
        integer(*NODE_PORT_RANGE),
        "`shared`: the NodePort of the one Service in front of all pods.",
    )
    node_timeout_ms: int = setting(
        "nodeTimeoutMs", 15000, integer(1000, 600000), "`cluster-node-timeout` in milliseconds."
    )
    cluster_domain: str = setting(
        "clusterDomain",
        "cluster.local",
        text(_is_dns_subdomain, "a DNS-1123 subdomain"),
        "Cluster DNS domain, part of each pod's stable hostname.",
    )
    cpu_request: str = setting("cpuRequest", "100m", quantity(), "CPU request of each Redis container.")
    memory_request: str = setting("memoryRequest", "128Mi", quantity(), "Memory request of each Redis container.")
    cpu_limit: str = setting(
        "cpuLimit", "", quantity(optional=True), "CPU limit of each Redis container; empty for none (no throttling)."
    )
    memory_limit: str = setting(
        "memoryLimit",
        "256Mi",
        quantity(optional=True),
        "Memory limit of each Redis container; empty for none. Must not be below the request.",
    )
    render_yaml_to: str = setting(
        "renderYamlTo",
        "",
        text(lambda v: v == v.strip(), "a directory path or empty"),
        """When set, every Kubernetes object is written as YAML into this directory by a
        `render_yaml_to_directory` provider instead of being applied (no cluster needed).""",
    )
    bootstrap_connection: BootstrapConnection = setting(
        "bootstrapConnection",
        "port-forward",
        choice(BOOTSTRAP_CONNECTIONS),
        """How the cluster bootstrap reaches the pods: through the Kubernetes API (`port-forward`) or at the
        pod IPs (`direct`).""",
    )
    bootstrap_timeout_seconds: int = setting(
        "bootstrapTimeoutSeconds",
        600,
        integer(1, 86400),
        "How long the bootstrap may take to form or converge the cluster.",
    )
    accept_lost_slots: str = setting(
        "acceptLostSlots",
        "",
        text(_is_slot_selection, f"empty, or {SLOT_SELECTION}"),
        """Slots whose every copy is gone (a master and all its replicas lost with their data) that the next
        `pulumi up` may reassign empty. Without it such an `up` fails, naming the slots and the keys they likely
        held, and reassigns nothing. Consent is for one loss: the value is spent by the first `up` that
        succeeds with it, whether it reassigned anything or not (the bootstrap's `lostSlotsAccepted` output
        says which slots and when), and a later loss needs a value spelled differently (e.g. the ranges that
        `up` names instead of `all`).""",
    )
    bootstrap_endpoints: tuple[str, ...] = setting(
        "bootstrapEndpoints",
        (),
        strings('"host:port" entries with a port from 1 to 65535', _is_host_port),
        "Static `host:port` Redis endpoints, one per pod, used by the bootstrap instead of discovering pods (tests).",
    )
    auth: bool = setting(
        "auth",
        True,
        BOOLEAN,
        """Clients (the `default` ACL user) need a password: the secret config value `password`, or one generated
        once and kept (encrypted) in the state. Delivered to the pods only through the Secret `<name>-auth` (see
        docs/security.md). `false`: the `default` user needs none.""",
    )
    # The configured client password (None: generated by the program when auth is on).
    password: SecretValue | None = field(default=None, repr=False)
    allow_dangerous_commands: bool = setting(
        "allowDangerousCommands",
        False,
        BOOLEAN,
        """Let the `default` user (every client) run `FLUSHALL`, `FLUSHDB`, `DEBUG`, `CONFIG`, `ACL` and
        `SHUTDOWN`, and turn on `enable-debug-command`. Off: those are denied by ACL; the bootstrap uses its own
        `operator` user.""",
    )
    external_access: ExternalAccess = setting(
        "externalAccess",
        "none",
        choice(EXTERNAL_ACCESS),
        """Access from outside Kubernetes: `none`; `shared` — the recipe's single NodePort `externalNodePort` in
        front of all pods (MOVED redirects name pod IPs; see below); `per-pod` — one NodePort Service per pod,
        each node announcing `externalHost` (or its Kubernetes node's IP) and its own NodePorts, so redirects
        are reachable.""",
    )
    external_host: str = setting(
        "externalHost",
        "",
        text(lambda v: v == "" or _is_ip(v), 'an IPv4 or IPv6 address, or "" for the node\'s IP'),
        """`per-pod`: the IP address every pod announces; empty for the IP of the node the pod runs on
        (`status.hostIP`). With it set the per-pod Services use `externalTrafficPolicy: Cluster`, otherwise
        `Local`.""",
    )
    external_node_port_base: int = setting(
        "externalNodePortBase",
        31000,
        integer(*NODE_PORT_RANGE),
        """`per-pod`: pod `i`'s client port is NodePort `externalNodePortBase + i`. All pods' ports must fit in
        30000-32767 and overlap neither the bus range nor `externalNodePort`.""",
    )
    external_bus_node_port_base: int = setting(
        "externalBusNodePortBase",
        32000,
        integer(*NODE_PORT_RANGE),
        """`per-pod`: pod `i`'s cluster bus port is NodePort `externalBusNodePortBase + i` (peers reach each
        other through the announced address too). Same range rules.""",
    )
    network_policy: bool = setting(
        "networkPolicy",
        True,
        BOOLEAN,
        """Create a NetworkPolicy for the Redis pods: bus port only from the cluster's own pods; client port
        from the own namespace, `allowedClientNamespaces` and `allowedClientCidrs`; with external access, the
        client port from anywhere. Needs a network plugin that enforces NetworkPolicy.""",
    )
    allowed_client_namespaces: tuple[str, ...] = setting(
        "allowedClientNamespaces",
        (),
        strings("namespace names (DNS-1123 labels)", _is_dns_label),
        "Further namespaces whose pods may reach the client port (the cluster's own namespace always may).",
    )
    allowed_client_cidrs: tuple[str, ...] = setting(
        "allowedClientCidrs",
        (),
        strings(_CIDRS, _is_cidr),
        "CIDRs that may reach the client port — e.g. where the bootstrap runs with `bootstrapConnection: direct`.",
    )
    node_cidrs: tuple[str, ...] = setting(
        "nodeCidrs",
        (),
        strings(_CIDRS, _is_cidr),
        """`per-pod` with `externalHost` and `networkPolicy`: the nodes' CIDRs, allowed to the bus port, because
        those Services SNAT the peers' bus traffic to node addresses. Required in that combination.""",
    )
    tls: bool = setting(
        "tls",
        False,
        BOOLEAN,
        """TLS for clients (`tls-port`), replication (`tls-replication yes`) and the cluster bus (`tls-cluster
        yes`). Certificates from `tlsSecretName`, or a CA and a server certificate generated with `pulumi_tls`
        into the Secret `<name>-tls`.""",
    )
    tls_only: bool = setting(
        "tlsOnly",
        False,
        BOOLEAN,
        """With `tls`: no plain-text port (`port 0`), TLS on 6379. Without it TLS listens on 6380 next to plain
        6379. `per-pod` external access with `tls` needs it.""",
    )
    tls_secret_name: str = setting(
        "tlsSecretName",
        "",
        text(lambda v: v == "" or _is_dns_subdomain(v), 'a Secret name (DNS-1123 subdomain) or ""'),
        """With `tls`: an existing Secret in the namespace with `tls.crt`, `tls.key` and `ca.crt` (the
        cert-manager layout); its certificate must cover the pods' headless names and `localhost`/`127.0.0.1`.
        Empty: generated.""",
    )
    # (name, rules) of extra ACL users, and their passwords (secret config aclPasswords).
    acl_users: tuple[tuple[str, str], ...] = setting(
        "aclUsers",
        (),
        Rule('a list of "<name> <ACL rules>" entries', _acl_users),
        """Extra ACL users, one `"<name> <ACL rules>"` each, e.g. `"app ~app:* +@read +@write -@dangerous"`
        (always `on`; rules may not set passwords — `>`, `<`, `#`, `nopass`, `reset`…). Their passwords come
        from the secret config value `aclPasswords`. Not `default` or `operator`.""",
    )
    acl_passwords: tuple[tuple[str, SecretValue], ...] = field(default=(), repr=False)
    metrics: bool = setting(
        "metrics",
        False,
        BOOLEAN,
        """Add a `redis_exporter` sidecar to every Redis pod (Prometheus metrics on port 9121, named `metrics`)
        and the headless Service `<name>-metrics` in front of those ports. The exporter logs in as the ACL user
        `exporter`, which may run only the read-only commands it needs (no keys, no CONFIG); its generated
        password reaches it as a file from the Secret `<name>-auth`. See "Metrics" in the README.""",
    )
    metrics_image: str = setting(
        "metricsImage",
        f"oliver006/redis_exporter:{EXPORTER_VERSION}",
        text(lambda v: v.strip() != "" and _no_spaces(v), "a non-empty image reference without spaces"),
        """`metrics`: the redis_exporter image (a release with `--redis.password-file`; tested with the
        default); pulled with `imagePullPolicy`.""",
    )
    metrics_allowed_namespaces: tuple[str, ...] = setting(
        "metricsAllowedNamespaces",
        (),
        strings("namespace names (DNS-1123 labels)", _is_dns_label),
        """`metrics` with `networkPolicy`: namespaces whose pods may reach the metrics port (where Prometheus
        runs); the cluster's own namespace always may.""",
    )
    service_monitor: bool = setting(
        "serviceMonitor",
        False,
        BOOLEAN,
        """`metrics`: also create a `monitoring.coreos.com/v1` ServiceMonitor `<name>` selecting the metrics
        Service, for the Prometheus Operator. Needs its CRD in the cluster (`pulumi up` fails without it).""",
    )
    service_monitor_labels: tuple[tuple[str, str], ...] = setting(
        "serviceMonitorLabels",
        (),
        Rule('a list of "<label key>=<label value>" entries (Kubernetes label syntax)', _labels),
        """`serviceMonitor`: extra labels on the ServiceMonitor, e.g. `["release=kube-prometheus-stack"]`: what
        your Prometheus' `serviceMonitorSelector` matches.""",
    )

    backup_schedule: str = setting(
        "backupSchedule",
        "",
        text(_is_schedule, 'a CronJob schedule (5 fields such as "0 3 * * *", or @daily, @hourly…), or "" for none'),
        """A CronJob `<name>-backup` takes one consistent backup of every shard on this schedule (writes paused on
        every master until each shard's snapshot has forked: tens of ms) into the backup volume, with the Redis
        image's own `redis-cli`, as the ACL user `backup` (no key access, no CONFIG). See "Backup and restore" in
        the README.""",
    )
    backup_retention: int = setting(
        "backupRetention",
        7,
        integer(1, 1000),
        "`backupSchedule`: how many backups the CronJob keeps (the newest; older ones are deleted after a backup).",
    )
    backup_size: str = setting(
        "backupSize",
        "1Gi",
        quantity(),
        "Capacity of the backup volume (its PV and claim `<name>-backup`).",
    )
    backup_node: str = setting(
        "backupNode",
        "",
        text(lambda v: v == "" or _is_dns_subdomain(v), 'a node name (DNS-1123 subdomain) or ""'),
        """The node of the backup volume: a `local` PV pinned to it (the CronJob and the restore run there).
        Empty: a hostPath volume without node affinity (single-node clusters).""",
    )
    backup_path: str = setting(
        "backupPath",
        "",
        Rule('an absolute directory path other than / without spaces, or ""', _optional_host_path),
        """The backup volume's directory on its node; empty for `<hostPathBase>/<namespace>/<name>-backup`. The
        PV is `Retain`: `pulumi destroy` leaves the backups. Another stack restores them by naming the same
        directory (and `backupNode`).""",
    )
    restore_from: str = setting(
        "restoreFrom",
        "",
        text(_is_backup_name, 'a backup\'s name (redis-cluster-<YYYYMMDD>T<HHMMSS>Z), "latest", or ""'),
        """When the stack is created: after the cluster is formed, a Job `<name>-restore` loads this backup from
        the backup volume into it (every key to the master that owns its slot now, TTLs kept), and the `up`
        succeeds only once it has. It refuses, writing nothing, a backup that is missing, incomplete or fails its
        checksums, one the image's server cannot load, and a cluster that holds keys. Runs once per stack.""",
    )

    @property
    def backup_volume(self) -> bool:
        """A backup volume is declared: to back up into, or to restore from."""
        return bool(self.backup_schedule or self.restore_from)

    @property
    def backup_dir(self) -> str:
        return self.backup_path or f"{self.host_path_base}/{self.namespace}/{self.name}-backup"

    @property
    def pod_count(self) -> int:
        return self.masters * (1 + self.replicas_per_master)

    def client_node_port(self, ordinal: int) -> int:
        """Per-pod external access: the NodePort of pod ``ordinal``'s client (or TLS) port."""
        return self.external_node_port_base + ordinal

    def bus_node_port(self, ordinal: int) -> int:
        """Per-pod external access: the NodePort of pod ``ordinal``'s cluster bus port."""
        return self.external_bus_node_port_base + ordinal


KEYS: tuple[Key[Any], ...] = tuple(
    Key(f.metadata[_SETTING][0], f.name, f.default, f.metadata[_SETTING][1], f.metadata[_SETTING][2])
    for f in dataclasses.fields(ClusterSettings)
    if _SETTING in f.metadata
)
# Code-side defaults, as Pulumi.yaml states them (lists, not tuples).
DEFAULTS: dict[str, Any] = {key.name: key.config_default for key in KEYS}


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


# ------------------------------------------------------------------ validation


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
                self.fail(key.name, value if shown is _RAW else shown, allowed)
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


def load_settings(cfg: pulumi.Config) -> ClusterSettings:
    """Read the stack's config and validate it; raises before anything is registered.

    Keys set in the stack that this program does not know are reported too: a
    typo such as ``replicaPerMaster`` would otherwise silently deploy the default.
    """
    prefix = cfg.name + ":"
    everything: dict[str, Any] = pulumi.runtime.config.CONFIG.get()
    raw: dict[str, Any] = {k[len(prefix) :]: v for k, v in everything.items() if k.startswith(prefix)}
    for key in KEYS:
        value = cfg.get(key.name)
        if value is not None:
            raw[key.name] = value
    # The secret's value is only validated here; it leaves as a SecretValue and becomes a
    # secret Output in components/cluster.py.
    plaintext = [key for key in SECRET_KEYS if key in raw and not pulumi.runtime.config.is_config_secret(prefix + key)]
    return validate(raw, plaintext_keys=plaintext)


# ------------------------------------------------------------------ derived files

ROOT = Path(__file__).resolve().parents[1]
_BEGIN = "<!-- BEGIN generated by `venv/bin/python -m components.settings` from components/settings.py -->"
_END = "<!-- END generated -->"


def _doc_default(value: Any) -> str:
    if isinstance(value, bool | list) or value == "":
        return json.dumps(value)
    return str(value)


def reference_table() -> str:
    """The config reference of docs/config.md."""
    rows = ["| Key | Type | Default | Allowed | Description |", "| --- | --- | --- | --- | --- |"]
    for key in KEYS:
        allowed = key.rule.allowed.replace("|", "\\|")
        rows.append(f"| `{key.name}` | {key.type} | `{_doc_default(key.config_default)}` | {allowed} | {key.doc} |")
    return "\n".join(rows)


def pulumi_config() -> dict[str, dict[str, Any]]:
    """The ``config`` block of Pulumi.yaml: each key's type, default and description."""
    block: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        spec: dict[str, Any] = {"type": key.type}
        if key.type == "array":
            spec["items"] = {"type": "string"}
        spec["default"] = key.config_default
        spec["description"] = f"{key.doc} Allowed: {key.rule.allowed}."
        block[f"{NAMESPACE}:{key.name}"] = spec
    return block


def with_reference(doc: str) -> str:
    """``doc`` (docs/config.md) with the generated table between its markers replaced."""
    head, begin, rest = doc.partition(_BEGIN)
    _old, end, tail = rest.partition(_END)
    if not begin or not end:
        raise ValueError(f"docs/config.md lacks the markers {_BEGIN!r} ... {_END!r}")
    return f"{head}{_BEGIN}\n{reference_table()}\n{_END}{tail}"


def with_config_block(project: str) -> str:
    """``project`` (Pulumi.yaml, whose last top-level block is ``config:``) with that block regenerated."""
    import yaml

    head, found, _old = project.partition("\nconfig:\n")
    if not found:
        raise ValueError("Pulumi.yaml has no top-level config: block")
    block = yaml.safe_dump({"config": pulumi_config()}, sort_keys=False, allow_unicode=True, width=4096)
    return f"{head}\n{block}"


def main() -> int:
    """Rewrite docs/config.md's reference and Pulumi.yaml's config block from the declarations."""
    for path, render in ((ROOT / "docs" / "config.md", with_reference), (ROOT / "Pulumi.yaml", with_config_block)):
        old = path.read_text()
        new = render(old)
        if new != old:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
