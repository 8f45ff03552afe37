"""`audit verify` and `audit export` against a stream someone tampered with: a line whose bytes
are not the canonical encoding, a deleted middle message, an altered one, a deleted tail."""

from __future__ import annotations

import asyncio
import json
import sys

import nats
import pytest

from domain.event_log import STREAM_NAME, canonical_json, chain_hash
from tests.integration.test_audit_export import (
    Published,
    _export,
    _failed_at,
    _position,
    _write,
    published,  # noqa: F401 (the fixture)
)


async def _cli_process(*args: str) -> tuple[int, str]:
    """`tenantry ARGS` in a process of its own (the environment the fixture set): its exit
    code and everything it wrote to stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tenantry.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


async def test_a_line_with_a_duplicated_key_is_refused(
    published: Published,  # noqa: F811 (the fixture imported above)
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, lines = await _export(published)
    target = len(lines) // 2
    line = lines[target]
    actor = json.loads(line)["actor"]
    # The forged value first, the genuine one last: a JSON reader keeps the last one, so the
    # parsed fields (and their hash) are the genuine ones.
    forged = b'{"actor":"user:mallory@example.com",' + line[1:]
    assert json.loads(forged)["actor"] == actor
    lines[target] = forged
    code, output = published.run("audit", "verify", str(_write(path, lines)), capsys=capsys)
    assert code == 1, output
    assert _failed_at(output) == _position(line)
    assert "canonical encoding" in output


async def test_a_deleted_middle_message_and_an_altered_one_are_named(
    published: Published,  # noqa: F811 (the fixture imported above)
    capsys: pytest.CaptureFixture[str],
) -> None:
    await published.stop_relay()
    nc = await nats.connect(published.nats_url)
    js = nc.jetstream()
    try:
        info = await js.stream_info(STREAM_NAME)
        middle = (info.state.first_seq + info.state.last_seq) // 2
        deleted = json.loads((await js.get_msg(STREAM_NAME, seq=middle)).data or b"")
        await js.delete_msg(STREAM_NAME, middle)
        # An altered copy of an earlier event, its hash recomputed, published after the rest.
        original = json.loads((await js.get_msg(STREAM_NAME, seq=middle - 5)).data or b"")
        altered = {k: v for k, v in original.items() if k not in ("prev_hash", "hash")}
        altered["actor"] = "user:mallory@example.com"
        chained = {
            **altered,
            "prev_hash": original["prev_hash"],
            "hash": chain_hash(original["prev_hash"], altered),
        }
        ack = await js.publish(f"tenantry.evt.{original['type']}", canonical_json(chained))
    finally:
        await nc.close()
    code, output = await asyncio.to_thread(published.run, "audit", "verify", capsys=capsys)
    assert code == 1, output
    assert f"position {deleted['position']} is missing from the stream" in output
    assert f"seq {ack.seq} (position {original['position']})" in output
    assert "actor" in output
    # An export of it is not signed.
    key = published.folder / "audit.key"
    assert published.run("audit", "keygen", "-o", str(key), capsys=capsys)[0] == 0
    out = published.folder / "signed.jsonl"
    code, output = await asyncio.to_thread(
        published.run, "audit", "export", "-o", str(out), "--sign-key", str(key), capsys=capsys
    )
    assert code == 1
    assert "BROKEN" in output and "Not signed" in output
    assert not out.exists()


async def test_with_the_last_three_messages_deleted_verify_and_export_give_a_verdict(
    published: Published,  # noqa: F811 (the fixture imported above)
    capsys: pytest.CaptureFixture[str],
) -> None:
    await published.stop_relay()
    nc = await nats.connect(published.nats_url)
    js = nc.jetstream()
    try:
        last_seq = (await js.stream_info(STREAM_NAME)).state.last_seq
        gone = []
        for seq in range(last_seq - 2, last_seq + 1):
            gone.append(json.loads((await js.get_msg(STREAM_NAME, seq=seq)).data or b""))
            await js.delete_msg(STREAM_NAME, seq)
    finally:
        await nc.close()
    # As a user runs them: their own processes, everything they print.
    code, output = await _cli_process("audit", "verify")
    assert code == 1, output
    assert f"position {gone[0]['position']} to {gone[-1]['position']} are missing" in output
    assert "Traceback" not in output and "Task " not in output, output
    out = published.folder / "export.jsonl"
    code, output = await _cli_process("audit", "export", "-o", str(out))
    assert code == 0, output
    assert "Traceback" not in output and "Task " not in output, output
    assert _position(out.read_bytes().splitlines()[-1]) < gone[0]["position"]
