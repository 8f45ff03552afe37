"""`tenantry.Client`: the async Python client of the bus, one typed method per command and query.

Every command is validated here by the same pydantic model the command service uses, then sent
with a command id of its own; a request that times out or finds no responder is sent again, a
bounded number of times with backoff, under the SAME command id, so a retry can never apply
twice (the service answers a known id with its first answer, `replayed: true`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel, TypeAdapter, ValidationError

from domain.names import OptimizeFor, Provider, Role, StorageProvider, is_valid_actor
from projections.query_params import PARAMS, Paged
from tenantry.inboxes import inbox_options
from tenantry.sdk.errors import (
    InternalError,
    InvalidRequest,
    QueryTimeout,
    TenantryError,
    Unavailable,
    error_from_wire,
)
from tenantry.sdk.results import (
    Access,
    AccessChange,
    AccessCheck,
    AccessInForce,
    ApplyReply,
    AuditPage,
    Cluster,
    CommandReply,
    Environment,
    EnvironmentTags,
    Grant,
    MlRepo,
    QueryAnswer,
    StorageIntegration,
    Team,
    Workspace,
)
from tenantry.server import wire
from tenantry.settings import Settings

if TYPE_CHECKING:
    from domain.commands import Command

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.2
_MAX_BACKOFF = 2.0
# The longest `min_position_timeout` a query service accepts.
_MAX_SERVER_WAIT = 30.0
# Rows per page of a list query: well under the bus's 1 MiB for any row the views hold.
PAGE_SIZE = 1000

T = TypeVar("T")


class CommandOptions(TypedDict, total=False):
    """What every command method accepts besides the command's fields.

    `command_id`: the idempotency key (generated when absent); pass your own to make a
    command safe to send again from another process. `correlation_id`: ties the events of
    several commands together in the audit log."""

    command_id: str
    correlation_id: str


class ReadOptions(TypedDict, total=False):
    """What every query method accepts: wait until the views have applied `min_position`
    (by default, the last position this client wrote), for at most `min_position_timeout`
    seconds (5 by default)."""

    min_position: int
    min_position_timeout: float


class Client:
    """An async client of a Tenantry bus. Make one with `await Client.connect()`; close it with
    `await client.close()` or use it as `async with await Client.connect() as client:`."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        actor: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        read_your_writes: bool = True,
        owns_connection: bool = False,
    ) -> None:
        if actor is not None and not is_valid_actor(actor):
            raise InvalidRequest(
                "an actor is 'user:<email>' or 'service:<name>'", {"actor": actor[:300]}
            )
        self._nc = nc
        self.actor = actor
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.read_your_writes = read_your_writes
        self._owns_connection = owns_connection
        self.position = 0
        """The highest position this client has written (or waited for)."""

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        actor: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (per request, not for the call)
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        read_your_writes: bool = True,
        **nats_options: Any,
    ) -> Client:
        """Connect to the bus at `url` (several, comma-separated, for a cluster).

        Without `url`: TENANTRY_NATS_URL, else the `nats.url` a local `tenantry up` wrote in
        TENANTRY_STATE_DIR, else where `tenantry up` listens (nats://127.0.0.1:4223), as the
        CLI does. Without `actor`:
        TENANTRY_ACTOR, else none (the service then acts as `user:anonymous@localhost`).
        `timeout` bounds each request; `retries` is how many times a request that timed out
        or found no responder is sent again."""
        settings = Settings.from_env()
        url = url or settings.client_nats_url()
        actor = actor if actor is not None else settings.actor
        if actor is not None and not is_valid_actor(actor):
            raise InvalidRequest(
                "an actor is 'user:<email>' or 'service:<name>'", {"actor": actor[:300]}
            )
        options: dict[str, Any] = {
            "name": "tenantry-client",
            "connect_timeout": 2,
            "max_reconnect_attempts": 5,
            "reconnect_time_wait": 0.5,
            # nats-py's default prints a traceback for every failed attempt; the outcome is
            # what matters, and it is raised.
            "error_cb": _quiet,
            # Replies under this user's own inboxes, which NATS lets no other user read.
            **inbox_options(url, nats_options.get("user")),
            **nats_options,
        }
        try:
            nc = await nats.connect(url.split(","), **options)
        except Exception as exc:
            raise Unavailable(f"cannot reach the bus at {url}: {exc}", {"url": url}) from exc
        return cls(
            nc,
            actor=actor,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            read_your_writes=read_your_writes,
            owns_connection=True,
        )

    async def close(self) -> None:
        """Close the connection, if this client opened it."""
        if self._owns_connection and not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the generic calls ----------------------------------------------------------------

    async def command(
        self, name: str, body: Mapping[str, Any], **options: Unpack[CommandOptions]
    ) -> CommandReply:
        """Send the command `name` with `body` (validated here first)."""
        from domain.commands import COMMANDS

        model = COMMANDS.get(name)
        if model is None:
            raise InvalidRequest(f"unknown command {name!r}", {"commands": sorted(COMMANDS)})
        try:
            command = model.model_validate_json(_json(body))
        except ValidationError as exc:
            raise InvalidRequest(
                f"the {name} command is not valid", {"errors": wire.validation_errors(exc)}
            ) from exc
        return await self.send(command, **options)

    async def send(self, command: Command, **options: Unpack[CommandOptions]) -> CommandReply:
        """Send a command model (already valid: it was built)."""
        command_id = options.get("command_id") or str(uuid.uuid4())
        headers = self._command_headers(command_id, options.get("correlation_id"))
        payload = command.model_dump_json(exclude_none=True).encode()
        data = await self._request(
            f"tenantry.cmd.{command.wire_name}", payload, headers, self.timeout, command_id
        )
        reply = CommandReply.model_validate(data)
        self.position = max(self.position, reply.position)
        return reply

    async def apply(
        self,
        commands: Sequence[Command],
        *,
        dry_run: bool = False,
        **options: Unpack[CommandOptions],
    ) -> ApplyReply:
        """Send `commands` as one apply: decided in order (each sees what those before it did)
        and saved in one transaction, or none is and the first refusal is raised, its
        `details` naming the command's `index` and name. With `dry_run`, the service decides
        the same and writes nothing. `command_id` is the apply id (same id, same commands:
        the first answer again). A body over the bus's 64 KiB is refused here: split the
        commands into several applies (each all or nothing)."""
        apply_id = options.get("command_id") or str(uuid.uuid4())
        try:
            payload = wire.apply_body(commands, dry_run)
        except wire.WireError as exc:
            raise InvalidRequest(exc.message, exc.details) from exc
        headers = self._command_headers(apply_id, options.get("correlation_id"))
        data = await self._request(
            f"tenantry.cmd.{wire.APPLY}", payload, headers, self.timeout, apply_id
        )
        reply = ApplyReply.model_validate(data)
        if reply.position is not None:
            self.position = max(self.position, reply.position)
        return reply

    async def query(self, name: str, /, **params: Any) -> QueryAnswer:
        """Ask the query `name` (parameters validated here when this client knows the query);
        `min_position` defaults to the last position this client wrote."""
        params = {k: v for k, v in params.items() if v is not None}
        if self.read_your_writes and "min_position" not in params and self.position:
            params["min_position"] = self.position
        body = _json(params)
        model = PARAMS.get(name)
        if model is not None:
            try:
                model.model_validate_json(body)
            except ValidationError as exc:
                raise InvalidRequest(
                    f"the {name} query is not valid", {"errors": wire.validation_errors(exc)}
                ) from exc
        wait = float(params.get("min_position_timeout", 5.0)) if "min_position" in params else 0
        within = self.timeout + wait
        # Past this the query service drops the request unanswered: nobody would read it.
        headers = {wire.TIMEOUT_HEADER: f"{within:g}"}
        data = await self._request(f"tenantry.query.{name}", body.encode(), headers, within, None)
        return QueryAnswer.model_validate(data)

    def _command_headers(self, command_id: str, correlation_id: str | None) -> dict[str, str]:
        headers = {wire.COMMAND_ID_HEADER: command_id}
        if correlation_id is not None:
            headers[wire.CORRELATION_ID_HEADER] = correlation_id
        for header, value in headers.items():
            if not wire.is_valid_id(value):
                raise InvalidRequest(
                    f"{header} must be 1-128 letters, digits or ._:@/+=-", {"header": header}
                )
        if self.actor is not None:
            headers[wire.ACTOR_HEADER] = self.actor
        return headers

    async def wait_for(self, position: int, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """Until the views have applied `position` (a command reply's `position`); returns the
        position they reached. Raises `QueryTimeout` past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                answer = await self.query(
                    "list_environments",
                    limit=1,  # the answer's position is what is wanted, not the list
                    min_position=position,
                    min_position_timeout=min(max(remaining, 0.05), _MAX_SERVER_WAIT),
                )
            except QueryTimeout:
                if time.monotonic() >= deadline:
                    raise
                continue
            self.position = max(self.position, position)
            return answer.position

    async def _request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        within: float,
        command_id: str | None,
    ) -> dict[str, Any]:
        attempt = 0
        timed_out = False  # once a request timed out, a service may have taken it
        while True:
            try:
                msg = await self._nc.request(subject, payload, timeout=within, headers=headers)
                break
            except (NatsTimeout, NoRespondersError) as exc:
                attempt += 1
                timed_out = timed_out or isinstance(exc, NatsTimeout)
                if attempt > self.retries:
                    why = "no answer" if isinstance(exc, NatsTimeout) else "no responder"
                    details: dict[str, Any] = {"subject": subject, "attempts": attempt}
                    message = f"{why} on {subject} after {attempt} attempts"
                    if command_id is not None:
                        details["command_id"] = command_id
                        details["applied"] = None if timed_out else False
                        if timed_out:
                            message += (
                                f"; the command may or may not have been applied: send it "
                                f"again with command_id={command_id!r} to find out"
                            )
                        else:
                            # The server said no service listens: nobody took the request.
                            message += "; nobody received it: the command was not applied"
                    raise Unavailable(message, details) from exc
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
        try:
            answer = json.loads(msg.data)
        except ValueError as exc:
            raise InternalError(f"unreadable reply on {subject}", {"subject": subject}) from exc
        if not isinstance(answer, dict):
            raise InternalError(f"unreadable reply on {subject}", {"subject": subject})
        if not answer.get("ok"):
            raise error_from_wire(answer.get("error") or {})
        return answer

    async def _data(self, adapter: TypeAdapter[T], query: str, /, **params: Any) -> T:
        if not issubclass(PARAMS[query], Paged):
            answer = await self.query(query, **params)
            return adapter.validate_python(answer.data)
        return adapter.validate_python(await self.rows(query, **params))

    async def rows(self, query: str, /, **params: Any) -> list[Any]:
        """Every row of the list query `query`, as the wire has them: asked page by page, so
        that a list of any size comes through the bus."""
        rows: list[Any] = []
        after = None
        limit = PAGE_SIZE
        while True:
            try:
                answer = await self.query(query, **params, limit=limit, after=after)
            except InvalidRequest as refused:
                limit = _smaller_page(refused, limit)
                continue
            rows += answer.data
            if answer.next is None:
                return rows
            after = answer.next

    # --- commands: environments -----------------------------------------------------------

    async def create_environment(
        self,
        *,
        name: str,
        is_production: bool = False,
        optimize_for: OptimizeFor = "cost",
        color: str | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "create_environment",
            {
                "name": name,
                "is_production": is_production,
                "optimize_for": optimize_for,
                "color": color,
            },
            **options,
        )

    async def update_environment(
        self,
        *,
        name: str,
        is_production: bool | None = None,
        optimize_for: OptimizeFor | None = None,
        color: str | None = None,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "update_environment",
            {
                "name": name,
                "is_production": is_production,
                "optimize_for": optimize_for,
                "color": color,
                "expected_version": expected_version,
            },
            **options,
        )

    async def delete_environment(
        self, *, name: str, expected_version: int | None = None, **options: Unpack[CommandOptions]
    ) -> CommandReply:
        return await self.command(
            "delete_environment", {"name": name, "expected_version": expected_version}, **options
        )

    # --- commands: clusters ---------------------------------------------------------------

    async def register_cluster(
        self,
        *,
        name: str,
        region: str,
        provider: Provider,
        environments: Sequence[str],
        labels: Mapping[str, str] | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "register_cluster",
            {
                "name": name,
                "region": region,
                "provider": provider,
                "environments": list(environments),
                "labels": labels,
            },
            **options,
        )

    async def add_cluster_environment(
        self,
        *,
        cluster: str,
        environment: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "add_cluster_environment",
            {"cluster": cluster, "environment": environment, "expected_version": expected_version},
            **options,
        )

    async def remove_cluster_environment(
        self,
        *,
        cluster: str,
        environment: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "remove_cluster_environment",
            {"cluster": cluster, "environment": environment, "expected_version": expected_version},
            **options,
        )

    async def deregister_cluster(
        self,
        *,
        cluster: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "deregister_cluster",
            {"cluster": cluster, "expected_version": expected_version},
            **options,
        )

    # --- commands: workspaces and applications --------------------------------------------

    async def create_workspace(
        self,
        *,
        cluster: str,
        name: str,
        environment: str,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        ml_repo_access: Sequence[Mapping[str, str] | BaseModel] | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        """`ml_repo_access`: `[{"repo": …, "role": "viewer" | "editor"}]`, granted in the
        same transaction as the creation."""
        return await self.command(
            "create_workspace",
            {
                "cluster": cluster,
                "name": name,
                "environment": environment,
                "labels": labels,
                "annotations": annotations,
                "ml_repo_access": None if ml_repo_access is None else list(ml_repo_access),
            },
            **options,
        )

    async def set_workspace_environment(
        self,
        *,
        workspace: str,
        environment: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "set_workspace_environment",
            {
                "workspace": workspace,
                "environment": environment,
                "expected_version": expected_version,
            },
            **options,
        )

    async def update_workspace(
        self,
        *,
        workspace: str,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        """`labels` / `annotations` replace the whole map; None leaves it as it is."""
        return await self.command(
            "update_workspace",
            {
                "workspace": workspace,
                "labels": labels,
                "annotations": annotations,
                "expected_version": expected_version,
            },
            **options,
        )

    async def delete_workspace(
        self,
        *,
        workspace: str,
        force: bool = False,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "delete_workspace",
            {"workspace": workspace, "force": force, "expected_version": expected_version},
            **options,
        )

    async def register_application(
        self,
        *,
        workspace: str,
        name: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "register_application",
            {"workspace": workspace, "name": name, "expected_version": expected_version},
            **options,
        )

    async def remove_application(
        self,
        *,
        workspace: str,
        name: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "remove_application",
            {"workspace": workspace, "name": name, "expected_version": expected_version},
            **options,
        )

    # --- commands: storage integrations and ML repos --------------------------------------

    async def register_storage_integration(
        self,
        *,
        name: str,
        provider: StorageProvider,
        storage_root: str,
        region: str | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "register_storage_integration",
            {"name": name, "provider": provider, "storage_root": storage_root, "region": region},
            **options,
        )

    async def remove_storage_integration(
        self, *, name: str, expected_version: int | None = None, **options: Unpack[CommandOptions]
    ) -> CommandReply:
        return await self.command(
            "remove_storage_integration",
            {"name": name, "expected_version": expected_version},
            **options,
        )

    async def create_ml_repo(
        self,
        *,
        name: str,
        storage_integration: str,
        description: str = "",
        adopt_storage: bool = False,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        """The actor becomes the repo's admin. `adopt_storage` (tenant admins only) takes over
        what the location already holds: needed to re-create a repo whose storage was retained."""
        body: dict[str, Any] = {
            "name": name,
            "storage_integration": storage_integration,
            "description": description,
        }
        if adopt_storage:
            body["adopt_storage"] = True
        return await self.command("create_ml_repo", body, **options)

    async def update_ml_repo(
        self,
        *,
        name: str,
        description: str,
        storage_integration: str | None = None,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "update_ml_repo",
            {
                "name": name,
                "description": description,
                "storage_integration": storage_integration,
                "expected_version": expected_version,
            },
            **options,
        )

    async def grant_repo_access(
        self,
        *,
        repo: str,
        subject: str,
        role: Role,
        reason: str | None = None,
        managed_by: str | None = None,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        """`subject`: `user:<email>`, `team:<name>` or `workspace:<cluster>:<name>`.
        `managed_by` (`apply`) owns the grant until a grant without it: `apply --prune` revokes
        only grants it manages."""
        return await self.command(
            "grant_repo_access",
            {
                "repo": repo,
                "subject": subject,
                "role": role,
                "reason": reason,
                "managed_by": managed_by,
                "expected_version": expected_version,
            },
            **options,
        )

    async def revoke_repo_access(
        self,
        *,
        repo: str,
        subject: str,
        reason: str | None = None,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "revoke_repo_access",
            {
                "repo": repo,
                "subject": subject,
                "reason": reason,
                "expected_version": expected_version,
            },
            **options,
        )

    async def delete_ml_repo(
        self,
        *,
        name: str,
        delete_storage: bool = False,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "delete_ml_repo",
            {"name": name, "delete_storage": delete_storage, "expected_version": expected_version},
            **options,
        )

    # --- commands: teams ------------------------------------------------------------------

    async def create_team(
        self,
        *,
        name: str,
        members: Sequence[str] | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        """`members`: e-mail addresses."""
        return await self.command(
            "create_team",
            {"name": name, "members": None if members is None else list(members)},
            **options,
        )

    async def add_team_member(
        self,
        *,
        team: str,
        user: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "add_team_member",
            {"team": team, "user": user, "expected_version": expected_version},
            **options,
        )

    async def remove_team_member(
        self,
        *,
        team: str,
        user: str,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self.command(
            "remove_team_member",
            {"team": team, "user": user, "expected_version": expected_version},
            **options,
        )

    # --- commands: what the provisioners record -------------------------------------------

    async def record_namespace_provisioned(
        self,
        *,
        workspace: str,
        namespace: str,
        detail: str = "",
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self._record_namespace(
            "record_namespace_provisioned", workspace, namespace, detail, expected_version, options
        )

    async def record_namespace_failed(
        self,
        *,
        workspace: str,
        namespace: str,
        detail: str = "",
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self._record_namespace(
            "record_namespace_failed", workspace, namespace, detail, expected_version, options
        )

    async def record_namespace_deleted(
        self,
        *,
        workspace: str,
        namespace: str,
        detail: str = "",
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self._record_namespace(
            "record_namespace_deleted", workspace, namespace, detail, expected_version, options
        )

    async def record_storage_provisioned(
        self,
        *,
        repo: str,
        location: str,
        detail: str = "",
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self._record_storage(
            "record_storage_provisioned", repo, location, detail, expected_version, options
        )

    async def record_storage_failed(
        self,
        *,
        repo: str,
        location: str,
        detail: str = "",
        removal: bool = False,
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        """`removal`: the removal of a deleted repo's storage failed (else its provisioning)."""
        extra = {"removal": True} if removal else {}
        return await self._record_storage(
            "record_storage_failed", repo, location, detail, expected_version, options, extra
        )

    async def record_storage_deleted(
        self,
        *,
        repo: str,
        location: str,
        detail: str = "",
        expected_version: int | None = None,
        **options: Unpack[CommandOptions],
    ) -> CommandReply:
        return await self._record_storage(
            "record_storage_deleted", repo, location, detail, expected_version, options
        )

    async def _record_namespace(
        self,
        name: str,
        workspace: str,
        namespace: str,
        detail: str,
        expected_version: int | None,
        options: CommandOptions,
    ) -> CommandReply:
        body = {
            "workspace": workspace,
            "namespace": namespace,
            "detail": detail,
            "expected_version": expected_version,
        }
        return await self.command(name, body, **options)

    async def _record_storage(
        self,
        name: str,
        repo: str,
        location: str,
        detail: str,
        expected_version: int | None,
        options: CommandOptions,
        extra: dict[str, Any] | None = None,
    ) -> CommandReply:
        body = {
            "repo": repo,
            "location": location,
            "detail": detail,
            "expected_version": expected_version,
            **(extra or {}),
        }
        return await self.command(name, body, **options)

    # --- queries ---------------------------------------------------------------------------

    async def list_environments(self, **options: Unpack[ReadOptions]) -> list[Environment]:
        return await self._data(_ENVIRONMENTS, "list_environments", **options)

    async def list_clusters(
        self, *, environment: str | None = None, **options: Unpack[ReadOptions]
    ) -> list[Cluster]:
        """Every cluster; with `environment`, those offering it."""
        return await self._data(_CLUSTERS, "list_clusters", environment=environment, **options)

    async def get_workspace(self, *, fqn: str, **options: Unpack[ReadOptions]) -> Workspace:
        """Raises `NotFound` for an unknown workspace; a deleted one answers with its status."""
        return await self._data(_WORKSPACE, "get_workspace", fqn=fqn, **options)

    async def list_workspaces(
        self,
        *,
        cluster: str | None = None,
        environment: str | None = None,
        production: bool | None = None,
        **options: Unpack[ReadOptions],
    ) -> list[Workspace]:
        return await self._data(
            _WORKSPACES,
            "list_workspaces",
            cluster=cluster,
            environment=environment,
            production=production,
            **options,
        )

    async def get_ml_repo(self, *, name: str, **options: Unpack[ReadOptions]) -> MlRepo:
        return await self._data(_ML_REPO, "get_ml_repo", name=name, **options)

    async def list_ml_repos(
        self, *, subject: str | None = None, **options: Unpack[ReadOptions]
    ) -> list[MlRepo]:
        """Every live repo; with `subject`, those it may at least read."""
        return await self._data(_ML_REPOS, "list_ml_repos", subject=subject, **options)

    async def repo_access(self, *, repo: str, **options: Unpack[ReadOptions]) -> list[Grant]:
        """The direct grants in force on `repo`."""
        return await self._data(_GRANTS, "repo_access", repo=repo, **options)

    async def subject_access(self, *, subject: str, **options: Unpack[ReadOptions]) -> list[Access]:
        """What `subject` may use, through its own grants, its teams and its workspace."""
        return await self._data(_ACCESSES, "subject_access", subject=subject, **options)

    async def check_access(
        self,
        *,
        subject: str,
        repo: str,
        action: Literal["read", "write", "admin"],
        **options: Unpack[ReadOptions],
    ) -> AccessCheck:
        return await self._data(
            _ACCESS_CHECK, "check_access", subject=subject, repo=repo, action=action, **options
        )

    async def environment_tags(
        self, *, environment: str | None = None, **options: Unpack[ReadOptions]
    ) -> list[EnvironmentTags]:
        return await self._data(
            _ENVIRONMENT_TAGS, "environment_tags", environment=environment, **options
        )

    async def audit_log(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        actor: str | None = None,
        fqn: str | None = None,
        type: str | None = None,
        after: int | None = None,
        limit: int = 100,
        **options: Unpack[ReadOptions],
    ) -> AuditPage:
        """One page of published events; pass the page's `next` as `after` for the next."""
        return await self._data(
            _AUDIT_PAGE,
            "audit_log",
            since=since,
            until=until,
            actor=actor,
            fqn=fqn,
            type=type,
            after=after,
            limit=limit,
            **options,
        )

    async def access_report(
        self,
        *,
        as_of: datetime | str,
        repo: str | None = None,
        subject: str | None = None,
        **options: Unpack[ReadOptions],
    ) -> list[AccessInForce]:
        """The grants in force at `as_of` (an aware datetime or RFC 3339 text)."""
        return await self._data(
            _ACCESS_REPORT, "access_report", as_of=as_of, repo=repo, subject=subject, **options
        )

    async def access_changes(
        self,
        *,
        from_: datetime | str,
        to: datetime | str,
        repo: str | None = None,
        subject: str | None = None,
        **options: Unpack[ReadOptions],
    ) -> list[AccessChange]:
        """Grants and revocations between `from_` and `to` (the wire's `from` and `to`)."""
        params: dict[str, Any] = {"from": from_, "to": to, "repo": repo, "subject": subject}
        return await self._data(_ACCESS_CHANGES, "access_changes", **params, **options)

    async def list_teams(self, **options: Unpack[ReadOptions]) -> list[Team]:
        return await self._data(_TEAMS, "list_teams", **options)

    async def get_team(self, *, name: str, **options: Unpack[ReadOptions]) -> Team:
        return await self._data(_TEAM, "get_team", name=name, **options)

    async def list_storage_integrations(
        self, **options: Unpack[ReadOptions]
    ) -> list[StorageIntegration]:
        return await self._data(_STORAGE_INTEGRATIONS, "list_storage_integrations", **options)

    async def get_storage_integration(
        self, *, name: str, **options: Unpack[ReadOptions]
    ) -> StorageIntegration:
        return await self._data(
            _STORAGE_INTEGRATION, "get_storage_integration", name=name, **options
        )


async def _quiet(error: Exception) -> None:
    return None


def _json(value: Any) -> str:
    """JSON of a body: None fields left out (the server's default applies), models and times
    as on the wire."""
    if isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if v is not None}
    return json.dumps(value, default=_wire_value, ensure_ascii=False)


