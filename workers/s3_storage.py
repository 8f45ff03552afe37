"""S3 storage backend, for any S3-compatible endpoint (boto3): the bucket, a zero-byte prefix
marker `<prefix>/<repo>/` and the bucket policy, one statement per granted principal (see
`workers.access_policy` for how subjects map to principals).

Repos can share a bucket, and a bucket has one policy: it is recomputed from every live repo of
the bucket, statements of others (Sid not starting with `tenantry-`) kept as they are. Every
write is preceded by a read and skipped when it would change nothing, so a retried action makes
no second PUT."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from domain.names import storage_path
from workers.access_policy import bucket_policy, repo_statements
from workers.errors import PermanentError, TransientError
from workers.storage import RepoView

T = TypeVar("T")
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
)
_MISSING = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchBucketPolicy"})


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
        if not self._exists(lambda: self._s3().head_object(Bucket=bucket, Key=prefix)):
            self._s3().put_object(Bucket=bucket, Key=prefix, Body=b"")
        self._ensure_policy(bucket, neighbours)
        grants = len(repo.grants)
        return f"{repo.location}: prefix marker and {grants} grant(s) in the bucket policy"

    def _remove(self, repo: RepoView, neighbours: Sequence[RepoView]) -> str:
        bucket, prefix = s3_location(repo.location)
        if not self._exists(lambda: self._s3().head_bucket(Bucket=bucket)):
            return f"{repo.location}: bucket gone"
        if repo.delete_storage:
            pages = (
                self._s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            )
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    self._s3().delete_objects(Bucket=bucket, Delete={"Objects": keys})
        self._ensure_policy(bucket, neighbours)
        return f"{repo.location}: {'removed' if repo.delete_storage else 'retained'}"

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

    def _ensure_policy(self, bucket: str, neighbours: Sequence[RepoView]) -> None:
        from botocore.exceptions import ClientError

        try:
            current = json.loads(self._s3().get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise
            current = None
        ours = []
        for repo in neighbours:
            repo_bucket, prefix = s3_location(repo.location)
            if repo_bucket == bucket:
                ours += repo_statements(bucket, prefix, repo.name, repo.grants, self._account)
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
