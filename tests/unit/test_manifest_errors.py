"""Manifest errors a person can act on: a did-you-mean for a misspelled field, plan problems at
the field's own line, a missing environment told apart (by the command service) from one the
cluster doesn't offer."""

from __future__ import annotations

import textwrap

import pytest

from domain.base import CommandContext
from domain.errors import PreconditionFailed
from tenantry.apply.manifests import parse
from tenantry.apply.plan import State, plan
from tenantry.sdk.results import Cluster, Environment

from .support import ADMIN, make_tenancy


def _problems(text: str) -> list[str]:
    _, problems = parse(textwrap.dedent(text), "t.yaml")
    return [str(p) for p in problems]


def test_a_misspelled_field_gets_a_did_you_mean() -> None:
    assert _problems(
        """
        type: ml-repo
        name: fraud-models
        storage_integraton: s3-main
        """
    ) == [
        "t.yaml: document 1 (line 2): storage_integration: Field required",
        "t.yaml: document 1 (line 4): storage_integraton: Extra inputs are not permitted; did "
        "you mean `storage_integration`?",
    ]
    nested = _problems(
        """
        type: ml-repo
        name: fraud-models
        storage_integration: s3-main
        collaborators:
          - {subject: "user:ana@example.com", rol: admin}
        """
    )
    assert any(
        "collaborators[0].rol: Extra inputs are not permitted; did you mean `role`?" in p
        for p in nested
    )


_STATE = State.of(
    environments=[
        Environment(name=n, is_production=n == "prod", optimize_for="cost", color=None)
        for n in ("dev", "prod")
    ],
    clusters=[
        Cluster(
            name="prod-eu",
            region="eu-west-1",
            provider="aws-eks",
            environments=["prod"],
            labels={},
        )
    ],
)


def _refusal(text: str) -> tuple[str, str]:
    """What the command service answers the plan of `text` (a dry run), and the document of
    the command it refused."""
    documents, problems = parse(textwrap.dedent(text), "t.yaml")
    assert not problems
    the_plan = plan(documents, _STATE, ADMIN)
    assert not the_plan.problems
    tenancy = make_tenancy()
    tenancy.run(
        "register_cluster",
        {"name": "prod-eu", "region": "eu-west-1", "provider": "aws-eks", "environments": ["prod"]},
    )
    with pytest.raises(PreconditionFailed) as refused:
        tenancy.svc.apply(the_plan.commands, CommandContext(ADMIN, "a-1", "c-1"), dry_run=True)
    return refused.value.message, str(the_plan.source_of(refused.value.details["index"]))


def test_no_such_environment_is_not_the_cluster_not_offering_it() -> None:
    """The command service tells them apart (the plan holds no copy of the rule)."""
    missing, where = _refusal(
        """
        type: workspace
        cluster: prod-eu
        name: fraud

        environment: qa
        """
    )
    assert missing.endswith("environment 'qa' does not exist")
    assert where == "t.yaml: document 1 (line 2)"
    not_offered, _ = _refusal(
        """
        type: workspace
        cluster: prod-eu
        name: fraud
        environment: dev
        """
    )
    assert "environment 'dev' is not one of cluster 'prod-eu''s environments" in not_offered


def test_apply_o_json_says_its_problems_in_json(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from tenantry.cli import parser
    from tenantry.settings import Settings

    bad = tmp_path / "bad.yaml"
    bad.write_text("type: team\nname: risk\nmembrs: [bo@example.com]\n")
    args = parser().parse_args(["apply", "-f", str(bad), "-o", "json"])
    assert args.handler(args, Settings.from_env({})) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert out["problems"] == [
        {
            "file": str(bad),
            "index": 1,
            "line": 3,
            "path": "membrs",
            "message": "Extra inputs are not permitted; did you mean `members`?",
        }
    ]
