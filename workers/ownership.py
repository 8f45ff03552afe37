"""Whose a storage location is: the marker Tenantry writes into a location when it creates it,
and what the storage worker may do there because of it (both backends decide here).

Without it, a repo named like a folder already under a storage root took that folder over
(its creator granted access to it) and `delete_storage` removed it; and a repo re-created
under a deleted one's name was handed the data retained at the same location. Now:

- a location is provisioned only if it is absent or empty, already marked for this very
  incarnation of the repo (the version of its `created` / `recreated` event), or the repo was
  created with `adopt_storage` (a tenant admin's decision, see the domain);
- `delete_storage` removes only a location marked as *created* by Tenantry for this
  incarnation; anything else (unmarked, adopted, another repo's) is left as it is and the
  refusal recorded as a failure;
- a repo retained at deletion gets no policy write into a location that is not its own.

A location provisioned before markers existed (the stream holds a `storage_provisioned` of
this incarnation) is kept serving and marked `adopted`: it was not proved to be Tenantry's, so
it is never removed by `delete_storage`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from workers.errors import PermanentError

MARKER = ".tenantry-location.json"
CREATED = "created"
ADOPTED = "adopted"
_HOW_TO_ADOPT = "a tenant admin may take it over with create_ml_repo adopt_storage=true"


class Incarnation(Protocol):
    """What ownership needs to know of a repo (the storage worker's `RepoView`)."""

    @property
    def name(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def incarnation(self) -> int: ...
    @property
    def adopt_storage(self) -> bool: ...
    @property
    def provisioned(self) -> bool: ...


@dataclass(frozen=True)
class Marker:
    repo: str
    incarnation: int
    origin: str  # CREATED or ADOPTED; anything else is a marker we can't read

    def encode(self) -> bytes:
        document = {
            "managed_by": "tenantry",
            "repo": self.repo,
            "incarnation": self.incarnation,
            "origin": self.origin,
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes) -> Marker:
        """A file named like the marker that does not read as one belongs to nobody we know."""
        try:
            document = json.loads(data)
            marker = cls(
                str(document["repo"]), int(document["incarnation"]), str(document["origin"])
            )
        except (ValueError, KeyError, TypeError):
            return cls("", 0, "unreadable")
        if document.get("managed_by") != "tenantry" or marker.origin not in (CREATED, ADOPTED):
            return cls("", 0, "unreadable")
        return marker

    def of(self, repo: Incarnation) -> bool:
        return (self.repo, self.incarnation) == (repo.name, repo.incarnation)

    def describe(self) -> str:
        if not self.repo:
            return f"an unreadable {MARKER}"
        return f"ML repo {self.repo!r} (incarnation {self.incarnation}, {self.origin})"


def claim(repo: Incarnation, marker: Marker | None, has_data: bool) -> Marker | None:
    """The marker to write before provisioning `repo` (None: the one there is right already).
    PermanentError when the location is not this repo's to take."""
    if marker is not None and marker.of(repo):
        return None
    if repo.adopt_storage:
        # What Tenantry created stays removable by the adopter; anything else never is.
        same_repo = marker is not None and marker.repo == repo.name
        origin = marker.origin if same_repo and marker else ADOPTED if has_data else CREATED
        return Marker(repo.name, repo.incarnation, origin)
    if marker is None and not has_data:
        return Marker(repo.name, repo.incarnation, CREATED)
    if marker is None and repo.provisioned:
        return Marker(repo.name, repo.incarnation, ADOPTED)  # served before markers existed
    if marker is None:
        raise PermanentError(
            f"{repo.location} already holds data that Tenantry did not create (no {MARKER}): "
            f"it is not taken over; {_HOW_TO_ADOPT}"
        )
    if marker.repo == repo.name:
        raise PermanentError(
            f"{repo.location} holds the data of another incarnation of ML repo {repo.name!r} "
            f"(incarnation {marker.incarnation}; this is {repo.incarnation}), retained when it "
            f"was deleted: it is not handed to this one; {_HOW_TO_ADOPT}"
        )
    raise PermanentError(
        f"{repo.location} belongs to {marker.describe()}: it is not taken over; {_HOW_TO_ADOPT}"
    )


def check_removable(repo: Incarnation, marker: Marker | None, has_data: bool) -> None:
    """`delete_storage` removes only what Tenantry created for this repo: PermanentError (the
    reason recorded as the removal's failure) for anything else. An empty location holds
    nothing of anybody's."""
    if marker is None and not has_data:
        return
    if marker is None:
        reason = f"it was not created by Tenantry (no {MARKER})"
    elif not marker.of(repo):
        reason = f"it belongs to {marker.describe()}, not to this repo"
    elif marker.origin != CREATED:
        reason = "Tenantry adopted it, it did not create it"
    else:
        return
    raise PermanentError(f"{repo.location} was not removed: {reason}; its data is left as it was")


def owns(repo: Incarnation, marker: Marker | None) -> bool:
    """Whether Tenantry may write its own files (the access policy) into the location."""
    return marker is not None and marker.of(repo)
