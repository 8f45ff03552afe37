"""Local storage backend (`file://` roots): the repo's folder, and its access policy as a JSON
file inside it (`.tenantry-access.json`), written atomically and only when it changes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from domain.names import storage_path
from workers.access_policy import local_policy
from workers.errors import PermanentError
from workers.files import write_if_changed
from workers.storage import RepoView

POLICY_FILE = ".tenantry-access.json"


def local_path(location: str) -> Path:
    """The folder of a `file:///` location; refused unless canonical (a root registered before
    the rule was enforced can't lead the worker outside it)."""
    try:
        _, segments = storage_path("local", location)
    except ValueError as exc:
        raise PermanentError(f"{location!r} is not a canonical local location: {exc}") from exc
    return Path("/", *segments)


def _policy_bytes(repo: RepoView, grants: dict[str, str]) -> bytes:
    document = local_policy(repo.name, repo.location, grants)
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


class LocalStorageBackend:
    async def ensure(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        return await asyncio.to_thread(self._ensure, repo)

    async def remove(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        return await asyncio.to_thread(self._remove, repo)

    async def close(self) -> None:
        return None

    @staticmethod
    def _ensure(repo: RepoView) -> str:
        folder = local_path(repo.location)
        folder.mkdir(parents=True, exist_ok=True)
        write_if_changed(folder / POLICY_FILE, _policy_bytes(repo, repo.grants))
        return f"{repo.location}: folder with {len(repo.grants)} grant(s) in {POLICY_FILE}"

    @staticmethod
    def _remove(repo: RepoView) -> str:
        folder = local_path(repo.location)
        if repo.delete_storage:
            # Gone already, or could never have been made (a file on the way to it).
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                shutil.rmtree(folder)
            return f"{repo.location}: removed"
        if folder.is_dir():
            # Retained: the data stays, nobody keeps access to it.
            write_if_changed(folder / POLICY_FILE, _policy_bytes(repo, {}))
        return f"{repo.location}: retained"
