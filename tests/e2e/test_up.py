"""`tenantry up`: one process that starts its own nats-server, keeps its data across restarts,
and drains cleanly on SIGTERM."""

from __future__ import annotations

import socket
from typing import Any

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


async def test_up_runs_the_relay_and_the_views_too(tenantry_up: Tenantry) -> None:
    import json

    import nats

    from domain.event_log import STREAM_NAME

    tenantry_up.start()
    await tenantry_up.wait_ready()
    created = await tenantry_up.command(
        "register_cluster",
        {"name": "prod-eu", "region": "eu-west-1", "provider": "aws-eks", "environments": ["dev"]},
    )
    assert created["ok"], created
    nc = await nats.connect(tenantry_up.url)
    try:
        reply = await nc.request(
            "tenantry.query.list_clusters",
            json.dumps({"min_position": created["position"]}).encode(),
            timeout=10,
        )
        answer = json.loads(reply.data)
        assert answer["ok"], answer
        assert answer["position"] >= created["position"]
        assert [c["name"] for c in answer["data"]] == ["prod-eu"]
        # The relay publishes on its own schedule: wait for it (bounded), don't race it.
        import asyncio
        import time

        from nats.js.errors import NotFoundError

        js = nc.jetstream()
        deadline = time.monotonic() + 20
        while True:
            try:
                last = await js.get_last_msg(STREAM_NAME, "tenantry.evt.cluster.registered")
                break
            except NotFoundError:
                assert time.monotonic() < deadline, "the relay never published the event"
                await asyncio.sleep(0.05)
        assert json.loads(last.data)["fqn"] == "prod-eu"
    finally:
        await nc.close()
    assert tenantry_up.stop() == 0, tenantry_up.log()


