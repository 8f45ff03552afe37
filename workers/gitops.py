"""GitOps namespace backend: manifests as YAML under `<root>/<cluster>/<namespace>/`.

When the root is in a git repository, each change is one commit of exactly the folders it
touched, made with the real `git` CLI. Files are rendered deterministically and compared before
writing, and the commit is decided by `git status` rather than by "did I write": an action run
twice commits once, and one interrupted between writing and committing commits on its retry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import structlog
import yaml

from workers.errors import PermanentError, TransientError
from workers.events import Event
from workers.files import write_if_changed
from workers.manifests import NamespaceSpec

log = structlog.get_logger("workers.gitops")

NAMESPACE_FILE = "namespace.yaml"
SERVICE_ACCOUNT_FILE = "serviceaccount.yaml"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Tenantry namespaces worker",
    "GIT_AUTHOR_EMAIL": "namespaces@tenantry.invalid",
    "GIT_COMMITTER_NAME": "Tenantry namespaces worker",
    "GIT_COMMITTER_EMAIL": "namespaces@tenantry.invalid",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


class _QuotingDumper(yaml.SafeDumper):
    """Every string double-quoted, keys included. PyYAML writes YAML 1.1 and quotes only what
    1.1 would misread; Kubernetes reads YAML 1.2, where an unquoted `1e3` or `0o755` (valid
    label values) is a number and the Namespace is refused."""


def _quoted(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_QuotingDumper.add_representer(str, _quoted)


def render(document: dict[str, object]) -> bytes:
    return yaml.dump(
        document,
        Dumper=_QuotingDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=2**16,
    ).encode()


class GitOpsBackend:
    def __init__(self, root: Path, *, init: bool = False) -> None:
        self._root = root
        self._init = init
        self._toplevel: Path | None = None
        self._checked = False

    async def ensure(self, specs: Sequence[NamespaceSpec], event: Event) -> str:
        folders = [self._folder(spec.cluster, spec.name) for spec in specs]
        await asyncio.to_thread(self._write, specs, folders)
        await self._commit(folders, event, specs)
        # The same words whether this run committed or an interrupted one did: a redelivered
        # event's report must be the same command to be recognised as a replay.
        return "gitops: " + ", ".join(f"{s.cluster}/{s.name}" for s in specs)

    async def remove(self, cluster: str, name: str, event: Event) -> str:
        folder = self._folder(cluster, name)
        await asyncio.to_thread(_remove_folder, folder)
        await self._commit([folder], event, [])
        return f"gitops: {cluster}/{name} removed"

    def _folder(self, cluster: str, name: str) -> Path:
        for part in (cluster, name):
            if not part or "/" in part or part.startswith("."):
                raise PermanentError(f"{part!r} can't name a folder")
        return self._root / cluster / name

    @staticmethod
    def _write(specs: Sequence[NamespaceSpec], folders: Sequence[Path]) -> None:
        for spec, folder in zip(specs, folders, strict=True):
            write_if_changed(folder / NAMESPACE_FILE, render(spec.namespace()))
            write_if_changed(folder / SERVICE_ACCOUNT_FILE, render(spec.service_account()))

    async def close(self) -> None:
        return None

    async def _repository(self) -> Path | None:
        """The top of the git work tree the root is in, or None for a plain folder."""
        if self._checked:
            return self._toplevel
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        root = await asyncio.to_thread(self._root.resolve)
        code, out, _ = await _git(root, "rev-parse", "--show-toplevel")
        toplevel = await asyncio.to_thread(Path(out.strip()).resolve) if code == 0 else None
        if self._init and toplevel != root:
            # Ours to create (the state directory of `tenantry up`): a repository of its own,
            # never commits into an enclosing one such as the checkout it was started from.
            await _git_ok(root, "init", "-q")
            toplevel = root
            log.info("gitops.initialised", root=str(root))
        self._toplevel, self._checked = toplevel, True
        return toplevel

    async def _commit(
        self, folders: Sequence[Path], event: Event, specs: Sequence[NamespaceSpec]
    ) -> str | None:
        toplevel = await self._repository()
        if toplevel is None:
            return None
        paths = [str(f.resolve().relative_to(toplevel)) for f in folders]
        _, status, _ = await _git_ok(
            toplevel, "status", "--porcelain", "--untracked-files=all", "--", *paths
        )
        changed_files = [line[3:] for line in status.splitlines() if line.strip()]
        changed = [p for p in paths if any(f.startswith(p + "/") for f in changed_files)]
        if not changed:
            return None
        await _git_ok(toplevel, "add", "--all", "--", *changed)
        await _git_ok(
            toplevel,
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            _message(event, changed, removed=not specs),
            "--",
            *changed,
        )
        _, head, _ = await _git_ok(toplevel, "rev-parse", "HEAD")
        return head.strip()


def _message(event: Event, paths: Sequence[str], *, removed: bool) -> str:
    what = "remove" if removed else "ensure"
    subject = f"tenantry: {what} namespace{'s' if len(paths) > 1 else ''} {', '.join(paths)}"
    return f"{subject}\n\n{event.describe()}\n\nTenantry-Event-Id: {event.id}\n"


def _remove_folder(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        # Something below the root is a file: the folder can't exist, so it is gone.
        return
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # the cluster's folder, once its last namespace is gone


async def _git(cwd: Path, *args: str) -> tuple[int, str, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "commit.gpgsign=false",
            *args,
            cwd=cwd,
            env={**os.environ, **_GIT_ENV},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise PermanentError("the gitops backend needs the git CLI: it is not installed") from exc
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _git_ok(cwd: Path, *args: str) -> tuple[int, str, str]:
    code, out, err = await _git(cwd, *args)
    if code != 0:
        # A held index.lock, a full disk: worth another try, bounded by max_deliver.
        raise TransientError(f"git {args[0]} failed ({code}): {err.strip()[:500]}")
    return code, out, err
