"""The GitOps manifests read the same in a YAML 1.2 reader, as Kubernetes reads them: PyYAML
writes YAML 1.1 and left valid label values such as `1234e56`, `1e3` and `0o755` unquoted, which
YAML 1.2 takes for numbers (Kubernetes then refuses the Namespace, while the workspace shows
`ready`). Every string is quoted; the round trip through ruamel.yaml in 1.2 mode gives back
exactly the strings written."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter
from ruamel.yaml import YAML

from domain.names import Annotations, Labels
from workers.gitops import render
from workers.manifests import namespace_spec

# Valid label values that a YAML reader may take for something other than a string.
LOOKS_LIKE_ANOTHER_TYPE = [
    "1234e56",
    "1e3",
    "1E3",
    "0o755",
    "0x1F",
    "0b101",
    "012",
    "1_000",
    "1.5",
    "123",
    "true",
    "False",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "null",
    "Null",
    "NULL",
    "",
    "1-2-3",
    "2026-03-01",
    "12_30_00",
    "1.0e-3",
    "inf",
    "nan",
]
_LABEL_VALUE = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", fullmatch=True)
_PREFIX = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
_KEY = st.builds(
    lambda prefix, name: f"{prefix}/{name}" if prefix else name,
    st.none() | _PREFIX,
    _LABEL_VALUE,
)
_LABELS = st.dictionaries(_KEY, st.sampled_from(LOOKS_LIKE_ANOTHER_TYPE) | _LABEL_VALUE, max_size=8)
# Annotation values are free text (anything but NUL).
_ANNOTATIONS = st.dictionaries(
    _KEY,
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    max_size=4,
)


def _yaml_1_2(data: bytes) -> Any:
    reader = YAML(typ="safe", pure=True)
    reader.version = (1, 2)
    return reader.load(data)


def _documents(labels: dict[str, str], annotations: dict[str, str]) -> list[dict[str, Any]]:
    labels = TypeAdapter(Labels).validate_python(labels)
    annotations = TypeAdapter(Annotations).validate_python(annotations)
    spec = namespace_spec(
        "prod-eu",
        "fraud",
        environment="prod",
        is_production=True,
        optimize_for="availability",
        labels=labels,
        annotations=annotations,
    )
    return [spec.namespace(), spec.service_account()]


@pytest.mark.parametrize("value", LOOKS_LIKE_ANOTHER_TYPE)
def test_label_values_that_look_like_numbers_stay_strings(value: str) -> None:
    key = value or "empty"
    for document in _documents({"example.com/v": value, key: value}, {key: value}):
        assert _yaml_1_2(render(document)) == document


@given(labels=_LABELS, annotations=_ANNOTATIONS)
def test_the_manifests_round_trip_through_a_yaml_1_2_reader(
    labels: dict[str, str], annotations: dict[str, str]
) -> None:
    for document in _documents(labels, annotations):
        written = render(document)
        assert _yaml_1_2(written) == document
        # YAML 1.1 readers (PyYAML, older tools) read the same.
        import yaml

        assert yaml.safe_load(written) == document
