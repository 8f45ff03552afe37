"""Per-user reply inboxes: every connection that knows its NATS user gets replies under
`_INBOX.<user token>`, so that NATS permissions can let each user read its own replies only
(deploy/nats-accounts.conf) instead of everyone's under `_INBOX.>`.

The user becomes ONE subject token, so that no user's inboxes are a prefix of another's
(`bo@example.com` and `bo@example.com.au` would be, dot for dot): letters, digits, `@` and `-`
stay, every other byte is written `_XX` (hex of its UTF-8 byte), `_` itself included, which
keeps the mapping one-to-one. `admin@example.com` -> `_INBOX.admin@example_2Ecom`."""

from __future__ import annotations

import string
from urllib.parse import unquote, urlsplit

INBOX_ROOT = "_INBOX"
_KEPT = frozenset(string.ascii_letters + string.digits + "@-")


def inbox_token(user: str) -> str:
    return "".join(ch if ch in _KEPT else "".join(f"_{b:02X}" for b in ch.encode()) for ch in user)


def inbox_prefix(user: str) -> str:
    """The inbox prefix of `user`'s connections (what nats-py's `inbox_prefix` takes)."""
    return f"{INBOX_ROOT}.{inbox_token(user)}"


def user_of(url: str, user: str | None = None) -> str | None:
    """The NATS user a connection authenticates as: `user` when given, else the user of the
    first server URL that carries one (`nats://user:password@host`)."""
    if user:
        return user
    for part in url.split(","):
        found = urlsplit(part.strip()).username
        if found:
            return unquote(found)
    return None


def inbox_options(url: str, user: str | None = None) -> dict[str, str]:
    """nats-py connect options for the inboxes of whoever connects to `url` as `user`; none
    when the user is unknown (an unauthenticated laptop bus: NATS's default `_INBOX`)."""
    found = user_of(url, user)
    return {"inbox_prefix": inbox_prefix(found)} if found else {}
