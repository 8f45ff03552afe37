"""The queries of DESIGN §5 over the views: strict parameter models and what each one answers.

Every answer is read in one snapshot together with the position the views stood at, so the
`position` of a reply is exactly the one its data reflects."""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, or_, select

from domain.authorization import Authorization
from domain.errors import NotFound
from domain.names import allows
from projections import access_history, access_reviews
from projections import schema as t
from projections.audit import body_of, utc_text
from projections.current_access import now_of, subject_access
from projections.query_params import (
    AccessChanges,
    AccessReport,
    AuditLog,
    CheckAccess,
    EnvironmentTags,
    GetAccessRequest,
    GetAccessReview,
    GetMlRepo,
    GetStorageIntegration,
    GetTeam,
    GetWorkspace,
    ListAccessRequests,
    ListAccessReviewItems,
    ListAccessReviews,
    ListClusters,
    ListEnvironments,
    ListMlRepos,
    ListStorageIntegrations,
    ListTeams,
    ListWorkspaces,
    Paged,
    QueryParams,
    RepoAccess,
    SubjectAccess,
)
from projections.results import GONE
from projections.store import ViewStore, read_tracking

# The parameter models live in projections.query_params (light: the client imports them).


# --- directory ----------------------------------------------------------------------------


def list_environments(conn: Connection, _: ListEnvironments) -> list[dict[str, Any]]:
    approvals = t.environment_approvals.c
    rows = conn.execute(
        select(t.environments, approvals.access_approvals)
        .outerjoin(t.environment_approvals, approvals.name == t.environments.c.name)
        .order_by(t.environments.c.name)
    )
    return [
        {
            "name": r.name,
            "is_production": r.is_production,
            "optimize_for": r.optimize_for,
            "color": r.color,
            "access_approvals": r.access_approvals or 0,
        }
        for r in rows
    ]


def list_clusters(conn: Connection, params: ListClusters) -> list[dict[str, Any]]:
    offered: dict[str, list[str]] = defaultdict(list)
    for cluster, environment in conn.execute(
        select(t.cluster_environments.c.cluster, t.cluster_environments.c.environment).order_by(
            t.cluster_environments.c.cluster, t.cluster_environments.c.ordinal
        )
    ):
        offered[cluster].append(environment)
    rows = conn.execute(select(t.clusters).order_by(t.clusters.c.name))
    return [
        {
            "name": r.name,
            "region": r.region,
            "provider": r.provider,
            "environments": offered[r.name],
            "labels": r.labels,
        }
        for r in rows
        if params.environment is None or params.environment in offered[r.name]
    ]


def get_workspace(conn: Connection, params: GetWorkspace) -> dict[str, Any]:
    found = _workspaces(conn, t.workspaces.c.fqn == params.fqn)
    if not found:
        raise NotFound(
            f"workspace {params.fqn!r} does not exist", kind="workspace", name=params.fqn
        )
    return found[0]


def list_workspaces(conn: Connection, params: ListWorkspaces) -> list[dict[str, Any]]:
    """Workspaces that are not deleted (a deleted one is still there for `get_workspace`)."""
    where = [t.workspaces.c.status != "deleted"]
    if params.cluster is not None:
        where.append(t.workspaces.c.cluster == params.cluster)
    if params.environment is not None:
        where.append(t.workspaces.c.environment == params.environment)
    if params.production is not None:
        where.append(t.environments.c.is_production.is_(params.production))
    return _workspaces(conn, *where)


def _workspaces(conn: Connection, *where: ColumnElement[bool]) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.workspaces, t.environments.c.is_production)
        .outerjoin(t.environments, t.environments.c.name == t.workspaces.c.environment)
        .where(*where)
        .order_by(t.workspaces.c.fqn)
    ).all()
    apps = _applications_of(conn, [r.fqn for r in rows])
    failures = _failures_of(conn, "workspace", [r.fqn for r in rows])
    return [
        {
            "fqn": r.fqn,
            "cluster": r.cluster,
            "name": r.name,
            "environment": r.environment,
            "is_production": bool(r.is_production),
            "labels": r.labels,
            "annotations": r.annotations,
            "status": r.status,
            "failure": failures.get(r.fqn),
            "applications": apps[r.fqn],
        }
        for r in rows
    ]


