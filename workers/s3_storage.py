"""S3 storage backend, for any S3-compatible endpoint (boto3): the bucket, Tenantry's marker
object `<prefix>/<repo>/.tenantry-location.json` (see `workers.ownership`) and the bucket
policy, one statement per granted principal (see `workers.access_policy` for how subjects map
to principals).

Repos can share a bucket, and a bucket has one policy. Acting on one repo rewrites only that
repo's statements: the other repos' are kept as the server last accepted them (those of repos
no longer live are dropped), and statements of others (Sid not starting with `tenantry-`) are
kept as they are. So a principal the server refuses (AWS refuses one that does not exist in
IAM) can only hold back its own repo, never another repo's revoke; and within its repo, a
refused policy is retried with the principals the bucket already accepted, so revokes and
changes of those still apply. Principals that are not valid IAM names never reach the policy.
Every write is preceded by a read and skipped when it would change nothing, so a retried action
makes no second PUT."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from domain.names import storage_path
from workers.access_policy import (
    bucket_policy,
    invalid_principals,
    named_principals,
    principal_arn,
    repo_of_statement,
    repo_statements,
)
from workers.errors import PermanentError, TransientError
from workers.ownership import MARKER, Marker, check_removable, claim, owns
from workers.storage import RepoView

T = TypeVar("T")
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
)
_MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchBucketPolicy"})
# What S3 answers a bucket policy naming a principal it does not know ("Invalid principal in
# policy"): the policy is then retried without the principals it has not accepted before.
_REFUSED_POLICY = "MalformedPolicy"


def s3_location(location: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> (`bucket`, `a/b/`); refused unless canonical."""
    try:
        bucket, segments = storage_path("s3", location)
    except ValueError as exc:
        raise PermanentError(f"{location!r} is not a canonical s3:// location: {exc}") from exc
    return bucket, "".join(f"{segment}/" for segment in segments)


