"""The chain check a worker makes before it believes an event read from the stream.

The stream is checked against the store by the relay, but anyone with publish rights on
`tenantry.evt.>` (anyone on the laptop bus) can put a message there. A worker therefore folds
and acts on an event only if it extends the chain it has already verified: its `prev_hash` is
the hash of the last event it trusted (zeros for the first) and its `hash` is right over its
own contents. Anything else (a forged message, an altered copy, a genuine event whose
predecessor is missing from the stream) is skipped, loudly, and never acted on.

Skipping rather than stopping is what lets a stream heal: the relay re-publishes, after the
stream's end, the store's events from the last one the stream holds intact, so a worker that
skipped events because the chain broke takes them up again, in order, from their new copies."""

from __future__ import annotations

from typing import Any

from domain.event_log import ZERO_HASH, verify_link


class ChainGuard:
    """The head of the verified chain, moved by each event that extends it."""

    def __init__(self, head: str = ZERO_HASH) -> None:
        self.head = head
        self.trusted = 0  # events that extended the chain
        self.rejected = 0  # messages that did not

    def admit(self, body: Any) -> str | None:
        """None if `body` extends the chain (which then ends at it), else why not."""
        reason = self._why_not(body)
        if reason is None:
            self.head = body["hash"]
            self.trusted += 1
        else:
            self.rejected += 1
        return reason

    def _why_not(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("hash"), str):
            return "not an event"
        if body.get("prev_hash") != self.head:
            return (
                "does not follow the last verified event (forged, a copy out of place, or its "
                "predecessor is missing from the stream)"
            )
        if not verify_link(body, self.head):
            return "its contents do not match its hash (altered)"
        return None
