"""The directory view: environments, clusters, workspaces, applications, storage integrations,
ML repos and teams as they stand now.

Link events (`environment.cluster_linked`, `cluster.workspace_attached`, …) restate what other
events already say, for the domain's concurrency rules: they change nothing here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update

from domain.event_log import Published
from projections import schema as t
from projections.event_handlers import EventHandlers
from projections.store import Raw, upsert

Body = dict[str, Any]
_Handler = Callable[[Connection, Body], None]
_HANDLERS: EventHandlers[_Handler] = EventHandlers()
_on = _HANDLERS.on


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    for body, _ in events:
        handler = _HANDLERS.get(body["type"])
        if handler is not None:
            handler(conn, body)


# --- environments -------------------------------------------------------------------------


@_on("environment.created", "environment.recreated", "environment.updated")
def _environment(conn: Connection, body: Body) -> None:
    data = body["data"]
    upsert(
        conn,
        t.environments,
        {
            "name": body["fqn"],
            "is_production": data["is_production"],
            "optimize_for": data["optimize_for"],
            "color": data["color"],
        },
    )
    # (Events stored before environments asked for approvals read as 0.)
    upsert(
        conn,
        t.environment_approvals,
        {"name": body["fqn"], "access_approvals": data.get("access_approvals", 0)},
    )


@_on("environment.deleted")
def _environment_deleted(conn: Connection, body: Body) -> None:
    conn.execute(delete(t.environments).where(t.environments.c.name == body["fqn"]))
    conn.execute(
        delete(t.environment_approvals).where(t.environment_approvals.c.name == body["fqn"])
    )


# --- clusters -----------------------------------------------------------------------------


@_on("cluster.registered", "cluster.reregistered")
def _cluster(conn: Connection, body: Body) -> None:
    data, name = body["data"], body["fqn"]
    upsert(
        conn,
        t.clusters,
        {
            "name": name,
            "region": data["region"],
            "provider": data["provider"],
            "labels": data["labels"],
        },
    )
    _clear_cluster_environments(conn, name)
    for ordinal, environment in enumerate(data["environments"]):
        conn.execute(
            t.cluster_environments.insert().values(
                cluster=name, environment=environment, ordinal=ordinal
            )
        )


@_on("cluster.environment_added")
def _cluster_environment_added(conn: Connection, body: Body) -> None:
    name = body["fqn"]
    last = conn.execute(
        select(func.max(t.cluster_environments.c.ordinal)).where(
            t.cluster_environments.c.cluster == name
        )
    ).scalar()
    upsert(
        conn,
        t.cluster_environments,
        {
            "cluster": name,
            "environment": body["data"]["environment"],
            "ordinal": 0 if last is None else last + 1,
        },
    )


@_on("cluster.environment_removed")
def _cluster_environment_removed(conn: Connection, body: Body) -> None:
    conn.execute(
        delete(t.cluster_environments).where(
            t.cluster_environments.c.cluster == body["fqn"],
            t.cluster_environments.c.environment == body["data"]["environment"],
        )
    )


@_on("cluster.deregistered")
def _cluster_deregistered(conn: Connection, body: Body) -> None:
    conn.execute(delete(t.clusters).where(t.clusters.c.name == body["fqn"]))
    _clear_cluster_environments(conn, body["fqn"])


def _clear_cluster_environments(conn: Connection, cluster: str) -> None:
    conn.execute(delete(t.cluster_environments).where(t.cluster_environments.c.cluster == cluster))


# --- workspaces and applications ----------------------------------------------------------


@_on("workspace.created", "workspace.recreated")
def _workspace(conn: Connection, body: Body) -> None:
    data, fqn = body["data"], body["fqn"]
    cluster, _, name = fqn.partition(":")
    upsert(
        conn,
        t.workspaces,
        {
            "fqn": fqn,
            "cluster": cluster,
            "name": name,
            "environment": data["environment"],
            "labels": data["labels"],
            "annotations": data["annotations"],
            "status": "pending",
        },
    )
    _failure(conn, "workspace", body)


@_on("workspace.environment_set")
def _workspace_environment_set(conn: Connection, body: Body) -> None:
    _update_workspace(conn, body, environment=body["data"]["environment"])


@_on("workspace.updated")
def _workspace_updated(conn: Connection, body: Body) -> None:
    data = body["data"]
    _update_workspace(conn, body, labels=data["labels"], annotations=data["annotations"])


_WORKSPACE_STATUS = {
    "workspace.deletion_requested": "deleting",
    "workspace.namespace_provisioned": "ready",
    "workspace.namespace_failed": "failed",
    "workspace.namespace_deleted": "deleted",
}


@_on(*_WORKSPACE_STATUS)
def _workspace_status(conn: Connection, body: Body) -> None:
    _update_workspace(conn, body, status=_WORKSPACE_STATUS[body["type"]])
    _failure(conn, "workspace", body)


def _failure(conn: Connection, kind: str, body: Body) -> None:
    """Keep the worker's reason while the thing is failed; forget it on any other status."""
    if body["type"].endswith(".created"):
        return  # a first creation: nothing to forget
    _FORGET_FAILURE.run(conn, {"w_kind": kind, "w_name": body["fqn"]})
    if body["type"].endswith("_failed"):
        detail = str(body["data"].get("detail") or "no reason given")
        _INSERT_FAILURE.run(conn, {"kind": kind, "name": body["fqn"], "detail": detail})


