"""docker-compose.yml can't run here (no Docker engine): check it against the CLI instead.

Every Tenantry service's command must parse with `tenantry`'s own parser and name a role that
`tenantry serve --help` lists; every TENANTRY_* variable it sets must be one that Settings
reads; every role must be deployed; the stream is replicated across the three NATS nodes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantry.cli import parser
from tenantry.server.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _tenantry_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == "tenantry"
    }


def _settings_variables() -> set[str]:
    source = (ROOT / "tenantry" / "settings.py").read_text()
    return set(re.findall(r'env\.get\("(TENANTRY_[A-Z0-9_]+)"', source))


def test_every_role_is_deployed(compose: dict[str, Any]) -> None:
    deployed = {
        " ".join(service["command"][2:]) for service in _tenantry_services(compose).values()
    }
    assert deployed == set(ROLES)


def test_every_command_parses_and_names_a_listed_role(compose: dict[str, Any]) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "tenantry.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, service in _tenantry_services(compose).items():
        args = parser().parse_args(service["command"][1:])
        assert args.verb == "serve", name
        assert args.role in help_text, (name, args.role)
        healthcheck = service["healthcheck"]["test"]
        assert healthcheck[0] == "CMD"
        parser().parse_args(healthcheck[2:])  # `tenantry health --process` parses too


def test_every_variable_set_is_one_tenantry_reads(compose: dict[str, Any]) -> None:
    known = _settings_variables()
    assert "TENANTRY_DATABASE_URL" in known
    for name, service in _tenantry_services(compose).items():
        for variable in service["environment"]:
            if variable.startswith("TENANTRY_"):
                assert variable in known, (name, variable)
        env = service["environment"]
        assert env["TENANTRY_DATABASE_URL"].startswith("postgresql://"), name
        assert env["TENANTRY_NATS_URL"].count("nats://") == 3, name


def test_nats_is_a_three_node_jetstream_cluster_and_the_stream_has_three_replicas(
    compose: dict[str, Any],
) -> None:
    nodes = {n: s for n, s in compose["services"].items() if n.startswith("nats-")}
    assert sorted(nodes) == ["nats-1", "nats-2", "nats-3"]
    assert {s["environment"]["NATS_SERVER_NAME"] for s in nodes.values()} == set(nodes)
    for node in nodes.values():
        assert node["command"] == ["-c", "/etc/nats/nats.conf"]
    for config in compose["configs"].values():
        assert (ROOT / config["file"]).is_file()
    node_config = (ROOT / "deploy" / "nats.conf").read_text()
    assert "jetstream" in node_config
    assert all(f"nats://{name}:6222" in node_config for name in nodes)
    assert 'include "nats-accounts.conf"' in node_config
    for service in _tenantry_services(compose).values():
        assert service["environment"]["TENANTRY_STREAM_REPLICAS"] == "3"


def test_every_process_authenticates_as_its_own_nats_user(compose: dict[str, Any]) -> None:
    accounts = (ROOT / "deploy" / "nats-accounts.conf").read_text()
    for name, service in _tenantry_services(compose).items():
        env = service["environment"]
        assert env["TENANTRY_AUTH"] == "nats", name
        assert f"{{user: {env['TENANTRY_NATS_USER']}," in accounts, name
        assert env["TENANTRY_NATS_PASSWORD"].startswith("${"), "no password in the file"


def test_two_command_services_share_the_queue_group(compose: dict[str, Any]) -> None:
    assert compose["services"]["command"]["deploy"]["replicas"] == 2
    assert compose["services"]["postgres"]["volumes"]


def test_every_variable_compose_requires_is_in_the_env_example() -> None:
    """`${VAR:?set in .env}` stops `docker compose up` when VAR is unset: .env.example, which an
    operator copies to .env, must name every one (a new NATS user's password was missing)."""
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert required - example == set()
