"""The one contract between the program's two dynamic resources and their provider: the properties.

The resources (bootstrap/resource.py) write these properties, the engine keeps
them in the stack's state and hands them back to the provider
(bootstrap/provider.py) in another process, possibly years and versions later.
So they are written and read only here, and the keys stay those existing state
holds::

    masters, replicasPerMaster   the declared shape
    phase                        "converge" (after the StatefulSet) or "drain" (before it)
    discovery                    {"kind": "static", "endpoints": [...]}
                                 or {"kind": "kubernetes", "namespace", "statefulSet",
                                     "connection": "port-forward"|"direct", "context"?, "announce"?}
                                 announce (per-pod external access): {"host": "" for the node IP, "basePort"}
    timeoutSeconds
    podTemplate                  digest of the StatefulSet's pod template ("" when there is none): a
                                 change makes the bootstrap roll the pods (bootstrap/roll.py)
    password, operatorPassword   secrets, optional: the default user's and the bootstrap's ACL user's
    acceptLostSlots              optional: "all" or slot ranges whose every copy is gone that may be
                                 reassigned empty (spent once used: see provider.apply)

The provider's outputs echo these inputs (``read`` gets only outputs), so
:meth:`Props.from_props` also reads an output dict and ignores the other keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args

from bootstrap.errors import PropsError
from bootstrap.model import Shape, parse_slot_selection

Phase = Literal["converge", "drain"]
Connection = Literal["port-forward", "direct"]
PHASES: tuple[Phase, ...] = get_args(Phase)
CONNECTIONS: tuple[Connection, ...] = get_args(Connection)

# How a password is held: a pulumi.Input[str] while the program declares the resource, a str in the provider.
P = TypeVar("P")

INPUTS = ("masters", "replicasPerMaster", "phase", "discovery", "timeoutSeconds", "podTemplate", "acceptLostSlots")
SECRETS = ("password", "operatorPassword")  # additional secret outputs of the resources
DEFAULT_TIMEOUT = 600


def _slot_selection(value: str) -> str:
    """An acceptLostSlots value the provider can use, checked when read (the program validated it too)."""
    if value:
        try:
            parse_slot_selection(value)
        except ValueError as exc:
            raise PropsError(f"acceptLostSlots is {exc}") from exc
    return value


def _choice(value: Any, options: tuple[str, ...], what: str) -> Any:
    if value not in options:
        raise PropsError(f"{what} is {value!r}, expected one of {', '.join(options)}")
    return value


@dataclass(frozen=True)
class Announce:
    """Per-pod external access: pod ``i`` announces ``<host, or its Kubernetes node's IP>:<base_port + i>``.

    The bootstrap must know that address, or it would keep re-MEETing pods it sees listed under it.
    """

    host: str
    base_port: int

    def address(self, ordinal: int, node_ip: str) -> str:
        return f"{self.host or node_ip}:{self.base_port + ordinal}"

    def to_props(self) -> dict[str, Any]:
        return {"host": self.host, "basePort": self.base_port}

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> Announce:
        return cls(host=str(props.get("host") or ""), base_port=int(props["basePort"]))


@dataclass(frozen=True)
class StaticDiscovery:
    """Fixed ``host:port`` endpoints (tests, Redis outside Kubernetes): no ordinals, so nothing to drain."""

    endpoints: tuple[str, ...]
    announce: ClassVar[None] = None  # servers this program did not configure announce nothing of ours

    def to_props(self) -> dict[str, Any]:
        return {"kind": "static", "endpoints": list(self.endpoints)}


@dataclass(frozen=True)
class PodDiscovery:
    """The StatefulSet's pods, reached through the Kubernetes API (``port-forward``) or at their IPs."""

    namespace: str
    stateful_set: str
    connection: Connection = "port-forward"
    context: str | None = None  # kubeconfig context; None: the current one
    announce: Announce | None = None

    def to_props(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "kind": "kubernetes",
            "namespace": self.namespace,
            "statefulSet": self.stateful_set,
            "connection": self.connection,
        }
        if self.context:
            props["context"] = self.context
        if self.announce:
            props["announce"] = self.announce.to_props()
        return props


