"""The access reviews view: every review with its snapshot's items and their decisions (who,
when, why, what it did, and the decision event's position and chain hash), for
`list_access_reviews`, `get_access_review` and `list_access_review_items`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from domain.authorization import Authorization
from domain.errors import NotFound
from domain.event_log import Published
from projections import schema as t
from projections.audit import utc_text_of
from projections.current_access import subject_access
from projections.event_handlers import EventHandlers
from projections.query_params import GetAccessReview, ListAccessReviewItems, ListAccessReviews
from projections.store import Raw, Writes, update_by_key

Body = dict[str, Any]
_Handler = Callable[[Writes, Body], None]
_HANDLERS: EventHandlers[_Handler] = EventHandlers()
_on = _HANDLERS.on


def apply_batch(conn: Connection, events: Sequence[Published]) -> None:
    """The batch's writes are held and run at its end, a run of one statement at a time (no
    handler here reads the view)."""
    writes = Writes(conn)
    _HANDLERS.apply(writes, events)
    writes.flush()


def _utc(value: str | None) -> str | None:
    return None if value is None else utc_text_of(value)


@_on("access_review.opened")
def _opened(writes: Writes, body: Body) -> None:
    data = body["data"]
    writes.upsert(
        t.access_reviews,
        {
            "name": body["fqn"],
            "scope": data["scope"],
            "environment": data["environment"],
            "repos": data["repos"],
            "due": _utc(data["due"]),
            "on_undecided": data["on_undecided"],
            "status": "open",
            "opened_at": utc_text_of(body["occurred_at"]),
            "opened_by": body["actor"],
            "opened_position": body["position"],
            "opened_hash": body["hash"],
            "item_count": data["item_count"],
        },
    )


@_on("access_review.items_snapshotted")
def _items(writes: Writes, body: Body) -> None:
    review = body["fqn"]
    for item in body["data"]["items"]:
        row = {
            "review": review,
            "ordinal": int(item["id"][1:]),
            "item": item["id"],
            "kind": item["kind"],
            "subject": item["subject"],
            "repo": item.get("repo"),
            "role": item.get("role"),
            "granted_by": item.get("granted_by"),
            "granted_at": _utc(item.get("granted_at")),
            "grant_reason": item.get("reason"),
            "expires_at": _utc(item.get("expires_at")),
            "team": item.get("team"),
            "repos": list(item.get("repos") or ()),
        }
        writes.add(_INSERT_ITEM, row)


@_on("access_review.item_decided")
def _decided(writes: Writes, body: Body) -> None:
    data = body["data"]
    writes.add(
        _DECIDE_ITEM,
        {
            "w_review": body["fqn"],
            "w_item": data["item"],
            "decision": data["decision"],
            "decided_by": body["actor"],
            "decided_at": utc_text_of(body["occurred_at"]),
            "reason": data["reason"],
            "automatic": data["automatic"],
            "outcome": data["outcome"],
            "decided_position": body["position"],
            "decided_hash": body["hash"],
        },
    )


@_on("access_review.closed")
def _closed(writes: Writes, body: Body) -> None:
    values = {
        "status": "closed",
        "closed_at": utc_text_of(body["occurred_at"]),
        "closed_by": body["actor"],
        "closed_position": body["position"],
        "closed_hash": body["hash"],
        "closed_at_due": body["data"]["at_due"],
    }
    writes.add(
        update_by_key(t.access_reviews, "name", tuple(values)), {**values, "w_key": body["fqn"]}
    )


# Built once, run on the driver's cursor (`Raw`).
_ITEM_COLUMNS = (
    "review", "ordinal", "item", "kind", "subject", "repo", "role", "granted_by", "granted_at",
    "grant_reason", "expires_at", "team", "repos",
)  # fmt: skip
_INSERT_ITEM = Raw(t.access_review_items.insert(), _ITEM_COLUMNS)
_DECISION_COLUMNS = (
    "decision", "decided_by", "decided_at", "reason", "automatic", "outcome",
    "decided_position", "decided_hash",
)  # fmt: skip
_DECIDE_ITEM = Raw(
    update(t.access_review_items).where(
        t.access_review_items.c.review == bindparam("w_review"),
        t.access_review_items.c.item == bindparam("w_item"),
    ),
    _DECISION_COLUMNS,
)


# --- queries ------------------------------------------------------------------------------


def list_access_reviews(conn: Connection, params: ListAccessReviews) -> list[dict[str, Any]]:
    return _reviews(conn, None, params.status)


def get_access_review(conn: Connection, params: GetAccessReview) -> dict[str, Any]:
    found = _reviews(conn, params.name, None)
    if not found:
        raise NotFound(
            f"access review {params.name!r} does not exist", kind="access_review", name=params.name
        )
    return found[0]


def _reviews(conn: Connection, name: str | None, status: str | None) -> list[dict[str, Any]]:
    reviews, items = t.access_reviews, t.access_review_items
    statement = select(reviews).order_by(reviews.c.name)
    counts = select(items.c.review, items.c.decision, func.count()).group_by(
        items.c.review, items.c.decision
    )
    if name is not None:
        statement = statement.where(reviews.c.name == name)
        counts = counts.where(items.c.review == name)
    if status is not None:
        statement = statement.where(reviews.c.status == status)
    decided: dict[str, dict[str | None, int]] = defaultdict(dict)
    for review, decision, count in conn.execute(counts):
        decided[review][decision] = count
    answers = []
    for r in conn.execute(statement):
        by_decision = decided[r.name]
        kept, revoked = by_decision.get("keep", 0), by_decision.get("revoke", 0)
        answers.append(
            {
                "name": r.name,
                "scope": r.scope,
                "environment": r.environment,
                "repos": r.repos,
                "due": r.due,
                "on_undecided": r.on_undecided,
                "status": r.status,
                "opened_at": r.opened_at,
                "opened_by": r.opened_by,
                "opened_position": r.opened_position,
                "opened_hash": r.opened_hash,
                "closed_at": r.closed_at,
                "closed_by": r.closed_by,
                "closed_position": r.closed_position,
                "closed_hash": r.closed_hash,
                "closed_at_due": r.closed_at_due,
                "progress": {
                    "items": r.item_count,
                    "decided": kept + revoked,
                    "undecided": r.item_count - kept - revoked,
                    "kept": kept,
                    "revoked": revoked,
                },
            }
        )
    return answers


def list_access_review_items(
    conn: Connection, params: ListAccessReviewItems, authorization: Authorization
) -> list[dict[str, Any]]:
    """The items of a review (of every review without `review`); with `reviewer`, only the
    undecided items of open reviews that this user may decide: as a tenant admin (by
    `authorization`) any item, else those changing only repos they administer; never one about
    their own access."""
    items, reviews = t.access_review_items, t.access_reviews
    statement = (
        select(items)
        .join(reviews, reviews.c.name == items.c.review)
        .order_by(items.c.review, items.c.ordinal)
    )
    if params.review is not None:
        if (
            conn.execute(select(reviews.c.name).where(reviews.c.name == params.review)).first()
            is None
        ):
            raise NotFound(
                f"access review {params.review!r} does not exist",
                kind="access_review",
                name=params.review,
            )
        statement = statement.where(items.c.review == params.review)
    if params.status == "decided":
        statement = statement.where(items.c.decision.is_not(None))
    elif params.status == "undecided":
        statement = statement.where(items.c.decision.is_(None))
    rows = [_item(r) for r in conn.execute(statement)]
    if params.reviewer is None:
        return rows
    return _waiting_for(conn, params.reviewer, rows, authorization.is_tenant_admin(params.reviewer))


def _item(r: Any) -> dict[str, Any]:
    return {
        "review": r.review,
        "item": r.item,
        "ordinal": r.ordinal,
        "kind": r.kind,
        "subject": r.subject,
        "repo": r.repo,
        "role": r.role,
        "granted_by": r.granted_by,
        "granted_at": r.granted_at,
        "grant_reason": r.grant_reason,
        "expires_at": r.expires_at,
        "team": r.team,
        "repos": r.repos,
        "decision": r.decision,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at,
        "reason": r.reason,
        "automatic": r.automatic,
        "outcome": r.outcome,
        "decided_position": r.decided_position,
        "decided_hash": r.decided_hash,
    }


def _waiting_for(
    conn: Connection, reviewer: str, rows: list[dict[str, Any]], tenant_admin: bool
) -> list[dict[str, Any]]:
    """The rows `reviewer` may decide now: undecided, of an open review, not about their own
    access (their grant, membership, or a grant to a team they are, or were when the review
    opened, a member of), and, unless a tenant admin (`tenant_admin`), changing only repos they
    administer: the rule of `domain.policies.ReviewerOf` (`domain.authorization`), on the
    views."""
    reviews = t.access_reviews
    open_reviews = set(
        conn.execute(select(reviews.c.name).where(reviews.c.status == "open")).scalars()
    )
    administered = (
        None
        if tenant_admin
        else {a.repo for a in subject_access(conn, reviewer) if a.role == "admin"}
    )
    user = reviewer.removeprefix("user:")
    teams_now = set(
        conn.execute(select(t.team_members.c.team).where(t.team_members.c.user == user)).scalars()
    )
    items = t.access_review_items
    teams_then = {
        (review, team)
        for review, team in conn.execute(
            select(items.c.review, items.c.team).where(
                items.c.kind == "membership", items.c.subject == reviewer
            )
        )
    }
    waiting = []
    for row in rows:
        if row["decision"] is not None or row["review"] not in open_reviews:
            continue
        if row["subject"] == reviewer:
            continue
        if row["subject"].startswith("team:"):
            team = row["subject"].removeprefix("team:")
            if team in teams_now or (row["review"], team) in teams_then:
                continue
        affected = [row["repo"]] if row["repo"] is not None else row["repos"]
        if administered is None or all(repo in administered for repo in affected):
            waiting.append(row)
    return waiting