def _failures_of(conn: Connection, kind: str, names: list[str]) -> dict[str, str]:
    """Why each of `names` failed, for those that are failed."""
    if not names:
        return {}
    return {
        name: detail
        for name, detail in conn.execute(
            select(t.failures.c.name, t.failures.c.detail).where(
                t.failures.c.kind == kind, t.failures.c.name.in_(names)
            )
        )
    }


def _applications_of(conn: Connection, workspaces: list[str]) -> dict[str, list[str]]:
    apps: dict[str, list[str]] = defaultdict(list)
    if workspaces:
        for workspace, name in conn.execute(
            select(t.applications.c.workspace, t.applications.c.name)
            .where(t.applications.c.workspace.in_(workspaces))
            .order_by(t.applications.c.name)
        ):
            apps[workspace].append(name)
    return apps


def get_ml_repo(conn: Connection, params: GetMlRepo) -> dict[str, Any]:
    found = _ml_repos(conn, [params.name])
    if not found:
        raise _repo_not_found(params.name)
    return found[0]


def list_ml_repos(conn: Connection, params: ListMlRepos) -> list[dict[str, Any]]:
    """Repos that are not deleted; with `subject`, those it may at least read."""
    if params.subject is None:
        names = conn.execute(
            select(t.ml_repos.c.name).where(t.ml_repos.c.status != "deleted")
        ).scalars()
        return _ml_repos(conn, list(names))
    return _ml_repos(conn, [a.repo for a in subject_access(conn, params.subject)])


def _ml_repos(conn: Connection, names: list[str]) -> list[dict[str, Any]]:
    if not names:
        return []
    grants = _grants_on(conn, names)
    rows = conn.execute(
        select(t.ml_repos).where(t.ml_repos.c.name.in_(names)).order_by(t.ml_repos.c.name)
    )
    failures = _failures_of(conn, "ml_repo", names)
    policies = {
        p.repo: {"approvals": p.approvals, "max_duration": p.max_duration}
        for p in conn.execute(
            select(t.repo_access_policies).where(t.repo_access_policies.c.repo.in_(names))
        )
    }
    return [
        {
            "name": r.name,
            "storage_integration": r.storage_integration,
            "location": r.location,
            "description": r.description,
            "status": r.status,
            "failure": failures.get(r.name),
            "grants": grants[r.name],
            "access_policy": policies.get(r.name, {"approvals": 0, "max_duration": None}),
        }
        for r in rows
    ]


