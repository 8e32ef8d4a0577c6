"""One key's value on its own: how a raw config value becomes a setting or an ``Invalid`` naming what is allowed.

Pure and independent of the other keys (checks across keys live in ``validate``), so each rule is one
line in a declaration and one column of the generated reference.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from bootstrap.model import parse_slot_selection

# Printable ASCII without space, quotes and backslash: the password is written into a
# redis.conf fragment (`user default on >PASSWORD`, `masterauth PASSWORD`) where those
# characters would start quoting or escaping.
PASSWORD = re.compile(r"^[!#-&(-\[\]-~]+$")

# A backup's directory name, as both the CronJob and `python -m bootstrap backup` write it.
BACKUP_NAME = re.compile(r"^redis-cluster-[0-9]{8}T[0-9]{6}Z$")

# The five fields of a Kubernetes CronJob schedule (minute hour day month weekday), or a macro.
CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,-]+$")
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY = re.compile(
    r"^(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$"
)
SUFFIX_FACTORS: dict[str, Decimal] = {
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
HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):(?P<port>[0-9]+)$")
ACL_USER = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RESERVED_USERS = ("default", "operator")

# Rule tokens that set passwords or open a user to anyone: passwords come from aclPasswords only.
PASSWORD_RULES = re.compile(r"^(>|<|#|!|nopass$|resetpass$|reset$)")


T = TypeVar("T")
C = TypeVar("C", bound=str)


RAW: Any = object()  # "show the value as given"


class Invalid(ValueError):
    """A refused value. Each problem is (what to show instead of the value, or RAW; what is wrong)."""

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
                raise Invalid((RAW, f"must be {self.allowed}")) from None
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


def string_list(value: Any) -> list[str]:
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
        raise Invalid((RAW, "must be a list of strings"))
    return list(items)


def strings(items: str, check: Callable[[str], bool], unique: bool = False) -> Rule[tuple[str, ...]]:
    """A list (YAML, JSON text or comma-separated) of ``items``, each passing ``check``."""

    def convert(value: Any) -> tuple[str, ...]:
        entries = string_list(value)
        bad = [e for e in entries if not check(e)]
        if bad:
            raise Invalid((RAW, f"must be a list of {items}; not {bad}"))
        if unique and len(set(entries)) != len(entries):
            raise Invalid((RAW, f"must be a list of {items}; they must be unique"))
        return tuple(entries)

    return Rule(f"a list of {'unique ' if unique else ''}{items}", convert)


def acl_users(value: Any) -> tuple[tuple[str, str], ...]:
    """``"<name> <rules...>"`` per user, e.g. ``"app ~app:* +@read +@write"``; one problem per bad entry."""
    users: list[tuple[str, str]] = []
    problems: list[tuple[Any, str]] = []
    for entry in string_list(value):
        name, _, rules = entry.strip().partition(" ")
        rules = " ".join(rules.split())
        bad_tokens = [tok for tok in rules.split() if PASSWORD_RULES.match(tok)]
        if not ACL_USER.match(name) or name in RESERVED_USERS:
            problems.append(
                (
                    entry,
                    'entries are "<name> <ACL rules>"; the name is lowercase letters, digits, "_" or "-" '
                    f"(at most 63) and not one of {', '.join(RESERVED_USERS)}",
                )
            )
        elif not rules or PASSWORD.match(rules.replace(" ", "")) is None:
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


def is_dns_label(v: str) -> bool:
    return len(v) <= 63 and DNS_LABEL.match(v) is not None


def is_dns_subdomain(v: str) -> bool:
    return len(v) <= 253 and DNS_SUBDOMAIN.match(v) is not None


def is_ip(v: str) -> bool:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def is_cidr(v: str) -> bool:
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        return False
    return True


def is_slot_selection(v: str) -> bool:
    try:
        return v == "" or bool(parse_slot_selection(v))
    except ValueError:
        return False


def is_schedule(v: str) -> bool:
    fields = v.split()
    return v == "" or v in CRON_MACROS or (len(fields) == 5 and all(CRON_FIELD.match(f) for f in fields))


def is_backup_name(v: str) -> bool:
    return v in ("", "latest") or BACKUP_NAME.match(v) is not None


def optional_host_path(value: Any) -> str:
    return "" if value == "" else host_path(value)


def is_host_port(v: str) -> bool:
    match = HOST_PORT.match(v)
    return match is not None and 1 <= int(match["port"]) <= 65535


def no_spaces(v: str) -> bool:
    return not any(ch.isspace() for ch in v)


def host_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.rstrip("/") == "" or not no_spaces(value):
        raise Invalid()
    return value.rstrip("/")


LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _is_label_key(v: str) -> bool:
    prefix, _, name = v.rpartition("/")
    return (not prefix or is_dns_subdomain(prefix)) and len(name) <= 63 and LABEL_NAME.match(name) is not None


def labels(value: Any) -> tuple[tuple[str, str], ...]:
    """``"key=value"`` per label; the value may be empty."""
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    for entry in string_list(value):
        key, sep, val = entry.partition("=")
        if not sep or not _is_label_key(key) or len(val) > 63 or (val and LABEL_NAME.match(val) is None):
            bad.append(entry)
        else:
            pairs.append((key, val))
    if bad:
        raise Invalid(
            (RAW, f'must be a list of "<label key>=<label value>" entries (Kubernetes label syntax); not {bad}')
        )
    if len({k for k, _v in pairs}) != len(pairs):
        raise Invalid((RAW, "must not name a label key twice"))
    return tuple(pairs)


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes resource quantity as a number, or None when it is not one."""
    match = QUANTITY.match(text)
    if match is None:
        return None
    try:
        number = Decimal(match["num"])
    except InvalidOperation:
        return None
    suffix = match["suffix"] or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * SUFFIX_FACTORS[suffix]