async def test_up_runs_the_workers_on_local_backends(tenantry_up: Tenantry, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import json
    import time

    import nats
    import yaml

    tenantry_up.start()
    await tenantry_up.wait_ready()
    storage_root = tmp_path / "storage"
    steps = [
        (
            "register_cluster",
            {
                "name": "prod-eu",
                "region": "eu-west-1",
                "provider": "aws-eks",
                "environments": ["prod"],
            },
        ),
        (
            "register_storage_integration",
            {"name": "local", "provider": "local", "storage_root": f"file://{storage_root}"},
        ),
        ("create_ml_repo", {"name": "fraud-models", "storage_integration": "local"}),
        (
            "create_workspace",
            {
                "cluster": "prod-eu",
                "name": "fraud",
                "environment": "prod",
                "ml_repo_access": [{"repo": "fraud-models", "role": "editor"}],
            },
        ),
    ]
    for name, body in steps:
        answer = await tenantry_up.command(name, body)
        assert answer["ok"], answer
    written = answer["position"]

    async def status(query: str, params: dict[str, object]) -> str:
        nc = await nats.connect(tenantry_up.url)
        try:
            body = json.dumps({**params, "min_position": written}).encode()
            reply = await nc.request(f"tenantry.query.{query}", body, timeout=10)
            return str(json.loads(reply.data)["data"]["status"])
        finally:
            await nc.close()

    deadline = time.monotonic() + 60
    while (
        await status("get_workspace", {"fqn": "prod-eu:fraud"}),
        await status("get_ml_repo", {"name": "fraud-models"}),
    ) != ("ready", "ready"):
        assert time.monotonic() < deadline, tenantry_up.log()
        await asyncio.sleep(0.1)
    manifest = tenantry_up.state_dir / "gitops" / "prod-eu" / "fraud" / "namespace.yaml"
    labels = yaml.safe_load(manifest.read_text())["metadata"]["labels"]
    assert labels["tenantry.io/environment"] == "prod"
    policy = json.loads((storage_root / "fraud-models" / ".tenantry-access.json").read_text())
    assert "workspace:prod-eu:fraud" in json.dumps(policy)
    assert tenantry_up.stop() == 0, tenantry_up.log()


async def test_up_makes_a_signing_key_once_and_says_its_public_key(tenantry_up: Tenantry) -> None:
    import json

    from tenantry.audit.checkpoint import key_id, load_private_key, load_public_key

    tenantry_up.start()
    await tenantry_up.wait_ready()
    private = tenantry_up.state_dir / "signing.key"
    public = load_public_key(tenantry_up.state_dir / "signing.key.pub")
    assert private.stat().st_mode & 0o777 == 0o600
    assert key_id(load_private_key(private).public_key()) == key_id(public)

    def said() -> list[dict[str, str]]:
        whole = (tenantry_up.state_dir.parent / "tenantry-up.log").read_text()
        lines = [json.loads(line) for line in whole.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("event") == "checkpoint.signing_key"]

    assert [line["key_id"] for line in said()] == [key_id(public)], tenantry_up.log()
    assert said()[0]["public_key"] == str(tenantry_up.state_dir / "signing.key.pub")
    assert tenantry_up.stop() == 0, tenantry_up.log()
    tenantry_up.start()
    await tenantry_up.wait_ready()
    assert [line["key_id"] for line in said()] == [key_id(public)] * 2  # the same key again
    assert key_id(load_public_key(tenantry_up.state_dir / "signing.key.pub")) == key_id(public)


# --- `tenantry up` guards its folder and its ports ------------------------------------------


async def test_a_second_up_in_the_same_folder_is_refused_and_the_first_runs_on(
    tenantry_up: Tenantry,
) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    assert tenantry_up.process is not None
    url_file = tenantry_up.state_dir / "nats.url"
    for metrics_port in (str(tenantry_up.metrics_port), "0"):
        second = tenantry_up.run_up(TENANTRY_METRICS_PORT=metrics_port)
        assert second.returncode == 1, second
        assert "Traceback" not in second.stderr, second.stderr
        assert (
            f"tenantry up is already running here: pid {tenantry_up.process.pid}, "
            f"{tenantry_up.url}" in second.stderr
        ), second.stderr
        # The first instance's files are untouched and it still answers.
        assert url_file.read_text().strip() == tenantry_up.url
        created = await tenantry_up.command("create_team", {"name": f"t{metrics_port}"})
        assert created["ok"], created
    assert tenantry_up.stop() == 0, tenantry_up.log()
    assert not url_file.exists(), "the instance that wrote nats.url removes it on the way out"


async def test_the_nats_port_taken_by_something_else_is_said_in_one_line(
    tenantry_up: Tenantry,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", tenantry_up.port))
        squatter.listen()
        done = tenantry_up.run_up()
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    assert f"port {tenantry_up.port} is in use; set TENANTRY_NATS_PORT" in done.stderr
    assert not (tenantry_up.state_dir / "nats.url").exists()


async def test_the_nats_port_taken_by_another_nats_server_is_not_used(
    tenantry_up: Tenantry, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import nats

    from domain.event_log import STREAM_NAME
    from tenantry.server.nats_server import NatsServer

    foreign = NatsServer(tmp_path / "foreign", port=tenantry_up.port).start()
    try:
        done = tenantry_up.run_up()
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr, done.stderr
        assert f"port {tenantry_up.port} is in use; set TENANTRY_NATS_PORT" in done.stderr
        nc = await nats.connect(foreign.url)
        try:
            names = [info.config.name async for info in _streams(nc.jetstream())]
        finally:
            await nc.close()
        assert STREAM_NAME not in names, "up created its stream in someone else's server"
    finally:
        foreign.stop()


async def _streams(js):  # type: ignore[no-untyped-def]
    for info in await js.streams_info():
        yield info


async def test_the_metrics_port_taken_is_said_in_one_line_and_nothing_is_left_behind(
    tenantry_up: Tenantry,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", tenantry_up.metrics_port))
        squatter.listen()
        done = tenantry_up.run_up()
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    assert f"port {tenantry_up.metrics_port} is in use; set TENANTRY_METRICS_PORT" in done.stderr
    assert not (tenantry_up.state_dir / "nats.url").exists()
    assert not _port_open(tenantry_up.port), "the nats-server it started outlived it"


def _listening_addresses(port: int) -> set[str]:
    """The local addresses listening on TCP `port` (Linux /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:  # noqa: SIM115
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


async def test_up_says_where_everything_is_once_it_answers(tenantry_up: Tenantry) -> None:
    import asyncio
    import json
    import time

    import nats

    tenantry_up.start()
    url_file = tenantry_up.state_dir / "nats.url"
    deadline = time.monotonic() + 60
    while not url_file.exists():
        assert time.monotonic() < deadline, tenantry_up.log()
        await asyncio.sleep(0.01)
    # nats.url is written once queries answer: a query sent at once is answered, first try.
    nc = await nats.connect(url_file.read_text().strip())
    try:
        reply = await nc.request("tenantry.query.list_environments", b"{}", timeout=10)
        assert json.loads(reply.data)["ok"], reply.data
    finally:
        await nc.close()
    while "Next, in another terminal" not in tenantry_up.log():
        assert time.monotonic() < deadline, tenantry_up.log()
        await asyncio.sleep(0.01)
    log = tenantry_up.log()
    assert f"bus:           {tenantry_up.url}" in log
    assert f"metrics:       http://127.0.0.1:{tenantry_up.metrics_port}/metrics" in log
    assert f"state folder:  {tenantry_up.state_dir.resolve()}" in log
    assert "authorization: off (TENANTRY_ADMINS is unset" in log
    assert "tenantry get environments" in log
    # /metrics on loopback only, unless TENANTRY_METRICS_HOST says otherwise.
    assert _listening_addresses(tenantry_up.metrics_port) == {"127.0.0.1"}
    assert tenantry_up.stop() == 0, tenantry_up.log()


async def test_up_starts_and_heals_when_the_streams_last_message_was_deleted(
    tenantry_up: Tenantry,
) -> None:
    """The probe of issue 14: with the stream's last message deleted, `tenantry up` could never
    start again (the relay read `get_msg(last_seq)`: not found)."""
    import asyncio
    import json
    import time

    import nats
    from nats.js.errors import NotFoundError

    from domain.event_log import STREAM_NAME
    from tenantry.server.nats_server import NatsServer

    tenantry_up.start()
    await tenantry_up.wait_ready()
    created = await tenantry_up.command("create_team", {"name": "fraud", "members": []})
    assert created["ok"], created

    async def last_team(url: str, deadline: float) -> dict[str, Any]:
        nc = await nats.connect(url)
        try:
            while True:
                try:
                    msg = await nc.jetstream().get_last_msg(
                        STREAM_NAME, "tenantry.evt.team.created"
                    )
                    return dict(json.loads(msg.data), seq=msg.seq)
                except NotFoundError:
                    assert time.monotonic() < deadline, "the event never reached the stream"
                    await asyncio.sleep(0.05)
        finally:
            await nc.close()

    published = await last_team(tenantry_up.url, time.monotonic() + 20)
    assert tenantry_up.stop() == 0, tenantry_up.log()
    # The stream's last message deleted while Tenantry is down (its own nats-server's data).
    server = NatsServer(tenantry_up.state_dir / "nats").start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        last_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
        assert last_seq == published["seq"]
        await js.delete_msg(STREAM_NAME, last_seq)
        await nc.close()
    finally:
        server.stop()
    tenantry_up.start()
    await tenantry_up.wait_ready()
    healed = await last_team(tenantry_up.url, time.monotonic() + 20)
    assert healed["seq"] > published["seq"]
    assert {k: v for k, v in healed.items() if k != "seq"} == {
        k: v for k, v in published.items() if k != "seq"
    }
    assert tenantry_up.stop() == 0, tenantry_up.log()