def _grants_on(conn: Connection, repos: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    grants: dict[str, list[dict[str, Any]]] = defaultdict(list)
    g, m, d = t.grants.c, t.grant_managers.c, t.grant_deadlines.c
    now = utc_text(now_of(conn))
    for r in conn.execute(
        select(t.grants, m.managed_by, d.expires_at)
        .outerjoin(t.grant_managers, (m.repo == g.repo) & (m.subject == g.subject))
        .outerjoin(t.grant_deadlines, (d.repo == g.repo) & (d.subject == g.subject))
        # In force: a grant past its deadline is not one, its expiry recorded or not.
        .where(g.repo.in_(list(repos)), or_(d.expires_at.is_(None), d.expires_at > now))
        .order_by(g.repo, g.subject)
    ):
        grants[r.repo].append(
            {
                "subject": r.subject,
                "role": r.role,
                "granted_by": r.granted_by,
                "granted_at": r.granted_at,
                "reason": r.reason,
                "managed_by": r.managed_by,
                "expires_at": r.expires_at,
            }
        )
    return grants


def _require_repo(conn: Connection, name: str) -> None:
    if conn.execute(select(t.ml_repos.c.name).where(t.ml_repos.c.name == name)).first() is None:
        raise _repo_not_found(name)


def _repo_not_found(name: str) -> NotFound:
    return NotFound(f"ML repo {name!r} does not exist", kind="ml_repo", name=name)


# --- access -------------------------------------------------------------------------------


def repo_access(conn: Connection, params: RepoAccess) -> list[dict[str, Any]]:
    """The direct grants in force on a repo."""
    _require_repo(conn, params.repo)
    return _grants_on(conn, [params.repo])[params.repo]


def subject_access_query(conn: Connection, params: SubjectAccess) -> list[dict[str, Any]]:
    return [
        {"repo": a.repo, "role": a.role, "via": a.via} for a in subject_access(conn, params.subject)
    ]


def check_access(conn: Connection, params: CheckAccess) -> dict[str, Any]:
    _require_repo(conn, params.repo)
    found = subject_access(conn, params.subject, repo=params.repo)
    role, via = (found[0].role, found[0].via) if found else (None, None)
    return {"allowed": allows(role, params.action), "role": role, "via": via}


# --- environment tagging ------------------------------------------------------------------


def environment_tags(conn: Connection, params: EnvironmentTags) -> list[dict[str, Any]]:
    """Per environment: the clusters offering it, the live workspaces tagged with it and their
    applications (FQNs, sorted)."""
    environments = select(t.environments).order_by(t.environments.c.name)
    if params.environment is not None:
        environments = environments.where(t.environments.c.name == params.environment)
    clusters: dict[str, list[str]] = defaultdict(list)
    for cluster, environment in conn.execute(
        select(t.cluster_environments.c.cluster, t.cluster_environments.c.environment).order_by(
            t.cluster_environments.c.cluster
        )
    ):
        clusters[environment].append(cluster)
    workspaces: dict[str, list[str]] = defaultdict(list)
    tagged: dict[str, str] = {}
    for fqn, environment in conn.execute(
        select(t.workspaces.c.fqn, t.workspaces.c.environment)
        .where(t.workspaces.c.status.not_in(GONE))
        .order_by(t.workspaces.c.fqn)
    ):
        workspaces[environment].append(fqn)
        tagged[fqn] = environment
    applications: dict[str, list[str]] = defaultdict(list)
    for fqn, workspace in conn.execute(
        select(t.applications.c.fqn, t.applications.c.workspace).order_by(t.applications.c.fqn)
    ):
        if workspace in tagged:
            applications[tagged[workspace]].append(fqn)
    return [
        {
            "environment": e.name,
            "is_production": e.is_production,
            "optimize_for": e.optimize_for,
            "clusters": clusters[e.name],
            "workspaces": workspaces[e.name],
            "applications": applications[e.name],
        }
        for e in conn.execute(environments)
    ]


# --- audit --------------------------------------------------------------------------------


def audit_log(conn: Connection, params: AuditLog) -> dict[str, Any]:
    """Published event bodies in position order; `next` is the `after` of the next page, or
    null when this page is the last."""
    audit = t.audit_events
    statement = select(
        audit.c.position, audit.c.body, audit.c.prev_digest, audit.c.digest
    ).order_by(audit.c.position)
    if params.after is not None:
        statement = statement.where(audit.c.position > params.after)
    if params.since is not None:
        statement = statement.where(audit.c.occurred_at >= utc_text(params.since))
    if params.until is not None:
        statement = statement.where(audit.c.occurred_at < utc_text(params.until))
    for column, value in (
        (audit.c.actor, params.actor),
        (audit.c.fqn, params.fqn),
        (audit.c.type, params.type),
    ):
        if value is not None:
            statement = statement.where(column == value)
    rows = conn.execute(statement.limit(params.limit + 1)).all()
    page = rows[: params.limit]
    more = len(rows) > params.limit
    return {
        "events": [json.loads(body_of(r.body, r.prev_digest, r.digest)) for r in page],
        "next": page[-1].position if more else None,
    }


# --- teams and storage integrations (for `tenantry get` and manifests) --------------------


def list_teams(conn: Connection, _: ListTeams) -> list[dict[str, Any]]:
    """Every team with its members (e-mail addresses, sorted)."""
    return _teams(conn, None)


def get_team(conn: Connection, params: GetTeam) -> dict[str, Any]:
    found = _teams(conn, params.name)
    if not found:
        raise NotFound(f"team {params.name!r} does not exist", kind="team", name=params.name)
    return found[0]


def _teams(conn: Connection, name: str | None) -> list[dict[str, Any]]:
    teams = select(t.teams.c.name).order_by(t.teams.c.name)
    members = select(t.team_members.c.team, t.team_members.c.user).order_by(
        t.team_members.c.team, t.team_members.c.user
    )
    if name is not None:
        teams = teams.where(t.teams.c.name == name)
        members = members.where(t.team_members.c.team == name)
    of: dict[str, list[str]] = defaultdict(list)
    for team, user in conn.execute(members):
        of[team].append(user)
    return [{"name": team, "members": of[team]} for team in conn.execute(teams).scalars()]


def list_storage_integrations(conn: Connection, _: ListStorageIntegrations) -> list[dict[str, Any]]:
    return _storage_integrations(conn, None)


def get_storage_integration(conn: Connection, params: GetStorageIntegration) -> dict[str, Any]:
    found = _storage_integrations(conn, params.name)
    if not found:
        raise NotFound(
            f"storage integration {params.name!r} does not exist",
            kind="storage_integration",
            name=params.name,
        )
    return found[0]


def _storage_integrations(conn: Connection, name: str | None) -> list[dict[str, Any]]:
    integrations = t.storage_integrations
    statement = select(integrations).order_by(integrations.c.name)
    if name is not None:
        statement = statement.where(integrations.c.name == name)
    return [
        {
            "name": r.name,
            "provider": r.provider,
            "storage_root": r.storage_root,
            "region": r.region,
        }
        for r in conn.execute(statement)
    ]


# --- access over time (the temporal access view) ------------------------------------------


def access_report(conn: Connection, params: AccessReport) -> list[dict[str, Any]]:
    """Every way a subject held a role on a repo at `as_of`: direct grants, team members
    (`via` `team:<name>`) and applications (`via` `workspace:<cluster>:<name>`). `granted_*`
    and `reason` are those of the grant on the repo (to the team or workspace when not direct).
    A subject's effective role is the highest of its rows."""
    if params.repo is not None:
        _require_repo(conn, params.repo)
    return access_history.in_force(conn, utc_text(params.as_of), params.repo, params.subject)


def access_changes(conn: Connection, params: AccessChanges) -> list[dict[str, Any]]:
    """Each grant, role change and end of access (direct, through a team, through a
    workspace) after `from` up to `to`, in log order: who did it, why, and the event's
    position (to find it in the audit log or an export)."""
    if params.repo is not None:
        _require_repo(conn, params.repo)
    after, until = utc_text(params.from_), utc_text(params.to)
    return access_history.changes(conn, after, until, params.repo, params.subject)


# --- access requests (issue 15) ------------------------------------------------------------


def list_access_requests(
    conn: Connection, params: ListAccessRequests, authorization: Authorization
) -> list[dict[str, Any]]:
    requests = t.access_requests
    statement = select(requests).order_by(requests.c.opened_at, requests.c.request)
    if params.approver is not None:
        statement = statement.where(requests.c.status == "pending")
    for column, value in (
        (requests.c.status, params.status),
        (requests.c.repo, params.repo),
        (requests.c.requester, params.requester),
    ):
        if value is not None:
            statement = statement.where(column == value)
    rows = [_access_request(r) for r in conn.execute(statement)]
    if params.approver is not None:
        rows = _approvable_by(
            conn, params.approver, rows, authorization.is_tenant_admin(params.approver)
        )
    return rows


def get_access_request(conn: Connection, params: GetAccessRequest) -> dict[str, Any]:
    row = conn.execute(
        select(t.access_requests).where(t.access_requests.c.request == params.request)
    ).first()
    if row is None:
        raise NotFound(
            f"access request {params.request} does not exist",
            kind="access_request",
            name=params.request,
        )
    return _access_request(row)


def _access_request(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def _approvable_by(
    conn: Connection, approver: str, rows: list[dict[str, Any]], tenant_admin: bool
) -> list[Row]:
    """The rows `approver` may approve: as a tenant admin (`tenant_admin`, decided by
    `domain.authorization.Authorization`) any request, else those of the repos they administer
    (`domain.policies.RequestApprover`); either way not their own, not for their own access,
    not approved by them already (the rules of `domain.access_request.AccessRequest.approve`),
    read from the views."""
    user = approver.removeprefix("user:")
    teams = set(
        conn.execute(select(t.team_members.c.team).where(t.team_members.c.user == user)).scalars()
    )
    # Admin of a repo by today's access (its own grant or a team's, up to a deadline), as the
    # reviews' "waiting for me" and the command's `is_repo_admin` ask it.
    administered = (
        None
        if tenant_admin
        else {a.repo for a in subject_access(conn, approver) if a.role == "admin"}
    )
    return [
        row
        for row in rows
        if (administered is None or row["repo"] in administered)
        and approver not in (row["requester"], row["subject"])
        and row["subject"].removeprefix("team:") not in teams
        and all(a["approver"] != approver for a in row["approvals"])
    ]


# --- the registry -------------------------------------------------------------------------


Row = dict[str, Any]
Key = Callable[[Row], tuple[Any, ...]]


@dataclass(frozen=True)
class Query:
    params: type[QueryParams]
    # `run(conn, params)`, or with `authorized` `run(conn, params, authorization)`: a query
    # that answers what a user may do asks the tenant's `Authorization` who its admins are.
    run: Callable[..., Any]
    authorized: bool = False

    @property
    def key(self) -> Key | None:
        """A list's order, unique per row (`Paged.order`): what an `after` cursor names."""
        if not issubclass(self.params, Paged):
            return None
        fields = [field for field, _ in self.params.order]
        return lambda row: tuple(row[field] for field in fields)


QUERIES: dict[str, Query] = {
    "list_environments": Query(ListEnvironments, list_environments),
    "list_clusters": Query(ListClusters, list_clusters),
    "get_workspace": Query(GetWorkspace, get_workspace),
    "list_workspaces": Query(ListWorkspaces, list_workspaces),
    "get_ml_repo": Query(GetMlRepo, get_ml_repo),
    "list_ml_repos": Query(ListMlRepos, list_ml_repos),
    "repo_access": Query(RepoAccess, repo_access),
    "subject_access": Query(SubjectAccess, subject_access_query),
    "check_access": Query(CheckAccess, check_access),
    "environment_tags": Query(EnvironmentTags, environment_tags),
    "audit_log": Query(AuditLog, audit_log),
    "access_report": Query(AccessReport, access_report),
    "access_changes": Query(AccessChanges, access_changes),
    "list_teams": Query(ListTeams, list_teams),
    "get_team": Query(GetTeam, get_team),
    "list_storage_integrations": Query(ListStorageIntegrations, list_storage_integrations),
    "get_storage_integration": Query(GetStorageIntegration, get_storage_integration),
    "list_access_requests": Query(ListAccessRequests, list_access_requests, authorized=True),
    "get_access_request": Query(GetAccessRequest, get_access_request),
}


@dataclass(frozen=True)
class Answer:
    position: int  # the last position the views had applied
    data: Any
    paged: bool = False  # asked with `limit`: the reply carries `next`
    next: str | None = None

    def reply(self) -> dict[str, Any]:
        """The fields of the reply envelope (DESIGN §5), `next` for a paged request."""
        fields = {"position": self.position, "data": self.data}
        return {**fields, "next": self.next} if self.paged else fields


def answer(
    store: ViewStore, name: str, params: QueryParams, authorization: Authorization | None = None
) -> tuple[int, Any]:
    """(the position the views stood at, the query's data), read in one snapshot."""
    found = answer_query(store, name, params, authorization)
    return found.position, found.data


def answer_query(
    store: ViewStore, name: str, params: QueryParams, authorization: Authorization | None = None
) -> Answer:
    """The query's answer, read in one snapshot; one page of it for a `Paged` request.
    `authorization` is the tenant's (TENANTRY_ADMINS; None: off, as the command service's
    default), for the queries that answer what a user may do."""
    query = QUERIES[name]
    with store.snapshot() as conn:
        position = read_tracking(conn).position
        if query.authorized:
            data = query.run(conn, params, authorization or Authorization())
        else:
            data = query.run(conn, params)
    if query.key is None or not isinstance(params, Paged):
        return Answer(position, data)
    rows, next_ = _page(data, query.key, params)
    return Answer(position, rows, params.limit is not None, next_)


def _page(rows: list[Row], key: Key, params: Paged[Any]) -> tuple[list[Row], str | None]:
    rows = sorted(rows, key=key)  # already in this order: a linear check, and a guarantee
    place = params.place()  # its model has checked it is a place of this list
    if place is not None:
        rows = rows[bisect.bisect_right(rows, place, key=key) :]
    if params.limit is None or len(rows) <= params.limit:
        return rows, None
    page = rows[: params.limit]
    return page, json.dumps(list(key(page[-1])), separators=(",", ":"))


# --- access reviews (issue 15) ------------------------------------------------------------

QUERIES.update(
    {
        "list_access_reviews": Query(ListAccessReviews, access_reviews.list_access_reviews),
        "get_access_review": Query(GetAccessReview, access_reviews.get_access_review),
        "list_access_review_items": Query(
            ListAccessReviewItems, access_reviews.list_access_review_items, authorized=True
        ),
    }
)
