"""Manifests (over ~400 lines: the models and the reader that places every problem on a line
are one format): the YAML documents `tenantry apply` reads — their models (each a create
command's fields plus `type`; they extend the command models, so they cannot drift apart),
their JSON Schema, and reading them with the place of every problem (file, document, line,
field). What applying them does is `tenantry.apply.plan`.

An ml-repo's `collaborators` and a workspace's `ml_repo_access` are the grants wanted."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

import yaml
from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from domain.commands import (
    AccessPolicyFields,
    CreateEnvironment,
    CreateMlRepo,
    CreateTeam,
    CreateWorkspace,
    Deadline,
    RegisterCluster,
    RegisterStorageIntegration,
    RepoAccess,
)
from domain.names import Role, Subject

# --- the documents ------------------------------------------------------------------------


class EnvironmentManifest(CreateEnvironment):
    """`type: environment` — the fields of `create_environment`."""

    kind: ClassVar[str] = "environment"
    type: Literal["environment"]


class StorageIntegrationManifest(RegisterStorageIntegration):
    """`type: storage-integration` — the fields of `register_storage_integration`."""

    kind: ClassVar[str] = "storage-integration"
    type: Literal["storage-integration"]


class TeamManifest(CreateTeam):
    """`type: team` — the fields of `create_team`; `members` is the whole membership."""

    kind: ClassVar[str] = "team"
    type: Literal["team"]


class ClusterManifest(RegisterCluster):
    """`type: cluster` — the fields of `register_cluster`; `environments` is the whole set."""

    kind: ClassVar[str] = "cluster"
    type: Literal["cluster"]


class Collaborator(Deadline):
    """A grant wanted on an ML repo (until its deadline, if it has one)."""

    subject: Subject
    role: Role

    @field_validator("role")
    @classmethod
    def _workspaces_read_or_write(cls, role: str, info: ValidationInfo) -> str:
        subject = info.data.get("subject", "")
        if subject.startswith("workspace:") and role == "admin":
            raise ValueError("a workspace can hold viewer or editor only")
        return role


class MlRepoManifest(CreateMlRepo):
    """`type: ml-repo` — the fields of `create_ml_repo`, and `collaborators`: every grant the
    repo should have (when given)."""

    kind: ClassVar[str] = "ml-repo"
    type: Literal["ml-repo"]
    collaborators: Annotated[list[Collaborator], Field(max_length=1000)] = Field(
        default_factory=list
    )
    # How access is given (when given: the whole policy, `set_repo_access_policy`).
    access_policy: AccessPolicyFields | None = None

    @field_validator("collaborators")
    @classmethod
    def _one_role_per_subject(cls, collaborators: list[Collaborator]) -> list[Collaborator]:
        subjects = [c.subject for c in collaborators]
        if len(subjects) != len(set(subjects)):
            raise ValueError("collaborators names a subject more than once")
        return collaborators


class WorkspaceManifest(CreateWorkspace):
    """`type: workspace` — the fields of `create_workspace`; `ml_repo_access` is every grant
    the workspace should hold (when given)."""

    kind: ClassVar[str] = "workspace"
    type: Literal["workspace"]

    @field_validator("ml_repo_access")
    @classmethod
    def _read_or_write(cls, access: list[RepoAccess]) -> list[RepoAccess]:
        if any(a.role == "admin" for a in access):
            raise ValueError("a workspace can hold viewer or editor only")
        return access

    @property
    def fqn(self) -> str:
        return f"{self.cluster}:{self.name}"


AnyManifest: TypeAlias = (
    EnvironmentManifest
    | StorageIntegrationManifest
    | TeamManifest
    | ClusterManifest
    | MlRepoManifest
    | WorkspaceManifest
)
# In dependency order: what a document refers to comes before it.
MANIFEST_TYPES: dict[str, type[AnyManifest]] = {
    m.kind: m
    for m in (
        EnvironmentManifest,
        StorageIntegrationManifest,
        TeamManifest,
        ClusterManifest,
        MlRepoManifest,
        WorkspaceManifest,
    )
}
_SCHEMA: TypeAdapter[Any] = TypeAdapter(Annotated[AnyManifest, Field(discriminator="type")])


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one manifest document, for editors (generated from the models)."""
    schema: dict[str, Any] = _SCHEMA.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Tenantry manifest",
        "description": "One YAML document of `tenantry apply -f`: a create command's fields "
        "and `type`.",
        **schema,
    }


def name_of(manifest: AnyManifest) -> str:
    return manifest.fqn if isinstance(manifest, WorkspaceManifest) else manifest.name


# The fields of the mappings nested in documents (`collaborators`, `ml_repo_access`).
_NESTED_FIELDS = sorted({*Collaborator.model_fields, *RepoAccess.model_fields})


# --- reading documents --------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a document comes from: its file, its index in the file (1-based) and its line."""

    file: str
    index: int
    line: int

    def __str__(self) -> str:
        return f"{self.file}: document {self.index} (line {self.line})"


@dataclass(frozen=True)
class Document:
    source: Source
    manifest: AnyManifest
    # The document's YAML, to find the line of any of its fields (`line_of`).
    node: yaml.Node | None = field(default=None, compare=False, repr=False)

    def line_of(self, path: str) -> int:
        """The line of the field at `path` (`collaborators[0].subject`), else the document's."""
        if self.node is None:
            return self.source.line
        parts: list[str | int] = [
            int(index) if index else name for name, index in _PATH_PART.findall(path)
        ]
        return _line_of(self.node, parts) or self.source.line

    @property
    def key(self) -> tuple[str, str]:
        return self.manifest.kind, name_of(self.manifest)


