"""The directory view: environments, clusters, workspaces, applications, storage integrations,
ML repos and teams as they stand now.

Link events (`environment.cluster_linked`, `cluster.workspace_attached`, …) restate what other
events already say, for the domain's concurrency rules: they change nothing here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select

from domain.event_log import Published
from projections import schema as t
from projections.event_handlers import EventHandlers
from projections.store import Raw, Writes, update_by_key

Body = dict[str, Any]
_Handler = Callable[[Writes, Body], None]
_HANDLERS: EventHandlers[_Handler] = EventHandlers()
_on = _HANDLERS.on


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """The batch's writes are held and run at its end, a run of one statement at a time."""
    writes = Writes(conn)
    _HANDLERS.apply(writes, events)
    writes.flush()


@functools.lru_cache(maxsize=64)
def _delete_by(table: Table, *keys: str) -> Raw:
    """DELETE FROM `table` WHERE each of `keys` = :w_<key>, built once."""
    return Raw(delete(table).where(*(table.c[key] == bindparam(f"w_{key}") for key in keys)))


# --- environments -------------------------------------------------------------------------


@_on("environment.created", "environment.recreated", "environment.updated")
def _environment(writes: Writes, body: Body) -> None:
    data = body["data"]
    writes.upsert(
        t.environments,
        {
            "name": body["fqn"],
            "is_production": data["is_production"],
            "optimize_for": data["optimize_for"],
            "color": data["color"],
        },
    )
    # (Events stored before environments asked for approvals read as 0.)
    writes.upsert(
        t.environment_approvals,
        {"name": body["fqn"], "access_approvals": data.get("access_approvals", 0)},
    )


@_on("environment.deleted")
def _environment_deleted(writes: Writes, body: Body) -> None:
    writes.add(_delete_by(t.environments, "name"), {"w_name": body["fqn"]})
    writes.add(_delete_by(t.environment_approvals, "name"), {"w_name": body["fqn"]})


# --- clusters -----------------------------------------------------------------------------


@_on("cluster.registered", "cluster.reregistered")
def _cluster(writes: Writes, body: Body) -> None:
    data, name = body["data"], body["fqn"]
    writes.upsert(
        t.clusters,
        {
            "name": name,
            "region": data["region"],
            "provider": data["provider"],
            "labels": data["labels"],
        },
    )
    _clear_cluster_environments(writes, name)
    for ordinal, environment in enumerate(data["environments"]):
        writes.add(
            _INSERT_CLUSTER_ENVIRONMENT,
            {"cluster": name, "environment": environment, "ordinal": ordinal},
        )


@_on("cluster.environment_added")
def _cluster_environment_added(writes: Writes, body: Body) -> None:
    name = body["fqn"]
    writes.flush(t.cluster_environments)  # (read below)
    last = writes.conn.execute(
        select(func.max(t.cluster_environments.c.ordinal)).where(
            t.cluster_environments.c.cluster == name
        )
    ).scalar()
    writes.upsert(
        t.cluster_environments,
        {
            "cluster": name,
            "environment": body["data"]["environment"],
            "ordinal": 0 if last is None else last + 1,
        },
    )


@_on("cluster.environment_removed")
def _cluster_environment_removed(writes: Writes, body: Body) -> None:
    writes.add(
        _delete_by(t.cluster_environments, "cluster", "environment"),
        {"w_cluster": body["fqn"], "w_environment": body["data"]["environment"]},
    )


@_on("cluster.deregistered")
def _cluster_deregistered(writes: Writes, body: Body) -> None:
    writes.add(_delete_by(t.clusters, "name"), {"w_name": body["fqn"]})
    _clear_cluster_environments(writes, body["fqn"])


def _clear_cluster_environments(writes: Writes, cluster: str) -> None:
    writes.add(_delete_by(t.cluster_environments, "cluster"), {"w_cluster": cluster})


_INSERT_CLUSTER_ENVIRONMENT = Raw(
    insert(t.cluster_environments), ("cluster", "environment", "ordinal")
)


# --- workspaces and applications ----------------------------------------------------------


