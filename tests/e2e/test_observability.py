"""Each process serves Prometheus metrics and answers NATS micro-service discovery."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import nats

from tests.e2e.conftest import Tenantry


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_metrics_count_commands_queries_and_lag(tenantry_up: Tenantry) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    ok = await tenantry_up.command("create_team", {"name": "risk"})
    refused = await tenantry_up.command("create_team", {"name": "risk"})
    assert ok["ok"]
    assert refused["error"]["code"] == "already_exists"
    nc = await nats.connect(tenantry_up.url)
    reply = await nc.request(
        "tenantry.query.list_environments",
        json.dumps({"min_position": ok["position"]}).encode(),
        timeout=10,
    )
    assert json.loads(reply.data)["ok"]
    await nc.close()
    # The lag gauges are sampled every second: wait for a sample taken after our commands.
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        samples = await asyncio.to_thread(_scrape, tenantry_up.metrics_port)
        if (
            samples.get("tenantry_relay_lag_positions") == 0
            and samples.get("tenantry_projection_lag_positions") == 0
            and samples.get("tenantry_relay_published_events_total", 0) >= 4
        ):
            break
        assert asyncio.get_running_loop().time() < deadline, samples
        await asyncio.sleep(0.2)
    assert samples['tenantry_commands_total{command="create_team",result="ok"}'] == 1
    assert samples['tenantry_commands_total{command="create_team",result="already_exists"}'] == 1
    assert samples['tenantry_queries_total{query="list_environments",result="ok"}'] == 1
    assert samples['tenantry_command_seconds_count{command="create_team"}'] == 2
    assert tenantry_up.stop() == 0


async def test_micro_service_discovery(tenantry_up: Tenantry) -> None:
    tenantry_up.start()
    await tenantry_up.wait_ready()
    await tenantry_up.command("create_team", {"name": "risk"})
    nc = await nats.connect(tenantry_up.url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING", b"", reply=inbox)
        pings = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(2)]
        assert sorted(p["name"] for p in pings) == ["tenantry-command", "tenantry-query"]
        assert all(p["type"] == "io.nats.micro.v1.ping_response" for p in pings)
        info = json.loads((await nc.request("$SRV.INFO.tenantry-command", b"", timeout=5)).data)
        assert info["endpoints"] == [
            {
                "name": "commands",
                "subject": "tenantry.cmd.*",
                "queue_group": "tenantry-command",
                "metadata": {},
            }
        ]
        stats = json.loads((await nc.request("$SRV.STATS.tenantry-command", b"", timeout=5)).data)
        # wait_ready's probe (refused) and our create_team.
        assert stats["endpoints"][0]["num_requests"] >= 2
        assert stats["endpoints"][0]["num_errors"] >= 1
    finally:
        await nc.close()
    assert tenantry_up.stop() == 0
