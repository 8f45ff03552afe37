"""The CLI at its edges: one way to say "can't reach Tenantry", and no traceback where a verb
meets a closed pipe, a bus that is not there or a bounded export."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from domain.service import TenancyService
from tenantry.server.nats_server import NatsServer, free_port
from tests.integration.test_audit_tail import published  # noqa: F401 (a fixture)

_HINT = "is `tenantry up` running? (or set TENANTRY_NATS_URL)"


def _tenantry(
    *args: str, cwd: Path, env: dict[str, str] | None = None, shell: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    command = ["bash", "-o", "pipefail", "-c", shell] if shell else ["tenantry", *args]
    return subprocess.run(
        command,
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("verb", "code"),
    [
        (["get", "clusters"], 2),
        (["check-access", "user:ana@example.com", "fraud-models"], 2),
        (["apply", "-f", "tenancy.yaml"], 2),
        (["access-report", "--as-of", "now"], 2),
        (["audit", "tail"], 2),
        (["audit", "export"], 2),
        (["audit", "prove", "1"], 2),
        (["audit", "consistency", "1"], 2),
        (["audit", "checkpoints"], 2),
        (["health"], 1),  # a container health check: 1 is Docker's "unhealthy"
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_every_verb_says_in_one_line_that_it_cannot_reach_tenantry(
    tmp_path: Path, verb: list[str], code: int
) -> None:
    # No TENANTRY_NATS_URL, no ./.tenantry/nats.url: the client tries where `tenantry up`
    # listens (TENANTRY_NATS_PORT), never a stranger on 4222; nothing listens there.
    (tmp_path / "tenancy.yaml").write_text("type: team\nname: risk\n")
    port = free_port()
    done = _tenantry(*verb, cwd=tmp_path, env={"TENANTRY_NATS_PORT": str(port)})
    assert done.returncode == code, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"nats://127.0.0.1:{port}" in lines[0], lines
    assert _HINT in lines[0], lines


def test_a_closed_pipe_ends_audit_tail_quietly(
    nats_server: NatsServer,
    published: TenancyService,  # noqa: F811
    tmp_path: Path,
) -> None:
    # `true` has exited before the first line is written: every write meets a closed pipe.
    done = _tenantry(
        cwd=tmp_path,
        env={"TENANTRY_NATS_URL": nats_server.url},
        shell="tenantry audit tail -o json | true",
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 0, done


async def test_a_bounded_export_ends_without_a_traceback(
    nats_server: NatsServer,
    published: TenancyService,  # noqa: F811
    tmp_path: Path,
) -> None:
    done = await asyncio.to_thread(
        _tenantry,
        "audit",
        "export",
        "--until",
        "3",
        cwd=tmp_path,
        env={"TENANTRY_NATS_URL": nats_server.url},
    )
    assert done.returncode == 0, done
    assert "Traceback" not in done.stderr, done.stderr
    assert "exported 2 events, positions 1-2" in done.stderr, done.stderr


async def test_a_command_nobody_answered_was_not_applied_and_the_client_says_so(
    nats_server: NatsServer,
) -> None:
    from tenantry import Client
    from tenantry.sdk.errors import Unavailable

    # A bus with no command service: every attempt finds no responder at all.
    async with await Client.connect(nats_server.url, retries=1, backoff=0.01) as client:
        with pytest.raises(Unavailable) as refused:
            await client.create_team(name="risk")
    message = refused.value.message
    assert "the command was not applied" in message, message
    assert "may or may not" not in message, message
    assert refused.value.details["applied"] is False


async def test_the_bus_going_away_under_audit_tail_follow_is_one_line(tmp_path: Path) -> None:
    import nats

    from domain.event_log import STREAM_NAME, SUBJECT_PREFIX

    server = NatsServer(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name=STREAM_NAME, subjects=[SUBJECT_PREFIX + ">"])
        await js.publish(SUBJECT_PREFIX + "team.created", b'{"position": 1}')
        await nc.close()
        base = {k: v for k, v in os.environ.items() if not k.startswith("TENANTRY_")}
        following = subprocess.Popen(  # noqa: ASYNC220 (started, not waited on)
            [sys.executable, "-m", "tenantry.cli", "audit", "tail", "--follow", "-o", "json"],
            env={**base, "TENANTRY_NATS_URL": server.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert following.stdout is not None
        # It follows once it has printed what the stream holds.
        first = await asyncio.to_thread(following.stdout.readline)
        assert first.strip() == '{"position": 1}'
    finally:
        server.stop()
    _, err = await asyncio.to_thread(following.communicate, timeout=60)
    assert following.returncode == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and server.url in lines[0] and "lost" in lines[0], err
