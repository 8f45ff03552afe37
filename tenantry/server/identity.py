"""Who is asking: the actor of a request on the bus.

Two modes. `header` (the laptop default): the `Tenantry-Actor` header is believed. `nats`
(production): the actor is the identity NATS authenticated. Clients live in their own account
(default `CLIENTS`) and reach `tenantry.cmd.*` through a service import with `share: true`, so
the server stamps every request with `Nats-Request-Info` naming the user (and overwrites any such
header the client sent); a `Tenantry-Actor` header is then ignored. Requests without that
stamp come from inside Tenantry's own account, where NATS permissions let only the workers
publish commands, and only `record_*` ones: they must name a `service:` actor."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.errors import Forbidden
from domain.names import is_valid_actor
from tenantry.protocol import ACTOR_HEADER, InvalidRequest

REQUEST_INFO_HEADER = "Nats-Request-Info"
DEFAULT_ACTOR = "user:anonymous@localhost"


@dataclass(frozen=True)
class ActorPolicy:
    mode: str = "header"
    client_account: str = "CLIENTS"

    def __post_init__(self) -> None:
        if self.mode not in ("header", "nats"):
            raise ValueError("TENANTRY_AUTH must be 'header' or 'nats'")

    def actor_of(self, headers: Mapping[str, str]) -> str:
        claimed = headers.get(ACTOR_HEADER)
        if self.mode == "header":
            actor = claimed or DEFAULT_ACTOR
            if not is_valid_actor(actor):
                raise InvalidRequest(
                    f"{ACTOR_HEADER} must be 'user:<email>' or 'service:<name>'",
                    header=ACTOR_HEADER,
                )
            return actor
        stamp = headers.get(REQUEST_INFO_HEADER)
        if stamp is None:
            # Inside Tenantry's account: the workers (NATS lets them send record_* only).
            if claimed is None or not claimed.startswith("service:") or not is_valid_actor(claimed):
                raise Forbidden(
                    "requests from inside Tenantry's account must name a service: actor"
                )
            return claimed
        try:
            info = json.loads(stamp)
            account, user = str(info["acc"]), str(info["user"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Forbidden("the request carries no usable NATS identity") from exc
        if account != self.client_account:
            raise Forbidden(f"requests from NATS account {account!r} are not accepted")
        actor = f"user:{user}"
        if not is_valid_actor(actor):
            raise Forbidden(
                f"NATS user {user!r} is not an e-mail address, so it can't be a Tenantry user"
            )
        return actor


class UntrustedBus(Exception):
    """Settings under which TENANTRY_ADMINS would protect nothing: refused at start."""


def refuse_untrusted_headers(
    mode: str, admins: frozenset[str] | None, server_info: Mapping[str, Any]
) -> None:
    """With `header` auth the actor is whatever a client writes in `Tenantry-Actor`, so tenant
    admins mean something only when no one else can reach the bus. `server_info` is the INFO
    the server sent this connection: its client listener (`host`) and its cluster peers'
    (`connect_urls`) must all be loopback. Raises `UntrustedBus` otherwise."""
    if mode != "header" or admins is None:
        return
    hosts = [str(server_info.get("host", ""))]
    hosts += [str(url).rpartition(":")[0] for url in server_info.get("connect_urls") or []]
    exposed = [host for host in hosts if not _is_loopback(host)]
    if exposed:
        raise UntrustedBus(
            "TENANTRY_AUTH=header believes the Tenantry-Actor header as sent, so with "
            "TENANTRY_ADMINS set any client of the bus can claim to be an admin, and the bus "
            f"listens on {', '.join(exposed)}, not loopback only: use TENANTRY_AUTH=nats "
            "(deploy/nats-accounts.conf), or a nats-server listening on loopback only"
        )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