# The statements run for most events, built once and run on the driver's cursor (`Raw`):
# building one for each event cost more than running it.
_FORGET_FAILURE = Raw(
    delete(t.failures).where(
        t.failures.c.kind == bindparam("w_kind"), t.failures.c.name == bindparam("w_name")
    )
)
_INSERT_FAILURE = Raw(insert(t.failures), ("kind", "name", "detail"))


@functools.lru_cache(maxsize=64)
def _update_by_key(table: Table, key: str, columns: tuple[str, ...]) -> Raw:
    """UPDATE `table` SET `columns` WHERE `key` = :w_key, built once per set of columns."""
    return Raw(update(table).where(table.c[key] == bindparam("w_key")), columns)


def _update_workspace(conn: Connection, body: Body, **values: Any) -> None:
    _update_by_key(t.workspaces, "fqn", tuple(values)).run(conn, {**values, "w_key": body["fqn"]})


@_on("application.registered", "application.reregistered")
def _application(conn: Connection, body: Body) -> None:
    fqn = body["fqn"]
    workspace, _, name = fqn.rpartition(":")
    upsert(conn, t.applications, {"fqn": fqn, "workspace": workspace, "name": name})


@_on("application.removed")
def _application_removed(conn: Connection, body: Body) -> None:
    conn.execute(delete(t.applications).where(t.applications.c.fqn == body["fqn"]))


# --- storage integrations and ML repos ----------------------------------------------------


@_on("storage_integration.registered", "storage_integration.reregistered")
def _storage_integration(conn: Connection, body: Body) -> None:
    data = body["data"]
    upsert(
        conn,
        t.storage_integrations,
        {
            "name": body["fqn"],
            "provider": data["provider"],
            "storage_root": data["storage_root"],
            "region": data["region"],
        },
    )


@_on("storage_integration.removed")
def _storage_integration_removed(conn: Connection, body: Body) -> None:
    conn.execute(delete(t.storage_integrations).where(t.storage_integrations.c.name == body["fqn"]))


@_on("ml_repo.created", "ml_repo.recreated")
def _ml_repo(conn: Connection, body: Body) -> None:
    data = body["data"]
    upsert(
        conn,
        t.ml_repos,
        {
            "name": body["fqn"],
            "storage_integration": data["storage_integration"],
            "location": data["location"],
            "description": data["description"],
            "status": "pending",
        },
    )
    _failure(conn, "ml_repo", body)


@_on("ml_repo.updated")
def _ml_repo_updated(conn: Connection, body: Body) -> None:
    _update_repo(conn, body, description=body["data"]["description"])


_REPO_STATUS = {
    "ml_repo.deletion_requested": "deleting",
    "ml_repo.storage_provisioned": "ready",
    "ml_repo.storage_failed": "failed",
    "ml_repo.storage_deleted": "deleted",
}


@_on(*_REPO_STATUS)
def _ml_repo_status(conn: Connection, body: Body) -> None:
    status = _REPO_STATUS[body["type"]]
    if status == "failed" and body["data"].get("removal"):
        status = "deletion_failed"  # a deleted repo whose storage could not be removed
    _update_repo(conn, body, status=status)
    _failure(conn, "ml_repo", body)


def _update_repo(conn: Connection, body: Body, **values: Any) -> None:
    _update_by_key(t.ml_repos, "name", tuple(values)).run(conn, {**values, "w_key": body["fqn"]})


# --- teams --------------------------------------------------------------------------------


@_on("team.created")
def _team(conn: Connection, body: Body) -> None:
    name = body["fqn"]
    upsert(conn, t.teams, {"name": name})
    conn.execute(delete(t.team_members).where(t.team_members.c.team == name))
    for user in body["data"]["members"]:
        upsert(conn, t.team_members, {"team": name, "user": user})


@_on("team.member_added")
def _team_member_added(conn: Connection, body: Body) -> None:
    upsert(conn, t.team_members, {"team": body["fqn"], "user": body["data"]["user"]})


@_on("team.member_removed")
def _team_member_removed(conn: Connection, body: Body) -> None:
    _REMOVE_MEMBER.run(conn, {"w_team": body["fqn"], "w_user": body["data"]["user"]})


_REMOVE_MEMBER = Raw(
    delete(t.team_members).where(
        t.team_members.c.team == bindparam("w_team"), t.team_members.c.user == bindparam("w_user")
    )
)