@_on("workspace.created", "workspace.recreated")
def _workspace(writes: Writes, body: Body) -> None:
    data, fqn = body["data"], body["fqn"]
    cluster, _, name = fqn.partition(":")
    writes.upsert(
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
    _failure(writes, "workspace", body)


@_on("workspace.environment_set")
def _workspace_environment_set(writes: Writes, body: Body) -> None:
    _update_workspace(writes, body, environment=body["data"]["environment"])


@_on("workspace.updated")
def _workspace_updated(writes: Writes, body: Body) -> None:
    data = body["data"]
    _update_workspace(writes, body, labels=data["labels"], annotations=data["annotations"])


_WORKSPACE_STATUS = {
    "workspace.deletion_requested": "deleting",
    "workspace.namespace_provisioned": "ready",
    "workspace.namespace_failed": "failed",
    "workspace.namespace_deleted": "deleted",
}


@_on(*_WORKSPACE_STATUS)
def _workspace_status(writes: Writes, body: Body) -> None:
    _update_workspace(writes, body, status=_WORKSPACE_STATUS[body["type"]])
    _failure(writes, "workspace", body)


def _failure(writes: Writes, kind: str, body: Body) -> None:
    """Keep the worker's reason while the thing is failed; forget it on any other status."""
    if body["type"].endswith(".created"):
        return  # a first creation: nothing to forget
    writes.add(_FORGET_FAILURE, {"w_kind": kind, "w_name": body["fqn"]})
    if body["type"].endswith("_failed"):
        detail = str(body["data"].get("detail") or "no reason given")
        writes.add(_INSERT_FAILURE, {"kind": kind, "name": body["fqn"], "detail": detail})


# The statements run for most events, built once and run on the driver's cursor (`Raw`):
# building one for each event cost more than running it.
_FORGET_FAILURE = Raw(
    delete(t.failures).where(
        t.failures.c.kind == bindparam("w_kind"), t.failures.c.name == bindparam("w_name")
    )
)
_INSERT_FAILURE = Raw(insert(t.failures), ("kind", "name", "detail"))


def _update_workspace(writes: Writes, body: Body, **values: Any) -> None:
    writes.add(update_by_key(t.workspaces, "fqn", tuple(values)), {**values, "w_key": body["fqn"]})


@_on("application.registered", "application.reregistered")
def _application(writes: Writes, body: Body) -> None:
    fqn = body["fqn"]
    workspace, _, name = fqn.rpartition(":")
    writes.upsert(t.applications, {"fqn": fqn, "workspace": workspace, "name": name})


@_on("application.removed")
def _application_removed(writes: Writes, body: Body) -> None:
    writes.add(_delete_by(t.applications, "fqn"), {"w_fqn": body["fqn"]})


# --- storage integrations and ML repos ----------------------------------------------------


@_on("storage_integration.registered", "storage_integration.reregistered")
def _storage_integration(writes: Writes, body: Body) -> None:
    data = body["data"]
    writes.upsert(
        t.storage_integrations,
        {
            "name": body["fqn"],
            "provider": data["provider"],
            "storage_root": data["storage_root"],
            "region": data["region"],
        },
    )


@_on("storage_integration.removed")
def _storage_integration_removed(writes: Writes, body: Body) -> None:
    writes.add(_delete_by(t.storage_integrations, "name"), {"w_name": body["fqn"]})


@_on("ml_repo.created", "ml_repo.recreated")
def _ml_repo(writes: Writes, body: Body) -> None:
    data = body["data"]
    writes.upsert(
        t.ml_repos,
        {
            "name": body["fqn"],
            "storage_integration": data["storage_integration"],
            "location": data["location"],
            "description": data["description"],
            "status": "pending",
        },
    )
    _failure(writes, "ml_repo", body)


@_on("ml_repo.updated")
def _ml_repo_updated(writes: Writes, body: Body) -> None:
    _update_repo(writes, body, description=body["data"]["description"])


_REPO_STATUS = {
    "ml_repo.deletion_requested": "deleting",
    "ml_repo.storage_provisioned": "ready",
    "ml_repo.storage_failed": "failed",
    "ml_repo.storage_deleted": "deleted",
}


@_on(*_REPO_STATUS)
def _ml_repo_status(writes: Writes, body: Body) -> None:
    status = _REPO_STATUS[body["type"]]
    if status == "failed" and body["data"].get("removal"):
        status = "deletion_failed"  # a deleted repo whose storage could not be removed
    _update_repo(writes, body, status=status)
    _failure(writes, "ml_repo", body)


def _update_repo(writes: Writes, body: Body, **values: Any) -> None:
    writes.add(update_by_key(t.ml_repos, "name", tuple(values)), {**values, "w_key": body["fqn"]})


# --- teams --------------------------------------------------------------------------------


@_on("team.created")
def _team(writes: Writes, body: Body) -> None:
    name = body["fqn"]
    writes.upsert(t.teams, {"name": name})
    writes.add(_delete_by(t.team_members, "team"), {"w_team": name})
    for user in body["data"]["members"]:
        writes.upsert(t.team_members, {"team": name, "user": user})


@_on("team.member_added")
def _team_member_added(writes: Writes, body: Body) -> None:
    writes.upsert(t.team_members, {"team": body["fqn"], "user": body["data"]["user"]})


@_on("team.member_removed")
def _team_member_removed(writes: Writes, body: Body) -> None:
    writes.add(
        _delete_by(t.team_members, "team", "user"),
        {"w_team": body["fqn"], "w_user": body["data"]["user"]},
    )
