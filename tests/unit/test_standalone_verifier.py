"""The shipped verifier's fast paths answer as the plain ones: `parse_line` as `parse` (value or
error) on every kind of line, `Tree.add_raw` as `Tree.add`, and `verify` the same first problem
for a sound export and for each kind of damage."""

from __future__ import annotations

import contextlib
import hashlib
import io
from typing import Any

import pytest

from bench.audit_verify import _lines
from domain.event_log import ZERO_HASH
from tenantry.audit import standalone_verifier as sv


def _answer(read: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", read(text)
    except ValueError as exc:
        return type(exc).__name__, str(exc)


LINE = _lines(1)[0].decode()
TEXTS = [
    LINE,
    " " + LINE,  # leading space: decode skips it, raw_decode does not
    LINE[:-1] + " \n",  # trailing space before the newline
    LINE[:-1] + "x\n",  # extra data
    LINE[:-1] + "{}\n",  # a second value
    LINE[:-1] + "\n\n",
    '{"a":1.5}\n',  # a float
    '{"a":NaN}\n',
    '{"a":Infinity}\n',
    "[1,2]\n",
    '"text"\n',
    "\n",
    "{\n",
    '{"a":}\n',
    '{"é":"ü","n":-0}\n',
]


@pytest.mark.parametrize("text", TEXTS)
def test_parse_line_answers_as_parse(text: str) -> None:
    assert _answer(sv.parse_line, text) == _answer(sv.parse, text)


def test_the_tree_from_raw_hashes_is_the_tree_from_hex() -> None:
    by_hex, by_raw = sv.Tree(), sv.Tree()
    for n in range(37):
        digest = hashlib.sha256(str(n).encode()).hexdigest()
        by_hex.add(digest)
        by_raw.add_raw(bytes.fromhex(digest))
        assert (by_raw.size, by_raw.root()) == (by_hex.size, by_hex.root())


def _verify(lines: list[bytes]) -> tuple[str | None, str]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        problem = sv.verify(lines, None, [])
    return problem, out.getvalue()


def _altered(lines: list[bytes], index: int, old: bytes, new: bytes) -> list[bytes]:
    return [*lines[:index], lines[index].replace(old, new, 1), *lines[index + 1 :]]


def test_verify_finds_what_it_found_before() -> None:
    lines = _lines(40)
    problem, printed = _verify(lines)
    assert problem is None
    assert printed.startswith("chain OK: 40 events, last position 40\nMerkle root of all 40")
    tree = sv.Tree()
    prev = ZERO_HASH
    for line in lines:
        body = sv.parse(line.decode())
        assert body["prev_hash"] == prev
        prev = body["hash"]
        tree.add(prev)
    assert tree.root() in printed

    expected = {
        "not JSON": [*lines[:5], b" " + lines[5][:-1] + b"x\n", *lines[6:]],
        "not the canonical encoding": [*lines[:5], b" " + lines[5], *lines[6:]],
        "not the canonical encoding of an event": _altered(lines, 7, b'":', b'": '),
        "its hash does not match": _altered(lines, 9, b"editor", b"admin!"),
        "does not follow the line before": [*lines[:3], *lines[4:]],
        "cut off": [*lines[:-1], lines[-1][:-1]],
        "a number that is not an integer": _altered(lines, 2, b'"version":', b'"version":1.5,"v":'),
    }
    for what, damaged in expected.items():
        found, _ = _verify(damaged)
        assert found is not None and what in found, (what, found)