def _wire_value(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be sent on the bus")


_ENVIRONMENTS = TypeAdapter(list[Environment])
_CLUSTERS = TypeAdapter(list[Cluster])
_WORKSPACE = TypeAdapter(Workspace)
_WORKSPACES = TypeAdapter(list[Workspace])
_ML_REPO = TypeAdapter(MlRepo)
_ML_REPOS = TypeAdapter(list[MlRepo])
_GRANTS = TypeAdapter(list[Grant])
_ACCESSES = TypeAdapter(list[Access])
_ACCESS_CHECK = TypeAdapter(AccessCheck)
_ENVIRONMENT_TAGS = TypeAdapter(list[EnvironmentTags])
_AUDIT_PAGE = TypeAdapter(AuditPage)
_ACCESS_REPORT = TypeAdapter(list[AccessInForce])
_ACCESS_CHANGES = TypeAdapter(list[AccessChange])
_TEAMS = TypeAdapter(list[Team])
_TEAM = TypeAdapter(Team)
_STORAGE_INTEGRATIONS = TypeAdapter(list[StorageIntegration])
_STORAGE_INTEGRATION = TypeAdapter(StorageIntegration)

__all__ = ["Client", "CommandOptions", "ReadOptions", "TenantryError"]


def _smaller_page(refused: InvalidRequest, limit: int) -> int:
    """The page size to ask next after a page was refused as larger than the bus carries
    (rows of that size fit in 80 % of its `max_payload`); re-raise any other refusal."""
    size, most = refused.details.get("bytes"), refused.details.get("max_payload")
    if not isinstance(size, int) or not isinstance(most, int) or limit == 1:
        raise refused
    return max(1, min(limit - 1, limit * most * 4 // (size * 5)))
