"""The shapes of names, subjects, roles and labels, and the identities derived from names."""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID, uuid5

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, StringConstraints

# Fixed forever: every stored aggregate id is derived from it.
TENANTRY_NAMESPACE = UUID("6f1c8a52-3b0e-5d4a-9e57-7c2b1f0a9d13")

# Matched whole with `fullmatch` (Python's `re`: `$` also matches before a final newline, which
# let `user:eve@example.com\n` pass as a second, look-alike subject) or as pydantic patterns
# (its Rust engine's `$` is the end of the text only).
DNS_LABEL_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CLUSTER_NAME_RE = r"^[a-z][a-z0-9-]*[a-z0-9]$"
ML_REPO_NAME_RE = r"^[a-zA-Z][a-zA-Z0-9-]{1,98}[a-zA-Z0-9]$"
EMAIL_RE = r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$"
REGION_RE = r"^[a-z0-9][a-z0-9-]*$"
COLOR_RE = r"^#[0-9a-fA-F]{6}$"

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_RE, min_length=1, max_length=63)]
ClusterName = Annotated[
    str, StringConstraints(pattern=CLUSTER_NAME_RE, min_length=3, max_length=35)
]
WorkspaceName = Annotated[
    str, StringConstraints(pattern=CLUSTER_NAME_RE, min_length=3, max_length=32)
]
MlRepoName = Annotated[str, StringConstraints(pattern=ML_REPO_NAME_RE, max_length=100)]
# Who manages a grant (`apply`): a grant made without one is nobody's to take away.
ManagedBy = DnsLabel
Email = Annotated[str, StringConstraints(pattern=EMAIL_RE, max_length=254)]
Region = Annotated[str, StringConstraints(pattern=REGION_RE, min_length=1, max_length=64)]
Color = Annotated[str, StringConstraints(pattern=COLOR_RE)]
Reason = Annotated[str, StringConstraints(max_length=1000)]
Description = Annotated[str, StringConstraints(max_length=4000)]
Detail = Annotated[str, StringConstraints(max_length=4000)]

Role = Literal["viewer", "editor", "admin"]
OptimizeFor = Literal["cost", "availability"]
Provider = Literal["aws-eks", "gcp-gke-standard", "azure-aks", "generic"]
StorageProvider = Literal["s3", "gcs", "azure-blob", "local"]

ROLE_RANK: dict[str, int] = {"viewer": 1, "editor": 2, "admin": 3}
# What a role lets a subject do: a viewer reads, an editor writes too, an admin also manages
# the repo's grants (`check_access`, and the storage policies the worker writes).
Action = Literal["read", "write", "admin"]
ACTION_RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3}


def allows(role: str | None, action: str) -> bool:
    """Whether `role` (None: no access) lets its holder do `action`."""
    return role is not None and ROLE_RANK[role] >= ACTION_RANK[action]


_WS = CLUSTER_NAME_RE[1:-1]
_WORKSPACE_FQN = re.compile(rf"^({_WS}):({_WS})$")
_SUBJECT = re.compile(
    rf"^(?:user:{EMAIL_RE[1:-1]}|team:{DNS_LABEL_RE[1:-1]}|workspace:{_WS}:{_WS})$"
)
_ACTOR = re.compile(rf"^(?:user:{EMAIL_RE[1:-1]}|service:{DNS_LABEL_RE[1:-1]})$")


def _workspace_fqn(value: str) -> str:
    match = _WORKSPACE_FQN.fullmatch(value)
    if not match or not 3 <= len(match[1]) <= 35 or not 3 <= len(match[2]) <= 32:
        raise ValueError("a workspace FQN is '<cluster>:<workspace>'")
    return value


def _subject(value: str) -> str:
    if not _SUBJECT.fullmatch(value):
        raise ValueError(
            "a subject is 'user:<email>', 'team:<name>' or 'workspace:<cluster>:<name>'"
        )
    if value.startswith("workspace:"):
        _workspace_fqn(value.removeprefix("workspace:"))
    return value


def _actor(value: str) -> str:
    if not _ACTOR.fullmatch(value):
        raise ValueError("an actor is 'user:<email>' or 'service:<name>'")
    return value


# A length of time on the wire: a count and a unit, `90m`, `12h`, `30d` (minutes, hours,
# days), at least one minute and at most 3650 days. `parse_duration` is its one reading.
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhd])$")
_DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: str) -> timedelta:
    """`90m`, `12h`, `30d` as a timedelta; ValueError saying the shape otherwise."""
    match = _DURATION.fullmatch(value)
    if not match:
        raise ValueError("a duration is a whole number and a unit: '90m', '12h' or '30d'")
    length = int(match[1]) * _DURATION_UNITS[match[2]]
    if length > MAX_DURATION:
        raise ValueError("a duration is at most 3650 days")
    return length


def _duration(value: str) -> str:
    parse_duration(value)
    return value


