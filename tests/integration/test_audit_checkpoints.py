"""Signed checkpoints on TENANTRY_CHECKPOINTS, Merkle proofs over the bus, and what an auditor
does with them offline, against a real nats-server fed by the relay: checkpoints sign the log's
RFC 9162 root (checked against the reference in tests/unit/test_merkle.py), a grant is proven
and a tampered proof refused, two checkpoints are proven consistent, the newest 20 events cut
off an export are caught against a checkpoint published earlier, and the verifier an export
ships runs in a fresh venv with nothing but `cryptography`."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import uuid
import venv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from domain.base import CommandContext
from domain.commands import COMMANDS
from domain.service import TenancyService
from projections.store import ViewStore
from tenantry.audit.checkpoint import (
    generate_key_pair,
    load_private_key,
    load_public_key,
    signature_problem,
)
from tenantry.audit.checkpoints import Cadence, Checkpointer
from tenantry.log.relay import Relay
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import QueryEndpoint
from tenantry.server.store import event_store_env
from tenantry.settings import Settings
from tests.integration.cli import cli
from tests.integration.provisioning import wait_until
from tests.integration.streams import expected_bodies, wait_for_stream
from tests.integration.world import WORLD
from tests.unit.test_merkle import ref_mth

EVERY = 10  # a checkpoint every 10 events in these tests (1,000 in production)


@dataclass
class Logged:
    service: TenancyService
    checkpointer: Checkpointer
    folder: Path
    public_key: Path

    def bodies(self) -> list[dict[str, Any]]:
        return expected_bodies(self.service.recorder)


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The CLI in this process, in a thread (its handlers run their own event loop)."""
    code = await asyncio.to_thread(cli, list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _write_events(service: TenancyService, count: int) -> None:
    for i in range(count):
        body = {"name": "dev", "color": f"#0000{i % 256:02x}"}
        context = CommandContext("user:ana@example.com", str(uuid.uuid4()), "checkpoints")
        service.handle(COMMANDS["update_environment"].model_validate(body), context)


@pytest.fixture
async def logged(
    nats_server: NatsServer, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Logged]:
    service = TenancyService(event_store_env(sqlite_settings))
    service.seed_default_environments()
    for name, body, actor in WORLD:
        service.handle(
            COMMANDS[name].model_validate(body),
            CommandContext(actor, str(uuid.uuid4()), "checkpoints"),
        )
    folder = sqlite_settings.state_dir.parent
    public_key = generate_key_pair(folder / "signing.key")
    nc = await nats.connect(nats_server.url)
    stop = asyncio.Event()
    relay = Relay(service.recorder, nc, poll_interval=0.02)
    checkpointer = Checkpointer(
        service.recorder,
        nc,
        load_private_key(folder / "signing.key"),
        cadence=Cadence(every_events=EVERY, every_seconds=3600),
        poll_interval=0.02,
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(checkpointer.run(stop))]
    for batch in range(5):  # the log grows while the role runs: a checkpoint after each batch
        if batch:
            await asyncio.to_thread(_write_events, service, EVERY + 2)
        await wait_for_stream(nc.jetstream(), service.recorder)
        total = len(expected_bodies(service.recorder))
        await wait_until(lambda total=total: checkpointer.newest_size > total - EVERY, 30)
    monkeypatch.setenv("TENANTRY_NATS_URL", nats_server.url)
    monkeypatch.setenv("TENANTRY_STATE_DIR", str(sqlite_settings.state_dir))
    monkeypatch.setenv("TENANTRY_LOG_LEVEL", "warning")
    yield Logged(service, checkpointer, folder, public_key)
    stop.set()
    await asyncio.gather(*tasks)
    await nc.close()
    service.close()


async def _checkpoints(logged: Logged, capsys: pytest.CaptureFixture[str], *args: str) -> Path:
    code, output = await _cli(capsys, "audit", "checkpoints", *args)
    assert code == 0, output
    path = logged.folder / f"checkpoints-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text(output)
    return path


def _leaves(bodies: list[dict[str, Any]]) -> list[bytes]:
    return [bytes.fromhex(b["hash"]) for b in bodies]


async def test_checkpoints_sign_the_rfc_9162_root_of_the_log_on_their_own_stream(
    logged: Logged, capsys: pytest.CaptureFixture[str]
) -> None:
    path = await _checkpoints(logged, capsys)
    published = [json.loads(line) for line in path.read_text().splitlines()]
    bodies = logged.bodies()
    assert len(published) >= 5
    key = load_public_key(logged.public_key)
    sizes = []
    for envelope in published:
        assert signature_problem(envelope, key) is None
        said = envelope["checkpoint"]
        size = said["tree_size"]
        sizes.append(size)
        assert said["log"] == "TENANTRY_EVENTS"
        assert said["root_hash"] == ref_mth(_leaves(bodies[:size])).hex()
        assert said["head_hash"] == bodies[size - 1]["hash"]
        assert said["last_position"] == bodies[size - 1]["position"]
    assert sizes == sorted(set(sizes))
    assert all(b - a >= EVERY for a, b in itertools.pairwise(sizes))
    altered = {**published[-1], "checkpoint": {**published[-1]["checkpoint"], "tree_size": 1}}
    assert "not valid" in str(signature_problem(altered, key))


async def test_one_grant_is_proven_offline_and_a_tampered_proof_is_refused(
    logged: Logged, capsys: pytest.CaptureFixture[str]
) -> None:
    grant = next(b for b in logged.bodies() if b["type"] == "ml_repo.access_granted")
    proof_path = logged.folder / "proof.json"
    code, output = await _cli(
        capsys, "audit", "prove", str(grant["position"]), "-o", str(proof_path)
    )
    assert code == 0, output
    proof = json.loads(proof_path.read_text())
    assert proof["event"] == grant
    assert proof["checkpoint"]["checkpoint"]["tree_size"] == proof["tree_size"]
    code, output = await _cli(
        capsys, "audit", "verify", str(proof_path), "--public-key", str(logged.public_key)
    )
    assert code == 0, output
    assert f"OK: the event at position {grant['position']}" in output

    for name, tampered in {
        "actor": {**proof, "event": {**grant, "actor": "user:mallory@example.com"}},
        "path": {**proof, "audit_path": [proof["audit_path"][0][::-1], *proof["audit_path"][1:]]},
        "root": {**proof, "root_hash": proof["checkpoint"]["checkpoint"]["head_hash"]},
    }.items():
        bad = logged.folder / f"proof-{name}.json"
        bad.write_text(json.dumps(tampered))
        code, output = await _cli(
            capsys, "audit", "verify", str(bad), "--public-key", str(logged.public_key)
        )
        assert code == 1, (name, output)
        assert "FAILED" in output, (name, output)


async def test_two_checkpoints_are_proven_consistent(
    logged: Logged, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints = await _checkpoints(logged, capsys)
    sizes = [json.loads(line)["checkpoint"]["tree_size"] for line in checkpoints.open()]
    old, new = sizes[0], sizes[-1]
    proof_path = logged.folder / "consistency.json"
    code, output = await _cli(
        capsys, "audit", "consistency", str(old), str(new), "-o", str(proof_path)
    )
    assert code == 0, output
    args = ["--checkpoint", str(checkpoints), "--public-key", str(logged.public_key)]
    code, output = await _cli(capsys, "audit", "verify", str(proof_path), *args)
    assert code == 0, output
    assert f"OK: the log of {old} events is a prefix of the log of {new} events" in output
    key = ["--public-key", str(logged.public_key)]
    code, output = await _cli(capsys, "audit", "verify", str(checkpoints), *key)
    assert code == 0, output
    assert f"OK: {len(sizes)} checkpoints (signed, signatures verified)" in output
    forged_checkpoints = logged.folder / "checkpoints-forged.jsonl"
    forged_checkpoints.write_text(
        checkpoints.read_text().replace('"tree_size":', '"tree_size":1', 1)
    )
    code, output = await _cli(capsys, "audit", "verify", str(forged_checkpoints), *key)
    assert code == 1, output
    assert "signature is not valid" in output
    proof = json.loads(proof_path.read_text())
    forged = logged.folder / "consistency-forged.json"
    forged.write_text(
        json.dumps({**proof, "proof": [proof["proof"][0][::-1], *proof["proof"][1:]]})
    )
    code, output = await _cli(capsys, "audit", "verify", str(forged), *args)
    assert code == 1
    assert "FAILED: the proof does not show" in output


async def test_the_newest_20_events_cut_off_an_export_are_caught_by_an_earlier_checkpoint(
    logged: Logged, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = await _checkpoints(logged, capsys, "--last")
    await asyncio.to_thread(_write_events, logged.service, 5)  # the log goes on after it
    total = len(logged.bodies())
    await wait_until(lambda: logged.checkpointer.log_tree.size >= total, 30)
    export = logged.folder / "export.jsonl"
    code, output = await _cli(capsys, "audit", "export", "-o", str(export))
    assert code == 0, output
    args = ["--checkpoint", str(earlier), "--public-key", str(logged.public_key)]
    code, output = await _cli(capsys, "audit", "verify", str(export), *args)
    assert code == 0, output
    assert "OK: the export holds every event of the newest checkpoint" in output

    lines = export.read_bytes().splitlines(keepends=True)
    cut = logged.folder / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:-20]))
    code, output = await _cli(capsys, "audit", "verify", str(cut))
    assert code == 0, output  # the chain alone can't tell
    code, output = await _cli(capsys, "audit", "verify", str(cut), *args)
    assert code == 1, output
    said = json.loads(earlier.read_text())["checkpoint"]
    assert f"FAILED: truncated: the checkpoint signed at {said['created_at']}" in output
    assert f"{said['tree_size'] - (len(lines) - 20)} events missing at its end" in output

    script = export.with_name("verify_tenantry_export.py")
    shipped = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), str(cut), *args],
        capture_output=True,
        text=True,
    )
    assert shipped.returncode == 1, shipped.stdout
    assert "FAILED: truncated" in shipped.stdout


