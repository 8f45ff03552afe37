"""Failures of an action: transient ones are retried with backoff, permanent ones recorded."""

from __future__ import annotations

import errno
from dataclasses import dataclass

# A path that can't be created or written for these reasons won't become writable by waiting.
_PERMANENT_ERRNOS = frozenset(
    {
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EINVAL,
    }
)
MAX_REASON = 1000


class PermanentError(Exception):
    """Retrying would fail the same way: record the failure, stop redelivering."""


class TransientError(Exception):
    """Might succeed later (a server down, a lock held): retry with backoff."""


@dataclass(frozen=True)
class Failure:
    permanent: bool
    reason: str


def classify(exc: BaseException) -> Failure:
    reason = f"{type(exc).__name__}: {exc}"[:MAX_REASON]
    if isinstance(exc, PermanentError):
        return Failure(True, str(exc)[:MAX_REASON])
    if isinstance(exc, TransientError):
        return Failure(False, str(exc)[:MAX_REASON])
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError | ConnectionError):
        return Failure(exc.errno in _PERMANENT_ERRNOS, reason)
    # Anything else (a bug, an unexpected library error) is retried: bounded by max_deliver.
    return Failure(False, reason)
