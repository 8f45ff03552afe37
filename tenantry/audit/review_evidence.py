"""The evidence of an access review, read from an audit export that holds it (`tenantry review
export`): its snapshot, every decision (who, when, why, the event's position and chain hash) and
the events that carried out its revokes (same command as the decision, same repo and subject).

Only what the export's events say: the summary is a reading of a file that `tenantry audit
verify` checks, never a second source of truth."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tenantry.audit.checkpoint import is_checkpoint

# What a revoke decided in a review writes: the grant's end, or the member's removal.
_REMEDIATIONS = ("ml_repo.access_revoked", "team.member_removed")


def review_evidence(lines: Iterable[bytes], review: str) -> dict[str, Any]:
    """The evidence of review `review` in the export `lines` (events as JSON lines, then
    perhaps a checkpoint line)."""
    opened: dict[str, Any] | None = None
    closed: dict[str, Any] | None = None
    items: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    checkpoint: dict[str, Any] | None = None
    by_command: dict[str, list[dict[str, Any]]] = {}
    for raw in lines:
        if not raw.strip():
            continue
        body = json.loads(raw)
        if is_checkpoint(body):
            checkpoint = body.get("checkpoint")
            continue
        if body.get("type") in _REMEDIATIONS:
            by_command.setdefault(str(body.get("command_id")), []).append(body)
        if body.get("aggregate") != "access_review" or body.get("fqn") != review:
            continue
        kind = body["type"]
        if kind == "access_review.opened":
            opened = body
        elif kind == "access_review.items_snapshotted":
            items += body["data"]["items"]
        elif kind == "access_review.item_decided":
            decisions.append(body)
        elif kind == "access_review.closed":
            closed = body
    if opened is None:
        raise ValueError(f"the export does not hold the opening of access review {review!r}")
    by_id = {item["id"]: item for item in items}
    return {
        "review": review,
        "opened": _event(opened) | {"scope": _scope(opened["data"])},
        "snapshot": items,
        "decisions": [_decision(d, by_id.get(d["data"]["item"]), by_command) for d in decisions],
        "closed": None if closed is None else _event(closed) | closed["data"],
        "checkpoint": checkpoint,
    }


def _event(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": body["occurred_at"],
        "by": body["actor"],
        "position": body["position"],
        "hash": body["hash"],
    }


def _scope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: data[key]
        for key in ("scope", "environment", "repos", "due", "on_undecided", "item_count")
    }


def _decision(
    body: dict[str, Any],
    item: dict[str, Any] | None,
    by_command: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    data = body["data"]
    remediation = []
    if item is not None and data["decision"] == "revoke":
        for effect in by_command.get(str(body["command_id"]), []):
            if effect["position"] < body["position"] and _carries_out(effect, item):
                remediation.append(_event(effect) | {"type": effect["type"]})
    return {
        "item": data["item"],
        "decision": data["decision"],
        "reason": data["reason"],
        "automatic": data["automatic"],
        "outcome": data["outcome"],
        **_event(body),
        "remediation": remediation,
    }


def _carries_out(effect: dict[str, Any], item: dict[str, Any]) -> bool:
    if effect["type"] == "team.member_removed":
        return bool(
            item["kind"] == "membership"
            and effect["fqn"] == item["team"]
            and f"user:{effect['data']['user']}" == item["subject"]
        )
    return bool(
        item["kind"] == "grant"
        and effect["fqn"] == item["repo"]
        and effect["data"]["subject"] == item["subject"]
    )