# --- the shipped verifier, alone -----------------------------------------------------------


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding nothing but `cryptography` (and its own dependencies), not even
    pip: this process's pip installs into it (from pip's cache or index)."""
    folder = tmp_path_factory.mktemp("bare-venv")
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--disable-pip-version-check",
            "cryptography",
        ],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [str(python), "-I", "-c", "import sys, os; print(sorted(os.listdir(sys.path[-1])))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "tenantry" not in listed and "orjson" not in listed, listed
    return python


async def test_the_verifier_an_export_ships_runs_with_only_cryptography(
    logged: Logged, capsys: pytest.CaptureFixture[str], bare_python: Path
) -> None:
    export = logged.folder / "signed.jsonl"
    key = str(logged.folder / "signing.key")
    code, output = await _cli(capsys, "audit", "export", "-o", str(export), "--sign-key", key)
    assert code == 0, output
    script, public = export.with_name("verify_tenantry_export.py"), Path(f"{export}.pub")
    assert public.read_bytes() == logged.public_key.read_bytes()
    checkpoints = await _checkpoints(logged, capsys)

    def shipped(path: Path) -> subprocess.CompletedProcess[str]:
        args = [str(path), "--public-key", str(public), "--checkpoint", str(checkpoints)]
        return subprocess.run(
            [str(bare_python), "-I", str(script), *args],
            capture_output=True,
            text=True,
            cwd=logged.folder,
        )

    ran = shipped(export)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = export.read_bytes().splitlines(keepends=True)
    root = ref_mth(_leaves(logged.bodies()[: len(lines) - 1])).hex()
    assert f"Merkle root of all {len(lines) - 1} events: {root}" in ran.stdout
    signed = json.loads(lines[-1])["checkpoint"]  # the export's own checkpoint signs the root
    assert (signed["tree_size"], signed["root_hash"]) == (len(lines) - 1, root)
    assert "signature verified" in ran.stdout
    assert ran.stdout.rstrip().endswith("VERIFIED")

    middle = len(lines) // 2
    body = json.loads(lines[middle])
    for name, changed in {
        "a field": json.dumps({**body, "actor": "user:mallory@example.com"}, separators=(",", ":")),
        "a duplicated key": lines[middle].decode().replace('{"actor":', '{"actor":"x","actor":', 1),
    }.items():
        bad = logged.folder / f"bad-{len(name)}.jsonl"
        bad.write_bytes(
            b"".join([*lines[:middle], changed.rstrip("\n").encode() + b"\n", *lines[middle + 1 :]])
        )
        ran = shipped(bad)
        assert ran.returncode == 1, (name, ran.stdout)
        assert f"FAILED: line {middle + 1}" in ran.stdout, (name, ran.stdout)
    resigned = json.loads(lines[-1])
    resigned["checkpoint"]["count"] -= 1
    bad = logged.folder / "bad-signature.jsonl"
    bad.write_bytes(b"".join([*lines[:-1], json.dumps(resigned).encode() + b"\n"]))
    ran = shipped(bad)
    assert ran.returncode == 1
    assert "the signature is not valid" in ran.stdout


async def test_the_query_service_leaves_the_proof_queries_to_the_checkpoints_role(
    logged: Logged, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Both subscribe to the proof subjects (the query service to `tenantry.query.*`): every
    answer must be the proof, never the query service's `unknown query`."""
    store = ViewStore.from_url(f"sqlite:///{tmp_path / 'views.sqlite'}")
    store.create_tables()
    service_nc, client = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    endpoint = QueryEndpoint(service_nc, store, lambda: 0)
    await endpoint.start()
    answers = []
    for _ in range(30):
        reply = await client.request(
            "tenantry.query.audit_consistency_proof", b'{"from_size": 1}', timeout=5
        )
        answers.append(json.loads(reply.data))
    other = await client.request("tenantry.query.list_environments", b"{}", timeout=5)
    await endpoint.stop()
    await service_nc.close()
    await client.close()
    store.close()
    assert all(a["ok"] and a["data"]["kind"] == "consistency_proof" for a in answers), answers
    assert json.loads(other.data)["ok"]  # the views still answer their own