_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


@dataclass(frozen=True)
class Problem:
    """Why a document cannot be applied: `path` is the field (`labels.team`,
    `collaborators[0].role`), empty for the document as a whole."""

    file: str
    message: str
    index: int | None = None
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.file
        if self.index is not None:
            where += f": document {self.index}"
        if self.line is not None:
            where += f" (line {self.line})"
        if self.path:
            where += f": {self.path}"
        return f"{where}: {self.message}"


class ManifestError(Exception):
    """Documents that cannot be applied; nothing was written."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


# Levels of mappings and sequences a document may have (its own mapping is the first). PyYAML
# composes and constructs recursively: a few thousand levels ended `apply` in a RecursionError
# traceback.
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing nesting deeper than MAX_DEPTH like any other invalid YAML."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        nests = isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent)
        self._depth += nests
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= nests


def parse(text: str, file: str) -> tuple[list[Document], list[Problem]]:
    """The documents of one YAML text, and what is wrong with those that are not valid."""
    documents: list[Document] = []
    problems: list[Problem] = []
    loader: _Loader | None = None
    index = 0
    try:
        # The reader checks the characters as it is made: inside the `try`.
        loader = _Loader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            index += 1
            line = node.start_mark.line + 1
            data = loader.construct_document(node)
            if data is None:
                continue
            document, found = _validate(data, node, Source(file, index, line))
            problems.extend(found)
            if document is not None:
                documents.append(document)
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (a control character, say): where it is.
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problems.append(
            Problem(
                file,
                f"not valid YAML: character U+{code:04X} is not allowed",
                line=text.count("\n", 0, exc.position) + 1,
            )
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(
            Problem(
                file,
                f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                index=index + 1 if mark is not None else None,
                line=mark.line + 1 if mark is not None else None,
            )
        )
    finally:
        if loader is not None:
            loader.dispose()
    return documents, problems


def _validate(data: Any, node: yaml.Node, source: Source) -> tuple[Document | None, list[Problem]]:
    def problem(message: str, path: Sequence[str | int] = ()) -> Problem:
        return Problem(
            source.file,
            message,
            index=source.index,
            line=_line_of(node, path) or source.line,
            path=_dotted(path),
        )

    if not isinstance(data, dict):
        return None, [problem("a manifest is a mapping with a `type`")]
    kind = data.get("type")
    model = MANIFEST_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        message = f"must be one of {', '.join(MANIFEST_TYPES)}"
        if kind is None:
            message = "missing: " + message
        return None, [problem(message, ["type"])]
    try:
        manifest = model.model_validate(data)
    except ValidationError as exc:
        return None, [
            problem(_message(e, model), e["loc"])
            for e in exc.errors(include_url=False, include_input=False)
        ]
    return Document(source, manifest, node), []


def _message(error: Any, model: type[AnyManifest]) -> str:
    """pydantic's message, and for a field no manifest has, the nearest one that exists."""
    if error["type"] != "extra_forbidden":
        return str(error["msg"]).removeprefix("Value error, ")
    given = str(error["loc"][-1])
    known = list(model.model_fields) if len(error["loc"]) == 1 else _NESTED_FIELDS
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    return str(error["msg"]) + (f"; did you mean `{close[0]}`?" if close else "")


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _line_of(node: yaml.Node, path: Sequence[str | int]) -> int | None:
    """The line (1-based) of the value at `path` in a document, or of the deepest part of it
    that exists."""
    line = node.start_mark.line + 1
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def check_unique(documents: Sequence[Document]) -> list[Problem]:
    """The same thing described twice is refused (which one would win?)."""
    seen: dict[tuple[str, str], Document] = {}
    problems = []
    for document in documents:
        first = seen.setdefault(document.key, document)
        if first is not document:
            problems.append(
                Problem(
                    document.source.file,
                    f"{document.key[0]} {document.key[1]} is already described in {first.source}",
                    index=document.source.index,
                    line=document.source.line,
                )
            )
    return problems


# --- reading files ----------------------------------------------------------------------

STDIN = "-"


def load(paths: Sequence[str], read_stdin: Callable[[], str]) -> list[Document]:
    """Every document of `paths` (files; folders: their `*.yaml` / `*.yml`, in name order;
    `-`: standard input). Raises `ManifestError` listing every problem found, so that nothing
    is written when any document is wrong."""
    documents: list[Document] = []
    problems: list[Problem] = []
    for path in paths:
        for file, text in _texts(path, read_stdin, problems):
            found, wrong = parse(text, file)
            documents.extend(found)
            problems.extend(wrong)
    problems.extend(check_unique(documents))
    if not problems and not documents:
        problems.append(Problem(", ".join(paths), "no manifests found"))
    if problems:
        raise ManifestError(problems)
    return documents


def _texts(
    path: str, read_stdin: Callable[[], str], problems: list[Problem]
) -> Iterator[tuple[str, str]]:
    if path == STDIN:
        yield "<stdin>", read_stdin()
        return
    where = Path(path)
    if where.is_dir():
        files = sorted(f for f in where.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
    else:
        files = [where]
    for file in files:
        try:
            yield str(file), file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(file), f"cannot be read: {exc}"))
