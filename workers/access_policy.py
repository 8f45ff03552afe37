"""From grants to access: what each role may do, and the policy documents that say so.

Roles: `viewer` reads; `editor` and `admin` read and write (managing grants is Tenantry's
business, not the storage's).

S3 principals. A bucket policy names IAM principals, so each subject maps to one ARN in the
configured account (`s3_principal_account`):
- `workspace:<cluster>:<name>` -> `arn:aws:iam::<account>:role/tenantry/workspaces/<cluster>/<name>`
  (the role the workspace's ServiceAccount assumes, e.g. through IRSA);
- `team:<name>` -> `arn:aws:iam::<account>:role/tenantry/teams/<name>`;
- `user:<email>` -> `arn:aws:iam::<account>:user/tenantry/<email>`.
AWS refuses a policy naming a principal that does not exist: those roles and users are made by
whoever runs IAM, not by this worker. A subject whose principal can't be an IAM name at all (an
e-mail address with `%` or `'`, or longer than 64 characters) is never put in a policy."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from domain.names import allows

READ_ACTIONS = ["s3:GetObject"]
WRITE_ACTIONS = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
# Statements this worker owns start with it; any other statement of a bucket is left alone.
# Ours are `tenantry-<repo>-<12 hex digits>` (one principal) and `tenantry-<repo>-list`.
SID_PREFIX = "tenantry-"
_SID_TAIL = re.compile(r"list|[0-9a-f]{12}")
# IAM user and role names: 1-64 of these (the paths above them are ours and always valid).
_IAM_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")


def access_of(role: str) -> tuple[str, ...]:
    """What `role` may do to the repo's data (as `check_access` answers it)."""
    return tuple(action for action in ("read", "write") if allows(role, action))


def local_policy(repo: str, location: str, grants: Mapping[str, str]) -> dict[str, Any]:
    return {
        "repo": repo,
        "location": location,
        "managed_by": "tenantry",
        "grants": [
            {"subject": subject, "role": role, "access": list(access_of(role))}
            for subject, role in sorted(grants.items())
        ],
    }


def principal_arn(subject: str, account: str) -> str:
    kind, _, rest = subject.partition(":")
    if kind == "workspace":
        cluster, _, name = rest.partition(":")
        return f"arn:aws:iam::{account}:role/tenantry/workspaces/{cluster}/{name}"
    if kind == "team":
        return f"arn:aws:iam::{account}:role/tenantry/teams/{rest}"
    if kind == "user":
        return f"arn:aws:iam::{account}:user/tenantry/{rest}"
    raise ValueError(f"no principal for subject {subject!r}")


def invalid_principals(grants: Mapping[str, str], account: str) -> dict[str, str]:
    """The granted subjects whose principal is not a valid IAM ARN, and why: put in a bucket
    policy, each would make the server refuse the whole policy."""
    invalid = {}
    for subject in grants:
        name = principal_arn(subject, account).rsplit("/", 1)[1]
        if not _IAM_NAME.fullmatch(name):
            invalid[subject] = (
                f"{name!r} can't be an IAM name (1-64 letters, digits and _ + = , . @ -)"
            )
    return invalid


def repo_of_statement(statement: Mapping[str, Any]) -> str | None:
    """The repo a statement of ours is about; None for a statement that is not ours."""
    sid = str(statement.get("Sid", ""))
    if not sid.startswith(SID_PREFIX):
        return None
    repo, _, tail = sid.removeprefix(SID_PREFIX).rpartition("-")
    return repo if repo and _SID_TAIL.fullmatch(tail) else None


def named_principals(policy: Mapping[str, Any] | None) -> set[str]:
    """Every AWS principal a policy names (those the bucket has accepted, for a stored one)."""
    named: set[str] = set()
    for statement in (policy or {}).get("Statement", []):
        principal = statement.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else None
        named.update([aws] if isinstance(aws, str) else aws or [])
    return named


def repo_statements(
    bucket: str, prefix: str, repo: str, grants: Mapping[str, str], account: str
) -> list[dict[str, Any]]:
    """One statement per granted subject on the repo's objects, and one that lets them all
    list the repo's prefix (listing is a bucket-level action, so it can't share a statement
    scoped to objects without opening the whole bucket's key list)."""
    objects = f"arn:aws:s3:::{bucket}/{prefix}*"
    statements = []
    for subject, role in sorted(grants.items()):
        digest = hashlib.sha256(subject.encode()).hexdigest()[:12]
        statements.append(
            {
                "Sid": f"{SID_PREFIX}{repo}-{digest}",
                "Effect": "Allow",
                "Principal": {"AWS": principal_arn(subject, account)},
                "Action": WRITE_ACTIONS if "write" in access_of(role) else READ_ACTIONS,
                "Resource": objects,
            }
        )
    if grants:
        statements.append(
            {
                "Sid": f"{SID_PREFIX}{repo}-list",
                "Effect": "Allow",
                "Principal": {"AWS": sorted({principal_arn(s, account) for s in grants})},
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            }
        )
    return statements


def bucket_policy(
    current: Mapping[str, Any] | None, ours: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The bucket's policy with our statements replaced by `ours`; None when it has none."""
    foreign = [
        s
        for s in (current or {}).get("Statement", [])
        if not str(s.get("Sid", "")).startswith(SID_PREFIX)
    ]
    statements = foreign + sorted(ours, key=lambda s: str(s["Sid"]))
    if not statements:
        return None
    return {"Version": (current or {}).get("Version", "2012-10-17"), "Statement": statements}