Discovery = StaticDiscovery | PodDiscovery


def discovery_from_props(props: Mapping[str, Any]) -> Discovery:
    kind = props.get("kind")
    if kind == "static":
        return StaticDiscovery(tuple(str(e) for e in props["endpoints"]))
    if kind == "kubernetes":
        announce = props.get("announce")
        return PodDiscovery(
            namespace=str(props["namespace"]),
            stateful_set=str(props["statefulSet"]),
            connection=_choice(props.get("connection") or "port-forward", CONNECTIONS, "discovery.connection"),
            context=str(props["context"]) if props.get("context") else None,
            announce=Announce.from_props(announce) if announce else None,
        )
    raise PropsError(f"discovery.kind is {kind!r}, expected static or kubernetes")


@dataclass(frozen=True)
class Props(Generic[P]):
    """What one ClusterBootstrap or ClusterDrain resource declares (field order: the program's BootstrapArgs)."""

    masters: int
    replicas_per_master: int
    discovery: Discovery
    timeout_seconds: int = DEFAULT_TIMEOUT
    password: P | None = None  # the default user's: clients and replication; None: auth off
    operator_password: P | None = None  # the ACL user the bootstrap logs in as; None: log in as default
    phase: Phase = "converge"
    pod_template: str = ""  # what the pods should run; its change alone is what a preview shows for a roll
    image: str = ""  # the pods' image: its engine is checked against the live one before a roll (engines.py)
    accept_lost_slots: str = ""  # a person's consent to reassign these lost slots empty (model.parse_slot_selection)

    @property
    def shape(self) -> Shape:
        return Shape(self.masters, self.replicas_per_master)

    @property
    def resource_id(self) -> str:
        """Stable per target and phase (ids are kept in the state)."""
        d = self.discovery
        if isinstance(d, PodDiscovery):
            return f"{d.namespace}/{d.stateful_set}/{self.phase}"
        digest = hashlib.sha256(",".join(d.endpoints).encode()).hexdigest()[:12]
        return f"static-{digest}/{self.phase}"

    def to_props(self) -> dict[str, Any]:
        return {
            "masters": self.masters,
            "replicasPerMaster": self.replicas_per_master,
            "phase": self.phase,
            "discovery": self.discovery.to_props(),
            "timeoutSeconds": self.timeout_seconds,
            "password": self.password,
            "operatorPassword": self.operator_password,
            # Only when there is one: state written before it existed then reads the same.
            **({"podTemplate": self.pod_template} if self.pod_template else {}),
            **({"image": self.image} if self.image else {}),
            **({"acceptLostSlots": self.accept_lost_slots} if self.accept_lost_slots else {}),
        }

    @staticmethod
    def from_props(props: Mapping[str, Any]) -> Props[str]:
        """Inputs or outputs as the engine hands them over (numbers may arrive as floats; a missing or
        empty password is no password, as it always was)."""
        timeout = props.get("timeoutSeconds")
        try:
            return Props(
                masters=int(props["masters"]),
                replicas_per_master=int(props["replicasPerMaster"]),
                discovery=discovery_from_props(props["discovery"]),
                timeout_seconds=DEFAULT_TIMEOUT if timeout is None else int(timeout),
                password=str(props["password"]) if props.get("password") else None,
                operator_password=str(props["operatorPassword"]) if props.get("operatorPassword") else None,
                phase=_choice(props.get("phase") or "converge", PHASES, "phase"),
                pod_template=str(props.get("podTemplate") or ""),
                image=str(props.get("image") or ""),
                accept_lost_slots=_slot_selection(str(props.get("acceptLostSlots") or "")),
            )
        except PropsError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise PropsError(f"unreadable bootstrap properties ({type(exc).__name__}: {exc})") from exc
