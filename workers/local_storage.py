"""Local storage backend (`file://` roots): the repo's folder, Tenantry's marker in it
(`.tenantry-location.json`, see `workers.ownership`), and its access policy as a JSON file
inside it (`.tenantry-access.json`), written atomically and only when they change."""

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
from workers.ownership import MARKER, Marker, check_removable, claim, owns
from workers.storage import RepoView

POLICY_FILE = ".tenantry-access.json"
# Tenantry's own files (and the temporary names `write_if_changed` gives them): not data.
_OURS = frozenset({MARKER, POLICY_FILE, f".{MARKER}.tenantry-tmp", f".{POLICY_FILE}.tenantry-tmp"})


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
        marker = claim(repo, _marker(folder), _has_data(folder))
        folder.mkdir(parents=True, exist_ok=True)
        if marker is not None:
            write_if_changed(folder / MARKER, marker.encode())
        write_if_changed(folder / POLICY_FILE, _policy_bytes(repo, repo.grants))
        return f"{repo.location}: folder with {len(repo.grants)} grant(s) in {POLICY_FILE}"

    @staticmethod
    def _remove(repo: RepoView) -> str:
        folder = local_path(repo.location)
        if not folder.is_dir():
            return f"{repo.location}: removed"  # gone already, or never made
        marker = _marker(folder)
        if owns(repo, marker):
            # Access ends first, whatever happens to the data.
            write_if_changed(folder / POLICY_FILE, _policy_bytes(repo, {}))
        if repo.delete_storage:
            check_removable(repo, marker, _has_data(folder))
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(folder)
            return f"{repo.location}: removed"
        if not owns(repo, marker):
            return f"{repo.location}: not this repo's, left as it was: retained"
        return f"{repo.location}: retained"  # the data stays, nobody keeps access to it


def _marker(folder: Path) -> Marker | None:
    try:
        return Marker.decode((folder / MARKER).read_bytes())
    except FileNotFoundError:
        return None


def _has_data(folder: Path) -> bool:
    """Whether the folder holds anything but Tenantry's own files (absent: nothing)."""
    try:
        return any(entry.name not in _OURS for entry in folder.iterdir())
    except FileNotFoundError:
        return False
