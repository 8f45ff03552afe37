"""The cached aggregates a command gets are copies (`Aggregate.__deepcopy__`): containers are
copied, values shared. That is a deep copy only while every aggregate's state is immutable
values and flat containers of them: held here for every aggregate after a busy history."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from domain.access_request import AccessRequest
from domain.access_review import AccessReview
from domain.application import Application
from domain.base import Aggregate, CommandContext
from domain.cluster import Cluster
from domain.command_record import ApplyRecord, CommandRecord
from domain.commands import CreateEnvironment
from domain.environment import Environment
from domain.ml_repo import MlRepo
from domain.seeding import Seed
from domain.storage_integration import StorageIntegration
from domain.team import Team
from domain.workspace import Workspace
from tests.unit.support import Tenancy


def _immutable(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool | datetime | UUID):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_immutable(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        frozen = type(value).__dataclass_params__.frozen  # type: ignore[attr-defined]
        return bool(frozen) and all(
            _immutable(getattr(value, f.name)) for f in dataclasses.fields(value)
        )
    if isinstance(value, BaseModel):
        return bool(value.model_config.get("frozen"))
    return False


def _flat_container_of_immutables(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_immutable(k) and _immutable(v) for k, v in value.items())
    if isinstance(value, set | list):
        return all(_immutable(item) for item in value)
    return False


def _busy(tenancy: Tenancy) -> list[Aggregate]:
    t = tenancy
    t.cluster()
    t.integration()
    t.repo()
    t.repo("churn-models")
    t.team(members=("bo@example.com", "cy@example.com"))
    t.workspace(
        labels={"team": "risk"}, ml_repo_access=[{"repo": "fraud-models", "role": "editor"}]
    )
    t.run("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"})
    t.run(
        "grant_repo_access",
        {"repo": "fraud-models", "subject": "team:risk", "role": "viewer", "reason": "on call"},
    )
    t.run("add_team_member", {"team": "risk", "user": "dee@example.com"})
    t.run("update_workspace", {"workspace": "prod-eu:fraud", "annotations": {"owner": "risk"}})
    request = t.run(
        "request_repo_access",
        {"repo": "churn-models", "role": "viewer", "reason": "audit"},
        actor="user:bo@example.com",
    ).fqn
    t.run("approve_access_request", {"request": request, "comment": "ok"})
    t.run(
        "open_access_review",
        {"name": "q4", "scope": {"all": True}, "due": datetime(2099, 1, 1, tzinfo=UTC)},
    )
    t.run(
        "decide_access_review_item",
        {"review": "q4", "item": "i1", "decision": "keep", "reason": "needed"},
        actor="user:root@example.com",  # not ana's own grant
    )
    return [
        t.aggregate(AccessRequest, request),
        t.aggregate(Environment, "prod"),
        t.aggregate(Cluster, "prod-eu"),
        t.aggregate(Workspace, "prod-eu", "fraud"),
        t.aggregate(Application, "prod-eu:fraud", "scorer"),
        t.aggregate(StorageIntegration, "s3-main"),
        t.aggregate(MlRepo, "fraud-models"),
        t.aggregate(Team, "risk"),
        t.aggregate(Seed, "default-environments"),
        t.aggregate(AccessReview, "q4"),
    ]


def test_every_aggregate_holds_immutable_values_and_flat_containers(tenancy: Tenancy) -> None:
    aggregates = _busy(tenancy)
    records = {CommandRecord, ApplyRecord}
    assert {type(a) for a in aggregates} | records == set(_all_aggregate_classes())
    last = tenancy.run("remove_team_member", {"team": "risk", "user": "bo@example.com"})
    record = tenancy.svc.repository.get(CommandRecord.create_id(last.command_id))
    context = CommandContext("user:ana@example.com", "apply-1", "corr-1")
    tenancy.svc.apply([CreateEnvironment(name="gpu")], context)
    applied = tenancy.svc.repository.get(ApplyRecord.create_id("apply-1"))
    assert isinstance(applied, ApplyRecord) and applied.results
    for aggregate in [*aggregates, record, applied]:
        for name, value in vars(aggregate).items():
            assert _immutable(value) or _flat_container_of_immutables(value), (
                type(aggregate).__name__,
                name,
                value,
            )


def test_a_copy_is_equal_and_shares_no_container(tenancy: Tenancy) -> None:
    for aggregate in _busy(tenancy):
        clone = copy.deepcopy(aggregate)
        assert type(clone) is type(aggregate)
        assert vars(clone) == vars(aggregate)
        for name, value in vars(aggregate).items():
            if isinstance(value, dict | set | list):
                assert vars(clone)[name] is not value, name
        # A change to the copy (what a command does) leaves the original as it was.
        version = aggregate.version
        clone._fqn = "changed"
        assert aggregate.fqn() != "changed" and aggregate.version == version


def _all_aggregate_classes() -> list[type[Aggregate]]:
    def walk(cls: type[Aggregate]) -> list[type[Aggregate]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *walk(sub))]

    return [cls for cls in walk(Aggregate) if cls.__module__.startswith("domain.")]