async def test_a_few_events_are_signed_after_the_interval_and_an_idle_log_gets_none(
    nats_server: NatsServer, sqlite_settings: Settings
) -> None:
    service = TenancyService(event_store_env(sqlite_settings))
    service.seed_default_environments()  # 3 events: far fewer than every_events
    folder = sqlite_settings.state_dir.parent
    generate_key_pair(folder / "signing.key")
    nc = await nats.connect(nats_server.url)
    stop = asyncio.Event()
    relay = Relay(service.recorder, nc, poll_interval=0.02)
    checkpointer = Checkpointer(
        service.recorder,
        nc,
        load_private_key(folder / "signing.key"),
        cadence=Cadence(every_events=1000, every_seconds=0.5),
        poll_interval=0.02,
    )
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(checkpointer.run(stop))]
    await wait_until(lambda: checkpointer.newest_size == 3, 30)
    published_once = dict(checkpointer.published)
    # Absence can only be watched for: three intervals pass with nothing new, nothing signed.
    await asyncio.sleep(1.5)
    idle = dict(checkpointer.published)
    await asyncio.to_thread(_write_events, service, 2)
    await wait_until(lambda: checkpointer.newest_size == 5, 30)
    stop.set()
    await asyncio.gather(*tasks)
    info = await nc.jetstream().stream_info("TENANTRY_CHECKPOINTS")
    await nc.close()
    service.close()
    assert max(published_once) == 3  # signed without waiting for 1,000 events
    assert idle == published_once
    # Signed again once the log grew (at 5; at 4 too if the relay's batches straddled a tick).
    after_idle = sorted(set(checkpointer.published) - set(published_once))
    assert after_idle[-1] == 5 and after_idle[0] > 3, after_idle
    assert info.state.messages == len(checkpointer.published)