# A moment on the wire: RFC 3339 with an offset (`2026-12-31T18:00:00Z`, `…+02:00`), read the
# same from JSON and from a manifest's YAML (strict models take no other text for a time).
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")


def _moment(value: object) -> object:
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise ValueError("a time is RFC 3339 with an offset, e.g. 2026-12-31T18:00:00Z")
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_moment)]

WorkspaceFqn = Annotated[str, StringConstraints(max_length=80), AfterValidator(_workspace_fqn)]
Subject = Annotated[str, StringConstraints(max_length=300), AfterValidator(_subject)]
Actor = Annotated[str, StringConstraints(max_length=300), AfterValidator(_actor)]
Duration = Annotated[str, StringConstraints(max_length=16), AfterValidator(_duration)]


def has_nul(value: object) -> bool:
    """Whether `value`, or a string anywhere inside it (lists, dict keys and values, models),
    holds U+0000. PostgreSQL text can't store it: accepted, it would stop the read models."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(has_nul(v) for v in value)
    if isinstance(value, BaseModel):
        return has_nul(value.__dict__)
    return False


def is_valid_actor(value: str) -> bool:
    return len(value) <= 300 and bool(_ACTOR.fullmatch(value))


def split_workspace_fqn(fqn: str) -> tuple[str, str]:
    cluster, _, name = fqn.partition(":")
    return cluster, name


@functools.lru_cache(maxsize=4096)
def identity(kind: str, natural_key: str) -> UUID:
    """The aggregate id of `kind` named `natural_key`: the same name always gives the same id.

    Remembered for the names used last (a command looks its subject up, then creates it with
    the same id; a UUID is immutable): `uuid5` is a few microseconds each time."""
    return uuid5(TENANTRY_NAMESPACE, f"{kind}:{natural_key}")


# Kubernetes label and annotation rules (metadata.labels / metadata.annotations).
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise ValueError(f"key {key!r}: the prefix must be a DNS subdomain of at most 253 chars")
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )


def _labels(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 64:
        raise ValueError("at most 64 labels")
    for key, label in value.items():
        _check_key(key)
        if label and (len(label) > 63 or not _LABEL_NAME.fullmatch(label)):
            raise ValueError(f"label {key!r}: the value must be empty or a 1-63 char label value")
    return value


def _annotations(value: dict[str, str]) -> dict[str, str]:
    total = 0
    for key, annotation in value.items():
        _check_key(key)
        total += len(key.encode()) + len(annotation.encode())
    if total > 256 * 1024:
        raise ValueError("annotations may hold at most 256 KiB in all")
    return value


Labels = Annotated[dict[str, str], AfterValidator(_labels)]
Annotations = Annotated[dict[str, str], AfterValidator(_annotations)]

# Storage roots and the locations made from them. The one rule for both: a scheme of the
# provider, a container (bucket, account) or none for `file://`, then path segments of a
# plain character set: no `.` or `..` (a root that points elsewhere than it reads), no empty
# segment (`//`), no `%` escapes (`%2e%2e` is `..` to whoever decodes it), no `?` or `#`
# (a query or fragment swallows the `/<repo>/` appended to make a location, putting every
# repo of an integration in one folder), no backslash, space or control character.
_ROOT_SCHEMES: dict[str, tuple[str, str | None]] = {
    "s3": ("s3", r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"),
    "gcs": ("gs", r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"),
    "azure-blob": ("az", r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"),
    "local": ("file", None),
}
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~+=,@-]+")


def storage_path(provider: str, url: str) -> tuple[str, tuple[str, ...]]:
    """(container, path segments) of a canonical storage root or location of `provider`
    (one trailing `/` allowed); ValueError saying what is wrong otherwise. A `file://` one has
    no container and at least one segment: `file:///` would hand out the whole filesystem."""
    scheme, container_re = _ROOT_SCHEMES[provider]
    head = f"{scheme}://" if container_re else f"{scheme}:///"
    if not url.startswith(head):
        raise ValueError(f"a {provider} storage_root looks like {head}…")
    rest = url.removeprefix(head)
    container = ""
    if container_re is not None:
        container, _, rest = rest.partition("/")
        if not re.fullmatch(container_re, container) or ".." in container:
            raise ValueError(f"{container!r} is not a valid {provider} bucket or account name")
    segments = rest.removesuffix("/").split("/") if rest else []
    for segment in segments:
        if segment in ("", ".", "..") or not _PATH_SEGMENT.fullmatch(segment):
            raise ValueError(
                "a storage path is canonical: no '.', '..' or empty segments, no query ('?'), "
                "fragment ('#') or %-escapes; its segments hold letters, digits and . _ ~ + = , @ -"
            )
    if container_re is None and not segments:
        raise ValueError("a local storage_root names a folder, not the filesystem's root")
    return container, tuple(segments)


def check_storage_root(provider: str, storage_root: str) -> None:
    """A storage root is canonical and its scheme matches its provider (see `storage_path`)."""
    storage_path(provider, storage_root)
