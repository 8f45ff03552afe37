"""`tenantry up`: one process that starts its own nats-server, keeps its data across restarts,
and drains cleanly on SIGTERM."""

from __future__ import annotations

import socket

from tests.e2e.conftest import Tenantry


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_a_restart_keeps_all_data(tenantry_up: Tenantry) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    assert (tenantry_up.state_dir / "nats.url").read_text().strip() == tenantry_up.url
    created = await tenantry_up.command(
        "register_cluster",
        {
            "name": "prod-eu",
            "region": "eu-west-1",
            "provider": "aws-eks",
            "environments": ["prod", "dev"],
        },
        **{"Tenantry-Command-Id": "register-prod-eu"},
    )
    assert created["ok"], created
    assert tenantry_up.stop() == 0, tenantry_up.log()
    assert not _port_open(tenantry_up.port), "nats-server outlived tenantry up"

    tenantry_up.start()
    await tenantry_up.wait_ready()
    replayed = await tenantry_up.command(
        "register_cluster",
        {
            "name": "prod-eu",
            "region": "eu-west-1",
            "provider": "aws-eks",
            "environments": ["prod", "dev"],
        },
        **{"Tenantry-Command-Id": "register-prod-eu"},
    )
    assert replayed == {**created, "replayed": True}
    again = await tenantry_up.command(
        "register_cluster",
        {"name": "prod-eu", "region": "eu-west-1", "provider": "aws-eks", "environments": ["dev"]},
    )
    assert again["error"]["code"] == "already_exists"
    # Seeding happened once: the default environments exist and were not created twice.
    dev = await tenantry_up.command("create_environment", {"name": "dev"})
    assert dev["error"]["code"] == "already_exists"
    assert tenantry_up.stop() == 0


async def test_sigterm_drains_in_flight_commands(tenantry_up: Tenantry) -> None:
    import asyncio
    import json

    import nats

    tenantry_up.start()
    await tenantry_up.wait_ready()
    nc = await nats.connect(tenantry_up.url)
    requests = [
        asyncio.ensure_future(
            nc.request(
                "tenantry.cmd.create_team", json.dumps({"name": f"t{i}"}).encode(), timeout=15
            )
        )
        for i in range(30)
    ]
    await nc.flush()
    code = await asyncio.to_thread(tenantry_up.stop)
    replies = await asyncio.gather(*requests, return_exceptions=True)
    await nc.close()
    assert code == 0, tenantry_up.log()
    answered = [json.loads(r.data) for r in replies if not isinstance(r, BaseException)]
    # Every request was flushed to the server before SIGTERM: a drain answers all of them.
    assert len(answered) == len(replies), replies
    # Whatever was taken was answered; nothing taken was dropped on the floor: every answered
    # team exists after a restart, and every one that was acknowledged is still there.
    tenantry_up.start()
    await tenantry_up.wait_ready()
    for answer in answered:
        assert answer["ok"], answer
        again = await tenantry_up.command("create_team", {"name": answer["fqn"]})
        assert again["error"]["code"] == "already_exists"
    assert tenantry_up.stop() == 0
