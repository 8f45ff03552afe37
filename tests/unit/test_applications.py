"""Applications: registered in a live workspace, named <cluster>:<workspace>:<name>."""

from __future__ import annotations

import pytest

from domain.application import Application
from domain.errors import AlreadyExists, NotFound
from domain.names import identity
from domain.workspace import Workspace

from .support import Tenancy


@pytest.fixture
def workspace(tenancy: Tenancy) -> Tenancy:
    tenancy.cluster("prod-eu", ("prod",))
    tenancy.workspace("prod-eu", "fraud", "prod")
    return tenancy


def test_register_gives_it_a_cluster_workspace_name_fqn(workspace: Tenancy) -> None:
    result = workspace.run("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"})

    assert result.fqn == "prod-eu:fraud:scorer"
    assert result.aggregate_id == str(identity("application", "prod-eu:fraud:scorer"))
    assert result.events == ["application.registered", "workspace.application_attached"]
    assert workspace.aggregate(Workspace, "prod-eu", "fraud").applications == {"scorer"}


def test_a_name_is_unique_in_its_workspace(workspace: Tenancy) -> None:
    workspace.cluster("prod-us", ("prod",))
    workspace.workspace("prod-us", "fraud", "prod")
    workspace.run("register_application", {"workspace": "prod-eu:fraud", "name": "scorer"})

    workspace.run("register_application", {"workspace": "prod-us:fraud", "name": "scorer"})
    workspace.refuse(
        "register_application",
        {"workspace": "prod-eu:fraud", "name": "scorer"},
        AlreadyExists,
        "already_exists",
    )


def test_its_workspace_must_exist(workspace: Tenancy) -> None:
    workspace.refuse(
        "register_application",
        {"workspace": "prod-eu:ghost", "name": "scorer"},
        NotFound,
        "not_found",
    )


def test_removed_it_leaves_the_workspace_and_may_be_registered_again(workspace: Tenancy) -> None:
    body = {"workspace": "prod-eu:fraud", "name": "scorer"}
    workspace.run("register_application", body)

    result = workspace.run("remove_application", body)

    assert result.events == ["application.removed", "workspace.application_detached"]
    assert workspace.aggregate(Workspace, "prod-eu", "fraud").applications == set()
    workspace.refuse("remove_application", body, NotFound, "not_found")
    assert workspace.run("register_application", body).events == [
        "application.reregistered",
        "workspace.application_attached",
    ]
    assert workspace.aggregate(Application, "prod-eu:fraud", "scorer").live


def test_removing_an_unknown_application_is_not_found(workspace: Tenancy) -> None:
    workspace.refuse(
        "remove_application",
        {"workspace": "prod-eu:fraud", "name": "ghost"},
        NotFound,
        "not_found",
    )