async def test_a_store_that_is_not_what_was_signed_is_said_loudly_and_not_signed_over(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A checkpoints role started over another history than the one signed and on the stream
    (a store restored from an old backup, or rewritten) logs it as an error and signs nothing:
    it neither adopts the published checkpoint nor signs the stream's events as its own."""
    from structlog.testing import capture_logs

    signed_store = TenancyService(event_store_env(Settings(state_dir=tmp_path / "signed")))
    signed_store.seed_default_environments()
    _write_events(signed_store, 4)
    other_store = TenancyService(event_store_env(Settings(state_dir=tmp_path / "other")))
    other_store.seed_default_environments()
    _write_events(other_store, 6)  # another history: its own times, so other hashes throughout
    generate_key_pair(tmp_path / "signing.key")
    key = load_private_key(tmp_path / "signing.key")
    nc = await nats.connect(nats_server.url)
    stop = asyncio.Event()
    relay = Relay(signed_store.recorder, nc, poll_interval=0.02)
    first = Checkpointer(signed_store.recorder, nc, key, cadence=Cadence(1, 3600))
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(first.run(stop))]
    await wait_until(lambda: first.newest_size == 7, 30)
    stop.set()
    await asyncio.gather(*tasks)

    stop = asyncio.Event()
    second = Checkpointer(other_store.recorder, nc, key, cadence=Cadence(1, 3600))
    with capture_logs() as logs:
        task = asyncio.create_task(second.run(stop))
        await wait_until(lambda: second.log_tree.size == 9, 30)
        await wait_until(lambda: any(e["event"] == "checkpoint.stream_disagrees" for e in logs), 30)
        for _ in range(3):  # as the role's later looks would
            assert await second.stream_size() == 0
        stop.set()
        await task
    info = await nc.jetstream().stream_info("TENANTRY_CHECKPOINTS")
    await nc.close()
    signed_store.close()
    other_store.close()
    events = [e["event"] for e in logs]
    assert "checkpoint.store_disagrees" in events, events
    assert events.count("checkpoint.stream_disagrees") == 1, events  # said once, not every poll
    assert second.newest_size == 0
    assert second.published == {}
    assert info.state.messages == len(first.published)
