"""Hostile manifests for `tenantry apply`: token soup, deep nesting, unsafe tags, aliases and
scalars that other YAML versions read differently. Whatever the text, reading it ends in
documents or in problems with their place, never in an exception (a traceback, for the person
running `apply`), and nothing that is not one of the manifests' own types gets through."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenantry.apply.manifests import MAX_DEPTH, parse

TOKENS = [
    "[",
    "]",
    "{",
    "}",
    ",",
    ": ",
    "- ",
    "? ",
    "\n",
    "  ",
    "\t",
    "&a ",
    "*a ",
    "*b ",
    "!!python/object/apply:os.system ['true'] ",
    "!!python/name:os.system ",
    "!!binary ",
    "!!set ",
    "!!omap ",
    "!custom ",
    "|\n",
    ">-\n",
    "'",
    '"',
    "\\",
    "%YAML 1.1\n",
    "%TAG ! tag:evil.example.com:\n",
    "---\n",
    "...\n",
    "#",
    "<<: ",
    "type",
    "team",
    "name",
    "members",
    "risk",
    "1e3",
    "0o755",
    "~",
    "yes",
    "2026-03-01",
    "9" * 400,
    "\x1b[2J",
    "\u202e",
    "\ufeff",
    "\x85",
    "\u2028",
]
_SOUP = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
_VALID = "type: team\nname: risk\nmembers: [bo@example.com]\n"


def _reads_without_raising(text: str) -> None:
    documents, problems = parse(text, "hostile.yaml")
    for problem in problems:
        assert problem.file == "hostile.yaml"
        assert problem.message
    for document in documents:
        assert document.key[0] in {
            "environment",
            "cluster",
            "workspace",
            "ml-repo",
            "storage-integration",
            "team",
        }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_SOUP)
def test_token_soup_is_read_or_reported(text: str) -> None:
    _reads_without_raising(text)
    _reads_without_raising(_VALID + "---\n" + text)


@settings(max_examples=60, deadline=None)
@given(
    opening=st.lists(st.sampled_from(["[", "{a: ", "- ", "a:\n  "]), min_size=1, max_size=4),
    depth=st.integers(MAX_DEPTH - 2, 4 * MAX_DEPTH),
)
def test_nesting_of_mixed_kinds_is_read_or_reported(opening: list[str], depth: int) -> None:
    # Mixed flow and block openings, repeated: most are not valid YAML, none may crash.
    text = "type: team\nname: ml\nmembers: " + "".join(opening) * depth + "x\n"
    _reads_without_raising(text)


def test_unsafe_tags_are_reported_not_run() -> None:
    for tag in ("!!python/object/apply:os.system ['true']", "!!python/name:os.system"):
        documents, problems = parse(f"type: team\nname: {tag}\n", "hostile.yaml")
        assert not documents
        assert any("not valid YAML" in p.message for p in problems)


def test_an_alias_bomb_is_refused_quickly() -> None:
    # A billion laughs: nine aliases to nine aliases ... — shared, never expanded.
    lines = ["type: team", "name: ml", "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        ref = f"*x{level - 1}"
        lines.append(f"x{level}: &x{level} [{', '.join([ref] * 9)}]")
    lines.append("members: *x8")
    documents, problems = parse("\n".join(lines) + "\n", "bomb.yaml")
    assert not documents and problems


def test_scalars_that_yaml_versions_read_differently_are_read_as_yaml_1_1_strings() -> None:
    # `apply` reads YAML 1.1 (PyYAML): `1e3` and `0o755` are strings there, so `1e3` is a valid
    # team name and `0o755` an invalid e-mail, reported at its place.
    text = "type: team\nname: 1e3\nmembers: [0o755]\n"
    documents, problems = parse(text, "numbers.yaml")
    assert not documents
    assert [p.path for p in problems] == ["members[0]"]
    [document], [] = parse("type: team\nname: 1e3\n", "numbers.yaml")
    assert document.key == ("team", "1e3")