class S3StorageBackend:
    def __init__(
        self,
        *,
        endpoint_url: str | None,
        region: str | None,
        access_key_id: str | None,
        secret_access_key: str | None,
        principal_account: str,
    ) -> None:
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._account = principal_account
        self._client: Any = None

    async def ensure(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        return await self._run(lambda: self._ensure(repo, neighbours))

    async def remove(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        return await self._run(lambda: self._remove(repo, neighbours))

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _run(self, work: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return await asyncio.to_thread(work)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            message = f"S3 {error.get('Code')}: {error.get('Message')}"
            if status >= 500 or error.get("Code") in _TRANSIENT_CODES:
                raise TransientError(message) from exc
            raise PermanentError(message) from exc
        except NoCredentialsError as exc:
            raise PermanentError(f"S3: {exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(f"S3: {exc}") from exc

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region or "us-east-1",
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret_access_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 2, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                    # Plain Content-Length bodies: S3-compatible servers that predate the
                    # newer default checksums refuse them.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._client

    def _ensure(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        bucket, prefix = s3_location(repo.location)
        self._ensure_bucket(bucket)
        marker = claim(repo, self._marker(bucket, prefix), self._has_data(bucket, prefix))
        if marker is not None:
            self._s3().put_object(
                Bucket=bucket,
                Key=prefix + MARKER,
                Body=marker.encode(),
                ContentType="application/json",
            )
        left_out = self._ensure_policy(bucket, repo, neighbours)
        grants = len(repo.grants) - len(left_out)
        done = f"{repo.location}: marker and {grants} grant(s) in the bucket policy"
        if left_out:
            raise PermanentError(f"{done}; not granted: {'; '.join(left_out)}")
        return done

    def _remove(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        bucket, prefix = s3_location(repo.location)
        if not self._exists(lambda: self._s3().head_bucket(Bucket=bucket)):
            return f"{repo.location}: bucket gone"
        # Access ends first, whatever happens to the data.
        self._ensure_policy(bucket, repo, neighbours)
        marker = self._marker(bucket, prefix)
        if not repo.delete_storage:
            if not owns(repo, marker) and self._has_data(bucket, prefix):
                return f"{repo.location}: not this repo's, left as it was: retained"
            return f"{repo.location}: retained"
        check_removable(repo, marker, self._has_data(bucket, prefix))
        pages = self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self._s3().delete_objects(Bucket=bucket, Delete={"Objects": keys})
        return f"{repo.location}: removed"

    def _marker(self, bucket: str, prefix: str) -> Marker | None:
        from botocore.exceptions import ClientError

        try:
            answer = self._s3().get_object(Bucket=bucket, Key=prefix + MARKER)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        return Marker.decode(answer["Body"].read())

    def _has_data(self, bucket: str, prefix: str) -> bool:
        """Whether the prefix holds anything but the marker (and a zero-byte folder object, as
        consoles and earlier versions of Tenantry make)."""
        from botocore.exceptions import ClientError

        try:
            page = self._s3().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=3)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        ours = {prefix, prefix + MARKER}
        return any(
            item["Key"] not in ours or (item["Key"] == prefix and item.get("Size", 0) > 0)
            for item in page.get("Contents", [])
        )

    def _ensure_bucket(self, bucket: str) -> None:
        if self._exists(lambda: self._s3().head_bucket(Bucket=bucket)):
            return
        from botocore.exceptions import ClientError

        params: dict[str, Any] = {"Bucket": bucket}
        if self._region and self._region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            self._s3().create_bucket(**params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def _ensure_policy(
        self, bucket: str, repo: RepoView, neighbours: Sequence[RepoView]
    ) -> list[str]:
        """Make `repo`'s statements follow its grants (none once it is not live), keeping the
        other live repos' statements as they are. Returns the grants left out, with why."""
        from botocore.exceptions import ClientError

        try:
            current = json.loads(self._s3().get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise
            current = None
        live = {r.name for r in neighbours if s3_location(r.location)[0] == bucket}
        others = [
            statement
            for statement in (current or {}).get("Statement", [])
            if (owner := repo_of_statement(statement)) is not None
            and owner != repo.name
            and owner in live
        ]
        grants = repo.grants if repo.live else {}
        invalid = invalid_principals(grants, self._account)
        left_out = [f"{subject}: {why}" for subject, why in sorted(invalid.items())]
        grants = {s: role for s, role in grants.items() if s not in invalid}
        _, prefix = s3_location(repo.location)
        try:
            self._put_policy(bucket, current, others, prefix, repo.name, grants)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != _REFUSED_POLICY:
                raise
            # Keep what the bucket accepted before: revokes and changes of known principals
            # apply, new principals wait (and the repo is recorded as failed, saying so).
            accepted = named_principals(current)
            known = {
                s: role for s, role in grants.items() if principal_arn(s, self._account) in accepted
            }
            refused = sorted(set(grants) - set(known))
            self._put_policy(bucket, current, others, prefix, repo.name, known)
            reason = f"the bucket refused it ({error.get('Code')}: {error.get('Message')})"
            left_out += [f"{subject}: {reason}" for subject in refused]
        return left_out

    def _put_policy(
        self,
        bucket: str,
        current: dict[str, Any] | None,
        others: list[dict[str, Any]],
        prefix: str,
        repo: str,
        grants: dict[str, str],
    ) -> None:
        ours = others + repo_statements(bucket, prefix, repo, grants, self._account)
        desired = bucket_policy(current, ours)
        if desired == current:
            return
        if desired is None:
            self._s3().delete_bucket_policy(Bucket=bucket)
        else:
            self._s3().put_bucket_policy(Bucket=bucket, Policy=json.dumps(desired))

    @staticmethod
    def _exists(head: Callable[[], object]) -> bool:
        from botocore.exceptions import ClientError

        try:
            head()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True
