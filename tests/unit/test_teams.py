"""Teams: a unique name and a set of member emails."""

from __future__ import annotations

from domain.errors import AlreadyExists, NotFound, PreconditionFailed
from domain.team import Team

from .support import Tenancy


def test_create_records_its_members_once_each(tenancy: Tenancy) -> None:
    result = tenancy.run(
        "create_team",
        {"name": "risk", "members": ["a@example.com", "b@example.com", "a@example.com"]},
    )

    assert (result.fqn, result.events) == ("risk", ["team.created"])
    assert tenancy.aggregate(Team, "risk").members == ["a@example.com", "b@example.com"]


def test_a_team_name_that_exists_is_already_exists(tenancy: Tenancy) -> None:
    tenancy.team("risk")

    tenancy.refuse("create_team", {"name": "risk"}, AlreadyExists, "already_exists")


def test_members_can_be_added_and_removed(tenancy: Tenancy) -> None:
    tenancy.team("risk", ("a@example.com",))

    added = tenancy.run("add_team_member", {"team": "risk", "user": "b@example.com"})
    again = tenancy.run("add_team_member", {"team": "risk", "user": "b@example.com"})
    removed = tenancy.run("remove_team_member", {"team": "risk", "user": "a@example.com"})

    assert (added.events, again.events, removed.events) == (
        ["team.member_added"],
        [],
        ["team.member_removed"],
    )
    assert tenancy.aggregate(Team, "risk").members == ["b@example.com"]


def test_removing_someone_who_is_not_a_member_is_refused(tenancy: Tenancy) -> None:
    tenancy.team("risk", ("a@example.com",))

    error = tenancy.refuse(
        "remove_team_member",
        {"team": "risk", "user": "z@example.com"},
        PreconditionFailed,
        "precondition_failed",
    )
    assert error.details == {"team": "risk", "user": "z@example.com"}


def test_changing_an_unknown_team_is_not_found(tenancy: Tenancy) -> None:
    tenancy.refuse(
        "add_team_member", {"team": "ghosts", "user": "a@example.com"}, NotFound, "not_found"
    )
    tenancy.refuse(
        "remove_team_member", {"team": "ghosts", "user": "a@example.com"}, NotFound, "not_found"
    )
